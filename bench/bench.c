/*
 * bench: the measuring half of `make bench` (bench/bench.sh drives it and
 * prints the table; bench/README.md explains the rows).  One subcommand per
 * measurement; each interleaves its arms inside one process run (the order
 * rotates every iteration) so that a noisy neighbour hits every arm alike,
 * and prints one sample per line, "ARM VALUE", for bench.sh to aggregate
 * with `bench stats`.  Times are CLOCK_MONOTONIC.
 *
 * loopfd is measured through its real entry points only: the `loopfd`
 * command and libloopfd, talking to the installed setuid helper or to a
 * `loopfd-helper --listen` daemon.  The baselines are what a root user does
 * by hand: "careful" is GET_FREE, open, LOOP_CONFIGURE, fsync, BLKFLSBUF,
 * LOOP_CLR_FD, close (the safe sequence, KERNEL-FACTS.md); "unsafe" is the
 * same without the fsync, which is what `losetup -d` amounts to.
 *
 *   bench multi N M LOOPFD SOCKET IMGPREFIX [--uid U]
 *	(root) per iteration, in rotating order: `LOOPFD run IMGPREFIX.0 ..
 *	IMGPREFIX.<M-1> -- /bin/true` as uid U through the setuid helper
 *	(run<M>) and through the daemon at SOCKET (sock<M>), the same with
 *	IMGPREFIX.0 alone (run1, sock1), and the careful and unsafe root
 *	sequences in-process over M images and over one (careful<M>,
 *	careful1, unsafe<M>, unsafe1): all attached, then all released.
 *	Microseconds.
 *   bench run-cmd N LOOPFD IMG LOSETUP LIMG [--uid U]
 *	(root) loopfd: `LOOPFD run IMG -- /bin/true` as uid U, exec to exit;
 *	losetup: `d=$(LOSETUP -f --show LIMG); /bin/true $d; LOSETUP -d $d`
 *	as root, without the shell.  Microseconds.
 *   bench concurrent careful|unsafe|lib K N IMGPREFIX [--uid U]
 *	(root) K processes, each with its own image IMGPREFIX.<i>, start
 *	together and do N attach+release cycles each (lib: libloopfd in a
 *	setuid session of uid U per process).  Prints "agg CYCLES_PER_S",
 *	"fail N".
 *   bench write MIB REPS IMG
 *	(any uid) loop: attach IMG through libloopfd (setuid session), write
 *	MIB MiB through the device fd (buffered), close it, release; file:
 *	MIB MiB written to IMG with pwrite, then fsync; file-nosync: the same
 *	without the fsync.  Samples in MiB/s, and "phase ARM WRITE_US
 *	RELEASE_US".
 *   bench stats [SCALE]
 *	numbers on stdin -> "median p10 p90 n" (each times SCALE).
 */
#include "loopfd.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define CHUNK		(1u << 20)	/* write size for the write arms */
#define RAW_TRIES	128		/* GET_FREE collisions tolerated per attach */
#define MAX_IMAGES	64		/* a session's devices (LFD_MAX_DEVICES) */
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

static int open_rw(const char *path)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);

	if (fd < 0)
		die("%s: %s", path, strerror(errno));
	return fd;
}

/* ---- the root baselines ------------------------------------------------------ */

/* GET_FREE, open, LOOP_CONFIGURE: the device fd, or -1.  GET_FREE reserves
 * nothing, so a concurrent attacher may take the device first: retry at
 * once on EBUSY (or a node removed under us), the fastest policy for an
 * in-process caller (the helper backs off instead): the baseline is not
 * handicapped. */
static int root_attach(int ctl, int img)
{
	struct loop_config cfg;
	char path[32];
	int n, fd, tries;

	for (tries = 0; tries < RAW_TRIES; tries++) {
		n = ioctl(ctl, LOOP_CTL_GET_FREE);
		if (n < 0)
			return -1;
		snprintf(path, sizeof(path), "/dev/loop%d", n);
		fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0) {
			if (errno == ENOENT || errno == ENXIO)
				continue;
			return -1;
		}
		memset(&cfg, 0, sizeof(cfg));
		cfg.fd = (uint32_t)img;
		if (ioctl(fd, LOOP_CONFIGURE, &cfg) == 0)
			return fd;
		close(fd);
		if (errno != EBUSY && errno != EAGAIN)
			return -1;
	}
	errno = EBUSY;
	return -1;
}

