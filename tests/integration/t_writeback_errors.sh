#!/usr/bin/env bash
# Writeback errors in both places a release must look (KERNEL-FACTS.md, "Which
# call sees which writeback error"), each on ext4 on a loop device of the
# test's own:
#  (a) the device's page cache: the loop's write into a sparse image on a full
#      ext4 fails (ENOSPC, EIO for the device); only the device's write-back
#      sees it (sync_file_range on the helper's device fd);
#  (b) the image's own page cache: the loop's buffered writes succeed, and the
#      image's write-back to the disk fails (the ext4 sits on a device whose
#      backing tmpfs fills up); only fsync of the backing file sees it.
# Each release must be reported as data loss.  (c) Both at once, between clean
# images, in one batch release: its flushes run on threads (helper/threads.c),
# and each loss must still be reported for its own image, and only there.
# (d) In one batch, another opener writes (b)'s kind of image while the
# release waits for a busy device before it: the write's loss must be
# reported (a device must not wait behind another's wait between its flush
# and its clear, with only a write-back, no fsync, after it).  (e) and (f)
# are described where they run.
. "$(dirname "$0")/../lib.sh"

# The test's own devices go by name: once the tmpfs is unmounted, lib.sh
# would no longer find the one backed by a file on it.
_ext4_mounts=()
_ext4_devs=()
_teardown() {
	local m d
	for m in "${_ext4_mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" || true; done
	for d in "${_ext4_devs[@]}"; do losetup -d "$d" 2>/dev/null || true; done
}
trap 'rc=$?; set +e; _teardown; (exit $rc); _cleanup' EXIT

# ext4_on FILE MNT [MOUNT OPTIONS]: mkfs.ext4 on a loop device of FILE, mounted at MNT.
ext4_on() {
	local dev
	dev=$(losetup -f --show "$1")
	_ext4_devs+=("$dev")
	mkfs.ext4 -q "$dev"
	mkdir "$2"
	mount ${3:+-o "$3"} "$dev" "$2"
	_ext4_mounts+=("$2")
}

# full_fs_image DIR: (a)'s kind of image, DIR/img: 64 MiB, sparse, on a
# 16 MiB ext4 mounted at DIR.
full_fs_image() {
	truncate -s 16M "$1.fs"
	ext4_on "$1.fs" "$1"
	truncate -s 64M "$1/img"
	chown $NOBODY:$NOBODY "$1/img"
}

# full_disk_image DIR: (b)'s kind of image, DIR/img: 40 MiB, allocated, on
# a 64 MiB ext4 mounted at DIR whose device's backing file sits on a 24 MiB
# tmpfs (DIR.tmpfs, unmounted by lib.sh after _teardown).
full_disk_image() {
	mkdir "$1.tmpfs"
	mount -t tmpfs -o size=24m,mode=0755 loopfd-test "$1.tmpfs"
	remember_mount "$1.tmpfs"
	truncate -s 64M "$1.tmpfs/fs"
	ext4_on "$1.tmpfs/fs" "$1" errors=continue
	fallocate -l 40M "$1/img"
	chown $NOBODY:$NOBODY "$1/img"
}

# expect_loss IMAGE MIB WHAT: write MIB through the device, buffered; the
# run must fail and name the image and the loss.
expect_loss() {
	local rc
	set +e
	as_nobody "$LOOPFD" run "$1" -- sh -c "head -c \$(($2 << 20)) /dev/zero | tr '\\0' x >&3" 2> "$T/err"
	rc=$?
	set -e
	[ $rc != 0 ] || fail "$3: run succeeded although the write-back failed"
	grep -q "NOT all in the image" "$T/err" || fail "$3: no data-loss message: $(cat "$T/err")"
	grep -q "$1" "$T/err" || fail "$3: message does not name the image: $(cat "$T/err")"
	assert_no_device_for "$1"
	note "$3: $(grep -m1 'NOT all' "$T/err")"
}

# (a) a 64 MiB sparse image on a 16 MiB ext4.
full_fs_image "$T/a"
expect_loss "$T/a/img" 40 "(a) device write-back"

# (b) a 40 MiB allocated image on a 64 MiB ext4 whose device's backing file
# sits on a 24 MiB tmpfs: ext4 has the room, its disk has not.
full_disk_image "$T/b"
expect_loss "$T/b/img" 36 "(b) image write-back"

# (c) the two cases of (a) and (b) again, in one run of five images: fd 4 is
# (a)'s kind of image, fd 6 (b)'s, fds 3, 5 and 7 clean ones written too.
full_fs_image "$T/c"
full_disk_image "$T/d"
for i in 1 2 3; do mkimage "$T/ok$i.img" 8; done
set +e
as_nobody "$LOOPFD" run "$T/ok1.img" "$T/c/img" "$T/ok2.img" "$T/d/img" "$T/ok3.img" -- \
	sh -c 'for fd in 3 5 7; do eval "echo clean >&$fd" || exit 1; done
	       head -c $((40 << 20)) /dev/zero | tr "\0" x >&4 &&
	       head -c $((36 << 20)) /dev/zero | tr "\0" x >&6' 2> "$T/err"
