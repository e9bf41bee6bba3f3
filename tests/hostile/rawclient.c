/*
 * rawclient: a hostile loopfd client and scenario runner.
 *
 *   rawclient -i IMAGE [-r ROOTFILE] [-s SEED] [-n RANDOM_MSGS]
 *             spawn HELPER SCENARIO...
 *   rawclient -i IMAGE [-r ROOTFILE] [-s SEED] [-n RANDOM_MSGS] -p PID
 *             connect SOCKET SCENARIO...
 *
 * Run as root.  It splits in two.  The child drops to uid/gid 65534 and
 * speaks the wire protocol to a live helper: a setuid helper it spawns
 * exactly as libloopfd does (socketpair, the helper's end on fd 3,
 * "--fd 3"), or a daemon it connects to (PID is the process whose children
 * are the sessions: the --listen daemon, or systemd-socket-activate).  The
 * root parent is a broker the child asks for what uid 65534 cannot see or
 * open: the fd count of a helper session (/proc/PID/fd of a non-dumpable
 * root process), which new daemon child serves a connection, the loop
 * devices backed by a file (sysfs), and root-only files or
 * /dev/loop-control as fds to send.
 *
 * Every case sends something hostile, checks the exact outcome, and then
 * checks that nothing stuck: the session answers LIST with the devices it
 * should hold, the helper holds exactly the fds it held after HELLO (plus
 * one per device it keeps), the kernel has exactly the expected devices on
 * IMAGE and ROOTFILE, and neither file changed.  One line per case,
 * "ok NAME: reason R" or "FAIL NAME: ..."; exit status 1 if any failed.
 */
#include "loopfd_proto.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Linux 6.5; older libc headers lack them. */
#ifndef SO_PASSPIDFD
#define SO_PASSPIDFD		76
#endif

#define CLIENT_ID		65534
#define REPLY_TIMEOUT_MS	20000	/* longest a reply may take */
#define EXIT_TIMEOUT_MS		20000	/* a closed session's helper exits */
#define NOREAD_WAIT_MS		40000	/* the helper's 10 s send timeout, twice, and slack */
#define FLOOD_CONNECTIONS	300
#define OVERSIZED_MAX		70000

#define SEQ_ANY			(-1)	/* no seq to check in the reply */
#define R(r)			(1u << (r))
#define R_SERVED			R(LFD_R_NONE)	/* a success reply to the op sent */

enum mode { MODE_SPAWN, MODE_CONNECT };

/* ---- global state: one run, one process ---------------------------------- */

static struct {
	enum mode mode;
	const char *target;
	pid_t daemon;
	const char *image;
	const char *rootfile;
	uint64_t seed;
	unsigned random_msgs;
	int broker;			/* client: socket to the root parent */
	uint64_t image_hash, root_hash;
	int image_devs, root_devs;	/* devices the kernel should show on each */
	int failures;
} g;

static uint8_t g_buf[OVERSIZED_MAX];

static const char *const reason_names[LFD_R_MAX + 1] = {
	"ok", "MALFORMED", "VERSION", "UNKNOWN_OP", "NO_HELLO", "FD_COUNT",
	"CONTROL", "NOT_AUTHORIZED", "CONFIG", "FORBIDDEN_OPTION", "BAD_OPTION",
	"BACKING_KIND", "BACKING_ACCESS", "BACKING_FS", "BACKING_LOOP",
	"QUOTA_USER", "QUOTA_GLOBAL", "QUOTA_SESSION", "NO_DEVICE", "KERNEL",
	"UNKNOWN_DEVICE", "DEVICE_CHANGED", "DATA_LOST", "BUSY",
};

static const char *rname(uint32_t r)
{
	return r <= LFD_R_MAX ? reason_names[r] : "(out of range)";
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("rawclient: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

__attribute__((format(printf, 2, 3)))
static void fail(const char *name, const char *fmt, ...)
{
	va_list ap;

	printf("FAIL %s: ", name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	g.failures++;
}

__attribute__((format(printf, 2, 3)))
static void ok(const char *name, const char *fmt, ...)
{
	va_list ap;

	printf("ok %s: ", name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* ---- the root broker (parent) --------------------------------------------- */

enum broker_op {
	B_FDS = 1,		/* arg pid: entries in /proc/PID/fd */
	B_SESSION,		/* arg daemon pid: its one new live child */
	B_ATTACHED,		/* path: loop devices whose backing file it is */
	B_HASH,			/* path: FNV-1a of its contents */
	B_OPEN,			/* path, flags: an fd opened as root */
	B_NEXTFREE,		/* an fd of the device LOOP_CTL_GET_FREE names */
	B_ALIVE,		/* arg pid: 1 running, 0 gone or a zombie */
	B_LIVE_CHILDREN,	/* arg pid: its children that are not zombies */
	B_KILL,			/* arg pid: SIGKILL a helper session that hangs */
};

struct breq {
	int op;
	int arg;
	int flags;
	char path[PATH_MAX];
};

struct brep {
	uint64_t val;
	int err;
};

static int count_fds(pid_t pid, uint64_t *n)
{
	char path[64];
	struct dirent *e;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	if (d == NULL)
		return -errno;
	*n = 0;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			(*n)++;
	closedir(d);
	return 0;
}

static int alive(pid_t pid)
{
	char path[64], buf[1024], *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	/* "pid (comm) S ...": comm may hold anything, so the last ')' */
	p = strrchr(buf, ')');
	if (p == NULL || p[1] != ' ')
		return 0;
	return p[2] != 'Z' && p[2] != 'X';
}

static int children(pid_t pid, pid_t *out, int max)
{
	char path[96], buf[32768], *p, *end;
	ssize_t n;
	long v;
	int fd, count = 0;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)pid, (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	for (p = buf; count < max; p = end) {
		v = strtol(p, &end, 10);
		if (end == p)
			break;
		out[count++] = (pid_t)v;
	}
	return count;
}

static int live_children(pid_t pid, uint64_t *val)
{
	pid_t kids[4096];
	int n = children(pid, kids, 4096), i;

	if (n < 0)
		return n;
	*val = 0;
	for (i = 0; i < n; i++)
		if (alive(kids[i]))
			(*val)++;
	return 0;
}

/*
 * A connection's session process: the daemon's one live child that no
 * earlier request claimed.  The client asks only after its HELLO was
 * answered, so the session exists; other connections that are still
 * winding down make it ambiguous for a moment, never for long.
 */
static int find_session(pid_t daemon, uint64_t *val)
{
	static pid_t claimed[4096];
	static int nclaimed;
	pid_t kids[4096], cand = 0;
	int n, i, j, found, tries;

	for (tries = 0; tries < 500; tries++) {
		n = children(daemon, kids, 4096);
		if (n < 0)
			return n;
		found = 0;
		for (i = 0; i < n; i++) {
			for (j = 0; j < nclaimed && claimed[j] != kids[i]; j++)
				;
			if (j == nclaimed && alive(kids[i])) {
				found++;
				cand = kids[i];
			}
		}
		if (found == 1 && nclaimed < 4096) {
			claimed[nclaimed++] = cand;
			*val = (uint64_t)cand;
			return 0;
		}
		sleep_ms(10);
	}
	return -ESRCH;
}

static int count_attached(const char *path, uint64_t *val)
{
	char real[PATH_MAX], f[PATH_MAX], back[PATH_MAX + 64];
	struct dirent *e;
	ssize_t n;
	DIR *d;
	int fd;

	if (realpath(path, real) == NULL)
		return -errno;
	d = opendir("/sys/block");
	if (d == NULL)
		return -errno;
	*val = 0;
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, "loop", 4) != 0)
			continue;
		snprintf(f, sizeof(f), "/sys/block/%s/loop/backing_file", e->d_name);
		fd = open(f, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;	/* not bound */
		n = read(fd, back, sizeof(back) - 1);
		close(fd);
		if (n <= 0)
			continue;
		back[n] = '\0';
		back[strcspn(back, "\n")] = '\0';
		if (strcmp(back, real) == 0)
			(*val)++;
	}
	closedir(d);
	return 0;
}

static int file_hash(const char *path, uint64_t *val)
{
	uint8_t buf[65536];
	uint64_t h = 0xcbf29ce484222325ull;
	ssize_t n, i;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		for (i = 0; i < n; i++)
			h = (h ^ buf[i]) * 0x100000001b3ull;
	close(fd);
	if (n < 0)
		return -EIO;
	*val = h;
	return 0;
}

static int next_free_loop(uint64_t *val, int *fd)
{
	char path[32];
	int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC), n;

	if (ctl < 0)
		return -errno;
	n = ioctl(ctl, LOOP_CTL_GET_FREE);
	close(ctl);
	if (n < 0)
		return -errno;
	snprintf(path, sizeof(path), "/dev/loop%d", n);
	*fd = open(path, O_RDWR | O_CLOEXEC);
	if (*fd < 0)
		return -errno;
	*val = (uint64_t)n;
	return 0;
}

static int broker_one(const struct breq *q, struct brep *r, int *fd)
{
	switch (q->op) {
	case B_FDS:
		return count_fds(q->arg, &r->val);
	case B_SESSION:
		return find_session(q->arg, &r->val);
	case B_ATTACHED:
		return count_attached(q->path, &r->val);
	case B_HASH:
		return file_hash(q->path, &r->val);
	case B_OPEN:
		*fd = open(q->path, q->flags | O_CLOEXEC | O_NOCTTY);
		return *fd < 0 ? -errno : 0;
	case B_NEXTFREE:
		return next_free_loop(&r->val, fd);
	case B_ALIVE:
		r->val = (uint64_t)alive(q->arg);
		return 0;
	case B_LIVE_CHILDREN:
		return live_children(q->arg, &r->val);
	case B_KILL:
		return kill(q->arg, SIGKILL) < 0 ? -errno : 0;
	}
	return -EINVAL;
}

static int broker_serve(int sock, pid_t child)
{
	struct breq q;
	struct brep r;
	int fds[1], nfds, flags, fd, st;
	long n;

	for (;;) {
		n = lfd_recv(sock, (uint8_t *)&q, sizeof(q), fds, 1, &nfds, &flags);
		if (nfds > 0)
			close(fds[0]);
		if (n != (long)sizeof(q))
			break;
		q.path[sizeof(q.path) - 1] = '\0';
		memset(&r, 0, sizeof(r));
		fd = -1;
		r.err = -broker_one(&q, &r, &fd);
		n = lfd_send(sock, (const uint8_t *)&r, sizeof(r), fd);
		if (fd >= 0)
			close(fd);
		if (n < 0)
			break;
	}
	close(sock);
	while (waitpid(child, &st, 0) < 0)
		if (errno != EINTR)
			die("waitpid: %s", strerror(errno));
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	fprintf(stderr, "rawclient: client killed by signal %d\n", WTERMSIG(st));
	return 2;
}

/* Client side: one question to the broker.  0, or -1 with errno. */
static int ask(int op, int arg, const char *path, int flags, uint64_t *val, int *fd)
{
	struct breq q;
	struct brep r;
	int fds[1], nfds, rflags;
	long n;

	memset(&q, 0, sizeof(q));
	q.op = op;
	q.arg = arg;
	q.flags = flags;
	if (path)
		snprintf(q.path, sizeof(q.path), "%s", path);
	if (lfd_send(g.broker, (const uint8_t *)&q, sizeof(q), -1) < 0)
		die("broker: %s", strerror(errno));
	n = lfd_recv(g.broker, (uint8_t *)&r, sizeof(r), fds, 1, &nfds, &rflags);
	if (n != (long)sizeof(r))
		die("broker gone");
	if (fd)
		*fd = nfds > 0 ? fds[0] : -1;
	else if (nfds > 0)
		close(fds[0]);
	if (val)
		*val = r.val;
	if (r.err) {
		errno = r.err;
		return -1;
	}
	return 0;
}

static uint64_t ask_val(int op, int arg, const char *path)
{
	uint64_t v = 0;

	if (ask(op, arg, path, 0, &v, NULL) < 0)
		die("broker op %d (%d, %s): %s", op, arg, path ? path : "-", strerror(errno));
	return v;
}

/* ---- wire helpers ------------------------------------------------------------ */

static void le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void le32(uint8_t *p, uint32_t v)
{
	le16(p, (uint16_t)v);
	le16(p + 2, (uint16_t)(v >> 16));
}

static void le64(uint8_t *p, uint64_t v)
{
	le32(p, (uint32_t)v);
	le32(p + 4, (uint32_t)(v >> 32));
}

/* A header with every field chosen by the caller, then blen body bytes. */
static size_t raw_msg(uint8_t *b, uint32_t magic, uint16_t version, uint16_t op,
		      uint32_t seq, uint32_t body_len, const uint8_t *body, size_t blen)
{
	le32(b, magic);
	le16(b + 4, version);
	le16(b + 6, op);
	le32(b + 8, seq);
	le32(b + 12, body_len);
	if (blen)
		memcpy(b + LFD_HEADER_SIZE, body, blen);
	return LFD_HEADER_SIZE + blen;
}

static size_t encode(uint8_t *b, const struct lfd_msg *m)
{
	size_t n = lfd_encode(m, b, LFD_MAX_MSG);

	if (n == 0)
		die("cannot encode op %u", m->op);
	return n;
}

static void msg_init(struct lfd_msg *m, uint16_t op, uint32_t seq)
{
	memset(m, 0, sizeof(*m));
	m->version = LFD_VERSION;
	m->op = op;
	m->seq = seq;
}

static size_t enc_hello(uint8_t *b, uint32_t seq, uint16_t lo, uint16_t hi)
{
	struct lfd_msg m;

	msg_init(&m, LFD_OP_HELLO, seq);
	m.u.hello_req.min_version = lo;
	m.u.hello_req.max_version = hi;
	return encode(b, &m);
}

static size_t enc_attach(uint8_t *b, uint32_t seq, uint32_t flags, uint32_t ss,
			 uint64_t off, uint64_t lim)
{
	struct lfd_msg m;

	msg_init(&m, LFD_OP_ATTACH, seq);
	m.u.attach_req.flags = flags;
	m.u.attach_req.sector_size = ss;
	m.u.attach_req.offset = off;
	m.u.attach_req.sizelimit = lim;
	return encode(b, &m);
}

static size_t enc_release(uint8_t *b, uint32_t seq, uint32_t id, uint32_t timeout)
{
	struct lfd_msg m;

	msg_init(&m, LFD_OP_RELEASE, seq);
	m.u.release_req.id = id;
	m.u.release_req.timeout_ms = timeout;
	return encode(b, &m);
}

static size_t enc_list(uint8_t *b, uint32_t seq)
{
	struct lfd_msg m;

	msg_init(&m, LFD_OP_LIST, seq);
	return encode(b, &m);
}

/* What goes out: bytes, fds spread over split SCM_RIGHTS messages, and an
 * SCM_CREDENTIALS message if creds. */
struct pkt {
	const uint8_t *buf;
	size_t len;
	const int *fds;
	int nfds;
	int split;
	int creds;
};

static struct pkt pkt(const uint8_t *buf, size_t len, const int *fds, int nfds)
{
	struct pkt p = { .buf = buf, .len = len, .fds = fds, .nfds = nfds, .split = 1 };

	return p;
}

static int send_pkt(int sock, const struct pkt *p, int flags)
{
	static union {
		struct cmsghdr align;
		char b[2 * CMSG_SPACE(sizeof(int) * LFD_RECV_MAX_FDS) +
		       CMSG_SPACE(sizeof(struct ucred))];
	} ctl;
	struct iovec iov = { .iov_base = (void *)p->buf, .iov_len = p->len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *c;
	struct ucred cred;
	size_t space = 0;
	int split = p->split > 1 ? p->split : 1, i, k, done = 0;
	ssize_t n;

	if (split > 2 || p->nfds > LFD_RECV_MAX_FDS)
		die("send_pkt: too many fds");
	for (i = 0; p->nfds > 0 && i < split; i++) {
		k = p->nfds / split + (i < p->nfds % split);
		space += CMSG_SPACE(sizeof(int) * (size_t)k);
	}
	if (p->creds)
		space += CMSG_SPACE(sizeof(struct ucred));
	if (space) {
		memset(ctl.b, 0, space);
		msg.msg_control = ctl.b;
		msg.msg_controllen = space;
		c = CMSG_FIRSTHDR(&msg);
		for (i = 0; p->nfds > 0 && i < split; i++) {
			k = p->nfds / split + (i < p->nfds % split);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)k);
			memcpy(CMSG_DATA(c), p->fds + done, sizeof(int) * (size_t)k);
			done += k;
			c = CMSG_NXTHDR(&msg, c);
		}
		if (p->creds) {
			cred.pid = getpid();
			cred.uid = getuid();
			cred.gid = getgid();
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_CREDENTIALS;
			c->cmsg_len = CMSG_LEN(sizeof(cred));
			memcpy(CMSG_DATA(c), &cred, sizeof(cred));
		}
	}
	n = sendmsg(sock, &msg, MSG_NOSIGNAL | flags);
	if (n < 0)
		return -1;
	if ((size_t)n != p->len) {
		errno = EMSGSIZE;
		return -1;
	}
	return 0;
}

/* ---- sessions ------------------------------------------------------------------ */

struct held {
	uint32_t id;
	int *count;			/* g.image_devs or g.root_devs */
};

struct sess {
	int sock;
	pid_t pid;			/* the helper process serving this session */
	pid_t child;			/* spawn mode: ours to reap */
	int exited, status;		/* spawn mode, once reaped */
	int peer;			/* spawn mode: a kept dup of the helper's end */
	int base_fds;			/* helper fds after the first reply */
	uint32_t seq;
	uint32_t max_devices, features;
	struct held dev[LFD_MAX_DEVICES];
	int held;
};

static int open_image(int flags)
{
	int fd = open(g.image, flags | O_CLOEXEC);

	if (fd < 0)
		die("%s: %s", g.image, strerror(errno));
	return fd;
}

static int dial(void)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	if (fd < 0 || strlen(g.target) >= sizeof(addr.sun_path))
		die("socket: %s", strerror(errno));
	memcpy(addr.sun_path, g.target, strlen(g.target) + 1);
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		die("connect %s: %s", g.target, strerror(errno));
	return fd;
}

