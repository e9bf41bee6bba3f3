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
#include "cli.h"
#include "loopfd_proto.h"
#include "paths.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

enum {
	OPT_SIZELIMIT = 0x100,
	OPT_DIRECT_IO,
	OPT_LOCK,
	OPT_GRANT,
	OPT_TIMEOUT,
	OPT_SOCKET,
	OPT_JSON,
	OPT_PARTITIONS,
	OPT_PARTITION,
};

void usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("loopfd: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'loopfd --help' for more information.\n", stderr);
	exit(EXIT_LOOPFD_SETUP);
}

/* --help > /dev/full must not succeed silently. */
int flush_stdout(void)
{
	if (fflush(stdout) == 0 && !ferror(stdout))
		return 0;
	perror("loopfd: writing to standard output");
	return 1;
}

int print_help(void)
{
	printf(
"loopfd - loop devices for unprivileged users, released without losing data\n"
"\n"
"SYNOPSIS\n"
"  loopfd run [OPTION...] IMAGE [IMAGE-OPTION...] [IMAGE...] -- COMMAND [ARG...]\n"
"  loopfd attach [OPTION...] IMAGE [IMAGE-OPTION...] [IMAGE...]\n"
"  loopfd exec NAME [NAME...] -- COMMAND [ARG...]\n"
"  loopfd list [--json]\n"
"  loopfd detach [--timeout S] [--json] [-v] NAME... | --all\n"
"  loopfd partitions [--json] [-b BYTES] IMAGE\n"
"  loopfd --help | --version\n"
"\n"
"DESCRIPTION\n"
"  loopfd opens each IMAGE itself, as you (read-write, or read-only with -r;\n"
"  it never creates a file), and hands the open file to loopfd-helper, which\n"
"  attaches a loop device to it and hands back an open device. Releasing a\n"
"  device has the helper wait for other openers, flush what was written\n"
"  through the device into IMAGE and confirm the detach; a release that\n"
"  cannot confirm both is reported, never passed off as success.\n"
"\n"
"  run     attaches a device to each IMAGE, runs COMMAND with them and\n"
"          releases them when COMMAND exits.\n"
"  attach  attaches a device to each IMAGE, prints its name (loopN), one per\n"
"          line, and returns at once; the device stays attached, held by a\n"
"          process of yours, until detach (see HELD DEVICES).\n"
"  exec    runs COMMAND with held devices, named as attach printed them\n"
"          (loop7 or /dev/loop7), as run would; they stay attached after.\n"
"  list    lists your held devices.\n"
"  detach  releases held devices (--all: every one) as run does at its end.\n"
"  partitions  prints IMAGE's partition table as loopfd reads it (see\n"
"          PARTITIONS); it attaches nothing.\n"
"\n"
"WHAT COMMAND GETS\n"
"  The devices on fds 3, 4, ... (one per IMAGE or NAME, in order), open\n"
"  read-write (read-only with -r), and in its environment:\n"
"    LOOPFD_DEVICE   /dev/fd/3, the first device as a path\n"
"    LOOPFD_NAME     loopN, the first device's name\n"
"    LOOPFD_PATH     /dev/loopN, the first device's node\n"
"    LOOPFD_DEVICES  \"/dev/fd/3 /dev/fd/4 ...\", every device\n"
"    LOOPFD_NAMES    \"loopN loopM ...\", in the same order\n"
"  Run inside another loopfd's COMMAND (LOOPFD_DEVICES names fds that are\n"
"  still open), loopfd keeps the outer devices where they are, puts its own\n"
"  on the fds after them and appends to LOOPFD_DEVICES and LOOPFD_NAMES;\n"
"  LOOPFD_DEVICE, LOOPFD_NAME and LOOPFD_PATH then name its first device.\n"
"  Writing to the fd needs nothing more. A tool that opens a path instead\n"
"  (mkfs, sfdisk, mcopy -i) cannot open a root-owned node: give it\n"
"  /dev/fd/3 together with --grant, or $LOOPFD_PATH with --grant. Inside a\n"
"  sandbox whose /dev has no loopN node, /dev/fd/N is the path to use.\n"
"  COMMAND is looked up in PATH and started as execvp(3) does (a file\n"
"  without a #! line runs with /bin/sh). loopfd's connection to the helper\n"
"  and the IMAGE fds are not passed on. SIGINT, SIGTERM, SIGHUP and SIGQUIT\n"
"  sent to loopfd go on to COMMAND.\n"
"\n"
"IMAGE OPTIONS\n"
"  Options before the first IMAGE apply to every IMAGE; options right after\n"
"  an IMAGE apply to that IMAGE alone:\n"
"    loopfd run -r a.img b.img -o 1M --sizelimit 4M -- COMMAND\n"
"  attaches both read-only, and b.img's device 4 MiB long from 1 MiB on.\n"
"  -r, --read-only          open IMAGE read-only and attach it read-only\n"
"  -o, --offset BYTES       the device starts BYTES into IMAGE\n"
"      --sizelimit BYTES    the device is at most BYTES long (default: to EOF)\n"
"  -b, --sector-size BYTES  logical sector size: 512, 1024, 2048 or 4096\n"
"      --direct-io          the device reads and writes IMAGE with O_DIRECT\n"
"  -P, --partscan           have the kernel scan the partition table (a kernel\n"
"                           without partition parsers makes no loopNpM: loopfd\n"
"                           warns and points to --partitions)\n"
"      --lock               flock(LOCK_EX) the device, so udev leaves it\n"
"                           alone while COMMAND keeps fd 3 open (attach: for\n"
"                           as long as it is held)\n"
"      --grant              make /dev/loopN yours while attached (attach:\n"
"                           until detach), for tools that open a path\n"
"      --partitions         (run) IMAGE's partition table is read by loopfd and\n"
"                           each partition is attached as a device of its own,\n"
"                           after IMAGE's: in table order (MBR extended\n"
"                           containers excepted)\n"
"      --partition SEL      (run) attach only the partition SEL names instead\n"
"                           of IMAGE, in the order given (repeatable); see\n"
"                           PARTITIONS\n"
"  BYTES, as losetup takes them: 1048576 or 0x100000, optionally followed by\n"
"  a unit: K, M, G, T, P, E or KiB, MiB, ... (powers of 1024; the letter in\n"
"  either case), or KB, MB, ... (powers of 1000). 1M, 1MiB and 0x100000 are\n"
"  the same; 1MB is 1000000. -b 4k is 4096.\n"
"\n"
"COMMAND OPTIONS (run and attach; before the first IMAGE)\n"
"      --release-timeout S  wait up to S seconds (decimals allowed) for other\n"
"                           openers when releasing (default 10; one wait for\n"
"                           all of run's devices, released together)\n"
"      --socket PATH        use the helper daemon `loopfd-helper --listen\n"
"                           PATH` instead of starting the setuid helper\n"
"  -v, --verbose            report the helper, each device attached and\n"
"                           each release\n"
"      --json               with -v: the attach and release outcomes as JSON\n"
"                           lines on standard error (see JSON)\n"
"  -h, --help               show this help and exit\n"
"  -V, --version            show the version and exit\n"
"\n"
"PARTITIONS\n"
"  With --partitions or --partition, loopfd reads IMAGE's partition table\n"
"  itself (GPT or MBR with logical partitions, through libblkid) and asks\n"
"  the helper for one device per partition: a window of offset and size on\n"
"  the same open IMAGE, so no kernel partition parser is needed and no\n"
"  loopNpM node, and --grant covers each partition's own /dev/loopN. The\n"
"  sector size is -b if given, else 4096 if a GPT header sits at byte 4096,\n"
"  else 512; every device of IMAGE gets it. A table loopfd cannot trust is\n"
"  refused with the partition and the numbers: a damaged primary GPT (even\n"
"  with a good backup), entries outside the GPT's usable area, overlapping\n"
"  partitions, partitions or a table past the end of IMAGE. -o and\n"
"  --sizelimit do not go with these options, only one IMAGE may have them,\n"
"  and loopfd attach does not take them. Do not write the same bytes\n"
"  through the whole disk and a partition device: each device has a page\n"
"  cache of its own.\n"
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
"  and extended. -b BYTES reads it with BYTES-byte sectors.\n"
"\n"
"HELD DEVICES\n"
"  attach starts a holder: a process of yours, without a terminal (its own\n"
"  session, standard input, output and error on /dev/null, directory /),\n"
"  that opens a helper session exactly as run does, attaches one device,\n"
"  keeps the session and the device open, and serves exec, list and detach\n"
"  on a Unix socket. One holder per device. A held device counts against\n"
"  the policy's limits like any other. detach has the holder release the\n"
"  device (flush, confirm the detach) and exit; a holder that dies in any\n"
"  way (kill -9 too) ends its session, and the helper then flushes and\n"
"  detaches the device on its own, as for a run that is killed. SIGTERM,\n"
"  SIGINT or SIGHUP to a holder detach its device.\n"
"  The sockets live in the first of: $XDG_RUNTIME_DIR/loopfd, if\n"
"  XDG_RUNTIME_DIR is set and is a directory of yours that only you can\n"
"  enter; /run/user/UID/loopfd, on the same condition (so a bare `env -i`\n"
"  step finds what a login shell attached); /tmp/loopfd-UID. loopfd creates\n"
"  that directory with mode 0700 and refuses one that is a symbolic link,\n"
"  not yours, or open to others (one another user created first), saying\n"
"  so. Only your uid is served: the holder checks every client's uid, and\n"
"  every client checks the holder's, with SO_PEERCRED.\n"
"  detach options:\n"
"      --timeout S          wait up to S seconds for other openers (default 10)\n"
"      --all                every held device\n"
"      --json               print each release's receipt as a JSON line\n"
"  -v, --verbose            report each release\n"
"  list prints NAME, BACKING (st_dev major:minor:inode of IMAGE), SINCE (UTC),\n"
"  PID (the holder), STATE (attached), OPTIONS and IMAGE.\n"
"\n"
"JSON\n"
"  Field names are stable. list --json prints an array of objects; run -v\n"
"  --json prints one object per line with \"event\": \"attach\" or \"release\";\n"
"  detach --json prints a release object per device. Every object has:\n"
"    name, device (/dev/loopN), image (path), backing_dev (\"major:minor\" of\n"
"    IMAGE's filesystem), backing_ino, major, minor, diskseq (the kernel's\n"
"    disk sequence number of this attachment), size, offset, sizelimit,\n"
"    sector_size (numbers, bytes), read_only, partscan, direct_io, granted\n"
"    (true or false)\n"
"  list adds: locked (bool), since (UTC, ISO 8601), since_epoch (seconds),\n"
"    holder_pid, state (\"attached\": a holder that is releasing its device\n"
"    no longer answers)\n"
"  A release (the receipt) adds: outcome (\"released\", \"busy\", \"data-lost\",\n"
"    \"device-changed\" or \"failed\"), ok (bool), flushed (everything written\n"
"    before the release is in IMAGE), detached (the device no longer\n"
"    references IMAGE): true, false, or null where the outcome leaves it\n"
"    unknown; busy, data_lost (bool), waited_ms (the wait for other openers,\n"
"    null after a failure), error (the helper's words, or null)\n"
"\n"
"EXIT STATUS\n"
"  run and exec: COMMAND's exit status, or 128+N if signal N killed it,\n"
"  when every release succeeded. Statuses of loopfd itself:\n"
"    125  loopfd failed before COMMAND ran: usage, an IMAGE, the helper, the\n"
"         policy, the attach (nothing is left attached)\n"
"    124  a release failed: data written through the device may not all be\n"
"         in IMAGE (the filesystem holding IMAGE is named if it is full)\n"
"    123  a release found the device still open elsewhere after the timeout:\n"
"         everything written before the release is in IMAGE; the device\n"
"         detaches when the last opener closes it (the openers loopfd can\n"
"         see are named)\n"
"    126  COMMAND could not be executed; 127 COMMAND was not found\n"
"  attach, list, partitions: 0, or 125. detach: 0 when every device was released, else\n"
"  the worst of 124, 123, 125 (a NAME not held).\n"
"\n"
"ENVIRONMENT\n"
"  LOOPFD_SOCKET    the helper daemon's socket, when --socket is not given\n"
"  LOOPFD_HELPER    the helper to start instead of the installed one; ignored\n"
"                   for root and in setuid programs\n"
"  XDG_RUNTIME_DIR  where held devices' sockets live (see HELD DEVICES)\n"
"  LOOPFD_DEVICES   (inherited) devices of an outer loopfd, kept (see above)\n"
"\n"
"EXAMPLES\n"
"  loopfd run --grant disk.img -- mkfs.fat /dev/fd/3\n"
"  loopfd run disk.img -- sh -c 'cat data >&3'\n"
"  loopfd run -r -o 1MiB --sizelimit 16MiB disk.img -- sh -c 'od -N 512 <&3'\n"
"  loopfd run --grant --partition esp --partition root disk.img -- \\\n"
"      sh -c 'mkfs.vfat $LOOPFD_PART_ESP && mkfs.ext4 -d rootfs $LOOPFD_PART_ROOT'\n"
"  loopfd partitions --json disk.img\n"
"  # a device across the steps of a CI job:\n"
"  dev=$(loopfd attach --grant disk.img)\n"
"  loopfd exec \"$dev\" -- mkfs.ext4 -q /dev/fd/3\n"
"  loopfd exec \"$dev\" -- sh -c 'debugfs -w -R \"write data data\" \"$LOOPFD_PATH\"'\n"
"  loopfd detach \"$dev\"\n"
"  # bubblewrap sets no_new_privs, which disarms the setuid helper: start a\n"
"  # helper daemon outside, as root, and use its socket inside:\n"
"  #   %1$s --listen /run/loopfd-ci.sock &\n"
"  bwrap --ro-bind / / --dev /dev --bind \"$PWD\" \"$PWD\" -- \\\n"
"      loopfd run --socket /run/loopfd-ci.sock disk.img -- sh -c 'cat data >&3'\n"
"\n"
"FILES\n"
"  %1$s\n"
"      the helper, installed setuid root\n"
"  %2$s\n"
"      the helper's policy: who may attach, limits, allowed options\n"
"  %3$s\n"
"      the helper's run-time state\n",
	       LOOPFD_HELPER_PATH, LOOPFD_CONFIG_PATH, LOOPFD_RUNDIR);
	return flush_stdout();
}

