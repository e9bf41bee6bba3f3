#!/usr/bin/env bash
# losetup-style options reach the kernel as asked: offset, sizelimit, sector
# size, direct I/O, partition scanning, and --lock (systemd's block-device
# locking: LOCK_EX on the device, held while COMMAND keeps fd 3).
. "$(dirname "$0")/../lib.sh"

mkimage "$T/img" 8
head -c $((1 << 20)) /dev/urandom > "$T/data"
chmod 0644 "$T/data"

# Offset and sizelimit: a 2 MiB window 1 MiB into the image.
as_nobody "$LOOPFD" run -o 1MiB --sizelimit 2MiB "$T/img" -- sh -c '
	s=/sys/block/$LOOPFD_NAME
	echo "$(cat $s/size) $(cat $s/loop/offset) $(cat $s/loop/sizelimit)" > "$1/geom"
	cat "$2" >&3' sh "$T" "$T/data" || fail "offset/sizelimit run failed"
[ "$(cat "$T/geom")" = "4096 1048576 2097152" ] || fail "geometry: $(cat "$T/geom"), want 4096 sectors at 1 MiB"
cmp -n $((1 << 20)) "$T/data" "$T/img" 0 $((1 << 20)) || fail "data not written 1 MiB into the image"

# Sector size, direct I/O, partition scanning.
as_nobody "$LOOPFD" run -b 4096 --direct-io -P "$T/img" -- sh -c '
	s=/sys/block/$LOOPFD_NAME
	echo "$(cat $s/queue/logical_block_size) $(cat $s/loop/dio) $(cat $s/loop/partscan)" > "$1/flags"' \
	sh "$T" || fail "-b/--direct-io/-P run failed"
[ "$(cat "$T/flags")" = "4096 1 1" ] || fail "sector size, dio, partscan: $(cat "$T/flags"), want 4096 1 1"

# --lock: another open file description cannot take the lock meanwhile.
rm -f "$T/held" "$T/go"
as_nobody "$LOOPFD" run --lock "$T/img" -- sh -c '
	echo $LOOPFD_NAME > "$1/held"
	while [ ! -e "$1/go" ] && [ -d "$1" ]; do sleep 0.05; done' sh "$T" &
session=$!
remember_pid $session
wait_until 10 test -s "$T/held" || fail "--lock session did not start"
dev=/dev/$(cat "$T/held")
if flock -n -x "$dev" true; then fail "$dev not locked under --lock"; fi
touch "$T/go"
wait $session || fail "--lock session failed"
# Without --lock, nothing holds it (the test can fail).
rm -f "$T/held" "$T/go"
as_nobody "$LOOPFD" run "$T/img" -- sh -c '
	echo $LOOPFD_NAME > "$1/held"
	while [ ! -e "$1/go" ] && [ -d "$1" ]; do sleep 0.05; done' sh "$T" &
session=$!
remember_pid $session
wait_until 10 test -s "$T/held" || fail "session did not start"
flock -n -x "/dev/$(cat "$T/held")" true || fail "device locked without --lock"
touch "$T/go"
wait $session || fail "session without --lock failed"

# Options the policy forbids are refused by name.
write_config "allow-direct-io no
allow-partscan no"
for opt in --direct-io -P; do
	if as_nobody "$LOOPFD" run $opt "$T/img" -- true 2> "$T/err"; then
		fail "$opt allowed although the policy forbids it"
	fi
	grep -q "not allowed by $LOOPFD_CONF" "$T/err" || fail "$opt refusal: $(cat "$T/err")"
done
assert_no_device_for "$T/img"
rm -f "$LOOPFD_CONF"

# COMMAND that cannot be started: the shell's exit statuses (127 not found,
# 126 not executable), a message naming it, and the device released anyway.
# The fds COMMAND gets: the devices on 3.., nothing else of ours.
printf '#!/bin/sh\nexit 0\n' > "$T/noexec"; chmod 0644 "$T/noexec"
for c in "$T/missing:127" "$T/noexec:126"; do
	rc=0; as_nobody "$LOOPFD" run "$T/img" -- "${c%:*}" 2> "$T/err" || rc=$?
	[ "$rc" = "${c##*:}" ] || fail "${c%:*}: exit $rc, expected ${c##*:}: $(cat "$T/err")"
	grep -q "${c%:*}" "$T/err" || fail "${c%:*}: message does not name it: $(cat "$T/err")"
	assert_no_device_for "$T/img"
