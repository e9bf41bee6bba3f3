/*
 * Devices that outlive one command: loopfd attach, exec, list, detach.
 *
 * `loopfd attach IMAGE` starts a holder: a process of the user's own
 * (nothing here runs as root), detached from the terminal (fork, setsid,
 * fork; stdio on /dev/null; cwd /), that opens an ordinary libloopfd
 * session, attaches the device, keeps the session and the device fd, and
 * serves later loopfd commands on a private Unix socket:
 *
 *   exec    hands over the device fd (SCM_RIGHTS): no --grant needed
 *   list    describes the device
 *   detach  releases it through the session (the verified flush-and-clear
 *           of `loopfd run`), answers with the receipt, and exits
 *
 * One holder per device: its death releases exactly that device, because
 * the helper sees the session's connection end and releases on its own,
 * as it does for a `loopfd run` that is killed.  A held device counts
 * against the limits like any other: it is an ordinary session's device.
 *
 * Who may talk to a holder is decided twice, by the kernel: the socket
 * lives in a directory of the user's own with mode 0700, and both ends
 * check the other's uid with SO_PEERCRED (a holder serves only its own
 * uid; a client trusts only a holder of its own uid).
 *
 * The directory: $XDG_RUNTIME_DIR/loopfd if XDG_RUNTIME_DIR is set and is a
 * directory of the user's with no group or other access; else
 * /run/user/UID/loopfd under the same condition (so `env -i` finds what a
 * login shell attached); else /tmp/loopfd-UID.  Each is created 0700 and
 * checked with lstat to be a real directory (not a symlink) owned by the
 * user with no group or other access: one that another user created first
 * (squatted) is refused with a message, never used.  /tmp's sticky bit
 * keeps others from renaming or removing it once it is ours.
 */
#include "cli.h"
#include "loopfd_proto.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The holder protocol: one loopfd build talks to its own holders only. */
#define HOLD_MAGIC	0x31484c4cu	/* "LLH1" */
#define HOLD_IO_TIMEOUT	5		/* seconds a peer may stall a holder */

enum hold_op { HOLD_INFO = 1, HOLD_FD = 2, HOLD_DETACH = 3 };
enum hold_state { HOLD_ATTACHED = 1, HOLD_DETACHING = 2 };

struct hold_req {
	uint32_t magic;
	uint32_t op;
	uint32_t timeout_ms;		/* HOLD_DETACH */
	uint32_t reserved;
};

struct hold_rep {
	uint32_t magic;
	uint32_t op;
	int32_t err;			/* 0, or the errno of what failed */
	int32_t reason;			/* a failed release's LFD_R_* */
	uint32_t waited_ms;		/* a release's wait for other openers */
	uint32_t state;			/* enum hold_state */
	int32_t pid;			/* the holder */
	uint32_t locked;		/* --lock */
	uint32_t features;		/* LOOPFD_FEAT_* the policy allows */
	int64_t since;			/* attached at, seconds since the epoch */
	struct loopfd_device dev;	/* fd is -1 */
	char image[PATH_MAX];		/* absolute, as opened at attach */
	char msg[512];			/* what failed, in words */
};

struct holder {
	struct loopfd_session *s;
	struct image img;
	struct hold_rep rep;		/* what INFO answers */
	uint32_t timeout_ms;		/* default release timeout */
	char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	ino_t sock_ino;
	int listen_fd;
	int sig_fd;
};

/* ---- the directory ------------------------------------------------------------ */

/* A directory of ours with no access for anyone else, not a symlink. */
static int private_dir(const char *path, struct stat *st)
{
	return lstat(path, st) == 0 && S_ISDIR(st->st_mode) &&
	       st->st_uid == getuid() && (st->st_mode & 077) == 0;
}

/* The base the holder directory goes in, by the order in the header. */
static void choose_dir(char *dir, size_t cap)
{
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	char run[64];
	struct stat st;

	if (xdg && xdg[0] == '/' && private_dir(xdg, &st)) {
		snprintf(dir, cap, "%s/loopfd", xdg);
		return;
	}
	snprintf(run, sizeof(run), "/run/user/%u", (unsigned)getuid());
	if (private_dir(run, &st))
		snprintf(dir, cap, "%s/loopfd", run);
	else
		snprintf(dir, cap, "/tmp/loopfd-%u", (unsigned)getuid());
}

