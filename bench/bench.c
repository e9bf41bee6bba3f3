/*
 * bench: the measuring half of `make bench` (bench/bench.sh drives it and
 * prints the table).  One program, one subcommand per measurement; every
 * subcommand interleaves its arms inside one process run (the order rotates
 * every iteration) so that a noisy neighbour hits both arms alike, and
 * prints one sample per line, "ARM VALUE", for bench.sh to aggregate with
 * `bench stats`.  Times are CLOCK_MONOTONIC.
 *
 *   bench cycle N RAWIMG RAWXIMG LIBIMG [SOCKIMG SOCKET] [--uid U]
 *	(root) attach + release of one device, per iteration in turn:
 *	raw	in-process root ioctls (GET_FREE, open, LOOP_CONFIGURE with
 *		AUTOCLEAR, fsync, BLKFLSBUF, LOOP_CLR_FD, close)
 *	rawx	raw plus every other kernel call the helper and the library
 *		make for the same work (diagnostic: the helper minus the IPC)
 *	lib	loopfd_attach + close + loopfd_release in a child of uid U
 *		holding a setuid-spawned session
 *	sock	the same through a `loopfd-helper --listen` daemon
 *	Samples in microseconds.
 *   bench session-start N NOOP [SOCKET]
 *	(any uid) spawn: loopfd_connect spawning the setuid helper (to the
 *	hello reply); spawn_close: the loopfd_close after it (waits for the
 *	helper to exit); sock: connect + hello to the daemon; noop:
 *	posix_spawn of the static no-op NOOP + waitpid.  Microseconds.
 *   bench run-cmd N LOOPFD IMG LOSETUP LIMG [--uid U]
 *	(root) loopfd: `LOOPFD run IMG -- true` as uid U, exec to exit;
 *	losetup: `LOSETUP --find --show LIMG` then `LOSETUP --detach DEV`;
 *	true: /usr/bin/true alone as uid U.  Microseconds.
 *   bench concurrent raw|rawx|lib K N IMGPREFIX [--uid U] [--socket P]
 *	(root) K processes, each with its own image IMGPREFIX.<i>, start
 *	together and do N cycles each.  Prints "agg CYCLES_PER_S", "fail N",
 *	"collisions N" (raw: GET_FREE races lost), "release_waits N", ...,
 *	"cpu_us_per_cycle N" (user+sys of the workers and their helpers)
 *   bench write MIB REPS IMG [--uid U] [ARM...]
 *	file: MIB MiB written to IMG with pwrite, then fsync; loop, loop-dio,
 *	loop-dio-odirect: attach IMG through loopfd (with --direct-io for the
 *	last two; the last also sets O_DIRECT on the device fd), write MIB MiB
 *	through the device fd, close it, release; raw-loop, raw-loop-dio (root
 *	only): the same with in-process ioctls, no loopfd.  With --uid (as
 *	root) the loopfd arms run in a child of uid U.  Samples in MiB/s, and
 *	"phase ARM WRITE_US RELEASE_US".
 *   bench rss IMG
 *	(any uid) a setuid session that does some work; prints the helper's
 *	VmHWM and VmRSS (KiB) read from /proc before the session ends.
 *   bench ipc-rtt N
 *	round trips of a 32-byte request and a 16-byte answer between two
 *	processes on a SOCK_SEQPACKET socketpair, every other one passing an
 *	fd each way (a cycle's attach, then its release).  "rtt US" each, and
 *	"cpu_us_per_cycle N": both processes' CPU per pair of round trips.
 *   bench stats [SCALE]
 *	numbers on stdin -> "median p10 p90 n" (each times SCALE).
 */
#include "loopfd.h"
#include "helper.h"	/* quota_take: rawx takes slots as the helper does */

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <signal.h>
#include <stdarg.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef BLKGETDISKSEQ
#define BLKGETDISKSEQ	_IOR(0x12, 128, __u64)
#endif

extern char **environ;

#define CHUNK		(1u << 20)	/* write size for the 256 MiB arms */
#define RAW_TRIES	128		/* GET_FREE collisions tolerated per cycle */
#define RELEASE_POLL_MS	20		/* as the helper's (helper/loopdev.c) */
#define RELEASE_TIMEOUT_MS 10000u

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("bench: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);	/* NOLINT(clang-analyzer-valist.Uninitialized): clang-tidy 14 false positive */
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static long parse_long(const char *s, const char *what)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || end == s || v < 0)
		die("%s: not a number: '%s'", what, s);
	return v;
}