rc=$?
set -e
[ $rc != 0 ] || fail "(c): run succeeded although two write-backs failed"
for img in "$T/c/img" "$T/d/img"; do
	grep "NOT all in the image" "$T/err" | grep -q "$img" ||
		fail "(c): no data-loss message naming $img: $(cat "$T/err")"
	assert_no_device_for "$img"
done
for i in 1 2 3; do
	! grep -q "ok$i.img.*NOT all" "$T/err" || fail "(c): loss reported for clean ok$i.img: $(cat "$T/err")"
	[ "$(head -n1 "$T/ok$i.img")" = clean ] || fail "(c): ok$i.img lacks its data"
	assert_no_device_for "$T/ok$i.img"
done
note "(c) one batch: $(grep -c 'NOT all' "$T/err") losses reported, for the two failing images only"

# (d) fd 3 (a clean image) is held by a child for 2 s; fd 4 ((b)'s kind) by
# another, which writes after 0.5 s and closes. COMMAND itself ends at once.
full_disk_image "$T/e"
mkimage "$T/held.img" 8
set +e
as_nobody "$LOOPFD" run --release-timeout 20 "$T/held.img" "$T/e/img" -- \
	sh -c '( exec 4>&-; sleep 2 ) &
	       ( exec 3>&-; sleep 0.5; head -c $((36 << 20)) /dev/zero | tr "\0" x >&4 ) &
	       exit 0' 2> "$T/err"
rc=$?
set -e
[ $rc != 0 ] || fail "(d): run succeeded although the image's write-back failed"
grep "NOT all in the image" "$T/err" | grep -q "$T/e/img" ||
	fail "(d): no data-loss message naming $T/e/img: $(cat "$T/err")"
! grep -q "held.img.*NOT all" "$T/err" || fail "(d): loss reported for held.img: $(cat "$T/err")"
assert_no_device_for "$T/e/img"
assert_no_device_for "$T/held.img"
note "(d) a write during another device's wait: $(grep -m1 'NOT all' "$T/err" | sed 's/.*failed: //')"

# (e) A partitioned image of (b)'s kind: loopfd run --partitions binds the
# whole image (fd 3) and each partition (fds 4, 5) to one open file, whose
# write-back error only the first fsync through any of them sees.  30 MiB
# written through partition 2 alone: partition 2's release must report the
# loss (so must its siblings: their data may be in what was lost).
full_disk_image "$T/f"
printf 'label: gpt\n,8M\n,\n' | sfdisk -q "$T/f/img"
set +e
as_nobody "$LOOPFD" run -v --json --partitions "$T/f/img" -- \
	sh -c 'head -c $((30 << 20)) /dev/zero | tr "\0" x >&5' 2> "$T/err"
rc=$?
set -e
[ $rc != 0 ] || fail "(e): run succeeded although the image's write-back failed"
python3 - "$T/err" <<'EOF' || fail "(e): $(cat "$T/err")"
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
rel = [e for e in ev if e.get("event") == "release"]
assert len(rel) == 3, rel
p2 = [e for e in rel if e.get("image", "").endswith(" partition 2")]
assert len(p2) == 1, rel
assert p2[0]["data_lost"] is True and p2[0]["ok"] is False, p2
assert all(e["data_lost"] is True for e in rel), rel
EOF
assert_no_device_for "$T/f/img"
note "(e) partitions of one open image: every device's release reports the image's loss"

# (f) data the caller wrote to the image before the attach, whose write-back
# fails: the helper writes it back before the bind (so that the kernel's
# bind does not, holding the device's lock: helper-21) and that write-back's
# error refuses the attach, naming it.  Before, LOOP_CONFIGURE's own fsync
# took the error and nobody was told: the run succeeded and the data was lost.
full_disk_image "$T/g"
as_nobody dd if=/dev/zero of="$T/g/img" bs=1M count=30 conv=notrunc status=none ||
	fail "(f): the buffered write before the attach failed at once"
set +e
as_nobody "$LOOPFD" run "$T/g/img" -- true 2> "$T/err"
rc=$?
set -e
[ $rc != 0 ] || fail "(f): attached over data that did not reach the disk, and said nothing"
grep -q "^loopfd: $T/g/img: data written to the image before the attach did not reach its disk (" "$T/err" ||
	fail "(f): the refusal does not say so: $(cat "$T/err")"
assert_no_device_for "$T/g/img"
note "(f) data written before the attach that did not reach the disk: $(cat "$T/err")"
