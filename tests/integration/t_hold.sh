#!/usr/bin/env bash
# Devices that outlive one command: `loopfd attach` in one process, `loopfd
# exec` in a second, `loopfd detach` in a third, each under `env -i` from
# another directory, as uid 65534; the holder's death still releases with
# the data; other uids can neither use nor spoof a holder; a squatted
# holder directory is refused; list --json; limits count held devices.
. "$(dirname "$0")/../lib.sh"

OTHER=65533		# a second unprivileged uid (no account needed)
VICTIM=65532		# whose holder directory another uid squats
as_other() { setpriv --reuid=$OTHER --regid=$OTHER --clear-groups -- "$@"; }
as_victim() { setpriv --reuid=$VICTIM --regid=$VICTIM --clear-groups -- "$@"; }
# A bare CI step: no XDG_RUNTIME_DIR, no D-Bus, nothing but PATH.
lfd() { as_nobody env -i PATH=/usr/bin:/bin "$LOOPFD" "$@"; }

# Holders are processes of ours (our prefix's loopfd, of the test uids):
# detach what is left, kill what still runs, remove the directories.
_hold_cleanup() {
	local p u
	for u in $NOBODY $OTHER $VICTIM; do
		setpriv --reuid=$u --regid=$u --clear-groups -- env -i "$LOOPFD" \
			detach --all --timeout 1 >/dev/null 2>&1 || true
	done
	for p in $(pgrep -x loopfd 2>/dev/null || true); do
		[ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$(readlink -f "$LOOPFD")" ] &&
			kill -KILL "$p" 2>/dev/null || true
	done
	rm -rf /tmp/loopfd-$NOBODY /tmp/loopfd-$OTHER /tmp/loopfd-$VICTIM
}
trap 'rc=$?; set +e; _hold_cleanup; (exit $rc); _cleanup' EXIT
_hold_cleanup

mkdir -m 0777 "$T/a" "$T/b"
mkimage "$T/img" 16
mkimage "$T/i2" 4
mkimage "$T/i3" 4
head -c $((4 << 20)) /dev/urandom > "$T/data"
chmod 0644 "$T/data"
write_config "max-devices-per-user 2"

# ---- 1. attach, exec, detach: three processes, three directories --------
# (Output to a file, not $(...): a holder that kept stdout would hang the
# test instead of failing it; its fds are checked below.)
(cd "$T/a" && timeout 10 setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups -- \
	env -i PATH=/usr/bin:/bin "$LOOPFD" attach ../img > "$T/dev" 2> "$T/err") ||
	fail "attach: $(cat "$T/err")"
dev=$(cat "$T/dev")
[[ "$dev" =~ ^loop[0-9]+$ ]] || fail "attach printed '$dev', want loopN"
losetup -j "$T/img" | grep -q "/dev/$dev:" || fail "$dev is not attached to the image"
# The holder: our uid, no terminal, stdio on /dev/null, cwd /.
lfd list --json > "$T/list.json" || fail "list --json failed"
python3 - "$T/list.json" "$dev" "$T/img" <<'EOF' || fail "list --json: $(cat "$T/list.json")"
import json, sys
rows = json.load(open(sys.argv[1]))
assert len(rows) == 1, rows
r = rows[0]
fields = ["name", "device", "image", "backing_dev", "backing_ino", "major", "minor",
          "diskseq", "size", "offset", "sizelimit", "sector_size", "read_only",
          "partscan", "direct_io", "granted", "locked", "since", "since_epoch",
          "holder_pid", "state"]
missing = [f for f in fields if f not in r]
assert not missing, missing
assert r["name"] == sys.argv[2] and r["device"] == "/dev/" + sys.argv[2], r
assert r["image"] == sys.argv[3] and r["state"] == "attached", r
assert r["size"] == 16 << 20 and r["read_only"] is False, r
open(sys.argv[1] + ".pid", "w").write(str(r["holder_pid"]))
EOF
holder=$(cat "$T/list.json.pid")
[ "$(stat -c %u /proc/$holder)" = $NOBODY ] || fail "holder $holder is not uid $NOBODY"
[ "$(readlink /proc/$holder/cwd)" = / ] || fail "holder cwd: $(readlink /proc/$holder/cwd)"
for fd in 0 1 2; do
	[ "$(readlink /proc/$holder/fd/$fd)" = /dev/null ] || fail "holder fd $fd: $(readlink /proc/$holder/fd/$fd)"
done
# Its own session (setsid, then a second fork: no terminal can be acquired).
[ "$(ps -o sid= -p $holder | tr -d ' ')" != "$(ps -o sid= -p $$ | tr -d ' ')" ] ||
	fail "holder is in the test's session"
[ "$(ps -o tty= -p $holder | tr -d ' ')" = "?" ] || fail "holder has a terminal"
lfd list > "$T/list.txt"
grep -q "^$dev .*$holder .*attached .*$T/img$" "$T/list.txt" || fail "list: $(cat "$T/list.txt")"

# A buffered write through the held device from a second process (no fsync).
(cd "$T/b" && as_nobody env -i PATH=/usr/bin:/bin "$LOOPFD" exec "$dev" -- \
	sh -c 'cat "$1" >&3; echo "$LOOPFD_DEVICE $LOOPFD_NAME $LOOPFD_PATH" > "$2"' \
	sh "$T/data" "$T/b/env") 2> "$T/err" || fail "exec: $(cat "$T/err")"
[ "$(cat "$T/b/env")" = "/dev/fd/3 $dev /dev/$dev" ] || fail "exec environment: $(cat "$T/b/env")"
# Limits count the held device: two allowed, one held plus two is over.
if lfd run "$T/i2" "$T/i3" -- true 2> "$T/err"; then
	fail "a held device did not count against max-devices-per-user"
fi
grep -q "per-user limit" "$T/err" || fail "no per-user limit message: $(cat "$T/err")"
lfd run "$T/i2" -- true || fail "one more device than held refused"
# Detach from a third process and directory: data in the image, nothing left.
(cd / && lfd detach "$dev") 2> "$T/err" || fail "detach: exit $?: $(cat "$T/err")"
assert_no_device_for "$T/img"
cmp -n $((4 << 20)) "$T/data" "$T/img" || fail "data written through exec is not in the image"
wait_until 10 sh -c "! kill -0 $holder 2>/dev/null" || fail "holder $holder still running after detach"
[ "$(lfd list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 0 ] ||
	fail "list after detach is not empty"
lfd run "$T/i2" "$T/i3" -- true || fail "the detached device still counts against the limit"
rm -f "$LOOPFD_CONF"
note "attach / exec / detach in three processes: data in the image, holder gone, limits counted"

# ---- 2. the holder SIGKILLed: flushed and detached anyway ---------------------
truncate -s 0 "$T/img"; truncate -s 16M "$T/img"
dev=$(lfd attach "$T/img") || fail "attach for SIGKILL"
lfd exec "$dev" -- sh -c 'cat "$1" >&3' sh "$T/data" || fail "exec for SIGKILL"
holder=$(lfd list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["holder_pid"])')
kill -KILL "$holder"
wait_until 15 sh -c "[ -z \"\$(losetup -j '$T/img')\" ]" || fail "device not detached after the holder was killed"
cmp -n $((4 << 20)) "$T/data" "$T/img" || fail "data written before the holder died is not in the image"
rc=0; lfd exec "$dev" -- true 2> "$T/err" || rc=$?
[ $rc = 125 ] || fail "exec on a dead holder's device: exit $rc, want 125"
grep -q "$dev is not held by you" "$T/err" || fail "exec on a dead holder: $(cat "$T/err")"
[ "$(lfd list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 0 ] ||
	fail "list shows a dead holder's device"
note "holder SIGKILLed: helper flushed and detached, data in the image"

# ---- 3. another uid cannot exec, list or detach; nor can it pose as holder ----
dev=$(lfd attach "$T/img") || fail "attach for other-uid checks"
as_other env -i "$LOOPFD" list > "$T/out" 2> "$T/err" || fail "list as uid $OTHER: $(cat "$T/err")"
! grep -q "$dev" "$T/out" || fail "uid $OTHER lists uid $NOBODY's device: $(cat "$T/out")"
for cmd in "exec $dev -- true" "detach $dev"; do
	rc=0; as_other env -i PATH=/usr/bin:/bin "$LOOPFD" $cmd 2> "$T/err" || rc=$?
	[ $rc = 125 ] || fail "'$cmd' as uid $OTHER: exit $rc, want 125"
	grep -q "$dev is not held by you" "$T/err" || fail "'$cmd' as uid $OTHER: $(cat "$T/err")"
done
# Even with the directory and socket opened up (an admin's mistake), the
# holder serves no other uid: SO_PEERCRED, not the file mode, decides.
chmod 0755 /tmp/loopfd-$NOBODY; chmod 0777 /tmp/loopfd-$NOBODY/$dev
cat > "$T/probe.py" <<'EOF'
import socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.settimeout(5)
s.connect(sys.argv[1])
try:
    s.send(struct.pack("<4I", 0x31484c4c, 2, 0, 0))   # HOLD_FD
    msg, anc, flags, addr = s.recvmsg(8192, socket.CMSG_SPACE(4))
    print("answered" if msg or anc else "closed")
except (BrokenPipeError, ConnectionResetError):
    print("closed")
EOF
out=$(as_other /usr/bin/python3 "$T/probe.py" /tmp/loopfd-$NOBODY/$dev 2>&1) || true
[ "$out" = closed ] || fail "holder answered uid $OTHER: $out"
out=$(as_nobody /usr/bin/python3 "$T/probe.py" /tmp/loopfd-$NOBODY/$dev 2>&1) || true
[ "$out" = answered ] || fail "holder did not answer its own uid (the probe is broken): $out"
chmod 0700 /tmp/loopfd-$NOBODY
# A socket in the directory served by another uid (root here) is refused
# by the client: it never takes a device fd from a holder not its own.
python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.bind(sys.argv[1]); s.listen(1); time.sleep(30)' /tmp/loopfd-$NOBODY/loop999 &
spoof=$!
remember_pid $spoof
wait_until 5 test -S /tmp/loopfd-$NOBODY/loop999 || fail "spoof socket not created"
chmod 0777 /tmp/loopfd-$NOBODY/loop999
rc=0; lfd exec loop999 -- true 2> "$T/err" || rc=$?
[ $rc = 125 ] || fail "exec through a socket served by root: exit $rc"
grep -q "loop999 is served by uid 0, not by you (uid $NOBODY): refusing it" "$T/err" ||
	fail "spoofed holder: $(cat "$T/err")"
kill $spoof; rm -f /tmp/loopfd-$NOBODY/loop999
lfd detach "$dev" || fail "detach after the other-uid checks"
assert_no_device_for "$T/img"
note "uid $OTHER cannot list, exec or detach uid $NOBODY's device; holders check peers; clients check holders"

# ---- 4. a squatted holder directory is refused ------------------------------
mkimage "$T/v.img" 1; chown $VICTIM "$T/v.img"
for squat in dir symlink mode; do
	rm -rf /tmp/loopfd-$VICTIM
	case $squat in
	dir) as_other mkdir -m 0700 /tmp/loopfd-$VICTIM; want="a directory owned by uid $OTHER" ;;
	symlink) as_other mkdir -m 0700 "$T/a/$squat"; as_other ln -s "$T/a/$squat" /tmp/loopfd-$VICTIM
		 want="a symbolic link owned by uid $OTHER" ;;
	mode) as_victim mkdir -m 0755 /tmp/loopfd-$VICTIM; want="a directory owned by uid $VICTIM with mode 0755" ;;
	esac
	rc=0; as_victim env -i "$LOOPFD" attach "$T/v.img" > "$T/out" 2> "$T/err" || rc=$?
	[ $rc = 125 ] || fail "attach with a squatted directory ($squat): exit $rc: $(cat "$T/out")"
	grep -q "refusing /tmp/loopfd-$VICTIM: it is $want" "$T/err" || fail "squatted ($squat): $(cat "$T/err")"
	assert_no_device_for "$T/v.img"
