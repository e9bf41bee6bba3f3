#!/usr/bin/env bash
# Partitioned images: loopfd reads the table itself (libblkid, no kernel
# partition parser: this kernel has none) and attaches each partition as an
# offset/sizelimit window of its own.  Every image is made by sfdisk or
# sgdisk (tests/partition_images.sh); the reader is held against
# `sfdisk --json`, every refusal is checked, and filesystems made through
# the partition devices by uid 65534 are checked afterwards, as root, on
# byte ranges of the image file.
. "$(dirname "$0")/../lib.sh"

cp "$(dirname "$0")/../partition_images.sh" "$T/pi.sh"
chmod 0644 "$T/pi.sh"
. "$T/pi.sh"

# nobody_img FUNCTION PATH [ARGS...]: an image made by uid 65534
nobody_img() {
	as_nobody bash -c '. "$1"; f=$2; shift 2; "$f" "$@"' sh "$T/pi.sh" "$@" \
		2> "$T/mkimg.err" || { cat "$T/mkimg.err"; fail "making image $2 ($1)"; }
}
runner4k=("$LOOPFD" run -b 4096 --grant)

# The fields loopfd and sfdisk share, from `... --json` on stdin.
shared_fields() {
	jq -S '.partitiontable | [.label, .id, .sectorsize,
		(.partitions[] | {start, size, type, uuid, name, bootable})]'
}

# same_as_sfdisk IMG [SECTOR]: loopfd partitions --json agrees with sfdisk
# (for 4096-byte sectors sfdisk reads a loop device with that sector size).
same_as_sfdisk() {
	local img=$1 ss=${2:-512}
	as_nobody "$LOOPFD" partitions --json "$img" > "$T/ours.json" ||
		fail "loopfd partitions $img failed"
	if [ "$ss" = 512 ]; then
		pt_sfdisk_json "$img" > "$T/theirs.json"
	else
		pt_sfdisk_json "$img" as_nobody "$LOOPFD" run -b "$ss" --grant \
			> "$T/theirs.json"
	fi
	diff <(shared_fields < "$T/ours.json") <(shared_fields < "$T/theirs.json") ||
		fail "$img: loopfd and sfdisk --json differ (above)"
	[ "$(jq '.partitiontable.partitions | length' "$T/ours.json")" -gt 0 ] ||
		fail "$img: no partitions compared"
	# bytes are sectors times the sector size
	jq -e --argjson ss "$ss" '.partitiontable | .sectorsize == $ss and
		all(.partitions[]; .start_bytes == .start * $ss and
		    .size_bytes == .size * $ss)' "$T/ours.json" >/dev/null ||
		fail "$img: byte fields or sector size ($ss) wrong"
}

# ---- the reader against sfdisk --json -------------------------------------

nobody_img img_gpt512 "$T/gpt512.img"
nobody_img img_gpt4k "$T/gpt4k.img" 128 "${runner4k[@]}"
nobody_img img_mbr_logical "$T/mbr.img"
nobody_img img_gpt128 "$T/gpt128.img"
nobody_img img_gpt_hybrid "$T/hybrid.img"
for i in gpt512 mbr gpt128 hybrid; do same_as_sfdisk "$T/$i.img"; done
jq -e '.partitiontable.label == "gpt"' "$T/ours.json" > /dev/null || fail "hybrid: not read as GPT"
same_as_sfdisk "$T/gpt4k.img" 4096	# the sector size detected, not given
[ "$(jq '.partitiontable.partitions | length' "$T/ours.json")" = 2 ] || fail "gpt4k: want 2 partitions"
# Damage both read alike: a protective MBR entry retyped 0x83 makes an MBR
# with disk id 0; a boot indicator of 0xb7 in an EBR is not "bootable".
cp "$T/gpt512.img" "$T/retyped.img"
_pt_put "$T/retyped.img" 450 '\x83'
cp "$T/mbr.img" "$T/bootbyte.img"
_pt_put "$T/bootbyte.img" $((43008 * 512 + 446)) '\xb7'
chown $NOBODY "$T/retyped.img" "$T/bootbyte.img"
same_as_sfdisk "$T/retyped.img"
same_as_sfdisk "$T/bootbyte.img"
as_nobody "$LOOPFD" partitions --json "$T/gpt128.img" > "$T/ours.json"
[ "$(jq '.partitiontable.partitions | length' "$T/ours.json")" = 128 ] || fail "gpt128: want 128 partitions"
# -b given: a 4Kn table read with 512-byte sectors is no table at all
as_nobody "$LOOPFD" partitions -b 512 "$T/gpt4k.img" > "$T/out" 2>&1 && fail "gpt4k read with -b 512"
grep -q "no partition table found (GPT or MBR, 512-byte sectors); a GPT header sits at byte 4096: 4096-byte sectors?" "$T/out" ||
	{ cat "$T/out"; fail "gpt4k -b 512: message"; }
