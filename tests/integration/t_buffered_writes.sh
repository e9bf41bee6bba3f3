#!/usr/bin/env bash
# The reason loopfd exists: buffered writes through the device fd, never
# fsynced by the writer, are all in the image when `loopfd run` returns, and
# no device is left attached.  Two images at once check fd placement and the
# environment contract.
. "$(dirname "$0")/../lib.sh"

mkimage "$T/a.img" 32
mkimage "$T/b.img" 8
head -c $((24 << 20)) /dev/urandom > "$T/data"
head -c $((3 << 20)) /dev/urandom > "$T/data2"
chmod 0644 "$T/data" "$T/data2"

# The writer: plain buffered write(2)s to fds 3 and 4 (cat uses no fsync),
# then it exits.  The env contract is recorded for checking below.
as_nobody "$LOOPFD" run "$T/a.img" "$T/b.img" -- sh -c '
	cat "$1" >&3 && cat "$2" >&4 &&
	printf "%s\n" "$LOOPFD_DEVICE" "$LOOPFD_NAME" "$LOOPFD_DEVICES" "$LOOPFD_NAMES" > "$3"
' sh "$T/data" "$T/data2" "$T/env.out" 2> "$T/err" || { cat "$T/err"; fail "loopfd run failed"; }

cmp -n $((24 << 20)) "$T/data" "$T/a.img" || fail "a.img does not hold every byte written through the device"
cmp -n $((3 << 20)) "$T/data2" "$T/b.img" || fail "b.img does not hold every byte written through the device"
assert_no_device_for "$T/a.img"
assert_no_device_for "$T/b.img"

mapfile -t env < "$T/env.out"
[ "${env[0]}" = /dev/fd/3 ] || fail "LOOPFD_DEVICE=${env[0]}"
[[ "${env[1]}" =~ ^loop[0-9]+$ ]] || fail "LOOPFD_NAME=${env[1]}"
[ "${env[2]}" = "/dev/fd/3 /dev/fd/4" ] || fail "LOOPFD_DEVICES=${env[2]}"
[[ "${env[3]}" =~ ^${env[1]}\ loop[0-9]+$ ]] || fail "LOOPFD_NAMES=${env[3]}"

# The exit status is COMMAND's.
set +e
as_nobody "$LOOPFD" run "$T/a.img" -- sh -c 'exit 7' 2>/dev/null
rc=$?
set -e
[ $rc = 7 ] || fail "exit status $rc, want COMMAND's 7"
note "24 MiB + 3 MiB buffered through two devices: all in the images, nothing attached"
