/*
 * The one serving code path: every mode ends up here with a connected
 * SOCK_SEQPACKET socket, a recorded caller and a sandboxed process.
 *
 * Every message is checked in the same order: transport (truncation,
 * control messages), format (lfd_decode), fd count for the op, session
 * state, then the op.  Every fd received is closed before the next message
 * is read, whatever happened.
 */
#include "helper.h"
#include "paths.h"
#include "sandbox.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define RELEASE_WATCH_FIRST_MS	20

struct request {
	struct lfd_msg msg;
	int fds[LFD_MAX_BATCH];	/* received; beyond these lfd_recv closes */
	int nfds;
};

static void send_msg_fds(struct session *s, const struct lfd_msg *m,
			 const int *fds, int nfds)
{
	uint8_t buf[LFD_MAX_REPLY];
	size_t len = lfd_encode(m, buf, sizeof(buf));

	if (len == 0) {
		logmsg("internal error: cannot encode reply op %u", m->op);
		return;
	}
	/* A client that does not read its replies fills the socket; the send
	 * timeout set at session start then ends the session (EAGAIN). */
	if (lfd_send_fds(s->sock, buf, len, fds, nfds) < 0) {
		s->reply_failed = 1;
		if (errno != EPIPE)
			logmsg("uid %u: cannot send reply: %s; ending the session",
			       (unsigned)s->caller.uid, strerror(errno));
	}
}

static void send_msg(struct session *s, const struct lfd_msg *m, int fd)
{
	send_msg_fds(s, m, &fd, fd >= 0 ? 1 : 0);
}

