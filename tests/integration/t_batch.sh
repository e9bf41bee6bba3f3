#!/usr/bin/env bash
# Batched operations (issue 11): `loopfd run` over 41 images attaches them in
# one ATTACH_BATCH and releases them in one RELEASE_BATCH, as uid 65534, in
# setuid and daemon mode: every device's data is in its own image and nothing
# is left attached.  A batch that fails in the middle (the per-user limit at
# entry 20) leaves nothing attached, names the image, and returns every quota
# slot (the same user can then attach up to the limit at once).
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

# ---- a batch that fails at entry 20: nothing attached, the image named
write_config "max-devices-per-user 20"
if as_nobody "$LOOPFD" run "${imgs[@]}" -- touch "$T/ran" 2> "$T/limit.log"; then
	fail "$N images attached past a per-user limit of 20"
fi
[ ! -e "$T/ran" ] || fail "COMMAND ran although the attach failed"
grep -q "^loopfd: $T/img20: uid $NOBODY already holds 20 loop devices, the per-user limit$" \
	"$T/limit.log" || fail "the failure does not name image 20 and the limit: $(cat "$T/limit.log")"
for i in $(seq 0 $((N - 1))); do assert_no_device_for "$T/img$i"; done
# The helper itself released entries 0-19 before its error reply, not the
# session's end after it (which would log "left /dev/loopN attached").
before=$(wc -l < "$T/daemon.log")
if as_nobody "$LOOPFD" run --socket "$sock" "${imgs[@]}" -- touch "$T/ran" 2> "$T/dlimit.log"; then
	fail "daemon: $N images attached past a per-user limit of 20"
fi
grep -q "^loopfd: $T/img20: uid $NOBODY already holds 20 loop devices" \
	"$T/dlimit.log" || fail "daemon: the failure does not name image 20: $(cat "$T/dlimit.log")"
released() { tail -n +$((before + 1)) "$T/daemon.log" | grep -c 'batch attach failed: released$'; }
wait_until 5 test "$(released)" = 20 ||
	fail "daemon: $(released) devices released by the failed batch, want 20: $(tail -n +$((before + 1)) "$T/daemon.log")"
if tail -n +$((before + 1)) "$T/daemon.log" | grep "left /dev/loop"; then
	fail "daemon: devices of the failed batch were left to the session's end"
fi
# Every slot came back: the user can hold its 20 at once, now.
as_nobody "$LOOPFD" run "${imgs[@]:0:20}" -- true 2> "$T/twenty.log" ||
	fail "20 images after the failed batch: $(cat "$T/twenty.log")"
for i in $(seq 0 $((N - 1))); do assert_no_device_for "$T/img$i"; done
note "a batch failing at entry 20 left nothing attached and every slot free"