done
rm -rf /tmp/loopfd-$VICTIM "$T/a/symlink"
note "holder directory squatted by another uid, as a symlink or with group/other access: refused"

# ---- 5. detach outcomes: busy names the opener; --all; SIGTERM; --grant -----
dev=$(lfd attach "$T/img") || fail "attach for busy"
lfd exec "$dev" -- sh -c 'sleep 30 </dev/null >/dev/null 2>&1 & echo $! > "$1"' sh "$T/b/sleeper" ||
	fail "exec for busy"
remember_pid "$(cat "$T/b/sleeper")"
rc=0; lfd detach --timeout 0.5 "$dev" 2> "$T/err" || rc=$?
[ $rc = 123 ] || fail "busy detach: exit $rc, want 123: $(cat "$T/err")"
grep -q "still open elsewhere" "$T/err" || fail "busy detach: $(cat "$T/err")"
grep -q "/dev/$dev is still open in: $(cat "$T/b/sleeper") (sleep)" "$T/err" ||
	fail "busy detach does not name the sleeper $(cat "$T/b/sleeper"): $(cat "$T/err")"
kill "$(cat "$T/b/sleeper")"
wait_until 15 sh -c "[ -z \"\$(losetup -j '$T/img')\" ]" || fail "busy device did not detach"