done
# A file without #! runs with /bin/sh, as execvp(3) would run it: named by
# path; found in PATH, past an earlier same-named file whose interpreter is
# missing (exec: ENOENT) and one that is not executable (EACCES), as
# execvp skips both; and found through an empty PATH entry (the current
# directory).  The script writes where uid 65534 may.
mkdir -m 0777 "$T/out"
mkdir -m 0755 "$T/p1" "$T/p2" "$T/p3"
printf '#!/nonexistent/interpreter\necho wrong > %s/out/script\n' "$T" > "$T/p1/nosheb"
printf 'echo wrong > %s/out/script\n' "$T" > "$T/p2/nosheb"
printf 'echo "$# $*" > %s/out/script\nexit 7\n' "$T" > "$T/p3/nosheb"
chmod 0755 "$T/p1/nosheb" "$T/p3/nosheb"; chmod 0644 "$T/p2/nosheb"
for how in path PATH cwd; do
	rm -f "$T/out/script"; rc=0
	case $how in
	path) as_nobody "$LOOPFD" run "$T/img" -- "$T/p3/nosheb" a b 2> "$T/err" || rc=$? ;;
	PATH) as_nobody env PATH="/nonexistent:$T/p1:$T/p2:$T/p3:/usr/bin:/bin" \
		"$LOOPFD" run "$T/img" -- nosheb a b 2> "$T/err" || rc=$? ;;
	cwd) (cd "$T/p3" && as_nobody env PATH=":/usr/bin:/bin" \
		"$LOOPFD" run "$T/img" -- nosheb a b) 2> "$T/err" || rc=$? ;;
	esac
	[ "$rc" = 7 ] && [ "$(cat "$T/out/script" 2>/dev/null)" = "2 a b" ] ||
		fail "script without #! ($how): exit $rc, ran with '$(cat "$T/out/script" 2>/dev/null)': $(cat "$T/err")"
	assert_no_device_for "$T/img"
done
# Our own failure to prepare COMMAND's fds is loopfd's error (exit 125, said
# so), not COMMAND's 126; the device is released either way.  Soft fd limits
# around what a run needs: somewhere in 4..12 the copies of the device fds
# no longer fit.
prepare_seen=
for n in 4 5 6 7 8 9 10 11 12; do
	rc=0
	as_nobody bash -c "ulimit -Sn $n; exec \"\$@\"" sh "$LOOPFD" run "$T/img" -- true \
		2> "$T/err" || rc=$?
	case $rc in
	0) ;;
	125) grep -q "Too many open files" "$T/err" ||
		fail "soft fd limit $n: exit 125 for another reason: $(cat "$T/err")"
	   grep -q "^loopfd: cannot prepare to start true: Too many open files" "$T/err" &&
		prepare_seen=$n ;;
	*) fail "soft fd limit $n: exit $rc: $(cat "$T/err")" ;;
	esac
	assert_no_device_for "$T/img"
done
[ -n "$prepare_seen" ] || fail "no fd limit in 4..12 failed while preparing COMMAND's fds"
mkimage "$T/i2.img" 1
as_nobody "$LOOPFD" run "$T/img" "$T/i2.img" -- sh -c '
	echo "$LOOPFD_NAMES" > "$1/names"
	for f in /proc/$$/fd/*; do echo "${f##*/} $(readlink "$f")"; done > "$1/fds"' sh "$T" \
	2> "$T/err" || fail "fd listing run failed: $(cat "$T/err")"
read -r name1 name2 < "$T/names"
# Exactly the two devices, in image order, on 3 and 4; no other loop fd
# (the CLI's own copies) and nothing else of loopfd's.  Fds the test
# harness itself passes down may be there too.
[ "$(grep ' /dev/loop[0-9]*$' "$T/fds" | tr '\n' ' ')" = "3 /dev/$name1 4 /dev/$name2 " ] ||
	fail "devices not exactly on fds 3 and 4 in order ($name1 $name2): $(cat "$T/fds")"
! grep -E "socket:|$T/(img|i2.img)|/dev/loop-control" "$T/fds" ||
	fail "COMMAND inherited loopfd's own fds: $(cat "$T/fds")"

# allow-block-devices admits block devices, never a loop device or a
# partition of one (major 259, not the loop major: the kernel's own loop-cycle
# check misses it).  The partition is made with BLKPG on a device of ours,
# and removed before the device is detached, failure or not: a BLKPG
# partition outlives the detach of a device without partscan, and the next
# binder of that index (anyone's) would find it.
write_config "allow-block-devices yes"
mkimage "$T/parted.img" 8
own=$(losetup -f --show "$T/parted.img")
trap 'rc=$?; set +e; delpart "$own" 1 2>/dev/null; (exit $rc); _cleanup' EXIT
addpart "$own" 1 2048 4096 || fail "addpart on $own"
wait_until 5 test -b "${own}p1" || fail "no ${own}p1 after addpart"
if "$LOOPFD" run "${own}p1" -- true 2> "$T/perr"; then
	fail "a partition of a loop device was attached as a backing file"
fi
refused="backing fd is a partition of a loop device, or a device mapped onto one"
grep -q "^loopfd: ${own}p1: $refused$" "$T/perr" ||
	fail "the loop partition's refusal: $(cat "$T/perr")"
if "$LOOPFD" run "$own" -- true 2> "$T/perr"; then
	fail "a loop device was attached as a backing file"
fi
grep -q "backing fd is a loop device$" "$T/perr" || fail "the loop device's refusal: $(cat "$T/perr")"
# Not tested here: the same partition after its device's unbind (it outlives
# it; the helper refuses it by the same ioctl, which answers ENXIO).  If that
# check ever broke, LOOP_CTL_GET_FREE could hand the test the partition's own
# device, bound to its own partition: its first flush deadlocks in the kernel
# (a mutation run did that, KERNEL-FACTS.md).
delpart "$own" 1 || fail "delpart on $own"
trap _cleanup EXIT
losetup -d "$own"
remove_config
note "offset/sizelimit, sector size, dio, partscan, --lock, policy refusals, COMMAND exit statuses and fds as asked; a loop device or its partition is never a backing file"