# GPT signatures at both places a header can be: no guess
cp "$T/gpt512.img" "$T/both.img"
_pt_put "$T/both.img" 4096 'EFI PART'
as_nobody "$LOOPFD" partitions "$T/both.img" > "$T/out" 2>&1 && fail "both.img: a sector size was guessed"
grep -q "GPT headers at byte 512 and at byte 4096: give the sector size (-b 512 or -b 4096)" "$T/out" ||
	{ cat "$T/out"; fail "both.img: message"; }
as_nobody "$LOOPFD" partitions "$T/mbr.img" > "$T/out"
grep -Eq '^ +4 .* extended' "$T/out" || { cat "$T/out"; fail "mbr: partition 4 not shown as extended"; }
note "reader agrees with sfdisk --json: GPT 512 and 4Kn (detected), MBR with logicals, GPT with 128 entries, hybrid MBR"

# ---- refusals: loopfd partitions and loopfd run --partitions ---------------

# refused FUNCTION PATTERN: the image is refused by both commands with a
# message matching PATTERN, COMMAND does not run, nothing stays attached.
refused() {
	local img=$T/bad-$1.img
	nobody_img "img_$1" "$img"
	if as_nobody "$LOOPFD" partitions "$img" > "$T/out" 2>&1; then
		fail "$1: loopfd partitions accepted it: $(cat "$T/out")"
	fi
	grep -Eq "$2" "$T/out" || { cat "$T/out"; fail "$1: message does not match '$2'"; }
	rm -f "$T/ran"
	if as_nobody "$LOOPFD" run --partitions "$img" -- touch "$T/ran" > "$T/out" 2>&1; then
		fail "$1: loopfd run --partitions accepted it"
	fi
	grep -Eq "$2" "$T/out" || { cat "$T/out"; fail "$1: run: message does not match '$2'"; }
	[ ! -e "$T/ran" ] || fail "$1: COMMAND ran"
	assert_no_device_for "$img"
	note "refused $1: $(head -1 "$T/out")"
}
refused gpt_bad_primary 'primary GPT header \(LBA 1, byte 512\) is invalid; only the backup at byte 33553920'
refused gpt_past_end 'GPT lies past the end of the file.*backup header at LBA 65535.*49152 sectors'
refused gpt_out_of_range 'partition 3 \(LBA 34816\.\.65510\) lies outside the GPT.s usable LBAs 2048\.\.65502'
refused gpt_overlap 'partitions 1 \(sectors 2048\.\.18431\) and 2 \(sectors 10240\.\.34815\) overlap'
refused mbr_overlap 'partitions 1 \(sectors 2048\.\.18431\) and 2 \(sectors 10240\.\.26623\) overlap'
refused mbr_past_end 'partition 2 \(sectors 18432\.\.51199, bytes 9437184\.\.26214399\) ends past the end of the file \(20971520 bytes'
# sfdisk sees the bad primary too, and uses the backup: we refuse instead
sfdisk --json "$T/bad-gpt_bad_primary.img" 2>&1 >/dev/null | grep -q 'primary GPT table is corrupt' ||
	fail "sfdisk did not notice the bad primary header: the image is not what the test says"

# ---- random corruption of valid tables: an answer, never a crash or hang --

