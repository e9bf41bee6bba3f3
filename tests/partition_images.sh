# tests/partition_images.sh: partitioned test images, made by sfdisk and sgdisk.
# Sourced by the C client's and the Python client's tests, which both hold
# their readers against `sfdisk --json` on the same images.
#
# Every img_* function writes a new sparse image at the path it is given
# (an existing file there is replaced).  The 4096-byte-sector images need a
# loop device with that sector size, because sfdisk and sgdisk take the
# sector size from the device (2.38 has no option for it): img_gpt4k takes
# the command that runs sfdisk for it, e.g. loopfd run -b 4096 --grant.
#
#   img_gpt512 PATH [MIB]        GPT, 512-byte sectors: 1 esp (name "EFI System"),
#                                2 root-x86-64 (name "rootfs"), 3 linux-generic
#                                (name "data"), 4 root-verity-x86-64 (no name)
#   img_gpt512_esp_root PATH MIB GPT: 1 esp (64 MiB, name "EFI System"),
#                                2 root-x86-64 (name "root") to the end
#   img_gpt4k PATH MIB RUNNER... the same esp + root on 4096-byte sectors;
#                                RUNNER... gets the image and then
#                                "-- sfdisk -q /dev/fd/3" appended
#   img_mbr_logical PATH         MBR: 1 esp (0xef, bootable), 2 linux,
#                                3 swap, 4 extended, logicals 5 and 6 (linux)
#   img_gpt128 PATH              GPT with all 128 entries in use (sgdisk)
#   img_gpt_hybrid PATH          img_gpt512 with a hybrid MBR (sgdisk -h): MBR
#                                entry 1 is GPT partition 1, entry 2 the 0xee
#   img_gpt_bad_primary PATH     img_gpt512 with its primary header zeroed
#                                (the backup at the last LBA is intact)
#   img_gpt_past_end PATH        img_gpt512 cut to 24 MiB: the table (and
#                                partition 3) lies past the end of the file
#   img_mbr_past_end PATH        MBR whose partition 2 ends past the file end
#   img_mbr_overlap PATH         MBR whose partitions 1 and 2 overlap
#   img_mbr_ebr_loop PATH        img_mbr_logical whose first EBR links to itself
#   img_gpt_overlap PATH         GPT (CRCs valid) whose partitions 1 and 2 overlap
#   img_gpt_out_of_range PATH    GPT (CRCs valid) whose partition 2 ends past
#                                the header's last usable LBA
#   gpt_fix_crcs PATH [SECTOR]   recompute a primary GPT's entry and header CRCs
#   pt_sfdisk_json PATH [RUNNER...]  sfdisk --json of the image; with RUNNER
#                                (e.g. loopfd run -b 4096 --grant: a read-only attachment cannot be granted) sfdisk
#                                reads the device RUNNER puts on fd 3 instead

_PT_ESP=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
_PT_ROOT_X86_64=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709
_PT_LINUX=0FC63DAF-8483-4772-8E79-3D69D8477DE4
_PT_ROOT_VERITY_X86_64=2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5

_pt_new() { rm -f "$1" && truncate -s "$2M" "$1"; }

img_gpt512() {
	_pt_new "$1" "${2:-32}"
	printf '%s\n' 'label: gpt' \
		"start=2048, size=8MiB, type=$_PT_ESP, name=\"EFI System\"" \
		"size=8MiB, type=$_PT_ROOT_X86_64, name=rootfs" \
		"size=4MiB, type=$_PT_LINUX, name=data" \
		"size=1MiB, type=$_PT_ROOT_VERITY_X86_64" | sfdisk -q "$1"
}

img_gpt512_esp_root() {
	_pt_new "$1" "$2"
	printf '%s\n' 'label: gpt' \
		"start=2048, size=64MiB, type=$_PT_ESP, name=\"EFI System\"" \
		"type=$_PT_ROOT_X86_64, name=root" | sfdisk -q "$1"
}

img_gpt4k() {
	local img=$1 mib=$2
	shift 2
	_pt_new "$img" "$mib"
	printf '%s\n' 'label: gpt' \
		"start=256, size=64MiB, type=$_PT_ESP, name=\"EFI System\"" \
		"type=$_PT_ROOT_X86_64, name=root" | "$@" "$img" -- sfdisk -q /dev/fd/3
}

img_mbr_logical() {
	_pt_new "$1" 64
	printf '%s\n' 'label: dos' \
		'start=2048, size=8MiB, type=ef, bootable' \
		'size=8MiB, type=83' 'size=4MiB, type=82' 'size=40MiB, type=5' \
		'size=8MiB, type=83' 'size=8MiB, type=83' | sfdisk -q "$1"
}

