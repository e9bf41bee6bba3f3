#!/usr/bin/env bash
# Issue 14: the setuid helper is out of its invoking user's reach beyond
# signals and ptrace (t_hardening): cgroups the user controls (v2 with
# systemd-style delegation: kill, freeze, migration; the v1 freezer),
# oom_score_adj, scheduling policy, nice and I/O class, and hard limits that
# kill.  Where it cannot get out of reach it refuses, naming the lever and
# socket mode.  From a user namespace the client says to use socket mode.
. "$(dirname "$0")/../lib.sh"

mkimage "$T/img" 8
V2=/sys/fs/cgroup/unified
[ -f "$V2/cgroup.procs" ] || V2=/sys/fs/cgroup
V1F=/sys/fs/cgroup/freezer
CG=loopfd-test-$$
_cgroups=()
cleanup_cgroups() {
	local d i p
	for d in "${_cgroups[@]}"; do
		[ ! -f "$d/freezer.state" ] || echo THAWED > "$d/freezer.state" || true
		# killed members take a moment to be released; what is left in
		# them was started by this test (a helper that did not leave)
		for i in $(seq 50); do
			rmdir "$d"/a "$d"/b 2>/dev/null || true
			if rmdir "$d" 2>/dev/null; then break; fi
			for p in $(cat "$d"/cgroup.procs "$d"/*/cgroup.procs 2>/dev/null); do
				kill -KILL "$p" 2>/dev/null || true
			done
			sleep 0.1
		done
		[ ! -d "$d" ] || echo "cleanup: cannot remove $d" >&2
	done
}
trap 'rc=$?; for p in "${_bg_pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done; cleanup_cgroups; (exit $rc) || _cleanup; _cleanup' EXIT

field() { awk -v k="$1:" '$1 == k { $1 = ""; sub(/^ /, ""); print }' "/proc/$2/status"; }
has_cap_sys_resource() { (( 0x$(field CapBnd $$) & (1 << 24) )); }

# held_run PREFIX-CMD... : as uid 65534, `PREFIX-CMD loopfd run img -- hold`;
# sets CLI (client pid) and HPID (its setuid helper).
held_run() {
	rm -f "$T/ready" "$T/go"
	as_nobody "$@" "$LOOPFD" run "$T/img" -- sh -c '
		head -c 1048576 /dev/urandom > "$1/data"
		cat "$1/data" >&3
		echo $PPID > "$1/ready"
		while [ ! -e "$1/go" ] && [ -d "$1" ]; do sleep 0.05; done' sh "$T" \
		2> "$T/run.err" &
	CLI=$!
	remember_pid $CLI
	wait_until 10 test -s "$T/ready" || { cat "$T/run.err"; fail "held run did not start"; }
	HPID=$(pgrep -P "$(cat "$T/ready")" -x loopfd-helper) || fail "no helper under the client"
}
end_run() { touch "$T/go"; wait "$CLI" || { cat "$T/run.err"; fail "held run failed"; }; }

# run_in_cgroups DIR...: root puts a shell into each cgroup DIR (as systemd
# does for a logged-in user's processes), which becomes uid 65534 and runs
# loopfd; COMMAND writes 1 MiB through the device and holds it.  Sets CLI,
# HPID and CMDPID (the holding COMMAND's sleep).
run_in_cgroups() {
	rm -f "$T/ready" "$T/data"
	sh -c 'd=$1; shift; for c in "$@"; do echo $$ > "$c/cgroup.procs" || exit 1; done
		exec setpriv --reuid='$NOBODY' --regid='$NOBODY' --clear-groups -- "$0" run "$d/img" -- sh -c "
		head -c 1048576 /dev/urandom > \"\$1/data\"; cat \"\$1/data\" >&3
		sleep 60 & echo \$PPID \$! > \"\$1/ready\"; wait" sh "$d"' \
		"$LOOPFD" "$T" "$@" 2> "$T/run.err" &
	CLI=$!; remember_pid $CLI
	wait_until 10 test -s "$T/ready" || { cat "$T/run.err"; fail "run in $* did not start"; }
	read -r cpid CMDPID < "$T/ready"
	HPID=$(pgrep -P "$cpid" -x loopfd-helper) || fail "no helper under the client"
}
# end_cgroup_run WHAT: end the COMMAND; the device must then be released.
end_cgroup_run() {
	kill -KILL "$CMDPID" 2>/dev/null || true
	wait "$CLI" 2>/dev/null || true
	wait_until 15 sh -c "[ -z \"\$(losetup -j '$T/img')\" ]" || fail "$1: device not released"
}

# 1. cgroup v2, delegated the way systemd delegates user@UID.service: the
#    directory and cgroup.procs/threads/subtree_control are the user's, and
#    the user's processes live below it.
if [ -w "$V2/cgroup.procs" ]; then
	mkdir "$V2/$CG"; _cgroups+=("$V2/$CG")
	chown $NOBODY "$V2/$CG" "$V2/$CG/cgroup.procs" "$V2/$CG/cgroup.threads" \
		"$V2/$CG/cgroup.subtree_control"
	as_nobody mkdir "$V2/$CG/a" "$V2/$CG/b"
	run_in_cgroups "$V2/$CG/a"
	grep -qx "0::/" "/proc/$HPID/cgroup" || fail "v2: helper still in $(grep '^0::' /proc/$HPID/cgroup)"
	# The user cannot move it back into its subtree...
	if as_nobody sh -c 'echo "$1" > "$2/cgroup.procs"' sh "$HPID" "$V2/$CG/b" 2>/dev/null; then
		fail "v2: uid $NOBODY moved its setuid helper into a cgroup it owns"
	fi
	# ...and killing its whole subtree ends the client and COMMAND, not
	# the helper, which then flushes and detaches (the data is in the image).
	as_nobody sh -c 'echo 1 > "$1/cgroup.kill"' sh "$V2/$CG/a" || fail "v2: cgroup.kill refused"
	wait "$CLI" 2>/dev/null || true
	wait_until 15 sh -c "[ -z \"\$(losetup -j '$T/img')\" ]" || fail "v2: device not released after cgroup.kill"
	cmp -n 1048576 "$T/data" "$T/img" || fail "v2: data written before cgroup.kill is not in the image"
	# (the helper survived: only it could have flushed and detached; in
	# setuid mode it no longer writes to the caller's stderr)
	# Where the helper cannot leave (here: the cgroup filesystem mounted
	# read-only in the caller's mount namespace), it refuses, naming the
	# cgroup and socket mode.
	if sh -c 'echo $$ > "$1/cgroup.procs" && exec unshare -m --propagation private sh -c "
		mount -o remount,bind,ro \"\$0\" && exec setpriv --reuid=$2 --regid=$2 --clear-groups -- \"\$1\" run \"\$2\" -- true" \
		"$3" "$4" "$5"' sh "$V2/$CG/a" $NOBODY "$V2" "$LOOPFD" "$T/img" 2> "$T/err"; then
		fail "v2: served although it could not leave the user's cgroup"
	fi
	grep -q "refusing to run: the cgroup /$CG/a (cgroup2): Read-only file system" "$T/err" \
		|| fail "v2: refusal to stay in the user's cgroup: $(cat "$T/err")"
	grep -q "socket mode" "$T/err" || fail "v2: refusal does not point to socket mode: $(cat "$T/err")"
	note "cgroup v2: helper moved to the root; migration refused; cgroup.kill of the user's subtree spared it; refusal where it cannot leave"
else
	echo "SKIP: cgroup v2 not writable here ($V2)"
	echo "$0: cgroup v2" >> "$LOOPFD_T/skipped"
fi

# 2. A cgroup v1 freezer the user owns: the helper leaves it, so freezing
#    it stops the user's processes (the control: its COMMAND) only.
if [ -w "$V1F/cgroup.procs" ]; then
	mkdir "$V1F/$CG"; _cgroups+=("$V1F/$CG")
	chown $NOBODY "$V1F/$CG" "$V1F/$CG/cgroup.procs" "$V1F/$CG/tasks" "$V1F/$CG/freezer.state"
	run_in_cgroups "$V1F/$CG"
	grep -q ":freezer:/$" "/proc/$HPID/cgroup" || fail "v1: helper still in $(grep freezer /proc/$HPID/cgroup)"
	as_nobody sh -c 'echo FROZEN > "$1/freezer.state"' sh "$V1F/$CG" || fail "v1: freeze refused"
	wait_until 5 grep -qx FROZEN "$V1F/$CG/freezer.state" || fail "v1: cgroup did not freeze"
	[ "$(field State "$CMDPID" | cut -c1)" = D ] || fail "v1: the control (COMMAND) is not frozen: $(field State "$CMDPID")"
	[ "$(field State "$HPID" | cut -c1)" = S ] || fail "v1: helper state $(field State "$HPID") with its user's cgroup frozen"
	as_nobody sh -c 'echo THAWED > "$1/freezer.state"' sh "$V1F/$CG"
	end_cgroup_run v1
	note "cgroup v1 freezer: helper left the user's cgroup; freezing it stopped the COMMAND only"
else
	echo "SKIP: no cgroup v1 freezer here"
	echo "$0: cgroup v1 freezer" >> "$LOOPFD_T/skipped"
fi

# 2b. A memory limit root set on a cgroup the caller shares with the helper
#    (systemd's MemoryMax= on a user's slice, a container's limit): unless
#    the helper is immune to the OOM killer (-1000, which needs
#    CAP_SYS_RESOURCE), the caller could fill the cgroup and have the OOM
#    killer take the helper and its guard.  It must leave such a cgroup.
V1M=/sys/fs/cgroup/memory
if [ -w "$V1M/cgroup.procs" ]; then
	mkdir "$V1M/$CG"; _cgroups+=("$V1M/$CG")
	echo $((512 << 20)) > "$V1M/$CG/memory.limit_in_bytes"
	run_in_cgroups "$V1M/$CG"
	if has_cap_sys_resource; then
		[ "$(cat "/proc/$HPID/oom_score_adj")" = -1000 ] || fail "memory: helper not OOM-immune"
	else
		grep -q ":memory:/$" "/proc/$HPID/cgroup" \
			|| fail "memory: helper (oom_score_adj $(cat /proc/$HPID/oom_score_adj)) still in the limited $(grep :memory: /proc/$HPID/cgroup)"
	fi
	end_cgroup_run memory
	note "memory-limited cgroup: the helper leaves it (or is OOM-immune)"
else
	echo "SKIP: no cgroup v1 memory controller here"
	echo "$0: cgroup v1 memory" >> "$LOOPFD_T/skipped"
fi

# 2c. Setuid sessions run as root, outside the user's pids and memory
#     limits: at most 128 per uid at once (sessions without a device too).
PYLOOPFD=$(cd "$(dirname "$0")/../../python" && pwd)
as_nobody env PYTHONPATH="$PYLOOPFD" LOOPFD_HELPER="$HELPER" /usr/bin/python3 -c '
import loopfd, sys
held = [loopfd.connect() for _ in range(128)]
import os, socket, subprocess
# A refused session that is never asked anything must not stay (refused
# ones would otherwise pile up as root processes): it ends within 1 s.
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
p = subprocess.Popen([os.environ["LOOPFD_HELPER"], "--fd", str(b.fileno())],
                     pass_fds=(b.fileno(),))
b.close()
try:
    p.wait(timeout=3)
except subprocess.TimeoutExpired:
    p.kill(); print("a refused, silent session lived over 3 s"); sys.exit(5)
try:
    loopfd.connect()
except loopfd.Error as e:
    print("refused:", e)
    sys.exit(0 if "already runs 128 loopfd sessions" in str(e) else 3)
sys.exit(4)
' > "$T/sessions" 2>&1 || fail "129th setuid session of one uid: $(cat "$T/sessions")"
as_nobody "$LOOPFD" run "$T/img" -- true || fail "sessions not counted down after the 128 closed"
note "setuid sessions: the 129th of one uid refused"

# 3. oom_score_adj 1000 before the exec: the helper brings its own down.
held_run sh -c 'echo 1000 > /proc/self/oom_score_adj && exec "$@"' sh
adj=$(cat "/proc/$HPID/oom_score_adj")
if has_cap_sys_resource; then want=-1000; else want=0; fi
[ "$adj" = "$want" ] || fail "helper oom_score_adj $adj after the caller's 1000, want $want"
end_run

# 4. Scheduling: SCHED_IDLE, nice 19, idle I/O class: all back to defaults.
held_run sh -c 'exec chrt --idle 0 nice -n 19 ionice -c 3 "$@"' sh
chrt -p "$HPID" | grep -q "SCHED_OTHER" || fail "helper policy: $(chrt -p "$HPID")"
[ "$(ps -o ni= -p "$HPID" | tr -d ' ')" = 0 ] || fail "helper nice $(ps -o ni= -p "$HPID")"
ionice -p "$HPID" | grep -qv idle || fail "helper I/O class $(ionice -p "$HPID")"
end_run

# 5. Hard limits that kill: RLIMIT_CPU and RLIMIT_RTTIME.  With
#    CAP_SYS_RESOURCE the helper makes them unlimited; without it (this
#    project's CI machines) it must refuse, naming the limit and socket mode.
for lim in "--cpu=1:1 RLIMIT_CPU" "--rttime=100000:100000 RLIMIT_RTTIME"; do
	set -- $lim
	if has_cap_sys_resource; then
		held_run prlimit "$1" --
		grep -q "^Max ${2#RLIMIT_}" "/proc/$HPID/limits" || true
		awk -v n="$( [ "$2" = RLIMIT_CPU ] && echo 'cpu time' || echo 'realtime timeout')" \
			'index($0, "Max " n) == 1 && $0 ~ /unlimited +unlimited/ { ok = 1 } END { exit !ok }' \
			"/proc/$HPID/limits" || fail "$2 not unlimited in the helper"
		end_run
	else
		if as_nobody prlimit "$1" -- "$LOOPFD" run "$T/img" -- true 2> "$T/err"; then
			fail "served with a hard $2 that cannot be raised"
		fi
		grep -q "$2" "$T/err" || fail "$2 refusal does not name the limit: $(cat "$T/err")"
		grep -q "socket mode" "$T/err" || fail "$2 refusal does not point to socket mode: $(cat "$T/err")"
	fi
done
assert_no_device_for "$T/img"

# 6. A user namespace: the client says why setuid cannot work and what to do.
if as_nobody unshare -Ur true 2>/dev/null; then
	if as_nobody unshare -Ur "$LOOPFD" run "$T/img" -- true 2> "$T/err"; then
		fail "served from a user namespace through the setuid helper"
	fi
	grep -q "connect: this process runs in a user namespace (uid_map" "$T/err" && grep -q "socket mode" "$T/err" \
		|| fail "user namespace message: $(cat "$T/err")"
else
	echo "SKIP: user namespaces not available to uid $NOBODY"
	echo "$0: user namespace" >> "$LOOPFD_T/skipped"
fi
note "out of reach: cgroups, oom_score_adj, scheduling, killing hard limits; user namespace told to use socket mode"
