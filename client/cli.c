/*
 * loopfd: run a command with loop devices attached by loopfd-helper.
 *
 * The order of events is the point of this program:
 *
 *   open each IMAGE as the caller -> attach -> close the IMAGE fds ->
 *   run COMMAND with the device fds on 3, 4, ... -> COMMAND exits ->
 *   close our own device fds -> release each device -> exit.
 *
 * The release is what makes the data safe (the helper flushes the device
 * and confirms the detach), so nothing may skip it: the forwarded signals
 * are blocked from before the fork to the end and taken with sigwaitinfo,
 * never by a handler that could run at the wrong moment.
 */
#include "loopfd.h"
#include "paths.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#define FIRST_DEVICE_FD		3
#define DEFAULT_TIMEOUT_MS	10000u

struct options {
	struct loopfd_attach_opts attach;
	uint32_t timeout_ms;		/* release timeout */
	const char *timeout_arg;	/* as given, NULL for the default */
	const char *socket_path;	/* NULL: $LOOPFD_SOCKET or setuid helper */
	int lock;
	int verbose;
	int partitions;			/* --partitions */
	const char **selectors;		/* --partition SEL..., nsel of them */
	size_t nsel;
};

struct image {
	const char *path;		/* for messages: "disk.img partition 2" too */
	char *owned_path;		/* path, when made here */
	int fd;				/* the opened image, until attached */
	int attached;
	const struct loopfd_partition_table *table;	/* a partition: of this */
	size_t part;			/* table->parts[part]; table NULL: whole */
	struct loopfd_device dev;
};

enum {
	OPT_SIZELIMIT = 0x100,
	OPT_DIRECT_IO,
	OPT_LOCK,
	OPT_GRANT,
	OPT_TIMEOUT,
	OPT_SOCKET,
	OPT_PARTITIONS,
	OPT_PARTITION,
	OPT_JSON,
};

static void usage_error(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));

static void usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("loopfd: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'loopfd --help' for more information.\n", stderr);
	exit(2);
}

/* --help > /dev/full must not succeed silently. */
static int flush_stdout(void)
{
	if (fflush(stdout) == 0 && !ferror(stdout))
		return 0;
	perror("loopfd: writing to standard output");
	return 1;
}

