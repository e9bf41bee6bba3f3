#!/usr/bin/env bash
# A client killed with SIGKILL mid-session: the helper sees the connection
# end, flushes and detaches on its own, and says so.
. "$(dirname "$0")/../lib.sh"

mkimage "$T/img" 16
head -c $((8 << 20)) /dev/urandom > "$T/data"
chmod 0644 "$T/data"

set +e
as_nobody "$LOOPFD" run "$T/img" -- sh -c '
	cat "$1" >&3
	exec 3>&-
	kill -KILL $PPID	# the loopfd client itself
	sleep 0.2' sh "$T/data" 2> "$T/err"
rc=$?
set -e
[ $rc = 137 ] || fail "client was not killed by SIGKILL (status $rc)"
wait_until 15 sh -c "[ -z \"\$(losetup -j '$T/img')\" ]" || fail "device not detached after the client died"
wait_until 5 grep -q "flushed and detached" "$T/err" || fail "helper did not log the outcome: $(cat "$T/err")"
cmp -n $((8 << 20)) "$T/data" "$T/img" || fail "data written before the client died is not in the image"
note "client SIGKILLed: helper flushed, detached and logged"