/* fsync (careful only), BLKFLSBUF, LOOP_CLR_FD, close. */
static int root_release(int fd, int careful)
{
	int rc = 0;

	if ((careful && fsync(fd) < 0) || ioctl(fd, BLKFLSBUF, 0) < 0 ||
	    ioctl(fd, LOOP_CLR_FD, 0) < 0)
		rc = -1;
	close(fd);
	return rc;
}

/* One device: open the image, attach, release, close it. */
static int root_cycle(int ctl, const char *img, int careful)
{
	int fd = open(img, O_RDWR | O_CLOEXEC), dev, rc = -1;

	if (fd < 0)
		return -1;
	dev = root_attach(ctl, fd);
	if (dev >= 0)
		rc = root_release(dev, careful);
	close(fd);
	return rc;
}

/* m images: all opened and attached, then all released (as `loopfd run`
 * does them). */
static int root_many(int ctl, const char *prefix, int m, int careful)
{
	int img[MAX_IMAGES], dev[MAX_IMAGES], i, rc = 0;
	char path[4096];

	for (i = 0; i < m; i++) {
		snprintf(path, sizeof(path), "%s.%d", prefix, i);
		img[i] = open(path, O_RDWR | O_CLOEXEC);
		dev[i] = img[i] < 0 ? -1 : root_attach(ctl, img[i]);
		if (dev[i] < 0)
			rc = -1;
	}
	for (i = 0; i < m; i++) {
		if (dev[i] >= 0 && root_release(dev[i], careful) < 0)
			rc = -1;
		if (img[i] >= 0)
			close(img[i]);
	}
	return rc;
}

/* ---- spawning commands ----------------------------------------------------------- */

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

static const char *true_path(void)
{
	return access("/bin/true", X_OK) == 0 ? "/bin/true" : "/usr/bin/true";
}

/* ---- 41 images in one `loopfd run` ------------------------------------------------ */

enum multi_arm { M_RUN, M_RUN1, M_SOCK, M_SOCK1, M_CAREFUL, M_CAREFUL1,
		 M_UNSAFE, M_UNSAFE1, M_COUNT };

/* argv of `LOOPFD run [--socket S] IMG... -- /bin/true` for m images. */
static char **run_argv(const char *loopfd, const char *sock, const char *prefix,
		       int m)
{
	char **v = calloc((size_t)m + 8, sizeof(*v));
	int i, n = 0;

	if (!v)
		die("out of memory");
	v[n++] = (char *)loopfd;
	v[n++] = (char *)"run";
	if (sock) {
		v[n++] = (char *)"--socket";
		v[n++] = (char *)sock;
	}
	for (i = 0; i < m; i++)
		if (asprintf(&v[n++], "%s.%d", prefix, i) < 0)
			die("out of memory");
	v[n++] = (char *)"--";
	v[n++] = (char *)true_path();
	return v;
}

static int multi_arm(enum multi_arm a, char **const runs[4], int ctl,
		     const char *prefix, int m, uid_t u)
{
	switch (a) {
	case M_RUN: case M_RUN1: case M_SOCK: case M_SOCK1:
		return wait_ok(spawn_cmd(runs[a], u, -1));
	case M_CAREFUL: case M_UNSAFE:
		return root_many(ctl, prefix, m, a == M_CAREFUL);
	default:
		return root_many(ctl, prefix, 1, a == M_CAREFUL1);
	}
}

