#!/usr/bin/env bash
# A read-only backing fd gives a device that rejects writes: with -r, and
# for an image the caller can only read.
. "$(dirname "$0")/../lib.sh"

mkimage "$T/ro.img" 4
head -c $((4 << 20)) /dev/urandom > "$T/ro.img"
chown root:root "$T/ro.img"
chmod 0644 "$T/ro.img"		# nobody may read, not write
before=$(sha256sum < "$T/ro.img")

# Without -r the image cannot be opened for writing: the error names it.
if as_nobody "$LOOPFD" run "$T/ro.img" -- true 2> "$T/err"; then
	fail "read-write open of a read-only image succeeded"
fi
grep -q "$T/ro.img" "$T/err" || fail "error does not name the image: $(cat "$T/err")"
grep -qi "permission denied" "$T/err" || fail "error does not give the reason: $(cat "$T/err")"

# With -r: readable, writes rejected, the device reports read-only.
set +e
as_nobody "$LOOPFD" run -r -v "$T/ro.img" -- sh -c '
	head -c 4096 <&3 > "$1/first" || exit 10
	if printf x >&3 2>/dev/null; then exit 11; fi
	exit 0' sh "$T" 2> "$T/err"
rc=$?
set -e
[ $rc = 0 ] || { cat "$T/err"; fail "read-only run failed (status $rc: 10 read, 11 a write succeeded)"; }
cmp -n 4096 "$T/first" "$T/ro.img" || fail "read through the device differs"
grep -Eq "^loopfd: $T/ro.img -> /dev/loop[0-9]+ \([0-9]+:[0-9]+, 4194304 bytes, read-only[,)]" "$T/err" \
	|| fail "-v does not report the device read-only: $(cat "$T/err")"

# --grant on a read-only attachment is refused: the owner of a node can open
# it read-write whatever the device's flag, and reach LOOP_SET_STATUS64
# (partition scan, direct I/O) past the policy.
if as_nobody "$LOOPFD" run -r --grant "$T/ro.img" -- true 2> "$T/err"; then
	fail "--grant accepted on a read-only attachment"
fi
grep -q "grant is refused on a read-only attachment" "$T/err" || fail "read-only grant refusal: $(cat "$T/err")"
grep -q "$T/ro.img" "$T/err" || fail "read-only grant refusal does not name the image: $(cat "$T/err")"

# A writable image opened with -r: the kernel-side device is read-only too,
# so even a writable reopen by root cannot write it.
mkimage "$T/rw.img" 4
as_nobody "$LOOPFD" run -r "$T/rw.img" -- sh -c '
	ro=$(cat /sys/block/$LOOPFD_NAME/ro); [ "$ro" = 1 ] || exit 12' \
	|| fail "device of a -r attach is not read-only in sysfs"

[ "$(sha256sum < "$T/ro.img")" = "$before" ] || fail "read-only image changed"
assert_no_device_for "$T/ro.img"
assert_no_device_for "$T/rw.img"
note "read-only fd -> read-only device, writes rejected, image unchanged"
