/*
 * tinyfuse: a FUSE server whose backing file can fail GETATTR at will.
 *
 *   tinyfuse MOUNTPOINT ARMFILE [STALLFILE]   (as root; runs until unmounted)
 *
 * Mounts itself on MOUNTPOINT (mount(2), no libfuse, no fusermount) and
 * serves a root directory holding one regular file, "img": IMG_SIZE bytes
 * of memory, zero-filled at start, owned by uid/gid 65534, mode 0600.
 *
 * The knob: once ARMFILE exists, the next FSYNC of img arms the server and
 * from then on every GETATTR of img answers -ENXIO, until ARMFILE is removed.
 * The kernel's LOOP_GET_STATUS64 calls vfs_getattr() on the backing file and
 * returns its error unchanged, so a loop device backed by img then looks
 * unbound to anyone who takes ENXIO from that ioctl for "unbound".  Why arm
 * at an FSYNC rather than at once: loopfd's release first checks the
 * device's identity with LOOP_GET_STATUS64 and only then makes the image
 * durable (fsync of its fd to img); arming at that fsync lets the identity
 * check pass and fails every status query after it.
 *
 * The other knob: while STALLFILE exists, a GETATTR or FSYNC of img gets no
 * answer (a stalled FUSE or NFS server); the requests held are answered
 * once it is removed, so that nobody else's `losetup -a` stays hung after a
 * test.
 *
 * One thread, one request at a time: nothing here may touch the mount.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define ROOT_ID		FUSE_ROOT_ID	/* 1: the kernel's name for the root */
#define IMG_ID		2
#define IMG_NAME	"img"
#define IMG_SIZE	(8u << 20)
#define IMG_OWNER	65534
#define MAX_WRITE	(128u << 10)	/* the kernel's default of 32 pages */

static unsigned char img[IMG_SIZE];
/* A request is a header, its fixed argument and at most MAX_WRITE of data:
 * the kernel refuses a read() with less room than that. */
static unsigned char buf[MAX_WRITE + 4096];
static const char *arm_path;
static int armed;
static const char *stall_path;
static struct {
	uint64_t unique;
	uint32_t opcode;
} held[64];			/* requests about img not answered yet */
static unsigned nheld;
static int fuse_fd = -1;

static int arm_file_exists(void)
{
	return access(arm_path, F_OK) == 0;
}

/* One reply: the header, then body (none for a bare status).  A write the
 * kernel refuses (ENOENT: the request was interrupted and is gone) is not
 * ours to fix. */
static void reply(uint64_t unique, int error, const void *body, size_t len)
{
	struct fuse_out_header h = {
		.len = (uint32_t)(sizeof(h) + (error ? 0 : len)),
		.error = error,
		.unique = unique,
	};
	struct iovec iov[2] = {
		{ .iov_base = &h, .iov_len = sizeof(h) },
		{ .iov_base = (void *)body, .iov_len = error ? 0 : len },
	};

	if (writev(fuse_fd, iov, 2) < 0 && errno != ENOENT)
		perror("tinyfuse: reply");
}

/* Tell the kernel to forget img's cached attributes (a notification:
 * unique 0, the code in the error field).  Attributes are sent with a zero
 * timeout, but a zero timeout still holds until the next jiffy: a GETATTR
 * answered a moment ago would otherwise be served from the cache and the
 * armed failure never asked for. */
static void forget_cached_attrs(void)
{
	struct fuse_notify_inval_inode_out n = { .ino = IMG_ID, .off = -1 };
	struct fuse_out_header h = {
		.len = sizeof(h) + sizeof(n),
		.error = FUSE_NOTIFY_INVAL_INODE,
		.unique = 0,
	};
	struct iovec iov[2] = {
		{ .iov_base = &h, .iov_len = sizeof(h) },
		{ .iov_base = &n, .iov_len = sizeof(n) },
	};

	if (writev(fuse_fd, iov, 2) < 0)
		perror("tinyfuse: notify inval inode");
}

static void fill_attr(uint64_t id, struct fuse_attr *a)
{
	memset(a, 0, sizeof(*a));
	a->ino = id;
	a->blksize = 4096;
	if (id == ROOT_ID) {
		a->mode = S_IFDIR | 0755;
		a->nlink = 2;
	} else {
		a->mode = S_IFREG | 0600;
		a->nlink = 1;
		a->size = IMG_SIZE;
		a->blocks = IMG_SIZE / 512;
		a->uid = IMG_OWNER;
		a->gid = IMG_OWNER;
	}
	/* Times stay 0: a change of mtime or size would make the kernel drop
	 * img's page cache, and nothing here needs that. */
}