static int print_help(void)
{
	printf(
"loopfd - run a command with loop devices, without being root\n"
"\n"
"SYNOPSIS\n"
"  loopfd run [OPTION...] IMAGE [IMAGE...] -- COMMAND [ARG...]\n"
"  loopfd run [OPTION...] --partitions IMAGE -- COMMAND [ARG...]\n"
"  loopfd run [OPTION...] --partition SEL [--partition SEL...] IMAGE -- COMMAND...\n"
"  loopfd partitions [--json] [-b N] IMAGE\n"
"  loopfd --help | --version\n"
"\n"
"DESCRIPTION\n"
"  loopfd opens each IMAGE itself, as you (read-write, or read-only with -r;\n"
"  it never creates a file), and hands the open file to loopfd-helper, which\n"
"  attaches a loop device to it and hands back an open device. COMMAND then\n"
"  runs with the devices on fds 3, 4, ... (one per IMAGE, in order) and with\n"
"  LOOPFD_DEVICE=/dev/fd/3, LOOPFD_NAME=loopN (the first device),\n"
"  LOOPFD_DEVICES=\"/dev/fd/3 /dev/fd/4 ...\", LOOPFD_NAMES=\"loopN loopM ...\".\n"
"  The connection to the helper and the IMAGE fds are not passed on.\n"
"  SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to loopfd go on to COMMAND.\n"
"  When COMMAND exits, loopfd closes its own device fds and has the helper\n"
"  release each device: it waits for other openers (see --release-timeout),\n"
"  flushes what was written through the device to IMAGE and confirms the\n"
"  detach. A release that fails (data lost, device still open) is reported.\n"
"\n"
"OPTIONS (they apply to every IMAGE)\n"
"  -r, --read-only          open IMAGE read-only and attach it read-only\n"
"  -o, --offset BYTES       the device starts BYTES into IMAGE\n"
"      --sizelimit BYTES    the device is at most BYTES long (default: to EOF)\n"
"  -b, --sector-size N      logical sector size: 512, 1024, 2048, 4096\n"
"      --direct-io          the device reads and writes IMAGE with O_DIRECT\n"
"  -P, --partscan           have the kernel scan the partition table (a kernel\n"
"                           without partition parsers makes no loopNpM: loopfd\n"
"                           warns and points to --partitions)\n"
"      --lock               flock(LOCK_EX) the device, so udev leaves it alone\n"
"                           while COMMAND keeps fd 3 open\n"
"      --grant              make /dev/loopN yours while attached, so tools that\n"
"                           reopen a path (mkfs, /dev/fd/3) work\n"
"      --release-timeout S  wait up to S seconds (decimals allowed) for other\n"
"                           openers when releasing (default 10)\n"
"      --socket PATH        use the helper daemon `loopfd-helper --listen PATH`\n"
"                           instead of starting the setuid helper\n"
"      --partitions         IMAGE's partition table is read by loopfd and each\n"
"                           partition is attached as a device of its own: fd 3\n"
"                           is the whole IMAGE, fds 4, 5, ... every partition\n"
"                           in table order (MBR extended containers excepted)\n"
"      --partition SEL      attach only the partition SEL names, on fds 3, 4,\n"
"                           ... in the order given (repeatable); see PARTITIONS\n"
"      --json               loopfd partitions: the table as JSON (see PARTITIONS)\n"
"  -v, --verbose            report each device attached and released\n"
"  -h, --help               show this help and exit\n"
"  -V, --version            show the version and exit\n"
"  BYTES is a plain number, or one ending in KiB, MiB or GiB.\n"
"\n"
"PARTITIONS\n"
"  With --partitions or --partition, loopfd reads IMAGE's partition table\n"
"  itself (GPT or MBR with logical partitions, through libblkid) and asks\n"
"  the helper for one device per partition: a window of offset and size on\n"
"  the same open IMAGE, so no kernel partition parser is needed and no\n"
"  loopNpM node, and --grant covers each partition's own /dev/loopN. The\n"
"  sector size is -b if given, else 4096 if a GPT header sits at byte 4096,\n"
"  else 512; every device gets it. A table loopfd cannot trust is refused\n"
"  with the partition and the numbers: a damaged primary GPT (even with a\n"
"  good backup), entries outside the GPT's usable area, overlapping\n"
"  partitions, partitions or a table past the end of IMAGE. -o and\n"
"  --sizelimit do not go with these options, and they take one IMAGE.\n"
"  Do not write the same bytes through the whole disk and a partition\n"
"  device: each device has a page cache of its own.\n"
"\n"
"  SEL is a partition number (2); a GPT partition name (\"EFI System\");\n"
"  a type GUID; an MBR type (0x83); or a type name of the Discoverable\n"
"  Partitions Specification: esp, xbootldr, swap, home, srv, var, tmp,\n"
"  user-home, linux-generic, and root, usr, root-verity, usr-verity,\n"
"  root-verity-sig, usr-verity-sig, each with an architecture (root-x86-64,\n"
"  root-arm64, usr-riscv64, ...: x86, x86-64, arm, arm64, ia64, alpha, arc,\n"
"  loongarch64, mips-le, mips64-le, ppc, ppc64, ppc64-le, riscv32, riscv64,\n"
"  s390, s390x, tilegx) or without one for any architecture. MBR types\n"
"  0xef, 0xea, 0x82 and 0x83 are esp, xbootldr, swap and linux-generic.\n"
"  SEL must match exactly one partition; otherwise loopfd lists the table.\n"
"\n"
"  COMMAND gets, for each partition device (<N> its number in the table):\n"
"    LOOPFD_PART_<N>=/dev/fd/K        its fd\n"
"    LOOPFD_PART_<N>_DEVICE           its device name, loopM\n"
"    LOOPFD_PART_<N>_START, _SIZE     its offset and size in IMAGE, in bytes\n"
"    LOOPFD_PART_<N>_TYPE             type GUID (GPT), type byte in hex (MBR)\n"
"    LOOPFD_PART_<N>_TYPE_NAME        type name as above, empty if none\n"
"    LOOPFD_PART_<N>_NAME             GPT partition name, empty for MBR\n"
"    LOOPFD_PART_<N>_UUID             GPT partition UUID; MBR: the kernel's\n"
"                                     PARTUUID, DISKID-NN\n"
"    LOOPFD_PART_<TYPE>=/dev/fd/K     <TYPE> the type name in capitals, - as\n"
"                                     _ (LOOPFD_PART_ESP, LOOPFD_PART_ROOT,\n"
"                                     LOOPFD_PART_ROOT_X86_64); set only when\n"
"                                     exactly one device has that type\n"
"  and LOOPFD_SECTOR_SIZE, and LOOPFD_PARTITIONS: one word per partition\n"
"  device, in fd order, NUMBER:/dev/fd/K:loopM:START:SIZE:TYPE (START and\n"
"  SIZE in bytes, TYPE the type name, or the GUID or MBR type without one).\n"
"  LOOPFD_DEVICES and LOOPFD_NAMES list every device, the whole disk too.\n"
"\n"
"  loopfd partitions prints the table as loopfd reads it (the same checks),\n"
"  as a list or with --json in the layout and field meanings of\n"
"  sfdisk --json (label, id, sectorsize; start and size in sectors, type,\n"
"  uuid, name, bootable), plus number, start_bytes, size_bytes, type_name\n"
"  and extended. -b N reads it with N-byte sectors. It attaches nothing.\n"
"\n"
"ENVIRONMENT\n"
"  LOOPFD_SOCKET   the helper daemon's socket, when --socket is not given\n"
"  LOOPFD_HELPER   the helper to start instead of the installed one; ignored\n"
"                  for root and in setuid programs\n"
"\n"
"EXIT STATUS\n"
"  COMMAND's exit status, or 128+N if a signal N killed it. 1 if COMMAND\n"
"  succeeded but a release failed, or if loopfd failed before running\n"
"  COMMAND; 2 for a usage error; 126 if COMMAND could not be executed;\n"
"  127 if it was not found.  COMMAND is looked up in PATH and started as\n"
"  execvp(3) does: an executable file the kernel cannot run by itself (no\n"
"  #! line, or a binary for another machine) is run with /bin/sh.\n"
"\n"
"EXAMPLES\n"
"  loopfd run --grant disk.img -- mkfs.fat /dev/fd/3\n"
"  loopfd run disk.img -- sh -c 'cat data >&3'\n"
"  loopfd run -r -o 1MiB --sizelimit 16MiB disk.img -- sh -c 'od -N 512 <&3'\n"
"  loopfd run --grant --partition esp --partition root disk.img -- \\\n"
"      sh -c 'mkfs.vfat $LOOPFD_PART_ESP && mkfs.ext4 -d rootfs $LOOPFD_PART_ROOT'\n"
"  loopfd partitions --json disk.img\n"
"  # bubblewrap sets no_new_privs, which disarms the setuid helper: start a\n"
"  # helper daemon outside, as root, and use its socket inside:\n"
"  #   %s --listen /run/loopfd-ci.sock &\n"
"  bwrap --ro-bind / / --dev /dev --bind \"$PWD\" \"$PWD\" -- \\\n"
"      loopfd run --socket /run/loopfd-ci.sock disk.img -- sh -c 'cat data >&3'\n"
"\n"
"FILES\n"
"  %s\n"
"      the helper, installed setuid root\n"
"  %s\n"
"      the helper's policy: who may attach, limits, allowed options\n"
"  %s\n"
"      the helper's run-time state\n",
	       LOOPFD_HELPER_PATH, LOOPFD_HELPER_PATH, LOOPFD_CONFIG_PATH,
	       LOOPFD_RUNDIR);
	return flush_stdout();
}

static int print_version(void)
{
	printf("loopfd %s\n", LOOPFD_VERSION);
	return flush_stdout();
}

/* ---- numbers --------------------------------------------------------------- */

/* Leading decimal digits of s into *v; *end after them.  No sign, no space:
 * strtoull alone would take " -1" as a huge number. */
static int parse_digits(const char *s, uint64_t *v, const char **end)
{
	char *e;

	if (s[0] < '0' || s[0] > '9')
		return -1;
	errno = 0;
	*v = strtoull(s, &e, 10);
	if (errno != 0)
		return -1;
	*end = e;
	return 0;
}

static uint64_t parse_bytes(const char *opt, const char *arg)
{
	const char *end;
	uint64_t v, unit;

	if (parse_digits(arg, &v, &end) < 0)
		usage_error("%s: invalid value '%s' (expected bytes, optionally "
			    "with KiB, MiB or GiB)", opt, arg);
	if (strcmp(end, "") == 0)
		unit = 1;
	else if (strcmp(end, "KiB") == 0)
		unit = UINT64_C(1) << 10;
	else if (strcmp(end, "MiB") == 0)
		unit = UINT64_C(1) << 20;
	else if (strcmp(end, "GiB") == 0)
		unit = UINT64_C(1) << 30;
	else
		usage_error("%s: invalid value '%s' (expected bytes, optionally "
			    "with KiB, MiB or GiB)", opt, arg);
	if (v > UINT64_MAX / unit)
		usage_error("%s: value '%s' is too large", opt, arg);
	return v * unit;
}

static uint32_t parse_u32(const char *opt, const char *arg)
{
	const char *end;
	uint64_t v;

	if (parse_digits(arg, &v, &end) < 0 || *end != '\0')
		usage_error("%s: invalid value '%s' (expected a number)", opt, arg);
	if (v > UINT32_MAX)
		usage_error("%s: value '%s' is too large", opt, arg);
	return (uint32_t)v;
}

