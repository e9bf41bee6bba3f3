#!/usr/bin/env bash
# make demo: the main job, as uid 65534, on a scratch image.
#   1. loopfd is built and installed (helper setuid root) into a temp prefix;
#   2. uid 65534 runs `loopfd run --grant` on a 64 MiB scratch image it opened
#      itself: mkfs.fat on /dev/fd/3, files copied in with mtools, and 16 MiB of
#      buffered data written straight through the device fd past the
#      filesystem, none of it fsynced by the writer;
#   3. after loopfd returns, the image file itself is checked: fsck.fat, the
#      files' checksums, the raw data's checksum; nothing may be left attached.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/prefix.sh
require_root "make demo"

ms() { date +%s%3N; }
t0=$(ms)
install_temp_prefix demo
trap 'rm -rf "$LOOPFD_T"' EXIT
t_build=$(( $(ms) - t0 ))
W=$LOOPFD_T/work
mkdir -m 01777 "$W"	# uid 65534 writes its tool log here
nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@"; }

truncate -s 96M "$W/scratch.img"
chown 65534:65534 "$W/scratch.img"
head -c 3000000 /dev/urandom > "$W/file1.bin"
head -c 700000 /dev/urandom > "$W/file2.bin"
head -c $((16 << 20)) /dev/urandom > "$W/raw.bin"
chmod 0644 "$W"/*.bin

# The job, exactly as a sandboxed build stage would run it.
t1=$(ms)
nobody "$PREFIX/bin/loopfd" run --grant -v "$W/scratch.img" -- sh -c '
	set -e
	w=$1
	# a FAT filesystem in the first 64 MiB, through the device (path-based
	# tools need --grant: uid 65534 cannot reopen a root-owned node)
	mkfs.fat -n LOOPFD /dev/fd/3 $((64 * 1024)) > "$w/tools.log" 2>&1
	export MTOOLS_SKIP_CHECK=1
	mcopy -i /dev/fd/3 "$w/file1.bin" "$w/file2.bin" ::/ 2>> "$w/tools.log"
	# 16 MiB of raw buffered writes past the filesystem, never fsynced
	dd if="$w/raw.bin" bs=1M seek=64 conv=notrunc status=none >&3
' sh "$W" 2> "$W/loopfd.err" || { cat "$W/loopfd.err"; echo "demo: loopfd run FAILED"; exit 1; }
t_run=$(( $(ms) - t1 ))

# Check the image file itself, with the device gone.
fail=0
check() { if "$@"; then echo "  ok    $label"; else echo "  FAIL  $label"; fail=1; fi; }
label="fsck.fat -n on the image"; check fsck.fat -n "$W/scratch.img" >/dev/null
for f in file1.bin file2.bin; do
	label="$f copied in by mtools: checksum"
	check cmp -s "$W/$f" <(MTOOLS_SKIP_CHECK=1 mcopy -i "$W/scratch.img" "::/$f" -)
done
label="16 MiB raw buffered write: checksum"
check cmp -s "$W/raw.bin" <(dd if="$W/scratch.img" bs=1M skip=64 count=16 status=none)
label="nothing left attached to the image"
check test -z "$(losetup -j "$W/scratch.img")"

echo
echo "loopfd demo ($(uname -r), $(date -u +%Y-%m-%dT%H:%MZ))"
sed 's/^/  /' "$W/loopfd.err"
printf '  build+install %6d ms\n  loopfd run    %6d ms  (attach, mkfs.fat, 2 files, 16 MiB raw, flush, detach)\n' \
	"$t_build" "$t_run"
[ $fail = 0 ] && echo "demo: all data is in the image; nothing attached" || echo "demo: FAILED"
exit $fail
