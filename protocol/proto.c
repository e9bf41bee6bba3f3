/*
 * loopfd wire format: encoding, decoding and the SCM_RIGHTS transport.
 *
 * Decoding is the first code that touches bytes from an untrusted peer, so it
 * is written as plain bounds-checked reads of fixed offsets: no pointer casts
 * into the buffer, no lengths taken from the message except the one header
 * field that must equal what actually arrived.
 */
#include "loopfd_proto.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SCM_PIDFD
#define SCM_PIDFD	0x04	/* Linux 6.5; older libc headers lack it */
#endif

struct cursor {
	uint8_t *w;		/* encoding */
	const uint8_t *r;	/* decoding */
	size_t pos;
	size_t len;
	int bad;
};

static void put16(struct cursor *c, uint16_t v)
{
	if (c->pos + 2 > c->len) {
		c->bad = 1;
		return;
	}
	c->w[c->pos] = (uint8_t)v;
	c->w[c->pos + 1] = (uint8_t)(v >> 8);
	c->pos += 2;
}

static void put32(struct cursor *c, uint32_t v)
{
	put16(c, (uint16_t)v);
	put16(c, (uint16_t)(v >> 16));
}

static void put64(struct cursor *c, uint64_t v)
{
	put32(c, (uint32_t)v);
	put32(c, (uint32_t)(v >> 32));
}

static void put_bytes(struct cursor *c, const void *p, size_t n)
{
	if (c->pos + n > c->len) {
		c->bad = 1;
		return;
	}
	memcpy(c->w + c->pos, p, n);
	c->pos += n;
}

static uint16_t get16(struct cursor *c)
{
	uint16_t v;

	if (c->pos + 2 > c->len) {
		c->bad = 1;
		return 0;
	}
	v = (uint16_t)(c->r[c->pos] | (c->r[c->pos + 1] << 8));
	c->pos += 2;
	return v;
}

static uint32_t get32(struct cursor *c)
{
	uint32_t lo = get16(c);

	return lo | ((uint32_t)get16(c) << 16);
}

static uint64_t get64(struct cursor *c)
{
	uint64_t lo = get32(c);

	return lo | ((uint64_t)get32(c) << 32);
}

static void get_bytes(struct cursor *c, void *p, size_t n)
{
	if (c->pos + n > c->len) {
		c->bad = 1;
		return;
	}
	memcpy(p, c->r + c->pos, n);
	c->pos += n;
}

/* A reserved field that is not zero makes the message malformed. */
static void get_reserved32(struct cursor *c)
{
	if (get32(c) != 0)
		c->bad = 1;
}

static void put_device(struct cursor *c, const struct lfd_device *d)
{
	put32(c, d->id);
	put32(c, d->index);
	put32(c, d->major);
	put32(c, d->minor);
	put64(c, d->diskseq);
	put64(c, d->size);
	put32(c, d->flags);
	put32(c, d->sector_size);
	put64(c, d->offset);
	put64(c, d->sizelimit);
	put64(c, d->backing_dev);
	put64(c, d->backing_ino);
}

static void get_device(struct cursor *c, struct lfd_device *d)
{
	d->id = get32(c);
	d->index = get32(c);
	d->major = get32(c);
	d->minor = get32(c);
	d->diskseq = get64(c);
	d->size = get64(c);
	d->flags = get32(c);
	d->sector_size = get32(c);
	d->offset = get64(c);
	d->sizelimit = get64(c);
	d->backing_dev = get64(c);
	d->backing_ino = get64(c);
}

