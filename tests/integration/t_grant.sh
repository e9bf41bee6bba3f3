#!/usr/bin/env bash
# --grant: uid 65534 cannot reopen /dev/fd/3 of a root-owned node, so
# path-based tools fail; with --grant the node is the caller's for the
# attachment's life, and root's again, with its original mode, afterwards.
. "$(dirname "$0")/../lib.sh"

mkimage "$T/img" 32

# Without --grant, mkfs.fat cannot open /dev/fd/3 (the test can fail).
if as_nobody "$LOOPFD" run "$T/img" -- mkfs.fat /dev/fd/3 > "$T/out" 2>&1; then
	fail "mkfs.fat on /dev/fd/3 worked without --grant: the grant test proves nothing"
fi

# With --grant: mkfs.fat, then mtools writes a file through the device.
head -c 200000 /dev/urandom > "$T/payload"
chmod 0644 "$T/payload"
as_nobody "$LOOPFD" run --grant "$T/img" -- sh -c '
	node=/dev/$LOOPFD_NAME
	stat -c "%u %a" "$node" > "$1/during"
	mkfs.fat -n LOOPFD /dev/fd/3 >/dev/null &&
	MTOOLS_SKIP_CHECK=1 mcopy -i /dev/fd/3 "$1/payload" ::/payload &&
	echo "$node" > "$1/node"' sh "$T" 2> "$T/err" || { cat "$T/err"; fail "--grant run failed"; }

read -r uid mode < "$T/during"
[ "$uid" = $NOBODY ] || fail "node owned by uid $uid during the grant, want $NOBODY"
node=$(cat "$T/node")
read -r uid mode < <(stat -c "%u %a" "$node")
[ "$uid" = 0 ] || fail "$node still owned by uid $uid after release"
[ "$mode" = 600 ] || [ "$mode" = 660 ] || fail "$node mode $mode after release"

fsck.fat -n "$T/img" > "$T/fsck" 2>&1 || { cat "$T/fsck"; fail "fsck.fat found errors"; }
MTOOLS_SKIP_CHECK=1 mcopy -i "$T/img" ::/payload "$T/back"
cmp "$T/payload" "$T/back" || fail "file written through the granted device differs"
assert_no_device_for "$T/img"

# A grant whose session process dies (root's SIGKILL here: the caller
# cannot) must not leave the node to the caller, even after it chmod'ed it
# 0606 and while its COMMAND still holds the device: the session's guard
# gives it back to root at once, and holds the slot until the detach.
mkimage "$T/img2" 8
rm -f "$T/held" "$T/go"
as_nobody "$LOOPFD" run --grant "$T/img" -- sh -c '
	chmod 0606 /dev/$LOOPFD_NAME
	exec 7<> /dev/$LOOPFD_NAME	# a second opener, by path, while granted
	echo "$PPID $LOOPFD_NAME" > "$1/held"
	while [ ! -e "$1/go" ] && [ -d "$1" ]; do sleep 0.05; done' sh "$T" 2>/dev/null &
session=$!
remember_pid $session
wait_until 10 test -s "$T/held" || fail "grant session did not start"
read -r cli name < "$T/held"
node=/dev/$name
[ "$(stat -c '%u %a' "$node")" = "$NOBODY 606" ] || fail "grant not in place: $(stat -c '%u %a' "$node")"
# Should the guard fail, give the node back ourselves (keeping the status).
trap 'rc=$?; chown root:root "$node" 2>/dev/null || true; chmod 0600 "$node" 2>/dev/null || true; (exit $rc) || _cleanup; _cleanup' EXIT
pkill -KILL -P "$cli" -x loopfd-helper || fail "no helper to kill"
wait_until 5 sh -c "[ \"\$(stat -c %u '$node')\" = 0 ]" \
	|| fail "$node still uid $(stat -c %u "$node") after its helper was killed"
read -r uid mode < <(stat -c "%u %a" "$node")
[ "$mode" = 600 ] || [ "$mode" = 660 ] || fail "$node mode $mode after the guard gave it back"
losetup -j "$T/img" | grep -q . || fail "device detached while its COMMAND still held it"
touch "$T/go"
wait $session || true
wait_until 10 sh -c "[ -z \"\$(losetup -j '$T/img')\" ]" || fail "device of the killed helper not detached"
[ "$(stat -c '%u' "$node")" = 0 ] || fail "$node is the user's again after the detach"

# A free node that a user owns and holds open (left by a grant whose guard
# was killed too, or by root's chown) is what LOOP_CTL_GET_FREE returns to
# every attacher, and LOOP_CTL_REMOVE cannot recreate it.  Attaches must go
# on elsewhere and name it in the log, not fail for everyone.  The node is
# one loopfd attached a moment ago for this test; it gets its owner back.
as_nobody "$LOOPFD" run "$T/img2" -- sh -c 'echo $LOOPFD_NAME > "$1/free"' sh "$T" \
	|| fail "attach to find a free node failed"
pinned=/dev/$(cat "$T/free")
trap 'rc=$?; chown root:root "$node" "$pinned" 2>/dev/null || true; chmod 0600 "$node" "$pinned" 2>/dev/null || true; (exit $rc) || _cleanup; _cleanup' EXIT
chown $NOBODY "$pinned"
# (setpriv itself, not the as_nobody function: $! must be the holder's pid)
setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups -- \
	sh -c 'exec 7< "$1"; echo ready > "$2/pinned"; exec sleep 60' sh "$pinned" "$T" &
remember_pid $!
wait_until 5 test -s "$T/pinned" || fail "could not hold $pinned open as uid $NOBODY"
# (through a daemon: its log is where the pinned node is named; a setuid
# helper no longer writes to the caller's stderr once its session runs)
"$HELPER" --listen "$T/sock" 2> "$T/daemon.log" &
remember_pid $!
wait_until 5 test -S "$T/sock" || fail "daemon did not start"
as_nobody "$LOOPFD" run --socket "$T/sock" "$T/img2" -- sh -c 'echo $LOOPFD_NAME > "$1/next"' sh "$T" 2> "$T/err" \
	|| { cat "$T/err"; fail "an attach failed because of a pinned free node"; }
[ "/dev/$(cat "$T/next")" != "$pinned" ] || fail "attached to the pinned node $pinned"
as_nobody "$LOOPFD" run "$T/img2" -- true 2> "$T/err" \
	|| { cat "$T/err"; fail "a setuid attach failed because of a pinned free node"; }
if ! grep -q "$pinned is free but owned by a user who holds it open" "$T/daemon.log"; then
	echo "SKIP: the attach did not meet $pinned (another attacher took a lower free node)"
	echo "$0: pinned free node not met" >> "$LOOPFD_T/skipped"
fi

# The policy can forbid it, with a message naming the file.
write_config "allow-grant no"
if as_nobody "$LOOPFD" run --grant "$T/img" -- true 2> "$T/err"; then
	fail "--grant allowed although the config forbids it"
fi
grep -q "$LOOPFD_CONF" "$T/err" || fail "refusal does not name the config: $(cat "$T/err")"
note "--grant: mkfs.fat + mcopy via /dev/fd/3 as uid 65534; node back to root"