/* exec, list, detach: --help or -h before any "--" */
void help_if_asked(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			exit(print_help());
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

/* K, M, G, T, P, E: the power of 1024 (KiB or K) or 1000 (KB). */
static int size_unit(const char *suffix, uint64_t *unit)
{
	static const char letters[] = "KMGTPE";
	const char *l;
	uint64_t base = 1024;
	int i;

	*unit = 1;
	if (suffix[0] == '\0')
		return 0;
	if (suffix[0] == 'b' || suffix[0] == 'B')
		return suffix[1] == '\0' ? 0 : -1;
	l = strchr(letters, toupper((unsigned char)suffix[0]));
	if (l == NULL)
		return -1;
	if (strcmp(suffix + 1, "B") == 0)
		base = 1000;
	else if (strcmp(suffix + 1, "iB") != 0 && suffix[1] != '\0')
		return -1;
	for (i = 0; i <= l - letters; i++)
		*unit *= base;
	return 0;
}

/* Bytes in losetup's forms: 1048576, 0x100000, 1M, 1MiB (2^20), 1MB (10^6),
 * K/M/G/T/P/E in either case; 512B. */
static uint64_t parse_bytes(const char *opt, const char *arg)
{
	const char *end;
	char *e;
	uint64_t v, unit;

	if ((arg[0] == '0') && (arg[1] == 'x' || arg[1] == 'X')) {
		errno = 0;
		v = strtoull(arg + 2, &e, 16);
		if (errno != 0 || e == arg + 2 || arg[2] == '-' || arg[2] == '+' ||
		    arg[2] == ' ')
			goto bad;
		end = e;
	} else if (parse_digits(arg, &v, &end) < 0) {
		goto bad;
	}
	if (size_unit(end, &unit) < 0)
		goto bad;
	if (v > UINT64_MAX / unit)
		usage_error("%s: value '%s' is too large", opt, arg);
	return v * unit;
bad:
	usage_error("%s: invalid value '%s' (expected bytes: 1048576, "
		    "0x100000, 1M, 1MiB or 1MB)", opt, arg);
}

static uint32_t parse_sector_size(const char *opt, const char *arg)
{
	uint64_t v = parse_bytes(opt, arg);

	if (v > UINT32_MAX)
		usage_error("%s: value '%s' is too large", opt, arg);
	return (uint32_t)v;
}

/* "10", "0.5", "2.125": seconds with at most millisecond precision. */
uint32_t parse_seconds(const char *opt, const char *arg)
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
	{ "json",		no_argument,		NULL, OPT_JSON },
	{ "partitions",		no_argument,		NULL, OPT_PARTITIONS },
	{ "partition",		required_argument,	NULL, OPT_PARTITION },
	{ "verbose",		no_argument,		NULL, 'v' },
	{ "help",		no_argument,		NULL, 'h' },
	{ "version",		no_argument,		NULL, 'V' },
	{ NULL,			0,			NULL, 0 },
};