d1=$(lfd attach "$T/img") && d2=$(lfd attach -r "$T/i2") || fail "attach for --all"
lfd detach --all --json > "$T/receipts" || fail "detach --all"
python3 - "$T/receipts" <<'EOF' || fail "receipts: $(cat "$T/receipts")"
import json, sys
rs = [json.loads(l) for l in open(sys.argv[1])]
assert len(rs) == 2, rs
for r in rs:
    for f in ["outcome", "flushed", "detached", "waited_ms", "busy", "data_lost", "diskseq"]:
        assert f in r, (f, r)
    assert r["outcome"] == "released" and r["flushed"] and r["detached"], r
EOF
assert_no_device_for "$T/img"; assert_no_device_for "$T/i2"

dev=$(lfd attach --grant "$T/img") || fail "attach --grant"
[ "$(stat -c %u /dev/$dev)" = $NOBODY ] || fail "--grant: /dev/$dev not owned by uid $NOBODY"
lfd exec "$dev" -- sh -c 'head -c 512 "$LOOPFD_PATH" > /dev/null' || fail "--grant: path open failed"
holder=$(lfd list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["holder_pid"])')
as_nobody kill -TERM "$holder"
wait_until 15 sh -c "[ -z \"\$(losetup -j '$T/img')\" ]" || fail "SIGTERM did not detach"
[ "$(stat -c %u /dev/$dev)" = 0 ] || fail "--grant: /dev/$dev not given back"
note "busy detach names its opener (exit 123); --all with JSON receipts; SIGTERM detaches; --grant across steps"

