#!/usr/bin/env bash
# The daemon as a service: it names its socket at start, logs one line per
# attach and per release outcome, refuses to take over a socket a live
# daemon serves (and replaces a stale one), and on SIGTERM removes its
# socket and exits at once.
. "$(dirname "$0")/../lib.sh"

mkimage "$T/img" 8
sock=$T/d.sock

"$HELPER" --listen "$sock" 2> "$T/d1.log" &
d1=$!
remember_pid $d1
wait_until 5 test -S "$sock" || fail "daemon did not start"
wait_until 5 grep -q "serving $sock" "$T/d1.log" || fail "start line does not name the socket: $(cat "$T/d1.log")"

# A second daemon on the same path: refused, the first one keeps serving.
if timeout 5 "$HELPER" --listen "$sock" 2> "$T/d2.log"; then
	fail "a second daemon took over a live daemon's socket"
fi
grep -q "a live daemon is serving this socket" "$T/d2.log" || fail "second daemon: $(cat "$T/d2.log")"
kill -0 $d1 || fail "first daemon gone"
ino=$(stat -c %i "$T/img")
as_nobody "$LOOPFD" run --socket "$sock" "$T/img" -- true || fail "first daemon no longer serves"
wait_until 5 grep -q "uid $NOBODY: /dev/loop[0-9]*, image dev [0-9]*:[0-9]* ino $ino: attached$" "$T/d1.log" \
	|| fail "no attach line: $(cat "$T/d1.log")"
wait_until 5 grep -q "uid $NOBODY: /dev/loop[0-9]*, image dev [0-9]*:[0-9]* ino $ino: released: flushed and detached$" "$T/d1.log" \
	|| fail "no release line: $(cat "$T/d1.log")"

# SIGTERM: socket removed, exit at once (status 0).
kill -TERM $d1
wait_until 3 sh -c "! kill -0 $d1 2>/dev/null" || fail "daemon still running 3 s after SIGTERM"
set +e; wait $d1; rc=$?; set -e
[ $rc = 0 ] || fail "daemon exit status $rc after SIGTERM"
[ ! -e "$sock" ] || fail "socket left behind after SIGTERM"

# A stale socket (no daemon behind it) is replaced.
python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.bind(sys.argv[1])' "$sock"
[ -S "$sock" ] || fail "could not make a stale socket"
"$HELPER" --listen "$sock" 2> "$T/d3.log" &
remember_pid $!
wait_until 5 grep -q "serving $sock" "$T/d3.log" || fail "stale socket not replaced: $(cat "$T/d3.log")"
as_nobody "$LOOPFD" run --socket "$sock" "$T/img" -- true || fail "daemon on a replaced stale socket does not serve"
assert_no_device_for "$T/img"
note "daemon: socket named at start, attach/release logged, live socket kept, stale one replaced, SIGTERM removes the socket"