/* Become uid/gid u with no supplementary groups (from root). */
static void drop_to(uid_t u)
{
	if (setgroups(0, NULL) < 0 || setresgid(u, u, u) < 0 ||
	    setresuid(u, u, u) < 0)
		die("dropping to uid %u: %s", (unsigned)u, strerror(errno));
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank-with-interpolation quantile of sorted v[0..n). */
static double quantile(const double *v, size_t n, double q)
{
	double pos = q * (double)(n - 1);
	size_t i = (size_t)pos;
	double frac = pos - (double)i;

	if (i + 1 >= n)
		return v[n - 1];
	return v[i] + (v[i + 1] - v[i]) * frac;
}

/* ---- the raw in-process cycle ---------------------------------------------- */

struct raw_ctx {
	int ctl;
	int img;
	int slots;		/* rawx: a slot file shared by all workers */
	unsigned long collisions;
};

/* rawx's stand-in for $(RUNSTATEDIR)/slots: one file beside the images,
 * opened by each worker for itself, so that their OFD locks contend as
 * the helpers' do. */
static int open_rawx_slots(const char *img)
{
	char path[4096];
	const char *slash = strrchr(img, '/');
	int fd;

	snprintf(path, sizeof(path), "%.*s/rawx.slots",
		 slash ? (int)(slash - img) : 1, slash ? img : ".");
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
	if (fd < 0)
		die("%s: %s", path, strerror(errno));
	return fd;
}

/* The ctx of a raw or (with_slots) a rawx worker. */
static void raw_open(struct raw_ctx *r, const char *img, int with_slots)
{
	memset(r, 0, sizeof(*r));
	r->ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (r->ctl < 0)
		die("/dev/loop-control: %s", strerror(errno));
	r->img = open(img, O_RDWR | O_CLOEXEC);
	if (r->img < 0)
		die("%s: %s", img, strerror(errno));
	r->slots = with_slots ? open_rawx_slots(img) : -1;
}

/* GET_FREE, open, LOOP_CONFIGURE (AUTOCLEAR), fsync, BLKFLSBUF, LOOP_CLR_FD,
 * close: what the helper does, minus its checks and the protocol.  GET_FREE
 * reserves nothing, so a concurrent attacher may take the device first:
 * retry at once on EBUSY (or a node removed under us).  Immediate retries
 * are the fastest policy for an in-process caller (the helper backs off
 * instead; a backing-off baseline measured 10-25% slower at 4+ workers):
 * the baseline is not handicapped. */
static int raw_cycle(struct raw_ctx *r, int flags)
{
	struct loop_config cfg;
	char path[32];
	int n, fd, tries;

	for (tries = 0; tries < RAW_TRIES; tries++) {
		n = ioctl(r->ctl, LOOP_CTL_GET_FREE);
		if (n < 0)
			return -1;
		snprintf(path, sizeof(path), "/dev/loop%d", n);
		fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0) {
			if (errno == ENOENT || errno == ENXIO) {
				r->collisions++;
				continue;
			}
			return -1;
		}
		memset(&cfg, 0, sizeof(cfg));
		cfg.fd = (uint32_t)r->img;
		cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR | (uint32_t)flags;
		if (ioctl(fd, LOOP_CONFIGURE, &cfg) == 0) {
			int rc = 0;

			if (fsync(fd) < 0 || ioctl(fd, BLKFLSBUF, 0) < 0 ||
			    ioctl(fd, LOOP_CLR_FD, 0) < 0)
				rc = -1;
			close(fd);
			return rc;
		}
		close(fd);
		if (errno != EBUSY && errno != EAGAIN)
			return -1;
		r->collisions++;
	}
	errno = EBUSY;
	return -1;
}

/*
 * The raw cycle plus every extra kernel call the helper and the library
 * make for one attach and one release, in their order, in-process: the
 * helper's kernel work without the protocol (helper/serve.c do_attach and
 * do_release, helper/loopdev.c).  The difference to `lib` is then the cost
 * of the two request/reply round trips between two processes.  Unlike the
 * helper, rawx retries a lost GET_FREE race at once, as raw does.
 */
#define RAWX_MAX_PER_USER	128	/* bench.sh's policy */
#define RAWX_MAX_TOTAL		1024

static const unsigned char rawx_held[POLICY_MAX_TOTAL / 8];	/* none */

static int rawx_take_slots(struct raw_ctx *r, int *user, int *global)
{
	*user = quota_take(r->slots, quota_user_base(0), RAWX_MAX_PER_USER, rawx_held);
	if (*user < 0)
		return -1;
	*global = quota_take(r->slots, QUOTA_GLOBAL_BASE, RAWX_MAX_TOTAL, rawx_held);
	if (*global < 0) {
		quota_put(r->slots, quota_user_base(0), *user);
		return -1;
	}
	return 0;
}

/* check_backing on the received backing fd, then bind_free_device. */
static int rawx_bind(struct raw_ctx *r, int backing, char *path, size_t len)
{
	struct loop_info64 info;
	struct loop_config cfg;
	struct statfs sfs;
	struct stat st;
	int n, fd, tries;

	if (fcntl(backing, F_GETFL) < 0 || fstat(backing, &st) < 0 ||
	    fstatfs(backing, &sfs) < 0)
		return -1;
	for (tries = 0; tries < RAW_TRIES; tries++) {
		n = ioctl(r->ctl, LOOP_CTL_GET_FREE);
		if (n < 0)
			return -1;
		snprintf(path, len, "/dev/loop%d", n);
		fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
		if (fd < 0 && errno != ENOENT && errno != ENXIO)
			return -1;
		if (fd < 0) {
			r->collisions++;	/* removed, or being torn down */
			continue;
		}
		/* check_free_node: the node, unbound, without an ACL */
		if (fstat(fd, &st) == 0 &&
		    ioctl(fd, LOOP_GET_STATUS64, &info) < 0 && errno == ENXIO &&
		    (fremovexattr(fd, "system.posix_acl_access") == 0 ||
		     errno == ENODATA || errno == EOPNOTSUPP)) {
			memset(&cfg, 0, sizeof(cfg));
			cfg.fd = (uint32_t)backing;
			cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
			snprintf((char *)cfg.info.lo_file_name, LO_NAME_SIZE, "loopfd");
			if (ioctl(fd, LOOP_CONFIGURE, &cfg) == 0)
				return fd;
		}
		close(fd);
		r->collisions++;
	}
	errno = EBUSY;
	return -1;
}

/* read_identity, open_client_fd and the hand-over of that fd: the helper
 * closes its copy after sending, the library fstats the one it received,
 * and the client closes it. */
static int rawx_client_fd(int fd, const char *path, uint64_t *seq)
{
	struct loop_info64 info;
	struct stat st;
	uint64_t size;
	int cfd, got, rc = 0;

	if (ioctl(fd, LOOP_GET_STATUS64, &info) < 0 ||
	    ioctl(fd, BLKGETDISKSEQ, seq) < 0 || ioctl(fd, BLKGETSIZE64, &size) < 0)
		rc = -1;
	cfd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
	if (cfd < 0)
		return -1;
	if (fstat(cfd, &st) < 0) {
		close(cfd);
		return -1;
	}
	got = fcntl(cfd, F_DUPFD_CLOEXEC, 0);	/* what SCM_RIGHTS installs */
	close(cfd);
	if (got < 0 || fstat(got, &st) < 0)
		rc = -1;
	if (got >= 0)
		close(got);
	return rc;
}

/* After the last close: is the binding with disk sequence seq still there?
 * (Bound again by another worker, with another sequence, is not ours.) */
static int still_bound(int fd, uint64_t seq)
{
	struct loop_info64 info;
	uint64_t now = 0;

	if (ioctl(fd, LOOP_GET_STATUS64, &info) < 0)
		return errno != ENXIO;
	return ioctl(fd, BLKGETDISKSEQ, &now) < 0 || now == seq;
}