/*
 * The holder directory in dir: 0, 1 if it does not exist and create is 0
 * (then nothing is held), -1 with a message if it is not safe to use.
 */
static int hold_dir(char *dir, size_t cap, int create)
{
	struct stat st;

	choose_dir(dir, cap);
	if (create && mkdir(dir, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "loopfd: cannot create %s: %s\n", dir,
			strerror(errno));
		return -1;
	}
	if (lstat(dir, &st) < 0) {
		if (errno == ENOENT && !create)
			return 1;
		fprintf(stderr, "loopfd: %s: %s\n", dir, strerror(errno));
		return -1;
	}
	if (private_dir(dir, &st))
		return 0;
	fprintf(stderr, "loopfd: refusing %s: it is %s owned by uid %u with mode "
		"%04o, not a directory of yours (uid %u) that only you can "
		"enter; another user may have created it first: have it removed, "
		"or set XDG_RUNTIME_DIR to a directory of yours with mode 0700\n",
		dir, S_ISLNK(st.st_mode) ? "a symbolic link" :
		S_ISDIR(st.st_mode) ? "a directory" : "a file",
		(unsigned)st.st_uid, (unsigned)(st.st_mode & 07777),
		(unsigned)getuid());
	return -1;
}

/* "loop7" or "/dev/loop7" to "loop7"; NULL if it is neither. */
static const char *device_name(const char *arg)
{
	const char *name = strncmp(arg, "/dev/", 5) == 0 ? arg + 5 : arg;
	size_t digits;

	if (strncmp(name, "loop", 4) != 0)
		return NULL;
	digits = strspn(name + 4, "0123456789");
	if (digits == 0 || digits > 9 || name[4 + digits] != '\0')
		return NULL;
	return name;
}

static int socket_path(char *buf, size_t cap, const char *dir, const char *name)
{
	int len = snprintf(buf, cap, "%s/%s", dir, name);

	if (len < 0 || (size_t)len >= cap) {
		fprintf(stderr, "loopfd: socket path %s/%s is longer than %zu "
			"bytes\n", dir, name, cap - 1);
		return -1;
	}
	return 0;
}

/* ---- both ends ------------------------------------------------------------------ */

/* The kernel's word on who is at the other end. */
static int peer_is_us(int sock, uid_t *uid)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	*uid = (uid_t)-1;
	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return 0;
	*uid = cred.uid;
	return cred.uid == getuid();
}