static void do_init(uint64_t unique, const struct fuse_init_in *in)
{
	struct fuse_init_out out = {
		.major = FUSE_KERNEL_VERSION,
		/* Ours: the kernel speaks the older of the two. */
		.minor = FUSE_KERNEL_MINOR_VERSION,
		.max_readahead = in->max_readahead,
		.flags = 0,		/* no optional feature: plain semantics */
		.max_write = MAX_WRITE,
		.time_gran = 1,
	};

	if (in->major != FUSE_KERNEL_VERSION) {
		fprintf(stderr, "tinyfuse: kernel speaks FUSE %u, not %u\n",
			in->major, FUSE_KERNEL_VERSION);
		reply(unique, -EPROTO, NULL, 0);
		exit(1);
	}
	reply(unique, 0, &out, sizeof(out));
}

static void do_lookup(uint64_t unique, uint64_t parent, const char *name)
{
	struct fuse_entry_out out;

	if (parent != ROOT_ID || strcmp(name, IMG_NAME) != 0) {
		reply(unique, -ENOENT, NULL, 0);
		return;
	}
	memset(&out, 0, sizeof(out));
	out.nodeid = IMG_ID;
	out.generation = 1;
	out.entry_valid = 3600;	/* the name never changes */
	out.attr_valid = 0;	/* every getattr comes to us (the knob) */
	fill_attr(IMG_ID, &out.attr);
	reply(unique, 0, &out, sizeof(out));
}

static int stalled(void)
{
	return stall_path != NULL && access(stall_path, F_OK) == 0;
}

static void answer_getattr(uint64_t unique, uint64_t id)
{
	struct fuse_attr_out out;

	if (id == IMG_ID && armed && !arm_file_exists())
		armed = 0;	/* ARMFILE removed: disarmed */
	if (id == IMG_ID && armed) {
		reply(unique, -ENXIO, NULL, 0);
		return;
	}
	memset(&out, 0, sizeof(out));
	out.attr_valid = 0;
	fill_attr(id, &out.attr);
	reply(unique, 0, &out, sizeof(out));
}

/* While STALLFILE exists: hold this request about img.  1 if held. */
static int hold(uint64_t unique, uint64_t id, uint32_t opcode)
{
	if (id != IMG_ID || nheld == sizeof(held) / sizeof(held[0]) || !stalled())
		return 0;
	held[nheld].unique = unique;
	held[nheld++].opcode = opcode;
	return 1;
}

static void do_getattr(uint64_t unique, uint64_t id)
{
	if (!hold(unique, id, FUSE_GETATTR))
		answer_getattr(unique, id);
}

static void do_fsync(uint64_t unique, uint64_t id);

/* STALLFILE gone: the held requests are answered now. */
static void answer_held(void)
{
	if (nheld == 0 || stalled())
		return;
	while (nheld > 0) {
		nheld--;
		if (held[nheld].opcode == FUSE_GETATTR)
			answer_getattr(held[nheld].unique, IMG_ID);
		else
			do_fsync(held[nheld].unique, IMG_ID);
	}
}

/* Wait for a request; while GETATTRs are held, look at STALLFILE every
 * 50 ms meanwhile. */
static void wait_request(void)
{
	struct pollfd p = { .fd = fuse_fd, .events = POLLIN };

	while (nheld > 0 && poll(&p, 1, 50) == 0)
		answer_held();
}

static void do_read(uint64_t unique, const struct fuse_read_in *in)
{
	uint64_t n = in->size;

	/* Short at the end of the file: that is how the kernel learns EOF. */
	if (in->offset >= IMG_SIZE)
		n = 0;
	else if (n > IMG_SIZE - in->offset)
		n = IMG_SIZE - in->offset;
	reply(unique, 0, img + (n ? in->offset : 0), (size_t)n);
}

static void do_write(uint64_t unique, const struct fuse_write_in *in,
		     const void *data, size_t have)
{
	struct fuse_write_out out = { .size = in->size };

	/* The file has a fixed size: nothing may grow it. */
	if (in->size > have || in->offset > IMG_SIZE ||
	    in->size > IMG_SIZE - in->offset) {
		reply(unique, -EFBIG, NULL, 0);
		return;
	}
	memcpy(img + in->offset, data, in->size);
	reply(unique, 0, &out, sizeof(out));
}