/* Body size of each op; LIST replies are variable and checked apart. */
static const struct {
	uint16_t op;
	uint16_t size;
} body_sizes[] = {
	{ LFD_OP_HELLO,			LFD_HELLO_REQ_SIZE },
	{ LFD_OP_HELLO | LFD_REPLY,	LFD_HELLO_REP_SIZE },
	{ LFD_OP_ATTACH,		LFD_ATTACH_REQ_SIZE },
	{ LFD_OP_ATTACH | LFD_REPLY,	LFD_DEVICE_SIZE },
	{ LFD_OP_RELEASE,		LFD_RELEASE_REQ_SIZE },
	{ LFD_OP_RELEASE | LFD_REPLY,	LFD_RELEASE_REP_SIZE },
	{ LFD_OP_LIST,			LFD_LIST_REQ_SIZE },
	{ LFD_OP_ERROR,			LFD_ERROR_SIZE },
};

/* Body size of op, or -1 for an unknown op (and for LIST replies). */
static long body_size(uint16_t op)
{
	size_t i;

	for (i = 0; i < sizeof(body_sizes) / sizeof(body_sizes[0]); i++)
		if (body_sizes[i].op == op)
			return body_sizes[i].size;
	return -1;
}

static int batch_op(uint16_t op)
{
	return (op & ~LFD_REPLY) == LFD_OP_ATTACH_BATCH ||
	       (op & ~LFD_REPLY) == LFD_OP_RELEASE_BATCH;
}

int lfd_fds_for_op(uint16_t op)
{
	if (op == LFD_OP_ATTACH_BATCH || op == (LFD_OP_ATTACH_BATCH | LFD_REPLY))
		return -1;
	return op == LFD_OP_ATTACH || op == (LFD_OP_ATTACH | LFD_REPLY);
}

int lfd_fds_for_msg(const struct lfd_msg *m)
{
	if (m->op == LFD_OP_ATTACH_BATCH)
		return (int)m->u.attach_batch_req.count;
	if (m->op == (LFD_OP_ATTACH_BATCH | LFD_REPLY))
		return (int)m->u.attach_batch_rep.count;
	return lfd_fds_for_op(m->op);
}

static void put_attach_req(struct cursor *c, const struct lfd_attach_req *a)
{
	put32(c, a->flags);
	put32(c, a->sector_size);
	put64(c, a->offset);
	put64(c, a->sizelimit);
	put64(c, 0);
}

static void get_attach_req(struct cursor *c, struct lfd_attach_req *a)
{
	a->flags = get32(c);
	a->sector_size = get32(c);
	a->offset = get64(c);
	a->sizelimit = get64(c);
	get_reserved32(c);
	get_reserved32(c);
}

/* A batch holds 1 .. LFD_MAX_BATCH entries of entry_size bytes each, and
 * exactly as many as its count says: the count is checked against the
 * bytes that arrived before any entry is read. */
static int batch_count_bad(const struct cursor *c, uint32_t count,
			   size_t entry_size)
{
	return count == 0 || count > LFD_MAX_BATCH ||
	       c->len - c->pos != (size_t)count * entry_size;
}

static void put_outcome(struct cursor *c, const struct lfd_release_outcome *o)
{
	put32(c, o->id);
	put32(c, o->reason);
	put32(c, (uint32_t)o->err);
	put32(c, o->waited_ms);
	put_bytes(c, o->text, LFD_MSG_TEXT);
}

static void get_outcome(struct cursor *c, struct lfd_release_outcome *o)
{
	o->id = get32(c);
	o->reason = get32(c);
	o->err = (int32_t)get32(c);
	o->waited_ms = get32(c);
	get_bytes(c, o->text, LFD_MSG_TEXT);
	if (memchr(o->text, '\0', LFD_MSG_TEXT) == NULL)
		c->bad = 1;
}

