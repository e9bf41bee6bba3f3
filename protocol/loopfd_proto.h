/*
 * loopfd wire protocol, version 1.  Shared by the helper and the client.
 *
 * One request and one reply per SOCK_SEQPACKET message.  Every integer is
 * little-endian; every message has an exact size; file descriptors travel only
 * as SCM_RIGHTS.  protocol/PROTOCOL.md is the normative description; this
 * header and proto.c implement it.
 */
#ifndef LOOPFD_PROTO_H
#define LOOPFD_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define LFD_MAGIC		0x4446504cu	/* "LPFD" on the wire */
#define LFD_VERSION		1
#define LFD_HEADER_SIZE		16
#define LFD_MAX_MSG		8192		/* larger than any valid message */
#define LFD_MAX_DEVICES		64		/* per session, hard protocol cap */
#define LFD_MSG_TEXT		240		/* error text, NUL-padded */
#define LFD_MAX_TIMEOUT_MS	600000u		/* 10 minutes */
#define LFD_MAX_BATCH		64		/* entries in one batch: the session cap */
#define LFD_MAX_REPLY		16408		/* a full RELEASE_BATCH reply; every
						   request is at most LFD_MAX_MSG */

enum lfd_op {
	LFD_OP_HELLO	= 1,
	LFD_OP_ATTACH	= 2,
	LFD_OP_RELEASE	= 3,
	LFD_OP_LIST	= 4,
	LFD_OP_ATTACH_BATCH	= 5,		/* if the hello says LFD_FEAT_BATCH */
	LFD_OP_RELEASE_BATCH	= 6,
	LFD_REPLY	= 0x80,			/* reply op = request op | LFD_REPLY */
	LFD_OP_ERROR	= 0xff,
};

/* attach flags (request) and effective flags (reply) */
#define LFD_ATTACH_READ_ONLY	0x01u
#define LFD_ATTACH_PARTSCAN	0x02u
#define LFD_ATTACH_DIRECT_IO	0x04u
#define LFD_ATTACH_GRANT	0x08u
#define LFD_ATTACH_REQ_MASK	0x0fu
#define LFD_ATTACH_AUTOCLEAR	0x10u		/* reply only: always set */

/* hello features: what the policy allows this caller */
#define LFD_FEAT_GRANT		0x01u
#define LFD_FEAT_PARTSCAN	0x02u
#define LFD_FEAT_DIRECT_IO	0x04u
#define LFD_FEAT_BATCH		0x08u		/* ATTACH_BATCH, RELEASE_BATCH */

/* how the helper was started (hello reply) */
enum lfd_mode {
	LFD_MODE_SETUID = 1,
	LFD_MODE_LISTEN = 2,
	LFD_MODE_SYSTEMD = 3,
};

/* Error reasons.  Each comes with a positive errno value and a text. */
enum lfd_reason {
	LFD_R_NONE = 0,
	LFD_R_MALFORMED = 1,		/* EPROTO: size, magic, reserved field */
	LFD_R_VERSION = 2,		/* EPROTONOSUPPORT */
	LFD_R_UNKNOWN_OP = 3,		/* EOPNOTSUPP */
	LFD_R_NO_HELLO = 4,		/* EPROTO: request before hello */
	LFD_R_FD_COUNT = 5,		/* EBADF: wrong number of fds */
	LFD_R_CONTROL = 6,		/* EPROTO: other control messages */
	LFD_R_NOT_AUTHORIZED = 7,	/* EPERM: policy says no */
	LFD_R_CONFIG = 8,		/* EACCES: config unusable, helper refuses */
	LFD_R_FORBIDDEN_OPTION = 9,	/* EPERM: option disabled by policy */
	LFD_R_BAD_OPTION = 10,		/* EINVAL: offset, sizelimit, sector size */
	LFD_R_BACKING_KIND = 11,	/* EINVAL: not a regular file (or allowed bdev) */
	LFD_R_BACKING_ACCESS = 12,	/* EBADF: O_PATH, O_WRONLY, O_APPEND */
	LFD_R_BACKING_FS = 13,		/* EINVAL: proc/sysfs-like filesystem, FUSE */
	LFD_R_BACKING_LOOP = 14,	/* EINVAL: loop device or loop-control */
	LFD_R_QUOTA_USER = 15,		/* EDQUOT: per-user device limit */
	LFD_R_QUOTA_GLOBAL = 16,	/* EAGAIN: system-wide device limit */
	LFD_R_QUOTA_SESSION = 17,	/* EMFILE: session protocol cap */
	LFD_R_NO_DEVICE = 18,		/* EBUSY/ENOSPC: no free loop device */
	LFD_R_KERNEL = 19,		/* errno of a failed kernel call */
	LFD_R_UNKNOWN_DEVICE = 20,	/* ENOENT: not a device of this session */
	LFD_R_DEVICE_CHANGED = 21,	/* ESTALE: re-bound or re-pointed */
	LFD_R_DATA_LOST = 22,		/* EIO: writeback failed */
	LFD_R_BUSY = 23,		/* EBUSY: still open elsewhere */
	LFD_R_MAX = 23,
};

