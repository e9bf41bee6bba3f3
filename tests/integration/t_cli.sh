#!/usr/bin/env bash
# The CLI as scripts use it: nested runs keep the outer devices; per-image
# options; losetup's size forms; exit statuses that never pass for
# COMMAND's; messages with numbers; the --grant hint; plain policy
# refusals; busy releases naming the opener; run -v --json.
. "$(dirname "$0")/../lib.sh"

mkimage "$T/a.img" 4
mkimage "$T/b.img" 4
truncate -s 512K "$T/small.img"; chown $NOBODY "$T/small.img"
mkdir -m 0777 "$T/out"
run() { as_nobody "$LOOPFD" run "$@"; }
sysfs() { echo "$(cat /sys/block/$1/loop/offset) $(cat /sys/block/$1/loop/sizelimit) $(cat /sys/block/$1/ro) $(cat /sys/block/$1/queue/logical_block_size)"; }
export -f sysfs

# ---- nested runs: the inner devices after the outer ones, variables appended
run "$T/a.img" -- sh -c '
	"$1" run "$2" -- sh -c "
		echo \"\$LOOPFD_DEVICES|\$LOOPFD_NAMES|\$LOOPFD_DEVICE|\$LOOPFD_NAME|\$LOOPFD_PATH\" > $3/nested
		readlink /proc/\$\$/fd/3 /proc/\$\$/fd/4 > $3/fds"' sh "$LOOPFD" "$T/b.img" "$T/out" 2> "$T/err" ||
	fail "nested run: $(cat "$T/err")"
IFS='|' read -r devs names first firstname firstpath < "$T/out/nested"
read -r na nb <<< "$names"
[ "$devs" = "/dev/fd/3 /dev/fd/4" ] || fail "nested LOOPFD_DEVICES: '$devs'"
[[ "$na" =~ ^loop[0-9]+$ && "$nb" =~ ^loop[0-9]+$ && "$na" != "$nb" ]] || fail "nested LOOPFD_NAMES: '$names'"
[ "$first|$firstname|$firstpath" = "/dev/fd/4|$nb|/dev/$nb" ] || fail "nested first device: $first $firstname $firstpath"
[ "$(tr '\n' ' ' < "$T/out/fds")" = "/dev/$na /dev/$nb " ] || fail "nested fds: $(cat "$T/out/fds")"
assert_no_device_for "$T/a.img"; assert_no_device_for "$T/b.img"
note "nested run: outer loop on fd 3, inner on fd 4, variables appended"

# ---- per-image options, and options before the images for all ----------------
run -b 1024 "$T/a.img" "$T/b.img" -r -o 1MiB --sizelimit 2M -- bash -c '
	for n in $LOOPFD_NAMES; do sysfs $n; done > "$1/per-image"' sh "$T/out" 2> "$T/err" ||
	fail "per-image run: $(cat "$T/err")"
[ "$(tr '\n' '|' < "$T/out/per-image")" = "0 0 0 1024|1048576 2097152 1 1024|" ] ||
	fail "per-image options: $(tr '\n' '|' < "$T/out/per-image")"
rc=0; run "$T/a.img" --socket /x -- true 2> "$T/err" || rc=$?
[ $rc = 125 ] && grep -q "option '--socket' applies to the whole command: put it before the first IMAGE" "$T/err" ||
	fail "whole-command option after an IMAGE: exit $rc: $(cat "$T/err")"
note "options after an IMAGE apply to it alone, options before to all"

# ---- losetup's size forms ------------------------------------------------------
for form in 1048576 0x100000 1M 1MiB 1m 1024K 2048s:bad 1MB:bad 1Q:bad; do
	rc=0
	run -o "${form%:bad}" -b 4k "$T/a.img" -- bash -c 'sysfs $LOOPFD_NAME > "$1/size"' sh "$T/out" \
		2> "$T/err" || rc=$?
	case $form in
	1MB:bad) [ $rc = 125 ] && grep -q "^loopfd: $T/a.img: offset 1000000 is not a multiple of the sector size 4096$" "$T/err" ||
		fail "-o 1MB: exit $rc: $(cat "$T/err")" ;;
	*:bad) [ $rc = 125 ] && grep -q "invalid value '${form%:bad}' (expected bytes" "$T/err" ||
		fail "-o ${form%:bad}: exit $rc: $(cat "$T/err")" ;;
	*) [ $rc = 0 ] && [ "$(cat "$T/out/size")" = "1048576 0 0 4096" ] ||
		fail "-o $form -b 4k: exit $rc, $(cat "$T/out/size" 2>/dev/null): $(cat "$T/err")" ;;
	esac
done
note "sizes: 1048576 0x100000 1M 1MiB 1m 1024K equal; 1MB is 10^6; -b 4k"

# ---- messages with numbers ---------------------------------------------------
rc=0; run -o 1M "$T/small.img" -- true 2> "$T/err" || rc=$?
[ $rc = 125 ] && grep -qx "loopfd: offset 1048576 is beyond the end of $T/small.img (524288 bytes)" "$T/err" ||
	fail "offset past the end: exit $rc: $(cat "$T/err")"
rc=0; run -o 1000 "$T/small.img" -- true 2> "$T/err" || rc=$?
[ $rc = 125 ] && grep -qx "loopfd: $T/small.img: offset 1000 is not a multiple of the sector size 512" "$T/err" ||
	fail "unaligned offset: exit $rc: $(cat "$T/err")"
rc=0; run -o 256K --sizelimit 512K "$T/small.img" -- true 2> "$T/err" || rc=$?
[ $rc = 125 ] && grep -qx "loopfd: offset 262144 + sizelimit 524288 is beyond the end of $T/small.img (524288 bytes)" "$T/err" ||
	fail "sizelimit past the end: exit $rc: $(cat "$T/err")"