# ---- 6. attach inside a run: the holder keeps none of the fds it inherits ----
# (the outer device on fd 3 would otherwise stay open and its release busy)
lfd run --release-timeout 2 "$T/i2" -- "$LOOPFD" attach "$T/img" > "$T/dev" 2> "$T/err" ||
	fail "attach inside a run: exit $?: $(cat "$T/err")"
dev=$(cat "$T/dev")
holder=$(lfd list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["holder_pid"])')
! ls -l /proc/$holder/fd | grep -E "$T/|loop-control" || fail "holder kept inherited or image fds"
assert_no_device_for "$T/i2"
lfd detach "$dev" || fail "detach after attach inside a run"
note "attach inside a run: the outer device released, the holder keeps only its own fds"

# ---- 7. sandboxes and the daemon; the --grant hint ------------------------------
# attach inside bubblewrap (no_new_privs, its own user, network and IPC
# namespaces) through a daemon's socket; exec inside a second, fully
# unshared sandbox with only the holder directory bound in; detach outside.
"$HELPER" --listen "$T/d.sock" 2> "$T/daemon.log" &
remember_pid $!
wait_until 5 test -S "$T/d.sock" || fail "daemon did not listen"
truncate -s 0 "$T/img"; truncate -s 16M "$T/img"
as_nobody bwrap --unshare-user --unshare-ipc --unshare-net --unshare-uts --ro-bind / / \
	--dev /dev --bind /tmp /tmp env -i "$LOOPFD" attach --socket "$T/d.sock" "$T/img" \
	> "$T/dev" 2> "$T/err" || fail "attach inside bwrap: $(cat "$T/err")"