/* An option of one IMAGE into io; 0 if c is not one. */
static int take_image_option(int c, const char *arg, struct image_opts *io)
{
	switch (c) {
	case 'r':		io->attach.flags |= LOOPFD_READ_ONLY; break;
	case 'o':		io->attach.offset = parse_bytes("--offset", arg); break;
	case OPT_SIZELIMIT:	io->attach.sizelimit = parse_bytes("--sizelimit", arg); break;
	case 'b':		io->attach.sector_size = parse_sector_size("--sector-size", arg); break;
	case OPT_DIRECT_IO:	io->attach.flags |= LOOPFD_DIRECT_IO; break;
	case 'P':		io->attach.flags |= LOOPFD_PARTSCAN; break;
	case OPT_LOCK:		io->lock = 1; break;
	case OPT_GRANT:		io->attach.flags |= LOOPFD_GRANT; break;
	case OPT_PARTITIONS:	io->partitions = 1; break;
	case OPT_PARTITION:
		if (io->nsel == MAX_SELECTORS)
			usage_error("--partition %s: at most %d partitions can be "
				    "selected (--partitions attaches every one)",
				    arg, MAX_SELECTORS);
		io->sel[io->nsel++] = arg;
		break;
	default:		return 0;
	}
	return 1;
}

/* One option of the whole command into o; -h and -V end the program here. */
static void take_option(int c, const char *arg, struct options *o)
{
	if (take_image_option(c, arg, &o->img))
		return;
	switch (c) {
	case OPT_TIMEOUT:
		o->timeout_ms = parse_seconds("--release-timeout", arg);
		o->timeout_arg = arg;
		break;
	case OPT_SOCKET:	o->socket_path = arg; break;
	case OPT_JSON:		o->json = 1; break;
	case 'v':		o->verbose = 1; break;
	case 'h':		exit(print_help());
	case 'V':		exit(print_version());
	default:		usage_error("invalid command line");
	}
}

