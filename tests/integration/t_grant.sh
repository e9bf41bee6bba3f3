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

# A grant whose helper was killed (only root can) leaves the node to the
# caller, even world-accessible if it chmod'ed it.  The next attach of that
# device resets it to root-only before anyone's data goes through it.
mkimage "$T/img2" 8
rm -f "$T/held" "$T/go"
as_nobody "$LOOPFD" run --grant "$T/img" -- sh -c '
	chmod 0606 /dev/$LOOPFD_NAME
	echo "$PPID $LOOPFD_NAME" > "$1/held"
	while [ ! -e "$1/go" ] && [ -d "$1" ]; do sleep 0.05; done' sh "$T" 2>/dev/null &
session=$!
remember_pid $session
wait_until 10 test -s "$T/held" || fail "grant session did not start"
read -r cli name < "$T/held"
stale=/dev/$name
# Should the next attach not land on this node, give it back ourselves.
trap 'chown root:root "$stale" 2>/dev/null; chmod 0600 "$stale" 2>/dev/null; _cleanup' EXIT
pkill -KILL -P "$cli" -x loopfd-helper || fail "no helper to kill"
touch "$T/go"
wait $session || true
wait_until 10 sh -c "[ -z \"\$(losetup -j '$T/img')\" ]" || fail "device of the killed helper not detached"
[ "$(stat -c '%u %a' "$stale")" = "$NOBODY 606" ] || fail "no stale grant to test with: $(stat -c '%u %a' "$stale")"
as_nobody "$LOOPFD" run "$T/img2" -- sh -c 'echo $LOOPFD_NAME; stat -c "%u %a" /dev/$LOOPFD_NAME' > "$T/next" \
	|| fail "attach after a stale grant failed"
if [ "$(head -1 "$T/next")" = "$name" ]; then
	read -r uid mode < <(tail -1 "$T/next")
	[ "$uid" = 0 ] || fail "$stale still owned by uid $uid when reused"
	[ "$mode" = 600 ] || fail "$stale mode $mode when reused, want 600"
else
	note "the next attach got another device ($(head -1 "$T/next")); stale reset not exercised"
fi

# The policy can forbid it, with a message naming the file.
write_config "allow-grant no"
if as_nobody "$LOOPFD" run --grant "$T/img" -- true 2> "$T/err"; then
	fail "--grant allowed although the config forbids it"
fi
grep -q "$LOOPFD_CONF" "$T/err" || fail "refusal does not name the config: $(cat "$T/err")"
note "--grant: mkfs.fat + mcopy via /dev/fd/3 as uid 65534; node back to root"
