/*
 * libloopfd: partition tables read by the client, each partition attached
 * as a device of its own (a window of offset and sizelimit on the image).
 *
 * The table is read with util-linux's libblkid prober, which handles GPT
 * and MBR with logical partitions and is fuzzed upstream; this file adds
 * what a loop window needs and libblkid does not refuse on its own
 * (measured with libblkid 2.38):
 *  - libblkid needs the sector size: probed with the wrong one a 4Kn GPT
 *    is simply not found, so it is given explicitly (detected if not);
 *  - a bad primary GPT is silently replaced by the backup header;
 *  - GPT entries outside the header's usable LBAs are silently dropped;
 *  - MBR partitions past the end of the file, overlapping partitions and
 *    a GPT that lies past the end of the file (cut-off image) are passed
 *    on, or give "no table" without a reason.
 * Each of these is refused here with the partition and the numbers: a
 * window over the wrong bytes formats somebody else's data.
 */
#include "loopfd.h"

#include <blkid/blkid.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define LOOPFD_PUBLIC __attribute__((visibility("default")))

#define GPT_SIG		"EFI PART"
#define GPT_HDR_SIZE	92
#define GPT_MAX_ENTRIES	65536u	/* the entry array we recount, at most */

/* The Discoverable Partitions Specification's types: kind, architecture
 * ("" for none), type GUID.  Root and /usr types from util-linux 2.38's
 * list (sfdisk --label gpt -T), named as systemd names them. */
struct dps_type {
	const char *kind;
	const char *arch;
	const char *guid;
};