static const char short_options[] = "+rPo:b:vhV";

static const char *option_name(int c)
{
	const struct option *opt;

	for (opt = long_options; opt->name; opt++)
		if (opt->val == c)
			return opt->name;
	return "?";
}

/*
 * getopt over argv[first..end): '+' stops at the first operand, so nothing
 * after it (COMMAND's own options above all) is taken for one of ours.
 * Returns the index of that operand.  argv[first - 1] stands in for the
 * program name getopt puts in its messages.
 */
static int getopt_span(char **argv, int first, int end, struct options *o,
		       struct image *img)
{
	static char prog[] = "loopfd";
	char **v = argv + first - 1;
	char *saved = v[0];
	int c;

	v[0] = prog;
	optind = 0;		/* glibc: start afresh, at v[1] */
	while ((c = getopt_long(end - first + 1, v, short_options,
				long_options, NULL)) != -1) {
		if (c == '?') {
			/* getopt has said what was wrong */
			fputs("Try 'loopfd --help' for more information.\n", stderr);
			exit(EXIT_LOOPFD_SETUP);
		}
		if (img == NULL)
			take_option(c, optarg, o);
		else if (!take_image_option(c, optarg, &img->opts))
			usage_error("option '--%s' applies to the whole command: "
				    "put it before the first IMAGE", option_name(c));
	}
	v[0] = saved;
	return first + optind - 1;
}