/* The batch ops: the count first, so a bad one encodes nothing. */
static void put_batch(struct cursor *c, const struct lfd_msg *m)
{
	const struct lfd_attach_batch_req *aq = &m->u.attach_batch_req;
	const struct lfd_attach_batch_rep *ap = &m->u.attach_batch_rep;
	const struct lfd_release_batch_req *rq = &m->u.release_batch_req;
	const struct lfd_release_batch_rep *rp = &m->u.release_batch_rep;
	uint32_t i, n = m->op == LFD_OP_ATTACH_BATCH ? aq->count :
			m->op == (LFD_OP_ATTACH_BATCH | LFD_REPLY) ? ap->count :
			m->op == LFD_OP_RELEASE_BATCH ? rq->count : rp->count;

	if (n == 0 || n > LFD_MAX_BATCH) {
		c->bad = 1;
		return;
	}
	put32(c, n);
	put32(c, m->op == LFD_OP_RELEASE_BATCH ? rq->timeout_ms : 0);
	for (i = 0; i < n; i++) {
		if (m->op == LFD_OP_ATTACH_BATCH)
			put_attach_req(c, &aq->e[i]);
		else if (m->op == (LFD_OP_ATTACH_BATCH | LFD_REPLY))
			put_device(c, &ap->dev[i]);
		else if (m->op == LFD_OP_RELEASE_BATCH)
			put32(c, rq->id[i]);
		else
			put_outcome(c, &rp->out[i]);
	}
}

static void get_batch(struct cursor *c, struct lfd_msg *m)
{
	uint32_t i, n = get32(c), second = get32(c);
	size_t size = m->op == LFD_OP_ATTACH_BATCH ? LFD_ATTACH_REQ_SIZE :
		      m->op == (LFD_OP_ATTACH_BATCH | LFD_REPLY) ? LFD_DEVICE_SIZE :
		      m->op == LFD_OP_RELEASE_BATCH ? LFD_RELEASE_ID_SIZE :
		      LFD_OUTCOME_SIZE;

	/* The second word is reserved, except in RELEASE_BATCH requests. */
	if (c->bad || batch_count_bad(c, n, size) ||
	    (m->op != LFD_OP_RELEASE_BATCH && second != 0)) {
		c->bad = 1;
		return;
	}
	m->u.attach_batch_req.count = n;	/* count leads each batch struct */
	if (m->op == LFD_OP_RELEASE_BATCH)
		m->u.release_batch_req.timeout_ms = second;
	for (i = 0; i < n; i++) {
		if (m->op == LFD_OP_ATTACH_BATCH)
			get_attach_req(c, &m->u.attach_batch_req.e[i]);
		else if (m->op == (LFD_OP_ATTACH_BATCH | LFD_REPLY))
			get_device(c, &m->u.attach_batch_rep.dev[i]);
		else if (m->op == LFD_OP_RELEASE_BATCH)
			m->u.release_batch_req.id[i] = get32(c);
		else
			get_outcome(c, &m->u.release_batch_rep.out[i]);
	}
}

static void put_body(struct cursor *c, const struct lfd_msg *m)
{
	uint32_t i;

	if (batch_op(m->op)) {
		put_batch(c, m);
		return;
	}
	switch (m->op) {
	case LFD_OP_HELLO:
		put16(c, m->u.hello_req.min_version);
		put16(c, m->u.hello_req.max_version);
		put32(c, 0);
		break;
	case LFD_OP_HELLO | LFD_REPLY:
		put16(c, m->u.hello_rep.version);
		put16(c, m->u.hello_rep.mode);
		put32(c, m->u.hello_rep.features);
		put32(c, m->u.hello_rep.max_devices);
		put32(c, m->u.hello_rep.max_timeout_ms);
		put32(c, m->u.hello_rep.uid);
		put32(c, m->u.hello_rep.gid);
		break;
	case LFD_OP_ATTACH:
		put_attach_req(c, &m->u.attach_req);
		break;
	case LFD_OP_ATTACH | LFD_REPLY:
		put_device(c, &m->u.attach_rep);
		break;
	case LFD_OP_RELEASE:
		put32(c, m->u.release_req.id);
		put32(c, m->u.release_req.timeout_ms);
		break;
	case LFD_OP_RELEASE | LFD_REPLY:
		put32(c, m->u.release_rep.id);
		put32(c, m->u.release_rep.waited_ms);
		break;
	case LFD_OP_LIST:
		break;
	case LFD_OP_LIST | LFD_REPLY:
		if (m->u.list_rep.count > LFD_MAX_DEVICES) {
			c->bad = 1;
			break;
		}
		put32(c, m->u.list_rep.count);
		put32(c, 0);
		for (i = 0; i < m->u.list_rep.count; i++)
			put_device(c, &m->u.list_rep.dev[i]);
		break;
	case LFD_OP_ERROR:
		put32(c, (uint32_t)m->u.error.err);
		put32(c, m->u.error.reason);
		put_bytes(c, m->u.error.text, LFD_MSG_TEXT);
		break;
	default:
		c->bad = 1;
	}
}

