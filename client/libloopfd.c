/*
 * libloopfd: the client side of the loopfd protocol.
 *
 * One session is one SOCK_SEQPACKET connection to one helper, either a
 * setuid helper this library starts (its own child, on a socketpair) or a
 * daemon's listening socket.  Each call is one request and one reply; the
 * wire format and the fd passing are protocol/proto.c's, not repeated here.
 *
 * The helper is the authority on policy and limits: this side checks only
 * what it needs to talk sensibly (flags it knows, replies that match their
 * requests) and passes the helper's own words on to the caller.
 */
#include "loopfd.h"
#include "loopfd_proto.h"
#include "paths.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define LOOPFD_PUBLIC __attribute__((visibility("default")))

/* The public header must not include the protocol header, so it repeats
 * these values; make sure they never drift apart. */
_Static_assert(LOOPFD_READ_ONLY == LFD_ATTACH_READ_ONLY, "flag value");
_Static_assert(LOOPFD_PARTSCAN == LFD_ATTACH_PARTSCAN, "flag value");
_Static_assert(LOOPFD_DIRECT_IO == LFD_ATTACH_DIRECT_IO, "flag value");
_Static_assert(LOOPFD_GRANT == LFD_ATTACH_GRANT, "flag value");
_Static_assert(LOOPFD_AUTOCLEAR == LFD_ATTACH_AUTOCLEAR, "flag value");
_Static_assert(LOOPFD_FEAT_GRANT == LFD_FEAT_GRANT, "feature value");
_Static_assert(LOOPFD_FEAT_PARTSCAN == LFD_FEAT_PARTSCAN, "feature value");
_Static_assert(LOOPFD_FEAT_DIRECT_IO == LFD_FEAT_DIRECT_IO, "feature value");
_Static_assert(LOOPFD_FEAT_BATCH == LFD_FEAT_BATCH, "feature value");
_Static_assert(LOOPFD_BATCH_MAX == LFD_MAX_BATCH, "batch bound");
_Static_assert(LOOPFD_MODE_SETUID == LFD_MODE_SETUID, "mode value");
_Static_assert(LOOPFD_MODE_LISTEN == LFD_MODE_LISTEN, "mode value");
_Static_assert(LOOPFD_MODE_SYSTEMD == LFD_MODE_SYSTEMD, "mode value");

/* The fd the spawned helper finds its end of the socketpair on. */
#define HELPER_FD	3

struct loopfd_session {
	int sock;
	pid_t helper;		/* spawned helper not yet waited for, or -1 */
	const char *helper_path;	/* for messages about the spawned helper */
	uint32_t seq;		/* of the last request sent */
	int broken;		/* replies can no longer be matched to requests */
	int lingers;		/* a device was released busy or changed */
	unsigned attached;	/* devices attached and not yet released */
	struct loopfd_info info;
};