static int find_dashes(int argc, char **argv, int first)
{
	int i;

	for (i = first; i < argc; i++)
		if (strcmp(argv[i], "--") == 0)
			return i;
	return -1;
}

/*
 * [OPTION...] IMAGE [OPTION...] [IMAGE [OPTION...]...] [-- COMMAND [ARG...]]
 * from argv[1...] (argv[0] is the subcommand).  Options before the first
 * IMAGE apply to every IMAGE; options right after an IMAGE to that one
 * only.  cmd NULL: no COMMAND is expected (attach).  Exits on a usage error.
 */
void parse_command_line(int argc, char **argv, struct options *o,
			struct image **imgs, size_t *n, char ***cmd)
{
	int dashes = find_dashes(argc, argv, 1), end, i;

	memset(o, 0, sizeof(*o));
	o->timeout_ms = DEFAULT_TIMEOUT_MS;
	if (cmd && dashes < 0)
		usage_error("missing '--' and COMMAND after the images "
			    "(loopfd %s [OPTION...] IMAGE... -- COMMAND [ARG...])",
			    argv[0]);
	if (!cmd && dashes >= 0)
		usage_error("'%s' takes no COMMAND", argv[0]);
	end = dashes < 0 ? argc : dashes;
	if (cmd && dashes + 1 >= argc)
		usage_error("no COMMAND after '--'");
	*imgs = calloc((size_t)argc, sizeof(**imgs));
	if (!*imgs) {
		perror("loopfd");
		exit(EXIT_LOOPFD_SETUP);
	}
	*n = 0;
	for (i = getopt_span(argv, 1, end, o, NULL); i < end;) {
		struct image *img = &(*imgs)[(*n)++];

		img->path = argv[i];
		img->opts = o->img;
		img->fd = -1;
		img->dev.fd = -1;
		i = getopt_span(argv, i + 1, end, o, img);
	}
	if (*n == 0)
		usage_error("no IMAGE given");
	if (cmd)
		*cmd = &argv[dashes + 1];
}

/* ---- images and devices ---------------------------------------------------- */

/*
 * What the helper would refuse with a bare "bad option", said here with the
 * numbers: the offset and sizelimit against the image's size and the
 * sector size.  A block device (size 0 in stat) is left to the helper.
 */
static int check_geometry(const struct image *img)
{
	const struct loopfd_attach_opts *a = &img->opts.attach;
	uint64_t sector = a->sector_size ? a->sector_size : 512;
	struct stat st;

	if (a->offset % sector != 0 || a->sizelimit % sector != 0) {
		fprintf(stderr, "loopfd: %s: %s %" PRIu64 " is not a multiple of "
			"the sector size %" PRIu64 "\n", img->path,
			a->offset % sector ? "offset" : "sizelimit",
			a->offset % sector ? a->offset : a->sizelimit, sector);
		return -1;
	}
	if (fstat(img->fd, &st) < 0 || !S_ISREG(st.st_mode))
		return 0;
	if (a->offset >= (uint64_t)st.st_size) {
		fprintf(stderr, "loopfd: offset %" PRIu64 " is beyond the end of "
			"%s (%jd bytes)\n", a->offset, img->path,
			(intmax_t)st.st_size);
		return -1;
	}
	if (a->sizelimit > (uint64_t)st.st_size - a->offset) {
		fprintf(stderr, "loopfd: offset %" PRIu64 " + sizelimit %" PRIu64
			" is beyond the end of %s (%jd bytes)\n", a->offset,
			a->sizelimit, img->path, (intmax_t)st.st_size);
		return -1;
	}
	return 0;
}

int open_image(struct image *img)
{
	int read_only = img->opts.attach.flags & LOOPFD_READ_ONLY;
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
	return check_geometry(img);
}

