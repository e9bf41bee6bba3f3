#!/usr/bin/env bash
# A client killed with SIGKILL mid-session: the helper sees the connection
# end, flushes and detaches on its own, and says so in its log (the
# daemon's; a setuid helper lets go of the caller's stderr once the session
# runs, since a full pipe there could block it).
. "$(dirname "$0")/../lib.sh"

mkimage "$T/img" 16
head -c $((8 << 20)) /dev/urandom > "$T/data"
chmod 0644 "$T/data"
"$HELPER" --listen "$T/sock" 2> "$T/daemon.log" &
remember_pid $!
wait_until 5 test -S "$T/sock" || fail "daemon did not start"

for mode in setuid daemon; do
	sock=(); [ $mode = setuid ] || sock=(--socket "$T/sock")
	truncate -s 0 "$T/img"; truncate -s 16M "$T/img"
	set +e
	as_nobody "$LOOPFD" run "${sock[@]}" "$T/img" -- sh -c '
		cat "$1" >&3
		exec 3>&-
		kill -KILL $PPID	# the loopfd client itself
		sleep 0.2' sh "$T/data" 2> "$T/err"
	rc=$?
	set -e
	[ $rc = 137 ] || fail "$mode: client was not killed by SIGKILL (status $rc)"
	wait_until 15 sh -c "[ -z \"\$(losetup -j '$T/img')\" ]" || fail "$mode: device not detached after the client died"
	cmp -n $((8 << 20)) "$T/data" "$T/img" || fail "$mode: data written before the client died is not in the image"
done
wait_until 5 grep -q "uid $NOBODY left /dev/loop[0-9]* attached: flushed and detached" "$T/daemon.log" \
	|| fail "daemon did not log the outcome: $(cat "$T/daemon.log")"
note "client SIGKILLed (setuid and daemon): helper flushed and detached; the daemon logged it"
