#!/usr/bin/env bash
# A client can clear or re-point its own device through the fd it was
# given.  The helper must then never flush or clear a binding that is not
# the one it made: it checks the disk sequence number and the backing
# dev/inode through its own fd first, and says clearly what happened.
. "$(dirname "$0")/../lib.sh"

DEVCTL=$BUILD/tests/devctl
mkimage "$T/img" 8
mkimage "$T/other.img" 8
head -c $((1 << 20)) /dev/urandom > "$T/data"
chmod 0644 "$T/data"

# 1. LOOP_CLR_FD through the client's fd: the helper still holds the device,
#    so the kernel only marks it autoclear; the binding is still ours and the
#    release flushes and detaches as usual, data intact.
as_nobody "$LOOPFD" run "$T/img" -- sh -c 'cat "$1" >&3 && "$2" clear 3' \
	sh "$T/data" "$DEVCTL" > "$T/out" 2> "$T/err" || { cat "$T/out" "$T/err"; fail "release after a client LOOP_CLR_FD failed"; }
grep -q "LOOP_CLR_FD: ok" "$T/out" || fail "the client's LOOP_CLR_FD was not accepted: $(cat "$T/out")"
cmp -n $((1 << 20)) "$T/data" "$T/img" || fail "data lost after a client LOOP_CLR_FD"
assert_no_device_for "$T/img"

# 2. LOOP_SET_STATUS64 (new offset) through the client's fd: still the same
#    binding; released normally.
as_nobody "$LOOPFD" run "$T/img" -- "$DEVCTL" offset 3 4096 > "$T/out" 2> "$T/err" \
	|| { cat "$T/out" "$T/err"; fail "release after a client LOOP_SET_STATUS64 failed"; }
grep -q "LOOP_SET_STATUS64: ok" "$T/out" || fail "LOOP_SET_STATUS64 not accepted: $(cat "$T/out")"
assert_no_device_for "$T/img"

# 3. LOOP_CHANGE_FD (read-only devices): the device now reads another file.
#    The helper must not flush or clear it as if it were the attachment it
#    made; the run fails, naming the device and the reason.
before=$(sha256sum < "$T/other.img")
set +e
as_nobody "$LOOPFD" run -r "$T/img" -- "$DEVCTL" change 3 "$T/other.img" > "$T/out" 2> "$T/err"
rc=$?
set -e
grep -q "LOOP_CHANGE_FD: ok" "$T/out" || fail "LOOP_CHANGE_FD not accepted: $(cat "$T/out")"
[ $rc != 0 ] || fail "release of a re-pointed device reported success"
grep -q "no longer the attachment" "$T/err" || fail "no clear message: $(cat "$T/err")"
grep -Eq "/dev/loop[0-9]+" "$T/err" || fail "message does not name the device: $(cat "$T/err")"
# Nothing keeps it open now: autoclear detaches it at the last close.
wait_until 10 sh -c "[ -z \"\$(losetup -j '$T/other.img')\" ]" || fail "re-pointed device left attached"
[ "$(sha256sum < "$T/other.img")" = "$before" ] || fail "the other file changed"
assert_no_device_for "$T/img"

# 4. A second opener hammering LOOP_CLR_FD during the release: the moment
#    the helper holds no fd of its own, the clear would put the device in
#    rundown (write-back fails).  The release must never answer success.
head -c $((1 << 20)) /dev/urandom > "$T/data"
set +e
as_nobody "$LOOPFD" run --release-timeout 1 "$T/img" -- sh -c '
	cat "$1" >&3
	"$2" clear-loop 3 2500 > /dev/null &' sh "$T/data" "$DEVCTL" 2> "$T/err"
rc=$?
set -e
[ $rc != 0 ] || fail "release reported success while another opener kept clearing the device"
grep -Eq "cleared \(LOOP_CLR_FD\) by another opener|still open elsewhere" "$T/err" \
	|| fail "unclear message: $(cat "$T/err")"
wait_until 15 sh -c "[ -z \"\$(losetup -j '$T/img')\" ]" || fail "device left attached after the clearing opener exited"

# 5. After a busy release the holder clears AUTOCLEAR and closes: nothing
#    would ever detach the device.  The helper re-arms it and it detaches.
set +e
as_nobody "$LOOPFD" run --release-timeout 0 "$T/img" -- sh -c '
	( sleep 1; "$1" noautoclear 3 > /dev/null ) &' sh "$DEVCTL" 2> "$T/err"
rc=$?
set -e
[ $rc != 0 ] || fail "release with a holder reported success"
wait_until 15 sh -c "[ -z \"\$(losetup -j '$T/img')\" ]" || fail "device whose autoclear the holder cleared stayed attached"

# 6. The client clears AUTOCLEAR before the release and closes: the release
#    arms it again (LOOP_CLR_FD through a second fd of its own, never as the
#    sole opener) and answers success once the device detached.
head -c $((1 << 20)) /dev/urandom > "$T/data"
as_nobody "$LOOPFD" run "$T/img" -- sh -c 'cat "$1" >&3 && "$2" noautoclear 3' \
	sh "$T/data" "$DEVCTL" > "$T/out" 2> "$T/err" || { cat "$T/out" "$T/err"; fail "release after the client cleared AUTOCLEAR failed"; }
grep -q "LOOP_SET_STATUS64: ok" "$T/out" || fail "the client's LOOP_SET_STATUS64 was not accepted: $(cat "$T/out")"
cmp -n $((1 << 20)) "$T/data" "$T/img" || fail "data lost after the client cleared AUTOCLEAR"
assert_no_device_for "$T/img"
note "client CLR_FD/SET_STATUS64: released normally; CHANGE_FD: refused as re-pointed, untouched; clearing races never succeed; autoclear re-armed, before and after a release"

# 7. A reader re-points its read-only device (LOOP_CHANGE_FD) while the
#    release waits for it: that changes the disk sequence number, yet the
#    device stays bound.  The release must not take it for detached, and its
#    slot must stay held (max-devices-per-user 1) until it really detaches.
write_config "max-devices-per-user 1"
mkimage "$T/img3" 8
set +e
as_nobody "$LOOPFD" run -r --release-timeout 1 "$T/img" -- sh -c '
	( sleep 0.3; "$1" change 3 "$2" > /dev/null; sleep 3 ) < /dev/null > /dev/null 2>&1 &
	echo $! > "$3"' sh "$DEVCTL" "$T/other.img" "$T/holder" 2> "$T/err"
rc=$?
set -e
[ $rc != 0 ] || fail "release of a device re-pointed and still held reported success"
grep -q "still open elsewhere" "$T/err" || fail "no busy message: $(cat "$T/err")"
[ -n "$(losetup -j "$T/other.img")" ] || fail "the re-pointed device is not attached (test proves nothing)"
if as_nobody "$LOOPFD" run "$T/img3" -- true 2> "$T/err2"; then
	fail "a second device attached while the first (re-pointed) was still attached: limit 1 bypassed"
fi
grep -q "per-user limit" "$T/err2" || fail "second run failed, but not on the limit: $(cat "$T/err2")"
wait_until 15 sh -c "[ -z \"\$(losetup -j '$T/other.img')\" ]" || fail "re-pointed device did not detach after its holder exited"
wait_until 10 sh -c "setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups '$LOOPFD' run '$T/img3' -- true 2>/dev/null" ||
	fail "slot not freed after the re-pointed device detached"
remove_config
note "a device re-pointed during its release: answered busy, slot held until it detached"