static int open_images(struct image *imgs, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (open_image(&imgs[i]) < 0)
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

static void print_device(const struct image *img, const struct options *o)
{
	char flags[96];

	if (o->json) {
		json_device(stderr, "attach", img->path, &img->dev);
		return;
	}
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

/*
 * The library's message without its "attach: helper refused: " (the
 * helper's own words are plain already); what is what: "IMAGE: text".
 */
void error_text(char *buf, size_t cap, const char *what,
		const struct loopfd_error *err)
{
	const char *msg = loopfd_strerror(err), *p;

	if (err->reason != 0 && (p = strstr(msg, ": helper refused: ")) != NULL)
		msg = p + strlen(": helper refused: ");
	if (what)
		snprintf(buf, cap, "%s: %s", what, msg);
	else
		snprintf(buf, cap, "%s", msg);
}

void print_error(const char *what, const struct loopfd_error *err)
{
	char text[768];

	error_text(text, sizeof(text), what, err);
	fprintf(stderr, "loopfd: %s\n", text);
}

static void warn_partscan(const struct image *img);

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
		opts[i] = imgs[i].opts.attach;
	}
	if (loopfd_attach_batch(s, fds, opts, n, devs, &failed, &err) < 0) {
		print_error(failed < n ? imgs[failed].path : NULL, &err);
		return -1;
	}
	for (i = 0; i < n; i++) {
		imgs[i].dev = devs[i];
		imgs[i].attached = 1;
	}
	for (i = 0; i < n; i++) {
		if (imgs[i].opts.attach.flags & LOOPFD_PARTSCAN)
			warn_partscan(&imgs[i]);
		/* The device holds its own reference to the file from here on. */
		close(imgs[i].fd);
		imgs[i].fd = -1;
		if (imgs[i].opts.lock && lock_device(&imgs[i]) < 0)
			return -1;
		if (o->verbose)
			print_device(&imgs[i], o);
	}
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

/*
 * COMMAND failed, no device was granted, the policy allows --grant, and
 * COMMAND was handed a device path: a path tool cannot reopen a root-owned
 * node (EACCES).  loopfd cannot see why COMMAND failed, so it says what
 * may have happened, not what did.
 */
void hint_grant(char **cmd, int status, int granted, int allowed, int held)
{
	size_t i;
	int path = 0;

	if (status == 0 || status >= 126 || granted || !allowed)
		return;
	for (i = 0; cmd[i] && !path; i++)
		path = strstr(cmd[i], "/dev/fd/") || strstr(cmd[i], "/dev/loop") ||
		       strstr(cmd[i], "LOOPFD_DEVICE") || strstr(cmd[i], "LOOPFD_PATH");
	if (path)
		fprintf(stderr, "loopfd: %s exited with status %d; if it could not "
			"open the device by path (Permission denied on /dev/fd/N "
			"or /dev/loopN), %s makes the node yours while "
			"attached; writing to the fd itself never needs it\n",
			cmd[0], status, held ? "attaching with 'loopfd attach "
			"--grant' (exec takes no --grant)" : "--grant");
}

/* ---- release ---------------------------------------------------------------- */

/* One image's release outcome, reported as if it had been released alone;
 * 0 or its exit status. */
static int release_report(const struct image *img, const struct options *o,
			  const struct loopfd_error *err, uint32_t waited)
{
	int ok = err->err == 0;

	if (o->verbose && o->json)
		json_receipt(stderr, img->path, &img->dev, ok, err, waited);
	if (!ok) {
		fprintf(stderr, "loopfd: release of %s (image %s) failed: %s\n",
			img->dev.path, img->path, release_text(err));
		if (err->reason == LFD_R_BUSY)
			report_busy_openers(&img->dev);
		if (err->reason == LFD_R_DATA_LOST)
			report_full_filesystem(img->path);
		return release_exit_status(err);
	}
	if (o->verbose && !o->json)
		fprintf(stderr, "loopfd: released %s (image %s), waited %u ms\n",
			img->dev.path, img->path, (unsigned)waited);
	return 0;
}

/* The worse of two exit statuses: data before busy. */
static int worse(int worst, int rc)
{
	return rc == EXIT_LOOPFD_DATA || (rc != 0 && worst == 0) ? rc : worst;
}

/* One release request for up to LOOPFD_BATCH_MAX images (the attached
 * ones among imgs[0..n)); returns 0 or the worst exit status. */
static int release_batch(struct loopfd_session *s, const struct image *imgs,
			 size_t n, const struct options *o)
{
	struct loopfd_release_result res[LOOPFD_BATCH_MAX];
	const struct image *which[LOOPFD_BATCH_MAX];
	uint32_t ids[LOOPFD_BATCH_MAX];
	struct loopfd_error err;
	size_t i, k = 0;
	int worst = 0;

	for (i = 0; i < n; i++)
		if (imgs[i].attached) {
			which[k] = &imgs[i];
			ids[k++] = imgs[i].dev.id;
		}
	if (k == 0)
		return 0;
	/* Its result is in each image's outcome. */
	(void)loopfd_release_batch(s, ids, k, o->timeout_ms, res, &err);
	for (i = 0; i < k; i++)
		worst = worse(worst, release_report(which[i], o, &res[i].error,
						    res[i].waited_ms));
	return worst;
}

/* Release every attached device and end the session; returns 0 or the
 * exit status of the worst failure (data before busy). */
static int release_all(struct loopfd_session *s, struct image *imgs,
		       size_t n, const struct options *o)
{
	int worst = 0;
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
		worst = worse(worst, release_batch(s, &imgs[i], k, o));
	}
	loopfd_close(s);
	return worst;
}

/* ---- partitions ------------------------------------------------------------ */

/*
 * --partitions and --partition: on one IMAGE at most (its partitions' numbers
 * name the LOOPFD_PART_* variables), whose table decides the windows:
 * offsets of one's own would contradict it.  Returns that IMAGE's index, or
 * n when none has them.
 */