static int cmd_multi(int argc, char **argv)
{
	static const char *const name[M_COUNT] = { "run", "run1", "sock", "sock1",
		"careful", "careful1", "unsafe", "unsafe1" };
	uid_t u = parse_uid_opt(&argc, argv);
	char **runs[4];
	long n, i, warm, fails = 0;
	int m, k, a, ctl;
	double t;

	if (argc != 6)
		die("usage: multi N M LOOPFD SOCKET IMGPREFIX [--uid U]");
	n = parse_long(argv[1], "N");
	m = (int)parse_long(argv[2], "M");
	if (m < 2 || m > MAX_IMAGES)
		die("multi: M must be 2 to %d", MAX_IMAGES);
	ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0)
		die("/dev/loop-control: %s", strerror(errno));
	runs[M_RUN] = run_argv(argv[3], NULL, argv[5], m);
	runs[M_RUN1] = run_argv(argv[3], NULL, argv[5], 1);
	runs[M_SOCK] = run_argv(argv[3], argv[4], argv[5], m);
	runs[M_SOCK1] = run_argv(argv[3], argv[4], argv[5], 1);
	warm = n / 10 + 2;
	for (i = -warm; i < n; i++) {
		for (k = 0; k < M_COUNT; k++) {
			a = (int)((i + warm + k) % M_COUNT);
			t = now_us();
			if (multi_arm((enum multi_arm)a, runs, ctl, argv[5], m, u) < 0) {
				fprintf(stderr, "bench: multi %s failed\n", name[a]);
				fails++;
				continue;
			}
			if (i >= 0)
				printf("%s %.2f\n", name[a], now_us() - t);
		}
	}
	printf("fail %ld\n", fails);
	return fails ? 1 : 0;
}

/* ---- loopfd run vs losetup ----------------------------------------------------- */

/* d=$(losetup -f --show IMG); /bin/true $d; losetup -d $d */
static int losetup_cycle(const char *losetup, const char *img)
{
	char dev[64];
	char *find_argv[] = { (char *)losetup, (char *)"-f", (char *)"--show",
			      (char *)img, NULL };
	char *true_argv[] = { (char *)true_path(), dev, NULL };
	char *det_argv[] = { (char *)losetup, (char *)"-d", dev, NULL };
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
	rc = wait_ok(spawn_cmd(true_argv, (uid_t)-1, -1));
	return wait_ok(spawn_cmd(det_argv, (uid_t)-1, -1)) < 0 ? -1 : rc;
}