/* "10", "0.5", "2.125": seconds with at most millisecond precision. */
static uint32_t parse_seconds(const char *opt, const char *arg)
{
	const char *end, *p;
	uint64_t sec, ms = 0;
	int digits = 0;

	if (parse_digits(arg, &sec, &end) < 0)
		usage_error("%s: invalid value '%s' (expected seconds, like 10 "
			    "or 0.5)", opt, arg);
	if (*end == '.') {
		for (p = end + 1; *p >= '0' && *p <= '9' && digits < 3; p++) {
			ms = ms * 10 + (uint64_t)(*p - '0');
			digits++;
		}
		if (digits == 0 || *p != '\0')
			usage_error("%s: invalid value '%s' (expected seconds "
				    "with at most 3 decimals)", opt, arg);
		for (; digits < 3; digits++)
			ms *= 10;
	} else if (*end != '\0') {
		usage_error("%s: invalid value '%s' (expected seconds, like 10 "
			    "or 0.5)", opt, arg);
	}
	if (sec > UINT32_MAX / 1000 || sec * 1000 + ms > UINT32_MAX)
		usage_error("%s: value '%s' is too large", opt, arg);
	return (uint32_t)(sec * 1000 + ms);
}

/* ---- command line ---------------------------------------------------------- */

static const struct option long_options[] = {
	{ "read-only",		no_argument,		NULL, 'r' },
	{ "offset",		required_argument,	NULL, 'o' },
	{ "sizelimit",		required_argument,	NULL, OPT_SIZELIMIT },
	{ "sector-size",	required_argument,	NULL, 'b' },
	{ "direct-io",		no_argument,		NULL, OPT_DIRECT_IO },
	{ "partscan",		no_argument,		NULL, 'P' },
	{ "lock",		no_argument,		NULL, OPT_LOCK },
	{ "grant",		no_argument,		NULL, OPT_GRANT },
	{ "release-timeout",	required_argument,	NULL, OPT_TIMEOUT },
	{ "socket",		required_argument,	NULL, OPT_SOCKET },
	{ "partitions",		no_argument,		NULL, OPT_PARTITIONS },
	{ "partition",		required_argument,	NULL, OPT_PARTITION },
	{ "verbose",		no_argument,		NULL, 'v' },
	{ "help",		no_argument,		NULL, 'h' },
	{ "version",		no_argument,		NULL, 'V' },
	{ NULL,			0,			NULL, 0 },
};

static void add_selector(struct options *o, const char *sel)
{
	const char **v = realloc(o->selectors, (o->nsel + 1) * sizeof(*v));

	if (!v) {
		perror("loopfd");
		exit(1);
	}
	v[o->nsel++] = sel;
	o->selectors = v;
}

/* One option into o; -h and -V end the program here. */
static void take_option(int c, const char *arg, struct options *o)
{
	switch (c) {
	case 'r':		o->attach.flags |= LOOPFD_READ_ONLY; break;
	case 'o':		o->attach.offset = parse_bytes("--offset", arg); break;
	case OPT_SIZELIMIT:	o->attach.sizelimit = parse_bytes("--sizelimit", arg); break;
	case 'b':		o->attach.sector_size = parse_u32("--sector-size", arg); break;
	case OPT_DIRECT_IO:	o->attach.flags |= LOOPFD_DIRECT_IO; break;
	case 'P':		o->attach.flags |= LOOPFD_PARTSCAN; break;
	case OPT_LOCK:		o->lock = 1; break;
	case OPT_GRANT:		o->attach.flags |= LOOPFD_GRANT; break;
	case OPT_TIMEOUT:
		o->timeout_ms = parse_seconds("--release-timeout", arg);
		o->timeout_arg = arg;
		break;
	case OPT_SOCKET:	o->socket_path = arg; break;
	case OPT_PARTITIONS:	o->partitions = 1; break;
	case OPT_PARTITION:	add_selector(o, arg); break;
	case 'v':		o->verbose = 1; break;
	case 'h':		exit(print_help());
	case 'V':		exit(print_version());
	default:		usage_error("invalid command line");
	}
}

/*
 * argv[0] is "run".  '+': stop at the first IMAGE, so that nothing after it
 * (COMMAND's own options above all) is taken for one of ours.  Returns the
 * index of the first operand.
 */
static int parse_options(int argc, char **argv, struct options *o)
{
	static char prog[] = "loopfd";	/* getopt names argv[0] in its messages */
	int c;

	memset(o, 0, sizeof(*o));
	o->timeout_ms = DEFAULT_TIMEOUT_MS;
	argv[0] = prog;
	while ((c = getopt_long(argc, argv, "+rPo:b:vhV", long_options,
				NULL)) != -1) {
		if (c == '?') {
			/* getopt has said what was wrong */
			fputs("Try 'loopfd --help' for more information.\n", stderr);
			exit(2);
		}
		take_option(c, optarg, o);
	}
	return optind;
}

/* IMAGE... -- COMMAND [ARG...] from argv[first]; exits on a usage error. */
static void split_operands(int argc, char **argv, int first,
			   struct image **imgs, size_t *n, char ***cmd)
{
	int i, dashes = -1;

	for (i = first; i < argc && dashes < 0; i++) {
		if (strcmp(argv[i], "--") == 0)
			dashes = i;
		else if (argv[i][0] == '-' && argv[i][1] != '\0')
			usage_error("option '%s' after an IMAGE: options go "
				    "before the images", argv[i]);
	}
	if (dashes < 0)
		usage_error("missing '--' and COMMAND after the images "
			    "(loopfd run [OPTION...] IMAGE... -- COMMAND [ARG...])");
	if (dashes == first)
		usage_error("no IMAGE before '--'");
	if (dashes + 1 >= argc)
		usage_error("no COMMAND after '--'");
	*n = (size_t)(dashes - first);
	*imgs = calloc(*n, sizeof(**imgs));
	if (!*imgs) {
		perror("loopfd");
		exit(1);
	}
	for (i = 0; i < dashes - first; i++) {
		(*imgs)[i].path = argv[first + i];
		(*imgs)[i].fd = -1;
		(*imgs)[i].dev.fd = -1;
	}
	*cmd = &argv[dashes + 1];
}

/* ---- images and devices ---------------------------------------------------- */

static int open_image(struct image *img, int read_only)
{
	int flags = read_only ? O_RDONLY : O_RDWR;
	int e, fl;

	/* O_NONBLOCK only so that a FIFO cannot hang open(); it is cleared
	 * right after, and the helper refuses what is not a file anyway. */
	img->fd = open(img->path, flags | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (img->fd < 0) {
		e = errno;
		fprintf(stderr, "loopfd: %s: cannot open for %s: %s%s\n",
			img->path, read_only ? "reading" : "reading and writing",
			strerror(e), !read_only && (e == EACCES || e == EROFS) ?
			" (-r attaches it read-only)" : "");
		return -1;
	}
	fl = fcntl(img->fd, F_GETFL);
	if (fl < 0 || fcntl(img->fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		fprintf(stderr, "loopfd: %s: fcntl: %s\n", img->path,
			strerror(errno));
		return -1;
	}
	return 0;
}

static int open_images(struct image *imgs, size_t n, const struct options *o)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (open_image(&imgs[i], o->attach.flags & LOOPFD_READ_ONLY) < 0)
			return -1;
	return 0;
}

static void close_images(struct image *imgs, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (imgs[i].fd >= 0)
			close(imgs[i].fd);
		imgs[i].fd = -1;
	}
}