dev=$(cat "$T/dev")
as_nobody bwrap --unshare-all --die-with-parent --ro-bind / / --dev /dev --bind "$T" "$T" \
	--bind /tmp/loopfd-$NOBODY /tmp/loopfd-$NOBODY \
	env -i "$LOOPFD" exec "$dev" -- sh -c 'ls /dev/loop-control 2>/dev/null && exit 20
		grep -q "^NoNewPrivs:[[:space:]]*1" /proc/self/status || exit 21
		cat "$1" >&3' sh "$T/data" 2> "$T/err" || fail "exec inside bwrap: exit $?: $(cat "$T/err")"
# A path tool without --grant: the hint, worded as a possibility.
rc=0; lfd exec "$dev" -- sh -c 'exec 4<> /dev/fd/3' 2> "$T/err" || rc=$?
[ $rc != 0 ] || fail "uid $NOBODY reopened a root-owned node through exec"
grep -q "if it could not open the device by path (Permission denied on /dev/fd/N or /dev/loopN), attaching with 'loopfd attach --grant' (exec takes no --grant)" "$T/err" ||
	fail "exec: no --grant hint (pointing to attach): $(cat "$T/err")"
lfd detach "$dev" || fail "detach of the device attached inside bwrap"
assert_no_device_for "$T/img"
cmp -n $((4 << 20)) "$T/data" "$T/img" || fail "data written inside bwrap is not in the image"
note "attach in bwrap via the daemon, exec in a fully unshared bwrap, detach outside; --grant hint on exec"

# ---- 8. XDG_RUNTIME_DIR when private, /tmp/loopfd-UID otherwise; --lock held --
mkdir -m 0700 "$T/xdg"; chown $NOBODY "$T/xdg"
xdg() { as_nobody env -i PATH=/usr/bin:/bin XDG_RUNTIME_DIR="$T/xdg" "$LOOPFD" "$@"; }
xdg attach --lock "$T/img" > "$T/dev" 2> "$T/err" || fail "attach with XDG_RUNTIME_DIR: $(cat "$T/err")"
dev=$(cat "$T/dev")
[ -S "$T/xdg/loopfd/$dev" ] || fail "no socket in \$XDG_RUNTIME_DIR/loopfd: $(ls -la "$T/xdg" "$T/xdg/loopfd" 2>&1)"
[ "$(stat -c %a "$T/xdg/loopfd")" = 700 ] || fail "\$XDG_RUNTIME_DIR/loopfd mode $(stat -c %a "$T/xdg/loopfd")"
if flock -n -x "/dev/$dev" true; then fail "attach --lock: /dev/$dev not locked while held"; fi
xdg detach "$dev" || fail "detach with XDG_RUNTIME_DIR"
assert_no_device_for "$T/img"
chmod 0755 "$T/xdg"	# open to others: not used
xdg attach "$T/img" > "$T/dev" 2> "$T/err" || fail "attach with an open XDG_RUNTIME_DIR: $(cat "$T/err")"
dev=$(cat "$T/dev")
[ -S "/tmp/loopfd-$NOBODY/$dev" ] || fail "an XDG_RUNTIME_DIR open to others was used"
lfd detach "$dev" || fail "detach from /tmp/loopfd-$NOBODY"
assert_no_device_for "$T/img"
note "sockets in a private \$XDG_RUNTIME_DIR/loopfd, else /tmp/loopfd-UID; --lock held while attached"