/*
 * A new session, before HELLO.  Spawn mode is libloopfd's way in; sockopt
 * (SO_PASSCRED, ...) is set on the helper's end before the exec, which a
 * hostile client may do; keep_peer keeps a dup of the helper's end.
 */
static int session_start(struct sess *s, int sockopt, int keep_peer)
{
	int sv[2], one = 1;
	pid_t pid;

	memset(s, 0, sizeof(*s));
	s->peer = -1;
	s->seq = 100;
	if (g.mode == MODE_CONNECT) {
		s->sock = dial();
		return 0;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		die("socketpair: %s", strerror(errno));
	if (sockopt && setsockopt(sv[1], SOL_SOCKET, sockopt, &one, sizeof(one)) < 0) {
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (keep_peer && (s->peer = fcntl(sv[1], F_DUPFD_CLOEXEC, 10)) < 0)
		die("dup: %s", strerror(errno));
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		if (sv[1] == 3)
			fcntl(3, F_SETFD, 0);
		else if (dup2(sv[1], 3) < 0)
			_exit(126);
		execl(g.target, "loopfd-helper", "--fd", "3", (char *)NULL);
		_exit(127);
	}
	close(sv[1]);
	s->sock = sv[0];
	s->pid = s->child = pid;
	return 0;
}

/* Wait for the helper of a closed (or abandoned) session to exit. */
static int session_wait_exit(struct sess *s, unsigned timeout_ms)
{
	uint64_t end = now_ms() + timeout_ms;
	pid_t r;

	for (;;) {
		if (g.mode == MODE_SPAWN) {
			if (s->exited)
				return 0;
			r = waitpid(s->child, &s->status, WNOHANG);
			if (r == s->child) {
				s->exited = 1;
				return 0;
			}
		} else if (ask_val(B_ALIVE, s->pid, NULL) == 0) {
			return 0;
		}
		if (now_ms() >= end)
			return -1;
		sleep_ms(10);
	}
}

/* Close the client's end: the helper must release what the session holds
 * and exit (status 0 in spawn mode). */
static int session_close(struct sess *s, const char *name)
{
	int i, rc = 0;

	if (s->peer >= 0)
		close(s->peer);
	close(s->sock);
	s->peer = s->sock = -1;
	if (s->pid == 0)
		return 0;
	if (session_wait_exit(s, EXIT_TIMEOUT_MS) < 0) {
		fail(name, "helper %d still running %u ms after the client closed; "
		     "killed", (int)s->pid, EXIT_TIMEOUT_MS);
		/* A hung session must not outlive the test (it may hold the
		 * test's devices, or the pipe its output goes to). */
		(void)ask(B_KILL, s->pid, NULL, 0, NULL, NULL);
		(void)session_wait_exit(s, EXIT_TIMEOUT_MS);
		return -1;
	}
	if (g.mode == MODE_SPAWN && !(WIFEXITED(s->status) && WEXITSTATUS(s->status) == 0)) {
		fail(name, "helper exit status %#x, want a clean exit 0", s->status);
		rc = -1;
	}
	/* The session's end released what it held. */
	for (i = 0; i < s->held; i++)
		(*s->dev[i].count)--;
	s->held = 0;
	return rc;
}

/* One reply, within REPLY_TIMEOUT_MS, with all its fds (up to
 * LFD_MAX_BATCH) in fds[0 .. *rnfds) when fds is not NULL (else closed).
 * The receive flags in *rflags.  -1 with errno: ETIMEDOUT, ECONNRESET
 * (closed), EBADMSG (does not decode; the fds closed). */
static int get_reply_fds(struct sess *s, struct lfd_msg *m, int *fds, int *rflags,
			 int *rnfds)
{
	static uint8_t buf[LFD_MAX_REPLY];
	struct pollfd p = { .fd = s->sock, .events = POLLIN };
	int got[LFD_MAX_BATCH], nfds, flags, i, rc, decoded;
	long n;

	do {
		rc = poll(&p, 1, REPLY_TIMEOUT_MS);
	} while (rc < 0 && errno == EINTR);
	if (rc == 0) {
		errno = ETIMEDOUT;
		return -1;
	}
	n = lfd_recv(s->sock, buf, sizeof(buf), got, LFD_MAX_BATCH, &nfds, &flags);
	if (n < 0)
		return -1;
	if (rflags)
		*rflags = flags;
	if (rnfds)
		*rnfds = nfds;
	decoded = n > 0 && lfd_decode(buf, (size_t)n, m) == LFD_R_NONE;
	for (i = 0; i < nfds && i < LFD_MAX_BATCH; i++) {
		if (fds && decoded)
			fds[i] = got[i];
		else
			close(got[i]);
	}
	if (n == 0 && nfds == 0) {
		errno = ECONNRESET;
		return -1;
	}
	if (!decoded) {
		errno = EBADMSG;
		return -1;
	}
	return 0;
}

/* get_reply_fds keeping at most the first fd, in *fd (-1 if none). */
static int get_reply(struct sess *s, struct lfd_msg *m, int *fd, int *rflags, int *rnfds)
{
	int fds[LFD_MAX_BATCH], nfds = 0, i, rc;

	if (fd)
		*fd = -1;
	rc = get_reply_fds(s, m, fds, rflags, &nfds);
	if (rnfds)
		*rnfds = nfds;
	if (rc < 0)
		return -1;
	for (i = 0; i < nfds && i < LFD_MAX_BATCH; i++) {
		if (i == 0 && fd)
			*fd = fds[0];
		else
			close(fds[i]);
	}
	return 0;
}

static int fds_of(const struct sess *s, uint64_t *n)
{
	return ask(B_FDS, s->pid, NULL, 0, n, NULL);
}

/* After the first reply: which process serves us, and its fds now. */
static int identify(struct sess *s, const char *name)
{
	uint64_t v;

	if (g.mode == MODE_CONNECT) {
		if (ask(B_SESSION, g.daemon, NULL, 0, &v, NULL) < 0) {
			fail(name, "cannot find the session process among %d's children: %s",
			     (int)g.daemon, strerror(errno));
			return -1;
		}
		s->pid = (pid_t)v;
	}
	if (fds_of(s, &v) < 0) {
		fail(name, "cannot count the fds of helper %d: %s", (int)s->pid,
		     strerror(errno));
		return -1;
	}
	s->base_fds = (int)v;
	return 0;
}

static int hello(struct sess *s, const char *name)
{
	struct lfd_msg m;
	uint32_t seq = ++s->seq;
	size_t len = enc_hello(g_buf, seq, 1, 1);
	struct pkt p = pkt(g_buf, len, NULL, 0);

	if (send_pkt(s->sock, &p, 0) < 0 || get_reply(s, &m, NULL, NULL, NULL) < 0) {
		fail(name, "hello: %s", strerror(errno));
		return -1;
	}
	if (m.op != (LFD_OP_HELLO | LFD_REPLY) || m.seq != seq) {
		fail(name, "hello answered op %#x reason %s: %s", m.op,
		     m.op == LFD_OP_ERROR ? rname(m.u.error.reason) : "-",
		     m.op == LFD_OP_ERROR ? m.u.error.text : "");
		return -1;
	}
	if (m.u.hello_rep.version != LFD_VERSION || m.u.hello_rep.uid != getuid() ||
	    m.u.hello_rep.gid != getgid()) {
		fail(name, "hello reply: version %u uid %u gid %u, want 1 %u %u",
		     m.u.hello_rep.version, m.u.hello_rep.uid, m.u.hello_rep.gid,
		     (unsigned)getuid(), (unsigned)getgid());
		return -1;
	}
	s->max_devices = m.u.hello_rep.max_devices;
	s->features = m.u.hello_rep.features;
	return identify(s, name);
}

static int session_open(struct sess *s, const char *name)
{
	if (session_start(s, 0, 0) < 0)
		die("session: %s", strerror(errno));
	return hello(s, name);
}

static void held_add(struct sess *s, uint32_t id, int *count)
{
	if (s->held >= LFD_MAX_DEVICES)
		die("more devices held than the protocol allows");
	s->dev[s->held].id = id;
	s->dev[s->held].count = count;
	s->held++;
	(*count)++;
}

static int held_drop(struct sess *s, uint32_t id)
{
	int i;

	for (i = 0; i < s->held; i++)
		if (s->dev[i].id == id) {
			(*s->dev[i].count)--;
			s->dev[i] = s->dev[--s->held];
			return 0;
		}
	return -1;
}

/*
 * The session is as it should be: LIST answers with the devices it holds,
 * the helper holds its baseline fds plus one per device, the kernel shows
 * the expected devices on each file, and neither file changed.
 */
/* Fds the helper holds per device: its own device fd, and its dup of the
 * backing fd (the release's fsync of the image, helper/loopdev.c). */
#define FDS_PER_DEVICE	2

static int settle(struct sess *s, char *why, size_t wn)
{
	struct lfd_msg m;
	uint32_t seq = ++s->seq;
	size_t len = enc_list(g_buf, seq);
	struct pkt p = pkt(g_buf, len, NULL, 0);
	uint64_t v;

	if (send_pkt(s->sock, &p, 0) < 0 || get_reply(s, &m, NULL, NULL, NULL) < 0) {
		snprintf(why, wn, "LIST afterwards: %s", strerror(errno));
		return -1;
	}
	if (m.op != (LFD_OP_LIST | LFD_REPLY) || m.seq != seq) {
		snprintf(why, wn, "LIST afterwards answered op %#x (%s)", m.op,
			 m.op == LFD_OP_ERROR ? rname(m.u.error.reason) : "-");
		return -1;
	}
	if (m.u.list_rep.count != (uint32_t)s->held) {
		snprintf(why, wn, "LIST shows %u devices, the session should hold %d",
			 m.u.list_rep.count, s->held);
		return -1;
	}
	/* The fds are counted after LIST: the helper closes a message's fds
	 * before it reads the next one. */
	if (fds_of(s, &v) < 0) {
		snprintf(why, wn, "helper %d gone: %s", (int)s->pid, strerror(errno));
		return -1;
	}
	if (v != (uint64_t)(s->base_fds + FDS_PER_DEVICE * s->held)) {
		snprintf(why, wn, "helper holds %" PRIu64 " fds, want %d (baseline %d + %d per device, %d devices)",
			 v, s->base_fds + FDS_PER_DEVICE * s->held, s->base_fds,
			 FDS_PER_DEVICE, s->held);
		return -1;
	}
	v = ask_val(B_ATTACHED, 0, g.image);
	if (v != (uint64_t)g.image_devs) {
		snprintf(why, wn, "%" PRIu64 " devices on %s, want %d", v, g.image, g.image_devs);
		return -1;
	}
	if (ask_val(B_HASH, 0, g.image) != g.image_hash) {
		snprintf(why, wn, "%s changed", g.image);
		return -1;
	}
	if (g.rootfile) {
		v = ask_val(B_ATTACHED, 0, g.rootfile);
		if (v != (uint64_t)g.root_devs) {
			snprintf(why, wn, "%" PRIu64 " devices on %s, want %d", v,
				 g.rootfile, g.root_devs);
			return -1;
		}
		if (ask_val(B_HASH, 0, g.rootfile) != g.root_hash) {
			snprintf(why, wn, "%s changed", g.rootfile);
			return -1;
		}
	}
	return 0;
}

static void mask_str(unsigned want, char *buf, size_t n)
{
	size_t used = 0;
	uint32_t r;

	buf[0] = '\0';
	for (r = 0; r <= LFD_R_MAX; r++)
		if (want & R(r))
			used += (size_t)snprintf(buf + used, used < n ? n - used : 0,
						 "%s%s", used ? "|" : "", rname(r));
}

/* The errno the spec's table fixes for a reason, or 0 where it is the
 * kernel's. */
static int spec_errno(uint32_t r)
{
	if (r == LFD_R_NO_DEVICE || r == LFD_R_KERNEL || r > LFD_R_MAX)
		return 0;
	return lfd_reason_errno((enum lfd_reason)r);
}

/*
 * Send p and take one reply.  Returns the outcome (a reason, LFD_R_NONE
 * for a success reply to the op sent) or -1; why says what was wrong when
 * the outcome is not in want, the seq not echoed, or an fd came along.
 */
static int exchange(struct sess *s, const struct pkt *p, unsigned want, int64_t seq,
		    struct lfd_msg *m, char *why, size_t wn)
{
	uint16_t reqop = p->len >= 8 ? (uint16_t)(p->buf[6] | p->buf[7] << 8) : 0;
	int fd, nfds, outcome, e;
	char w[128];

	why[0] = '\0';
	if (send_pkt(s->sock, p, 0) < 0) {
		snprintf(why, wn, "send: %s", strerror(errno));
		return -1;
	}
	if (get_reply(s, m, &fd, NULL, &nfds) < 0) {
		snprintf(why, wn, "no reply: %s", strerror(errno));
		return -1;
	}
	if (m->op == LFD_OP_ERROR)
		outcome = (int)m->u.error.reason;
	else if (m->op == (reqop | LFD_REPLY))
		outcome = LFD_R_NONE;
	else
		outcome = -1;
	mask_str(want, w, sizeof(w));
	if (outcome < 0 || outcome > LFD_R_MAX || !(want & R(outcome))) {
		snprintf(why, wn, "got %s%s%s, want %s",
			 outcome < 0 ? "a reply of another op" : rname((uint32_t)outcome),
			 m->op == LFD_OP_ERROR ? ": " : "",
			 m->op == LFD_OP_ERROR ? m->u.error.text : "", w);
	} else if (seq != SEQ_ANY && m->seq != (uint32_t)seq) {
		snprintf(why, wn, "reply seq %#x, want %#x", m->seq, (uint32_t)seq);
	} else if (m->op == LFD_OP_ERROR && (e = spec_errno(m->u.error.reason)) &&
		   m->u.error.err != e) {
		snprintf(why, wn, "%s with errno %d, the spec says %d",
			 rname(m->u.error.reason), m->u.error.err, e);
	} else if (m->op == LFD_OP_ERROR && m->u.error.text[0] == '\0') {
		snprintf(why, wn, "%s without a text", rname(m->u.error.reason));
	} else if (nfds != (m->op == (LFD_OP_ATTACH | LFD_REPLY))) {
		snprintf(why, wn, "%d fds came with the reply", nfds);
	}
	/* A device that should not exist: give it back so later cases are
	 * not confused, and count it as the failure it is. */
	if (fd >= 0)
		close(fd);
	if (m->op == (LFD_OP_ATTACH | LFD_REPLY) && !(want & R_SERVED)) {
		uint8_t b[64];
		size_t len = enc_release(b, ++s->seq, m->u.attach_rep.id, 1000);
		struct pkt rp = pkt(b, len, NULL, 0);
		struct lfd_msg rm;

		if (send_pkt(s->sock, &rp, 0) == 0)
			(void)get_reply(s, &rm, NULL, NULL, NULL);
	}
	return why[0] ? -1 : outcome;
}

/* One case: exchange, settle, one line. */
static int run_case(struct sess *s, const char *name, const struct pkt *p,
		    unsigned want, int64_t seq)
{
	struct lfd_msg m;
	char why[512];
	int outcome = exchange(s, p, want, seq, &m, why, sizeof(why));

	if (outcome < 0) {
		fail(name, "%s", why);
		return -1;
	}
	if (settle(s, why, sizeof(why)) < 0) {
		fail(name, "reason %s, but then: %s", rname((uint32_t)outcome), why);
		return -1;
	}
	ok(name, "reason %s", outcome == LFD_R_NONE ? "none (served)" : rname((uint32_t)outcome));
	return outcome;
}

/* A successful attach of fd; the device's record in *dev, its fd in
 * *devfd (closed when devfd is NULL). */
static int attach(struct sess *s, const char *name, int fd, uint32_t flags,
		  int *count, struct lfd_device *dev, int *devfd)
{
	struct lfd_msg m;
	uint32_t seq = ++s->seq;
	size_t len = enc_attach(g_buf, seq, flags, 0, 0, 0);
	struct pkt p = pkt(g_buf, len, &fd, 1);
	int rfd, nfds;

	if (send_pkt(s->sock, &p, 0) < 0 || get_reply(s, &m, &rfd, NULL, &nfds) < 0) {
		fail(name, "attach: %s", strerror(errno));
		return -1;
	}
	if (m.op != (LFD_OP_ATTACH | LFD_REPLY) || m.seq != seq || rfd < 0) {
		fail(name, "attach answered op %#x (%s: %s), %d fds", m.op,
		     m.op == LFD_OP_ERROR ? rname(m.u.error.reason) : "-",
		     m.op == LFD_OP_ERROR ? m.u.error.text : "", nfds);
		if (rfd >= 0)
			close(rfd);
		return -1;
	}
	held_add(s, m.u.attach_rep.id, count);
	if (dev)
		*dev = m.u.attach_rep;
	if (devfd)
		*devfd = rfd;
	else
		close(rfd);
	return 0;
}

static int release(struct sess *s, const char *name, uint32_t id, uint32_t timeout)
{
	struct lfd_msg m;
	uint32_t seq = ++s->seq;
	size_t len = enc_release(g_buf, seq, id, timeout);
	struct pkt p = pkt(g_buf, len, NULL, 0);

	if (send_pkt(s->sock, &p, 0) < 0 || get_reply(s, &m, NULL, NULL, NULL) < 0) {
		fail(name, "release %u: %s", id, strerror(errno));
		return -1;
	}
	if (m.op != (LFD_OP_RELEASE | LFD_REPLY) || m.seq != seq ||
	    m.u.release_rep.id != id) {
		fail(name, "release %u answered op %#x (%s: %s)", id, m.op,
		     m.op == LFD_OP_ERROR ? rname(m.u.error.reason) : "-",
		     m.op == LFD_OP_ERROR ? m.u.error.text : "");
		/* "After any reply the id is gone from the session." */
		if (m.op == LFD_OP_ERROR && m.seq == seq)
			held_drop(s, id);
		return -1;
	}
	if (held_drop(s, id) < 0)
		die("released an id we did not hold");
	return 0;
}

/* ---- scenarios: fds and control messages -------------------------------------- */

static void sc_fds(struct sess *s)
{
	int img = open_image(O_RDWR), fds[LFD_RECV_MAX_FDS], i;
	uint32_t seq;
	struct pkt p;
	size_t len;

	for (i = 0; i < LFD_RECV_MAX_FDS; i++)
		fds[i] = img;

	seq = ++s->seq;
	len = enc_attach(g_buf, seq, 0, 0, 0, 0);
	p = pkt(g_buf, len, NULL, 0);
	run_case(s, "attach-no-fd", &p, R(LFD_R_FD_COUNT), seq);

	seq = ++s->seq;
	len = enc_attach(g_buf, seq, 0, 0, 0, 0);
	p = pkt(g_buf, len, fds, 2);
	run_case(s, "attach-2-fds", &p, R(LFD_R_FD_COUNT), seq);

	seq = ++s->seq;
	len = enc_attach(g_buf, seq, 0, 0, 0, 0);
	p = pkt(g_buf, len, fds, 250);
	run_case(s, "attach-250-fds", &p, R(LFD_R_FD_COUNT), seq);

	seq = ++s->seq;
	len = enc_list(g_buf, seq);
	p = pkt(g_buf, len, fds, LFD_RECV_MAX_FDS);
	run_case(s, "list-253-fds", &p, R(LFD_R_FD_COUNT), seq);

	seq = ++s->seq;
	len = enc_list(g_buf, seq);
	p = pkt(g_buf, len, fds, 1);
	run_case(s, "list-1-fd", &p, R(LFD_R_FD_COUNT), seq);

	seq = ++s->seq;
	len = enc_hello(g_buf, seq, 1, 1);
	p = pkt(g_buf, len, fds, 1);
	run_case(s, "hello-1-fd", &p, R(LFD_R_FD_COUNT), seq);

	seq = ++s->seq;
	len = enc_release(g_buf, seq, 1, 0);
	p = pkt(g_buf, len, fds, 1);
	run_case(s, "release-1-fd", &p, R(LFD_R_FD_COUNT), seq);

	/* Two SCM_RIGHTS control messages: Linux merges their fds into one
	 * list on the way (scm_fp_copy), so the helper sees one message with
	 * two fds.  Either reason refuses it; every fd must be closed. */
	seq = ++s->seq;
	len = enc_attach(g_buf, seq, 0, 0, 0, 0);
	p = pkt(g_buf, len, fds, 2);
	p.split = 2;
	run_case(s, "attach-two-scm-rights-cmsgs", &p,
		 R(LFD_R_FD_COUNT) | R(LFD_R_CONTROL), seq);

	seq = ++s->seq;
	len = enc_attach(g_buf, seq, 0, 0, 0, 0);
	p = pkt(g_buf, len, fds, 250);
	p.split = 2;
	run_case(s, "attach-two-cmsgs-250-fds", &p,
		 R(LFD_R_FD_COUNT) | R(LFD_R_CONTROL), seq);

	/* SCM_CREDENTIALS reaches only a receiver that set SO_PASSCRED; the
	 * helper does not, so the kernel drops it and the request is served
	 * as if it were not there (with SO_PASSCRED set on the helper's end
	 * by a hostile spawner: see sockopts, CONTROL).  What must not
	 * happen is any other answer, or the identity coming from it. */
	seq = ++s->seq;
	len = enc_list(g_buf, seq);
	p = pkt(g_buf, len, NULL, 0);
	p.creds = 1;
	run_case(s, "list-scm-credentials", &p, R_SERVED | R(LFD_R_CONTROL), seq);

	seq = ++s->seq;
	len = enc_hello(g_buf, seq, 1, 1);
	p = pkt(g_buf, len, NULL, 0);
	p.creds = 1;
	run_case(s, "hello-scm-credentials", &p, R_SERVED | R(LFD_R_CONTROL), seq);

	seq = ++s->seq;
	len = enc_attach(g_buf, seq, 0, 0, 0, 0);
	p = pkt(g_buf, len, fds, 2);
	p.creds = 1;
	run_case(s, "attach-2-fds-scm-credentials", &p,
		 R(LFD_R_FD_COUNT) | R(LFD_R_CONTROL), seq);
	close(img);
}

/* ---- scenarios: malformed messages ------------------------------------------------ */

static void sc_truncated(struct sess *s)
{
	uint8_t body[64];
	int img = open_image(O_RDWR);
	uint32_t seq;
	struct pkt p;
	size_t len;

	memset(body, 0, sizeof(body));
	seq = ++s->seq;
	len = enc_list(g_buf, seq);
	p = pkt(g_buf, 10, NULL, 0);
	run_case(s, "truncated-header-10", &p, R(LFD_R_MALFORMED), 0);
	p = pkt(g_buf, 15, NULL, 0);
	run_case(s, "truncated-header-15", &p, R(LFD_R_MALFORMED), 0);

	/* ATTACH cut to 20 body bytes, body_len saying 20 and saying 32. */
	seq = ++s->seq;
	len = raw_msg(g_buf, LFD_MAGIC, 1, LFD_OP_ATTACH, seq, 20, body, 20);
	p = pkt(g_buf, len, &img, 1);
	run_case(s, "truncated-attach-body", &p, R(LFD_R_MALFORMED), seq);
	seq = ++s->seq;
	len = raw_msg(g_buf, LFD_MAGIC, 1, LFD_OP_ATTACH, seq, 32, body, 20);
	p = pkt(g_buf, len, &img, 1);
	run_case(s, "truncated-attach-body-len-32", &p, R(LFD_R_MALFORMED), seq);

	seq = ++s->seq;
	len = raw_msg(g_buf, LFD_MAGIC, 1, LFD_OP_HELLO, seq, 0, NULL, 0);
	p = pkt(g_buf, len, NULL, 0);
	run_case(s, "truncated-hello-no-body", &p, R(LFD_R_MALFORMED), seq);

	seq = ++s->seq;
	len = raw_msg(g_buf, LFD_MAGIC, 1, LFD_OP_RELEASE, seq, 4, body, 4);
	p = pkt(g_buf, len, NULL, 0);
	run_case(s, "truncated-release-body", &p, R(LFD_R_MALFORMED), seq);

	/* Too long by one byte: a LIST with a stray body. */
	seq = ++s->seq;
	len = raw_msg(g_buf, LFD_MAGIC, 1, LFD_OP_LIST, seq, 1, body, 1);
	p = pkt(g_buf, len, NULL, 0);
	run_case(s, "list-with-body", &p, R(LFD_R_MALFORMED), seq);
	close(img);
}

static void sc_oversized(struct sess *s)
{
	static const size_t sizes[] = { LFD_MAX_MSG, LFD_MAX_MSG + 1, 9000, 65536 };
	int img = open_image(O_RDWR);
	char name[64];
	uint32_t seq;
	struct pkt p;
	size_t i, len;

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		len = sizes[i];
		memset(g_buf, 0xa5, len);
		seq = ++s->seq;
		raw_msg(g_buf, LFD_MAGIC, 1, LFD_OP_LIST, seq,
			(uint32_t)(len - LFD_HEADER_SIZE), NULL, 0);
		p = pkt(g_buf, len, NULL, 0);
		snprintf(name, sizeof(name), "oversized-%zu", len);
		/* Cut by the kernel (MSG_TRUNC) or a LIST with a wrong body
		 * (8192 bytes arrive whole): refused either way, and the seq
		 * of the intact header is echoed. */
		run_case(s, name, &p, R(LFD_R_MALFORMED), seq);
	}
	len = 9000;
	memset(g_buf, 0, len);
	seq = ++s->seq;
	raw_msg(g_buf, LFD_MAGIC, 1, LFD_OP_ATTACH, seq, (uint32_t)(len - LFD_HEADER_SIZE), NULL, 0);
	p = pkt(g_buf, len, &img, 1);
	run_case(s, "oversized-attach-with-fd", &p, R(LFD_R_MALFORMED), seq);
	close(img);
}