static void flags_text(uint32_t flags, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s%s%s%s%s",
		 flags & LOOPFD_READ_ONLY ? "read-only" : "read-write",
		 flags & LOOPFD_PARTSCAN ? ",partscan" : "",
		 flags & LOOPFD_DIRECT_IO ? ",direct-io" : "",
		 flags & LOOPFD_GRANT ? ",granted" : "",
		 flags & LOOPFD_AUTOCLEAR ? ",autoclear" : "");
}

static void print_device(const struct image *img)
{
	char flags[96];

	flags_text(img->dev.flags, flags, sizeof(flags));
	fprintf(stderr, "loopfd: %s -> %s (%u:%u, %" PRIu64 " bytes, %s)\n",
		img->path, img->dev.path, img->dev.major, img->dev.minor,
		img->dev.size, flags);
}

/* systemd's block device locking: udev skips a device that someone holds
 * LOCK_EX on.  The lock belongs to the open file description, which COMMAND
 * gets as fd 3, so it lasts as long as COMMAND keeps that open. */
static int lock_device(const struct image *img)
{
	int rc;

	do {
		rc = flock(img->dev.fd, LOCK_EX);
	} while (rc < 0 && errno == EINTR);
	if (rc < 0) {
		fprintf(stderr, "loopfd: --lock: flock on %s (image %s): %s\n",
			img->dev.path, img->path, strerror(errno));
		return -1;
	}
	return 0;
}

static void warn_partscan(const struct image *img);

/* The device's options: a partition's window and sector size come from
 * its table (check_partition_options refused -o and --sizelimit with it),
 * as loopfd_attach_partition has them. */
static int image_opts(const struct image *img, const struct options *o,
		      struct loopfd_attach_opts *a)
{
	const struct loopfd_partition *p;

	*a = o->attach;
	if (!img->table)
		return 0;
	p = &img->table->parts[img->part];
	if (p->extended) {
		fprintf(stderr, "loopfd: %s: attach partition %u: an MBR extended "
			"partition holds only the logical ones (5 and up); attach "
			"those\n", img->path, p->number);
		return -1;
	}
	a->offset = p->start_bytes;
	a->sizelimit = p->size_bytes;
	a->sector_size = img->table->sector_size;
	return 0;
}

static int after_attach(struct image *img, const struct options *o)
{
	if (o->attach.flags & LOOPFD_PARTSCAN)
		warn_partscan(img);
	/* The device holds its own reference to the file from here on. */
	close(img->fd);
	img->fd = -1;
	if (o->lock && lock_device(img) < 0)
		return -1;
	if (o->verbose)
		print_device(img);
	return 0;
}

/* Up to LOOPFD_BATCH_MAX images in one request: all attached, or none
 * (the helper undoes the batch) and the failing image named. */
static int attach_batch(struct loopfd_session *s, struct image *imgs,
			size_t n, const struct options *o)
{
	struct loopfd_attach_opts opts[LOOPFD_BATCH_MAX];
	struct loopfd_device devs[LOOPFD_BATCH_MAX];
	int fds[LOOPFD_BATCH_MAX];
	struct loopfd_error err;
	size_t i, failed;

	for (i = 0; i < n; i++) {
		fds[i] = imgs[i].fd;
		if (image_opts(&imgs[i], o, &opts[i]) < 0)
			return -1;
	}
	if (loopfd_attach_batch(s, fds, opts, n, devs, &failed, &err) < 0) {
		if (failed < n)
			fprintf(stderr, "loopfd: %s: %s\n", imgs[failed].path,
				loopfd_strerror(&err));
		else
			fprintf(stderr, "loopfd: %s\n", loopfd_strerror(&err));
		return -1;
	}
	for (i = 0; i < n; i++) {
		imgs[i].dev = devs[i];
		imgs[i].attached = 1;
	}
	for (i = 0; i < n; i++)
		if (after_attach(&imgs[i], o) < 0)
			return -1;
	return 0;
}

static int attach_all(struct loopfd_session *s, struct image *imgs, size_t n,
		      const struct options *o)
{
	size_t i, k;

	for (i = 0; i < n; i += k) {
		k = n - i < LOOPFD_BATCH_MAX ? n - i : LOOPFD_BATCH_MAX;
		if (attach_batch(s, &imgs[i], k, o) < 0)
			return -1;
	}
	return 0;
}

/* A default timeout above the helper's limit is lowered to it; one the user
 * asked for is an error now rather than a failed release later. */
static int check_timeout(const struct loopfd_session *s, struct options *o)
{
	unsigned max = loopfd_session_info(s)->max_timeout_ms;

	if (o->timeout_ms <= max)
		return 0;
	if (!o->timeout_arg) {
		o->timeout_ms = max;
		return 0;
	}
	fprintf(stderr, "loopfd: --release-timeout %s: the helper allows at most "
		"%u.%03u seconds\n", o->timeout_arg, max / 1000, max % 1000);
	return -1;
}

static void print_session(const struct loopfd_session *s)
{
	const struct loopfd_info *info = loopfd_session_info(s);
	const char *mode = info->mode == LOOPFD_MODE_SETUID ? "setuid" :
			   info->mode == LOOPFD_MODE_LISTEN ? "listen" :
			   info->mode == LOOPFD_MODE_SYSTEMD ? "systemd" : "unknown";

	fprintf(stderr, "loopfd: helper in %s mode, protocol %u, uid %u gid %u, "
		"up to %u devices\n", mode, info->version, (unsigned)info->uid,
		(unsigned)info->gid, info->max_devices);
}

/* ---- the command ----------------------------------------------------------- */

static int export_partition_env(const struct image *imgs, size_t n);

static int export_env(const struct image *imgs, size_t n)
{
	size_t cap = n * 32 + 1, dlen = 0, nlen = 0, i;
	char *devs = malloc(cap), *names = malloc(cap);
	char first[32];
	int rc = -1;

	if (!devs || !names)
		goto out;
	devs[0] = names[0] = '\0';
	for (i = 0; i < n; i++) {
		dlen += (size_t)snprintf(devs + dlen, cap - dlen, "%s/dev/fd/%zu",
					 i ? " " : "", FIRST_DEVICE_FD + i);
		nlen += (size_t)snprintf(names + nlen, cap - nlen, "%s%s",
					 i ? " " : "", imgs[i].dev.name);
	}
	snprintf(first, sizeof(first), "/dev/fd/%d", FIRST_DEVICE_FD);
	if (setenv("LOOPFD_DEVICE", first, 1) == 0 &&
	    setenv("LOOPFD_NAME", imgs[0].dev.name, 1) == 0 &&
	    setenv("LOOPFD_DEVICES", devs, 1) == 0 &&
	    setenv("LOOPFD_NAMES", names, 1) == 0)
		rc = 0;
out:
	if (rc < 0)
		perror("loopfd: setting the environment");
	free(devs);
	free(names);
	return rc;
}