size_t lfd_encode(const struct lfd_msg *m, uint8_t *buf, size_t cap)
{
	struct cursor c = { .w = buf, .len = cap };

	put32(&c, LFD_MAGIC);
	put16(&c, m->version);
	put16(&c, m->op);
	put32(&c, m->seq);
	put32(&c, 0);		/* body length, patched below */
	put_body(&c, m);
	if (c.bad)
		return 0;
	c.len = c.pos;
	c.pos = 12;
	put32(&c, (uint32_t)(c.len - LFD_HEADER_SIZE));
	return c.len;
}

static void get_body(struct cursor *c, struct lfd_msg *m)
{
	uint32_t i;

	if (batch_op(m->op)) {
		get_batch(c, m);
		return;
	}
	switch (m->op) {
	case LFD_OP_HELLO:
		m->u.hello_req.min_version = get16(c);
		m->u.hello_req.max_version = get16(c);
		get_reserved32(c);
		break;
	case LFD_OP_HELLO | LFD_REPLY:
		m->u.hello_rep.version = get16(c);
		m->u.hello_rep.mode = get16(c);
		m->u.hello_rep.features = get32(c);
		m->u.hello_rep.max_devices = get32(c);
		m->u.hello_rep.max_timeout_ms = get32(c);
		m->u.hello_rep.uid = get32(c);
		m->u.hello_rep.gid = get32(c);
		break;
	case LFD_OP_ATTACH:
		get_attach_req(c, &m->u.attach_req);
		break;
	case LFD_OP_ATTACH | LFD_REPLY:
		get_device(c, &m->u.attach_rep);
		break;
	case LFD_OP_RELEASE:
		m->u.release_req.id = get32(c);
		m->u.release_req.timeout_ms = get32(c);
		break;
	case LFD_OP_RELEASE | LFD_REPLY:
		m->u.release_rep.id = get32(c);
		m->u.release_rep.waited_ms = get32(c);
		break;
	case LFD_OP_LIST:
		break;
	case LFD_OP_LIST | LFD_REPLY:
		m->u.list_rep.count = get32(c);
		get_reserved32(c);
		if (m->u.list_rep.count > LFD_MAX_DEVICES ||
		    c->len - c->pos != (size_t)m->u.list_rep.count * LFD_DEVICE_SIZE) {
			c->bad = 1;
			break;
		}
		for (i = 0; i < m->u.list_rep.count; i++)
			get_device(c, &m->u.list_rep.dev[i]);
		break;
	case LFD_OP_ERROR:
		m->u.error.err = (int32_t)get32(c);
		m->u.error.reason = get32(c);
		get_bytes(c, m->u.error.text, LFD_MSG_TEXT);
		if (memchr(m->u.error.text, '\0', LFD_MSG_TEXT) == NULL)
			c->bad = 1;
		break;
	default:
		c->bad = 1;
	}
}

enum lfd_reason lfd_decode(const uint8_t *buf, size_t len, struct lfd_msg *m)
{
	struct cursor c = { .r = buf, .len = len };
	uint32_t magic, body_len;
	long want;