static void sc_zero(struct sess *s)
{
	int img = open_image(O_RDWR);
	struct pkt p = pkt(g_buf, 0, NULL, 0);

	run_case(s, "zero-length", &p, R(LFD_R_MALFORMED), 0);
	p = pkt(g_buf, 0, &img, 1);
	run_case(s, "zero-length-with-fd", &p, R(LFD_R_MALFORMED), 0);
	p = pkt(g_buf, 1, &img, 1);
	g_buf[0] = 'L';
	run_case(s, "one-byte-with-fd", &p, R(LFD_R_MALFORMED), 0);
	close(img);
}

static void sc_magic(struct sess *s)
{
	uint8_t body[8] = { 0 };
	uint32_t seq;
	struct pkt p;
	size_t len;

	seq = ++s->seq;
	len = raw_msg(g_buf, 0x4546504cu, 1, LFD_OP_LIST, seq, 0, NULL, 0);
	p = pkt(g_buf, len, NULL, 0);
	run_case(s, "bad-magic", &p, R(LFD_R_MALFORMED), seq);

	seq = ++s->seq;
	len = raw_msg(g_buf, 0, 0, 0, seq, 0, NULL, 0);
	p = pkt(g_buf, len, NULL, 0);
	run_case(s, "all-zero-header", &p, R(LFD_R_MALFORMED), seq);

	seq = ++s->seq;
	len = raw_msg(g_buf, LFD_MAGIC, 1, LFD_OP_LIST, seq, UINT32_MAX, NULL, 0);
	p = pkt(g_buf, len, NULL, 0);
	run_case(s, "body-len-max", &p, R(LFD_R_MALFORMED), seq);

	seq = ++s->seq;
	len = raw_msg(g_buf, LFD_MAGIC, 1, LFD_OP_RELEASE, seq, 0x80000008u, body, 8);
	p = pkt(g_buf, len, NULL, 0);
	run_case(s, "body-len-negative", &p, R(LFD_R_MALFORMED), seq);
}