static void send_error(struct session *s, uint32_t seq, enum lfd_reason r,
		       const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void send_error(struct session *s, uint32_t seq, enum lfd_reason r,
		       const char *fmt, ...)
{
	char text[LFD_MSG_TEXT];
	struct lfd_msg m;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	lfd_make_error(&m, seq, 0, r, "%s", text);
	send_msg(s, &m, -1);
}

static void reply_init(struct lfd_msg *m, const struct lfd_msg *req)
{
	memset(m, 0, sizeof(*m));
	m->version = LFD_VERSION;
	m->op = req->op | LFD_REPLY;
	m->seq = req->seq;
}

static unsigned session_limit(const struct session *s)
{
	unsigned lim = s->policy.max_per_user;

	return lim < LFD_MAX_DEVICES ? lim : LFD_MAX_DEVICES;
}

static uint32_t allowed_features(const struct policy *p)
{
	return (p->allow_grant ? LFD_FEAT_GRANT : 0) |
	       (p->allow_partscan ? LFD_FEAT_PARTSCAN : 0) |
	       (p->allow_direct_io ? LFD_FEAT_DIRECT_IO : 0);
}

static void do_hello(struct session *s, const struct lfd_msg *req)
{
	const struct lfd_hello_req *h = &req->u.hello_req;
	struct lfd_msg rep;

	/* (min > max is covered: then one of the two holds) */
	if (h->min_version > LFD_VERSION || h->max_version < LFD_VERSION) {
		send_error(s, req->seq, LFD_R_VERSION,
			   "this helper speaks protocol version %u only",
			   (unsigned)LFD_VERSION);
		return;
	}
	reply_init(&rep, req);
	rep.u.hello_rep.version = LFD_VERSION;
	rep.u.hello_rep.mode = (uint16_t)s->mode;
	rep.u.hello_rep.features = allowed_features(&s->policy) | LFD_FEAT_BATCH;
	rep.u.hello_rep.max_devices = session_limit(s);
	rep.u.hello_rep.max_timeout_ms = LFD_MAX_TIMEOUT_MS;
	rep.u.hello_rep.uid = s->caller.uid;
	rep.u.hello_rep.gid = s->caller.gid;
	s->hello_done = 1;
	send_msg(s, &rep, -1);
}

/* The protocol's per-session cap; the policy's limits are the quota's. */
static struct device *free_device_slot(struct session *s)
{
	unsigned i;

	for (i = 0; i < LFD_MAX_DEVICES; i++)
		if (!s->dev[i].in_use)
			return &s->dev[i];
	return NULL;
}

static struct device *find_device(struct session *s, uint32_t id)
{
	unsigned i;

	for (i = 0; i < LFD_MAX_DEVICES; i++)
		if (s->dev[i].in_use && !s->dev[i].watching &&
		    s->dev[i].ident.id == id)
			return &s->dev[i];
	return NULL;
}

static const char *forbidden_option(const struct policy *p, uint32_t flags)
{
	if ((flags & LFD_ATTACH_GRANT) && !p->allow_grant)
		return "--grant is not allowed by " LOOPFD_CONFIG_PATH;
	if ((flags & LFD_ATTACH_PARTSCAN) && !p->allow_partscan)
		return "partition scanning is not allowed by " LOOPFD_CONFIG_PATH;
	if ((flags & LFD_ATTACH_DIRECT_IO) && !p->allow_direct_io)
		return "direct I/O is not allowed by " LOOPFD_CONFIG_PATH;
	return NULL;
}

static void set_bit(unsigned char *bits, int i, int on)
{
	if (on)
		bits[i / 8] |= (unsigned char)(1u << (i % 8));
	else
		bits[i / 8] &= (unsigned char)~(1u << (i % 8));
}

/* Per-user and global slots, held for the attachment's life (quota.c). */
static int take_slots(struct session *s, struct device *d, struct lfd_msg *err)
{
	d->user_slot = quota_take(s->quota_fd, quota_user_base(s->caller.uid),
				  s->policy.max_per_user, s->user_slots);
	if (d->user_slot < 0) {
		lfd_make_error(err, 0, 0, LFD_R_QUOTA_USER,
			       "uid %u already holds %u loop devices, the "
			       "per-user limit", (unsigned)s->caller.uid,
			       s->policy.max_per_user);
		return -1;
	}
	d->global_slot = quota_take(s->quota_fd, QUOTA_GLOBAL_BASE,
				    s->policy.max_total, s->global_slots);
	if (d->global_slot < 0) {
		quota_put(s->quota_fd, quota_user_base(s->caller.uid), d->user_slot);
		lfd_make_error(err, 0, 0, LFD_R_QUOTA_GLOBAL,
			       "%u loop devices are in use through loopfd, the "
			       "system-wide limit", s->policy.max_total);
		return -1;
	}
	set_bit(s->user_slots, d->user_slot, 1);
	set_bit(s->global_slots, d->global_slot, 1);
	return 0;
}

static void put_slots(struct session *s, struct device *d)
{
	quota_put(s->quota_fd, quota_user_base(s->caller.uid), d->user_slot);
	quota_put(s->quota_fd, QUOTA_GLOBAL_BASE, d->global_slot);
	set_bit(s->user_slots, d->user_slot, 0);
	set_bit(s->global_slots, d->global_slot, 0);
	d->user_slot = d->global_slot = -1;
}

/* Daemon modes: one log line per attach and per release outcome (the
 * journal of who held which device on which image).  In setuid mode the
 * log is the caller's own stderr, and it has the reply already. */
static void log_device(const struct session *s, const struct device *d,
		       const char *outcome)
{
	if (s->mode == LFD_MODE_SETUID)
		return;
	logmsg("uid %u: /dev/loop%u, image dev %u:%u ino %llu: %s",
	       (unsigned)s->caller.uid, d->ident.index,
	       (unsigned)major((dev_t)d->ident.backing_dev),
	       (unsigned)minor((dev_t)d->ident.backing_dev),
	       (unsigned long long)d->ident.backing_ino, outcome);
}

/* An attachment that failed before the client had it: unbound, its slots
 * given back. */
static void drop_entry(struct session *s, struct attach_job *j)
{
	loop_attach_undo(j);
	put_slots(s, j->d);
	j->d->in_use = 0;
	j->d = NULL;
}

/*
 * An attachment's first step, the same for ATTACH and each ATTACH_BATCH
 * entry: flags, policy, the session's cap, the quota slots, the backing fd
 * (loop_attach_prepare).  The device is in use from here; drop_entry gives
 * it back.  -1 with the refusal in j->err.
 */
static int prepare_entry(struct session *s, int backing_fd,
			 const struct lfd_attach_req *a, struct attach_job *j)
{
	struct device *d;
	const char *why;

	j->d = NULL;
	j->backing_fd = backing_fd;
	j->req = a;
	if (a->flags & ~LFD_ATTACH_REQ_MASK) {
		lfd_make_error(&j->err, 0, 0, LFD_R_BAD_OPTION, "unknown attach flags");
		return -1;
	}
	why = forbidden_option(&s->policy, a->flags);
	if (why) {
		lfd_make_error(&j->err, 0, 0, LFD_R_FORBIDDEN_OPTION, "%s", why);
		return -1;
	}
	d = free_device_slot(s);
	if (d == NULL) {
		lfd_make_error(&j->err, 0, 0, LFD_R_QUOTA_SESSION,
			       "this session holds as many devices as it may");
		return -1;
	}
	memset(d, 0, sizeof(*d));
	d->fd = -1;
	d->backing_fd = -1;
	if (take_slots(s, d, &j->err) < 0)
		return -1;
	d->in_use = 1;
	j->d = d;
	if (loop_attach_prepare(s, j) < 0) {
		drop_entry(s, j);
		return -1;
	}
	return 0;
}

/* The last step: the client's fd, the guard, the grant (loop_attach_finish). */
static int finish_entry(struct session *s, struct attach_job *j, int *client_fd)
{
	struct device *d = j->d;

	if (loop_attach_finish(s, j, client_fd) < 0) {
		drop_entry(s, j);
		return -1;
	}
	d->ident.id = ++s->next_id;
	log_device(s, d, d->granted ? "attached, node granted" : "attached");
	return 0;
}

static void do_attach(struct session *s, const struct request *r)
{
	struct attach_job j;
	struct lfd_msg rep;
	int client_fd = -1;

	if (prepare_entry(s, r->fds[0], &r->msg.u.attach_req, &j) < 0)
		goto refused;
	if (loop_attach_bind(s, &j) < 0) {
		drop_entry(s, &j);
		goto refused;
	}
	if (finish_entry(s, &j, &client_fd) < 0)
		goto refused;
	reply_init(&rep, &r->msg);
	rep.u.attach_rep = j.d->ident;
	send_msg(s, &rep, client_fd);
	close(client_fd);
	return;
refused:
	j.err.seq = r->msg.seq;
	send_msg(s, &j.err, -1);
}

static void forget_device(struct session *s, struct device *d)
{
	guard_note_gone(s, d);
	put_slots(s, d);
	d->in_use = 0;
	d->watching = 0;
}

/* After a release; a device that may still be attached (busy, changed)
 * stays in the session, invisible to the client, holding its slots until
 * it is gone: otherwise keeping devices open and releasing them would
 * attach any number of devices past the limits. */
static void settle_release(struct session *s, struct device *d, int rc)
{
	if (rc == RELEASE_STILL_ATTACHED && !loop_detached(d))
		d->watching = 1;
	else
		forget_device(s, d);
}

/*
 * A failure of an image's own write-back is seen by the first device on that
 * open image to fsync it, and by no other (loopdev.c): every other device
 * of the session on the same image is told, in this release or its own
 * later one.  Devices attached after it was seen are not.  Whoever fsyncs
 * the open file first gets the error, the client itself, or the loop
 * worker for a filesystem mounted on one of the devices: the helper then
 * sees none (KERNEL-FACTS.md).
 */
static void share_image_losses(struct session *s, struct device **dev,
			       unsigned n)
{
	struct device *d;
	unsigned i, j;

	for (i = 0; i < n; i++) {
		if (dev[i]->image_errno == 0)
			continue;
		for (j = 0; j < LFD_MAX_DEVICES; j++) {
			d = &s->dev[j];
			/* (A read-only device wrote nothing that was lost.) */
			if (d->in_use && d != dev[i] && d->shared_loss == 0 &&
			    !(d->ident.flags & LFD_ATTACH_READ_ONLY) &&
			    d->ident.backing_dev == dev[i]->ident.backing_dev &&
			    d->ident.backing_ino == dev[i]->ident.backing_ino)
				d->shared_loss = dev[i]->image_errno;
		}
	}
}

/* A device's failed release, in its outcome (a success is all zeroes). */
static void set_outcome(struct lfd_release_outcome *o, const struct lfd_msg *err)
{
	o->reason = err->u.error.reason;
	o->err = err->u.error.err;
	memcpy(o->text, err->u.error.text, sizeof(o->text));
}

/*
 * Release n devices as RELEASE would each, whatever happens to the others,
 * in the steps of loopdev.c, each step taken for every device before the
 * next: checked and its node taken back; flushed, all at once on threads
 * (threads.c), all joined before the first clear; cleared, one after another
 * (clears are the kernel's CPU work, which threads only slowed: 45 against
 * 39 us a device here), none waiting; only then are the devices others
 * still hold waited for, each wait round with a full flush.  So no device
 * waits, between its flush and its clear, for another's wait: what another
 * opener writes then is made durable by a later round.  timeout_ms bounds
 * the waiting of them all.  rc[i] is device i's result (enum
 * release_result), *out[i] its outcome; each is then settled.
 */
static void release_devices(struct session *s, struct device **dev,
			    unsigned n, uint32_t timeout_ms,
			    struct lfd_release_outcome **out, int *rc)
{
	struct device *held[LFD_MAX_BATCH];
	enum clear_result c[LFD_MAX_BATCH];
	unsigned i, k, m = 0, which[LFD_MAX_BATCH];
	int gone[LFD_MAX_BATCH];
	uint64_t start, spent;
	struct lfd_msg err;

	for (i = 0; i < n; i++) {
		if (loop_release_begin(dev[i], &err) < 0) {
			rc[i] = RELEASE_STILL_ATTACHED;
			set_outcome(out[i], &err);
			settle_release(s, dev[i], rc[i]);
			continue;
		}
		which[m] = i;
		held[m++] = dev[i];
	}
	loop_flush_all(held, m);
	for (k = 0; k < m; k++) {
		c[k] = loop_release_clear(held[k], &err);
		if (c[k] == CLEAR_ERROR) {
			rc[which[k]] = RELEASE_STILL_ATTACHED;
			set_outcome(out[which[k]], &err);
			settle_release(s, held[k], RELEASE_STILL_ATTACHED);
		}
	}
	start = now_ms();
	for (k = 0; k < m; k++) {
		gone[k] = c[k] == CLEAR_GONE;
		if (c[k] != CLEAR_HELD)
			continue;
		spent = now_ms() - start;
		gone[k] = loop_release_wait(held[k], spent >= timeout_ms ? 0 :
					    timeout_ms - (uint32_t)spent,
					    &out[which[k]]->waited_ms);
	}
	share_image_losses(s, held, m);
	for (k = 0; k < m; k++) {
		if (c[k] == CLEAR_ERROR)
			continue;
		i = which[k];
		rc[i] = loop_release_outcome(held[k], gone[k], out[i]->waited_ms, &err);
		if (rc[i] != RELEASE_DONE)
			set_outcome(out[i], &err);
		settle_release(s, held[k], rc[i]);
	}
}

/* RELEASE of one device (also the session's end and a failed batch's
 * undoing): release_devices with one. */
static int release_one(struct session *s, struct device *d, uint32_t timeout_ms,
		       uint32_t *waited_ms, struct lfd_msg *err)
{
	struct lfd_release_outcome o, *out = &o;
	int rc;

	memset(&o, 0, sizeof(o));
	release_devices(s, &d, 1, timeout_ms, &out, &rc);
	*waited_ms = o.waited_ms;
	if (rc != RELEASE_DONE)
		lfd_make_error(err, 0, o.err, (enum lfd_reason)o.reason, "%s", o.text);
	return rc;
}

static int watching_any(const struct session *s)
{
	unsigned i;

	for (i = 0; i < LFD_MAX_DEVICES; i++)
		if (s->dev[i].in_use && s->dev[i].watching)
			return 1;
	return 0;
}

/* Devices released busy or changed: free the slots of those now gone. */
static void check_watched(struct session *s)
{
	unsigned i;

	for (i = 0; i < LFD_MAX_DEVICES; i++) {
		struct device *d = &s->dev[i];

		if (d->in_use && d->watching && loop_detached(d)) {
			logmsg("uid %u: /dev/loop%u, released busy, has detached",
			       (unsigned)s->caller.uid, d->ident.index);
			forget_device(s, d);
		}
	}
}

static void do_release(struct session *s, const struct lfd_msg *req)
{
	const struct lfd_release_req *rr = &req->u.release_req;
	struct device *d = find_device(s, rr->id);
	struct lfd_msg rep;
	uint32_t waited = 0;

	if (d == NULL) {
		send_error(s, req->seq, LFD_R_UNKNOWN_DEVICE,
			   "no device with that id in this session");
		return;
	}
	if (rr->timeout_ms > LFD_MAX_TIMEOUT_MS) {
		send_error(s, req->seq, LFD_R_BAD_OPTION,
			   "release timeout above %u ms", LFD_MAX_TIMEOUT_MS);
		return;
	}
	if (release_one(s, d, rr->timeout_ms, &waited, &rep) != RELEASE_DONE) {
		log_device(s, d, rep.u.error.text);
		rep.seq = req->seq;
		send_msg(s, &rep, -1);
		return;
	}
	log_device(s, d, "released: flushed and detached");
	reply_init(&rep, req);
	rep.u.release_rep.id = rr->id;
	rep.u.release_rep.waited_ms = waited;
	send_msg(s, &rep, -1);
}

/*
 * A batch attach that failed at entry k.  The devices of entries 0 .. k-1
 * were finished but never shown to the client (no reply, no fd): they are
 * released here, the same way as RELEASE with no wait, before the error
 * reply.  One the caller opened by path meanwhile (a granted node) stays,
 * released busy: counted against the limits until it detaches, as after
 * RELEASE.  Entries k .. n-1 never reached the client's hands and are
 * dropped (those bound are unbound).
 */
static void undo_batch(struct session *s, struct attach_job *j,
		       const int *client_fds, uint32_t k, uint32_t n)
{
	struct lfd_msg err;
	uint32_t i, waited;

	for (i = 0; i < k; i++) {
		close(client_fds[i]);	/* ours: it would keep the device busy */
		if (release_one(s, j[i].d, 0, &waited, &err) == RELEASE_DONE)
			log_device(s, j[i].d, "batch attach failed: released");
		else
			log_device(s, j[i].d, err.u.error.text);
	}
	for (; i < n; i++)
		if (j[i].d != NULL)
			drop_entry(s, &j[i]);
}

static void batch_refused(struct session *s, const struct request *r,
			  const struct attach_job *j, uint32_t k)
{
	struct lfd_msg rep;

	lfd_make_error(&rep, r->msg.seq, j[k].err.u.error.err,
		       (enum lfd_reason)j[k].err.u.error.reason,
		       "entry %u: %s", (unsigned)k, j[k].err.u.error.text);
	send_msg(s, &rep, -1);
}

/*
 * All or nothing: every entry attached and all the fds in one reply, or
 * nothing left attached and an error that names the entry ("entry K: ").
 * Each step is taken for all the entries before the next, so that the
 * binds can run on threads (threads.c).
 */
static void do_attach_batch(struct session *s, const struct request *r)
{
	/* Not on the stack: each job holds a whole message for its error,
	 * 16 KiB, and a 1 MiB frame is 256 stack-clash probes (page faults). */
	static struct attach_job j[LFD_MAX_BATCH];
	const struct lfd_attach_batch_req *b = &r->msg.u.attach_batch_req;
	int client_fds[LFD_MAX_BATCH];
	struct lfd_msg rep;
	uint32_t i, n = b->count, finished = 0;

	for (i = 0; i < n; i++)
		j[i].d = NULL;
	for (i = 0; i < n; i++)
		if (prepare_entry(s, r->fds[i], &b->e[i], &j[i]) < 0)
			goto refused;
	i = loop_bind_all(s, j, n);
	if (i < n)
		goto refused;
	for (i = 0; i < n; i++, finished++)
		if (finish_entry(s, &j[i], &client_fds[i]) < 0)
			goto refused;
	reply_init(&rep, &r->msg);
	rep.u.attach_batch_rep.count = n;
	for (i = 0; i < n; i++)
		rep.u.attach_batch_rep.dev[i] = j[i].d->ident;
	send_msg_fds(s, &rep, client_fds, (int)n);
	for (i = 0; i < n; i++)
		close(client_fds[i]);
	return;
refused:
	undo_batch(s, j, client_fds, finished, n);
	batch_refused(s, r, j, i);
}

/* The index of an earlier entry with the same id as entry i, or -1. */
static long earlier_duplicate(const struct lfd_release_batch_req *b, uint32_t i)
{
	uint32_t j;

	for (j = 0; j < i; j++)
		if (b->id[j] == b->id[i])
			return (long)j;
	return -1;
}

/* Its ids are distinct: nothing is released otherwise. */
static int check_batch_ids(struct session *s, const struct lfd_msg *req)
{
	const struct lfd_release_batch_req *b = &req->u.release_batch_req;
	uint32_t i;
	long dup;

	for (i = 1; i < b->count; i++) {
		dup = earlier_duplicate(b, i);
		if (dup >= 0) {
			send_error(s, req->seq, LFD_R_BAD_OPTION, "entries %ld "
				   "and %u both name id %u: nothing released",
				   dup, (unsigned)i, (unsigned)b->id[i]);
			return -1;
		}
	}
	return 0;
}

/* Each device released as RELEASE would, whatever happened to the others
 * (release_devices); the one timeout bounds the whole request's waiting. */
static void do_release_batch(struct session *s, const struct lfd_msg *req)
{
	const struct lfd_release_batch_req *b = &req->u.release_batch_req;
	struct lfd_release_outcome *out[LFD_MAX_BATCH];
	struct device *d, *dev[LFD_MAX_BATCH];
	struct lfd_msg rep, err;
	uint32_t i, n = 0;
	int rc[LFD_MAX_BATCH];

	if (b->timeout_ms > LFD_MAX_TIMEOUT_MS) {
		send_error(s, req->seq, LFD_R_BAD_OPTION,
			   "release timeout above %u ms", LFD_MAX_TIMEOUT_MS);
		return;
	}
	if (check_batch_ids(s, req) < 0)
		return;
	reply_init(&rep, req);
	rep.u.release_batch_rep.count = b->count;
	for (i = 0; i < b->count; i++) {
		rep.u.release_batch_rep.out[i].id = b->id[i];
		d = find_device(s, b->id[i]);
		if (d == NULL) {
			lfd_make_error(&err, 0, 0, LFD_R_UNKNOWN_DEVICE, "no device "
				       "with id %u in this session", (unsigned)b->id[i]);
			set_outcome(&rep.u.release_batch_rep.out[i], &err);
			continue;
		}
		out[n] = &rep.u.release_batch_rep.out[i];
		dev[n++] = d;
	}
	release_devices(s, dev, n, b->timeout_ms, out, rc);
	for (i = 0; i < n; i++)
		log_device(s, dev[i], rc[i] == RELEASE_DONE ?
			   "released: flushed and detached" : out[i]->text);
	send_msg(s, &rep, -1);
}

static void do_list(struct session *s, const struct lfd_msg *req)
{
	struct lfd_msg rep;
	unsigned i;

	reply_init(&rep, req);
	for (i = 0; i < LFD_MAX_DEVICES; i++)
		if (s->dev[i].in_use && !s->dev[i].watching)
			rep.u.list_rep.dev[rep.u.list_rep.count++] = s->dev[i].ident;
	send_msg(s, &rep, -1);
}

/* Transport-level problems, in the order they are reported. */
static enum lfd_reason transport_problem(int flags)
{
	if (flags & LFD_RECV_TRUNC)
		return LFD_R_MALFORMED;
	if (flags & LFD_RECV_OTHER_CMSG)
		return LFD_R_CONTROL;
	if (flags & LFD_RECV_CTRUNC)
		return LFD_R_FD_COUNT;
	return LFD_R_NONE;
}

static void dispatch(struct session *s, const struct request *r)
{
	if (s->refusal) {
		/* One answer is all a refused session owes: then it ends,
		 * so that refused sessions cannot pile up as root processes. */
		send_error(s, r->msg.seq, s->refusal_reason, "%s", s->refusal);
		s->reply_failed = 1;
		return;
	}
	if (r->nfds != lfd_fds_for_msg(&r->msg)) {
		if (r->msg.op == LFD_OP_ATTACH_BATCH)
			send_error(s, r->msg.seq, LFD_R_FD_COUNT, "attach batch of "
				   "%u entries needs exactly %u backing fds, %d came",
				   (unsigned)r->msg.u.attach_batch_req.count,
				   (unsigned)r->msg.u.attach_batch_req.count, r->nfds);
		else
			send_error(s, r->msg.seq, LFD_R_FD_COUNT, "%s",
				   r->msg.op == LFD_OP_ATTACH ?
				   "attach needs exactly one backing fd" :
				   "this request takes no file descriptors");
		return;
	}
	if (!s->hello_done && r->msg.op != LFD_OP_HELLO) {
		send_error(s, r->msg.seq, LFD_R_NO_HELLO, "send hello first");
		return;
	}
	switch (r->msg.op) {
	case LFD_OP_HELLO:
		do_hello(s, &r->msg);
		break;
	case LFD_OP_ATTACH:
		do_attach(s, r);
		break;
	case LFD_OP_RELEASE:
		do_release(s, &r->msg);
		break;
	case LFD_OP_LIST:
		do_list(s, &r->msg);
		break;
	case LFD_OP_ATTACH_BATCH:
		do_attach_batch(s, r);
		break;
	case LFD_OP_RELEASE_BATCH:
		do_release_batch(s, &r->msg);
		break;
	default:
		send_error(s, r->msg.seq, LFD_R_UNKNOWN_OP,
			   "replies are not requests");
	}
}

/* recvmsg returns 0 both for end of stream and for a zero-length message;
 * only a hung-up peer is the end. */
static int peer_gone(int sock)
{
	struct pollfd p = { .fd = sock, .events = POLLIN | POLLRDHUP };

	if (poll(&p, 1, 0) < 0) {
		logmsg("poll: %s; ending the session", strerror(errno));
		return 1;
	}
	return (p.revents & (POLLHUP | POLLRDHUP | POLLERR)) != 0;
}

static void close_fds(struct request *r)
{
	int i;

	for (i = 0; i < r->nfds && i < LFD_MAX_BATCH; i++)
		close(r->fds[i]);
	r->nfds = 0;
}

/*
 * Wait for the next request.  A connection must say hello within
 * HELLO_TIMEOUT_MS (idle connections would otherwise fill the daemon);
 * after that a session may idle as long as its command runs.  Meanwhile,
 * devices released busy are re-checked every WATCH_INTERVAL_MS.
 * 0: readable (or hung up); -1: end the session.
 */
static int wait_for_request(struct session *s, uint64_t hello_deadline)
{
	struct pollfd p = { .fd = s->sock, .events = POLLIN };
	uint64_t now;
	int timeout, n;

	for (;;) {
		now = now_ms();
		if (!s->hello_done && now >= hello_deadline) {
			logmsg("uid %u: no hello within %d ms, closing",
			       (unsigned)s->caller.uid, HELLO_TIMEOUT_MS);
			return -1;
		}
		/* The deadline counts from the connection, not from the last
		 * message: junk every few seconds does not keep it open. */
		timeout = !s->hello_done ? (int)(hello_deadline - now) :
			  watching_any(s) ? WATCH_INTERVAL_MS : -1;
		n = poll(&p, 1, timeout);
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR) {
			logmsg("uid %u: poll: %s; ending the session",
			       (unsigned)s->caller.uid, strerror(errno));
			return -1;
		}
		if (n == 0 && s->hello_done)
			check_watched(s);
	}
}

