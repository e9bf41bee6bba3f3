#!/usr/bin/env bash
# Writeback failure: a sparse image on a full filesystem.  The loop driver
# turns the backing file's ENOSPC into EIO; the run must fail and say the
# data is not all in the image.
. "$(dirname "$0")/../lib.sh"

mkdir "$T/full"
mount -t tmpfs -o size=16m,mode=0755 loopfd-test "$T/full"
remember_mount "$T/full"
truncate -s 64M "$T/full/img"
chown $NOBODY:$NOBODY "$T/full/img"

set +e
as_nobody "$LOOPFD" run "$T/full/img" -- sh -c 'head -c $((40 << 20)) /dev/zero | tr "\0" x >&3' 2> "$T/err"
rc=$?
set -e
[ $rc != 0 ] || fail "run succeeded although 40 MiB cannot fit in 16 MiB"
grep -q "NOT all in the image" "$T/err" || fail "no data-loss message: $(cat "$T/err")"
grep -q "$T/full/img" "$T/err" || fail "message does not name the image: $(cat "$T/err")"
assert_no_device_for "$T/full/img"
note "writeback failure reported: $(grep -m1 'NOT all' "$T/err")"
