#!/usr/bin/env bash
# An image on a FUSE filesystem whose GETATTR fails with ENXIO: the kernel's
# LOOP_GET_STATUS64 stats the backing file and returns that error unchanged,
# so the device looks unbound to a status query while it is still bound.
# A release must not take that for "detached": the device is still open
# elsewhere, must not be reported released, and must keep its quota slot
# (max-devices-per-user 1: a second device is refused) until it really
# detaches.  tinyfuse (tests/sandbox/tinyfuse.c) serves the image and arms
# the failure at the first fsync of the image after $T/arm appears: the
# release's own fsync, after its identity check.
. "$(dirname "$0")/../lib.sh"

TINYFUSE=$BUILD/tests/tinyfuse
mnt=$T/mnt
fimg=$mnt/img
_fuse_pid=

# Before lib.sh's cleanup, and in this order: the holder (its device
# detaches at its last close), any device still backed by our image (by
# name: once unmounted, lib.sh could not find it), the mount, the server.
_fuse_teardown() {
	local p line dev
	rm -f "$T/arm"
	touch "$T/go"
	[ ! -s "$T/bgpid" ] || kill -KILL "$(cat "$T/bgpid")" 2>/dev/null || true
	for _ in $(seq 50); do
		grep -qF "($fimg)" <<<"$(losetup -a 2>/dev/null)" || break
		sleep 0.1
	done
	while IFS= read -r line; do
		dev=${line%%:*}
		[ "$(losetup -n -O BACK-FILE "$dev" 2>/dev/null)" = "$fimg" ] || continue
		echo "cleanup: detaching $dev ($fimg)" >&2
		losetup -d "$dev" 2>/dev/null || true
	done < <(losetup -a 2>/dev/null)
	if mountpoint -q "$mnt"; then
		umount "$mnt" 2>/dev/null || umount -l "$mnt" || true
	fi
	if [ -n "$_fuse_pid" ]; then
		p=$_fuse_pid
		kill -TERM "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	fi
}
trap 'rc=$?; _fuse_teardown; (exit $rc); _cleanup' EXIT

if [ ! -c /dev/fuse ]; then
	echo "SKIP: no /dev/fuse here"
	echo "$0: FUSE" >> "$LOOPFD_T/skipped"
	exit 0
fi
mkdir "$mnt"
"$TINYFUSE" "$mnt" "$T/arm" & _fuse_pid=$!
wait_until 5 test -e "$fimg" || fail "tinyfuse did not come up on $mnt"
[ "$(stat -c '%s %u %a' "$fimg")" = "8388608 $NOBODY 600" ] ||
	fail "tinyfuse image: $(stat -c '%s %u %a' "$fimg")"
mkimage "$T/img2" 4

write_config "max-devices-per-user 1"

# COMMAND: a holder keeps a copy of fd 3 (at most 8 s, or until $T/go), then
# clears AUTOCLEAR through it and exits; the GETATTR failure is armed for the
# release's fsync.
set +e
as_nobody "$LOOPFD" run -v --json --release-timeout 0 "$fimg" -- sh -c '
	( i=0; while [ ! -e "$1/go" ] && [ $i -lt 160 ]; do sleep 0.05; i=$((i + 1)); done
	  "$2" noautoclear-blind 3 > "$1/noac.out" 2>&1 ) 3>&3 &
	echo $! > "$1/bgpid"
	touch "$1/arm"' sh "$T" "$BUILD/tests/devctl" 2> "$T/err"
rc=$?
set -e
[ -s "$T/bgpid" ] || fail "COMMAND did not run: $(cat "$T/err")"
remember_pid "$(cat "$T/bgpid")"
dev=$(grep -o '"event":"attach","name":"loop[0-9]*"' "$T/err" | grep -o 'loop[0-9]*' || true)
[ -n "$dev" ] || fail "no attach event: $(cat "$T/err")"
outcome=$(grep -o '"event":"release","outcome":"[a-z-]*"' "$T/err" | sed 's/.*"outcome":"//; s/"$//' || true)

# The holder still lives: the device must still be bound to the image.
# (sysfs, not losetup: its status query fails while armed.)
kill -0 "$(cat "$T/bgpid")" 2>/dev/null || fail "holder gone already (test too slow?)"
[ "$(cat "/sys/block/$dev/loop/backing_file" 2>/dev/null)" = "$fimg" ] ||
	fail "$dev not bound to $fimg while its holder lives"

# The failure was armed (else this test proves nothing): a stat of the
# image fails now.
if stat "$fimg" > /dev/null 2>&1; then
	fail "tinyfuse never armed: no fsync of the image after $T/arm appeared"
fi

# Same user, a second device, while the first is still attached.
second=refused
if as_nobody "$LOOPFD" run "$T/img2" -- true 2> "$T/err2"; then
	second=attached
elif ! grep -q "per-user limit" "$T/err2"; then
	fail "second run failed, but not on the limit: $(cat "$T/err2")"
fi
seen="release of $dev still open elsewhere: exit $rc, outcome '${outcome:-none}'; second device: $second"
if [ "$rc" = 0 ] || [ "$outcome" = released ]; then
	fail "a device still attached (held open, GETATTR -> ENXIO) was reported released ($seen)"
fi
[ "$second" = refused ] ||
	fail "a still-attached device's slot was freed: max-devices-per-user 1 bypassed ($seen)"

# The holder clears AUTOCLEAR and exits, the image still failing GETATTR:
# the watching helper must arm AUTOCLEAR again without asking the image
# (LOOP_GET_STATUS64 would fail): the device detaches, the slot is freed,
# nothing is left.
touch "$T/go"
wait_until 5 test -s "$T/noac.out" || fail "the holder did not clear AUTOCLEAR"
grep -q "LOOP_SET_STATUS64: ok" "$T/noac.out" || fail "AUTOCLEAR not cleared: $(cat "$T/noac.out")"
wait_until 10 sh -c "[ \"\$(cat /sys/block/$dev/loop/backing_file 2>/dev/null)\" != '$fimg' ]" ||
	fail "$dev did not detach after its holder exited"
rm -f "$T/arm"	# disarmed: losetup may query the image again
wait_until 10 sh -c "setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups '$LOOPFD' run '$T/img2' -- true 2>/dev/null" ||
	fail "slot not freed after $dev detached"
assert_no_device_for "$fimg"
assert_no_device_for "$T/img2"
left=$(losetup -a | grep -F "$T/" || true)
[ -z "$left" ] || fail "left attached: $left"
note "$seen; detached once its holder exited, slot freed then"
