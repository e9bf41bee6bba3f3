#!/usr/bin/env bash
# A background process still holding the device makes a short-timeout release
# fail clearly; the device detaches, with all data, once that process exits.
. "$(dirname "$0")/../lib.sh"

mkimage "$T/img" 16
head -c $((4 << 20)) /dev/urandom > "$T/d1"
head -c $((4 << 20)) /dev/urandom > "$T/d2"
chmod 0644 "$T/d1" "$T/d2"

start=$SECONDS
set +e
as_nobody "$LOOPFD" run --release-timeout 1 "$T/img" -- sh -c '
	cat "$1" >&3
	# Holds fd 3 after COMMAND returns, then writes more and exits.
	( sleep 3; cat "$2" >&3 ) &
	echo $! > "$3"' sh "$T/d1" "$T/d2" "$T/bgpid" 2> "$T/err"
rc=$?
set -e
[ $rc != 0 ] || fail "release with the device still open reported success"
grep -q "still open elsewhere" "$T/err" || fail "no clear busy message: $(cat "$T/err")"
grep -q "$T/img" "$T/err" || fail "busy message does not name the image: $(cat "$T/err")"
grep -Eq "/dev/loop[0-9]+" "$T/err" || fail "busy message does not name the device: $(cat "$T/err")"
[ $((SECONDS - start)) -lt 3 ] || fail "release waited past its 1 s timeout"

# Still attached while the holder lives...
[ -n "$(losetup -j "$T/img")" ] || fail "device detached while still open"
# ...and gone, with both halves of the data, once it exits.
wait_until 15 sh -c "[ -z \"\$(losetup -j '$T/img')\" ]" || fail "device did not detach after the holder exited"
cmp -n $((4 << 20)) "$T/d1" "$T/img" || fail "first write missing"
cmp -n $((4 << 20)) "$T/d2" "$T/img" 0 $((4 << 20)) || fail "write made after the busy release missing"

# The helper stays until a busy device detaches, but not on the caller's
# stdio: a reader of loopfd's output through a pipe gets its end of file.
start=$SECONDS
out=$(as_nobody "$LOOPFD" run --release-timeout 0 "$T/img" -- sh -c '
	( sleep 4 ) 3>&3 < /dev/null > /dev/null 2>&1 &' 2>&1) && fail "release with a holder reported success"
[ $((SECONDS - start)) -lt 3 ] || fail "a pipe on loopfd's stderr was held open by the lingering helper"
grep -q "still open elsewhere" <<<"$out" || fail "no busy message: $out"
wait_until 15 sh -c "[ -z \"\$(losetup -j '$T/img')\" ]" || fail "busy device did not detach"

# A device released busy keeps counting against its user until it has
# detached: otherwise holding devices open and releasing them would attach
# any number of devices past the limit.
write_config "max-devices-per-user 1"
mkimage "$T/img2" 4
rm -f "$T/bgpid"
as_nobody "$LOOPFD" run --release-timeout 0 "$T/img" -- sh -c '
	( while [ ! -e "$1/go" ] && [ -d "$1" ]; do sleep 0.05; done ) 3>&3 &
	echo $! > "$1/bgpid"' sh "$T" 2> /dev/null && fail "release with a holder reported success"
if as_nobody "$LOOPFD" run "$T/img2" -- true 2> "$T/err"; then
	fail "a device released busy stopped counting against the per-user limit"
fi
grep -q "per-user limit" "$T/err" || fail "no per-user limit message: $(cat "$T/err")"
touch "$T/go"
wait_until 15 sh -c "[ -z \"\$(losetup -j '$T/img')\" ]" || fail "busy device did not detach after its holder exited"
wait_until 10 sh -c "setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups '$LOOPFD' run '$T/img2' -- true 2>/dev/null" \
	|| fail "slot not freed after the busy device detached"
note "busy reported after 1 s; detached with data intact after the holder exited; slot held until then"

# A holder that lets go after 0.3 s: the release waits for it, succeeds, and
# its receipt says how long it waited (the time up to the round that saw the
# detach, not the round before it).
as_nobody "$LOOPFD" run -v --json --release-timeout 5 "$T/img" -- sh -c '
	( sleep 0.3 ) 3>&3 < /dev/null > /dev/null 2>&1 &' 2> "$T/json" ||
	fail "release after a short hold failed: $(cat "$T/json")"
python3 - "$T/json" <<'EOF' || fail "waited_ms: $(cat "$T/json")"
import json, sys
r = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")][-1]
assert r["outcome"] == "released", r
assert 250 <= r["waited_ms"] < 5000, r["waited_ms"]
EOF
note "a 0.3 s holder: released after waiting $(grep -o '"waited_ms": *[0-9]*' "$T/json" | grep -o '[0-9]*$') ms"