struct lfd_hello_req {
	uint16_t min_version;
	uint16_t max_version;
};

struct lfd_hello_rep {
	uint16_t version;
	uint16_t mode;			/* enum lfd_mode */
	uint32_t features;		/* LFD_FEAT_* */
	uint32_t max_devices;		/* devices this session may hold */
	uint32_t max_timeout_ms;
	uint32_t uid;			/* the caller as the helper sees it */
	uint32_t gid;
};

struct lfd_attach_req {
	uint32_t flags;			/* LFD_ATTACH_* within REQ_MASK */
	uint32_t sector_size;		/* 0: kernel default */
	uint64_t offset;
	uint64_t sizelimit;		/* 0: to the end of the file */
};

/* A device's identity: the attach reply and each list entry. */
struct lfd_device {
	uint32_t id;			/* session-local handle */
	uint32_t index;			/* N of /dev/loopN */
	uint32_t major;
	uint32_t minor;
	uint64_t diskseq;
	uint64_t size;			/* bytes */
	uint32_t flags;			/* effective LFD_ATTACH_* */
	uint32_t sector_size;
	uint64_t offset;
	uint64_t sizelimit;
	uint64_t backing_dev;		/* st_dev of the backing file */
	uint64_t backing_ino;
};

struct lfd_release_req {
	uint32_t id;
	uint32_t timeout_ms;		/* <= LFD_MAX_TIMEOUT_MS */
};

struct lfd_release_rep {
	uint32_t id;
	uint32_t waited_ms;		/* time spent waiting for other openers */
};

struct lfd_list_rep {
	uint32_t count;
	struct lfd_device dev[LFD_MAX_DEVICES];
};

struct lfd_attach_batch_req {
	uint32_t count;			/* 1 .. LFD_MAX_BATCH, = fds sent */
	struct lfd_attach_req e[LFD_MAX_BATCH];
};

struct lfd_attach_batch_rep {
	uint32_t count;			/* = the request's, = fds sent back */
	struct lfd_device dev[LFD_MAX_BATCH];
};

struct lfd_release_batch_req {
	uint32_t count;			/* 1 .. LFD_MAX_BATCH */
	uint32_t timeout_ms;		/* for the whole batch */
	uint32_t id[LFD_MAX_BATCH];
};

/* One device's outcome: reason LFD_R_NONE (and err 0) is released. */
struct lfd_release_outcome {
	uint32_t id;
	uint32_t reason;		/* enum lfd_reason */
	int32_t err;			/* positive errno value, 0 if released */
	uint32_t waited_ms;
	char text[LFD_MSG_TEXT];	/* NUL-terminated; "" if released */
};

struct lfd_release_batch_rep {
	uint32_t count;
	struct lfd_release_outcome out[LFD_MAX_BATCH];
};

struct lfd_error {
	int32_t err;			/* positive errno value */
	uint32_t reason;		/* enum lfd_reason */
	char text[LFD_MSG_TEXT];	/* NUL-terminated */
};

struct lfd_msg {
	uint16_t version;
	uint16_t op;
	uint32_t seq;
	union {
		struct lfd_hello_req hello_req;
		struct lfd_hello_rep hello_rep;
		struct lfd_attach_req attach_req;
		struct lfd_device attach_rep;
		struct lfd_release_req release_req;
		struct lfd_release_rep release_rep;
		struct lfd_list_rep list_rep;
		struct lfd_attach_batch_req attach_batch_req;
		struct lfd_attach_batch_rep attach_batch_rep;
		struct lfd_release_batch_req release_batch_req;
		struct lfd_release_batch_rep release_batch_rep;
		struct lfd_error error;
	} u;
};