	memset(m, 0, sizeof(*m));
	/* Only a RELEASE_BATCH reply may exceed LFD_MAX_MSG; every other
	 * message's exact size is checked below. */
	if (len < LFD_HEADER_SIZE || len > LFD_MAX_REPLY)
		return LFD_R_MALFORMED;
	magic = get32(&c);
	m->version = get16(&c);
	m->op = get16(&c);
	m->seq = get32(&c);
	body_len = get32(&c);
	if (magic != LFD_MAGIC || body_len != len - LFD_HEADER_SIZE)
		return LFD_R_MALFORMED;
	if (m->version != LFD_VERSION)
		return LFD_R_VERSION;
	want = body_size(m->op);
	if (want < 0 && m->op != (LFD_OP_LIST | LFD_REPLY) && !batch_op(m->op))
		return LFD_R_UNKNOWN_OP;
	if (len > LFD_MAX_MSG && m->op != (LFD_OP_RELEASE_BATCH | LFD_REPLY))
		return LFD_R_MALFORMED;
	if (want >= 0 && (size_t)want != body_len)
		return LFD_R_MALFORMED;
	get_body(&c, m);
	if (c.bad || c.pos != len)
		return LFD_R_MALFORMED;
	return LFD_R_NONE;
}

static const struct {
	int err;
	const char *name;
} reasons[LFD_R_MAX + 1] = {
	[LFD_R_NONE]		 = { 0, "ok" },
	[LFD_R_MALFORMED]	 = { EPROTO, "malformed message" },
	[LFD_R_VERSION]		 = { EPROTONOSUPPORT, "unsupported protocol version" },
	[LFD_R_UNKNOWN_OP]	 = { EOPNOTSUPP, "unknown operation" },
	[LFD_R_NO_HELLO]	 = { EPROTO, "hello required first" },
	[LFD_R_FD_COUNT]	 = { EBADF, "wrong number of file descriptors" },
	[LFD_R_CONTROL]		 = { EPROTO, "unexpected control message" },
	[LFD_R_NOT_AUTHORIZED]	 = { EPERM, "not authorized" },
	[LFD_R_CONFIG]		 = { EACCES, "configuration unusable" },
	[LFD_R_FORBIDDEN_OPTION] = { EPERM, "option forbidden by policy" },
	[LFD_R_BAD_OPTION]	 = { EINVAL, "invalid option" },
	[LFD_R_BACKING_KIND]	 = { EINVAL, "backing file of wrong kind" },
	[LFD_R_BACKING_ACCESS]	 = { EBADF, "backing fd opened wrongly" },
	[LFD_R_BACKING_FS]	 = { EINVAL, "backing file on a pseudo filesystem or on FUSE" },
	[LFD_R_BACKING_LOOP]	 = { EINVAL, "backing fd is a loop device" },
	[LFD_R_QUOTA_USER]	 = { EDQUOT, "per-user device limit reached" },
	[LFD_R_QUOTA_GLOBAL]	 = { EAGAIN, "system-wide device limit reached" },
	[LFD_R_QUOTA_SESSION]	 = { EMFILE, "session device limit reached" },
	[LFD_R_NO_DEVICE]	 = { EBUSY, "no free loop device" },
	[LFD_R_KERNEL]		 = { EIO, "kernel call failed" },
	[LFD_R_UNKNOWN_DEVICE]	 = { ENOENT, "no such device in this session" },
	[LFD_R_DEVICE_CHANGED]	 = { ESTALE, "device changed behind the helper" },
	[LFD_R_DATA_LOST]	 = { EIO, "data lost in writeback" },
	[LFD_R_BUSY]		 = { EBUSY, "still open elsewhere" },
};

int lfd_reason_errno(enum lfd_reason r)
{
	return (unsigned)r <= LFD_R_MAX ? reasons[r].err : EPROTO;
}

const char *lfd_reason_name(enum lfd_reason r)
{
	return (unsigned)r <= LFD_R_MAX ? reasons[r].name : "unknown reason";
}

void lfd_make_error(struct lfd_msg *m, uint32_t seq, int err,
		    enum lfd_reason reason, const char *fmt, ...)
{
	va_list ap;