static void set_timeouts(int sock, int seconds)
{
	struct timeval tv = { .tv_sec = seconds };

	setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* ---- the holder ------------------------------------------------------------------ */

static void holder_fail(struct holder *h, int e, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void holder_fail(struct holder *h, int e, const char *fmt, ...)
{
	va_list ap;

	h->rep.err = e ? e : EIO;
	va_start(ap, fmt);
	vsnprintf(h->rep.msg, sizeof(h->rep.msg), fmt, ap);
	va_end(ap);
}

/* Stdio on /dev/null (also for the helper it spawns: a holder must not keep
 * a terminal or a `$(loopfd attach ...)` pipe open), cwd /, signals. */
static int holder_detach_from_caller(struct holder *h)
{
	sigset_t set;
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);

	if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 ||
	    dup2(null, 2) < 0) {
		holder_fail(h, errno, "holder: /dev/null: %s", strerror(errno));
		return -1;
	}
	if (null > 2)
		close(null);
	umask(077);
	signal(SIGPIPE, SIG_IGN);
	/* SIGTERM, SIGINT, SIGHUP: detach as asked, then exit. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, NULL);
	h->sig_fd = signalfd(-1, &set, SFD_CLOEXEC);
	if (h->sig_fd < 0) {
		holder_fail(h, errno, "holder: signalfd: %s", strerror(errno));
		return -1;
	}
	return 0;
}

static int holder_attach(struct holder *h, const struct options *o)
{
	struct loopfd_error err;
	struct image *img = &h->img;
	unsigned max;

	if (loopfd_connect(&h->s, o->socket_path, &err) < 0) {
		error_text(h->rep.msg, sizeof(h->rep.msg), NULL, &err);
		h->rep.err = err.err ? err.err : EIO;
		return -1;
	}
	max = loopfd_session_info(h->s)->max_timeout_ms;
	h->rep.features = loopfd_session_info(h->s)->features;
	h->timeout_ms = o->timeout_ms < max ? o->timeout_ms : max;
	if (loopfd_attach(h->s, img->fd, &img->opts.attach, &img->dev, &err) < 0) {
		error_text(h->rep.msg, sizeof(h->rep.msg), img->path, &err);
		h->rep.err = err.err ? err.err : EIO;
		return -1;
	}
	img->attached = 1;
	close(img->fd);
	img->fd = -1;
	if (img->opts.lock && flock(img->dev.fd, LOCK_EX) < 0) {
		holder_fail(h, errno, "--lock: flock on %s (image %s): %s",
			    img->dev.path, img->path, strerror(errno));
		return -1;
	}
	return 0;
}

/* Bound under a temporary name and renamed into place, so that a stale
 * socket of an earlier holder of the same device (one that was killed) is
 * replaced in one step; that device cannot still be held by it. */
static int holder_listen(struct holder *h, const char *dir)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	char tmp[64];

	snprintf(tmp, sizeof(tmp), ".%s.%d", h->img.dev.name, (int)getpid());
	if (socket_path(h->sock_path, sizeof(h->sock_path), dir,
			h->img.dev.name) < 0 ||
	    socket_path(sa.sun_path, sizeof(sa.sun_path), dir, tmp) < 0) {
		holder_fail(h, ENAMETOOLONG, "%s: socket path too long", dir);
		return -1;
	}
	h->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (h->listen_fd < 0 ||
	    bind(h->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(h->listen_fd, 16) < 0 || lstat(sa.sun_path, &st) < 0 ||
	    rename(sa.sun_path, h->sock_path) < 0) {
		holder_fail(h, errno, "holder socket %s: %s", h->sock_path,
			    strerror(errno));
		unlink(sa.sun_path);
		return -1;
	}
	h->sock_ino = st.st_ino;
	return 0;
}

/* Remove our socket, and only ours: should the name have been replaced
 * (by hand: no other holder can hold this device while we do), the
 * replacement is left alone. */
static void holder_unlisten(struct holder *h)
{
	struct stat st;

	if (lstat(h->sock_path, &st) == 0 && st.st_ino == h->sock_ino)
		unlink(h->sock_path);
	close(h->listen_fd);
	h->listen_fd = -1;
}

/* Release through the session and answer conn (-1: nobody asked) with
 * the receipt; the holder ends here. */
static void holder_detach(struct holder *h, int conn, uint32_t timeout_ms)
{
	struct hold_rep *rep = &h->rep;
	struct loopfd_error err;
	uint32_t waited = 0;
	unsigned max = loopfd_session_info(h->s)->max_timeout_ms;

	rep->state = HOLD_DETACHING;
	holder_unlisten(h);
	close(h->img.dev.fd);	/* ours would keep the device busy */
	h->img.dev.fd = -1;
	if (timeout_ms > max)
		timeout_ms = max;
	rep->op = HOLD_DETACH;
	if (loopfd_release(h->s, h->img.dev.id, timeout_ms, &waited, &err) < 0) {
		rep->err = err.err ? err.err : EIO;
		rep->reason = err.reason;
		snprintf(rep->msg, sizeof(rep->msg), "%s", release_text(&err));
	} else {
		rep->waited_ms = waited;
	}
	if (conn >= 0)
		lfd_send(conn, (const uint8_t *)rep, sizeof(*rep), -1);
	loopfd_close(h->s);
	exit(rep->err == 0 ? 0 : 1);
}

/* One connection's requests until it ends; detach does not return. */
static void holder_serve_conn(struct holder *h, int conn)
{
	struct hold_req req;
	struct hold_rep rep;
	ssize_t n;

	for (;;) {
		n = recv(conn, &req, sizeof(req), 0);
		if (n != (ssize_t)sizeof(req) || req.magic != HOLD_MAGIC)
			return;
		if (req.op == HOLD_DETACH)
			holder_detach(h, conn, req.timeout_ms);
		if (req.op != HOLD_INFO && req.op != HOLD_FD)
			return;
		rep = h->rep;
		rep.op = req.op;
		if (lfd_send(conn, (const uint8_t *)&rep, sizeof(rep),
			     req.op == HOLD_FD ? h->img.dev.fd : -1) < 0)
			return;
	}
}

static void holder_serve(struct holder *h)
{
	struct pollfd pf[2] = {
		{ .fd = h->listen_fd, .events = POLLIN },
		{ .fd = h->sig_fd, .events = POLLIN },
	};
	uid_t uid;
	int conn;

	for (;;) {
		if (poll(pf, 2, -1) < 0)
			continue;	/* EINTR */
		if (pf[1].revents)
			holder_detach(h, -1, h->timeout_ms);
		if (!(pf[0].revents & POLLIN))
			continue;
		conn = accept4(h->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (conn < 0) {
			/* out of fds or memory: retry later, not in a tight loop */
			if (errno != EINTR && errno != ECONNABORTED)
				poll(NULL, 0, 100);
			continue;
		}
		/* Only our own uid, as the kernel says: no reply to others. */
		if (peer_is_us(conn, &uid)) {
			set_timeouts(conn, HOLD_IO_TIMEOUT);
			holder_serve_conn(h, conn);
		}
		close(conn);
	}
}

/* Nothing inherited stays open in a process that may live for days (an
 * outer loopfd's device fd would stay busy): only the pipe and the image. */
static void close_other_fds(int a, int b)
{
	int lo = a < b ? a : b, hi = a < b ? b : a;

	if (lo > 3)
		close_range(3, (unsigned)lo - 1, 0);
	if (hi > lo + 1)
		close_range((unsigned)lo + 1, (unsigned)hi - 1, 0);
	close_range((unsigned)hi + 1, ~0u, 0);
}

/* The holder process, after the double fork: never returns. */
static void holder_main(struct holder *h, const struct options *o,
			const char *dir, int report_fd)
{
	close_other_fds(report_fd, h->img.fd);
	h->rep.magic = HOLD_MAGIC;
	h->rep.pid = (int32_t)getpid();
	h->rep.since = (int64_t)time(NULL);
	h->rep.state = HOLD_ATTACHED;
	h->rep.locked = (uint32_t)h->img.opts.lock;
	if (holder_detach_from_caller(h) == 0 && holder_attach(h, o) == 0 &&
	    chdir("/") == 0 && holder_listen(h, dir) == 0) {
		h->rep.dev = h->img.dev;
		h->rep.dev.fd = -1;
	} else if (h->rep.err == 0) {
		holder_fail(h, errno, "holder: %s", strerror(errno));
	}
	if (write(report_fd, &h->rep, sizeof(h->rep)) < 0 || h->rep.err != 0) {
		/* loopfd_close releases a device attached before the failure */
		loopfd_close(h->s);
		_exit(1);
	}
	close(report_fd);
	holder_serve(h);
}

/* ---- attach ---------------------------------------------------------------------- */

/* The image's absolute path, from the open file itself. */
static void image_path(const struct image *img, char *buf, size_t cap)
{
	char link[64];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", img->fd);
	n = readlink(link, buf, cap - 1);
	if (n <= 0 || buf[0] != '/')
		snprintf(buf, cap, "%s", img->path);
	else
		buf[n] = '\0';
}

/* The holder's report is larger than PIPE_BUF: it may come in pieces. */
static ssize_t read_report(int fd, struct hold_rep *rep)
{
	size_t got = 0;
	ssize_t n;

	while (got < sizeof(*rep)) {
		n = read(fd, (char *)rep + got, sizeof(*rep) - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* Fork, setsid, fork: the holder is no child of ours and has no terminal.
 * Its first words come back over a pipe: the device, or what failed. */
static int start_holder(struct image *img, const struct options *o,
			const char *dir)
{
	static struct holder h;
	struct hold_rep rep;
	pid_t pid;
	ssize_t n;
	int p[2];

	memset(&h, 0, sizeof(h));
	h.img = *img;
	h.listen_fd = h.sig_fd = -1;
	image_path(img, h.rep.image, sizeof(h.rep.image));
	if (pipe2(p, O_CLOEXEC) < 0) {
		fprintf(stderr, "loopfd: starting a holder: %s\n", strerror(errno));
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "loopfd: starting a holder: %s\n", strerror(errno));
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (pid == 0) {
		close(p[0]);
		if (setsid() < 0 || (pid = fork()) < 0)
			_exit(1);
		if (pid > 0)
			_exit(0);
		holder_main(&h, o, dir, p[1]);
	}
	close(p[1]);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	n = read_report(p[0], &rep);
	close(p[0]);
	if (n != (ssize_t)sizeof(rep)) {
		fprintf(stderr, "loopfd: %s: the holder exited before attaching\n",
			img->path);
		return -1;
	}
	if (rep.err != 0) {
		fprintf(stderr, "loopfd: %s\n", rep.msg);
		return -1;
	}
	printf("%s\n", rep.dev.name);
	if (o->verbose && o->json)
		json_device(stderr, "attach", rep.image, &rep.dev);
	else if (o->verbose)
		fprintf(stderr, "loopfd: %s -> %s, held by process %d\n",
			img->path, rep.dev.path, (int)rep.pid);
	return 0;
}

int cmd_attach(int argc, char **argv)
{
	char dir[PATH_MAX];
	struct options o;
	struct image *imgs;
	size_t n, i;
	int rc = 0;

	parse_command_line(argc, argv, &o, &imgs, &n, NULL);
	for (i = 0; i < n; i++)
		if (imgs[i].opts.partitions || imgs[i].opts.nsel)
			usage_error("--partition%s: loopfd attach holds whole "
				    "images; use loopfd run for partitions",
				    imgs[i].opts.partitions ? "s" : "");
	if (hold_dir(dir, sizeof(dir), 1) < 0)
		rc = EXIT_LOOPFD_SETUP;
	for (i = 0; i < n && rc == 0; i++) {
		if (open_image(&imgs[i]) < 0 || start_holder(&imgs[i], &o, dir) < 0)
			rc = EXIT_LOOPFD_SETUP;
		if (imgs[i].fd >= 0)
			close(imgs[i].fd);
		fflush(stdout);
	}
	free(imgs);
	return flush_stdout() ? EXIT_LOOPFD_SETUP : rc;
}

/* ---- talking to holders ------------------------------------------------------------ */

/*
 * Connect to the holder of name in dir.  0; 1 if there is none (no socket,
 * or a stale one whose holder is gone: its device has been released); -1
 * with a message.
 */
static int hold_connect(const char *dir, const char *name, int *sock)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	uid_t uid;

	if (socket_path(sa.sun_path, sizeof(sa.sun_path), dir, name) < 0)
		return -1;
	*sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (*sock < 0) {
		fprintf(stderr, "loopfd: socket: %s\n", strerror(errno));
		return -1;
	}
	if (connect(*sock, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;

		close(*sock);
		if (e == ENOENT || e == ECONNREFUSED)
			return 1;
		fprintf(stderr, "loopfd: %s: %s\n", sa.sun_path, strerror(e));
		return -1;
	}
	/* The directory is ours alone, but a holder proves itself anyway. */
	if (!peer_is_us(*sock, &uid)) {
		fprintf(stderr, "loopfd: %s is served by uid %u, not by you "
			"(uid %u): refusing it\n", sa.sun_path, (unsigned)uid,
			(unsigned)getuid());
		close(*sock);
		return -1;
	}
	return 0;
}

/* One request and its reply (and the fd a HOLD_FD reply carries). */
static int hold_call(int sock, const char *name, uint32_t op,
		     uint32_t timeout_ms, struct hold_rep *rep, int *fd)
{
	struct hold_req req = { HOLD_MAGIC, op, timeout_ms, 0 };
	int fds[1] = { -1 }, nfds = 0, flags = 0;
	long n;

	if (send(sock, &req, sizeof(req), MSG_NOSIGNAL) < 0) {
		fprintf(stderr, "loopfd: holder of %s: %s\n", name, strerror(errno));
		return -1;
	}
	n = lfd_recv(sock, (uint8_t *)rep, sizeof(*rep), fds, 1, &nfds, &flags);
	if (n != (long)sizeof(*rep) || rep->magic != HOLD_MAGIC ||
	    rep->op != op || flags != 0 || nfds != (op == HOLD_FD)) {
		if (nfds > 0)
			close(fds[0]);
		fprintf(stderr, "loopfd: holder of %s: %s\n", name, n < 0 ?
			strerror(errno) : n == 0 ? "it exited without answering" :
			"unexpected answer (a holder of another loopfd version?)");
		return -1;
	}
	rep->image[sizeof(rep->image) - 1] = '\0';
	rep->msg[sizeof(rep->msg) - 1] = '\0';
	if (fd)
		*fd = fds[0];
	return 0;
}

/* Connect and ask: 0, 1 (not held: message printed), -1. */
static int ask_holder(const char *dir, const char *name, uint32_t op,
		      uint32_t timeout_ms, struct hold_rep *rep, int *fd)
{
	int sock, rc = hold_connect(dir, name, &sock);

	if (rc == 1)
		fprintf(stderr, "loopfd: %s is not held by you (see loopfd "
			"list)\n", name);
	if (rc != 0)
		return rc;
	if (op == HOLD_DETACH)
		set_timeouts(sock, 0);	/* the release takes what it takes */
	else
		set_timeouts(sock, HOLD_IO_TIMEOUT + 1);
	rc = hold_call(sock, name, op, timeout_ms, rep, fd);
	close(sock);
	return rc;
}

/* ---- exec ------------------------------------------------------------------------- */

/* The fd must be the device the holder names. */
static int check_held_fd(int fd, const struct hold_rep *rep)
{
	struct stat st;

	if (fstat(fd, &st) == 0 && S_ISBLK(st.st_mode) &&
	    st.st_rdev == makedev(rep->dev.major, rep->dev.minor))
		return 0;
	fprintf(stderr, "loopfd: the holder of %s sent an fd that is not %s\n",
		rep->dev.name, rep->dev.path);
	return -1;
}

int cmd_exec(int argc, char **argv)
{
	char dir[PATH_MAX];
	struct cmd_device *devs;
	struct hold_rep *reps;
	int i, n, dashes = -1, status = EXIT_LOOPFD_SETUP;

	help_if_asked(argc, argv);
	for (i = 1; i < argc && dashes < 0; i++)
		if (strcmp(argv[i], "--") == 0)
			dashes = i;
	if (dashes < 0 || dashes + 1 >= argc)
		usage_error("usage: loopfd exec NAME [NAME...] -- COMMAND [ARG...]");
	n = dashes - 1;
	if (n == 0)
		usage_error("no device NAME before '--' (see loopfd list)");
	devs = calloc((size_t)n, sizeof(*devs));
	reps = calloc((size_t)n, sizeof(*reps));
	if (!devs || !reps) {
		perror("loopfd");
		exit(EXIT_LOOPFD_SETUP);
	}
	for (i = 0; i < n; i++) {
		devs[i].fd = -1;
		if (!device_name(argv[1 + i]))
			usage_error("'%s' is not a device name like loop7", argv[1 + i]);
	}
	if (hold_dir(dir, sizeof(dir), 0) != 0) {
		fprintf(stderr, "loopfd: %s is not held by you (see loopfd list)\n",
			device_name(argv[1]));
		goto out;
	}
	for (i = 0; i < n; i++) {
		if (ask_holder(dir, device_name(argv[1 + i]), HOLD_FD, 0, &reps[i],
			       &devs[i].fd) != 0 || check_held_fd(devs[i].fd, &reps[i]) < 0)
			goto out;
		devs[i].name = reps[i].dev.name;
		devs[i].path = reps[i].dev.path;
	}
	status = command_run(&argv[dashes + 1], devs, (size_t)n);
	for (i = 0; i < n && !(reps[i].dev.flags & LOOPFD_GRANT); i++)
		;
	hint_grant(&argv[dashes + 1], status, i < n,
		   reps[0].features & LOOPFD_FEAT_GRANT, 1);
out:
	for (i = 0; i < n; i++)
		if (devs[i].fd >= 0)
			close(devs[i].fd);
	free(devs);
	free(reps);
	return status;
}

/* ---- list -------------------------------------------------------------------------- */

static void list_text(const struct hold_rep *r, int header)
{
	char since[32], opts[160], backing[48];
	struct tm tm;
	time_t t = (time_t)r->since;

	if (header)
		printf("%-8s %-20s %-20s %-7s %-9s %s %s\n", "NAME", "BACKING",
		       "SINCE", "PID", "STATE", "OPTIONS", "IMAGE");
	gmtime_r(&t, &tm);
	strftime(since, sizeof(since), "%Y-%m-%dT%H:%M:%SZ", &tm);
	snprintf(opts, sizeof(opts), "%s%s%s%s%s,offset=%" PRIu64 ",sizelimit=%"
		 PRIu64 ",sector-size=%u",
		 r->dev.flags & LOOPFD_READ_ONLY ? "ro" : "rw",
		 r->dev.flags & LOOPFD_PARTSCAN ? ",partscan" : "",
		 r->dev.flags & LOOPFD_DIRECT_IO ? ",direct-io" : "",
		 r->dev.flags & LOOPFD_GRANT ? ",grant" : "",
		 r->locked ? ",lock" : "", r->dev.offset, r->dev.sizelimit,
		 r->dev.sector_size);
	snprintf(backing, sizeof(backing), "%u:%u:%" PRIu64,
		 major((dev_t)r->dev.backing_dev), minor((dev_t)r->dev.backing_dev),
		 r->dev.backing_ino);
	printf("%-8s %-20s %-20s %-7d %-9s %s %s\n", r->dev.name, backing, since, (int)r->pid,
	       r->state == HOLD_DETACHING ? "detaching" : "attached", opts,
	       r->image);
}

static void list_json(const struct hold_rep *r, int first)
{
	char since[32];
	struct tm tm;
	time_t t = (time_t)r->since;

	gmtime_r(&t, &tm);
	strftime(since, sizeof(since), "%Y-%m-%dT%H:%M:%SZ", &tm);
	printf("%s\n  {", first ? "" : ",");
	json_device_fields(stdout, r->image, &r->dev);
	printf(",\"locked\":%s,\"since\":\"%s\",\"since_epoch\":%" PRId64
	       ",\"holder_pid\":%d,\"state\":\"%s\"}", r->locked ? "true" : "false",
	       since, r->since, (int)r->pid,
	       r->state == HOLD_DETACHING ? "detaching" : "attached");
}

static int by_number(const struct dirent **a, const struct dirent **b)
{
	return atoi((*a)->d_name + 4) - atoi((*b)->d_name + 4);
}

static int is_device_entry(const struct dirent *e)
{
	return device_name(e->d_name) != NULL && e->d_name[0] == 'l';
}

/* The names in dir of held devices, in device order; -1 on error. */
static int held_names(const char *dir, struct dirent ***names)
{
	int n = scandir(dir, names, is_device_entry, by_number);

	if (n < 0)
		fprintf(stderr, "loopfd: %s: %s\n", dir, strerror(errno));
	return n;
}

int cmd_list(int argc, char **argv)
{
	char dir[PATH_MAX];
	struct dirent **names = NULL;
	struct hold_rep rep;
	int json = 0, i, n = 0, shown = 0, rc;

	help_if_asked(argc, argv);
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = 1;
		else
			usage_error("usage: loopfd list [--json]");
	}
	rc = hold_dir(dir, sizeof(dir), 0);
	if (rc < 0)
		return EXIT_LOOPFD_SETUP;
	if (rc == 0 && (n = held_names(dir, &names)) < 0)
		return EXIT_LOOPFD_SETUP;
	if (json)
		fputs("[", stdout);
	for (i = 0; i < n; i++) {
		int sock;

		if (hold_connect(dir, names[i]->d_name, &sock) == 0) {
			set_timeouts(sock, HOLD_IO_TIMEOUT + 1);
			if (hold_call(sock, names[i]->d_name, HOLD_INFO, 0, &rep, NULL) == 0) {
				if (json)
					list_json(&rep, shown == 0);
				else
					list_text(&rep, shown == 0);
				shown++;
			}
			close(sock);
		}
		free(names[i]);
	}
	free(names);
	if (json)
		fputs(shown ? "\n]\n" : "]\n", stdout);
	return flush_stdout() ? EXIT_LOOPFD_SETUP : 0;
}

/* ---- detach ------------------------------------------------------------------------ */

static int detach_one(const char *dir, const char *name, uint32_t timeout_ms,
		      int json, int verbose)
{
	struct loopfd_error err;
	struct hold_rep rep;
	int rc;

	memset(&rep, 0, sizeof(rep));
	rc = ask_holder(dir, name, HOLD_DETACH, timeout_ms, &rep, NULL);

	if (rc == 1)
		return EXIT_LOOPFD_SETUP;
	if (rc < 0)		/* the holder died mid-way: its helper releases */
		return EXIT_LOOPFD_DATA;
	memset(&err, 0, sizeof(err));
	err.err = rep.err;
	err.reason = rep.reason;
	snprintf(err.msg, sizeof(err.msg), "%s", rep.msg);
	if (json)
		json_receipt(stdout, rep.image, &rep.dev, rep.err == 0, &err,
			     rep.waited_ms);
	if (rep.err == 0) {
		if (verbose)
			fprintf(stderr, "loopfd: released %s (image %s), waited "
				"%u ms\n", rep.dev.path, rep.image,
				(unsigned)rep.waited_ms);
		return 0;
	}
	fprintf(stderr, "loopfd: release of %s (image %s) failed: %s\n",
		rep.dev.path, rep.image, rep.msg);
	if (rep.reason == LFD_R_BUSY)
		report_busy_openers(&rep.dev);
	if (rep.reason == LFD_R_DATA_LOST)
		report_full_filesystem(rep.image);
	return release_exit_status(&err);
}

/* Data lost outranks busy, busy outranks not found. */
static int worse(int a, int b)
{
	if (a == EXIT_LOOPFD_DATA || b == EXIT_LOOPFD_DATA)
		return EXIT_LOOPFD_DATA;
	if (a == EXIT_LOOPFD_BUSY || b == EXIT_LOOPFD_BUSY)
		return EXIT_LOOPFD_BUSY;
	return a ? a : b;
}

static int detach_all(const char *dir, uint32_t timeout_ms, int json,
		      int verbose)
{
	struct dirent **names;
	int n = held_names(dir, &names), i, rc = 0, sock;

	if (n < 0)
		return EXIT_LOOPFD_SETUP;
	for (i = 0; i < n; i++) {
		/* a stale socket is no device to detach */
		if (hold_connect(dir, names[i]->d_name, &sock) == 0) {
			close(sock);
			rc = worse(rc, detach_one(dir, names[i]->d_name,
						  timeout_ms, json, verbose));
		}
		free(names[i]);
	}
	free(names);
	return rc;
}

int cmd_detach(int argc, char **argv)
{
	char dir[PATH_MAX];
	uint32_t timeout_ms = DEFAULT_TIMEOUT_MS;
	int all = 0, json = 0, verbose = 0, i, rc = 0, found;

	help_if_asked(argc, argv);
	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "--all") == 0)
			all = 1;
		else if (strcmp(argv[i], "--json") == 0)
			json = 1;
		else if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--verbose") == 0)
			verbose = 1;
		else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc)
			timeout_ms = parse_seconds("--timeout", argv[++i]);
		else
			usage_error("usage: loopfd detach [--timeout S] [--json] "
				    "[-v] NAME... | --all");
	}
	if (all == (i < argc))
		usage_error("usage: loopfd detach [--timeout S] [--json] [-v] "
			    "NAME... | --all");
	for (found = i; found < argc; found++)
		if (!device_name(argv[found]))
			usage_error("'%s' is not a device name like loop7",
				    argv[found]);
	found = hold_dir(dir, sizeof(dir), 0);
	if (found < 0)
		return EXIT_LOOPFD_SETUP;
	if (found == 1 && !all) {
		fprintf(stderr, "loopfd: %s is not held by you (see loopfd list)\n",
			device_name(argv[i]));
		return EXIT_LOOPFD_SETUP;
	}
	if (all)
		rc = found == 1 ? 0 : detach_all(dir, timeout_ms, json, verbose);
	for (; i < argc; i++)
		rc = worse(rc, detach_one(dir, device_name(argv[i]), timeout_ms,
					  json, verbose));
	fflush(stdout);
	return rc;
}