note "offset/sizelimit refusals name the numbers"

# ---- exit statuses ---------------------------------------------------------------
for c in 0 1 2 7; do
	rc=0; run "$T/a.img" -- sh -c "exit $c" || rc=$?
	[ $rc = $c ] || fail "COMMAND exit $c: loopfd exit $rc"
done
rc=0; run "$T/missing.img" -- true 2> "$T/err" || rc=$?
[ $rc = 125 ] || fail "missing image: exit $rc, want 125"
rc=0; run "$T/a.img" 2> "$T/err" || rc=$?
[ $rc = 125 ] || fail "usage error: exit $rc, want 125"
# Busy: 123, naming the process that keeps the device open.
rc=0; run --release-timeout 0.3 "$T/a.img" -- sh -c '
	sleep 30 </dev/null >/dev/null 2>&1 & echo $! > "$1/sleeper"' sh "$T/out" 2> "$T/err" || rc=$?
remember_pid "$(cat "$T/out/sleeper")"
[ $rc = 123 ] || fail "busy release: exit $rc, want 123: $(cat "$T/err")"
grep -Eq "^loopfd: release of /dev/loop[0-9]+ \(image $T/a.img\) failed: busy: .* still open elsewhere" "$T/err" ||
	fail "busy release message: $(cat "$T/err")"
grep -Eq "^loopfd: /dev/loop[0-9]+ is still open in: $(cat "$T/out/sleeper") \(sleep\)$" "$T/err" ||
	fail "busy release does not name the sleeper: $(cat "$T/err")"
kill "$(cat "$T/out/sleeper")"
wait_until 15 sh -c "[ -z \"\$(losetup -j '$T/a.img')\" ]" || fail "busy device did not detach"
# Data lost on a full filesystem: 124, naming the filesystem as full.
mkdir "$T/full"
mount -t tmpfs -o size=8m,mode=0755 loopfd-test "$T/full"
remember_mount "$T/full"
truncate -s 32M "$T/full/img"; chown $NOBODY "$T/full/img"
rc=0; run "$T/full/img" -- sh -c 'head -c $((16 << 20)) /dev/zero | tr "\0" x >&3' 2> "$T/err" || rc=$?
[ $rc = 124 ] || fail "data lost: exit $rc, want 124: $(cat "$T/err")"
grep -q "^loopfd: the filesystem holding $T/full/img (tmpfs on $T/full) is full (0 of 8388608 bytes free)" "$T/err" ||
	fail "data lost: no full-filesystem message: $(cat "$T/err")"
assert_no_device_for "$T/full/img"
note "exit: COMMAND's 0 1 2 7; 125 setup and usage; 123 busy (opener named); 124 data lost (filesystem named full)"

# ---- --grant hint, LOOPFD_PATH, policy refusal in plain words ----------------------
rc=0; run "$T/a.img" -- sh -c 'exec 4<> /dev/fd/3' 2> "$T/err" || rc=$?
[ $rc != 0 ] || fail "uid $NOBODY reopened a root-owned device node"
grep -q "if it could not open the device by path (Permission denied on /dev/fd/N or /dev/loopN), --grant makes the node yours" "$T/err" ||
	fail "no --grant hint: $(cat "$T/err")"
run --grant "$T/a.img" -- sh -c 'exec 4<> "$LOOPFD_PATH" && [ "$LOOPFD_PATH" = /dev/$LOOPFD_NAME ]' 2> "$T/err" ||
	fail "--grant with LOOPFD_PATH: $(cat "$T/err")"
rc=0; run "$T/a.img" -- sh -c 'exit 3' 2> "$T/err" || rc=$?
[ $rc = 3 ] && ! grep -q -- "--grant" "$T/err" || fail "hint without a device path in COMMAND: $(cat "$T/err")"
write_config "allow-grant no"
rc=0; run "$T/a.img" -- sh -c 'exec 4<> /dev/fd/3' 2> "$T/err" || rc=$?
! grep -q -- "--grant" "$T/err" || fail "--grant hinted although the policy forbids it: $(cat "$T/err")"
write_config "allow-users root"
rc=0; run "$T/a.img" -- true 2> "$T/err" || rc=$?
[ $rc = 125 ] || fail "refused user: exit $rc"
grep -qx "loopfd: uid $NOBODY is not allowed to use loopfd by $LOOPFD_CONF" "$T/err" ||
	fail "policy refusal not in plain words: $(cat "$T/err")"
! grep -q "helper refused\|hello:" "$T/err" || fail "policy refusal: $(cat "$T/err")"
remove_config
note "--grant hinted only when it may help and is allowed; LOOPFD_PATH; refusal in plain words"

# ---- run -v --json: attach and release as JSON lines -------------------------------
run -v --json "$T/a.img" -- true 2> "$T/json" || fail "run -v --json: $(cat "$T/json")"
python3 - "$T/json" "$T/a.img" <<'EOF' || fail "run -v --json: $(cat "$T/json")"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
assert [l["event"] for l in lines] == ["attach", "release"], lines
a, r = lines
assert a["image"] == sys.argv[2] and a["device"] == "/dev/" + a["name"], a
for f in ["outcome", "ok", "flushed", "detached", "busy", "data_lost", "waited_ms", "diskseq", "error"]:
    assert f in r, (f, r)
assert r["outcome"] == "released" and r["flushed"] is True and r["detached"] is True, r
assert r["diskseq"] == a["diskseq"] and r["error"] is None, (a, r)
EOF
[ "$(grep -vc '^{' "$T/json")" = 0 ] || fail "run -v --json printed non-JSON lines: $(cat "$T/json")"
note "run -v --json: attach and release receipt as JSON lines"