corrupt_round() {	# IMG SOURCE OFFSETS...
	local img=$1 src=$2 off rc
	shift 2
	cp "$src" "$img"
	for off in "$@"; do
		printf "\\x$(printf %02x $((RANDOM % 256)))" |
			dd of="$img" bs=1 seek="$off" conv=notrunc status=none
	done
	rc=0
	timeout 10 "$LOOPFD" partitions --json "$img" > "$T/c.out" 2> "$T/c.err" || rc=$?
	case $rc in
	0) jq -e '.partitiontable.partitions | type == "array"' "$T/c.out" >/dev/null ||
		fail "corruption: exit 0 without a table" ;;
	125) grep -q '^loopfd: ' "$T/c.err" || fail "corruption: exit 125 without a message" ;;
	124) fail "corruption: loopfd partitions hung (offsets $*)" ;;
	*) cp "$img" "$LOOPFD_T/crash.img" 2>/dev/null
	   fail "corruption: exit $rc (crash?), offsets $*: $(cat "$T/c.err")" ;;
	esac
	[ "$rc" = 0 ] && oks=$((oks + 1)) || errs=$((errs + 1))
}
RANDOM=13	# reproducible
oks=0 errs=0
gpt_end=$(stat -c %s "$T/gpt512.img")
for i in $(seq 150); do
	# header and entries (LBA 1-3), the backup header, the protective MBR
	corrupt_round "$T/c.img" "$T/gpt512.img" $((512 + RANDOM % 1536)) \
		$((gpt_end - 512 + RANDOM % 512)) $((446 + RANDOM % 66))
done
for i in $(seq 100); do
	# the MBR entries and the first EBR (sector 43008)
	corrupt_round "$T/c.img" "$T/mbr.img" $((446 + RANDOM % 66)) \
		$((43008 * 512 + 446 + RANDOM % 66))
done
[ "$errs" -gt 0 ] || fail "corruption: never refused: the rounds test nothing"
# an EBR chain that loops: read up to the loop, in bounded time
nobody_img img_mbr_ebr_loop "$T/loop.img"
timeout 10 "$LOOPFD" partitions --json "$T/loop.img" > "$T/c.out" 2> "$T/c.err" ||
	{ cat "$T/c.err"; fail "EBR loop: exit $?"; }
[ "$(jq -c '[.partitiontable.partitions[].number]' "$T/c.out")" = "[1,2,3,4,5]" ] ||
	fail "EBR loop: partitions $(jq -c '[.partitiontable.partitions[].number]' "$T/c.out")"
note "random corruption: 250 rounds, $oks read, $errs refused, no crash or hang"

# ---- selectors -------------------------------------------------------------

sel() {	# IMG SELECTOR...: run with those selectors, print LOOPFD_PARTITIONS
	local img=$1 a=()
	shift
	for s in "$@"; do a+=(--partition "$s"); done
	as_nobody "$LOOPFD" run "${a[@]}" "$img" -- sh -c 'echo "$LOOPFD_PARTITIONS"'
}
[ "$(sel "$T/gpt512.img" esp | cut -d: -f1,2,6)" = "1:/dev/fd/3:esp" ] || fail "select esp"
[ "$(sel "$T/gpt512.img" data | cut -d: -f1)" = 3 ] || fail "select by GPT name"
[ "$(sel "$T/gpt512.img" 0fc63daf-8483-4772-8e79-3d69d8477de4 | cut -d: -f1)" = 3 ] || fail "select by type GUID"
# "root" is any root-ARCH partition, not root-verity-ARCH
[ "$(sel "$T/gpt512.img" root | cut -d: -f6)" = root-x86-64 ] || fail "select root (any architecture)"
[ "$(sel "$T/gpt512.img" root-verity | cut -d: -f1)" = 4 ] || fail "select root-verity"
[ "$(sel "$T/gpt512.img" rootfs | cut -d: -f1)" = 2 ] || fail "select by GPT name rootfs"
sel "$T/gpt512.img" root-x86-64 2 > "$T/out" 2>&1 && fail "same partition twice accepted"
grep -q "partition 2 is selected twice" "$T/out" || { cat "$T/out"; fail "twice: message"; }
[ "$(sel "$T/mbr.img" 5 0x82 | tr ' ' '\n' | cut -d: -f1,2,6 | paste -sd' ')" = "5:/dev/fd/3:linux-generic 3:/dev/fd/4:swap" ] ||
	fail "MBR: select a logical by number and swap by MBR type"