static void sc_reserved(struct sess *s)
{
	uint8_t body[32];
	int img = open_image(O_RDWR);
	uint32_t seq;
	struct pkt p;
	size_t len;

	memset(body, 0, sizeof(body));
	le16(body, 1);
	le16(body + 2, 1);
	le32(body + 4, 1);
	seq = ++s->seq;
	len = raw_msg(g_buf, LFD_MAGIC, 1, LFD_OP_HELLO, seq, 8, body, 8);
	p = pkt(g_buf, len, NULL, 0);
	run_case(s, "hello-reserved-set", &p, R(LFD_R_MALFORMED), seq);

	memset(body, 0, sizeof(body));
	le64(body + 24, 1ull << 63);
	seq = ++s->seq;
	len = raw_msg(g_buf, LFD_MAGIC, 1, LFD_OP_ATTACH, seq, 32, body, 32);
	p = pkt(g_buf, len, &img, 1);
	run_case(s, "attach-reserved-set", &p, R(LFD_R_MALFORMED), seq);
	close(img);
}

static void sc_version(struct sess *s)
{
	static const uint16_t versions[] = { 0, 2, 0x7fff, 0xffff };
	static const uint16_t ranges[][2] = {
		{ 2, 3 }, { 0, 0 }, { 1, 0 }, { 0xffff, 0xffff }, { 2, 0xffff },
	};
	char name[64];
	uint32_t seq;
	struct pkt p;
	size_t i, len;

	for (i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
		seq = ++s->seq;
		len = raw_msg(g_buf, LFD_MAGIC, versions[i], LFD_OP_LIST, seq, 0, NULL, 0);
		p = pkt(g_buf, len, NULL, 0);
		snprintf(name, sizeof(name), "header-version-%u", versions[i]);
		run_case(s, name, &p, R(LFD_R_VERSION), seq);
	}
	for (i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
		seq = ++s->seq;
		len = enc_hello(g_buf, seq, ranges[i][0], ranges[i][1]);
		p = pkt(g_buf, len, NULL, 0);
		snprintf(name, sizeof(name), "hello-range-%u-%u", ranges[i][0], ranges[i][1]);
		run_case(s, name, &p, R(LFD_R_VERSION), seq);
	}
	/* A range that contains 1 is fine, however wide, and a second HELLO
	 * changes nothing. */
	seq = UINT32_MAX;
	len = enc_hello(g_buf, seq, 0, 0xffff);
	p = pkt(g_buf, len, NULL, 0);
	run_case(s, "hello-range-0-65535", &p, R_SERVED, seq);
}

static void sc_unknown_op(struct sess *s)
{
	static const uint16_t bare[] = { 0, 7, 8, 0x7f, 0x80, 0x87, 0xfe, 0x100, 0x8001, 0xffff };
	uint8_t body[LFD_ERROR_SIZE];
	int img = open_image(O_RDWR);
	struct lfd_msg m;
	char name[64];
	uint32_t seq;
	struct pkt p;
	size_t i, len;

	for (i = 0; i < sizeof(bare) / sizeof(bare[0]); i++) {
		seq = ++s->seq;
		len = raw_msg(g_buf, LFD_MAGIC, 1, bare[i], seq, 0, NULL, 0);
		p = pkt(g_buf, len, NULL, 0);
		snprintf(name, sizeof(name), "op-%#x", bare[i]);
		run_case(s, name, &p, R(LFD_R_UNKNOWN_OP), seq);
	}
	/* Well-formed replies and errors sent as requests. */
	seq = ++s->seq;
	msg_init(&m, LFD_OP_HELLO | LFD_REPLY, seq);
	len = encode(g_buf, &m);
	p = pkt(g_buf, len, NULL, 0);
	run_case(s, "op-hello-reply", &p, R(LFD_R_UNKNOWN_OP), seq);

	seq = ++s->seq;
	msg_init(&m, LFD_OP_RELEASE | LFD_REPLY, seq);
	len = encode(g_buf, &m);
	p = pkt(g_buf, len, NULL, 0);
	run_case(s, "op-release-reply", &p, R(LFD_R_UNKNOWN_OP), seq);

	seq = ++s->seq;
	msg_init(&m, LFD_OP_RELEASE_BATCH | LFD_REPLY, seq);
	m.u.release_batch_rep.count = 1;
	m.u.release_batch_rep.out[0].id = 1;
	len = encode(g_buf, &m);
	p = pkt(g_buf, len, NULL, 0);
	run_case(s, "op-release-batch-reply", &p, R(LFD_R_UNKNOWN_OP), seq);

	seq = ++s->seq;
	msg_init(&m, LFD_OP_LIST | LFD_REPLY, seq);
	m.u.list_rep.count = 1;
	m.u.list_rep.dev[0].id = 1;
	len = encode(g_buf, &m);
	p = pkt(g_buf, len, NULL, 0);
	run_case(s, "op-list-reply", &p, R(LFD_R_UNKNOWN_OP), seq);

	seq = ++s->seq;
	lfd_make_error(&m, seq, EPERM, LFD_R_NOT_AUTHORIZED, "an error as a request");
	len = encode(g_buf, &m);
	p = pkt(g_buf, len, NULL, 0);
	run_case(s, "op-error", &p, R(LFD_R_UNKNOWN_OP), seq);

	/* An attach reply carries an fd: with one, the op is what is wrong
	 * (the order of the checks is the helper's choice). */
	seq = ++s->seq;
	msg_init(&m, LFD_OP_ATTACH | LFD_REPLY, seq);
	len = encode(g_buf, &m);
	p = pkt(g_buf, len, &img, 1);
	run_case(s, "op-attach-reply-with-fd", &p, R(LFD_R_UNKNOWN_OP) | R(LFD_R_FD_COUNT), seq);

	memset(body, 0, sizeof(body));
	seq = ++s->seq;
	len = raw_msg(g_buf, LFD_MAGIC, 1, 0x1234, seq, sizeof(body), body, sizeof(body));
	p = pkt(g_buf, len, &img, 1);
	run_case(s, "op-0x1234-with-fd", &p, R(LFD_R_UNKNOWN_OP), seq);
	close(img);
}

/* ---- scenario: requests before HELLO, in a session of its own ----------------------- */

static int expect_reply(struct sess *s, const char *name, const struct pkt *p,
			unsigned want, int64_t seq, struct lfd_msg *m)
{
	char why[512];
	int outcome = exchange(s, p, want, seq, m, why, sizeof(why));

	if (outcome < 0)
		fail(name, "%s", why);
	return outcome;
}

static int expect_only(struct sess *s, const char *name, const struct pkt *p,
		       unsigned want, int64_t seq)
{
	struct lfd_msg m;

	return expect_reply(s, name, p, want, seq, &m);
}

static int fds_unchanged(struct sess *s, const char *name)
{
	uint64_t v;

	if (fds_of(s, &v) < 0 || v != (uint64_t)(s->base_fds + FDS_PER_DEVICE * s->held)) {
		fail(name, "helper fds %" PRIu64 ", want %d", v,
		     s->base_fds + FDS_PER_DEVICE * s->held);
		return -1;
	}
	return 0;
}

static void sc_no_hello(struct sess *main_s)
{
	int img = open_image(O_RDWR), bad = g.failures;
	const char *name = "no-hello";
	struct sess t;
	uint32_t seq;
	struct pkt p;
	size_t len;

	(void)main_s;
	if (session_start(&t, 0, 0) < 0)
		die("session: %s", strerror(errno));
	seq = ++t.seq;
	len = enc_list(g_buf, seq);
	p = pkt(g_buf, len, NULL, 0);
	if (expect_only(&t, "no-hello-list", &p, R(LFD_R_NO_HELLO), seq) < 0 ||
	    identify(&t, name) < 0)
		goto out;
	seq = ++t.seq;
	len = enc_release(g_buf, seq, 1, 0);
	p = pkt(g_buf, len, NULL, 0);
	expect_only(&t, "no-hello-release", &p, R(LFD_R_NO_HELLO), seq);
	seq = ++t.seq;
	len = enc_attach(g_buf, seq, 0, 0, 0, 0);
	p = pkt(g_buf, len, &img, 1);
	expect_only(&t, "no-hello-attach", &p, R(LFD_R_NO_HELLO), seq);
	seq = ++t.seq;
	len = enc_hello(g_buf, seq, 2, 3);
	p = pkt(g_buf, len, NULL, 0);
	expect_only(&t, "no-hello-bad-hello", &p, R(LFD_R_VERSION), seq);
	/* A refused HELLO is no HELLO. */
	seq = ++t.seq;
	len = enc_list(g_buf, seq);
	p = pkt(g_buf, len, NULL, 0);
	expect_only(&t, "no-hello-list-after-bad-hello", &p, R(LFD_R_NO_HELLO), seq);
	fds_unchanged(&t, name);
	seq = ++t.seq;
	len = enc_hello(g_buf, seq, 1, 1);
	p = pkt(g_buf, len, NULL, 0);
	expect_only(&t, "no-hello-then-hello", &p, R_SERVED, seq);
	seq = ++t.seq;
	len = enc_list(g_buf, seq);
	p = pkt(g_buf, len, NULL, 0);
	expect_only(&t, "no-hello-then-list", &p, R_SERVED, seq);
	fds_unchanged(&t, name);
out:
	session_close(&t, name);
	if (g.failures == bad)
		ok(name, "reason NO_HELLO for LIST, RELEASE and ATTACH (fd closed) "
		   "before HELLO and after a refused one; served after HELLO");
	close(img);
}

/* ---- scenario: seeded random messages ------------------------------------------------- */