/*
 * Device i goes onto fd 3+i in COMMAND.  Each is first copied above the
 * target range (close-on-exec, like every other fd of ours), so that
 * placing one cannot overwrite another that happens to sit on its target;
 * the spawn's dup2 of a copy then gives COMMAND its fd without FD_CLOEXEC.
 * copies[] is closed by the caller after the spawn.
 */
static int place_device_fds(posix_spawn_file_actions_t *fa,
			    const struct image *imgs, size_t n, int *copies)
{
	int top = FIRST_DEVICE_FD + (int)n;
	size_t i;
	int rc;

	for (i = 0; i < n; i++) {
		copies[i] = fcntl(imgs[i].dev.fd, F_DUPFD_CLOEXEC, top);
		if (copies[i] < 0)
			return errno;
	}
	for (i = 0; i < n; i++) {
		rc = posix_spawn_file_actions_adddup2(fa, copies[i],
						      FIRST_DEVICE_FD + (int)i);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/*
 * FILE, which the kernel refused to exec as it is (ENOEXEC: no #! line, or
 * a binary for another machine), run as `/bin/sh FILE ARGS...`, which is
 * what execvp(3) does.  0, or an error number; *ours is set if it was our
 * own allocation that failed.
 */
static int spawn_with_sh(const char *file, char **cmd,
			 const posix_spawn_file_actions_t *fa,
			 const posix_spawnattr_t *attr, pid_t *pid, int *ours)
{
	char **argv;
	size_t argc = 0;
	int rc;

	while (cmd[argc])
		argc++;
	argv = calloc(argc + 2, sizeof(*argv));
	if (argv == NULL) {
		*ours = 1;
		return ENOMEM;
	}
	argv[0] = (char *)"/bin/sh";
	argv[1] = (char *)file;
	memcpy(argv + 2, cmd + 1, argc * sizeof(*argv));	/* and the NULL */
	rc = posix_spawn(pid, "/bin/sh", fa, attr, argv, environ);
	free(argv);
	return rc;
}

/* One candidate file: exec it, or run it with /bin/sh if it is no program. */
static int spawn_file(const char *file, char **cmd,
		      const posix_spawn_file_actions_t *fa,
		      const posix_spawnattr_t *attr, pid_t *pid, int *ours)
{
	int rc = posix_spawn(pid, file, fa, attr, cmd, environ);

	if (rc == ENOEXEC)
		rc = spawn_with_sh(file, cmd, fa, attr, pid, ours);
	return rc;
}

/* The exec errors after which execvp goes on to the next PATH entry. */
static int try_next_entry(int e)
{
	return e == ENOENT || e == ENOTDIR || e == EACCES || e == ESTALE ||
	       e == ENODEV || e == ETIMEDOUT;
}

/*
 * execvp's walk, done once posix_spawnp (which has no /bin/sh fallback)
 * reported ENOEXEC: each PATH entry in turn (none set: glibc's
 * "/bin:/usr/bin"; an empty one: the current directory), past those whose
 * exec fails with ENOENT, EACCES and the like, to the first that runs or
 * is handed to /bin/sh.  So the file given to the shell is the one the
 * kernel refused, not merely the first executable-looking name.
 */
static int spawn_as_execvp(char **cmd, const posix_spawn_file_actions_t *fa,
			   const posix_spawnattr_t *attr, pid_t *pid, int *ours)
{
	const char *path = getenv("PATH"), *p, *end;
	char *file;
	int rc, len, eacces = 0;

	if (strchr(cmd[0], '/'))	/* the one file: posix_spawnp just tried it */
		return spawn_with_sh(cmd[0], cmd, fa, attr, pid, ours);
	for (p = path ? path : "/bin:/usr/bin";; p = end + 1) {
		end = strchrnul(p, ':');
		len = (int)(end - p);
		if (asprintf(&file, "%.*s/%s", len ? len : 1, len ? p : ".",
			     cmd[0]) < 0) {
			*ours = 1;
			return ENOMEM;
		}
		rc = spawn_file(file, cmd, fa, attr, pid, ours);
		free(file);
		if (!try_next_entry(rc))
			return rc;
		eacces |= rc == EACCES;
		if (*end == '\0')
			return eacces ? EACCES : rc;	/* as glibc: the last one's */
	}
}

/*
 * Start COMMAND with the signal mask from before ours and the devices on
 * fds 3...  posix_spawnp (vfork-like in glibc) rather than fork + exec:
 * `loopfd run` starts one program more than losetup does, and not copying
 * our page tables is the cheap part of that to save.  0 and *pid, or the
 * error number of what failed: *preparing is set if that was our own
 * setup (fds, memory), not the start of COMMAND.
 */
static int spawn_command(char **cmd, const struct image *imgs, size_t n,
			 const sigset_t *orig, pid_t *pid, int *preparing)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	int *copies = calloc(n ? n : 1, sizeof(*copies));
	size_t i;
	int rc;

	*preparing = 1;
	if (copies == NULL)
		return ENOMEM;
	for (i = 0; i < n; i++)
		copies[i] = -1;
	rc = posix_spawn_file_actions_init(&fa);
	if (rc != 0) {
		free(copies);
		return rc;
	}
	rc = posix_spawnattr_init(&attr);
	if (rc == 0) {
		rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
		if (rc == 0)
			rc = posix_spawnattr_setsigmask(&attr, orig);
		if (rc == 0)
			rc = place_device_fds(&fa, imgs, n, copies);
		if (rc == 0) {
			*preparing = 0;
			rc = posix_spawnp(pid, cmd[0], &fa, &attr, cmd, environ);
			if (rc == ENOEXEC)
				rc = spawn_as_execvp(cmd, &fa, &attr, pid, preparing);
		}
		posix_spawnattr_destroy(&attr);
	}
	posix_spawn_file_actions_destroy(&fa);
	for (i = 0; i < n; i++)
		if (copies[i] >= 0)
			close(copies[i]);
	free(copies);
	return rc;
}

static void forward_set(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGQUIT);
	sigaddset(set, SIGCHLD);
}

/* SIGINT and SIGQUIT from the kernel come from the terminal, which sends
 * them to the whole foreground process group: COMMAND got its own, and a
 * second one could cut its cleanup short. */
static void forward_signal(pid_t pid, const siginfo_t *si)
{
	if ((si->si_signo == SIGINT || si->si_signo == SIGQUIT) &&
	    si->si_code == SI_KERNEL)
		return;
	kill(pid, si->si_signo);
}