/* Wire sizes of the bodies (after the 16-byte header). */
#define LFD_HELLO_REQ_SIZE	8
#define LFD_HELLO_REP_SIZE	24
#define LFD_ATTACH_REQ_SIZE	32
#define LFD_DEVICE_SIZE		72
#define LFD_RELEASE_REQ_SIZE	8
#define LFD_RELEASE_REP_SIZE	8
#define LFD_LIST_REQ_SIZE	0
#define LFD_LIST_HEAD_SIZE	8
#define LFD_ERROR_SIZE		(8 + LFD_MSG_TEXT)
#define LFD_BATCH_HEAD_SIZE	8		/* count, reserved or timeout */
#define LFD_RELEASE_ID_SIZE	4
#define LFD_OUTCOME_SIZE	(16 + LFD_MSG_TEXT)

/*
 * Encode m into buf.  Returns the number of bytes, or 0 if m is not a valid
 * message (unknown op, list count over the cap) or buf is too small.
 */
size_t lfd_encode(const struct lfd_msg *m, uint8_t *buf, size_t cap);

/*
 * Decode len bytes of buf into m.  Returns LFD_R_NONE or the reason the
 * message is refused: LFD_R_MALFORMED (magic, size, reserved bits, text not
 * terminated), LFD_R_VERSION, LFD_R_UNKNOWN_OP.  m->op and m->seq are filled
 * in whenever the header itself could be read, so an error reply can echo
 * them.
 */
enum lfd_reason lfd_decode(const uint8_t *buf, size_t len, struct lfd_msg *m);

/* Number of SCM_RIGHTS fds that must come with op (request or reply);
 * -1 for the batch ops, whose count is in the body: see lfd_fds_for_msg. */
int lfd_fds_for_op(uint16_t op);

/* Number of SCM_RIGHTS fds that must come with the decoded message m. */
int lfd_fds_for_msg(const struct lfd_msg *m);

/* Default errno and a short fixed name for each reason. */
int lfd_reason_errno(enum lfd_reason r);
const char *lfd_reason_name(enum lfd_reason r);

/* Fill m as an error reply to the request numbered seq: reason, errno
 * (0: the reason's default) and a printf-formatted text. */
void lfd_make_error(struct lfd_msg *m, uint32_t seq, int err,
		    enum lfd_reason reason, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

/*
 * Transport over a SOCK_SEQPACKET socket.
 *
 * lfd_send sends one message with fd (or no fd when fd < 0).  MSG_NOSIGNAL:
 * a peer that went away is EPIPE, never SIGPIPE.
 *
 * lfd_recv receives one message into buf.  Every fd that arrives is received
 * close-on-exec; up to maxfds of them are stored in fds[], *nfds says how many
 * arrived in all, and any beyond maxfds are closed here.  *flags gets
 * LFD_RECV_TRUNC when the message was longer than cap, LFD_RECV_CTRUNC when
 * control data was cut off, LFD_RECV_OTHER_CMSG when a control message other
 * than SCM_RIGHTS came (SCM_CREDENTIALS, ...).  (fds sent in several
 * SCM_RIGHTS messages arrive merged into one: the kernel joins them.)
 * Returns the message length, 0 at end of stream, -1 with errno on error.
 */
#define LFD_RECV_TRUNC		0x1
#define LFD_RECV_CTRUNC		0x2
#define LFD_RECV_OTHER_CMSG	0x4
#define LFD_RECV_MAX_FDS	253	/* SCM_MAX_FD */

int lfd_send(int sock, const uint8_t *buf, size_t len, int fd);
/* lfd_send with nfds (0 .. LFD_MAX_BATCH) fds in one SCM_RIGHTS message. */
int lfd_send_fds(int sock, const uint8_t *buf, size_t len, const int *fds,
		 int nfds);
long lfd_recv(int sock, uint8_t *buf, size_t cap, int *fds, int maxfds,
	      int *nfds, int *flags);

#endif