img_gpt128() {
	local i args=()
	_pt_new "$1" 16
	for i in $(seq 1 128); do
		args+=(-n "$i:0:+64K" -c "$i:p$i")
	done
	sgdisk -a 8 -o "${args[@]}" "$1" >/dev/null
}

img_gpt_hybrid() {
	img_gpt512 "$1"
	sgdisk -h 1:EE "$1" > /dev/null
}

img_gpt_bad_primary() {
	img_gpt512 "$1"
	dd if=/dev/zero of="$1" bs=512 seek=1 count=1 conv=notrunc status=none
}

img_gpt_past_end() {
	img_gpt512 "$1"
	truncate -s 24M "$1"
}

img_mbr_past_end() {
	_pt_new "$1" 32
	printf '%s\n' 'label: dos' 'start=2048, size=8MiB, type=83' \
		'size=16MiB, type=83' | sfdisk -q "$1"
	truncate -s 20M "$1"
}

# little-endian bytes of $1, $2 bytes long, as printf escapes
_pt_le() {
	local v=$1 n=$2 i out=
	for ((i = 0; i < n; i++)); do
		out+=$(printf '\\x%02x' $(((v >> (8 * i)) & 255)))
	done
	printf '%s' "$out"
}
_pt_put() { printf "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }
_pt_u() { od -An -t"u$4" -j "$2" -N "$3" "$1" | tr -d ' \n'; }	# FILE OFF LEN SIZE
# CRC-32 of bytes OFF..OFF+LEN of FILE: gzip's trailer holds it (the same
# CRC-32 as GPT's)
_pt_crc() { tail -c +$(($2 + 1)) "$1" | head -c "$3" | gzip -c | tail -c 8 | od -An -tu4 -N4 | tr -d ' \n'; }

gpt_fix_crcs() {
	local f=$1 ss=${2:-512} h elba n es hs
	h=$ss
	elba=$(_pt_u "$f" $((h + 72)) 8 8)
	n=$(_pt_u "$f" $((h + 80)) 4 4)
	es=$(_pt_u "$f" $((h + 84)) 4 4)
	hs=$(_pt_u "$f" $((h + 12)) 4 4)
	_pt_put "$f" $((h + 88)) "$(_pt_le "$(_pt_crc "$f" $((elba * ss)) $((n * es)))" 4)"
	_pt_put "$f" $((h + 16)) '\x00\x00\x00\x00'
	_pt_put "$f" $((h + 16)) "$(_pt_le "$(_pt_crc "$f" "$h" "$hs")" 4)"
}

# _pt_gpt_set PATH ENTRY FIELD_OFFSET VALUE: an 8-byte field of a primary
# GPT entry (32 first LBA, 40 last LBA), CRCs fixed after
_pt_gpt_set() {
	local elba
	elba=$(_pt_u "$1" $((512 + 72)) 8 8)
	_pt_put "$1" $((elba * 512 + ($2 - 1) * 128 + $3)) "$(_pt_le "$4" 8)"
	gpt_fix_crcs "$1" 512
}

img_gpt_overlap() {
	img_gpt512 "$1"
	_pt_gpt_set "$1" 2 32 10240	# partition 2 now starts inside 1 (2048..18431)
}

img_gpt_out_of_range() {
	local last
	img_gpt512 "$1"
	last=$(_pt_u "$1" $((512 + 48)) 8 8)
	_pt_gpt_set "$1" 3 40 $((last + 8))
}

# MBR entry N (1-4) at 446 + 16 * (N-1): type at +4, start at +8, size at +12
_pt_mbr_entry() {
	_pt_put "$1" $((446 + 16 * ($2 - 1) + 4)) "$(_pt_le "$3" 1)"
	_pt_put "$1" $((446 + 16 * ($2 - 1) + 8)) "$(_pt_le "$4" 4)"
	_pt_put "$1" $((446 + 16 * ($2 - 1) + 12)) "$(_pt_le "$5" 4)"
}

img_mbr_overlap() {
	_pt_new "$1" 32
	printf '%s\n' 'label: dos' 'start=2048, size=8MiB, type=83' \
		'size=8MiB, type=83' | sfdisk -q "$1"
	_pt_mbr_entry "$1" 2 $((0x83)) 10240 16384
}

img_mbr_ebr_loop() {
	img_mbr_logical "$1"
	# the first EBR (sector 43008): its link entry's start, relative to
	# the extended partition, 0: itself
	_pt_put "$1" $((43008 * 512 + 446 + 16 + 8)) '\x00\x00\x00\x00'
}

pt_sfdisk_json() {
	local img=$1
	shift
	if [ $# = 0 ]; then
		sfdisk --json "$img"
	else
		"$@" "$img" -- sfdisk --json /dev/fd/3 2>/dev/null
	fi
}