void serve(struct session *s)
{
	uint8_t buf[LFD_MAX_MSG];
	struct request r;
	enum lfd_reason why;
	uint64_t hello_deadline = now_ms() +
		(s->refusal ? REFUSED_TIMEOUT_MS : HELLO_TIMEOUT_MS);
	long n;
	int flags;

	for (;;) {
		if (wait_for_request(s, hello_deadline) < 0)
			return;
		n = lfd_recv(s->sock, buf, sizeof(buf), r.fds, LFD_MAX_BATCH,
			     &r.nfds, &flags);
		if (n < 0) {
			if (errno != ECONNRESET)
				logmsg("uid %u: receive failed: %s",
				       (unsigned)s->caller.uid, strerror(errno));
			return;
		}
		if (n == 0 && r.nfds == 0 && peer_gone(s->sock))
			return;
		why = transport_problem(flags);
		if (why == LFD_R_NONE)
			why = lfd_decode(buf, (size_t)n, &r.msg);
		else	/* only for the seq to echo; the reason stands */
			(void)lfd_decode(buf, (size_t)n, &r.msg);
		if (why != LFD_R_NONE)
			send_error(s, r.msg.seq, why, "%s", lfd_reason_name(why));
		else
			dispatch(s, &r);
		close_fds(&r);
		if (s->reply_failed)
			return;
	}
}

/* The client is gone (exit, crash, SIGKILL): release what it left, the same
 * way as a release request, and log each outcome; then stay until every
 * device released busy has detached, so its slots stay counted. */
void session_end(struct session *s)
{
	struct lfd_msg err;
	uint32_t waited;
	unsigned i, pause = RELEASE_WATCH_FIRST_MS;

	for (i = 0; i < LFD_MAX_DEVICES; i++) {
		struct device *d = &s->dev[i];

		if (!d->in_use || d->watching)
			continue;
		if (release_one(s, d, SESSION_END_TIMEOUT_MS, &waited, &err) ==
		    RELEASE_DONE)
			logmsg("uid %u left /dev/loop%u attached: flushed and "
			       "detached", (unsigned)s->caller.uid, d->ident.index);
		else
			logmsg("uid %u left /dev/loop%u attached: %s",
			       (unsigned)s->caller.uid, d->ident.index,
			       err.u.error.text);
	}
	/* (In setuid mode stdio are /dev/null since the session started:
	 * lingering holds nothing of the caller's open.) */
	while (watching_any(s)) {
		sleep_ms(pause);
		if (pause < WATCH_INTERVAL_MS)
			pause *= 2;
		check_watched(s);
	}
}