static uint64_t rnd(uint64_t *st)
{
	uint64_t z = (*st += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static size_t wire_body_size(uint16_t op, uint64_t *st)
{
	switch (op) {
	case LFD_OP_HELLO:			return LFD_HELLO_REQ_SIZE;
	case LFD_OP_HELLO | LFD_REPLY:		return LFD_HELLO_REP_SIZE;
	case LFD_OP_ATTACH:			return LFD_ATTACH_REQ_SIZE;
	case LFD_OP_ATTACH | LFD_REPLY:		return LFD_DEVICE_SIZE;
	case LFD_OP_RELEASE:			return LFD_RELEASE_REQ_SIZE;
	case LFD_OP_RELEASE | LFD_REPLY:	return LFD_RELEASE_REP_SIZE;
	case LFD_OP_LIST:			return 0;
	case LFD_OP_LIST | LFD_REPLY:		return LFD_LIST_HEAD_SIZE + LFD_DEVICE_SIZE * (rnd(st) % 3);
	case LFD_OP_ERROR:			return LFD_ERROR_SIZE;
	case LFD_OP_ATTACH_BATCH:		return LFD_BATCH_HEAD_SIZE + LFD_ATTACH_REQ_SIZE * (rnd(st) % 3);
	case LFD_OP_RELEASE_BATCH:		return LFD_BATCH_HEAD_SIZE + LFD_RELEASE_ID_SIZE * (rnd(st) % 3);
	default:				return rnd(st) % 64;
	}
}

static void random_fill(uint64_t *st, uint8_t *b, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		b[i] = (uint8_t)rnd(st);
}

/* A valid message of a random op with random fields. */
static size_t random_valid(uint64_t *st, uint8_t *b)
{
	static const uint16_t ops[] = {
		LFD_OP_HELLO, LFD_OP_ATTACH, LFD_OP_RELEASE, LFD_OP_LIST,
		LFD_OP_HELLO | LFD_REPLY, LFD_OP_ATTACH | LFD_REPLY,
		LFD_OP_RELEASE | LFD_REPLY, LFD_OP_LIST | LFD_REPLY, LFD_OP_ERROR,
	};
	struct lfd_msg m;
	uint32_t i;

	msg_init(&m, ops[rnd(st) % (sizeof(ops) / sizeof(ops[0]))], (uint32_t)rnd(st));
	/* Small values half the time, so that in-range fields occur. */
	random_fill(st, (uint8_t *)&m.u, sizeof(m.u));
	switch (m.op) {
	case LFD_OP_HELLO:
		if (rnd(st) & 1) {
			m.u.hello_req.min_version = (uint16_t)(rnd(st) % 3);
			m.u.hello_req.max_version = (uint16_t)(rnd(st) % 3);
		}
		break;
	case LFD_OP_RELEASE:
		if (rnd(st) & 1)
			m.u.release_req.timeout_ms = (uint32_t)(rnd(st) % 700000);
		break;
	case LFD_OP_LIST | LFD_REPLY:
		m.u.list_rep.count = (uint32_t)(rnd(st) % 4);
		break;
	case LFD_OP_ERROR:
		i = (uint32_t)(rnd(st) % LFD_MSG_TEXT);
		m.u.error.text[i] = '\0';
		break;
	}
	return encode(b, &m);
}

static size_t random_msg(uint64_t *st, uint8_t *b)
{
	static const uint16_t ops[] = {
		0, 1, 2, 3, 4, 5, 6, 7, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86,
		0xfe, 0xff, 0xffff,
	};
	size_t len, blen, i, flips;
	uint16_t op;

	switch (rnd(st) % 4) {
	case 0:		/* noise */
		len = rnd(st) % 80;
		random_fill(st, b, len);
		return len;
	case 1:		/* a right header, a body of the right size or not */
		op = ops[rnd(st) % (sizeof(ops) / sizeof(ops[0]))];
		blen = (rnd(st) % 4) ? wire_body_size(op, st) : rnd(st) % 300;
		random_fill(st, b + LFD_HEADER_SIZE, blen);
		if (rnd(st) % 2)
			memset(b + LFD_HEADER_SIZE, 0, blen);
		raw_msg(b, LFD_MAGIC, 1, op, (uint32_t)rnd(st), (uint32_t)blen, NULL, 0);
		if (op == LFD_OP_LIST + LFD_REPLY && blen >= 4 && rnd(st) % 2)
			le32(b + LFD_HEADER_SIZE, (uint32_t)((blen - 8) / LFD_DEVICE_SIZE));
		if (op == LFD_OP_RELEASE_BATCH && blen >= 8 && rnd(st) % 2)
			le32(b + LFD_HEADER_SIZE, (uint32_t)((blen - 8) / LFD_RELEASE_ID_SIZE));
		return LFD_HEADER_SIZE + blen;
	case 2:		/* a valid message with a few bytes changed */
		len = random_valid(st, b);
		flips = rnd(st) % 3;
		for (i = 0; i < flips; i++)
			b[rnd(st) % len] = (uint8_t)rnd(st);
		return len;
	default:	/* any header fields, any length */
		blen = rnd(st) % 120;
		random_fill(st, b + LFD_HEADER_SIZE, blen);
		raw_msg(b, LFD_MAGIC, (uint16_t)(rnd(st) % 4 ? 1 : rnd(st)),
			(uint16_t)rnd(st), (uint32_t)rnd(st),
			(uint32_t)(rnd(st) % 4 ? blen : rnd(st) % 130), NULL, 0);
		return LFD_HEADER_SIZE + blen;
	}
}

/*
 * What a helper that follows PROTOCOL.md must answer to these bytes sent
 * without fds by a session after HELLO that holds no device, and the seq it
 * must echo (lfd_decode fills it in whenever the header could be read).
 */
static unsigned predict(const uint8_t *b, size_t len, uint32_t *seq)
{
	struct lfd_msg m;
	enum lfd_reason r = lfd_decode(b, len, &m);
	const struct lfd_hello_req *h = &m.u.hello_req;

	*seq = m.seq;
	if (r != LFD_R_NONE)
		return R(r);
	switch (m.op) {
	case LFD_OP_HELLO:
		return h->min_version <= 1 && h->max_version >= 1 ? R_SERVED : R(LFD_R_VERSION);
	case LFD_OP_ATTACH:
		return R(LFD_R_FD_COUNT);
	case LFD_OP_RELEASE:
		return R(LFD_R_UNKNOWN_DEVICE) |
		       (m.u.release_req.timeout_ms > LFD_MAX_TIMEOUT_MS ? R(LFD_R_BAD_OPTION) : 0);
	case LFD_OP_LIST:
		return R_SERVED;
	case LFD_OP_ATTACH | LFD_REPLY:
	case LFD_OP_ATTACH_BATCH | LFD_REPLY:
		return R(LFD_R_UNKNOWN_OP) | R(LFD_R_FD_COUNT);
	case LFD_OP_ATTACH_BATCH:	/* 1 .. 64 entries, and no fd sent */
		return R(LFD_R_FD_COUNT);
	case LFD_OP_RELEASE_BATCH:	/* each id unknown, or refused whole */
		return R_SERVED | R(LFD_R_BAD_OPTION);
	default:
		return R(LFD_R_UNKNOWN_OP);
	}
}

static void sc_random(struct sess *s)
{
	unsigned seen[LFD_R_MAX + 1] = { 0 }, i, r;
	uint64_t st = g.seed;
	char why[512], name[64], summary[512];
	struct lfd_msg m;
	uint32_t seq;
	unsigned want;
	size_t len, used = 0;
	struct pkt p;
	int outcome;

	for (i = 0; i < g.random_msgs; i++) {
		len = random_msg(&st, g_buf);
		want = predict(g_buf, len, &seq);
		p = pkt(g_buf, len, NULL, 0);
		outcome = exchange(s, &p, want, seq, &m, why, sizeof(why));
		if (outcome < 0) {
			snprintf(name, sizeof(name), "random-%u", i);
			fail(name, "seed %#" PRIx64 ", %zu bytes starting %02x%02x%02x%02x "
			     "%02x%02x %02x%02x: %s", g.seed, len, g_buf[0], g_buf[1],
			     g_buf[2], g_buf[3], g_buf[4], g_buf[5], g_buf[6], g_buf[7], why);
			return;
		}
		seen[outcome]++;
		if ((i + 1) % 500 == 0 && settle(s, why, sizeof(why)) < 0) {
			fail("random", "after %u messages: %s", i + 1, why);
			return;
		}
	}
	if (settle(s, why, sizeof(why)) < 0) {
		fail("random", "after %u messages: %s", g.random_msgs, why);
		return;
	}
	summary[0] = '\0';
	for (r = 0; r <= LFD_R_MAX; r++)
		if (seen[r])
			used += (size_t)snprintf(summary + used, used < sizeof(summary) ?
						 sizeof(summary) - used : 0, " %s %u",
						 r ? rname(r) : "served", seen[r]);
	ok("random", "%u messages (seed %#" PRIx64 "), each answered as predicted:%s",
	   g.random_msgs, g.seed, summary);
}

/* ---- scenario: out-of-range numbers in every field -------------------------------------- */

struct attach_case {
	const char *name;
	uint32_t flags, ss;
	uint64_t off, lim;
};

static void sc_numbers(struct sess *s)
{
	struct stat st;
	int img = open_image(O_RDWR);
	uint64_t size;
	const struct attach_case *c;
	struct lfd_device dev;
	struct lfd_msg m;
	char why[512];
	uint32_t seq, id;
	struct pkt p;
	size_t len;
	int i, kept;

	if (fstat(img, &st) < 0)
		die("fstat: %s", strerror(errno));
	size = (uint64_t)st.st_size;
	{
		const struct attach_case cases[] = {
			{ "attach-flags-0x10", 0x10, 0, 0, 0 },
			{ "attach-flags-0x80000000", 0x80000000u, 0, 0, 0 },
			{ "attach-flags-all", UINT32_MAX, 0, 0, 0 },
			{ "attach-sector-size-max", 0, UINT32_MAX, 0, 0 },
			{ "attach-sector-size-0x80000000", 0, 0x80000000u, 0, 0 },
			{ "attach-sector-size-1000", 0, 1000, 0, 0 },
			{ "attach-sector-size-1", 0, 1, 0, 0 },
			{ "attach-sector-size-256", 0, 256, 0, 0 },
			{ "attach-sector-size-131072", 0, 131072, 0, 0 },
			{ "attach-offset-unaligned-4096", 0, 4096, 512, 0 },
			{ "attach-offset-unaligned-1", 0, 0, 1, 0 },
			{ "attach-offset-max", 0, 0, UINT64_MAX, 0 },
			{ "attach-offset-negative", 0, 0, 1ull << 63, 0 },
			{ "attach-offset-minus-512", 0, 0, (uint64_t)-512, 0 },
			{ "attach-offset-at-end", 0, 0, size, 0 },
			{ "attach-sizelimit-max", 0, 0, 0, UINT64_MAX },
			{ "attach-sizelimit-negative", 0, 0, 0, 1ull << 63 },
			{ "attach-sizelimit-overflow", 0, 0, 512, (uint64_t)-512 },
			{ "attach-sizelimit-past-end", 0, 0, 0, size + 512 },
			{ "attach-offset-sizelimit-past-end", 0, 0, size - 512, 1024 },
			{ NULL, 0, 0, 0, 0 },
		};

		for (c = cases; c->name; c++) {
			seq = ++s->seq;
			len = enc_attach(g_buf, seq, c->flags, c->ss, c->off, c->lim);
			p = pkt(g_buf, len, &img, 1);
			run_case(s, c->name, &p, R(LFD_R_BAD_OPTION), seq);
		}
	}

	{
		const uint32_t ids[] = { 0, 1, 0x7fffffffu, 0x80000000u, UINT32_MAX };
		char name[64];

		for (i = 0; i < (int)(sizeof(ids) / sizeof(ids[0])); i++) {
			seq = ++s->seq;
			len = enc_release(g_buf, seq, ids[i], 0);
			p = pkt(g_buf, len, NULL, 0);
			snprintf(name, sizeof(name), "release-id-%#x", ids[i]);
			run_case(s, name, &p, R(LFD_R_UNKNOWN_DEVICE), seq);
		}
	}
	/* Two things wrong: which one is reported first is the helper's
	 * choice. */
	seq = ++s->seq;
	len = enc_release(g_buf, seq, UINT32_MAX, UINT32_MAX);
	p = pkt(g_buf, len, NULL, 0);
	run_case(s, "release-unknown-id-timeout-max", &p,
		 R(LFD_R_UNKNOWN_DEVICE) | R(LFD_R_BAD_OPTION), seq);

	seq = UINT32_MAX;
	len = enc_list(g_buf, seq);
	p = pkt(g_buf, len, NULL, 0);
	run_case(s, "list-seq-max", &p, R_SERVED, seq);
	seq = 0;
	len = enc_list(g_buf, seq);
	p = pkt(g_buf, len, NULL, 0);
	run_case(s, "list-seq-0", &p, R_SERVED, seq);

	/* Timeouts over the maximum on a real device. */
	if (attach(s, "release-timeout", img, 0, &g.image_devs, &dev, NULL) < 0)
		goto out;
	id = dev.id;
	{
		const uint32_t timeouts[] = { LFD_MAX_TIMEOUT_MS + 1, 0x80000000u, UINT32_MAX };
		char name[64];

		for (i = 0; i < 3; i++) {
			snprintf(name, sizeof(name), "release-timeout-%u", timeouts[i]);
			seq = ++s->seq;
			len = enc_release(g_buf, seq, id, timeouts[i]);
			p = pkt(g_buf, len, NULL, 0);
			if (expect_only(s, name, &p, R(LFD_R_BAD_OPTION), seq) < 0)
				continue;
			/* PROTOCOL.md: "after any reply the id is gone from the
			 * session".  Refused before acting, a helper may also keep
			 * it; either way LIST and the kernel must agree. */
			seq = ++s->seq;
			len = enc_list(g_buf, seq);
			p = pkt(g_buf, len, NULL, 0);
			if (expect_reply(s, name, &p, R_SERVED, seq, &m) < 0)
				continue;
			kept = m.u.list_rep.count == 1 && m.u.list_rep.dev[0].id == id;
			if (!kept)
				held_drop(s, id);
			if (settle(s, why, sizeof(why)) < 0) {
				fail(name, "reason BAD_OPTION, but then: %s", why);
				continue;
			}
			ok(name, "reason BAD_OPTION (id %s)", kept ? "kept" : "dropped and device released");
			if (!kept)
				goto out;
		}
	}
	if (release(s, "release-timeout-600000", id, LFD_MAX_TIMEOUT_MS) == 0) {
		if (settle(s, why, sizeof(why)) < 0)
			fail("release-timeout-600000", "%s", why);
		else
			ok("release-timeout-600000", "reason none (released)");
	}
out:
	close(img);
}

/* ---- scenario: RELEASE of ids this session does not hold --------------------------------- */

static void sc_release_ids(struct sess *a)
{
	int img = open_image(O_RDWR);
	struct lfd_device d1, d2, db;
	struct sess b;
	char why[512];
	uint32_t seq;
	struct pkt p;
	size_t len;

	if (attach(a, "release-ids", img, 0, &g.image_devs, &d1, NULL) < 0)
		goto out;
	if (release(a, "release-ids", d1.id, 1000) < 0)
		goto out;
	seq = ++a->seq;
	len = enc_release(g_buf, seq, d1.id, 1000);
	p = pkt(g_buf, len, NULL, 0);
	run_case(a, "release-already-released", &p, R(LFD_R_UNKNOWN_DEVICE), seq);

	if (attach(a, "release-ids", img, 0, &g.image_devs, &d2, NULL) < 0)
		goto out;
	if (session_open(&b, "release-ids-session-b") < 0)
		goto out;
	/* B asks for A's id: ids are per session, B has none.  A's device
	 * must stay attached and listed in A. */
	seq = ++b.seq;
	len = enc_release(g_buf, seq, d2.id, 1000);
	p = pkt(g_buf, len, NULL, 0);
	if (run_case(&b, "release-other-sessions-id", &p, R(LFD_R_UNKNOWN_DEVICE), seq) >= 0 &&
	    settle(a, why, sizeof(why)) < 0)
		fail("release-other-sessions-id", "session A afterwards: %s", why);
	/* B gets a device of its own (its ids start over, so it is not A's
	 * id), then names A's id again. */
	if (attach(&b, "release-ids-session-b", img, 0, &g.image_devs, &db, NULL) == 0 &&
	    db.id != d2.id) {
		seq = ++b.seq;
		len = enc_release(g_buf, seq, d2.id, 1000);
		p = pkt(g_buf, len, NULL, 0);
		if (run_case(&b, "release-other-sessions-id-while-holding", &p,
			     R(LFD_R_UNKNOWN_DEVICE), seq) >= 0 &&
		    settle(a, why, sizeof(why)) < 0)
			fail("release-other-sessions-id-while-holding",
			     "session A afterwards: %s", why);
		if (release(&b, "release-own-id-in-b", db.id, 1000) == 0) {
			if (settle(&b, why, sizeof(why)) < 0 || settle(a, why, sizeof(why)) < 0)
				fail("release-own-id-in-b", "%s", why);
			else
				ok("release-own-id-in-b", "reason none: B released its device "
				   "%u; A's device %u still attached", db.id, d2.id);
		}
	}
	session_close(&b, "release-ids-session-b");
	if (settle(a, why, sizeof(why)) < 0)
		fail("release-ids", "after session B ended: %s", why);
	if (release(a, "release-ids", d2.id, 1000) == 0 && settle(a, why, sizeof(why)) < 0)
		fail("release-ids", "after the last release: %s", why);
out:
	close(img);
}

/* ---- scenario: backing fds of every wrong kind -------------------------------------------- */

static int attach_case_fd(struct sess *s, const char *name, int fd, unsigned want)
{
	uint32_t seq = ++s->seq;
	size_t len = enc_attach(g_buf, seq, 0, 0, 0, 0);
	struct pkt p = pkt(g_buf, len, &fd, 1);

	if (fd < 0) {
		fail(name, "cannot make the fd to send: %s", strerror(errno));
		return -1;
	}
	return run_case(s, name, &p, want, seq);
}

static char *dir_of(const char *path, char *buf, size_t n)
{
	char *slash;

	snprintf(buf, n, "%s", path);
	slash = strrchr(buf, '/');
	if (slash == NULL)
		snprintf(buf, n, ".");
	else if (slash == buf)
		slash[1] = '\0';
	else
		*slash = '\0';
	return buf;
}

/* The fd of a root-only file, opened read-only by root and handed over:
 * the read-only fd is the access granted, never more. */
/* --grant on a read-only attachment is refused: the owner of a node may
 * open it read-write, whatever the device's read-only flag, and reach
 * LOOP_SET_STATUS64 (partition scan, direct I/O) past the policy. */
static void rootro_grant(struct sess *s, const char *name)
{
	uint32_t seq;
	struct pkt p;
	size_t len;
	int fd;

	if (ask(B_OPEN, 0, g.rootfile, O_RDONLY, NULL, &fd) < 0 || fd < 0) {
		fail(name, "broker cannot open %s: %s", g.rootfile, strerror(errno));
		return;
	}
	seq = ++s->seq;
	len = enc_attach(g_buf, seq, LFD_ATTACH_GRANT, 0, 0, 0);
	p = pkt(g_buf, len, &fd, 1);
	run_case(s, name, &p, R(LFD_R_BAD_OPTION), seq);
	close(fd);
}

static void rootro(struct sess *s, const char *name)
{
	char why[512];
	struct lfd_device dev;
	int fd, devfd, acc;
	ssize_t n;

	if (ask(B_OPEN, 0, g.rootfile, O_RDONLY, NULL, &fd) < 0 || fd < 0) {
		fail(name, "broker cannot open %s: %s", g.rootfile, strerror(errno));
		return;
	}
	if (attach(s, name, fd, 0, &g.root_devs, &dev, &devfd) < 0) {
		close(fd);
		return;
	}
	close(fd);
	if (!(dev.flags & LFD_ATTACH_READ_ONLY)) {
		fail(name, "device flags %#x: not read-only", dev.flags);
	}
	acc = fcntl(devfd, F_GETFL) & O_ACCMODE;
	if (acc != O_RDONLY)
		fail(name, "device fd opened with access mode %d, want O_RDONLY", acc);
	n = pwrite(devfd, "x", 1, 0);
	if (n >= 0)
		fail(name, "write through the device fd succeeded");
	close(devfd);
	if (release(s, name, dev.id, 5000) < 0)
		return;
	if (settle(s, why, sizeof(why)) < 0) {
		fail(name, "%s", why);
		return;
	}
	ok(name, "reason none: served read-only (flags %#x), writes refused, file unchanged",
	   dev.flags);
}

static void peer_end(void)
{
	const char *name = "backing-helpers-own-socket";
	struct sess t;
	char why[512];
	int bad = g.failures;

	if (session_start(&t, 0, 1) < 0 || hello(&t, name) < 0) {
		session_close(&t, name);
		return;
	}
	attach_case_fd(&t, name, t.peer, R(LFD_R_BACKING_KIND));
	if (settle(&t, why, sizeof(why)) < 0)
		fail(name, "%s", why);
	/* If the helper had kept its own socket, it would never see the end. */
	session_close(&t, name);
	if (g.failures == bad)
		ok(name, "session ended cleanly after it was sent its own socket");
}

static void sc_backing(struct sess *s)
{
	char dir[PATH_MAX];
	struct lfd_device dev;
	int fd, sv[2], pv[2], img = open_image(O_RDWR), devfd;
	uint64_t index;

	fd = open(dir_of(g.image, dir, sizeof(dir)), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	attach_case_fd(s, "backing-directory", fd, R(LFD_R_BACKING_KIND));
	close(fd);

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		die("socketpair: %s", strerror(errno));
	attach_case_fd(s, "backing-socket", sv[0], R(LFD_R_BACKING_KIND));
	close(sv[0]);
	close(sv[1]);
	attach_case_fd(s, "backing-own-connection", s->sock, R(LFD_R_BACKING_KIND));

	if (pipe2(pv, O_CLOEXEC) < 0)
		die("pipe: %s", strerror(errno));
	attach_case_fd(s, "backing-pipe", pv[0], R(LFD_R_BACKING_KIND));
	close(pv[0]);
	close(pv[1]);

	fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	attach_case_fd(s, "backing-dev-null", fd, R(LFD_R_BACKING_KIND));
	close(fd);

	fd = eventfd(0, EFD_CLOEXEC);
	attach_case_fd(s, "backing-eventfd", fd, R(LFD_R_BACKING_KIND));
	close(fd);

	fd = open(g.image, O_PATH | O_CLOEXEC);
	attach_case_fd(s, "backing-o-path", fd, R(LFD_R_BACKING_ACCESS));
	close(fd);
	fd = open(g.image, O_WRONLY | O_CLOEXEC);
	attach_case_fd(s, "backing-write-only", fd, R(LFD_R_BACKING_ACCESS));
	close(fd);
	fd = open(g.image, O_RDWR | O_APPEND | O_CLOEXEC);
	attach_case_fd(s, "backing-o-append", fd, R(LFD_R_BACKING_ACCESS));
	close(fd);
	fd = open(g.image, O_RDONLY | O_APPEND | O_CLOEXEC);
	attach_case_fd(s, "backing-read-only-o-append", fd, R(LFD_R_BACKING_ACCESS));
	close(fd);

	fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	attach_case_fd(s, "backing-proc-file", fd, R(LFD_R_BACKING_FS));
	close(fd);
	fd = open("/sys/kernel/uevent_seqnum", O_RDONLY | O_CLOEXEC);
	attach_case_fd(s, "backing-sysfs-file", fd, R(LFD_R_BACKING_FS));
	close(fd);

	/* /dev/loop-control and a free loop device, opened by root for us. */
	if (ask(B_OPEN, 0, "/dev/loop-control", O_RDWR, NULL, &fd) < 0)
		fd = -1;
	attach_case_fd(s, "backing-loop-control", fd, R(LFD_R_BACKING_LOOP));
	if (fd >= 0)
		close(fd);
	/* The device the helper's own LOOP_CTL_GET_FREE will name next: a
	 * device backed by itself. */
	if (ask(B_NEXTFREE, 0, NULL, 0, &index, &fd) < 0)
		fd = -1;
	attach_case_fd(s, "backing-next-free-loop-device", fd, R(LFD_R_BACKING_LOOP));
	if (fd >= 0)
		close(fd);

	/* A loop device this session attached, as the backing of another. */
	if (attach(s, "backing-loop-device", img, 0, &g.image_devs, &dev, &devfd) == 0) {
		attach_case_fd(s, "backing-loop-device", devfd, R(LFD_R_BACKING_LOOP));
		close(devfd);
		release(s, "backing-loop-device", dev.id, 5000);
	}
	close(img);

	if (g.rootfile) {
		rootro(s, "backing-root-only-file-read-only-fd");
		if (s->features & LFD_FEAT_GRANT)
			rootro_grant(s, "backing-root-only-file-read-only-fd-grant");
	}
	if (g.mode == MODE_SPAWN)
		peer_end();
}

/* ---- scenario: quota --------------------------------------------------------------------- */

static void sc_limit(struct sess *a)
{
	int img = open_image(O_RDWR), i, n = (int)a->max_devices;
	struct lfd_device dev;
	uint32_t ids[LFD_MAX_DEVICES], seq;
	struct sess b;
	char why[512];
	struct pkt p;
	size_t len;

	if (n < 1 || n >= LFD_MAX_DEVICES) {
		fail("limit", "hello says max_devices %d: configure a small max-devices-per-user", n);
		goto out;
	}
	for (i = 0; i < n; i++) {
		if (attach(a, "limit", img, 0, &g.image_devs, &dev, NULL) < 0)
			goto out;
		ids[i] = dev.id;
	}
	seq = ++a->seq;
	len = enc_attach(g_buf, seq, 0, 0, 0, 0);
	p = pkt(g_buf, len, &img, 1);
	run_case(a, "limit-attach-past-max-devices-per-user", &p, R(LFD_R_QUOTA_USER), seq);

	/* The limit is per user, across sessions. */
	if (session_open(&b, "limit-session-b") < 0)
		goto out;
	seq = ++b.seq;
	len = enc_attach(g_buf, seq, 0, 0, 0, 0);
	p = pkt(g_buf, len, &img, 1);
	run_case(&b, "limit-second-session-same-user", &p, R(LFD_R_QUOTA_USER), seq);
	if (release(a, "limit", ids[--n], 1000) < 0)
		goto out_b;
	if (attach(&b, "limit-slot-moves-to-session-b", img, 0, &g.image_devs, &dev, NULL) < 0)
		goto out_b;
	seq = ++b.seq;
	len = enc_attach(g_buf, seq, 0, 0, 0, 0);
	p = pkt(g_buf, len, &img, 1);
	run_case(&b, "limit-session-b-past-limit", &p, R(LFD_R_QUOTA_USER), seq);
out_b:
	/* B's slot comes free when its session ends, whatever it held. */
	session_close(&b, "limit-session-b");
	if (attach(a, "limit-slot-freed-by-session-end", img, 0, &g.image_devs, &dev, NULL) == 0) {
		ids[n++] = dev.id;
		if (settle(a, why, sizeof(why)) < 0)
			fail("limit-slot-freed-by-session-end", "%s", why);
		else
			ok("limit-slot-freed-by-session-end", "reason none (served)");
	}
	while (n > 0)
		if (release(a, "limit", ids[--n], 1000) < 0)
			break;
	if (settle(a, why, sizeof(why)) < 0)
		fail("limit", "after releasing all: %s", why);
out:
	close(img);
}

/* ---- scenario: a client that cannot receive the reply's fd ------------------------------ */

/* Attach with RLIMIT_NOFILE at the lowest free fd: the kernel cannot
 * install the device fd, drops it and says MSG_CTRUNC.  The record still
 * arrives; the session holds the device. */
static int attach_fd_dropped(struct sess *s, const char *name, int img, uint32_t *id)
{
	struct rlimit old, low;
	struct lfd_msg m;
	uint32_t seq = ++s->seq;
	size_t len = enc_attach(g_buf, seq, 0, 0, 0, 0);
	struct pkt p = pkt(g_buf, len, &img, 1);
	int probe, fd, rflags = 0, nfds = 0, rc;

	probe = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (probe < 0)
		die("/dev/null: %s", strerror(errno));
	close(probe);
	if (getrlimit(RLIMIT_NOFILE, &old) < 0)
		die("getrlimit: %s", strerror(errno));
	low = old;
	low.rlim_cur = (rlim_t)probe;
	if (send_pkt(s->sock, &p, 0) < 0)
		die("send: %s", strerror(errno));
	if (setrlimit(RLIMIT_NOFILE, &low) < 0)
		die("setrlimit: %s", strerror(errno));
	rc = get_reply(s, &m, &fd, &rflags, &nfds);
	if (setrlimit(RLIMIT_NOFILE, &old) < 0)
		die("setrlimit: %s", strerror(errno));
	if (rc < 0) {
		fail(name, "no reply: %s", strerror(errno));
		return -1;
	}
	if (fd >= 0)
		close(fd);
	if (m.op != (LFD_OP_ATTACH | LFD_REPLY) || m.seq != seq) {
		fail(name, "attach answered op %#x (%s)", m.op,
		     m.op == LFD_OP_ERROR ? rname(m.u.error.reason) : "-");
		return -1;
	}
	held_add(s, m.u.attach_rep.id, &g.image_devs);
	if (fd >= 0 || !(rflags & LFD_RECV_CTRUNC)) {
		fail(name, "the fd arrived after all (fd %d, flags %#x): the limit did not bite",
		     fd, rflags);
		return -1;
	}
	*id = m.u.attach_rep.id;
	return 0;
}

static void sc_rlimit(struct sess *s)
{
	int img = open_image(O_RDWR);
	char why[512];
	struct sess t;
	uint32_t id;

	if (attach_fd_dropped(s, "rlimit-nofile", img, &id) == 0) {
		if (settle(s, why, sizeof(why)) < 0)
			fail("rlimit-nofile", "%s", why);
		else if (release(s, "rlimit-nofile", id, 5000) == 0) {
			if (settle(s, why, sizeof(why)) < 0)
				fail("rlimit-nofile", "after release: %s", why);
			else
				ok("rlimit-nofile", "reason none: reply fd dropped by the kernel "
				   "(MSG_CTRUNC), device held by the session, then released");
		}
	}
	/* The same, and then the client just goes away. */
	if (session_open(&t, "rlimit-nofile-close") == 0 &&
	    attach_fd_dropped(&t, "rlimit-nofile-close", img, &id) == 0 &&
	    session_close(&t, "rlimit-nofile-close") == 0) {
		if (settle(s, why, sizeof(why)) < 0)
			fail("rlimit-nofile-close", "%s", why);
		else
			ok("rlimit-nofile-close", "reply fd dropped; device released when "
			   "the session ended");
	} else if (t.sock >= 0) {
		session_close(&t, "rlimit-nofile-close");
	}
	close(img);
}

/* ---- scenario: a client that never reads its replies ------------------------------------ */

static void sc_noread(struct sess *main_s)
{
	const char *name = "never-reads-replies";
	int img = open_image(O_RDWR), full = 0;
	uint64_t start, devs;
	unsigned sent = 0;
	struct sess t;
	char why[512];
	size_t len;
	ssize_t n;

	if (session_open(&t, name) < 0 || attach(&t, name, img, 0, &g.image_devs, NULL, NULL) < 0)
		goto out;
	/* Requests until the helper's receive queue stays full: it is then
	 * blocked sending into ours. */
	while (sent < 100000 && full < 10) {
		len = enc_list(g_buf, ++t.seq);
		n = send(t.sock, g_buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n == (ssize_t)len) {
			sent++;
			full = 0;
			continue;
		}
		if (n < 0 && errno != EAGAIN)
			break;
		full++;
		sleep_ms(50);
	}
	start = now_ms();
	/* Still connected, still not reading: the helper has to give up on
	 * us by itself, and release what the session holds. */
	if (session_wait_exit(&t, NOREAD_WAIT_MS) < 0) {
		fail(name, "helper %d still serving %u ms after %u unread requests",
		     (int)t.pid, NOREAD_WAIT_MS, sent);
		goto out;
	}
	devs = ask_val(B_ATTACHED, 0, g.image);
	if (devs != (uint64_t)(g.image_devs - 1)) {
		fail(name, "helper gone, but %" PRIu64 " devices on the image, want %d",
		     devs, g.image_devs - 1);
		goto out;
	}
	ok(name, "%u requests, no reply read: the helper ended the session after "
	   "%.1f s and released its device", sent, (double)(now_ms() - start) / 1000);
out:
	session_close(&t, name);
	if (settle(main_s, why, sizeof(why)) < 0)
		fail(name, "main session afterwards: %s", why);
	close(img);
}

/* ---- scenario: socket options a spawner sets on the helper's end -------------------------- */

static void sc_sockopts(struct sess *main_s)
{
	static const struct { const char *name; int opt; } opts[] = {
		{ "sockopt-passcred", SO_PASSCRED },
		{ "sockopt-passpidfd", SO_PASSPIDFD },
		{ "sockopt-timestamp", SO_TIMESTAMP },
	};
	int img = open_image(O_RDWR), bad, k;
	struct sess t;
	uint32_t seq;
	struct pkt p;
	size_t i, len;

	(void)main_s;
	if (g.mode != MODE_SPAWN)
		die("sockopts: spawn mode only");
	for (i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
		bad = g.failures;
		if (session_start(&t, opts[i].opt, 0) < 0) {
			ok(opts[i].name, "skipped: %s", strerror(errno));
			continue;
		}
		/* The helper turns the option off before reading anything:
		 * every message is served as usual and none brings it an fd
		 * (a pidfd, with SO_PASSPIDFD) it did not ask for. */
		seq = ++t.seq;
		len = enc_hello(g_buf, seq, 1, 1);
		p = pkt(g_buf, len, NULL, 0);
		if (expect_only(&t, opts[i].name, &p, R_SERVED, seq) < 0 ||
		    identify(&t, opts[i].name) < 0)
			goto next;
		/* The helper closes a message's fds after replying: count only
		 * once it answered the next one. */
		for (k = 0; k < 20; k++) {
			seq = ++t.seq;
			len = enc_list(g_buf, seq);
			p = pkt(g_buf, len, NULL, 0);
			if (expect_only(&t, opts[i].name, &p, R_SERVED, seq) < 0)
				goto next;
		}
		fds_unchanged(&t, opts[i].name);
next:
		session_close(&t, opts[i].name);
		if (g.failures == bad)
			ok(opts[i].name, "option turned off by the helper: 21 requests "
			   "served, helper fds unchanged, clean exit");
	}
	close(img);
}

/* ---- scenario: the helper's socket made non-blocking under it ------------------------------ */

static void sc_nonblock(struct sess *main_s)
{
	const char *name = "helper-socket-made-nonblocking";
	int img = open_image(O_RDWR), bad = g.failures, fl;
	struct lfd_msg m;
	struct sess t;
	char why[512];
	size_t len;

	if (g.mode != MODE_SPAWN)
		die("nonblock: spawn mode only");
	if (session_start(&t, 0, 1) < 0 || hello(&t, name) < 0 ||
	    attach(&t, name, img, 0, &g.image_devs, NULL, NULL) < 0)
		goto out;
	/* The kept dup shares the helper's open file description. */
	sleep_ms(100);
	fl = fcntl(t.peer, F_GETFL);
	if (fl < 0 || fcntl(t.peer, F_SETFL, fl | O_NONBLOCK) < 0)
		die("O_NONBLOCK: %s", strerror(errno));
	/* The flag stays with the description; our dup would only keep the
	 * helper's end open after the helper is gone. */
	close(t.peer);
	t.peer = -1;
	len = enc_list(g_buf, ++t.seq);
	if (send(t.sock, g_buf, len, MSG_NOSIGNAL) == (ssize_t)len)
		(void)get_reply(&t, &m, NULL, NULL, NULL);
	sleep_ms(200);
	len = enc_list(g_buf, ++t.seq);
	if (send(t.sock, g_buf, len, MSG_NOSIGNAL) == (ssize_t)len)
		(void)get_reply(&t, &m, NULL, NULL, NULL);
	/* Whatever the helper makes of EAGAIN, it must neither spin nor
	 * leave the device behind once the client is gone. */
out:
	session_close(&t, name);
	if (settle(main_s, why, sizeof(why)) < 0)
		fail(name, "%s", why);
	if (g.failures == bad)
		ok(name, "helper exited cleanly, device released");
	close(img);
}

/* ---- scenario: connect/disconnect floods (daemon modes) ---------------------------------- */

static void sc_flood(struct sess *main_s)
{
	const char *name = "flood";
	int img = open_image(O_RDWR), fd, i, attaches = 0;
	uint64_t before, live = 0, end;
	struct lfd_msg m;
	struct sess t;
	char why[512];
	struct pkt p;
	size_t len;

	if (g.mode != MODE_CONNECT)
		die("flood: connect mode only");
	before = ask_val(B_LIVE_CHILDREN, g.daemon, NULL);
	for (i = 0; i < FLOOD_CONNECTIONS; i++) {
		fd = dial();
		memset(&t, 0, sizeof(t));
		t.sock = fd;
		switch (i % 6) {
		case 0:		/* connect, close */
			break;
		case 1:		/* half a close first */
			shutdown(fd, SHUT_WR);
			break;
		case 2:		/* 7 bytes of a HELLO */
			len = enc_hello(g_buf, 1, 1, 1);
			(void)send(fd, g_buf, 7, MSG_NOSIGNAL);
			break;
		case 3:		/* HELLO, never read */
			len = enc_hello(g_buf, 1, 1, 1);
			(void)send(fd, g_buf, len, MSG_NOSIGNAL);
			break;
		case 4:		/* HELLO, a cut ATTACH with an fd */
			len = enc_hello(g_buf, 1, 1, 1);
			(void)send(fd, g_buf, len, MSG_NOSIGNAL);
			(void)get_reply(&t, &m, NULL, NULL, NULL);
			len = enc_attach(g_buf, 2, 0, 0, 0, 0);
			p = pkt(g_buf, len - 5, &img, 1);
			(void)send_pkt(fd, &p, 0);
			break;
		default:	/* HELLO, ATTACH, gone before the reply */
			len = enc_hello(g_buf, 1, 1, 1);
			(void)send(fd, g_buf, len, MSG_NOSIGNAL);
			if (i % 30 == 5) {
				(void)get_reply(&t, &m, NULL, NULL, NULL);
				len = enc_attach(g_buf, 2, 0, 0, 0, 0);
				p = pkt(g_buf, len, &img, 1);
				if (send_pkt(fd, &p, 0) == 0)
					attaches++;
			}
			break;
		}
		close(fd);
	}
	/* Every session of the flood ends, and takes its device with it. */
	end = now_ms() + 30000;
	while ((live = ask_val(B_LIVE_CHILDREN, g.daemon, NULL)) > before && now_ms() < end)
		sleep_ms(20);
	if (live != before) {
		fail(name, "%" PRIu64 " session processes 30 s after the flood, %" PRIu64
		     " before it", live, before);
		goto out;
	}
	if (!ask_val(B_ALIVE, g.daemon, NULL)) {
		fail(name, "the daemon %d died", (int)g.daemon);
		goto out;
	}
	if (settle(main_s, why, sizeof(why)) < 0) {
		fail(name, "%s", why);
		goto out;
	}
	/* And the daemon still serves a new client. */
	if (session_open(&t, name) < 0)
		goto out;
	if (settle(&t, why, sizeof(why)) < 0)
		fail(name, "new session after the flood: %s", why);
	if (session_close(&t, name) == 0)
		ok(name, "%d connections (%d attaching and vanishing): no session process "
		   "or device left, daemon still serving", FLOOD_CONNECTIONS, attaches);
out:
	close(img);
}

/* ---- scenario: batches ------------------------------------------------------------------- */

static size_t enc_attach_batch(uint8_t *b, uint32_t seq, uint32_t n,
			       const uint32_t *flags)
{
	struct lfd_msg m;
	uint32_t i;

	msg_init(&m, LFD_OP_ATTACH_BATCH, seq);
	m.u.attach_batch_req.count = n;
	for (i = 0; i < n; i++)
		m.u.attach_batch_req.e[i].flags = flags ? flags[i] : 0;
	return encode(b, &m);
}

static size_t enc_release_batch(uint8_t *b, uint32_t seq, uint32_t n,
				const uint32_t *ids, uint32_t timeout)
{
	struct lfd_msg m;

	msg_init(&m, LFD_OP_RELEASE_BATCH, seq);
	m.u.release_batch_req.count = n;
	m.u.release_batch_req.timeout_ms = timeout;
	memcpy(m.u.release_batch_req.id, ids, n * sizeof(*ids));
	return encode(b, &m);
}

/* A batch header with any count and count_bytes bytes of zero entries. */
static size_t raw_batch(uint8_t *b, uint16_t op, uint32_t seq, uint32_t count,
			size_t entry_bytes)
{
	uint8_t body[LFD_BATCH_HEAD_SIZE + 65 * LFD_ATTACH_REQ_SIZE] = { 0 };
	size_t blen = LFD_BATCH_HEAD_SIZE + entry_bytes;

	if (blen > sizeof(body))
		die("raw_batch: %zu bytes", blen);
	le32(body, count);
	return raw_msg(b, LFD_MAGIC, 1, op, seq, (uint32_t)blen, body, blen);
}

/* The reply's fds are the devices it names, in order. */
static int batch_fds_match(const struct lfd_msg *m, const int *fds, int nfds,
			   char *why, size_t wn)
{
	struct stat st;
	int i;

	if (nfds != (int)m->u.attach_batch_rep.count) {
		snprintf(why, wn, "%d fds for %u devices", nfds, m->u.attach_batch_rep.count);
		return -1;
	}
	for (i = 0; i < nfds; i++) {
		const struct lfd_device *d = &m->u.attach_batch_rep.dev[i];

		if (fstat(fds[i], &st) < 0 || !S_ISBLK(st.st_mode) ||
		    st.st_rdev != makedev(d->major, d->minor)) {
			snprintf(why, wn, "fd %d is not /dev/loop%u", i, d->index);
			return -1;
		}
	}
	return 0;
}

/* A batch of n attaches of fds that must be served; ids in ids[]. */
static int attach_batch_ok(struct sess *s, const char *name, const int *fds,
			   uint32_t n, const uint32_t *flags, uint32_t *ids)
{
	struct lfd_msg m;
	uint32_t seq = ++s->seq, i;
	size_t len = enc_attach_batch(g_buf, seq, n, flags);
	struct pkt p = pkt(g_buf, len, fds, (int)n);
	int got[LFD_MAX_BATCH], nfds = 0, rc = 0;
	char why[256] = "";

	if (send_pkt(s->sock, &p, 0) < 0 || get_reply_fds(s, &m, got, NULL, &nfds) < 0) {
		fail(name, "attach batch: %s", strerror(errno));
		return -1;
	}
	if (m.op != (LFD_OP_ATTACH_BATCH | LFD_REPLY) || m.seq != seq ||
	    m.u.attach_batch_rep.count != n) {
		fail(name, "attach batch of %u answered op %#x (%s: %s)", n, m.op,
		     m.op == LFD_OP_ERROR ? rname(m.u.error.reason) : "-",
		     m.op == LFD_OP_ERROR ? m.u.error.text : "");
		rc = -1;
	} else if (batch_fds_match(&m, got, nfds, why, sizeof(why)) < 0) {
		fail(name, "%s", why);
		rc = -1;
	}
	for (i = 0; i < (uint32_t)nfds && i < LFD_MAX_BATCH; i++)
		close(got[i]);
	for (i = 0; m.op == (LFD_OP_ATTACH_BATCH | LFD_REPLY) &&
		    i < m.u.attach_batch_rep.count; i++) {
		held_add(s, m.u.attach_batch_rep.dev[i].id, &g.image_devs);
		if (ids)
			ids[i] = m.u.attach_batch_rep.dev[i].id;
	}
	if (rc == 0 && settle(s, why, sizeof(why)) < 0) {
		fail(name, "served, but then: %s", why);
		return -1;
	}
	if (rc == 0)
		ok(name, "%u devices and %u fds in one reply", n, n);
	return rc;
}

/* A release batch that must be served with the outcome want[i] for ids[i];
 * the devices released (or gone busy) leave the session. */
static int release_batch_check(struct sess *s, const char *name, const uint32_t *ids,
			       uint32_t n, const uint32_t *want)
{
	static struct lfd_msg m;
	uint32_t seq = ++s->seq, i;
	size_t len = enc_release_batch(g_buf, seq, n, ids, 1000);
	struct pkt p = pkt(g_buf, len, NULL, 0);
	char why[256];
	int rc = 0;

	if (send_pkt(s->sock, &p, 0) < 0 || get_reply(s, &m, NULL, NULL, NULL) < 0) {
		fail(name, "release batch: %s", strerror(errno));
		return -1;
	}
	if (m.op != (LFD_OP_RELEASE_BATCH | LFD_REPLY) || m.seq != seq ||
	    m.u.release_batch_rep.count != n) {
		fail(name, "release batch answered op %#x (%s: %s)", m.op,
		     m.op == LFD_OP_ERROR ? rname(m.u.error.reason) : "-",
		     m.op == LFD_OP_ERROR ? m.u.error.text : "");
		return -1;
	}
	for (i = 0; i < n; i++) {
		const struct lfd_release_outcome *o = &m.u.release_batch_rep.out[i];

		if (o->id != ids[i] || o->reason != want[i] ||
		    (o->reason != LFD_R_NONE && (o->text[0] == '\0' ||
						 o->err != spec_errno(o->reason)))) {
			fail(name, "entry %u: id %u reason %s errno %d '%s', want id %u %s",
			     i, o->id, rname(o->reason), o->err, o->text, ids[i], rname(want[i]));
			rc = -1;
		}
		if (o->reason == LFD_R_NONE)
			held_drop(s, ids[i]);
	}
	if (rc == 0 && settle(s, why, sizeof(why)) < 0) {
		fail(name, "served, but then: %s", why);
		return -1;
	}
	if (rc == 0)
		ok(name, "%u outcomes, each as the spec says", n);
	return rc;
}

/* A batch attach that must fail at entry k with reason want: the error
 * names the entry, and nothing is left attached (settle: no device on the
 * image, the helper's fds at their baseline, so every device of the
 * batch, its fd and every received fd are gone). */
static void batch_fails_at(struct sess *s, const char *name, const int *fds,
			   uint32_t n, const uint32_t *flags, uint32_t k, unsigned want)
{
	struct lfd_msg m;
	uint32_t seq = ++s->seq;
	size_t len = enc_attach_batch(g_buf, seq, n, flags);
	struct pkt p = pkt(g_buf, len, fds, (int)n);
	char why[512], prefix[32];
	int outcome = exchange(s, &p, want, seq, &m, why, sizeof(why));

	if (outcome < 0) {
		fail(name, "%s", why);
		return;
	}
	snprintf(prefix, sizeof(prefix), "entry %u: ", k);
	if (strncmp(m.u.error.text, prefix, strlen(prefix)) != 0) {
		fail(name, "the error does not name entry %u: '%s'", k, m.u.error.text);
		return;
	}
	if (settle(s, why, sizeof(why)) < 0) {
		fail(name, "reason %s, but then: %s", rname((uint32_t)outcome), why);
		return;
	}
	ok(name, "reason %s at entry %u, nothing left attached", rname((uint32_t)outcome), k);
}

/* Wrong counts: of fds against the body, of the body against itself, N
 * of 0 and over the bound.  Nothing is attached, every fd is closed. */
static void batch_counts(struct sess *s, int img)
{
	int many[LFD_RECV_MAX_FDS], i;
	uint32_t seq;
	struct pkt p;
	size_t len;

	for (i = 0; i < LFD_RECV_MAX_FDS; i++)
		many[i] = img;
	/* (each case encodes anew: settle's LIST reuses g_buf) */
	seq = ++s->seq;
	len = enc_attach_batch(g_buf, seq, 2, NULL);
	p = pkt(g_buf, len, many, 1);
	run_case(s, "batch-attach-2-entries-1-fd", &p, R(LFD_R_FD_COUNT), seq);
	seq = ++s->seq;
	len = enc_attach_batch(g_buf, seq, 2, NULL);
	p = pkt(g_buf, len, many, 3);
	run_case(s, "batch-attach-2-entries-3-fds", &p, R(LFD_R_FD_COUNT), seq);
	seq = ++s->seq;
	len = enc_attach_batch(g_buf, seq, 2, NULL);
	p = pkt(g_buf, len, NULL, 0);
	run_case(s, "batch-attach-2-entries-no-fd", &p, R(LFD_R_FD_COUNT), seq);
	seq = ++s->seq;
	len = enc_attach_batch(g_buf, seq, LFD_MAX_BATCH, NULL);
	p = pkt(g_buf, len, many, LFD_RECV_MAX_FDS);
	run_case(s, "batch-attach-64-entries-253-fds", &p, R(LFD_R_FD_COUNT), seq);

	seq = ++s->seq;
	len = raw_batch(g_buf, LFD_OP_ATTACH_BATCH, seq, 0, 0);
	p = pkt(g_buf, len, NULL, 0);
	run_case(s, "batch-attach-n-0", &p, R(LFD_R_MALFORMED), seq);
	seq = ++s->seq;
	len = raw_batch(g_buf, LFD_OP_ATTACH_BATCH, seq, 0, 0);
	p = pkt(g_buf, len, many, 1);
	run_case(s, "batch-attach-n-0-with-fd", &p, R(LFD_R_MALFORMED), seq);
	seq = ++s->seq;
	len = raw_batch(g_buf, LFD_OP_ATTACH_BATCH, seq, LFD_MAX_BATCH + 1,
			(LFD_MAX_BATCH + 1) * LFD_ATTACH_REQ_SIZE);
	p = pkt(g_buf, len, many, LFD_MAX_BATCH + 1);
	run_case(s, "batch-attach-n-65-with-65-fds", &p, R(LFD_R_MALFORMED), seq);
	seq = ++s->seq;
	len = raw_batch(g_buf, LFD_OP_ATTACH_BATCH, seq, 3, 2 * LFD_ATTACH_REQ_SIZE);
	p = pkt(g_buf, len, many, 3);
	run_case(s, "batch-attach-count-3-body-2", &p, R(LFD_R_MALFORMED), seq);

	seq = ++s->seq;
	len = raw_batch(g_buf, LFD_OP_RELEASE_BATCH, seq, 0, 0);
	p = pkt(g_buf, len, NULL, 0);
	run_case(s, "batch-release-n-0", &p, R(LFD_R_MALFORMED), seq);
	seq = ++s->seq;
	len = raw_batch(g_buf, LFD_OP_RELEASE_BATCH, seq, LFD_MAX_BATCH + 1,
			(LFD_MAX_BATCH + 1) * LFD_RELEASE_ID_SIZE);
	p = pkt(g_buf, len, NULL, 0);
	run_case(s, "batch-release-n-65", &p, R(LFD_R_MALFORMED), seq);
	seq = ++s->seq;
	len = enc_release_batch(g_buf, seq, 1, (const uint32_t[]){ 1 }, 1000);
	p = pkt(g_buf, len, many, 1);
	run_case(s, "batch-release-with-fd", &p, R(LFD_R_FD_COUNT), seq);
	seq = ++s->seq;
	len = enc_release_batch(g_buf, seq, 1, (const uint32_t[]){ 1 },
				LFD_MAX_TIMEOUT_MS + 1);
	p = pkt(g_buf, len, NULL, 0);
	run_case(s, "batch-release-timeout-over-max", &p, R(LFD_R_BAD_OPTION), seq);
}

/* Ids: duplicates refuse the whole request; unknown ones and another
 * session's are per-device outcomes that do not stop the others. */
static void batch_ids(struct sess *s, int img)
{
	int fds[3] = { img, img, img };
	uint32_t ids[4], bids[2], dup[3], want[4], seq;
	struct sess b;
	char why[512];
	struct pkt p;
	size_t len;

	if (attach_batch_ok(s, "batch-attach-3", fds, 3, NULL, ids) < 0)
		return;
	dup[0] = ids[0];
	dup[1] = ids[1];
	dup[2] = ids[0];
	seq = ++s->seq;
	len = enc_release_batch(g_buf, seq, 3, dup, 1000);
	p = pkt(g_buf, len, NULL, 0);
	run_case(s, "batch-release-duplicate-ids-nothing-released", &p,
		 R(LFD_R_BAD_OPTION), seq);
	ids[3] = ids[2];
	ids[2] = 0xdead;
	want[0] = want[1] = want[3] = LFD_R_NONE;
	want[2] = LFD_R_UNKNOWN_DEVICE;
	release_batch_check(s, "batch-release-unknown-id-among-3", ids, 4, want);

	if (session_open(&b, "batch-session-b") < 0)
		return;
	if (attach_batch_ok(&b, "batch-session-b-attach-2", fds, 2, NULL, bids) == 0) {
		want[0] = want[1] = LFD_R_UNKNOWN_DEVICE;
		if (release_batch_check(s, "batch-release-other-sessions-ids", bids, 2,
					want) == 0 && settle(&b, why, sizeof(why)) < 0)
			fail("batch-release-other-sessions-ids", "session B: %s", why);
		want[0] = want[1] = LFD_R_NONE;
		release_batch_check(&b, "batch-session-b-releases-its-own", bids, 2, want);
	}
	session_close(&b, "batch-session-b");
}

/* Entry k fails: the entries before it were attached (a grant too) and
 * must be gone before the error reply. */
static void batch_failures(struct sess *s, int img)
{
	char dir[PATH_MAX];
	int ro = open_image(O_RDONLY);
	int d = open(dir_of(g.image, dir, sizeof(dir)), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int fds[4] = { img, img, d, img };
	uint32_t flags[4] = { 0, 0, 0, 0 }, grant[4] = { LFD_ATTACH_GRANT,
							 LFD_ATTACH_GRANT, 0, 0 };

	if (d < 0)
		die("%s: %s", dir, strerror(errno));
	batch_fails_at(s, "batch-fails-at-entry-2-directory", fds, 4, flags, 2,
		       R(LFD_R_BACKING_KIND));
	fds[2] = img;
	flags[3] = 0x100;
	batch_fails_at(s, "batch-fails-at-last-entry-unknown-flag", fds, 4, flags, 3,
		       R(LFD_R_BAD_OPTION));
	flags[3] = 0;
	fds[1] = ro;
	flags[1] = LFD_ATTACH_GRANT;
	batch_fails_at(s, "batch-fails-at-entry-1-read-only-grant", fds, 2, flags, 1,
		       R(LFD_R_BAD_OPTION) | R(LFD_R_FORBIDDEN_OPTION));
	if (s->features & LFD_FEAT_GRANT) {
		fds[1] = img;
		fds[2] = d;
		batch_fails_at(s, "batch-fails-after-2-grants", fds, 3, grant, 2,
			       R(LFD_R_BACKING_KIND));
	}
	close(ro);
	close(d);
}

static void sc_batch(struct sess *s)
{
	int img = open_image(O_RDWR);

	if (!(s->features & LFD_FEAT_BATCH))
		fail("batch", "hello does not say LFD_FEAT_BATCH (features %#x)", s->features);
	batch_counts(s, img);
	batch_ids(s, img);
	batch_failures(s, img);
	close(img);
}

/* Under "max-devices-per-user 3": a batch of 5 fails at entry 3 and gives
 * back the slots of entries 0-2, so that a batch of 3 is served next. */
static void sc_batch_limit(struct sess *s)
{
	int img = open_image(O_RDWR);
	int fds[5] = { img, img, img, img, img };
	uint32_t ids[3], want[3] = { LFD_R_NONE, LFD_R_NONE, LFD_R_NONE };

	if (s->max_devices != 3) {
		fail("batch-limit", "hello says max_devices %u: configure "
		     "max-devices-per-user 3", s->max_devices);
		goto out;
	}
	batch_fails_at(s, "batch-limit-fails-at-entry-3", fds, 5, NULL, 3,
		       R(LFD_R_QUOTA_USER));
	if (attach_batch_ok(s, "batch-limit-every-slot-returned", fds, 3, NULL, ids) < 0)
		goto out;
	batch_fails_at(s, "batch-limit-one-more-fails-at-entry-0", fds, 1, NULL, 0,
		       R(LFD_R_QUOTA_USER));
	release_batch_check(s, "batch-limit-release-3", ids, 3, want);
	if (attach_batch_ok(s, "batch-limit-slots-free-after-release", fds, 3, NULL, ids) == 0)
		release_batch_check(s, "batch-limit-release-3-again", ids, 3, want);
out:
	close(img);
}

/* ---- main ------------------------------------------------------------------------------------ */

static const struct scenario {
	const char *name;
	void (*run)(struct sess *);
} scenarios[] = {
	{ "fds", sc_fds },
	{ "truncated", sc_truncated },
	{ "oversized", sc_oversized },
	{ "zero-length", sc_zero },
	{ "magic", sc_magic },
	{ "reserved", sc_reserved },
	{ "version", sc_version },
	{ "unknown-op", sc_unknown_op },
	{ "no-hello", sc_no_hello },
	{ "random", sc_random },
	{ "numbers", sc_numbers },
	{ "release-ids", sc_release_ids },
	{ "backing", sc_backing },
	{ "limit", sc_limit },
	{ "batch", sc_batch },
	{ "batch-limit", sc_batch_limit },
	{ "rlimit", sc_rlimit },
	{ "noread", sc_noread },
	{ "sockopts", sc_sockopts },
	{ "nonblock", sc_nonblock },
	{ "flood", sc_flood },
	{ NULL, NULL },
};

static const struct scenario *find_scenario(const char *name)
{
	const struct scenario *sc;

	for (sc = scenarios; sc->name; sc++)
		if (strcmp(sc->name, name) == 0)
			return sc;
	return NULL;
}

static void become_client(void)
{
	if (setgroups(0, NULL) < 0 || setresgid(CLIENT_ID, CLIENT_ID, CLIENT_ID) < 0 ||
	    setresuid(CLIENT_ID, CLIENT_ID, CLIENT_ID) < 0)
		die("dropping to uid %d: %s", CLIENT_ID, strerror(errno));
	if (getuid() != CLIENT_ID || geteuid() != CLIENT_ID || getegid() != CLIENT_ID)
		die("still privileged after the drop");
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		die("PR_SET_PDEATHSIG: %s", strerror(errno));
}

static int client_main(char **names, int n)
{
	struct sess s;
	char why[512];
	int i;

	signal(SIGPIPE, SIG_IGN);
	become_client();
	g.image_hash = ask_val(B_HASH, 0, g.image);
	if (g.rootfile)
		g.root_hash = ask_val(B_HASH, 0, g.rootfile);
	if (ask_val(B_ATTACHED, 0, g.image) != 0)
		die("%s is attached already", g.image);
	if (session_open(&s, "session") < 0)
		return 1;
	if (settle(&s, why, sizeof(why)) < 0) {
		fail("session", "%s", why);
		return 1;
	}
	for (i = 0; i < n; i++)
		find_scenario(names[i])->run(&s);
	session_close(&s, "session");
	if (ask_val(B_ATTACHED, 0, g.image) != 0)
		fail("end", "devices left on %s", g.image);
	if (ask_val(B_HASH, 0, g.image) != g.image_hash)
		fail("end", "%s changed", g.image);
	if (g.rootfile && ask_val(B_HASH, 0, g.rootfile) != g.root_hash)
		fail("end", "%s changed", g.rootfile);
	printf("%s: %d failed\n", g.failures ? "FAIL" : "done", g.failures);
	return g.failures ? 1 : 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: rawclient -i IMAGE [-r ROOTFILE] [-s SEED] [-n N] [-p PID] "
		"spawn HELPER | connect SOCKET  SCENARIO...\nscenarios:");
	for (const struct scenario *sc = scenarios; sc->name; sc++)
		fprintf(stderr, " %s", sc->name);
	fputc('\n', stderr);
	exit(2);
}

int main(int argc, char **argv)
{
	int opt, sv[2], i;
	pid_t pid;

	g.seed = 0x6c6f6f70666475ull;
	g.random_msgs = 2000;
	while ((opt = getopt(argc, argv, "+i:r:s:n:p:")) != -1) {
		switch (opt) {
		case 'i': g.image = optarg; break;
		case 'r': g.rootfile = optarg; break;
		case 's': g.seed = strtoull(optarg, NULL, 0); break;
		case 'n': g.random_msgs = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'p': g.daemon = (pid_t)strtol(optarg, NULL, 10); break;
		default: usage();
		}
	}
	if (!g.image || argc - optind < 2)
		usage();
	if (strcmp(argv[optind], "spawn") == 0)
		g.mode = MODE_SPAWN;
	else if (strcmp(argv[optind], "connect") == 0 && g.daemon > 0)
		g.mode = MODE_CONNECT;
	else
		usage();
	g.target = argv[optind + 1];
	for (i = optind + 2; i < argc; i++)
		if (!find_scenario(argv[i]))
			usage();
	if (getuid() != 0)
		die("must start as root (it drops to uid %d for the protocol)", CLIENT_ID);
	setvbuf(stdout, NULL, _IOLBF, 0);

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		die("socketpair: %s", strerror(errno));
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		close(sv[0]);
		g.broker = sv[1];
		exit(client_main(argv + optind + 2, argc - optind - 2));
	}
	close(sv[1]);
	return broker_serve(sv[0], pid);
}