static int cmd_run_cmd(int argc, char **argv)
{
	static const char *const arm_name[] = { "loopfd", "losetup" };
	uid_t u = parse_uid_opt(&argc, argv);
	char *run[] = { NULL, (char *)"run", NULL, (char *)"--",
			(char *)true_path(), NULL };
	long n, i, warm, fails = 0;
	int k, a, rc;
	double t;

	if (argc != 6)
		die("usage: run-cmd N LOOPFD IMG LOSETUP LIMG [--uid U]");
	n = parse_long(argv[1], "N");
	run[0] = argv[2];
	run[2] = argv[3];
	warm = n / 20 + 3;
	for (i = -warm; i < n; i++) {
		for (k = 0; k < 2; k++) {
			a = (int)((i + k) % 2);
			t = now_us();
			rc = a == 0 ? wait_ok(spawn_cmd(run, u, -1)) :
				      losetup_cycle(argv[4], argv[5]);
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

enum conc_arm { C_CAREFUL, C_UNSAFE, C_LIB, C_COUNT };
static const char *const conc_arm_name[C_COUNT] = { "careful", "unsafe", "lib" };

struct conc_result {
	double start, end;		/* us, CLOCK_MONOTONIC */
	long ok, fail;
};

static int lib_cycle(struct loopfd_session *s, int img, struct loopfd_error *err)
{
	struct loopfd_device dev;

	if (loopfd_attach(s, img, NULL, &dev, err) < 0)
		return -1;
	close(dev.fd);
	return loopfd_release(s, dev.id, RELEASE_TIMEOUT_MS, NULL, err);
}

static struct loopfd_session *connect_or_die(void)
{
	struct loopfd_session *s;
	struct loopfd_error err;

	if (loopfd_connect(&s, NULL, &err) < 0)
		die("connect (setuid): %s", loopfd_strerror(&err));
	return s;
}

/* N cycles of one arm; the result goes to res. */
static void conc_child(enum conc_arm arm, long n, const char *img, uid_t u,
		       int ready, int go, int res)
{
	struct conc_result r;
	struct loopfd_session *s = NULL;
	struct loopfd_error err;
	int fd = -1, ctl = -1, rc;
	long i;
	char b;

	memset(&r, 0, sizeof(r));
	if (arm == C_LIB) {
		if (u != (uid_t)-1)
			drop_to(u);
		fd = open_rw(img);
		s = connect_or_die();
	} else {
		ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
		if (ctl < 0)
			die("/dev/loop-control: %s", strerror(errno));
	}
	if (write(ready, "r", 1) != 1)
		_exit(1);
	if (read(go, &b, 1) < 0)	/* EOF: the parent closed it, start */
		_exit(1);
	r.start = now_us();
	for (i = 0; i < n; i++) {
		rc = arm == C_LIB ? lib_cycle(s, fd, &err) :
				    root_cycle(ctl, img, arm == C_CAREFUL);
		if (rc == 0) {
			r.ok++;
			continue;
		}
		if (r.fail++ < 3)
			fprintf(stderr, "bench: %s worker %d: %s\n",
				conc_arm_name[arm], (int)getpid(),
				arm == C_LIB ? loopfd_strerror(&err) : strerror(errno));
	}
	r.end = now_us();
	if (s)
		loopfd_close(s);
	if (write(res, &r, sizeof(r)) != sizeof(r))
		_exit(1);
	_exit(0);
}

/* Start k workers, let them go together, sum their results. */
static struct conc_result conc_run(enum conc_arm arm, long k, long n,
				   const char *prefix, uid_t u)
{
	struct conc_result r, all;
	int ready[2], go[2], res[2], st;
	char path[4096], b;
	long i, got = 0;
	pid_t pid;

	if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(go, O_CLOEXEC) < 0 ||
	    pipe2(res, O_CLOEXEC) < 0)
		die("pipe: %s", strerror(errno));
	fflush(NULL);
	for (i = 0; i < k; i++) {
		snprintf(path, sizeof(path), "%s.%ld", prefix, i);
		pid = fork();
		if (pid < 0)
			die("fork: %s", strerror(errno));
		if (pid == 0) {
			close(ready[0]);
			close(go[1]);
			close(res[0]);
			conc_child(arm, n, path, u, ready[1], go[0], res[1]);
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
		all.start = r.start < all.start ? r.start : all.start;
		all.end = r.end > all.end ? r.end : all.end;
		all.ok += r.ok;
		all.fail += r.fail;
		got++;
	}
	close(ready[0]);
	close(res[0]);
	while (wait(&st) > 0)
		;
	if (got < k)
		die("%ld of %ld workers reported", got, k);
	return all;
}

static int cmd_concurrent(int argc, char **argv)
{
	uid_t u = parse_uid_opt(&argc, argv);
	struct conc_result all;
	enum conc_arm arm;
	long k, n;

	if (argc != 5)
		die("usage: concurrent careful|unsafe|lib K N IMGPREFIX [--uid U]");
	for (arm = C_CAREFUL; arm < C_COUNT; arm++)
		if (strcmp(argv[1], conc_arm_name[arm]) == 0)
			break;
	if (arm == C_COUNT)
		die("concurrent: arm must be careful, unsafe or lib");
	k = parse_long(argv[2], "K");
	n = parse_long(argv[3], "N");
	if (k < 1 || n < 1)
		die("concurrent: K and N must be positive");
	all = conc_run(arm, k, n, argv[4], u);
	printf("agg %.1f\nfail %ld\nok %ld\n",
	       (double)all.ok / ((all.end - all.start) / 1e6), all.fail, all.ok);
	return 0;
}

/* ---- a large buffered write ------------------------------------------------------------ */

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

enum warm { W_LOOP, W_FILE, W_FILE_NOSYNC, W_COUNT };
static const char *const write_arm_name[W_COUNT] = { "loop", "file", "file-nosync" };

/* Attach, write through the device, release; *tw: when the writes ended. */
static int loop_write(struct loopfd_session *s, int img, const char *buf,
		      size_t mib, double *tw)
{
	struct loopfd_device dev;
	struct loopfd_error err;

	if (loopfd_attach(s, img, NULL, &dev, &err) < 0) {
		fprintf(stderr, "bench: attach: %s\n", loopfd_strerror(&err));
		return -1;
	}
	if (write_all(dev.fd, buf, mib, 0) < 0)
		die("%s: write: %s", dev.path, strerror(errno));
	close(dev.fd);
	*tw = now_us();
	if (loopfd_release(s, dev.id, RELEASE_TIMEOUT_MS, NULL, &err) < 0) {
		fprintf(stderr, "bench: release: %s\n", loopfd_strerror(&err));
		return -1;
	}
	return 0;
}

/* One arm: MiB/s, or -1; the phases in *write_us, *release_us. */
static double write_arm(enum warm arm, struct loopfd_session *s, const char *img,
			const char *buf, size_t mib, double *write_us,
			double *release_us)
{
	double t = now_us(), tw = 0;
	int fd = open_rw(img), rc = 0;

	if (arm == W_LOOP) {
		rc = loop_write(s, fd, buf, mib, &tw);
	} else {
		if (write_all(fd, buf, mib, 1) < 0)
			die("%s: write: %s", img, strerror(errno));
		tw = now_us();
		if (arm == W_FILE && fsync(fd) < 0)
			die("%s: fsync: %s", img, strerror(errno));
	}
	close(fd);
	if (rc < 0)
		return -1;
	*release_us = now_us() - tw;
	*write_us = tw - t;
	return (double)mib / ((*write_us + *release_us) / 1e6);
}

static int cmd_write(int argc, char **argv)
{
	struct loopfd_session *s;
	double mibs, w = 0, r = 0;
	long mib, reps, i;
	int k, a, fails = 0;
	char *buf;

	if (argc != 4)
		die("usage: write MIB REPS IMG");
	mib = parse_long(argv[1], "MIB");
	reps = parse_long(argv[2], "REPS");
	buf = malloc(CHUNK);
	if (!buf)
		die("out of memory");
	s = connect_or_die();
	for (i = 0; i < reps; i++) {
		for (k = 0; k < W_COUNT; k++) {
			a = (int)((i + k) % W_COUNT);
			memset(buf, 'a' + (int)((i * W_COUNT + k) % 26), CHUNK);
			mibs = write_arm((enum warm)a, s, argv[3], buf, (size_t)mib, &w, &r);
			if (mibs < 0) {
				fails++;
				continue;
			}
			printf("%s %.1f\nphase %s %.0f %.0f\n", write_arm_name[a],
			       mibs, write_arm_name[a], w, r);
		}
	}
	loopfd_close(s);
	free(buf);
	printf("fail %d\n", fails);
	return fails ? 1 : 0;
}

/* ---- stats ---------------------------------------------------------------------------- */

static int cmd_stats(int argc, char **argv)
{
	size_t n = 0, cap = 1024;
	double *v = malloc(cap * sizeof(*v)), *bigger, x, scale = 1;

	if (argc == 2)
		scale = strtod(argv[1], NULL);
	if (!v)
		die("out of memory");
	while (scanf("%lf", &x) == 1) {
		if (n == cap) {
			cap *= 2;
			bigger = realloc(v, cap * sizeof(*v));
			if (!bigger)
				die("out of memory");
			v = bigger;
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
		{ "multi", cmd_multi },
		{ "run-cmd", cmd_run_cmd },
		{ "concurrent", cmd_concurrent },
		{ "write", cmd_write },
		{ "stats", cmd_stats },
	};
	size_t i;

	signal(SIGPIPE, SIG_IGN);
	if (argc >= 2)
		for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
			if (strcmp(argv[1], cmds[i].name) == 0)
				return cmds[i].fn(argc - 1, argv + 1);
	fputs("usage: bench multi|run-cmd|concurrent|write|stats ...\n"
	      "(see the comment at the top of bench/bench.c)\n", stderr);
	return 2;
}