static void do_fsync(uint64_t unique, uint64_t id)
{
	/* Memory is as durable as it gets: success.  An fsync of img after
	 * ARMFILE appeared arms the GETATTR failure (see the top). */
	if (id == IMG_ID && !armed && arm_file_exists()) {
		armed = 1;
		forget_cached_attrs();
	}
	reply(unique, 0, NULL, 0);
}

static void do_statfs(uint64_t unique)
{
	struct fuse_statfs_out out;

	memset(&out, 0, sizeof(out));
	out.st.blocks = IMG_SIZE / 4096;
	out.st.files = 2;
	out.st.bsize = 4096;
	out.st.frsize = 4096;
	out.st.namelen = 255;
	reply(unique, 0, &out, sizeof(out));
}

static void serve(void)
{
	const struct fuse_in_header *h = (const void *)buf;
	const void *arg = buf + sizeof(*h);
	size_t arglen;
	ssize_t n;

	for (;;) {
		wait_request();
		n = read(fuse_fd, buf, sizeof(buf));

		if (n < 0) {
			/* ENOENT: a request interrupted before we read it. */
			if (errno == EINTR || errno == ENOENT)
				continue;
			if (errno == ENODEV)	/* unmounted: done */
				return;
			perror("tinyfuse: read /dev/fuse");
			exit(1);
		}
		if ((size_t)n < sizeof(*h) || h->len != (size_t)n) {
			fprintf(stderr, "tinyfuse: short request (%zd bytes)\n", n);
			exit(1);
		}
		arglen = (size_t)n - sizeof(*h);

		switch (h->opcode) {
		case FUSE_INIT:
			do_init(h->unique, arg);
			break;
		case FUSE_LOOKUP:
			/* The name arrives NUL-terminated. */
			if (arglen == 0 || buf[n - 1] != '\0')
				reply(h->unique, -EINVAL, NULL, 0);
			else
				do_lookup(h->unique, h->nodeid, arg);
			break;
		case FUSE_GETATTR:
			do_getattr(h->unique, h->nodeid);
			break;
		case FUSE_OPEN: {
			/* No file handle state; open_flags 0: the kernel
			 * caches pages as for any file (dropped at open). */
			struct fuse_open_out out = { .fh = 0 };

			reply(h->unique, h->nodeid == IMG_ID ? 0 : -EISDIR,
			      &out, sizeof(out));
			break;
		}
		case FUSE_READ:
			do_read(h->unique, arg);
			break;
		case FUSE_WRITE:
			do_write(h->unique, arg,
				 (const unsigned char *)arg + sizeof(struct fuse_write_in),
				 arglen - sizeof(struct fuse_write_in));
			break;
		case FUSE_FSYNC:
			if (!hold(h->unique, h->nodeid, FUSE_FSYNC))
				do_fsync(h->unique, h->nodeid);
			break;
		case FUSE_FLUSH:	/* close(2) of an fd: nothing buffered */
		case FUSE_RELEASE:	/* last close of an open: no state */
			reply(h->unique, 0, NULL, 0);
			break;
		case FUSE_STATFS:
			do_statfs(h->unique);
			break;
		case FUSE_FORGET:	/* the kernel expects no reply to these */
		case FUSE_BATCH_FORGET:
			break;
		default:
			/* ENOSYS: the kernel remembers the operation as
			 * unsupported (OPENDIR, ACCESS, GETXATTR, ...) and
			 * falls back or fails it without asking again. */
			reply(h->unique, -ENOSYS, NULL, 0);
			break;
		}
		answer_held();
	}
}

int main(int argc, char **argv)
{
	char opts[128];

	if (argc != 3 && argc != 4) {
		fprintf(stderr, "usage: tinyfuse MOUNTPOINT ARMFILE [STALLFILE]\n");
		return 2;
	}
	arm_path = argv[2];
	stall_path = argc == 4 ? argv[3] : NULL;
	/* A reply to a request whose caller died must not kill us. */
	signal(SIGPIPE, SIG_IGN);

	fuse_fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	if (fuse_fd < 0) {
		perror("tinyfuse: /dev/fuse");
		return 1;
	}
	/* rootmode: the root's type (a directory); user_id/group_id: the
	 * mount's owner (root); allow_other: uid 65534 may use it. */
	snprintf(opts, sizeof(opts),
		 "fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other", fuse_fd);
	if (mount("tinyfuse", argv[1], "fuse", MS_NOSUID | MS_NODEV, opts) < 0) {
		perror("tinyfuse: mount");
		return 1;
	}
	serve();
	return 0;
}