for s in nosuch root-arm64 usr 7; do
	sel "$T/gpt512.img" "$s" > "$T/out" 2>&1 && fail "selector $s accepted"
	grep -q "no partition matches '$s'.*holds: 1 esp 'EFI System', 2 root-x86-64 'rootfs', 3 linux-generic 'data', 4 root-verity-x86-64" "$T/out" ||
		{ cat "$T/out"; fail "selector $s: message"; }
done
sel "$T/mbr.img" linux-generic > "$T/out" 2>&1 && fail "ambiguous selector accepted"
grep -q "'linux-generic' is ambiguous: 3 partitions match: 2 linux-generic, 5 linux-generic, 6 linux-generic" "$T/out" ||
	{ cat "$T/out"; fail "ambiguous selector: message"; }
sel "$T/mbr.img" 4 > "$T/out" 2>&1 && fail "extended partition attached"
grep -q "partition 4: an MBR extended partition" "$T/out" || { cat "$T/out"; fail "extended: message"; }
as_nobody "$LOOPFD" run --partitions -o 1MiB "$T/gpt512.img" -- true 2> "$T/out" && fail "--partitions with -o accepted"
grep -q "offset and size come from the partition table" "$T/out" || fail "--partitions -o: message"
note "selectors: number, GPT name, type GUID, DPS name and kind, MBR type; missing, ambiguous, extended refused"

# Partition options are image options: after a plain IMAGE they apply to the
# IMAGE they follow, whose partitions come after the plain one's device (fd 3
# the plain image, fd 4 partition 3 of gpt512.img, numbered from there).
# Two IMAGEs with them, and loopfd attach with them, are refused.
mkimage "$T/plain.img" 1
as_nobody "$LOOPFD" run "$T/plain.img" "$T/gpt512.img" --partition 3 -- sh -c '
	printf plain >&3
	echo "$LOOPFD_PARTITIONS" > "$1/plist"
	echo "$LOOPFD_PART_3 $LOOPFD_NAMES" > "$1/names"' sh "$T" 2> "$T/out" ||
	{ cat "$T/out"; fail "--partition after the second IMAGE: the run failed"; }
[ "$(cut -d: -f1,2 "$T/plist")" = "3:/dev/fd/4" ] || fail "per-image --partition: LOOPFD_PARTITIONS $(cat "$T/plist")"
read -r p3 names < "$T/names"
[ "$p3" = /dev/fd/4 ] && [ "$(echo $names | wc -w)" = 2 ] || fail "per-image --partition: $(cat "$T/names")"
[ "$(head -c 5 "$T/plain.img")" = plain ] || fail "per-image --partition: fd 3 is not the plain image"
as_nobody "$LOOPFD" run --partition 1 "$T/gpt512.img" "$T/plain.img" -- true 2> "$T/out" &&
	fail "--partition before two IMAGEs accepted"
grep -q "on one IMAGE only" "$T/out" || { cat "$T/out"; fail "two IMAGEs with --partition: message"; }
as_nobody "$LOOPFD" attach --partitions "$T/gpt512.img" > "$T/out" 2>&1 && fail "attach --partitions accepted"
grep -q "loopfd attach holds whole images" "$T/out" || { cat "$T/out"; fail "attach --partitions: message"; }
assert_no_device_for "$T/gpt512.img"
assert_no_device_for "$T/plain.img"
note "--partition is an image option: after a plain IMAGE; on two IMAGEs or with attach refused"

# ---- -P on a kernel without partition parsers ------------------------------

as_nobody "$LOOPFD" run -P "$T/gpt512.img" -- true 2> "$T/out" || { cat "$T/out"; fail "-P run failed"; }
if compgen -G '/sys/block/loop*/loop*p*' > /dev/null; then
	note "(this kernel has partition parsers: -P warning not expected)"
else
	grep -q "warning: -P: the kernel made no partition devices for /dev/loop[0-9]* .*gpt table with 4 partitions.*--partitions" "$T/out" ||
		{ cat "$T/out"; fail "-P: no warning pointing to --partitions"; }
	note "-P warns: $(cut -c1-100 "$T/out")..."