static int set_error(struct loopfd_error *err, int e, int reason,
		     const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Fill err, set errno, return -1: the one way every failure is reported. */
static int set_error(struct loopfd_error *err, int e, int reason,
		     const char *fmt, ...)
{
	va_list ap;

	err->err = e;
	err->reason = reason;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	errno = e;
	return -1;
}

static const char *op_name(uint16_t op)
{
	switch (op) {
	case LFD_OP_HELLO:	return "hello";
	case LFD_OP_ATTACH:	return "attach";
	case LFD_OP_RELEASE:	return "release";
	case LFD_OP_LIST:	return "list";
	case LFD_OP_ATTACH_BATCH:	return "attach";
	case LFD_OP_RELEASE_BATCH:	return "release";
	default:		return "request";
	}
}

/*
 * The helper's text ends up on a terminal; in socket mode the peer is
 * whoever owns the socket, so control characters (escape sequences) are
 * not passed through.
 */
static void clean_text(char *dst, size_t cap, const char *src)
{
	size_t i;

	for (i = 0; i + 1 < cap && src[i] != '\0'; i++) {
		unsigned char c = (unsigned char)src[i];

		dst[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	dst[i] = '\0';
}

static int helper_error(struct loopfd_error *err, uint16_t op,
			const struct lfd_error *e)
{
	char text[LFD_MSG_TEXT];
	int code = e->err;

	/* An errno value the helper made up would mislead strerror(). */
	if (code <= 0 || code >= 4096)
		code = lfd_reason_errno((enum lfd_reason)e->reason);
	if (code == 0)		/* reason "none" in an error reply */
		code = EPROTO;
	clean_text(text, sizeof(text), e->text);
	if (text[0] == '\0')
		snprintf(text, sizeof(text), "%s",
			 lfd_reason_name((enum lfd_reason)e->reason));
	return set_error(err, code, (int)e->reason, "%s: helper refused: %s",
			 op_name(op), text);
}

/* A reply that cannot be trusted to belong to its request ends the session's
 * usefulness: any later reply could be the answer to something else. */
static int protocol_error(struct loopfd_session *s, struct loopfd_error *err,
			  uint16_t op, const char *what)
{
	s->broken = 1;
	return set_error(err, EPROTO, 0, "%s: bad reply from helper: %s",
			 op_name(op), what);
}

static void close_fds(const int *fds, int n)
{
	int i;

	for (i = 0; i < n; i++)
		close(fds[i]);
}

/*
 * Check a received reply against its request.  fds[0..nfds) are the fds that
 * came with it (at most maxfds of them are kept); on failure they are
 * closed here.
 */
static int check_reply(struct loopfd_session *s, const uint8_t *buf, long n,
		       int rflags, const int *fds, int nfds, int maxfds,
		       struct lfd_msg *m, struct loopfd_error *err)
{
	uint16_t op = m->op;
	uint32_t seq = m->seq;
	enum lfd_reason r;
	char what[96];
	int kept = nfds < maxfds ? nfds : maxfds;

	if (rflags != 0) {
		close_fds(fds, kept);
		return protocol_error(s, err, op, "truncated or unexpected control data");
	}
	r = lfd_decode(buf, (size_t)n, m);
	if (r != LFD_R_NONE) {
		close_fds(fds, kept);
		return protocol_error(s, err, op, lfd_reason_name(r));
	}
	if (m->seq != seq) {
		close_fds(fds, kept);
		snprintf(what, sizeof(what), "answer to request %u, expected %u",
			 m->seq, seq);
		return protocol_error(s, err, op, what);
	}
	if (m->op == LFD_OP_ERROR) {
		close_fds(fds, kept);
		return helper_error(err, op, &m->u.error);
	}
	if (m->op != (op | LFD_REPLY)) {
		close_fds(fds, kept);
		snprintf(what, sizeof(what), "operation %#x in reply to %#x",
			 m->op, op);
		return protocol_error(s, err, op, what);
	}
	if (nfds != lfd_fds_for_msg(m)) {
		close_fds(fds, kept);
		snprintf(what, sizeof(what), "%d file descriptors, expected %d",
			 nfds, lfd_fds_for_msg(m));
		return protocol_error(s, err, op, what);
	}
	return 0;
}

static int send_request(struct loopfd_session *s, struct lfd_msg *m,
			const int *send_fds, int nsend, struct loopfd_error *err)
{
	uint8_t buf[LFD_MAX_MSG];
	uint16_t op = m->op;
	size_t len;

	if (s->broken)
		return set_error(err, ENOTCONN, 0, "%s: the connection to the "
				 "helper is unusable after an earlier error",
				 op_name(op));
	m->version = LFD_VERSION;
	m->seq = ++s->seq;
	len = lfd_encode(m, buf, sizeof(buf));
	if (len == 0)
		return set_error(err, EINVAL, 0, "%s: cannot encode request",
				 op_name(op));
	if (lfd_send_fds(s->sock, buf, len, send_fds, nsend) < 0) {
		s->broken = 1;
		if (errno == EPIPE || errno == ECONNRESET)
			return set_error(err, errno, 0, "%s: the helper closed "
					 "the connection", op_name(op));
		return set_error(err, errno, 0, "%s: sending to the helper: %s",
				 op_name(op), strerror(errno));
	}
	return 0;
}

/*
 * One request and its reply.  m holds the request (op and body) on entry
 * and the reply on success.  send_fds[0..nsend) go with the request; the
 * fds of the reply (at most maxrecv, as many as the reply says) are stored
 * in recv_fds.
 */
static int transact_fds(struct loopfd_session *s, struct lfd_msg *m,
			const int *send_fds, int nsend, int *recv_fds,
			int maxrecv, struct loopfd_error *err)
{
	uint8_t buf[LFD_MAX_REPLY];
	uint16_t op = m->op;
	int fds[LFD_MAX_BATCH] = { 0 };	/* lfd_recv fills the first nfds */
	int nfds, rflags;
	long n;

	if (send_request(s, m, send_fds, nsend, err) < 0)
		return -1;
	n = lfd_recv(s->sock, buf, sizeof(buf), fds, maxrecv, &nfds, &rflags);
	if (n < 0) {
		s->broken = 1;
		return set_error(err, errno, 0, "%s: receiving from the helper: %s",
				 op_name(op), strerror(errno));
	}
	if (n == 0) {
		s->broken = 1;
		return set_error(err, ECONNRESET, 0, "%s: the helper closed the "
				 "connection without answering", op_name(op));
	}
	if (check_reply(s, buf, n, rflags, fds, nfds, maxrecv, m, err) < 0)
		return -1;
	/* (check_reply made nfds what the reply says, within maxrecv) */
	if (recv_fds && nfds > 0)
		memcpy(recv_fds, fds, sizeof(int) * (size_t)(nfds < maxrecv ? nfds : maxrecv));
	return 0;
}

/* transact_fds with at most one fd each way (send_fd, recv_fd: -1, NULL). */
static int transact(struct loopfd_session *s, struct lfd_msg *m, int send_fd,
		    int *recv_fd, struct loopfd_error *err)
{
	int fd = -1;

	if (transact_fds(s, m, &send_fd, send_fd >= 0 ? 1 : 0, &fd,
			 recv_fd ? 1 : 0, err) < 0)
		return -1;
	if (recv_fd)
		*recv_fd = fd;
	return 0;
}

/* ---- connecting ---------------------------------------------------------- */

static int connect_socket(struct loopfd_session *s, const char *path,
			  struct loopfd_error *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len = strlen(path);

	if (len == 0)
		return set_error(err, EINVAL, 0, "connect: empty socket path");
	if (len >= sizeof(sa.sun_path))
		return set_error(err, ENAMETOOLONG, 0, "connect: socket path %s "
				 "is longer than %zu bytes", path,
				 sizeof(sa.sun_path) - 1);
	memcpy(sa.sun_path, path, len + 1);
	s->sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s->sock < 0)
		return set_error(err, errno, 0, "connect: socket: %s",
				 strerror(errno));
	if (connect(s->sock, (const struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;

		if (e == ENOENT || e == ECONNREFUSED)
			return set_error(err, e, 0, "connect to helper socket "
					 "%s: %s (is `loopfd-helper --listen "
					 "%s` running?)", path, strerror(e), path);
		if (e == EPROTOTYPE)
			return set_error(err, e, 0, "connect to helper socket "
					 "%s: not a SOCK_SEQPACKET socket, so "
					 "not a loopfd helper", path);
		return set_error(err, e, 0, "connect to helper socket %s: %s",
				 path, strerror(e));
	}
	return 0;
}

/*
 * The helper to spawn.  The environment may choose another one only for a
 * caller that gains nothing from the choice: not root, and not a setuid or
 * setgid program (secure_getenv returns NULL there), whose environment
 * belongs to a less privileged user.
 */
static const char *helper_path(void)
{
	const char *p;

	if (getuid() == 0 || geteuid() != getuid())
		return LOOPFD_HELPER_PATH;
	p = secure_getenv("LOOPFD_HELPER");
	return p && p[0] != '\0' ? p : LOOPFD_HELPER_PATH;
}

/* no_new_privs survives exec and makes the kernel ignore the setuid bit, so
 * the helper would start without privilege and fail obscurely. */
static int check_no_new_privs(struct loopfd_error *err)
{
	if (geteuid() == 0 || prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
		return 0;
	return set_error(err, EPERM, 0, "connect: no_new_privs is set for this "
			 "process (e.g. inside bubblewrap), so a setuid helper "
			 "cannot gain privilege here; use socket mode: set "
			 "LOOPFD_SOCKET or --socket to the socket of a "
			 "`loopfd-helper --listen PATH` daemon");
}

/* In a user namespace the kernel ignores the setuid bit of a file whose
 * owner (global root) is not mapped there, and even where root is mapped
 * the helper's ids are no longer the machine's.  Only the initial user
 * namespace maps all 2^32 ids from 0: anything else is a namespace. */
static int check_user_namespace(struct loopfd_error *err)
{
	unsigned long inside, outside, count;
	FILE *f = fopen("/proc/self/uid_map", "re");
	int n;

	if (f == NULL)
		return 0;	/* no /proc: the checks below still apply */
	n = fscanf(f, "%lu %lu %lu", &inside, &outside, &count);
	fclose(f);
	if (n != 3 || (inside == 0 && outside == 0 && count == 4294967295UL))
		return 0;
	return set_error(err, EPERM, 0, "connect: this process runs in a user "
			 "namespace (uid_map %lu %lu %lu), where a setuid helper "
			 "cannot gain privilege; use socket mode: set "
			 "LOOPFD_SOCKET or --socket to the socket of a "
			 "`loopfd-helper --listen PATH` daemon (or of the "
			 "loopfd.socket unit) bound into the namespace",
			 inside, outside, count);
}

/* Say plainly why the helper would run without privilege, instead of
 * letting it fail at its first ioctl. */
static int check_helper_file(const char *path, struct loopfd_error *err)
{
	struct statvfs sv;
	struct stat st;

	if (stat(path, &st) < 0)
		return set_error(err, errno, 0, "connect: helper %s: %s",
				 path, strerror(errno));
	if (geteuid() == 0)
		return 0;
	if (!S_ISREG(st.st_mode) || st.st_uid != 0 || !(st.st_mode & S_ISUID))
		return set_error(err, EPERM, 0, "connect: helper %s is not "
				 "installed setuid root (owner uid %u, mode "
				 "%04o): run make install as root, or use "
				 "socket mode (LOOPFD_SOCKET or --socket)", path,
				 (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
	if (statvfs(path, &sv) == 0 && (sv.f_flag & ST_NOSUID))
		return set_error(err, EPERM, 0, "connect: helper %s is on a "
				 "filesystem mounted nosuid, so it cannot gain "
				 "privilege; use socket mode (LOOPFD_SOCKET or "
				 "--socket)", path);
	return 0;
}

/*
 * posix_spawn's dup2 action clears close-on-exec on its target, but
 * dup2(3, 3) is a no-op that leaves the flag set on older C libraries: keep
 * the helper's end off fd 3 so the dup2 always really happens.
 */
static int move_off_helper_fd(int *fd, struct loopfd_error *err)
{
	int moved;

	if (*fd != HELPER_FD)
		return 0;
	moved = fcntl(*fd, F_DUPFD_CLOEXEC, HELPER_FD + 1);
	if (moved < 0)
		return set_error(err, errno, 0, "connect: fcntl: %s",
				 strerror(errno));
	close(*fd);
	*fd = moved;
	return 0;
}

static int spawn(const char *path, int helper_end, pid_t *pid,
		 struct loopfd_error *err)
{
	char arg0[] = "loopfd-helper", arg1[] = "--fd", arg2[] = "3";
	char *argv[] = { arg0, arg1, arg2, NULL };
	char *envp[] = { NULL };	/* the helper sets its own environment */
	posix_spawn_file_actions_t fa;
	int rc;

	rc = posix_spawn_file_actions_init(&fa);
	if (rc == 0)
		rc = posix_spawn_file_actions_adddup2(&fa, helper_end, HELPER_FD);
	if (rc == 0)
		rc = posix_spawn(pid, path, &fa, NULL, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	if (rc != 0)
		return set_error(err, rc, 0, "connect: starting helper %s: %s",
				 path, strerror(rc));
	return 0;
}

static int spawn_helper(struct loopfd_session *s, struct loopfd_error *err)
{
	const char *path = helper_path();
	int sv[2];
	int rc;

	s->helper_path = path;
	if (check_no_new_privs(err) < 0 || check_user_namespace(err) < 0 ||
	    check_helper_file(path, err) < 0)
		return -1;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return set_error(err, errno, 0, "connect: socketpair: %s",
				 strerror(errno));
	s->sock = sv[0];
	rc = move_off_helper_fd(&sv[1], err);
	if (rc == 0)
		rc = spawn(path, sv[1], &s->helper, err);
	close(sv[1]);
	return rc;
}

static int wait_helper(struct loopfd_session *s, int *status)
{
	pid_t r;

	do {
		r = waitpid(s->helper, status, 0);
	} while (r < 0 && errno == EINTR);
	s->helper = -1;
	return r < 0 ? -1 : 0;
}

/* The spawned helper hung up before the handshake: its exit status is the
 * best explanation there is (its own message went to stderr). */
static void explain_helper_death(struct loopfd_session *s,
				 struct loopfd_error *err)
{
	int st;

	if (s->helper < 0 || err->reason != 0 ||
	    (err->err != ECONNRESET && err->err != EPIPE))
		return;
	if (wait_helper(s, &st) < 0)
		return;
	if (WIFEXITED(st))
		set_error(err, ECONNRESET, 0, "connect: helper %s exited with "
			  "status %d before answering hello", s->helper_path,
			  WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		set_error(err, ECONNRESET, 0, "connect: helper %s was killed by "
			  "signal %d (%s) before answering hello",
			  s->helper_path, WTERMSIG(st), strsignal(WTERMSIG(st)));
}

static int hello(struct loopfd_session *s, struct loopfd_error *err)
{
	struct lfd_msg m;
	const struct lfd_hello_rep *h = &m.u.hello_rep;

	memset(&m, 0, sizeof(m));
	m.op = LFD_OP_HELLO;
	m.u.hello_req.min_version = LFD_VERSION;
	m.u.hello_req.max_version = LFD_VERSION;
	if (transact(s, &m, -1, NULL, err) < 0)
		return -1;
	if (h->version != LFD_VERSION) {
		s->broken = 1;
		return set_error(err, EPROTONOSUPPORT, 0, "hello: helper chose "
				 "protocol version %u, this library speaks %u",
				 h->version, LFD_VERSION);
	}
	s->info.version = h->version;
	s->info.mode = h->mode;
	s->info.features = h->features;
	s->info.max_devices = h->max_devices;
	s->info.max_timeout_ms = h->max_timeout_ms;
	s->info.uid = h->uid;
	s->info.gid = h->gid;
	return 0;
}

LOOPFD_PUBLIC
int loopfd_connect(struct loopfd_session **out, const char *socket_path,
		   struct loopfd_error *err)
{
	struct loopfd_error scratch;
	struct loopfd_session *s;
	const char *path = socket_path;
	int rc;

	if (!err)
		err = &scratch;
	if (!out)
		return set_error(err, EINVAL, 0, "connect: no session pointer");
	*out = NULL;
	if (!path) {
		path = secure_getenv("LOOPFD_SOCKET");
		if (path && path[0] == '\0')
			path = NULL;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return set_error(err, errno, 0, "connect: %s", strerror(errno));
	s->sock = -1;
	s->helper = -1;
	rc = path ? connect_socket(s, path, err) : spawn_helper(s, err);
	if (rc == 0) {
		rc = hello(s, err);
		if (rc < 0)
			explain_helper_death(s, err);
	}
	if (rc < 0) {
		loopfd_close(s);
		errno = err->err;
		return -1;
	}
	*out = s;
	return 0;
}

LOOPFD_PUBLIC
const struct loopfd_info *loopfd_session_info(const struct loopfd_session *s)
{
	return &s->info;
}

/* ---- devices ------------------------------------------------------------- */

static void fill_device(struct loopfd_device *dev, const struct lfd_device *d,
			int fd)
{
	memset(dev, 0, sizeof(*dev));
	dev->fd = fd;
	dev->id = d->id;
	dev->index = d->index;
	snprintf(dev->name, sizeof(dev->name), "loop%u", d->index);
	snprintf(dev->path, sizeof(dev->path), "/dev/loop%u", d->index);
	dev->major = d->major;
	dev->minor = d->minor;
	dev->diskseq = d->diskseq;
	dev->size = d->size;
	dev->flags = d->flags;
	dev->sector_size = d->sector_size;
	dev->offset = d->offset;
	dev->sizelimit = d->sizelimit;
	dev->backing_dev = d->backing_dev;
	dev->backing_ino = d->backing_ino;
}

/* The fd must be the device the reply names; anything else is a helper bug
 * (or not a helper), and the caller would write to the wrong place. */
static int check_device_fd(struct loopfd_session *s, int fd,
			   const struct lfd_device *d, struct loopfd_error *err)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return set_error(err, errno, 0, "attach: fstat on the device "
				 "fd: %s", strerror(errno));
	if (!S_ISBLK(st.st_mode) || st.st_rdev != makedev(d->major, d->minor))
		return protocol_error(s, err, LFD_OP_ATTACH, "the fd received "
				      "is not the block device the reply names");
	return 0;
}

LOOPFD_PUBLIC
int loopfd_attach(struct loopfd_session *s, int backing_fd,
		  const struct loopfd_attach_opts *opts,
		  struct loopfd_device *dev, struct loopfd_error *err)
{
	struct loopfd_error scratch;
	struct lfd_msg m;
	unsigned flags = 0;
	int fd = -1;

	if (!err)
		err = &scratch;
	if (!s || !dev)
		return set_error(err, EINVAL, 0, "attach: no session or device");
	if (backing_fd < 0)
		return set_error(err, EBADF, 0, "attach: no backing file "
				 "descriptor (%d)", backing_fd);
	memset(&m, 0, sizeof(m));
	if (opts) {
		/* AUTOCLEAR is always in effect: asking for it is harmless. */
		flags = opts->flags & ~LOOPFD_AUTOCLEAR;
		if (flags & ~LFD_ATTACH_REQ_MASK)
			return set_error(err, EINVAL, 0, "attach: unknown flags "
					 "%#x", flags & ~LFD_ATTACH_REQ_MASK);
		m.u.attach_req.sector_size = opts->sector_size;
		m.u.attach_req.offset = opts->offset;
		m.u.attach_req.sizelimit = opts->sizelimit;
	}
	m.op = LFD_OP_ATTACH;
	m.u.attach_req.flags = flags;
	if (transact(s, &m, backing_fd, &fd, err) < 0)
		return -1;
	/* Counted before the check: the helper holds the device either way. */
	s->attached++;
	if (check_device_fd(s, fd, &m.u.attach_rep, err) < 0) {
		close(fd);
		return -1;
	}
	fill_device(dev, &m.u.attach_rep, fd);
	return 0;
}

/* What a release's outcome means for this side's bookkeeping. */
static void note_release(struct loopfd_session *s, int reason)
{
	/* The helper stays until such a device is gone (its slots stay
	 * counted); loopfd_close must not wait for that. */
	if (reason == LFD_R_BUSY || reason == LFD_R_DEVICE_CHANGED)
		s->lingers = 1;
	/* After these the id is gone from the session. */
	if (reason == LFD_R_NONE || reason == LFD_R_BUSY ||
	    reason == LFD_R_DEVICE_CHANGED || reason == LFD_R_DATA_LOST ||
	    reason == LFD_R_KERNEL)
		s->attached -= s->attached > 0;
}

LOOPFD_PUBLIC
int loopfd_release(struct loopfd_session *s, uint32_t id, uint32_t timeout_ms,
		   uint32_t *waited_ms, struct loopfd_error *err)
{
	struct loopfd_error scratch;
	struct lfd_msg m;

	if (!err)
		err = &scratch;
	if (!s)
		return set_error(err, EINVAL, 0, "release: no session");
	memset(&m, 0, sizeof(m));
	m.op = LFD_OP_RELEASE;
	m.u.release_req.id = id;
	m.u.release_req.timeout_ms = timeout_ms;
	if (transact(s, &m, -1, NULL, err) < 0) {
		if (err->reason == LFD_R_BUSY || err->reason == LFD_R_DEVICE_CHANGED ||
		    err->reason == LFD_R_DATA_LOST)
			note_release(s, err->reason);
		return -1;
	}
	note_release(s, LFD_R_NONE);
	if (m.u.release_rep.id != id)
		return protocol_error(s, err, LFD_OP_RELEASE, "the reply names "
				      "another device");
	if (waited_ms)
		*waited_ms = m.u.release_rep.waited_ms;
	return 0;
}

/* ---- batches ------------------------------------------------------------- */

static int batch_supported(const struct loopfd_session *s)
{
	return (s->info.features & LFD_FEAT_BATCH) != 0;
}

static int request_flags(const struct loopfd_attach_opts *opts, unsigned *flags,
			 struct loopfd_error *err)
{
	/* AUTOCLEAR is always in effect: asking for it is harmless. */
	*flags = opts ? opts->flags & ~LOOPFD_AUTOCLEAR : 0;
	if (*flags & ~LFD_ATTACH_REQ_MASK)
		return set_error(err, EINVAL, 0, "attach: unknown flags %#x",
				 *flags & ~LFD_ATTACH_REQ_MASK);
	return 0;
}

/* The helper's "entry K: " names the entry that failed: into *failed, and
 * out of the message (the caller names the entry its own way). */
static void take_entry_index(struct loopfd_error *err, size_t n, size_t *failed)
{
	static const char prefix[] = "attach: helper refused: ";
	char *text = err->msg + sizeof(prefix) - 1, *end;
	unsigned long k;

	*failed = n;
	if (strncmp(err->msg, prefix, sizeof(prefix) - 1) != 0 ||
	    strncmp(text, "entry ", 6) != 0)
		return;
	k = strtoul(text + 6, &end, 10);
	if (end == text + 6 || strncmp(end, ": ", 2) != 0 || k >= n)
		return;
	*failed = k;
	memmove(text, end + 2, strlen(end + 2) + 1);
}

/* An old helper: one attach after another, undone on a failure, which is
 * what the helper does for a batch. */
static int attach_each(struct loopfd_session *s, const int *backing_fds,
		       const struct loopfd_attach_opts *opts, size_t n,
		       struct loopfd_device *devs, size_t *failed,
		       struct loopfd_error *err)
{
	size_t i, j;

	for (i = 0; i < n; i++) {
		if (loopfd_attach(s, backing_fds[i], opts ? &opts[i] : NULL,
				  &devs[i], err) == 0)
			continue;
		*failed = i;
		for (j = 0; j < i; j++) {
			close(devs[j].fd);
			devs[j].fd = -1;
			loopfd_release(s, devs[j].id, 0, NULL, NULL);
		}
		errno = err->err;
		return -1;
	}
	return 0;
}

static int check_batch_devices(struct loopfd_session *s, const struct lfd_msg *m,
			       const int *fds, size_t n, struct loopfd_device *devs,
			       struct loopfd_error *err)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (check_device_fd(s, fds[i], &m->u.attach_batch_rep.dev[i], err) < 0)
			break;
	if (i < n) {
		close_fds(fds, (int)n);
		return -1;
	}
	for (i = 0; i < n; i++)
		fill_device(&devs[i], &m->u.attach_batch_rep.dev[i], fds[i]);
	return 0;
}

LOOPFD_PUBLIC
int loopfd_attach_batch(struct loopfd_session *s, const int *backing_fds,
			const struct loopfd_attach_opts *opts, size_t n,
			struct loopfd_device *devs, size_t *failed,
			struct loopfd_error *err)
{
	struct loopfd_error scratch;
	struct lfd_msg m;
	int fds[LFD_MAX_BATCH] = { 0 };
	size_t i, where;

	if (!err)
		err = &scratch;
	if (!failed)
		failed = &where;
	*failed = n;
	if (!s || !devs || !backing_fds || n == 0 || n > LOOPFD_BATCH_MAX)
		return set_error(err, EINVAL, 0, "attach: a batch takes a session, "
				 "and 1 to %d backing fds and devices (%zu given)",
				 LOOPFD_BATCH_MAX, n);
	if (!batch_supported(s))
		return attach_each(s, backing_fds, opts, n, devs, failed, err);
	memset(&m, 0, sizeof(m));
	m.op = LFD_OP_ATTACH_BATCH;
	m.u.attach_batch_req.count = (uint32_t)n;
	for (i = 0; i < n; i++) {
		struct lfd_attach_req *a = &m.u.attach_batch_req.e[i];

		if (backing_fds[i] < 0 || request_flags(opts ? &opts[i] : NULL,
							&a->flags, err) < 0) {
			*failed = i;
			if (backing_fds[i] < 0)
				set_error(err, EBADF, 0, "attach: no backing file "
					  "descriptor (%d)", backing_fds[i]);
			return -1;
		}
		a->sector_size = opts ? opts[i].sector_size : 0;
		a->offset = opts ? opts[i].offset : 0;
		a->sizelimit = opts ? opts[i].sizelimit : 0;
	}
	if (transact_fds(s, &m, backing_fds, (int)n, fds, LFD_MAX_BATCH, err) < 0) {
		take_entry_index(err, n, failed);
		return -1;
	}
	/* Counted before the checks: the helper holds the devices either way. */
	s->attached += (unsigned)n;
	if (m.u.attach_batch_rep.count != n) {
		close_fds(fds, (int)m.u.attach_batch_rep.count);
		return protocol_error(s, err, LFD_OP_ATTACH_BATCH, "the reply "
				      "lists another number of devices");
	}
	return check_batch_devices(s, &m, fds, n, devs, err);
}

static void result_from(struct loopfd_release_result *r, uint32_t id,
			const struct loopfd_error *e)
{
	r->id = id;
	r->waited_ms = 0;
	r->error = *e;
}

/* An old helper, or the request refused as a whole: one outcome each. */
static size_t release_each(struct loopfd_session *s, const uint32_t *ids,
			   size_t n, uint32_t timeout_ms,
			   struct loopfd_release_result *res)
{
	size_t i, failed = 0;

	for (i = 0; i < n; i++) {
		memset(&res[i], 0, sizeof(res[i]));
		res[i].id = ids[i];
		if (loopfd_release(s, ids[i], timeout_ms, &res[i].waited_ms,
				   &res[i].error) < 0)
			failed++;
	}
	return failed;
}

/* The helper's outcome for one device, as loopfd_release reports it. */
static int take_outcome(struct loopfd_session *s,
			const struct lfd_release_outcome *o,
			struct loopfd_release_result *r)
{
	struct lfd_error e;

	memset(r, 0, sizeof(*r));
	r->id = o->id;
	r->waited_ms = o->waited_ms;
	note_release(s, (int)o->reason);
	if (o->reason == LFD_R_NONE)
		return 0;
	e.err = o->err;
	e.reason = o->reason;
	memcpy(e.text, o->text, sizeof(e.text));
	helper_error(&r->error, LFD_OP_RELEASE, &e);
	return -1;
}

/* The outcomes must be the request's devices, in its order. */
static int release_reply_bad(struct loopfd_session *s, const struct lfd_msg *m,
			     const uint32_t *ids, size_t n,
			     struct loopfd_error *err)
{
	size_t i;

	if (m->u.release_batch_rep.count != n)
		return protocol_error(s, err, LFD_OP_RELEASE_BATCH, "the reply "
				      "lists another number of devices");
	for (i = 0; i < n; i++)
		if (m->u.release_batch_rep.out[i].id != ids[i])
			return protocol_error(s, err, LFD_OP_RELEASE_BATCH, "an "
					      "outcome names another device");
	return 0;
}

LOOPFD_PUBLIC
int loopfd_release_batch(struct loopfd_session *s, const uint32_t *ids,
			 size_t n, uint32_t timeout_ms,
			 struct loopfd_release_result *results,
			 struct loopfd_error *err)
{
	struct loopfd_error scratch;
	struct lfd_msg m;
	size_t i, failed = 0;

	if (!err)
		err = &scratch;
	if (!s || !ids || !results || n == 0 || n > LOOPFD_BATCH_MAX)
		return set_error(err, EINVAL, 0, "release: a batch takes a "
				 "session, and 1 to %d ids and results (%zu given)",
				 LOOPFD_BATCH_MAX, n);
	if (!batch_supported(s)) {
		failed = release_each(s, ids, n, timeout_ms, results);
	} else {
		memset(&m, 0, sizeof(m));
		m.op = LFD_OP_RELEASE_BATCH;
		m.u.release_batch_req.count = (uint32_t)n;
		m.u.release_batch_req.timeout_ms = timeout_ms;
		memcpy(m.u.release_batch_req.id, ids, n * sizeof(*ids));
		if (transact_fds(s, &m, NULL, 0, NULL, 0, err) < 0) {
			for (i = 0; i < n; i++)
				result_from(&results[i], ids[i], err);
			return -1;
		}
		if (release_reply_bad(s, &m, ids, n, err)) {
			for (i = 0; i < n; i++)
				result_from(&results[i], ids[i], err);
			return -1;
		}
		for (i = 0; i < n; i++)
			if (take_outcome(s, &m.u.release_batch_rep.out[i], &results[i]) < 0)
				failed++;
	}
	if (failed == 0)
		return 0;
	return set_error(err, EIO, 0, "release: %zu of %zu devices not released "
			 "as asked; each one's outcome says why", failed, n);
}

LOOPFD_PUBLIC
int loopfd_list(struct loopfd_session *s, struct loopfd_device *devs,
		size_t max, size_t *count, struct loopfd_error *err)
{
	struct loopfd_error scratch;
	struct lfd_msg m;
	uint32_t i;

	if (!err)
		err = &scratch;
	if (!s || !count || (max > 0 && !devs))
		return set_error(err, EINVAL, 0, "list: no session, device "
				 "array or count");
	memset(&m, 0, sizeof(m));
	m.op = LFD_OP_LIST;
	if (transact(s, &m, -1, NULL, err) < 0)
		return -1;
	for (i = 0; i < m.u.list_rep.count && i < max; i++)
		fill_device(&devs[i], &m.u.list_rep.dev[i], -1);
	*count = m.u.list_rep.count;
	return 0;
}

LOOPFD_PUBLIC
void loopfd_close(struct loopfd_session *s)
{
	int saved = errno;
	int st;

	if (!s)
		return;
	/* Closing the socket is what tells the helper the session is over. */
	if (s->sock >= 0)
		close(s->sock);
	/* Wait for a spawned helper only when it has nothing left to do: a
	 * device still attached (its fd perhaps still open here) or released
	 * busy keeps it running, maybe for long. */
	if (s->helper > 0 && !s->lingers && s->attached == 0)
		wait_helper(s, &st);
	else if (s->helper > 0)
		waitpid(s->helper, &st, WNOHANG);
	free(s);
	errno = saved;
}

LOOPFD_PUBLIC
const char *loopfd_strerror(const struct loopfd_error *err)
{
	if (!err)
		return "no error information";
	if (err->msg[0] != '\0')
		return err->msg;
	return strerror(err->err);
}
