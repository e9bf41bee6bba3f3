#!/usr/bin/env bash
# An image on a FUSE filesystem whose GETATTR fails with ENXIO: the kernel's
# LOOP_GET_STATUS64 stats the backing file and returns that error unchanged,
# so the device looks unbound to a status query while it is still bound.
# A release must not take that for "detached": the device is still open
# elsewhere, must not be reported released, and must keep its quota slot
# (max-devices-per-user 1: a second device is refused) until it really
# detaches.  tinyfuse (tests/sandbox/tinyfuse.c) serves the image and arms
# the failure at the first fsync of the image after $T/arm appears: the
# release's own fsync, after its identity check.  FUSE images need
# allow-backing-fs fuse (the default policy refuses them: checked first).
. "$(dirname "$0")/../lib.sh"

TINYFUSE=$BUILD/tests/tinyfuse
mnt=$T/mnt
fimg=$mnt/img
_fuse_pid=
_placeholder=

# Before lib.sh's cleanup, and in this order: the holder (its device
# detaches at its last close), any device still backed by our image (by
# name: once unmounted, lib.sh could not find it), the mount, the server.
_fuse_teardown() {
	local p line dev
	rm -f "$T/arm" "$T/stall"
	touch "$T/go" "$T/go2"
	[ ! -s "$T/bgpid" ] || kill -KILL "$(cat "$T/bgpid")" 2>/dev/null || true
	[ -z "$_placeholder" ] || losetup -d "$_placeholder" 2>/dev/null || true
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
trap 'rc=$?; set +e; _fuse_teardown; (exit $rc); _cleanup' EXIT

if [ ! -c /dev/fuse ]; then
	echo "SKIP: no /dev/fuse here"
	echo "$0: FUSE" >> "$LOOPFD_T/skipped"
	exit 0
fi
mkdir "$mnt"
"$TINYFUSE" "$mnt" "$T/arm" "$T/stall" & _fuse_pid=$!
wait_until 5 test -e "$fimg" || fail "tinyfuse did not come up on $mnt"
[ "$(stat -c '%s %u %a' "$fimg")" = "8388608 $NOBODY 600" ] ||
	fail "tinyfuse image: $(stat -c '%s %u %a' "$fimg")"
mkimage "$T/img2" 4

# The default policy refuses a backing file on FUSE, naming the policy key.
write_config ""
if as_nobody "$LOOPFD" run "$fimg" -- true 2> "$T/deny"; then
	fail "a FUSE image attached under the default policy"
fi
grep -q "^loopfd: $fimg: backing file is on fuse, not allowed by the policy (allow-backing-fs fuse)" \
	"$T/deny" || fail "the FUSE refusal does not say why: $(cat "$T/deny")"
note "the default policy refuses a FUSE image: $(cat "$T/deny")"

write_config "max-devices-per-user 1
allow-backing-fs fuse"

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

# A batch whose entry 5 fails in the bind step, which runs on threads from 8
# entries (helper/threads.c).  Armed before the attach, the image's GETATTR
# fails from LOOP_CONFIGURE's own fsync of it on, so the read-back of entry
# 5's new device fails while the other entries are being bound.  The error
# names the entry; before the reply every device the batch bound is unbound
# and every slot is back: checked from the Python client with its session
# still open (a session's end would release them anyway), by the images'
# devices in sysfs and by attaching 8 of the images (the per-user limit is
# 9) in the same session.
write_config "max-devices-per-user 9
allow-backing-fs fuse"
make -s -C "$(pwd)" install-python PREFIX="$PREFIX" PYTHON=/usr/bin/python3 \
	PYTHONDIR="$T/site" > /dev/null || fail "make install-python"
batch=()
for i in 0 1 2 3 4 5 6 7; do
	mkimage "$T/b$i" 1
	batch+=("$T/b$i")
	[ $i != 4 ] || batch+=("$fimg")
done
touch "$T/arm"
as_nobody env PYTHONPATH="$T/site" /usr/bin/python3 - "${batch[@]}" > "$T/py.out" 2>&1 <<'PY' ||
import glob, sys
import loopfd

images = sys.argv[1:]

def bound() -> list[str]:
    found = []
    for f in glob.glob("/sys/block/loop*/loop/backing_file"):
        try:
            with open(f) as b:
                if b.read().strip() in images:
                    found.append(f.split("/")[3])
        except OSError:
            pass
    return found

with loopfd.connect() as s:
    try:
        s.attach_batch(images)
        sys.exit("a batch with a failing image attached")
    except loopfd.KernelError as e:
        if e.entry != 5 or "cannot read back the new attachment" not in str(e):
            sys.exit(f"not entry 5's read-back: entry {e.entry}: {e}")
    if bound():
        sys.exit(f"bound after the failed batch, session open: {bound()}")
    devs = s.attach_batch([i for i in images if "/mnt/" not in i])
    s.release_batch(devs)
print("ok")
PY
	fail "failed batch in a live session: $(cat "$T/py.out")"
rm -f "$T/arm"
grep -qx ok "$T/py.out" || fail "python: $(cat "$T/py.out")"
for f in "${batch[@]}"; do assert_no_device_for "$f"; done
note "a batch failing at entry 5 in the threaded bind left nothing bound and every slot free, session still open"

# A device bound to a file that never answers GETATTR (a stalled FUSE or NFS
# server) must not stall anyone else's attach.  The FUSE image is bound (its
# COMMAND sleeps) just above a free index, which a device of ours held while
# it was attached; with tinyfuse holding every GETATTR of the image, a batch
# of 8 reserves free nodes from GET_FREE's index up, past the FUSE device.
# Whether that one is bound is asked of sysfs, never of the device with
# LOOP_GET_STATUS64, which waits for the image's GETATTR: the batch hung
# there before.
mkimage "$T/ph.img" 1
_placeholder=$(losetup -f --show "$T/ph.img")
as_nobody "$LOOPFD" run "$fimg" -- sh -c 'touch "$1/held"
	while [ ! -e "$1/go2" ]; do sleep 0.05; done' sh "$T" 2> "$T/herr" &
holder=$!
remember_pid $holder
wait_until 10 test -e "$T/held" || fail "the FUSE image's holder did not start: $(cat "$T/herr")"
losetup -d "$_placeholder"
_placeholder=
touch "$T/stall"
set +e
timeout 20 setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups \
	"$LOOPFD" run "$T"/b[0-7] -- true 2> "$T/serr"
rc=$?
set -e
rm -f "$T/stall"
touch "$T/go2"
wait $holder || fail "the FUSE image's holder failed: $(cat "$T/herr")"
[ $rc = 0 ] || fail "a batch beside a device whose image stalls GETATTR: exit $rc (124: hung): $(cat "$T/serr")"
for f in "$T"/b[0-7] "$fimg" "$T/ph.img"; do assert_no_device_for "$f"; done
note "a batch attached beside a bound device whose image never answers GETATTR"