static size_t check_partition_options(const struct image *imgs, size_t n)
{
	size_t i, which = n;

	for (i = 0; i < n; i++) {
		const struct image_opts *io = &imgs[i].opts;
		const char *s = io->partitions ? "s" : "";

		if (!io->partitions && !io->nsel)
			continue;
		if (which < n)
			usage_error("--partition%s: on one IMAGE only (%s and %s "
				    "have partition options)", s,
				    imgs[which].path, imgs[i].path);
		which = i;
		if (io->partitions && io->nsel)
			usage_error("--partitions attaches every partition: it "
				    "does not go with --partition");
		if (io->attach.offset || io->attach.sizelimit)
			usage_error("--partition%s: offset and size come from the "
				    "partition table, not -o/--sizelimit", s);
	}
	return which;
}

/* Entry e: partition t->parts[i] of whole, on its own copy of whole's fd,
 * with whole's options and the partition's window. */
static int set_partition_entry(struct image *e, const struct image *whole,
			       const struct loopfd_partition_table *t, size_t i)
{
	const struct loopfd_partition *p = &t->parts[i];

	e->opts = whole->opts;
	e->opts.attach.offset = p->start_bytes;
	e->opts.attach.sizelimit = p->size_bytes;
	e->opts.attach.sector_size = t->sector_size;
	e->dev.fd = -1;
	e->table = t;
	e->part = i;
	if (p->extended) {
		fprintf(stderr, "loopfd: %s: attach partition %u: an MBR extended "
			"partition holds only the logical ones (5 and up); attach "
			"those\n", whole->path, p->number);
		return -1;
	}
	e->fd = fcntl(whole->fd, F_DUPFD_CLOEXEC, 0);
	if (e->fd < 0 ||
	    asprintf(&e->owned_path, "%s partition %u", whole->path,
		     p->number) < 0) {
		e->owned_path = NULL;
		perror("loopfd");
		return -1;
	}
	e->path = e->owned_path;
	return 0;
}

/* The partitions to attach, as indexes into t->parts, into idx (*k of
 * them): every one but MBR extended containers, or the selected ones. */
static int pick_partitions(const struct image *whole,
			   const struct loopfd_partition_table *t,
			   size_t *idx, size_t *k)
{
	const struct image_opts *io = &whole->opts;
	struct loopfd_error err;
	size_t i, j;

	*k = 0;
	for (i = 0; io->partitions && i < t->count; i++)
		if (!t->parts[i].extended)
			idx[(*k)++] = i;
	for (i = 0; i < io->nsel; i++) {
		if (loopfd_partition_select(t, io->sel[i], &idx[*k], &err) < 0) {
			print_error(whole->path, &err);
			return -1;
		}
		for (j = 0; j < *k; j++)
			if (idx[j] == idx[*k]) {
				fprintf(stderr, "loopfd: %s: --partition %s: "
					"partition %u is selected twice\n",
					whole->path, io->sel[i],
					t->parts[idx[j]].number);
				return -1;
			}
		(*k)++;
	}
	if (*k == 0)
		fprintf(stderr, "loopfd: %s: the %s partition table has no "
			"partition to attach\n", whole->path, t->label);
	return *k ? 0 : -1;
}

/* Into v from v[at]: the image then every partition (--partitions), or the
 * selected partitions in the order given; *added says how many. */
static int partition_entries(struct image *v, size_t at,
			     const struct image *whole,
			     const struct loopfd_partition_table *t,
			     size_t *added)
{
	size_t *idx = calloc(t->count + MAX_SELECTORS + 1, sizeof(*idx));
	size_t k, i, first = whole->opts.partitions ? 1 : 0;
	int rc = -1;

	*added = 0;
	if (!idx) {
		perror("loopfd");
		return -1;
	}
	if (pick_partitions(whole, t, idx, &k) < 0)
		goto out;
	if (first) {
		v[at] = *whole;
		v[at].opts.attach.sector_size = t->sector_size;
	}
	*added = first;
	for (i = 0; i < k; i++) {
		v[at + first + i].fd = -1;
		(*added)++;
		if (set_partition_entry(&v[at + first + i], whole, t, idx[i]) < 0)
			goto out;
	}
	rc = 0;
out:
	free(idx);
	return rc;
}

/*
 * Read the table of IMAGE imgs[which] and replace it in *imgs by the devices
 * to attach: the whole image then every partition (--partitions), or the
 * selected partitions.  Every device of that IMAGE gets the table's sector
 * size.
 */
static int expand_partitions(struct image **imgs, size_t *n, size_t which,
			     struct loopfd_partition_table *t)
{
	struct image *old = *imgs, *v;
	struct loopfd_error err;
	size_t added = 0, i;

