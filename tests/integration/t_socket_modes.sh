#!/usr/bin/env bash
# Socket mode: a root daemon (--listen) and systemd socket activation serve
# clients that cannot exec a setuid helper: inside bubblewrap (no /dev/loop*,
# no-new-privs) and inside an unprivileged user namespace.
. "$(dirname "$0")/../lib.sh"

mkimage "$T/img" 8
head -c $((2 << 20)) /dev/urandom > "$T/data"
chmod 0644 "$T/data"
sock=$T/loopfd.sock

"$HELPER" --listen "$sock" 2> "$T/daemon.log" &
remember_pid $!
wait_until 5 test -S "$sock" || fail "daemon did not create $sock"
[ "$(stat -c %a "$sock")" = 666 ] || fail "socket mode $(stat -c %a "$sock"), want 666"

writer='cat "$1" >&3 && [ "$(head -c 16 <&3 | wc -c)" = 16 ]'
# exit 20 if any loop node (loop-control, loopN) is in /dev; the control:
# the host's /dev has them.
noloop='for n in /dev/loop*; do [ -e "$n" ] && exit 20; done; exit 0'
if sh -c "$noloop"; then fail "the no-loop-node check passes on the host's /dev"; fi

# 1. bubblewrap: everything unshared, a /dev without loop nodes, the socket
#    bind-mounted in.  The client is uid 65534 and has no_new_privs.
as_nobody bwrap --unshare-all --die-with-parent --ro-bind / / --dev /dev \
	--bind "$T" "$T" --ro-bind "$PREFIX" "$PREFIX" \
	sh -c 'sh -c "$5" || exit 20
	       grep -q "^NoNewPrivs:[[:space:]]*1" /proc/self/status || exit 21
	       exec "$0" run --socket "$1" "$2" -- sh -c "$3" sh "$4"' \
	"$LOOPFD" "$sock" "$T/img" "$writer" "$T/data" "$noloop" 2> "$T/err" \
	|| { rc=$?; cat "$T/err"; fail "client inside bwrap failed (status $rc; 20: loop nodes, 21: no NNP)"; }
cmp -n $((2 << 20)) "$T/data" "$T/img" || fail "data from the bwrap client missing"
assert_no_device_for "$T/img"

# 2. Inside bwrap, the setuid route cannot work: a clear message says so.
if as_nobody bwrap --unshare-all --ro-bind / / --dev /dev --bind "$T" "$T" \
	"$LOOPFD" run "$T/img" -- true 2> "$T/err"; then
	fail "setuid spawn under no_new_privs claimed success"
fi
grep -q "no_new_privs" "$T/err" || fail "no hint about no_new_privs: $(cat "$T/err")"
grep -q "socket" "$T/err" || fail "no pointer to socket mode: $(cat "$T/err")"

# 3. An unprivileged user namespace (root inside, 65534 outside), via LOOPFD_SOCKET.
: > "$T/img"; truncate -s 8M "$T/img"
as_nobody env LOOPFD_SOCKET="$sock" unshare -Ur \
	"$LOOPFD" run "$T/img" -- sh -c "$writer" sh "$T/data" 2> "$T/err" \
	|| { cat "$T/err"; fail "client in a user namespace failed"; }
cmp -n $((2 << 20)) "$T/data" "$T/img" || fail "data from the userns client missing"

# 4. systemd socket activation as the shipped units set it up: the socket
#    kind, Accept= and SocketMode= from loopfd.socket; ExecStart= and the
#    sandbox from loopfd.service (Accept=no: the helper gets the listening
#    fd) and loopfd@.service (Accept=yes, the documented drop-in: one
#    connection per helper).  Only the socket's path is the test's own.
. "$(dirname "$0")/../units.sh"
socket_unit=$UNITDIR/loopfd.socket
listen=$(unit_value "$socket_unit" ListenSequentialPacket)
[[ "$listen" == /* ]] || fail "loopfd.socket: no absolute ListenSequentialPacket= ($listen)"
mode=$(unit_value "$socket_unit" SocketMode)
[ "$(unit_value "$socket_unit" Accept)" = no ] || fail "loopfd.socket: Accept= is not no"
for accept in no yes; do
	service=$UNITDIR/loopfd.service flag=
	[ $accept = no ] || { service=$UNITDIR/loopfd@.service; flag=--accept; }
	unit_sandbox "$service"
	unit_exec "$service"
	[ "${EXEC[0]}" = "$HELPER" ] || fail "$service: ExecStart= runs ${EXEC[0]}, not $HELPER"
	asock=$T/act-$accept.sock
	systemd-socket-activate --seqpacket $flag -l "$asock" "${SANDBOX[@]}" "${EXEC[@]}" \
		2>> "$T/act.log" &
	act_pid=$!
	remember_pid $act_pid
	wait_until 5 test -S "$asock" || fail "systemd-socket-activate did not listen"
	chmod "$mode" "$asock"
	: > "$T/img"; truncate -s 8M "$T/img"
	as_nobody "$LOOPFD" run --socket "$asock" "$T/img" -- sh -c "$writer" sh "$T/data" \
		2> "$T/err" || { cat "$T/err" "$T/act.log"; fail "socket-activated helper (Accept=$accept) failed"; }
	cmp -n $((2 << 20)) "$T/data" "$T/img" || fail "data via socket activation (Accept=$accept) missing"
	if [ $accept = no ]; then
		# The listener is the activated helper itself (same pid through
		# every exec): it must really be inside the sandbox.
		[ "$(readlink /proc/$act_pid/exe)" = "$(readlink -f "$HELPER")" ] ||
			fail "pid $act_pid is not the helper: $(readlink /proc/$act_pid/exe)"
		[ "$(readlink /proc/$act_pid/ns/net)" != "$(readlink /proc/self/ns/net)" ] ||
			fail "PrivateNetwork=: the helper shares our network namespace"
		grep -q '^NoNewPrivs:[[:space:]]*1' /proc/$act_pid/status || fail "NoNewPrivileges=: not set"
		awk '$5 == "/" { split($6, o, ","); exit o[1] != "ro" }' /proc/$act_pid/mountinfo ||
			fail "ProtectSystem=strict: / is writable for the helper"
	fi
	kill $act_pid; wait $act_pid 2>/dev/null || true
done
assert_no_device_for "$T/img"
note "daemon: bwrap and userns clients served; setuid under NNP refused clearly; systemd activation both ways, under the shipped units' settings and sandbox"