/*
 * The helper's wait_detached after the last close: probe, and while the
 * binding is still there (a concurrent attacher's probe held the device,
 * so the detach happens at its close), wait RELEASE_POLL_MS, flush through
 * the probe fd and close it, and probe again, for up to the release
 * timeout the bench gives the helper.  0 once gone.
 */
static int rawx_wait_detached(const char *path, uint64_t seq)
{
	double start = now_us();
	struct stat st;
	int probe;

	for (;;) {
		probe = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
		if (probe < 0 && errno == ENOENT)
			return 0;
		if (probe >= 0 && (fstat(probe, &st) < 0 || !still_bound(probe, seq))) {
			close(probe);
			return 0;
		}
		if (now_us() - start >= RELEASE_TIMEOUT_MS * 1000.0) {
			if (probe >= 0)
				close(probe);
			return -1;
		}
		usleep(RELEASE_POLL_MS * 1000);
		if (probe >= 0) {
			fsync(probe);
			close(probe);
		}
	}
}

/* loop_release: verify_same, fsync, BLKFLSBUF, hand_over_to_autoclear
 * (second fd, LOOP_CLR_FD, close), flush round, last close (the detach),
 * probe_device. */
static int rawx_release(int fd, const char *path, uint64_t seq)
{
	struct loop_info64 info;
	struct stat st;
	uint64_t now;
	int probe, rc = 0;

	if (ioctl(fd, LOOP_GET_STATUS64, &info) < 0 ||
	    ioctl(fd, BLKGETDISKSEQ, &now) < 0 ||
	    fsync(fd) < 0 || ioctl(fd, BLKFLSBUF, 0) < 0)
		rc = -1;
	probe = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
	if (probe < 0 || fstat(probe, &st) < 0 || ioctl(fd, LOOP_CLR_FD, 0) < 0)
		rc = -1;
	close(fd);
	if (probe >= 0 &&
	    sync_file_range(probe, 0, 0, SYNC_FILE_RANGE_WAIT_BEFORE |
			    SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) < 0)
		rc = -1;
	if (probe >= 0)
		close(probe);
	if (rawx_wait_detached(path, seq) < 0)
		rc = -1;
	return rc;
}

static int rawx_cycle(struct raw_ctx *r)
{
	char path[32];
	uint64_t seq = 0;
	int user, global, backing, fd, rc;

	/* do_attach: the backing fd arrives as a new fd (SCM_RIGHTS), slots
	 * first, then loop_attach; the received fd is closed after. */
	backing = fcntl(r->img, F_DUPFD_CLOEXEC, 0);
	if (backing < 0)
		return -1;
	if (rawx_take_slots(r, &user, &global) < 0) {
		close(backing);
		return -1;
	}
	fd = rawx_bind(r, backing, path, sizeof(path));
	rc = fd < 0 ? -1 : rawx_client_fd(fd, path, &seq);
	close(backing);
	if (fd >= 0 && rawx_release(fd, path, seq) < 0)
		rc = -1;
	quota_put(r->slots, quota_user_base(0), user);
	quota_put(r->slots, QUOTA_GLOBAL_BASE, global);
	return rc;
}

/* ---- the library cycle ------------------------------------------------------- */

/* Releases in which the helper had to wait for another opener, and how
 * long in all (ms): a concurrent attacher probing our device holds it open
 * for a moment (GET_FREE reserves nothing). */
static unsigned long release_waits, release_waited_ms;

static int lib_cycle(struct loopfd_session *s, int img, struct loopfd_error *err)
{
	struct loopfd_device dev;
	uint32_t waited = 0;

	if (loopfd_attach(s, img, NULL, &dev, err) < 0)
		return -1;
	close(dev.fd);
	if (loopfd_release(s, dev.id, RELEASE_TIMEOUT_MS, &waited, err) < 0)
		return -1;
	if (waited > 0) {
		release_waits++;
		release_waited_ms += waited;
	}
	return 0;
}

static struct loopfd_session *connect_or_die(const char *sock)
{
	struct loopfd_session *s;
	struct loopfd_error err;

	if (loopfd_connect(&s, sock, &err) < 0)
		die("connect (%s): %s", sock ? sock : "setuid",
		    loopfd_strerror(&err));
	return s;
}

static int open_rw(const char *path)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);

	if (fd < 0)
		die("%s: %s", path, strerror(errno));
	return fd;
}

/*
 * A worker child for `cycle`: uid u, one session (setuid if sock is NULL),
 * then one timed cycle per byte read from cmd, each answered with its
 * duration in microseconds (a double; negative on failure).
 */
struct worker {
	pid_t pid;
	int cmd, res;
};

static void worker_start(struct worker *w, uid_t u, const char *sock,
			 const char *img)
{
	int c[2], r[2];

	if (pipe2(c, O_CLOEXEC) < 0 || pipe2(r, O_CLOEXEC) < 0)
		die("pipe: %s", strerror(errno));
	fflush(NULL);
	w->pid = fork();
	if (w->pid < 0)
		die("fork: %s", strerror(errno));
	if (w->pid == 0) {
		struct loopfd_session *s;
		struct loopfd_error err;
		int fd;
		char b;
		double t;

		close(c[1]);
		close(r[0]);
		if (u != (uid_t)-1)
			drop_to(u);
		fd = open_rw(img);
		s = connect_or_die(sock);
		while (read(c[0], &b, 1) == 1 && b == 'g') {
			t = now_us();
			if (lib_cycle(s, fd, &err) < 0) {
				fprintf(stderr, "bench: %s cycle: %s\n",
					sock ? "sock" : "lib", loopfd_strerror(&err));
				t = -1;
			} else {
				t = now_us() - t;
			}
			if (write(r[1], &t, sizeof(t)) != sizeof(t))
				_exit(1);
		}
		loopfd_close(s);
		_exit(0);
	}
	close(c[0]);
	close(r[1]);
	w->cmd = c[1];
	w->res = r[0];
}

static double worker_cycle(struct worker *w)
{
	double t;

	if (write(w->cmd, "g", 1) != 1 || read(w->res, &t, sizeof(t)) != sizeof(t))
		die("worker %d died", (int)w->pid);
	return t;
}