	if (loopfd_partitions_read(old[which].fd, old[which].opts.attach.sector_size,
				   t, &err) < 0) {
		print_error(old[which].path, &err);
		return -1;
	}
	v = calloc(*n + t->count + MAX_SELECTORS + 1, sizeof(*v));
	if (!v) {
		perror("loopfd");
		return -1;
	}
	memcpy(v, old, which * sizeof(*v));
	if (partition_entries(v, which, &old[which], t, &added) < 0) {
		for (i = which; i < which + added; i++) {
			if (v[i].fd >= 0 && v[i].fd != old[which].fd)
				close(v[i].fd);
			free(v[i].owned_path);
		}
		free(v);
		return -1;
	}
	memcpy(v + which + added, old + which + 1,
	       (*n - which - 1) * sizeof(*v));
	if (!old[which].opts.partitions)
		close(old[which].fd);
	free(old);
	*imgs = v;
	*n = *n - 1 + added;
	return 0;
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
			rc = partition_env(&imgs[i], (size_t)command_first_fd() + i, list,
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

/* loopfd partitions [--json] [-b BYTES] IMAGE */
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
			ss = parse_sector_size("--sector-size", optarg);
		else if (c == 'h')
			return print_help();
		else
			usage_error("invalid command line (loopfd partitions "
				    "[--json] [-b BYTES] IMAGE)");
	}
	if (optind + 1 != argc)
		usage_error("partitions takes one IMAGE");
	fd = open(argv[optind], O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		fprintf(stderr, "loopfd: %s: cannot open for reading: %s\n",
			argv[optind], strerror(errno));
		return EXIT_LOOPFD_SETUP;
	}
	rc = loopfd_partitions_read(fd, ss, &t, &err);
	close(fd);
	if (rc < 0) {
		fprintf(stderr, "loopfd: %s: %s\n", argv[optind], loopfd_strerror(&err));
		return EXIT_LOOPFD_SETUP;
	}
	if (json)
		loopfd_partitions_json(stdout, &t, argv[optind]);
	else
		print_table(argv[optind], &t);
	loopfd_partitions_free(&t);
	return flush_stdout() ? EXIT_LOOPFD_SETUP : 0;
}

/* ---- main ------------------------------------------------------------------- */

static int run_command_with(struct loopfd_session *s, struct image *imgs,
			    size_t n, char **cmd)
{
	struct cmd_device *devs = calloc(n ? n : 1, sizeof(*devs));
	size_t i;
	int status;

	if (devs == NULL) {
		perror("loopfd");
		return EXIT_LOOPFD_SETUP;
	}
	for (i = 0; i < n; i++) {
		devs[i].fd = imgs[i].dev.fd;
		devs[i].name = imgs[i].dev.name;
		devs[i].path = imgs[i].dev.path;
	}
	status = command_run(cmd, devs, n);
	free(devs);
	for (i = 0; i < n && !(imgs[i].dev.flags & LOOPFD_GRANT); i++)
		;
	hint_grant(cmd, status, i < n,
		   loopfd_session_info(s)->features & LOOPFD_FEAT_GRANT, 0);
	return status;
}

/* Everything from opening the images to the last release; returns the
 * exit status. */
static int run_with_images(struct image **imgsp, size_t *np, size_t which,
			   char **cmd, struct options *o,
			   struct loopfd_partition_table *t)
{
	struct loopfd_session *s;
	struct loopfd_error err;
	struct image *imgs;
	size_t n;
	int status, failed;

	if (open_images(*imgsp, *np) < 0)
		return EXIT_LOOPFD_SETUP;
	if (which < *np && expand_partitions(imgsp, np, which, t) < 0)
		return EXIT_LOOPFD_SETUP;
	imgs = *imgsp;
	n = *np;
	if (loopfd_connect(&s, o->socket_path, &err) < 0) {
		print_error(NULL, &err);
		return EXIT_LOOPFD_SETUP;
	}
	if (o->verbose && !o->json)
		print_session(s);
	if (check_timeout(s, o) < 0) {
		loopfd_close(s);
		return EXIT_LOOPFD_SETUP;
	}
	if (attach_all(s, imgs, n, o) < 0 || export_partition_env(imgs, n) < 0) {
		close_images(imgs, n);
		release_all(s, imgs, n, o);
		return EXIT_LOOPFD_SETUP;
	}
	status = run_command_with(s, imgs, n, cmd);
	failed = release_all(s, imgs, n, o);
	return failed ? failed : status;
}

static int cmd_run(int argc, char **argv)
{
	struct loopfd_partition_table t = { 0 };
	struct options o;
	struct image *imgs;
	char **cmd;
	size_t n, i, which;
	int status;

	parse_command_line(argc, argv, &o, &imgs, &n, &cmd);
	which = check_partition_options(imgs, n);
	status = run_with_images(&imgs, &n, which, cmd, &o, &t);
	close_images(imgs, n);
	for (i = 0; i < n; i++)
		free(imgs[i].owned_path);
	free(imgs);
	loopfd_partitions_free(&t);
	return status;
}

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
} commands[] = {
	{ "run", cmd_run },
	{ "attach", cmd_attach },
	{ "exec", cmd_exec },
	{ "list", cmd_list },
	{ "detach", cmd_detach },
	{ "partitions", cmd_partitions },
};

int main(int argc, char **argv)
{
	size_t i;

	/* Before anything of ours is open: which fds an outer loopfd left us. */
	command_scan_inherited();
	/* An inherited SIG_IGN would have children reaped behind our back:
	 * no exit status for COMMAND, none for a spawned helper. */
	signal(SIGCHLD, SIG_DFL);
	if (argc < 2)
		usage_error("no command given (run, attach, exec, list, detach, "
			    "partitions)");
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
		return print_help();
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0)
		return print_version();
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].fn(argc - 1, argv + 1);
	usage_error("unknown command '%s' (run, attach, exec, list, detach, "
		    "partitions)", argv[1]);
}