static const struct dps_type dps_types[] = {
	{ "esp", "", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" },
	{ "xbootldr", "", "BC13C2FF-59E6-4262-A352-B275FD6F7172" },
	{ "swap", "", "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" },
	{ "home", "", "933AC7E1-2EB4-4F13-B844-0E14E2AEF915" },
	{ "srv", "", "3B8F8425-20E0-4F3B-907F-1A25A76F98E8" },
	{ "var", "", "4D21B016-B534-45C2-A9FB-5C16E091FD2D" },
	{ "tmp", "", "7EC6F557-3BC5-4ACA-B293-16EF5DF639D1" },
	{ "user-home", "", "773F91EF-66D4-49B5-BD83-D683BF40AD16" },
	{ "linux-generic", "", "0FC63DAF-8483-4772-8E79-3D69D8477DE4" },
	{ "root", "x86", "44479540-F297-41B2-9AF7-D131D5F0458A" },
	{ "root", "x86-64", "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" },
	{ "root", "alpha", "6523F8AE-3EB1-4E2A-A05A-18B695AE656F" },
	{ "root", "arc", "D27F46ED-2919-4CB8-BD25-9531F3C16534" },
	{ "root", "arm", "69DAD710-2CE4-4E3C-B16C-21A1D49ABED3" },
	{ "root", "arm64", "B921B045-1DF0-41C3-AF44-4C6F280D3FAE" },
	{ "root", "ia64", "993D8D3D-F80E-4225-855A-9DAF8ED7EA97" },
	{ "root", "loongarch64", "77055800-792C-4F94-B39A-98C91B762BB6" },
	{ "root", "mips-le", "37C58C8A-D913-4156-A25F-48B1B64E07F0" },
	{ "root", "mips64-le", "700BDA43-7A34-4507-B179-EEB93D7A7CA3" },
	{ "root", "ppc", "1DE3F1EF-FA98-47B5-8DCD-4A860A654D78" },
	{ "root", "ppc64", "912ADE1D-A839-4913-8964-A10EEE08FBD2" },
	{ "root", "ppc64-le", "C31C45E6-3F39-412E-80FB-4809C4980599" },
	{ "root", "riscv32", "60D5A7FE-8E7D-435C-B714-3DD8162144E1" },
	{ "root", "riscv64", "72EC70A6-CF74-40E6-BD49-4BDA08E8F224" },
	{ "root", "s390", "08A7ACEA-624C-4A20-91E8-6E0FA67D23F9" },
	{ "root", "s390x", "5EEAD9A9-FE09-4A1E-A1D7-520D00531306" },
	{ "root", "tilegx", "C50CDD70-3862-4CC3-90E1-809A8C93EE2C" },
	{ "usr", "x86", "75250D76-8CC6-458E-BD66-BD47CC81A812" },
	{ "usr", "x86-64", "8484680C-9521-48C6-9C11-B0720656F69E" },
	{ "usr", "alpha", "E18CF08C-33EC-4C0D-8246-C6C6FB3DA024" },
	{ "usr", "arc", "7978A683-6316-4922-BBEE-38BFF5A2FECC" },
	{ "usr", "arm", "7D0359A3-02B3-4F0A-865C-654403E70625" },
	{ "usr", "arm64", "B0E01050-EE5F-4390-949A-9101B17104E9" },
	{ "usr", "ia64", "4301D2A6-4E3B-4B2A-BB94-9E0B2C4225EA" },
	{ "usr", "loongarch64", "E611C702-575C-4CBE-9A46-434FA0BF7E3F" },
	{ "usr", "mips-le", "0F4868E9-9952-4706-979F-3ED3A473E947" },
	{ "usr", "mips64-le", "C97C1F32-BA06-40B4-9F22-236061B08AA8" },
	{ "usr", "ppc", "7D14FEC5-CC71-415D-9D6C-06BF0B3C3EAF" },
	{ "usr", "ppc64", "2C9739E2-F068-46B3-9FD0-01C5A9AFBCCA" },
	{ "usr", "ppc64-le", "15BB03AF-77E7-4D4A-B12B-C0D084F7491C" },
	{ "usr", "riscv32", "B933FB22-5C3F-4F91-AF90-E2BB0FA50702" },
	{ "usr", "riscv64", "BEAEC34B-8442-439B-A40B-984381ED097D" },
	{ "usr", "s390", "CD0F869B-D0FB-4CA0-B141-9EA87CC78D66" },
	{ "usr", "s390x", "8A4F5770-50AA-4ED3-874A-99B710DB6FEA" },
	{ "usr", "tilegx", "55497029-C7C1-44CC-AA39-815ED1558630" },
	{ "root-verity", "x86", "D13C5D3B-B5D1-422A-B29F-9454FDC89D76" },
	{ "root-verity", "x86-64", "2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5" },
	{ "root-verity", "alpha", "FC56D9E9-E6E5-4C06-BE32-E74407CE09A5" },
	{ "root-verity", "arc", "24B2D975-0F97-4521-AFA1-CD531E421B8D" },
	{ "root-verity", "arm", "7386CDF2-203C-47A9-A498-F2ECCE45A2D6" },
	{ "root-verity", "arm64", "DF3300CE-D69F-4C92-978C-9BFB0F38D820" },
	{ "root-verity", "ia64", "86ED10D5-B607-45BB-8957-D350F23D0571" },
	{ "root-verity", "loongarch64", "F3393B22-E9AF-4613-A948-9D3BFBD0C535" },
	{ "root-verity", "mips-le", "D7D150D2-2A04-4A33-8F12-16651205FF7B" },
	{ "root-verity", "mips64-le", "16B417F8-3E06-4F57-8DD2-9B5232F41AA6" },
	{ "root-verity", "ppc", "98CFE649-1588-46DC-B2F0-ADD147424925" },
	{ "root-verity", "ppc64", "9225A9A3-3C19-4D89-B4F6-EEFF88F17631" },
	{ "root-verity", "ppc64-le", "906BD944-4589-4AAE-A4E4-DD983917446A" },
	{ "root-verity", "riscv32", "AE0253BE-1167-4007-AC68-43926C14C5DE" },
	{ "root-verity", "riscv64", "B6ED5582-440B-4209-B8DA-5FF7C419EA3D" },
	{ "root-verity", "s390", "7AC63B47-B25C-463B-8DF8-B4A94E6C90E1" },
	{ "root-verity", "s390x", "B325BFBE-C7BE-4AB8-8357-139E652D2F6B" },
	{ "root-verity", "tilegx", "966061EC-28E4-4B2E-B4A5-1F0A825A1D84" },
	{ "usr-verity", "x86", "8F461B0D-14EE-4E81-9AA9-049B6FB97ABD" },
	{ "usr-verity", "x86-64", "77FF5F63-E7B6-4633-ACF4-1565B864C0E6" },
	{ "usr-verity", "alpha", "8CCE0D25-C0D0-4A44-BD87-46331BF1DF67" },
	{ "usr-verity", "arc", "FCA0598C-D880-4591-8C16-4EDA05C7347C" },
	{ "usr-verity", "arm", "C215D751-7BCD-4649-BE90-6627490A4C05" },
	{ "usr-verity", "arm64", "6E11A4E7-FBCA-4DED-B9E9-E1A512BB664E" },
	{ "usr-verity", "ia64", "6A491E03-3BE7-4545-8E38-83320E0EA880" },
	{ "usr-verity", "loongarch64", "F46B2C26-59AE-48F0-9106-C50ED47F673D" },
	{ "usr-verity", "mips-le", "46B98D8D-B55C-4E8F-AAB3-37FCA7F80752" },
	{ "usr-verity", "mips64-le", "3C3D61FE-B5F3-414D-BB71-8739A694A4EF" },
	{ "usr-verity", "ppc", "DF765D00-270E-49E5-BC75-F47BB2118B09" },
	{ "usr-verity", "ppc64", "BDB528A5-A259-475F-A87D-DA53FA736A07" },
	{ "usr-verity", "ppc64-le", "EE2B9983-21E8-4153-86D9-B6901A54D1CE" },
	{ "usr-verity", "riscv32", "CB1EE4E3-8CD0-4136-A0A4-AA61A32E8730" },
	{ "usr-verity", "riscv64", "8F1056BE-9B05-47C4-81D6-BE53128E5B54" },
	{ "usr-verity", "s390", "B663C618-E7BC-4D6D-90AA-11B756BB1797" },
	{ "usr-verity", "s390x", "31741CC4-1A2A-4111-A581-E00B447D2D06" },
	{ "usr-verity", "tilegx", "2FB4BF56-07FA-42DA-8132-6B139F2026AE" },
	{ "root-verity-sig", "x86", "5996FC05-109C-48DE-808B-23FA0830B676" },
	{ "root-verity-sig", "x86-64", "41092B05-9FC8-4523-994F-2DEF0408B176" },
	{ "root-verity-sig", "alpha", "D46495B7-A053-414F-80F7-700C99921EF8" },
	{ "root-verity-sig", "arc", "143A70BA-CBD3-4F06-919F-6C05683A78BC" },
	{ "root-verity-sig", "arm", "42B0455F-EB11-491D-98D3-56145BA9D037" },
	{ "root-verity-sig", "arm64", "6DB69DE6-29F4-4758-A7A5-962190F00CE3" },
	{ "root-verity-sig", "ia64", "E98B36EE-32BA-4882-9B12-0CE14655F46A" },
	{ "root-verity-sig", "loongarch64", "5AFB67EB-ECC8-4F85-AE8E-AC1E7C50E7D0" },
	{ "root-verity-sig", "mips-le", "C919CC1F-4456-4EFF-918C-F75E94525CA5" },
	{ "root-verity-sig", "mips64-le", "904E58EF-5C65-4A31-9C57-6AF5FC7C5DE7" },
	{ "root-verity-sig", "ppc", "1B31B5AA-ADD9-463A-B2ED-BD467FC857E7" },
	{ "root-verity-sig", "ppc64", "F5E2C20C-45B2-4FFA-BCE9-2A60737E1AAF" },
	{ "root-verity-sig", "ppc64-le", "D4A236E7-E873-4C07-BF1D-BF6CF7F1C3C6" },
	{ "root-verity-sig", "riscv32", "3A112A75-8729-4380-B4CF-764D79934448" },
	{ "root-verity-sig", "riscv64", "EFE0F087-EA8D-4469-821A-4C2A96A8386A" },
	{ "root-verity-sig", "s390", "3482388E-4254-435A-A241-766A065F9960" },
	{ "root-verity-sig", "s390x", "C80187A5-73A3-491A-901A-017C3FA953E9" },
	{ "root-verity-sig", "tilegx", "B3671439-97B0-4A53-90F7-2D5A8F3AD47B" },
	{ "usr-verity-sig", "x86", "974A71C0-DE41-43C3-BE5D-5C5CCD1AD2C0" },
	{ "usr-verity-sig", "x86-64", "E7BB33FB-06CF-4E81-8273-E543B413E2E2" },
	{ "usr-verity-sig", "alpha", "5C6E1C76-076A-457A-A0FE-F3B4CD21CE6E" },
	{ "usr-verity-sig", "arc", "94F9A9A1-9971-427A-A400-50CB297F0F35" },
	{ "usr-verity-sig", "arm", "D7FF812F-37D1-4902-A810-D76BA57B975A" },
	{ "usr-verity-sig", "arm64", "C23CE4FF-44BD-4B00-B2D4-B41B3419E02A" },
	{ "usr-verity-sig", "ia64", "8DE58BC2-2A43-460D-B14E-A76E4A17B47F" },
	{ "usr-verity-sig", "loongarch64", "B024F315-D330-444C-8461-44BBDE524E99" },
	{ "usr-verity-sig", "mips-le", "3E23CA0B-A4BC-4B4E-8087-5AB6A26AA8A9" },
	{ "usr-verity-sig", "mips64-le", "F2C2C7EE-ADCC-4351-B5C6-EE9816B66E16" },
	{ "usr-verity-sig", "ppc", "7007891D-D371-4A80-86A4-5CB875B9302E" },
	{ "usr-verity-sig", "ppc64", "0B888863-D7F8-4D9E-9766-239FCE4D58AF" },
	{ "usr-verity-sig", "ppc64-le", "C8BFBD1E-268E-4521-8BBA-BF314C399557" },
	{ "usr-verity-sig", "riscv32", "C3836A13-3137-45BA-B583-B16C50FE5EB4" },
	{ "usr-verity-sig", "riscv64", "D2F9000A-7A18-453F-B5CD-4D32F77A7B32" },
	{ "usr-verity-sig", "s390", "17440E4F-A8D0-467F-A46E-3912AE6EF2C5" },
	{ "usr-verity-sig", "s390x", "3F324816-667B-46AE-86EE-9B0C0C6C11B4" },
	{ "usr-verity-sig", "tilegx", "4EDE75E2-6CCC-4CC8-B9C7-70334B087510" },
};

/* MBR type bytes with a DPS meaning (the specification's MBR section). */
static const struct {
	unsigned type;
	const char *name;
} dps_mbr_types[] = {
	{ 0xef, "esp" }, { 0xea, "xbootldr" }, { 0x82, "swap" },
	{ 0x83, "linux-generic" },
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static int part_error(struct loopfd_error *err, int e, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Fill err, set errno, return -1: libloopfd's one way to fail. */
static int part_error(struct loopfd_error *err, int e, const char *fmt, ...)
{
	va_list ap;

	err->err = e;
	err->reason = 0;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	errno = e;
	return -1;
}

static void copy_upper(char *dst, size_t cap, const char *src)
{
	size_t i;

	for (i = 0; src && src[i] != '\0' && i + 1 < cap; i++)
		dst[i] = (char)toupper((unsigned char)src[i]);
	dst[i] = '\0';
}

static void type_name_of(struct loopfd_partition *p)
{
	size_t i;

	p->type_name[0] = '\0';
	if (p->mbr_type) {
		for (i = 0; i < NELEM(dps_mbr_types); i++)
			if (dps_mbr_types[i].type == p->mbr_type)
				snprintf(p->type_name, sizeof(p->type_name), "%s",
					 dps_mbr_types[i].name);
		return;
	}
	for (i = 0; i < NELEM(dps_types); i++)
		if (strcasecmp(dps_types[i].guid, p->type) == 0)
			snprintf(p->type_name, sizeof(p->type_name), "%s%s%s",
				 dps_types[i].kind, dps_types[i].arch[0] ? "-" : "",
				 dps_types[i].arch);
}

/* ---- reading --------------------------------------------------------------- */

static int read_at(int fd, void *buf, size_t len, uint64_t off)
{
	ssize_t n;

	if (off > (uint64_t)INT64_MAX)
		return -1;
	do {
		n = pread(fd, buf, len, (off_t)off);
	} while (n < 0 && errno == EINTR);
	return n == (ssize_t)len ? 0 : -1;
}

static int gpt_header_at(int fd, uint64_t off)
{
	char sig[8];

	return read_at(fd, sig, sizeof(sig), off) == 0 &&
	       memcmp(sig, GPT_SIG, sizeof(sig)) == 0;
}

/* A GPT header at LBA 1 of 512-byte sectors (byte 512) or of 4096-byte
 * ones (byte 4096): that decides the sector size; no GPT means 512 (MBR).
 * Both is a crafted or damaged image, not something to guess about. */
static int detect_sector_size(int fd, uint32_t *ss, struct loopfd_error *err)
{
	int at512 = gpt_header_at(fd, 512), at4k = gpt_header_at(fd, 4096);

	if (at512 && at4k)
		return part_error(err, EINVAL, "GPT headers at byte 512 and at "
				  "byte 4096: give the sector size (-b 512 or "
				  "-b 4096)");
	*ss = at4k ? 4096 : 512;
	return 0;
}

static uint64_t le64_at(const unsigned char *b)
{
	uint64_t v = 0;
	int i;

	for (i = 7; i >= 0; i--)
		v = (v << 8) | b[i];
	return v;
}

static uint32_t le32_at(const unsigned char *b)
{
	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
	       (uint32_t)b[3] << 24;
}

/* libblkid found no table where a GPT header is: say why, from the
 * header's own numbers (libblkid only says "nothing"). */
static int explain_missing_gpt(int fd, const struct loopfd_partition_table *t,
			       struct loopfd_error *err)
{
	unsigned char h[GPT_HDR_SIZE];
	uint64_t ss = t->sector_size ? t->sector_size : 512;
	uint64_t sectors = t->disk_bytes / ss, alt, last;

	if (read_at(fd, h, sizeof(h), ss) < 0)
		return part_error(err, EINVAL, "no partition table found");
	alt = le64_at(h + 32);
	last = le64_at(h + 48);
	if (alt >= sectors || last >= sectors)
		return part_error(err, EINVAL, "the GPT lies past the end of "
				  "the file: its header (byte %" PRIu64 ") puts "
				  "the backup header at LBA %" PRIu64 " and the "
				  "last usable LBA at %" PRIu64 ", but the file "
				  "has %" PRIu64 " sectors of %" PRIu64 " bytes "
				  "(%" PRIu64 " bytes)", ss, alt, last, sectors,
				  ss, t->disk_bytes);
	return part_error(err, EINVAL, "the GPT header at byte %" PRIu64
			  " (%u-byte sectors) is invalid (bad checksum or "
			  "fields) and no valid backup header was found at the "
			  "last LBA", ss, (unsigned)ss);
}

static blkid_probe new_probe(int fd, uint64_t ss, struct loopfd_error *err)
{
	blkid_probe pr = blkid_new_probe();

	if (!pr) {
		part_error(err, ENOMEM, "libblkid: cannot allocate a probe");
		return NULL;
	}
	if (blkid_probe_set_device(pr, fd, 0, 0) != 0 ||
	    blkid_probe_set_sectorsize(pr, (unsigned)ss) != 0 ||
	    blkid_probe_enable_superblocks(pr, 0) != 0 ||
	    blkid_probe_enable_partitions(pr, 1) != 0 ||
	    blkid_probe_set_partitions_flags(pr, BLKID_PARTS_ENTRY_DETAILS) != 0) {
		part_error(err, errno ? errno : EIO, "libblkid: cannot set up "
			   "a probe: %s", strerror(errno ? errno : EIO));
		blkid_free_probe(pr);
		return NULL;
	}
	return pr;
}

/* One libblkid partition into p, numbers converted from libblkid's
 * 512-byte units to the table's sectors. */
static int fill_partition(blkid_partition bp, const struct loopfd_partition_table *t,
			  struct loopfd_partition *p, struct loopfd_error *err)
{
	blkid_loff_t start = blkid_partition_get_start(bp);
	blkid_loff_t size = blkid_partition_get_size(bp);
	int partno = blkid_partition_get_partno(bp);
	uint64_t ss = t->sector_size;

	memset(p, 0, sizeof(*p));
	if (start < 0 || size < 0 || partno <= 0 ||
	    (uint64_t)start > UINT64_MAX / 512 || (uint64_t)size > UINT64_MAX / 512)
		return part_error(err, EINVAL, "libblkid returned a partition "
				  "with numbers out of range");
	p->number = (uint32_t)partno;
	p->start_bytes = (uint64_t)start * 512;
	p->size_bytes = (uint64_t)size * 512;
	p->start = p->start_bytes / ss;
	p->size = p->size_bytes / ss;
	copy_upper(p->uuid, sizeof(p->uuid), blkid_partition_get_uuid(bp));
	p->attrs = blkid_partition_get_flags(bp);
	if (strcmp(t->label, "gpt") == 0) {
		copy_upper(p->type, sizeof(p->type),
			   blkid_partition_get_type_string(bp));
		snprintf(p->name, sizeof(p->name), "%s",
			 blkid_partition_get_name(bp) ? blkid_partition_get_name(bp) : "");
	} else {
		p->mbr_type = (unsigned)blkid_partition_get_type(bp) & 0xff;
		snprintf(p->type, sizeof(p->type), "%x", p->mbr_type);
		/* the kernel's PARTUUID: disk id in lower case */
		snprintf(p->uuid, sizeof(p->uuid), "%s",
			 blkid_partition_get_uuid(bp) ? blkid_partition_get_uuid(bp) : "");
		p->extended = blkid_partition_is_extended(bp);
	}
	type_name_of(p);
	return 0;
}

static int fill_table_head(blkid_parttable pt, struct loopfd_partition_table *t,
			   struct loopfd_error *err)
{
	const char *type = blkid_parttable_get_type(pt);
	const char *id = blkid_parttable_get_id(pt);
	blkid_loff_t off = blkid_parttable_get_offset(pt);

	if (!type || (strcmp(type, "gpt") != 0 && strcmp(type, "dos") != 0))
		return part_error(err, ENOTSUP, "a partition table of type "
				  "'%s': only GPT and MBR (dos) are supported",
				  type ? type : "?");
	snprintf(t->label, sizeof(t->label), "%s", type);
	if (strcmp(type, "gpt") == 0)
		copy_upper(t->id, sizeof(t->id), id);
	else	/* as sfdisk: 0x and 8 digits; libblkid gives "" for 0 */
		snprintf(t->id, sizeof(t->id), "0x%08lx",
			 id ? strtoul(id, NULL, 16) & 0xffffffffUL : 0UL);
	t->table_offset = off < 0 ? 0 : (uint64_t)off;
	return 0;
}

static int fill_partitions(blkid_partlist ls, blkid_parttable root,
			   struct loopfd_partition_table *t,
			   struct loopfd_error *err)
{
	int n = blkid_partlist_numof_partitions(ls), i;
	blkid_partition bp;
	blkid_parttable pt;

	if (n < 0)
		n = 0;
	if ((size_t)n > LOOPFD_PART_MAX)
		return part_error(err, E2BIG, "the table holds %d partitions, "
				  "more than %d", n, LOOPFD_PART_MAX);
	t->parts = calloc((size_t)n + 1, sizeof(*t->parts));
	if (!t->parts)
		return part_error(err, ENOMEM, "out of memory");
	for (i = 0; i < n; i++) {
		bp = blkid_partlist_get_partition(ls, i);
		pt = bp ? blkid_partition_get_table(bp) : NULL;
		if (!bp)
			return part_error(err, EIO, "libblkid lost partition "
					  "%d of %d", i + 1, n);
		/* MBR logicals belong to the root table too; a BSD or other
		 * table nested in a partition has its own. */
		if (pt != root)
			return part_error(err, ENOTSUP, "partition %d holds a "
					  "nested %s table: not supported",
					  blkid_partition_get_partno(bp),
					  pt ? blkid_parttable_get_type(pt) : "?");
		if (fill_partition(bp, t, &t->parts[t->count], err) < 0)
			return -1;
		t->count++;
	}
	return 0;
}

/* ---- checks libblkid does not make ---------------------------------------- */

/* libblkid drops GPT entries outside the usable LBAs without a word: count
 * the used entries of the header it read (its CRCs already checked) and
 * name any it did not return. */
static int check_gpt_entries(int fd, const struct loopfd_partition_table *t,
			     struct loopfd_error *err)
{
	unsigned char h[GPT_HDR_SIZE], e[128];
	uint64_t ss = t->sector_size, elba, first, last, off, s, l;
	uint32_t n, esz, i;
	size_t k;

	if (read_at(fd, h, sizeof(h), t->table_offset) < 0)
		return part_error(err, EIO, "cannot read the GPT header at byte "
				  "%" PRIu64, t->table_offset);
	first = le64_at(h + 40);
	last = le64_at(h + 48);
	elba = le64_at(h + 72);
	n = le32_at(h + 80);
	esz = le32_at(h + 84);
	if (n > GPT_MAX_ENTRIES || esz < 128 || esz > 4096 ||
	    elba > UINT64_MAX / ss)
		return part_error(err, EINVAL, "the GPT header has %u entries "
				  "of %u bytes at LBA %" PRIu64 ": not supported",
				  n, esz, elba);
	for (i = 0; i < n; i++) {
		off = elba * ss + (uint64_t)i * esz;
		if (read_at(fd, e, sizeof(e), off) < 0)
			return part_error(err, EIO, "cannot read GPT entry %u "
					  "at byte %" PRIu64, i + 1, off);
		if (memcmp(e, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16) == 0)
			continue;
		for (k = 0; k < t->count && t->parts[k].number != i + 1; k++)
			;
		if (k < t->count)
			continue;
		s = le64_at(e + 32);
		l = le64_at(e + 40);
		return part_error(err, ERANGE, "partition %u (LBA %" PRIu64
				  "..%" PRIu64 ") lies outside the GPT's usable "
				  "LBAs %" PRIu64 "..%" PRIu64 " (or ends before "
				  "it starts)", i + 1, s, l, first, last);
	}
	return 0;
}

static int check_bounds(const struct loopfd_partition_table *t,
			const struct loopfd_partition *p,
			struct loopfd_error *err)
{
	if (p->size == 0)
		return part_error(err, ERANGE, "partition %u is empty (start "
				  "sector %" PRIu64 ", 0 sectors)", p->number,
				  p->start);
	if (p->start == 0)
		return part_error(err, ERANGE, "partition %u starts at sector "
				  "0, over the partition table", p->number);
	if (p->start_bytes > t->disk_bytes ||
	    p->size_bytes > t->disk_bytes - p->start_bytes)
		return part_error(err, ERANGE, "partition %u (sectors %" PRIu64
				  "..%" PRIu64 ", bytes %" PRIu64 "..%" PRIu64
				  ") ends past the end of the file (%" PRIu64
				  " bytes, %" PRIu64 " sectors of %u)", p->number,
				  p->start, p->start + p->size - 1, p->start_bytes,
				  p->start_bytes + p->size_bytes - 1, t->disk_bytes,
				  t->disk_bytes / t->sector_size, t->sector_size);
	return 0;
}

/* An MBR extended partition contains its logical ones by design. */
static int may_overlap(const struct loopfd_partition *a,
		       const struct loopfd_partition *b)
{
	return (a->extended && b->number > 4) || (b->extended && a->number > 4);
}

static int check_overlaps(const struct loopfd_partition_table *t,
			  struct loopfd_error *err)
{
	const struct loopfd_partition *a, *b;
	size_t i, j;

	for (i = 0; i < t->count; i++) {
		a = &t->parts[i];
		for (j = i + 1; j < t->count; j++) {
			b = &t->parts[j];
			if (may_overlap(a, b) ||
			    a->start + a->size <= b->start ||
			    b->start + b->size <= a->start)
				continue;
			return part_error(err, ERANGE, "partitions %u (sectors "
					  "%" PRIu64 "..%" PRIu64 ") and %u "
					  "(sectors %" PRIu64 "..%" PRIu64 ") "
					  "overlap", a->number, a->start,
					  a->start + a->size - 1, b->number,
					  b->start, b->start + b->size - 1);
		}
	}
	return 0;
}

static int check_table(int fd, const struct loopfd_partition_table *t,
		       struct loopfd_error *err)
{
	size_t i;

	/* libblkid falls back to the backup header without saying so. */
	if (strcmp(t->label, "gpt") == 0 && t->table_offset != t->sector_size)
		return part_error(err, EINVAL, "the primary GPT header (LBA 1, "
				  "byte %u) is invalid; only the backup at byte "
				  "%" PRIu64 " is good: repair the image first "
				  "(e.g. sfdisk -d IMAGE | sfdisk IMAGE)",
				  t->sector_size, t->table_offset);
	if (strcmp(t->label, "gpt") == 0 && check_gpt_entries(fd, t, err) < 0)
		return -1;
	for (i = 0; i < t->count; i++)
		if (check_bounds(t, &t->parts[i], err) < 0)
			return -1;
	return check_overlaps(t, err);
}

/* A GPT header where the other sector size would have it: say so. */
static const char *other_gpt_hint(int fd, uint32_t ss)
{
	if (ss != 512 && gpt_header_at(fd, 512))
		return "; a GPT header sits at byte 512: 512-byte sectors?";
	if (ss != 4096 && gpt_header_at(fd, 4096))
		return "; a GPT header sits at byte 4096: 4096-byte sectors?";
	return "";
}

/* libblkid's probe of fd into t (sector size and disk size already set). */
static int probe_table(int fd, struct loopfd_partition_table *t,
		       struct loopfd_error *err)
{
	blkid_probe pr = new_probe(fd, t->sector_size, err);
	blkid_partlist ls;
	blkid_parttable root;
	int rc = -1;

	if (!pr)
		return -1;
	ls = blkid_probe_get_partitions(pr);
	root = ls ? blkid_partlist_get_table(ls) : NULL;
	if (!root) {
		if (gpt_header_at(fd, t->sector_size))
			explain_missing_gpt(fd, t, err);
		else
			part_error(err, ENOENT, "no partition table found (GPT "
				   "or MBR, %u-byte sectors)%s", t->sector_size,
				   other_gpt_hint(fd, t->sector_size));
	} else if (fill_table_head(root, t, err) == 0 &&
		   fill_partitions(ls, root, t, err) == 0) {
		rc = 0;
	}
	blkid_free_probe(pr);
	return rc;
}

LOOPFD_PUBLIC
int loopfd_partitions_read(int fd, uint32_t sector_size,
			   struct loopfd_partition_table *t,
			   struct loopfd_error *err)
{
	struct loopfd_error scratch;
	struct stat st;

	if (!err)
		err = &scratch;
	if (!t)
		return part_error(err, EINVAL, "partitions: no table");
	memset(t, 0, sizeof(*t));
	if (sector_size != 0 && (sector_size < 512 || sector_size > 65536 ||
				 (sector_size & (sector_size - 1)) != 0))
		return part_error(err, EINVAL, "sector size %u: not a power of "
				  "two from 512 to 65536", sector_size);
	if (fstat(fd, &st) < 0)
		return part_error(err, errno, "fstat: %s", strerror(errno));
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
		return part_error(err, EINVAL, "not a regular file or block "
				  "device");
	t->sector_size = sector_size;
	if (!sector_size && detect_sector_size(fd, &t->sector_size, err) < 0)
		return -1;
	t->disk_bytes = S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0;
	if (S_ISBLK(st.st_mode) && blkid_get_dev_size(fd) > 0)
		t->disk_bytes = (uint64_t)blkid_get_dev_size(fd);
	if (probe_table(fd, t, err) < 0 || check_table(fd, t, err) < 0) {
		loopfd_partitions_free(t);
		return -1;
	}
	return 0;
}

LOOPFD_PUBLIC
void loopfd_partitions_free(struct loopfd_partition_table *t)
{
	if (!t)
		return;
	free(t->parts);
	t->parts = NULL;
	t->count = 0;
}

/* ---- selecting --------------------------------------------------------------- */

static int all_digits(const char *s)
{
	if (*s == '\0')
		return 0;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return 0;
	return 1;
}

/* "root" matches root-x86-64, root-arm64, ... but not root-verity-x86-64. */
static int kind_matches(const char *type_name, const char *sel)
{
	size_t i, n = strlen(sel);

	if (strncmp(type_name, sel, n) != 0 || type_name[n] != '-')
		return 0;
	for (i = 0; i < NELEM(dps_types); i++)
		if (dps_types[i].arch[0] && strcmp(dps_types[i].kind, sel) == 0 &&
		    strcmp(type_name + n + 1, dps_types[i].arch) == 0)
			return 1;
	return 0;
}

static int mbr_type_matches(const struct loopfd_partition *p, const char *sel)
{
	char *end;
	unsigned long v;

	if (!p->mbr_type || strncasecmp(sel, "0x", 2) != 0 || !isxdigit((unsigned char)sel[2]))
		return 0;
	v = strtoul(sel + 2, &end, 16);
	return *end == '\0' && v == p->mbr_type;
}

static int matches(const struct loopfd_partition *p, const char *sel)
{
	if (all_digits(sel))
		return strtoul(sel, NULL, 10) == p->number;
	return (p->mbr_type == 0 && strcasecmp(p->type, sel) == 0) ||
	       mbr_type_matches(p, sel) ||
	       (p->type_name[0] && strcmp(p->type_name, sel) == 0) ||
	       (p->type_name[0] && kind_matches(p->type_name, sel)) ||
	       (p->name[0] && strcmp(p->name, sel) == 0);
}

/* "1 esp 'EFI System', 2 root-x86-64 'root'" (as much as fits); only
 * partitions matching sel if sel is not NULL. */
static void describe(const struct loopfd_partition_table *t, const char *sel,
		     char *buf, size_t cap)
{
	const struct loopfd_partition *p;
	size_t i, len = 0;
	int n;

	buf[0] = '\0';
	for (i = 0; i < t->count && len < cap; i++) {
		p = &t->parts[i];
		if (sel && !matches(p, sel))
			continue;
		n = snprintf(buf + len, cap - len, "%s%u %s%s%s%s%s", len ? ", " : "",
			     p->number, p->type_name[0] ? p->type_name : "type ",
			     p->type_name[0] ? "" : p->type, p->name[0] ? " '" : "",
			     p->name, p->name[0] ? "'" : "");
		if (n < 0)
			break;
		len += (size_t)n;
	}
	/* a name may hold anything; the message goes to a terminal */
	for (i = 0; buf[i]; i++)
		if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
			buf[i] = '?';
}

LOOPFD_PUBLIC
int loopfd_partition_select(const struct loopfd_partition_table *t,
			    const char *sel, size_t *index,
			    struct loopfd_error *err)
{
	struct loopfd_error scratch;
	char list[400];
	size_t i, found = 0, at = 0;

	if (!err)
		err = &scratch;
	if (!t || !sel || !index)
		return part_error(err, EINVAL, "select: no table or selector");
	for (i = 0; i < t->count; i++)
		if (matches(&t->parts[i], sel)) {
			found++;
			at = i;
		}
	if (found == 1) {
		*index = at;
		return 0;
	}
	describe(t, found ? sel : NULL, list, sizeof(list));
	if (found)
		return part_error(err, EINVAL, "partition '%s' is ambiguous: "
				  "%zu partitions match: %s (select one by "
				  "number)", sel, found, list);
	return part_error(err, ENOENT, "no partition matches '%s' (a number, "
			  "type name, type GUID or GPT name); the %s table "
			  "holds: %s", sel, t->label, t->count ? list : "nothing");
}

/* ---- attaching ------------------------------------------------------------- */

LOOPFD_PUBLIC
int loopfd_attach_partition(struct loopfd_session *s, int backing_fd,
			    const struct loopfd_partition_table *t,
			    size_t index, const struct loopfd_attach_opts *opts,
			    struct loopfd_device *dev, struct loopfd_error *err)
{
	struct loopfd_error scratch;
	struct loopfd_attach_opts o = { 0 };
	const struct loopfd_partition *p;

	if (!err)
		err = &scratch;
	if (!t || index >= t->count)
		return part_error(err, EINVAL, "attach partition: no partition "
				  "at index %zu", index);
	p = &t->parts[index];
	if (opts)
		o = *opts;
	if (o.offset || o.sizelimit)
		return part_error(err, EINVAL, "attach partition %u: offset "
				  "and sizelimit come from the table", p->number);
	if (o.sector_size && o.sector_size != t->sector_size)
		return part_error(err, EINVAL, "attach partition %u: sector "
				  "size %u, but the table was read with %u",
				  p->number, o.sector_size, t->sector_size);
	if (p->extended)
		return part_error(err, EINVAL, "attach partition %u: an MBR "
				  "extended partition holds only the logical "
				  "ones (5 and up); attach those", p->number);
	o.offset = p->start_bytes;
	o.sizelimit = p->size_bytes;
	o.sector_size = t->sector_size;
	return loopfd_attach(s, backing_fd, &o, dev, err);
}

/* ---- JSON ------------------------------------------------------------------ */

static void json_string(FILE *f, const char *s)
{
	const unsigned char *c;

	fputc('"', f);
	for (c = (const unsigned char *)s; *c; c++) {
		if (*c == '"' || *c == '\\')
			fprintf(f, "\\%c", *c);
		else if (*c < 0x20 || *c == 0x7f)
			fprintf(f, "\\u%04x", *c);
		else
			fputc(*c, f);
	}
	fputc('"', f);
}

static void json_partition(FILE *f, const struct loopfd_partition_table *t,
			   const struct loopfd_partition *p)
{
	fprintf(f, "         {\n            \"number\": %u,\n            \"start\": %"
		PRIu64 ",\n            \"size\": %" PRIu64 ",\n            "
		"\"start_bytes\": %" PRIu64 ",\n            \"size_bytes\": %" PRIu64
		",\n            \"type\": ", p->number, p->start, p->size,
		p->start_bytes, p->size_bytes);
	json_string(f, p->type);
	fputs(",\n            \"type_name\": ", f);
	json_string(f, p->type_name);
	/* as sfdisk: uuid and name for GPT, bootable for MBR */
	if (strcmp(t->label, "gpt") == 0) {
		fputs(",\n            \"uuid\": ", f);
		json_string(f, p->uuid);
		if (p->name[0]) {
			fputs(",\n            \"name\": ", f);
			json_string(f, p->name);
		}
	} else {
		if (p->attrs == 0x80)	/* sfdisk: the active flag, exactly */
			fputs(",\n            \"bootable\": true", f);
		if (p->extended)
			fputs(",\n            \"extended\": true", f);
	}
	fputs("\n         }", f);
}

LOOPFD_PUBLIC
int loopfd_partitions_json(FILE *f, const struct loopfd_partition_table *t,
			   const char *device)
{
	size_t i;

	fputs("{\n   \"partitiontable\": {\n      \"label\": ", f);
	json_string(f, t->label);
	fputs(",\n      \"id\": ", f);
	json_string(f, t->id);
	fputs(",\n      \"device\": ", f);
	json_string(f, device ? device : "");
	fprintf(f, ",\n      \"unit\": \"sectors\",\n      \"sectorsize\": %u,\n"
		"      \"partitions\": [\n", t->sector_size);
	for (i = 0; i < t->count; i++) {
		json_partition(f, t, &t->parts[i]);
		fputs(i + 1 < t->count ? ",\n" : "\n", f);
	}
	fputs("      ]\n   }\n}\n", f);
	if (fflush(f) != 0 || ferror(f))
		return -1;
	return 0;
}
