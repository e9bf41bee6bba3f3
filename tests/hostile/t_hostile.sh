#!/usr/bin/env bash
# Hostile clients against a live helper in all three modes: setuid spawn,
# the --listen daemon and systemd socket activation.  The talking is done
# by $BUILD/tests/rawclient (tests/hostile/rawclient.c, which lists every
# case and what it asserts: the exact reason, the helper's fds back to
# baseline, the session still serving, no device left, images unchanged).
# Here: the helpers, the images, the config, and the checks from outside.
#
# HOSTILE_SEED=N replays the random-message cases of an earlier run.
. "$(dirname "$0")/../lib.sh"

RAW=$BUILD/tests/rawclient
[ -x "$RAW" ] || fail "no $RAW (make $RAW)"
cd "$T"
ulimit -c 0
remove_config		# the defaults: 16 devices per user, grant allowed

SEED=${HOSTILE_SEED:-$(( (RANDOM << 15) | RANDOM ))}
note "random messages: seed $SEED (HOSTILE_SEED=$SEED to replay)"

# One image per rawclient run, so that each run's device counts are its own.
IMAGES="spawn listen systemd noread-spawn noread-listen limit-spawn limit-listen limit-systemd"
for i in $IMAGES; do
	head -c $((1 << 20)) /dev/urandom > "$T/img.$i"
	chown $NOBODY:$NOBODY "$T/img.$i"
	chmod 0644 "$T/img.$i"
done
# A file only root may read: rawclient's root half opens it O_RDONLY and
# hands the fd to the client, which must get a read-only device, no more.
head -c $((64 << 10)) /dev/urandom > "$T/rootonly"
chmod 0600 "$T/rootonly"
sha256sum "$T"/img.* "$T/rootonly" > "$T/sums"

# raw LABEL ARGS...: run rawclient on $T/img.LABEL; its report in
# $T/LABEL.out, the helper's stderr (spawn mode) in $T/LABEL.log.
raw() {
	local label=$1; shift
	"$RAW" -i "$T/img.$label" -r "$T/rootonly" -s "$SEED" "$@" \
		> "$T/$label.out" 2> "$T/$label.log"
}
# raw_bg LABEL ARGS...: the same in the background; $! is rawclient itself.
raw_bg() {
	local label=$1; shift
	( exec "$RAW" -i "$T/img.$label" -r "$T/rootonly" -s "$SEED" "$@" \
		> "$T/$label.out" 2> "$T/$label.log" ) &
}
report() {
	local label=$1 rc=$2
	if [ "$rc" = 0 ] && grep -q '^done: 0 failed' "$T/$label.out"; then
		note "$label: $(grep -c '^ok ' "$T/$label.out") cases ok"
		return 0
	fi
	grep -v '^ok ' "$T/$label.out" >&2 || true
	tail -n 15 "$T/$label.log" >&2
	fail "$label: rawclient exit status $rc"
}

# live_sessions PID: children of PID that are not zombies.
live_sessions() { ps --ppid "$1" -o stat= 2>/dev/null | grep -vc '^Z' || true; }
no_live_sessions() { [ "$(live_sessions "$1")" = 0 ]; }

"$HELPER" --listen "$T/listen.sock" 2> "$T/listen-daemon.log" &
listen_pid=$!; remember_pid $listen_pid
"$HELPER" --listen "$T/noread.sock" 2> "$T/noread-daemon.log" &
noread_pid=$!; remember_pid $noread_pid
systemd-socket-activate --seqpacket -l "$T/act.sock" "$HELPER" --systemd \
	2> "$T/systemd.log" &
act_pid=$!; remember_pid $act_pid
for s in listen.sock noread.sock act.sock; do
	wait_until 5 test -S "$T/$s" || fail "no socket $T/$s"
done
chmod 0666 "$T/act.sock"

# A client that never reads its replies costs the helper its 10 s send
# timeout: run those two in the background, against their own daemon.
raw_bg noread-spawn spawn "$HELPER" noread
nr_spawn=$!; remember_pid $nr_spawn
raw_bg noread-listen -p $noread_pid connect "$T/noread.sock" noread
nr_listen=$!; remember_pid $nr_listen

COMMON="fds truncated oversized zero-length magic reserved version unknown-op
	no-hello random numbers release-ids backing rlimit batch"
rc=0; raw spawn spawn "$HELPER" $COMMON sockopts nonblock || rc=$?
report spawn $rc
rc=0; raw listen -p $listen_pid connect "$T/listen.sock" $COMMON flood || rc=$?
report listen $rc
rc=0; raw systemd -p $act_pid connect "$T/act.sock" $COMMON flood || rc=$?
report systemd $rc

rc=0; wait $nr_spawn || rc=$?
report noread-spawn $rc
rc=0; wait $nr_listen || rc=$?
report noread-listen $rc

# Attaches past the per-user limit, read by each new session.
write_config "max-devices-per-user 3"
rc=0; raw limit-spawn spawn "$HELPER" limit batch-limit || rc=$?
report limit-spawn $rc
rc=0; raw limit-listen -p $listen_pid connect "$T/listen.sock" limit batch-limit || rc=$?
report limit-listen $rc
rc=0; raw limit-systemd -p $act_pid connect "$T/act.sock" limit batch-limit || rc=$?
report limit-systemd $rc
remove_config

# From outside: nothing attached, nothing changed, the daemons alive and
# without a session left running.
for i in $IMAGES; do assert_no_device_for "$T/img.$i"; done
assert_no_device_for "$T/rootonly"
sha256sum --quiet -c "$T/sums" || fail "an image or the root-only file changed"
for p in $listen_pid $noread_pid $act_pid; do
	kill -0 "$p" 2>/dev/null || fail "daemon $p died"
	wait_until 10 no_live_sessions "$p" \
		|| fail "daemon $p still has $(live_sessions "$p") session processes"
done
if grep -h "internal error" "$T"/*.log; then
	fail "a helper logged an internal error"
fi
note "hostile clients: every case refused with its reason or served as the spec says; nothing leaked"