/* Every worker inherited the parent's ends of the pipes of the workers
 * started before it: close all of them before waiting for any. */
static void workers_stop(struct worker *w, int n)
{
	int i, st;

	for (i = 0; i < n; i++) {
		close(w[i].cmd);
		close(w[i].res);
	}
	for (i = 0; i < n; i++)
		waitpid(w[i].pid, &st, 0);
}

static uid_t parse_uid_opt(int *argc, char **argv)
{
	uid_t u = (uid_t)-1;
	int i, j;

	for (i = 0; i < *argc; i++) {
		if (strcmp(argv[i], "--uid") == 0 && i + 1 < *argc) {
			u = (uid_t)parse_long(argv[i + 1], "--uid");
			for (j = i; j + 2 <= *argc; j++)
				argv[j] = argv[j + 2];
			*argc -= 2;
			break;
		}
	}
	return u;
}

static const char *parse_str_opt(int *argc, char **argv, const char *name)
{
	const char *v = NULL;
	int i, j;

	for (i = 0; i < *argc; i++) {
		if (strcmp(argv[i], name) == 0 && i + 1 < *argc) {
			v = argv[i + 1];
			for (j = i; j + 2 <= *argc; j++)
				argv[j] = argv[j + 2];
			*argc -= 2;
			break;
		}
	}
	return v;
}

static int cmd_cycle(int argc, char **argv)
{
	static const char *const arm_name[] = { "raw", "rawx", "lib", "sock" };
	uid_t u = parse_uid_opt(&argc, argv);
	struct worker wk[2];
	struct raw_ctx raw, rawx;
	long n, i, warm, fails = 0;
	int have_sock, k, arms, a;
	double t;

	if (argc != 5 && argc != 7)
		die("usage: cycle N RAWIMG RAWXIMG LIBIMG [SOCKIMG SOCKET] [--uid U]");
	n = parse_long(argv[1], "N");
	have_sock = argc == 7;
	arms = have_sock ? 4 : 3;
	raw_open(&raw, argv[2], 0);
	raw_open(&rawx, argv[3], 1);
	worker_start(&wk[0], u, NULL, argv[4]);
	if (have_sock)
		worker_start(&wk[1], u, argv[6], argv[5]);
	warm = n / 20 + 3;
	for (i = -warm; i < n; i++) {
		for (k = 0; k < arms; k++) {
			a = (int)((i + warm + k) % arms);	/* rotate the order */
			if (a <= 1) {
				t = now_us();
				if ((a == 0 ? raw_cycle(&raw, 0) : rawx_cycle(&rawx)) < 0) {
					fprintf(stderr, "bench: %s cycle: %s\n",
						arm_name[a], strerror(errno));
					t = -1;
				} else {
					t = now_us() - t;
				}
			} else {
				t = worker_cycle(&wk[a - 2]);
			}
			if (t < 0) {
				fails++;
				continue;
			}
			if (i >= 0)
				printf("%s %.2f\n", arm_name[a], t);
		}
	}
	workers_stop(wk, arms - 2);
	printf("fail %ld\n", fails);
	printf("collisions %lu\n", raw.collisions + rawx.collisions);
	return fails ? 1 : 0;
}

/* ---- session start ------------------------------------------------------------ */

static int cmd_session_start(int argc, char **argv)
{
	struct loopfd_session *s;
	long n, i, warm;
	int k, a, arms, st;
	const char *sock;
	char *noop_argv[2];
	pid_t pid;
	double t, t1;

	if (argc != 3 && argc != 4)
		die("usage: session-start N NOOP [SOCKET]");
	n = parse_long(argv[1], "N");
	noop_argv[0] = argv[2];
	noop_argv[1] = NULL;
	sock = argc == 4 ? argv[3] : NULL;
	arms = sock ? 3 : 2;
	warm = n / 20 + 3;
	for (i = -warm; i < n; i++) {
		for (k = 0; k < arms; k++) {
			a = (int)((i + warm + k) % arms);
			if (a == 0) {
				t = now_us();
				s = connect_or_die(NULL);
				t1 = now_us();
				loopfd_close(s);
				if (i >= 0)
					printf("spawn %.2f\nspawn_close %.2f\n",
					       t1 - t, now_us() - t1);
			} else if (a == 1) {
				t = now_us();
				if (posix_spawn(&pid, argv[2], NULL, NULL,
						noop_argv, environ) != 0)
					die("spawn %s failed", argv[2]);
				waitpid(pid, &st, 0);
				if (i >= 0)
					printf("noop %.2f\n", now_us() - t);
			} else {
				t = now_us();
				s = connect_or_die(sock);
				t1 = now_us();
				loopfd_close(s);
				if (i >= 0)
					printf("sock %.2f\n", t1 - t);
			}
		}
	}
	return 0;
}

/* ---- loopfd run vs losetup ----------------------------------------------------- */

/* Start argv[0] with an optional uid drop and stdout redirect; returns the
 * pid.  vfork, the way posix_spawn starts a process (which cannot change
 * uids), so that every arm pays the same, lightest start: the child makes
 * raw syscalls only, then execs. */
static pid_t spawn_cmd(char *const argv[], uid_t u, int out_fd)
{
	pid_t pid = vfork();	/* NOLINT(clang-analyzer-security.insecureAPI.vfork) */

	if (pid == 0) {
		/* NOLINTBEGIN(clang-analyzer-unix.Vfork) */
		if (u != (uid_t)-1 &&
		    (syscall(SYS_setgroups, 0, NULL) != 0 ||
		     syscall(SYS_setresgid, u, u, u) != 0 ||
		     syscall(SYS_setresuid, u, u, u) != 0))
			_exit(126);
		if (out_fd >= 0 && dup2(out_fd, 1) < 0)
			_exit(126);
		execve(argv[0], argv, environ);
		_exit(127);
		/* NOLINTEND(clang-analyzer-unix.Vfork) */
	}
	if (pid < 0)
		die("vfork: %s", strerror(errno));
	return pid;
}

