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
};

struct image {
	const char *path;
	int fd;				/* the opened image, until attached */
	int attached;
	struct loopfd_device dev;
};

enum {
	OPT_SIZELIMIT = 0x100,
	OPT_DIRECT_IO,
	OPT_LOCK,
	OPT_GRANT,
	OPT_TIMEOUT,
	OPT_SOCKET,
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
"  -P, --partscan           have the kernel scan the partition table\n"
"      --lock               flock(LOCK_EX) the device, so udev leaves it alone\n"
"                           while COMMAND keeps fd 3 open\n"
"      --grant              make /dev/loopN yours while attached, so tools that\n"
"                           reopen a path (mkfs, /dev/fd/3) work\n"
"      --release-timeout S  wait up to S seconds (decimals allowed) for other\n"
"                           openers when releasing (default 10)\n"
"      --socket PATH        use the helper daemon `loopfd-helper --listen PATH`\n"
"                           instead of starting the setuid helper\n"
"  -v, --verbose            report each device attached and released\n"
"  -h, --help               show this help and exit\n"
"  -V, --version            show the version and exit\n"
"  BYTES is a plain number, or one ending in KiB, MiB or GiB.\n"
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
	{ "verbose",		no_argument,		NULL, 'v' },
	{ "help",		no_argument,		NULL, 'h' },
	{ "version",		no_argument,		NULL, 'V' },
	{ NULL,			0,			NULL, 0 },
};

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

static int attach_one(struct loopfd_session *s, struct image *img,
		      const struct options *o)
{
	struct loopfd_error err;

	if (loopfd_attach(s, img->fd, &o->attach, &img->dev, &err) < 0) {
		fprintf(stderr, "loopfd: %s: %s\n", img->path,
			loopfd_strerror(&err));
		return -1;
	}
	img->attached = 1;
	/* The device holds its own reference to the file from here on. */
	close(img->fd);
	img->fd = -1;
	if (o->lock && lock_device(img) < 0)
		return -1;
	if (o->verbose)
		print_device(img);
	return 0;
}

static int attach_all(struct loopfd_session *s, struct image *imgs, size_t n,
		      const struct options *o)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (attach_one(s, &imgs[i], o) < 0)
			return -1;
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

static int release_one(struct loopfd_session *s, const struct image *img,
		       const struct options *o)
{
	struct loopfd_error err;
	uint32_t waited = 0;

	if (loopfd_release(s, img->dev.id, o->timeout_ms, &waited, &err) < 0) {
		fprintf(stderr, "loopfd: release of %s (image %s) failed: %s\n",
			img->dev.path, img->path, release_text(&err));
		return -1;
	}
	if (o->verbose)
		fprintf(stderr, "loopfd: released %s (image %s), waited %u ms\n",
			img->dev.path, img->path, (unsigned)waited);
	return 0;
}

/* Release every attached device and end the session; returns how many
 * releases failed. */
static int release_all(struct loopfd_session *s, struct image *imgs,
		       size_t n, const struct options *o)
{
	int failed = 0;
	size_t i;

	/* Our own copies first: while loopfd holds a device open, the helper
	 * counts it as another opener, waits out the timeout and reports the
	 * device busy. */
	for (i = 0; i < n; i++) {
		if (imgs[i].dev.fd >= 0)
			close(imgs[i].dev.fd);
		imgs[i].dev.fd = -1;
	}
	for (i = 0; i < n; i++)
		if (imgs[i].attached && release_one(s, &imgs[i], o) < 0)
			failed++;
	loopfd_close(s);
	return failed;
}

/* ---- main ------------------------------------------------------------------- */

/* Everything from opening the images to the last release; returns the
 * exit status. */
static int run_with_images(struct image *imgs, size_t n, char **cmd,
			   struct options *o)
{
	struct loopfd_session *s;
	struct loopfd_error err;
	int status, failed;

	if (open_images(imgs, n, o) < 0)
		return 1;
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
	if (attach_all(s, imgs, n, o) < 0 || export_env(imgs, n) < 0) {
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
	struct options o;
	struct image *imgs;
	char **cmd;
	size_t n;
	int status;

	split_operands(argc, argv, parse_options(argc, argv, &o), &imgs, &n, &cmd);
	status = run_with_images(imgs, n, cmd, &o);
	close_images(imgs, n);
	free(imgs);
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
	if (strcmp(argv[1], "run") != 0)
		usage_error("unknown command '%s' (the command is 'run')", argv[1]);
	return cmd_run(argc - 1, argv + 1);
}
