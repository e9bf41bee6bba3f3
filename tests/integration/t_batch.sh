#!/usr/bin/env bash
# Batched operations (issue 11): `loopfd run` over 41 images attaches them in
# one ATTACH_BATCH and releases them in one RELEASE_BATCH, as uid 65534, in
# setuid and daemon mode: every device's data is in its own image and nothing
# is left attached.  Four batches at once bind on threads the same free nodes
# (helper/threads.c): the losers of each node are bound again, every run
# succeeds.  A batch that fails in the middle (the per-user limit at entry 20)
# leaves nothing attached, names the image, and returns every quota slot (the
# same user can then attach up to the limit at once).
. "$(dirname "$0")/../lib.sh"

N=41
write_config "max-devices-per-user 48"
imgs=()
for i in $(seq 0 $((N - 1))); do
	mkimage "$T/img$i" 1
	imgs+=("$T/img$i")
done

# COMMAND writes "image I" through fd 3+I, the device of image I.
writer='for i in $(seq 0 $(($1 - 1))); do
		eval "printf \"image %s\\n\" $i >&$((3 + i))" || exit 1
	done
	echo "$LOOPFD_DEVICES" > "$2"'

check_images() {	# $1: mode, for messages
	local i
	for i in $(seq 0 $((N - 1))); do
		[ "$(head -n1 "$T/img$i")" = "image $i" ] ||
			fail "$1: image $i holds '$(head -c 20 "$T/img$i" | tr -d '\0')', not its data"
		assert_no_device_for "$T/img$i"
	done
	[ "$(wc -w < "$T/devices")" = $N ] || fail "$1: LOOPFD_DEVICES: $(cat "$T/devices")"
}

# ---- setuid mode
as_nobody "$LOOPFD" run -v "${imgs[@]}" -- bash -c "$writer" sh $N "$T/devices" \
	2> "$T/setuid.log" || fail "setuid run over $N images: $(cat "$T/setuid.log")"
check_images setuid
[ "$(grep -c '^loopfd: released /dev/loop[0-9]* (image ' "$T/setuid.log")" = $N ] ||
	fail "setuid: not one release line per image: $(cat "$T/setuid.log")"
note "setuid: $N images attached, written and released in one batch each way"

# ---- daemon mode
for i in $(seq 0 $((N - 1))); do truncate -s 0 "$T/img$i"; truncate -s 1M "$T/img$i"; done
sock=$T/d.sock
"$HELPER" --listen "$sock" 2> "$T/daemon.log" &
remember_pid $!
wait_until 5 test -S "$sock" || fail "daemon did not start"
as_nobody "$LOOPFD" run --socket "$sock" "${imgs[@]}" -- bash -c "$writer" sh $N "$T/devices" \
	2> "$T/client.log" || fail "daemon run over $N images: $(cat "$T/client.log")"
check_images daemon
wait_until 5 test "$(grep -c 'released: flushed and detached$' "$T/daemon.log")" = $N ||
	fail "daemon: not $N release lines: $(cat "$T/daemon.log")"
note "daemon: $N images attached, written and released"

concurrent_batches() {
	local k i got pids=()
	for k in 0 1 2 3; do
		truncate -s 0 "${imgs[@]:$((k * 10)):10}"
		truncate -s 1M "${imgs[@]:$((k * 10)):10}"
		as_nobody "$LOOPFD" run "${imgs[@]:$((k * 10)):10}" -- bash -c '
			for i in 0 1 2 3 4 5 6 7 8 9; do
				eval "printf \"run %s image %s\\n\" $1 $i >&$((3 + i))" || exit 1
			done' sh $k 2> "$T/conc$k.log" &
		pids+=($!)
		remember_pid $!
	done
	for k in 0 1 2 3; do
		wait "${pids[$k]}" || fail "concurrent batch $k failed: $(cat "$T/conc$k.log")"
	done
	for k in 0 1 2 3; do
		for i in $(seq 0 9); do
			got=$(head -n1 "$T/img$((k * 10 + i))")
			[ "$got" = "run $k image $i" ] ||
				fail "concurrent batch $k: image $i holds '$got'"
			assert_no_device_for "$T/img$((k * 10 + i))"
		done
	done
}

# ---- four batches of 10 at once, three times, with a competitor binding
# and freeing free devices as fast as it can (tests/sandbox/grabber.c, on an
# image of ours).  Each batch reserves the free nodes from
# LOOP_CTL_GET_FREE's index up and binds them on threads, so the runs and
# the competitor reach for the same nodes: a LOOP_CONFIGURE that loses its
# node fails with EBUSY, and the helper binds that entry again through
# GET_FREE.
mkimage "$T/grab.img" 1
"$BUILD/tests/grabber" "$T/grab.img" 60000 > "$T/grab.out" 2>&1 &
grabber=$!
remember_pid $grabber
for round in 1 2 3; do concurrent_batches; done
kill -TERM $grabber 2>/dev/null || true	# its last device detaches at its exit
wait $grabber 2>/dev/null || true
wait_until 5 test -z "$(losetup -j "$T/grab.img")" || fail "the competitor left a device"
note "four batches of 10 at once, three times, with a competitor: all attached, written and released"

# ---- a batch that fails at entry 20: nothing attached, the image named
write_config "max-devices-per-user 20"
if as_nobody "$LOOPFD" run "${imgs[@]}" -- touch "$T/ran" 2> "$T/limit.log"; then
	fail "$N images attached past a per-user limit of 20"
fi
[ ! -e "$T/ran" ] || fail "COMMAND ran although the attach failed"
grep -q "^loopfd: $T/img20: uid $NOBODY already holds 20 loop devices, the per-user limit$" \
	"$T/limit.log" || fail "the failure does not name image 20 and the limit: $(cat "$T/limit.log")"
for i in $(seq 0 $((N - 1))); do assert_no_device_for "$T/img$i"; done
# The limit is checked for every entry before any is bound: the daemon
# bound none of the batch (no "attached" line), and left nothing to the
# session's end (which would log "left /dev/loopN attached").
before=$(wc -l < "$T/daemon.log")
if as_nobody "$LOOPFD" run --socket "$sock" "${imgs[@]}" -- touch "$T/ran" 2> "$T/dlimit.log"; then
	fail "daemon: $N images attached past a per-user limit of 20"
fi
grep -q "^loopfd: $T/img20: uid $NOBODY already holds 20 loop devices" \
	"$T/dlimit.log" || fail "daemon: the failure does not name image 20: $(cat "$T/dlimit.log")"
sleep 0.2	# the session's end, if it had anything to log
if tail -n +$((before + 1)) "$T/daemon.log" | grep -E ": attached|left /dev/loop"; then
	fail "daemon: devices of the failed batch were bound or left to the session's end"
fi
# Every slot came back: the user can hold its 20 at once, now.
as_nobody "$LOOPFD" run "${imgs[@]:0:20}" -- true 2> "$T/twenty.log" ||
	fail "20 images after the failed batch: $(cat "$T/twenty.log")"
for i in $(seq 0 $((N - 1))); do assert_no_device_for "$T/img$i"; done
note "a batch failing at entry 20 left nothing attached and every slot free"