static int wait_ok(pid_t pid)
{
	int st;

	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static int losetup_cycle(const char *losetup, const char *img)
{
	char dev[64];
	char *find_argv[] = { (char *)losetup, (char *)"--find", (char *)"--show",
			      (char *)img, NULL };
	char *det_argv[] = { (char *)losetup, (char *)"--detach", dev, NULL };
	ssize_t len, got = 0;
	int p[2], rc;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		die("pipe: %s", strerror(errno));
	pid = spawn_cmd(find_argv, (uid_t)-1, p[1]);
	close(p[1]);
	while ((len = read(p[0], dev + got, sizeof(dev) - 1 - (size_t)got)) > 0)
		got += len;
	close(p[0]);
	rc = wait_ok(pid);
	dev[got] = '\0';
	dev[strcspn(dev, "\n")] = '\0';
	if (rc < 0 || strncmp(dev, "/dev/loop", 9) != 0)
		return -1;
	return wait_ok(spawn_cmd(det_argv, (uid_t)-1, -1));
}

static int cmd_run_cmd(int argc, char **argv)
{
	static const char *const arm_name[] = { "loopfd", "losetup", "true" };
	uid_t u = parse_uid_opt(&argc, argv);
	char *run_argv[] = { NULL, (char *)"run", NULL, (char *)"--",
			     (char *)"true", NULL };
	char *true_argv[] = { (char *)"/usr/bin/true", NULL };
	long n, i, warm, fails = 0;
	int k, a, rc;
	double t;

	if (argc != 6)
		die("usage: run-cmd N LOOPFD IMG LOSETUP LIMG [--uid U]");
	n = parse_long(argv[1], "N");
	run_argv[0] = argv[2];
	run_argv[2] = argv[3];
	if (access(true_argv[0], X_OK) < 0)
		true_argv[0] = (char *)"/bin/true";
	warm = n / 20 + 3;
	for (i = -warm; i < n; i++) {
		for (k = 0; k < 3; k++) {
			a = (int)((i + warm + k) % 3);
			t = now_us();
			if (a == 0)
				rc = wait_ok(spawn_cmd(run_argv, u, -1));
			else if (a == 1)
				rc = losetup_cycle(argv[4], argv[5]);
			else	/* what running COMMAND alone costs */
				rc = wait_ok(spawn_cmd(true_argv, u, -1));
			t = now_us() - t;
			if (rc < 0) {
				fprintf(stderr, "bench: %s failed\n", arm_name[a]);
				fails++;
				continue;
			}
			if (i >= 0)
				printf("%s %.2f\n", arm_name[a], t);
		}
	}
	printf("fail %ld\n", fails);
	return fails ? 1 : 0;
}

/* ---- concurrency ------------------------------------------------------------------ */

struct conc_result {
	double start, end;		/* us, CLOCK_MONOTONIC */
	long ok, fail;
	unsigned long collisions;
	unsigned long waits, waited_ms;	/* lib: releases that waited */
	double p50, p90;		/* per-cycle latency, us */
};

/* user+sys CPU time of RUSAGE_SELF or RUSAGE_CHILDREN, microseconds */
static double rusage_us(int who)
{
	struct rusage ru;

	if (getrusage(who, &ru) < 0)
		return 0;
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

enum conc_arm { C_RAW, C_RAWX, C_LIB };
static const char *const conc_arm_name[] = { "raw", "rawx", "lib" };

static int conc_cycle(enum conc_arm arm, struct raw_ctx *raw,
		      struct loopfd_session *s, int fd, struct loopfd_error *err)
{
	if (arm == C_LIB)
		return lib_cycle(s, fd, err);
	return arm == C_RAWX ? rawx_cycle(raw) : raw_cycle(raw, 0);
}

static void conc_child(enum conc_arm arm, long n, const char *img, uid_t u,
		       const char *sock, int ready, int go, int res)
{
	struct conc_result r;
	struct loopfd_session *s = NULL;
	struct loopfd_error err;
	struct raw_ctx raw;
	double *lat, t;
	long i;
	int fd = -1;
	char b;

	memset(&r, 0, sizeof(r));
	lat = calloc((size_t)n + 1, sizeof(*lat));
	if (!lat)
		_exit(1);
	if (arm == C_LIB) {
		if (u != (uid_t)-1)
			drop_to(u);
		fd = open_rw(img);
		s = connect_or_die(sock);
	} else {
		raw_open(&raw, img, arm == C_RAWX);
	}
	if (write(ready, "r", 1) != 1)
		_exit(1);
	if (read(go, &b, 1) < 0)	/* EOF: the parent closed it, start */
		_exit(1);
	r.start = now_us();
	for (i = 0; i < n; i++) {
		t = now_us();
		if (conc_cycle(arm, &raw, s, fd, &err)) {
			if (r.fail < 3)
				fprintf(stderr, "bench: %s worker %d: %s\n",
					conc_arm_name[arm], (int)getpid(),
					arm == C_LIB ? loopfd_strerror(&err) : strerror(errno));
			r.fail++;
			continue;
		}
		lat[r.ok++] = now_us() - t;
	}
	r.end = now_us();
	if (arm != C_LIB)
		r.collisions = raw.collisions;
	r.waits = release_waits;
	r.waited_ms = release_waited_ms;
	if (r.ok > 0) {
		qsort(lat, (size_t)r.ok, sizeof(*lat), cmp_double);
		r.p50 = quantile(lat, (size_t)r.ok, 0.5);
		r.p90 = quantile(lat, (size_t)r.ok, 0.9);
	}
	if (s)
		loopfd_close(s);
	if (write(res, &r, sizeof(r)) != sizeof(r))
		_exit(1);
	_exit(0);
}

static int cmd_concurrent(int argc, char **argv)
{
	uid_t u = parse_uid_opt(&argc, argv);
	const char *sock = parse_str_opt(&argc, argv, "--socket");
	struct conc_result r, all;
	double *p50s;
	long k, n, i, got = 0;
	enum conc_arm arm;
	int ready[2], go[2], res[2], st;
	char path[4096], b;
	pid_t pid;

	if (argc != 5)
		die("usage: concurrent raw|rawx|lib K N IMGPREFIX [--uid U] [--socket P]");
	for (arm = C_RAW; arm <= C_LIB; arm++)
		if (strcmp(argv[1], conc_arm_name[arm]) == 0)
			break;
	if (arm > C_LIB)
		die("concurrent: arm must be raw, rawx or lib");
	k = parse_long(argv[2], "K");
	n = parse_long(argv[3], "N");
	if (k < 1 || n < 1)
		die("concurrent: K and N must be positive");
	if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(go, O_CLOEXEC) < 0 ||
	    pipe2(res, O_CLOEXEC) < 0)
		die("pipe: %s", strerror(errno));
	p50s = calloc((size_t)k, sizeof(*p50s));
	if (!p50s)
		die("out of memory");
	fflush(NULL);
	for (i = 0; i < k; i++) {
		snprintf(path, sizeof(path), "%s.%ld", argv[4], i);
		pid = fork();
		if (pid < 0)
			die("fork: %s", strerror(errno));
		if (pid == 0) {
			close(ready[0]);
			close(go[1]);
			close(res[0]);
			conc_child(arm, n, path, u, sock, ready[1], go[0], res[1]);
		}
	}
	close(ready[1]);
	close(go[0]);
	close(res[1]);
	for (i = 0; i < k; i++)
		if (read(ready[0], &b, 1) != 1)
			die("a worker died before starting");
	close(go[1]);			/* all start now */
	memset(&all, 0, sizeof(all));
	all.start = 1e300;
	while (got < k && read(res[0], &r, sizeof(r)) == sizeof(r)) {
		if (r.start < all.start)
			all.start = r.start;
		if (r.end > all.end)
			all.end = r.end;
		all.ok += r.ok;
		all.fail += r.fail;
		all.collisions += r.collisions;
		all.waits += r.waits;
		all.waited_ms += r.waited_ms;
		p50s[got++] = r.p50;
	}
	while (wait(&st) > 0)
		;
	if (got < k)
		die("%ld of %ld workers reported", got, k);
	/* CPU time of the workers and, through them, of the helpers they
	 * spawned and waited for (kernel threads such as the loop workers
	 * are not in it): the cost per cycle that bounds throughput once
	 * the CPUs are busy. */
	if (all.ok > 0)
		printf("cpu_us_per_cycle %.1f\n",
		       rusage_us(RUSAGE_CHILDREN) / (double)all.ok);
	qsort(p50s, (size_t)k, sizeof(*p50s), cmp_double);
	printf("agg %.1f\n", (double)all.ok / ((all.end - all.start) / 1e6));
	printf("fail %ld\nok %ld\ncollisions %lu\nrelease_waits %lu\n"
	       "release_waited_ms %lu\nwall_ms %.1f\nworker_p50_us %.1f\n",
	       all.fail, all.ok, all.collisions, all.waits, all.waited_ms,
	       (all.end - all.start) / 1e3, quantile(p50s, (size_t)k, 0.5));
	return 0;
}

/* ---- 256 MiB writes ------------------------------------------------------------------ */

static int write_all(int fd, const char *buf, size_t mib, int positional)
{
	size_t i, done;
	ssize_t w;

	for (i = 0; i < mib; i++) {
		for (done = 0; done < CHUNK; done += (size_t)w) {
			if (positional)
				w = pwrite(fd, buf + done, CHUNK - done,
					   (off_t)(i * CHUNK + done));
			else
				w = write(fd, buf + done, CHUNK - done);
			if (w <= 0)
				return -1;
		}
	}
	return 0;
}

enum warm { W_FILE, W_LOOP, W_DIO, W_DIO_ODIRECT, W_RAW_LOOP, W_RAW_DIO, W_COUNT };
static const char *const write_arm_name[W_COUNT] = {
	"file", "loop", "loop-dio", "loop-dio-odirect", "raw-loop", "raw-loop-dio",
};
#define W_IS_LIB(a)	((a) >= W_LOOP && (a) <= W_DIO_ODIRECT)
#define W_IS_RAW(a)	((a) >= W_RAW_LOOP)

struct wres {
	double mibs;			/* MiB/s over the whole arm; < 0: failed */
	double write_us, release_us;	/* attach + writes; then the flush/release */
};

/* Root, in-process: what the helper does for an attach and a release, the
 * same writes in between through a second fd, no protocol. */
static int raw_write(int img, int dio, char *buf, size_t mib, double *tw)
{
	struct raw_ctx r;
	struct loop_config cfg;
	char path[32];
	int n, h = -1, w, tries, rc = 0;

	memset(&r, 0, sizeof(r));
	r.ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (r.ctl < 0)
		return -1;
	for (tries = 0; tries < RAW_TRIES && h < 0; tries++) {
		n = ioctl(r.ctl, LOOP_CTL_GET_FREE);
		if (n < 0)
			break;
		snprintf(path, sizeof(path), "/dev/loop%d", n);
		h = open(path, O_RDWR | O_CLOEXEC);
		if (h < 0)
			continue;
		memset(&cfg, 0, sizeof(cfg));
		cfg.fd = (uint32_t)img;
		cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR | (dio ? LO_FLAGS_DIRECT_IO : 0);
		if (ioctl(h, LOOP_CONFIGURE, &cfg) < 0) {
			close(h);
			h = -1;
		}
	}
	close(r.ctl);
	if (h < 0)
		return -1;
	w = open(path, O_RDWR | O_CLOEXEC);
	if (w < 0 || write_all(w, buf, mib, 0) < 0)
		rc = -1;
	if (w >= 0)
		close(w);
	*tw = now_us();
	if (fsync(h) < 0 || ioctl(h, BLKFLSBUF, 0) < 0 || ioctl(h, LOOP_CLR_FD, 0) < 0)
		rc = -1;
	close(h);
	return rc;
}

/* One arm: MiB/s and where the time went. */
static struct wres write_arm(enum warm arm, struct loopfd_session *s,
			     const char *img, char *buf, size_t mib)
{
	struct wres res = { -1, 0, 0 };
	struct loopfd_attach_opts opts;
	struct loopfd_device dev;
	struct loopfd_error err;
	double t = now_us(), tw;
	int fd;

	fd = open(img, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		die("%s: %s", img, strerror(errno));
	if (arm == W_FILE) {
		if (write_all(fd, buf, mib, 1) < 0)
			die("%s: write: %s", img, strerror(errno));
		tw = now_us();
		if (fsync(fd) < 0)
			die("%s: fsync: %s", img, strerror(errno));
		close(fd);
	} else if (W_IS_RAW(arm)) {
		if (raw_write(fd, arm == W_RAW_DIO, buf, mib, &tw) < 0) {
			fprintf(stderr, "bench: %s: %s\n", write_arm_name[arm],
				strerror(errno));
			close(fd);
			return res;
		}
		close(fd);
	} else {
		memset(&opts, 0, sizeof(opts));
		if (arm != W_LOOP)
			opts.flags = LOOPFD_DIRECT_IO;
		if (loopfd_attach(s, fd, &opts, &dev, &err) < 0) {
			fprintf(stderr, "bench: attach: %s\n", loopfd_strerror(&err));
			close(fd);
			return res;
		}
		close(fd);
		if (arm != W_LOOP && !(dev.flags & LOOPFD_DIRECT_IO))
			fprintf(stderr, "bench: %s: the kernel did not enable direct I/O\n",
				dev.path);
		if (arm == W_DIO_ODIRECT &&
		    fcntl(dev.fd, F_SETFL, fcntl(dev.fd, F_GETFL) | O_DIRECT) < 0)
			die("%s: O_DIRECT: %s", dev.path, strerror(errno));
		if (write_all(dev.fd, buf, mib, 0) < 0)
			die("%s: write: %s", dev.path, strerror(errno));
		close(dev.fd);
		tw = now_us();
		if (loopfd_release(s, dev.id, RELEASE_TIMEOUT_MS, NULL, &err) < 0) {
			fprintf(stderr, "bench: release: %s\n", loopfd_strerror(&err));
			return res;
		}
	}
	res.release_us = now_us() - tw;
	res.write_us = tw - t;
	res.mibs = (double)mib / ((res.write_us + res.release_us) / 1e6);
	return res;
}

/* The loopfd arms' process when the bench runs as root: uid u, one setuid
 * session, one arm per byte read from cmd, the result written back. */
static void write_worker(uid_t u, const char *img, size_t mib, int cmd, int res)
{
	struct loopfd_session *s;
	struct wres r;
	unsigned char a;
	char *buf;

	drop_to(u);
	if (posix_memalign((void **)&buf, 4096, CHUNK) != 0)
		_exit(1);
	s = connect_or_die(NULL);
	while (read(cmd, &a, 1) == 1 && a < W_COUNT) {
		memset(buf, 'a' + a, CHUNK);
		r = write_arm((enum warm)a, s, img, buf, mib);
		if (write(res, &r, sizeof(r)) != sizeof(r))
			_exit(1);
	}
	loopfd_close(s);
	_exit(0);
}

static int cmd_write(int argc, char **argv)
{
	uid_t u = parse_uid_opt(&argc, argv);
	int use[W_COUNT] = { 0 }, order[W_COUNT], narms = 0, i, j, fails = 0;
	int cmd[2] = { -1, -1 }, resp[2] = { -1, -1 }, st;
	struct loopfd_session *s = NULL;
	unsigned char a;
	struct wres r;
	long mib, reps, rep;
	pid_t worker = -1;
	char *buf;

	if (argc < 4)
		die("usage: write MIB REPS IMG [--uid U] [ARM...]");
	mib = parse_long(argv[1], "MIB");
	reps = parse_long(argv[2], "REPS");
	for (i = 4; i < argc; i++) {
		for (j = 0; j < W_COUNT; j++)
			if (strcmp(argv[i], write_arm_name[j]) == 0)
				break;
		if (j == W_COUNT)
			die("write: unknown arm '%s'", argv[i]);
		use[j] = 1;
	}
	for (j = 0; j < W_COUNT; j++)
		if (use[j] || (argc == 4 && (!W_IS_RAW(j) || geteuid() == 0)))
			order[narms++] = j;
	if (posix_memalign((void **)&buf, 4096, CHUNK) != 0)
		die("out of memory");
	if (u != (uid_t)-1) {
		if (pipe2(cmd, O_CLOEXEC) < 0 || pipe2(resp, O_CLOEXEC) < 0)
			die("pipe: %s", strerror(errno));
		fflush(NULL);
		worker = fork();
		if (worker < 0)
			die("fork: %s", strerror(errno));
		if (worker == 0) {
			close(cmd[1]);
			close(resp[0]);
			write_worker(u, argv[3], (size_t)mib, cmd[0], resp[1]);
		}
		close(cmd[0]);
		close(resp[1]);
	} else {
		s = connect_or_die(NULL);
	}
	/* one unrecorded round first: the file's blocks, the caches */
	for (rep = -1; rep < reps; rep++) {
		for (i = 0; i < narms; i++) {
			j = order[(rep + 1 + i) % narms];
			if (W_IS_LIB(j) && worker > 0) {
				a = (unsigned char)j;
				if (write(cmd[1], &a, 1) != 1 ||
				    read(resp[0], &r, sizeof(r)) != sizeof(r))
					die("write worker died");
			} else {
				memset(buf, 'a' + j, CHUNK);
				r = write_arm((enum warm)j, s, argv[3], buf, (size_t)mib);
			}
			if (r.mibs < 0) {
				fails++;
				continue;
			}
			if (rep >= 0)
				printf("%s %.1f\nphase %s %.0f %.0f\n", write_arm_name[j],
				       r.mibs, write_arm_name[j], r.write_us, r.release_us);
		}
	}
	if (worker > 0) {
		close(cmd[1]);
		close(resp[0]);
		waitpid(worker, &st, 0);
	}
	loopfd_close(s);
	free(buf);
	printf("fail %d\n", fails);
	return fails ? 1 : 0;
}

/* ---- helper RSS ------------------------------------------------------------------ */

/* The helper this process spawned: its child. */
static pid_t find_child(void)
{
	char path[300], line[512];
	DIR *d = opendir("/proc");
	struct dirent *e;
	pid_t me = getpid(), found = -1;
	FILE *f;
	int ppid;

	if (!d)
		return -1;
	while ((e = readdir(d)) != NULL && found < 0) {
		if (e->d_name[0] < '1' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/status", e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "PPid: %d", &ppid) == 1) {
				if (ppid == me)
					found = (pid_t)atoi(e->d_name);
				break;
			}
		fclose(f);
	}
	closedir(d);
	return found;
}

static long status_kib(pid_t pid, const char *key)
{
	char path[64], line[256];
	size_t kl = strlen(key);
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
			v = strtol(line + kl + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

static int cmd_rss(int argc, char **argv)
{
	struct loopfd_device devs[8];
	struct loopfd_session *s;
	struct loopfd_error err;
	size_t cnt;
	pid_t helper;
	char *buf;
	int fd, i;

	if (argc != 2)
		die("usage: rss IMG");
	s = connect_or_die(NULL);
	helper = find_child();
	if (helper < 0)
		die("cannot find the helper process");
	printf("ready_hwm_kib %ld\n", status_kib(helper, "VmHWM"));
	fd = open_rw(argv[1]);
	for (i = 0; i < 100; i++)
		if (lib_cycle(s, fd, &err) < 0)
			die("cycle: %s", loopfd_strerror(&err));
	/* 8 devices at once, 16 MiB written through one of them */
	for (i = 0; i < 8; i++)
		if (loopfd_attach(s, fd, NULL, &devs[i], &err) < 0)
			die("attach: %s", loopfd_strerror(&err));
	if (loopfd_list(s, NULL, 0, &cnt, &err) < 0)
		die("list: %s", loopfd_strerror(&err));
	if (posix_memalign((void **)&buf, 4096, CHUNK) != 0)
		die("out of memory");
	memset(buf, 'x', CHUNK);
	if (write_all(devs[0].fd, buf, 16, 0) < 0)
		die("write: %s", strerror(errno));
	for (i = 0; i < 8; i++) {
		close(devs[i].fd);
		if (loopfd_release(s, devs[i].id, RELEASE_TIMEOUT_MS, NULL, &err) < 0)
			die("release: %s", loopfd_strerror(&err));
	}
	printf("helper_pid %d\nhwm_kib %ld\nrss_kib %ld\n", (int)helper,
	       status_kib(helper, "VmHWM"), status_kib(helper, "VmRSS"));
	loopfd_close(s);
	close(fd);
	free(buf);
	return 0;
}

/* ---- IPC round trip ------------------------------------------------------------ */

/* The echo side: each message back at 16 bytes, with the fd it carried,
 * through the protocol's own transport (protocol/proto.c). */
static void rtt_echo(int sock)
{
	uint8_t b[64];
	int fd, nfds, flags;

	while (lfd_recv(sock, b, sizeof(b), &fd, 1, &nfds, &flags) > 0) {
		int rc = lfd_send(sock, b, 16, nfds ? fd : -1);

		if (nfds)
			close(fd);
		if (rc < 0)
			break;
	}
	_exit(0);
}

/* The two round trips of one attach+release cycle, between two processes
 * over a SOCK_SEQPACKET socketpair: a 32-byte request and a 16-byte answer,
 * each carrying an fd (the attach), then the same without (the release).
 * Prints each round trip, and the CPU time of both processes per cycle. */
static int cmd_ipc_rtt(int argc, char **argv)
{
	uint8_t b[64] = { 0 };
	long n, i;
	int sv[2], st, fd, nfds, flags;
	pid_t pid;
	double t, cpu = 0;

	if (argc != 2)
		die("usage: ipc-rtt N");
	n = parse_long(argv[1], "N");
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		die("socketpair: %s", strerror(errno));
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		close(sv[0]);
		rtt_echo(sv[1]);
	}
	close(sv[1]);
	for (i = -n / 10; i < n; i++) {
		if (i == 0)
			cpu = rusage_us(RUSAGE_SELF);
		t = now_us();
		if (lfd_send(sv[0], b, 32, i % 2 == 0 ? sv[0] : -1) < 0 ||
		    lfd_recv(sv[0], b, sizeof(b), &fd, 1, &nfds, &flags) != 16)
			die("ipc-rtt: echo process died");
		if (nfds)
			close(fd);
		if (i >= 0)
			printf("rtt %.2f\n", now_us() - t);
	}
	cpu = rusage_us(RUSAGE_SELF) - cpu;
	close(sv[0]);
	waitpid(pid, &st, 0);
	/* the echo's CPU is its whole life, warm-up included (a tenth more) */
	cpu += rusage_us(RUSAGE_CHILDREN) * (double)n / (double)(n + n / 10);
	printf("cpu_us_per_cycle %.1f\n", cpu / ((double)n / 2));
	return 0;
}

/* ---- statistics ------------------------------------------------------------------ */

static int cmd_stats(int argc, char **argv)
{
	size_t n = 0, cap = 1024;
	double *v = malloc(cap * sizeof(*v)), x, scale = 1;

	if (argc == 2)
		scale = strtod(argv[1], NULL);
	if (!v)
		die("out of memory");
	while (scanf("%lf", &x) == 1) {
		if (n == cap) {
			cap *= 2;
			v = realloc(v, cap * sizeof(*v));
			if (!v)
				die("out of memory");
		}
		v[n++] = x * scale;
	}
	if (n == 0) {
		printf("nan nan nan 0\n");
		free(v);
		return 0;
	}
	qsort(v, n, sizeof(*v), cmp_double);
	printf("%.6g %.6g %.6g %zu\n", quantile(v, n, 0.5), quantile(v, n, 0.1),
	       quantile(v, n, 0.9), n);
	free(v);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} cmds[] = {
		{ "cycle", cmd_cycle },
		{ "session-start", cmd_session_start },
		{ "run-cmd", cmd_run_cmd },
		{ "concurrent", cmd_concurrent },
		{ "write", cmd_write },
		{ "rss", cmd_rss },
		{ "ipc-rtt", cmd_ipc_rtt },
		{ "stats", cmd_stats },
	};
	size_t i;

	signal(SIGPIPE, SIG_IGN);
	if (argc >= 2)
		for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
			if (strcmp(argv[1], cmds[i].name) == 0)
				return cmds[i].fn(argc - 1, argv + 1);
	fputs("usage: bench cycle|session-start|run-cmd|concurrent|write|rss|ipc-rtt|stats ...\n"
	      "(see the comment at the top of bench/bench.c)\n", stderr);
	return 2;
}