	memset(m, 0, sizeof(*m));
	m->version = LFD_VERSION;
	m->op = LFD_OP_ERROR;
	m->seq = seq;
	m->u.error.err = err > 0 ? err : lfd_reason_errno(reason);
	m->u.error.reason = reason;
	va_start(ap, fmt);
	vsnprintf(m->u.error.text, sizeof(m->u.error.text), fmt, ap);
	va_end(ap);
}

int lfd_send(int sock, const uint8_t *buf, size_t len, int fd)
{
	return lfd_send_fds(sock, buf, len, &fd, fd >= 0 ? 1 : 0);
}

int lfd_send_fds(int sock, const uint8_t *buf, size_t len, const int *fds,
		 int nfds)
{
	union {
		struct cmsghdr hdr;
		char buf[CMSG_SPACE(sizeof(int) * LFD_MAX_BATCH)];
	} control;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *cmsg;
	ssize_t n;

	if (nfds < 0 || nfds > LFD_MAX_BATCH) {
		errno = EINVAL;
		return -1;
	}
	if (nfds > 0) {
		memset(&control, 0, sizeof(control));
		msg.msg_control = control.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		cmsg = CMSG_FIRSTHDR(&msg);
		cmsg->cmsg_level = SOL_SOCKET;
		cmsg->cmsg_type = SCM_RIGHTS;
		cmsg->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * (size_t)nfds);
	}
	do {
		n = sendmsg(sock, &msg, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -1;
	if ((size_t)n != len) {
		errno = EMSGSIZE;
		return -1;
	}
	return 0;
}

/* Take the fds of one SCM_RIGHTS message: keep what fits, close the rest. */
static void take_fds(struct cmsghdr *cmsg, int *fds, int maxfds, int *nfds)
{
	size_t n = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
	size_t i;
	int fd;

	for (i = 0; i < n; i++) {
		memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
		if (*nfds < maxfds)
			fds[*nfds] = fd;
		else
			close(fd);
		(*nfds)++;
	}
}

/* SCM_PIDFD comes to a receiver with SO_PASSPIDFD set, which whoever
 * created the socket can set before handing it over: it carries an fd the
 * kernel already installed in our table, and each message would leak one. */
static void close_pidfd(struct cmsghdr *cmsg)
{
	int fd;

	if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_PIDFD ||
	    cmsg->cmsg_len < CMSG_LEN(sizeof(int)))
		return;
	memcpy(&fd, CMSG_DATA(cmsg), sizeof(int));
	close(fd);
}

long lfd_recv(int sock, uint8_t *buf, size_t cap, int *fds, int maxfds,
	      int *nfds, int *flags)
{
	/* Room for the most fds the kernel passes in one message, so that
	 * none is dropped by MSG_CTRUNC without being closed. */
	union {
		struct cmsghdr hdr;
		char buf[CMSG_SPACE(sizeof(int) * LFD_RECV_MAX_FDS) + 256];
	} control;
	struct iovec iov = { .iov_base = buf, .iov_len = cap };
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = control.buf, .msg_controllen = sizeof(control.buf),
	};
	struct cmsghdr *cmsg;
	ssize_t n;

	*nfds = 0;
	*flags = 0;
	do {
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -1;
	for (cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
		if (cmsg->cmsg_level == SOL_SOCKET &&
		    cmsg->cmsg_type == SCM_RIGHTS) {
			/* The kernel merges the SCM_RIGHTS of several
			 * sendmsg calls into one control message. */
			take_fds(cmsg, fds, maxfds, nfds);
		} else {
			close_pidfd(cmsg);
			*flags |= LFD_RECV_OTHER_CMSG;
		}
	}
	if (msg.msg_flags & MSG_TRUNC)
		*flags |= LFD_RECV_TRUNC;
	if (msg.msg_flags & MSG_CTRUNC)
		*flags |= LFD_RECV_CTRUNC;
	return (long)n;
}