fi
mkimage "$T/blank.img" 8
as_nobody "$LOOPFD" run -P "$T/blank.img" -- true 2> "$T/out" || fail "-P on a blank image failed"
[ ! -s "$T/out" ] || { cat "$T/out"; fail "-P warned about an image without a table"; }

# ---- end to end: ESP and root filesystems through partition devices -------

# a file tree: nested directories, binary and empty files, odd names
tree=$T/tree
mkdir -p "$tree/EFI/BOOT" "$tree/etc/deep/er"
head -c 300000 /dev/urandom > "$tree/EFI/BOOT/BOOTX64.EFI"
echo "loopfd partitions" > "$tree/etc/deep/er/hello.txt"
: > "$tree/etc/empty"
head -c 70000 /dev/urandom > "$tree/etc/with space.bin"
chmod -R a+rX "$tree"

# extract IMG START SIZE OUT: a byte range of the image, as a file
extract() {
	dd if="$1" of="$4" iflag=skip_bytes,count_bytes skip="$2" count="$3" \
		bs=1M conv=sparse status=none
}

# e2e IMG: one loopfd run --partition esp --partition root as uid 65534;
# then fsck.fat, e2fsck and the trees, as root, on byte ranges of IMG.
e2e() {
	local img=$1 ss=$2
	as_nobody "$LOOPFD" run --grant --partition esp --partition root "$img" -- sh -c '
		set -e
		env | grep ^LOOPFD_ | sort > "$1/env"
		blockdev --getss "$LOOPFD_PART_ESP" "$LOOPFD_PART_ROOT" > "$1/ss"
		mkfs.vfat -n ESP "$LOOPFD_PART_ESP" >/dev/null
		MTOOLS_SKIP_CHECK=1 mcopy -s -i "$LOOPFD_PART_ESP" "$2/EFI" "$2/etc" ::/
		mkfs.ext4 -q -F -d "$2" -L root "$LOOPFD_PART_ROOT"' sh "$T" "$tree" \
		2> "$T/err" || { cat "$T/err"; fail "$img: the run failed"; }
	assert_no_device_for "$img"
	grep -qx "LOOPFD_PART_ESP=/dev/fd/3" "$T/env" || fail "$img: LOOPFD_PART_ESP"
	grep -qx "LOOPFD_PART_ROOT=/dev/fd/4" "$T/env" || fail "$img: LOOPFD_PART_ROOT"
	grep -qx "LOOPFD_PART_ROOT_X86_64=/dev/fd/4" "$T/env" || fail "$img: LOOPFD_PART_ROOT_X86_64"
	grep -qx "LOOPFD_PART_1=/dev/fd/3" "$T/env" || fail "$img: LOOPFD_PART_1"
	grep -qx "LOOPFD_PART_2_NAME=root" "$T/env" || fail "$img: LOOPFD_PART_2_NAME"
	grep -qx "LOOPFD_SECTOR_SIZE=$ss" "$T/env" || fail "$img: LOOPFD_SECTOR_SIZE"
	[ "$(paste -sd' ' "$T/ss")" = "$ss $ss" ] || fail "$img: partition devices' sector sizes $(cat "$T/ss"), want $ss"
	as_nobody "$LOOPFD" partitions --json "$img" > "$T/t.json" || fail "$img: table gone after the run"
	read -r s1 z1 s2 z2 < <(jq -r '.partitiontable.partitions |
		"\(.[0].start_bytes) \(.[0].size_bytes) \(.[1].start_bytes) \(.[1].size_bytes)"' "$T/t.json")
	grep -qx "LOOPFD_PART_2_START=$s2" "$T/env" || fail "$img: LOOPFD_PART_2_START"
	grep -qx "LOOPFD_PART_2_SIZE=$z2" "$T/env" || fail "$img: LOOPFD_PART_2_SIZE"
	extract "$img" "$s1" "$z1" "$T/esp.part"
	extract "$img" "$s2" "$z2" "$T/root.part"
	fsck.fat -n "$T/esp.part" > "$T/fsck" 2>&1 || { cat "$T/fsck"; fail "$img: fsck.fat on the ESP range"; }
	e2fsck -fn "$T/root.part" > "$T/fsck" 2>&1 || { cat "$T/fsck"; fail "$img: e2fsck on the root range"; }
	rm -rf "$T/esp.out" "$T/root.out"
	mkdir "$T/esp.out" "$T/root.out"
	MTOOLS_SKIP_CHECK=1 mcopy -s -n -i "$T/esp.part" ::/EFI ::/etc "$T/esp.out/"
	diff -r "$tree" "$T/esp.out" || fail "$img: the ESP's files differ from the tree"
	debugfs -R "rdump / $T/root.out" "$T/root.part" > /dev/null 2>&1
	rm -rf "$T/root.out/lost+found"
	diff -r "$tree" "$T/root.out" || fail "$img: the root filesystem's files differ from the tree"
	sfdisk --verify "$img" > /dev/null 2>&1 || [ "$ss" != 512 ] || fail "$img: the table was damaged"
	rm -f "$T/esp.part" "$T/root.part"
}

nobody_img img_gpt512_esp_root "$T/disk512.img" 512
e2e "$T/disk512.img" 512
note "512 MiB GPT, 512-byte sectors: vfat + mcopy into the ESP, ext4 -d into root, fsck and trees match"
nobody_img img_gpt4k "$T/disk4k.img" 512 "${runner4k[@]}"
e2e "$T/disk4k.img" 4096
note "512 MiB GPT, 4096-byte sectors: the same"

# MBR with logicals, every partition: fd 3 the disk, then 1 2 3 5 6 (the
# extended container 4 is listed, not attached); a marker written through
# each partition's fd lands at that partition's start in the image, and
# an ext4 made on logical partition 5 checks clean in its byte range.
as_nobody "$LOOPFD" run --grant --partitions "$T/mbr.img" -- sh -c '
	set -e
	echo "$LOOPFD_PARTITIONS" > "$1/list"
	head -c 512 <&3 | tail -c 2 | od -An -tx1 > "$1/sig"
	for p in $LOOPFD_PARTITIONS; do
		n=${p%%:*}; fd=${p#*:/dev/fd/}; fd=${fd%%:*}
		eval "printf \"part%s\" \"\$n\" >&$fd"
	done
	mkfs.ext4 -q -F -d "$2" "$LOOPFD_PART_5"' sh "$T" "$tree" 2> "$T/err" ||
	{ cat "$T/err"; fail "mbr --partitions run failed"; }
[ "$(tr ' ' '\n' < "$T/list" | cut -d: -f1,2 | tr '\n' ' ')" = "1:/dev/fd/4 2:/dev/fd/5 3:/dev/fd/6 5:/dev/fd/7 6:/dev/fd/8 " ] ||
	fail "mbr --partitions: fds $(cat "$T/list")"
[ "$(tr -d ' \n' < "$T/sig")" = 55aa ] || fail "mbr --partitions: fd 3 is not the whole disk"
as_nobody "$LOOPFD" partitions --json "$T/mbr.img" > "$T/t.json"
for n in 1 2 3 6; do
	start=$(jq ".partitiontable.partitions[] | select(.number == $n) | .start_bytes" "$T/t.json")
	[ "$(dd if="$T/mbr.img" bs=1 skip="$start" count=5 status=none)" = "part$n" ] ||
		fail "mbr: partition $n's marker is not at byte $start"
done
read -r s5 z5 < <(jq -r '.partitiontable.partitions[] | select(.number == 5) |
	"\(.start_bytes) \(.size_bytes)"' "$T/t.json")
extract "$T/mbr.img" "$s5" "$z5" "$T/p5.part"
e2fsck -fn "$T/p5.part" > "$T/fsck" 2>&1 || { cat "$T/fsck"; fail "mbr: e2fsck on logical partition 5"; }
rm -rf "$T/root.out" && mkdir "$T/root.out"
debugfs -R "rdump / $T/root.out" "$T/p5.part" > /dev/null 2>&1
rm -rf "$T/root.out/lost+found"
diff -r "$tree" "$T/root.out" || fail "mbr: partition 5's files differ from the tree"
sfdisk --verify "$T/mbr.img" > /dev/null || fail "mbr: table damaged by the partition writes"
assert_no_device_for "$T/mbr.img"
note "MBR with logicals: --partitions puts 1 2 3 5 6 on fds 4-8, each writes at its own start; ext4 on logical 5 checks clean"