/* Wait for COMMAND, passing signals on.  Only this loop reaps it, so pid
 * cannot be reused by another process while we may still signal it. */
static int wait_command(pid_t pid, const sigset_t *set, int *status)
{
	siginfo_t si;
	pid_t r;

	for (;;) {
		if (sigwaitinfo(set, &si) < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (si.si_signo != SIGCHLD) {
			forward_signal(pid, &si);
			continue;
		}
		/* Any child's SIGCHLD (a spawned helper's too): is it ours? */
		r = waitpid(pid, status, WNOHANG);
		if (r == pid)
			return 0;
		if (r < 0 && errno != EINTR)
			return -1;
	}
}

static int exit_status(int st)
{
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return 1;
}

/* Run COMMAND and return its exit status: 127 if it was not found, 126 if
 * it could not be started otherwise (as a shell reports), 1 if our own
 * preparation or the waiting failed.
 * The forwarded signals stay blocked afterwards, through the release. */
static int run_command(char **cmd, struct image *imgs, size_t n)
{
	sigset_t set, orig;
	pid_t pid;
	int st, rc, preparing;

	forward_set(&set);
	if (sigprocmask(SIG_BLOCK, &set, &orig) < 0) {
		perror("loopfd: sigprocmask");
		return 1;
	}
	rc = spawn_command(cmd, imgs, n, &orig, &pid, &preparing);
	if (rc != 0 && preparing) {
		fprintf(stderr, "loopfd: cannot prepare to start %s: %s\n",
			cmd[0], strerror(rc));
		return 1;
	}
	if (rc != 0) {
		fprintf(stderr, "loopfd: %s: %s\n", cmd[0], strerror(rc));
		return rc == ENOENT ? 127 : 126;
	}
	if (wait_command(pid, &set, &st) < 0) {
		perror("loopfd: waiting for the command");
		return 1;
	}
	return exit_status(st);
}

/* ---- release ---------------------------------------------------------------- */

/* The helper's own words: the library prefixes them with the operation. */
static const char *release_text(const struct loopfd_error *err)
{
	const char *msg = loopfd_strerror(err);
	static const char *const prefixes[] = {
		"release: helper refused: ", "release: ",
	};
	size_t i;

	for (i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
		if (strncmp(msg, prefixes[i], strlen(prefixes[i])) == 0)
			return msg + strlen(prefixes[i]);
	return msg;
}

/* One release request for up to LOOPFD_BATCH_MAX images (the attached
 * ones among imgs[0..n)); each image's outcome reported as it was alone.
 * Returns how many failed. */
static int release_batch(struct loopfd_session *s, const struct image *imgs,
			 size_t n, const struct options *o)
{
	struct loopfd_release_result res[LOOPFD_BATCH_MAX];
	const struct image *which[LOOPFD_BATCH_MAX];
	uint32_t ids[LOOPFD_BATCH_MAX];
	struct loopfd_error err;
	size_t i, k = 0;
	int failed = 0;

	for (i = 0; i < n; i++)
		if (imgs[i].attached) {
			which[k] = &imgs[i];
			ids[k++] = imgs[i].dev.id;
		}
	if (k == 0)
		return 0;
	/* Its result is in each image's outcome. */
	(void)loopfd_release_batch(s, ids, k, o->timeout_ms, res, &err);
	for (i = 0; i < k; i++) {
		if (res[i].error.err != 0) {
			fprintf(stderr, "loopfd: release of %s (image %s) failed: %s\n",
				which[i]->dev.path, which[i]->path,
				release_text(&res[i].error));
			failed++;
		} else if (o->verbose) {
			fprintf(stderr, "loopfd: released %s (image %s), waited %u ms\n",
				which[i]->dev.path, which[i]->path,
				(unsigned)res[i].waited_ms);
		}
	}
	return failed;
}

/* Release every attached device and end the session; returns how many
 * releases failed. */
static int release_all(struct loopfd_session *s, struct image *imgs,
		       size_t n, const struct options *o)
{
	int failed = 0;
	size_t i, k;

	/* Our own copies first: while loopfd holds a device open, the helper
	 * counts it as another opener, waits out the timeout and reports the
	 * device busy. */
	for (i = 0; i < n; i++) {
		if (imgs[i].dev.fd >= 0)
			close(imgs[i].dev.fd);
		imgs[i].dev.fd = -1;
	}
	for (i = 0; i < n; i += k) {
		k = n - i < LOOPFD_BATCH_MAX ? n - i : LOOPFD_BATCH_MAX;
		failed += release_batch(s, &imgs[i], k, o);
	}
	loopfd_close(s);
	return failed;
}

/* ---- partitions ------------------------------------------------------------ */

/* --partitions and --partition take one IMAGE, whose table decides the
 * windows: offsets of one's own would contradict it. */
static void check_partition_options(const struct options *o, size_t n)
{
	if (!o->partitions && !o->nsel)
		return;
	if (o->partitions && o->nsel)
		usage_error("--partitions attaches every partition: it does not "
			    "go with --partition");
	if (n != 1)
		usage_error("--partition%s takes exactly one IMAGE (%zu given)",
			    o->partitions ? "s" : "", n);
	if (o->attach.offset || o->attach.sizelimit)
		usage_error("--partition%s: offset and size come from the "
			    "partition table, not -o/--sizelimit",
			    o->partitions ? "s" : "");
}

/* Entry e: partition t->parts[i] of path, on its own copy of fd. */
static int set_partition_entry(struct image *e, const char *path, int fd,
			       const struct loopfd_partition_table *t, size_t i)
{
	e->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	e->dev.fd = -1;
	e->table = t;
	e->part = i;
	if (e->fd < 0 ||
	    asprintf(&e->owned_path, "%s partition %u", path,
		     t->parts[i].number) < 0) {
		e->owned_path = NULL;
		perror("loopfd");
		return -1;
	}
	e->path = e->owned_path;
	return 0;
}

/* The partitions to attach, as indexes into t->parts, into idx (*k of
 * them): every one but MBR extended containers, or the selected ones. */
static int pick_partitions(const char *path, const struct options *o,
			   const struct loopfd_partition_table *t,
			   size_t *idx, size_t *k)
{
	struct loopfd_error err;
	size_t i, j;

	*k = 0;
	for (i = 0; o->partitions && i < t->count; i++)
		if (!t->parts[i].extended)
			idx[(*k)++] = i;
	for (i = 0; i < o->nsel; i++) {
		if (loopfd_partition_select(t, o->selectors[i], &idx[*k], &err) < 0) {
			fprintf(stderr, "loopfd: %s: %s\n", path, loopfd_strerror(&err));
			return -1;
		}
		for (j = 0; j < *k; j++)
			if (idx[j] == idx[*k]) {
				fprintf(stderr, "loopfd: %s: --partition %s: "
					"partition %u is selected twice\n", path,
					o->selectors[i], t->parts[idx[j]].number);
				return -1;
			}
		(*k)++;
	}
	if (*k == 0)
		fprintf(stderr, "loopfd: %s: the %s partition table has no "
			"partition to attach\n", path, t->label);
	return *k ? 0 : -1;
}

/*
 * Read the one IMAGE's table and replace *imgs by the devices to attach:
 * the whole image then every partition (--partitions), or the selected
 * partitions in the order given.  Every device gets the table's sector size.
 */
static int expand_partitions(struct image **imgs, size_t *n,
			     struct options *o, struct loopfd_partition_table *t)
{
	struct image *whole = &(*imgs)[0], *v;
	struct loopfd_error err;
	size_t *idx, k, i, first;
	int rc = -1;

	if (loopfd_partitions_read(whole->fd, o->attach.sector_size, t, &err) < 0) {
		fprintf(stderr, "loopfd: %s: %s\n", whole->path, loopfd_strerror(&err));
		return -1;
	}
	o->attach.sector_size = t->sector_size;
	idx = calloc(t->count + o->nsel + 1, sizeof(*idx));
	v = calloc(t->count + o->nsel + 1, sizeof(*v));
	if (!idx || !v) {
		perror("loopfd");
		goto out;
	}
	if (pick_partitions(whole->path, o, t, idx, &k) < 0)
		goto out;
	first = o->partitions ? 1 : 0;
	for (i = 0; i < k; i++) {
		v[first + i].fd = -1;
		if (set_partition_entry(&v[first + i], whole->path, whole->fd, t,
					idx[i]) < 0) {
			close_images(v, first + k);
			for (i = 0; i < first + k; i++)
				free(v[i].owned_path);
			goto out;
		}
	}
	if (o->partitions)
		v[0] = *whole;
	else
		close(whole->fd);
	free(*imgs);
	*imgs = v;
	*n = first + k;
	v = NULL;
	rc = 0;
out:
	free(idx);
	free(v);
	return rc;
}

/* "root-x86-64" -> "ROOT_X86_64" */
static void env_word(char *dst, size_t cap, const char *src)
{
	size_t i;

	for (i = 0; src[i] && i + 1 < cap; i++)
		dst[i] = src[i] == '-' ? '_' : (char)toupper((unsigned char)src[i]);
	dst[i] = '\0';
}

static int set_env(const char *name, const char *value)
{
	if (setenv(name, value, 1) == 0)
		return 0;
	perror("loopfd: setting the environment");
	return -1;
}

/*
 * The words partition p is known by in LOOPFD_PART_<WORD>: its type name
 * ("ROOT_X86_64") and, for a root or /usr partition, the kind alone
 * ("ROOT").  Returns how many (0 to 2).
 */
static int type_words(const struct loopfd_partition *p, char w[2][40])
{
	char *cut;

	if (!p->type_name[0])
		return 0;
	env_word(w[0], sizeof(w[0]), p->type_name);
	if (strncmp(w[0], "ROOT_", 5) != 0 && strncmp(w[0], "USR_", 4) != 0)
		return 1;
	if (strstr(w[0], "VERITY"))
		return 1;
	memcpy(w[1], w[0], sizeof(w[1]));
	cut = strchr(w[1], '_');
	*cut = '\0';
	return 2;
}

/* How many partition devices are known by word. */
static size_t devices_known_as(const struct image *imgs, size_t n,
			       const char *word)
{
	char w[2][40];
	size_t i, seen = 0;
	int k, j;

	for (i = 0; i < n; i++) {
		if (!imgs[i].table)
			continue;
		k = type_words(&imgs[i].table->parts[imgs[i].part], w);
		for (j = 0; j < k; j++)
			seen += strcmp(w[j], word) == 0;
	}
	return seen;
}

static int set_part_env(uint32_t number, const char *suffix, const char *value)
{
	char var[64];

	snprintf(var, sizeof(var), "LOOPFD_PART_%u%s", number, suffix);
	return set_env(var, value);
}

static int partition_env(const struct image *img, size_t fdnum, char *list,
			 size_t cap, const struct image *imgs, size_t n)
{
	const struct loopfd_partition *p = &img->table->parts[img->part];
	char fd[32], start[24], size[24], var[96], w[2][40];
	const char *typ = p->type_name[0] ? p->type_name : p->type;
	int rc = 0, k, j;

	snprintf(fd, sizeof(fd), "/dev/fd/%zu", fdnum);
	snprintf(start, sizeof(start), "%" PRIu64, p->start_bytes);
	snprintf(size, sizeof(size), "%" PRIu64, p->size_bytes);
	rc |= set_part_env(p->number, "", fd);
	rc |= set_part_env(p->number, "_DEVICE", img->dev.name);
	rc |= set_part_env(p->number, "_START", start);
	rc |= set_part_env(p->number, "_SIZE", size);
	rc |= set_part_env(p->number, "_TYPE", p->type);
	rc |= set_part_env(p->number, "_TYPE_NAME", p->type_name);
	rc |= set_part_env(p->number, "_UUID", p->uuid);
	rc |= set_part_env(p->number, "_NAME", p->name);
	k = type_words(p, w);
	for (j = 0; j < k; j++) {
		snprintf(var, sizeof(var), "LOOPFD_PART_%s", w[j]);
		if (devices_known_as(imgs, n, w[j]) == 1)
			rc |= set_env(var, fd);
	}
	snprintf(list + strlen(list), cap - strlen(list), "%s%u:%s:%s:%s:%s:%s",
		 list[0] ? " " : "", p->number, fd, img->dev.name, start, size,
		 typ);
	return rc ? -1 : 0;
}

/*
 * For each partition device: LOOPFD_PART_<N>=/dev/fd/K and its details,
 * LOOPFD_PART_<TYPE>=/dev/fd/K where one device has that type, and
 * LOOPFD_PARTITIONS, one NUMBER:FD:DEVICE:START:SIZE:TYPE word each.
 */
static int export_partition_env(const struct image *imgs, size_t n)
{
	const struct loopfd_partition_table *t = NULL;
	size_t cap = n * 160 + 1, i;
	char *list, ss[16];
	int rc = 0;

	for (i = 0; i < n && !t; i++)
		t = imgs[i].table;
	if (!t)
		return 0;	/* no partition devices */
	list = calloc(cap, 1);
	if (!list) {
		perror("loopfd");
		return -1;
	}
	for (i = 0; i < n && rc == 0; i++)
		if (imgs[i].table)
			rc = partition_env(&imgs[i], FIRST_DEVICE_FD + i, list,
					   cap, imgs, n);
	snprintf(ss, sizeof(ss), "%u", t->sector_size);
	if (rc == 0)
		rc = set_env("LOOPFD_PARTITIONS", list) |
		     set_env("LOOPFD_SECTOR_SIZE", ss);
	free(list);
	return rc ? -1 : 0;
}

/* Does /sys/block/NAME hold a NAMEp* partition (or cannot we tell)? */
static int has_partition_devices(const char *name)
{
	char path[64], prefix[40];
	struct dirent *d;
	DIR *dir;
	int found = 0;

	snprintf(path, sizeof(path), "/sys/block/%s", name);
	snprintf(prefix, sizeof(prefix), "%sp", name);
	dir = opendir(path);
	if (!dir)
		return 1;
	while (!found && (d = readdir(dir)) != NULL)
		found = strncmp(d->d_name, prefix, strlen(prefix)) == 0;
	closedir(dir);
	return found;
}

/* A kernel without partition parsers (CONFIG_MSDOS_PARTITION,
 * CONFIG_EFI_PARTITION) scans nothing: the partition devices appear in
 * /sys/block/loopN/ during the attach, or never. */
static void warn_partscan(const struct image *img)
{
	struct loopfd_partition_table t;
	int fd;

	if (img->table || has_partition_devices(img->dev.name))
		return;
	fd = fcntl(img->dev.fd, F_DUPFD_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (loopfd_partitions_read(fd, 0, &t, NULL) == 0 &&
	    t.count > 0)
		fprintf(stderr, "loopfd: warning: -P: the kernel made no "
			"partition devices for %s (%s holds a %s table with %zu "
			"partitions): this kernel cannot parse partition tables. "
			"--partitions attaches each partition as a device of its "
			"own instead\n", img->dev.path, img->path, t.label, t.count);
	loopfd_partitions_free(&t);
	close(fd);
}

/* The table as a text listing: sizes in bytes and sectors, names quoted. */
static void print_table(const char *path, const struct loopfd_partition_table *t)
{
	const struct loopfd_partition *p;
	size_t i, j;

	printf("%s: %s table, id %s, %u-byte sectors, %" PRIu64 " bytes\n",
	       path, t->label, t->id, t->sector_size, t->disk_bytes);
	printf("%6s %12s %12s %14s %14s  %-20s %s\n", "NUMBER", "START",
	       "SECTORS", "START_BYTES", "SIZE_BYTES", "TYPE", "NAME");
	for (i = 0; i < t->count; i++) {
		p = &t->parts[i];
		printf("%6u %12" PRIu64 " %12" PRIu64 " %14" PRIu64 " %14" PRIu64
		       "  %-20s ", p->number, p->start, p->size, p->start_bytes,
		       p->size_bytes, p->extended ? "extended" :
		       p->type_name[0] ? p->type_name : p->type);
		for (j = 0; p->name[j]; j++)	/* a name may hold anything */
			putchar((unsigned char)p->name[j] < 0x20 ||
				p->name[j] == 0x7f ? '?' : p->name[j]);
		putchar('\n');
	}
}

/* loopfd partitions [--json] [-b N] IMAGE */
static int cmd_partitions(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json",		no_argument,		NULL, OPT_JSON },
		{ "sector-size",	required_argument,	NULL, 'b' },
		{ "help",		no_argument,		NULL, 'h' },
		{ NULL,			0,			NULL, 0 },
	};
	static char prog[] = "loopfd";
	struct loopfd_partition_table t;
	struct loopfd_error err;
	uint32_t ss = 0;
	int c, json = 0, fd, rc;

	argv[0] = prog;
	while ((c = getopt_long(argc, argv, "+b:h", opts, NULL)) != -1) {
		if (c == OPT_JSON)
			json = 1;
		else if (c == 'b')
			ss = parse_u32("--sector-size", optarg);
		else if (c == 'h')
			return print_help();
		else
			usage_error("invalid command line (loopfd partitions "
				    "[--json] [-b N] IMAGE)");
	}
	if (optind + 1 != argc)
		usage_error("partitions takes one IMAGE");
	fd = open(argv[optind], O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		fprintf(stderr, "loopfd: %s: cannot open for reading: %s\n",
			argv[optind], strerror(errno));
		return 1;
	}
	rc = loopfd_partitions_read(fd, ss, &t, &err);
	close(fd);
	if (rc < 0) {
		fprintf(stderr, "loopfd: %s: %s\n", argv[optind], loopfd_strerror(&err));
		return 1;
	}
	if (json)
		loopfd_partitions_json(stdout, &t, argv[optind]);
	else
		print_table(argv[optind], &t);
	loopfd_partitions_free(&t);
	return flush_stdout();
}

/* ---- main ------------------------------------------------------------------- */

/* Everything from opening the images to the last release; returns the
 * exit status. */
static int run_with_images(struct image **imgsp, size_t *np, char **cmd,
			   struct options *o, struct loopfd_partition_table *t)
{
	struct loopfd_session *s;
	struct loopfd_error err;
	struct image *imgs;
	size_t n;
	int status, failed;

	if (open_images(*imgsp, *np, o) < 0)
		return 1;
	if ((o->partitions || o->nsel) && expand_partitions(imgsp, np, o, t) < 0)
		return 1;
	imgs = *imgsp;
	n = *np;
	if (loopfd_connect(&s, o->socket_path, &err) < 0) {
		fprintf(stderr, "loopfd: %s\n", loopfd_strerror(&err));
		return 1;
	}
	if (o->verbose)
		print_session(s);
	if (check_timeout(s, o) < 0) {
		loopfd_close(s);
		return 2;
	}
	if (attach_all(s, imgs, n, o) < 0 || export_env(imgs, n) < 0 ||
	    export_partition_env(imgs, n) < 0) {
		close_images(imgs, n);
		release_all(s, imgs, n, o);
		return 1;
	}
	status = run_command(cmd, imgs, n);
	failed = release_all(s, imgs, n, o);
	return failed > 0 && status == 0 ? 1 : status;
}

static int cmd_run(int argc, char **argv)
{
	struct loopfd_partition_table t = { 0 };
	struct options o;
	struct image *imgs;
	char **cmd;
	size_t n, i;
	int status;

	split_operands(argc, argv, parse_options(argc, argv, &o), &imgs, &n, &cmd);
	check_partition_options(&o, n);
	status = run_with_images(&imgs, &n, cmd, &o, &t);
	close_images(imgs, n);
	for (i = 0; i < n; i++)
		free(imgs[i].owned_path);
	free(imgs);
	free(o.selectors);
	loopfd_partitions_free(&t);
	return status;
}

int main(int argc, char **argv)
{
	/* An inherited SIG_IGN would have children reaped behind our back:
	 * no exit status for COMMAND, none for a spawned helper. */
	signal(SIGCHLD, SIG_DFL);
	if (argc < 2)
		usage_error("no command given (loopfd run ... -- COMMAND)");
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
		return print_help();
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0)
		return print_version();
	if (strcmp(argv[1], "partitions") == 0)
		return cmd_partitions(argc - 1, argv + 1);
	if (strcmp(argv[1], "run") != 0)
		usage_error("unknown command '%s' (the commands are 'run' and "
			    "'partitions')", argv[1]);
	return cmd_run(argc - 1, argv + 1);
}
