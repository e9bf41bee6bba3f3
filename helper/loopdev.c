/*
 * Attaching and releasing loop devices: the kernel work, and the reason the
 * project exists.  KERNEL-FACTS.md has the measured facts each step relies
 * on; the comments name them.
 */
#include "helper.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#define LOOP_MAJOR_NR		7
#define LOOP_CTL_MAJOR		10
#define LOOP_CTL_MINOR		237
#define ATTACH_TRIES		128	/* GET_FREE reserves nothing: collide, retry */
#define ATTACH_BACKOFF_US	50	/* first retry waits up to this, doubling */
#define RELEASE_POLL_MS		20
#define PINNED_SCAN		64	/* indices tried past a pinned free node */
#define RESERVE_SCAN		64	/* indices a batch tries past its size */

#ifndef BLKGETDISKSEQ
#define BLKGETDISKSEQ		_IOR(0x12, 128, __u64)
#endif

/* ---- backing-fd validation ------------------------------------------------ */

static int refuse(struct lfd_msg *err, enum lfd_reason r, int e,
		  const char *text)
{
	lfd_make_error(err, 0, e, r, "%s", text);
	return -1;
}

/* A partition of a loop device (major 259, bound or not), or a device
 * mapped onto one: its ioctls reach the loop driver, which answers
 * LOOP_GET_STATUS64 (ENXIO while unbound); other block drivers refuse the
 * request (ENOTTY).  A BLKPG partition outlives its device's unbind
 * (KERNEL-FACTS.md), so asking sysfs whether the parent is bound would
 * miss it. */
static int on_loop_device(int fd)
{
	struct loop_info64 info;

	return ioctl(fd, LOOP_GET_STATUS64, &info) == 0 || errno == ENXIO;
}

/* The kind of object behind the fd: regular file, or a block device the
 * policy allows; never a loop device, a partition of one (the kernel's own
 * loop-cycle check compares majors only) or the loop-control node (a loop
 * device backed by itself or by the caller's other device is a way to
 * deadlock or confuse the helper's identity checks). */
static int check_backing_kind(const struct session *s, int fd,
			      const struct stat *st, struct lfd_msg *err)
{
	if (S_ISBLK(st->st_mode) && major(st->st_rdev) == LOOP_MAJOR_NR)
		return refuse(err, LFD_R_BACKING_LOOP, 0, "backing fd is a loop device");
	if (S_ISCHR(st->st_mode) && major(st->st_rdev) == LOOP_CTL_MAJOR &&
	    minor(st->st_rdev) == LOOP_CTL_MINOR)
		return refuse(err, LFD_R_BACKING_LOOP, 0, "backing fd is /dev/loop-control");
	if (S_ISBLK(st->st_mode) && !s->policy.allow_block_devices)
		return refuse(err, LFD_R_BACKING_KIND, 0, "block devices as backing are not allowed by the policy");
	/* Asked only where the policy allows block devices: on a bound loop
	 * partition the ioctl stats that device's backing file. */
	if (S_ISBLK(st->st_mode) && on_loop_device(fd))
		return refuse(err, LFD_R_BACKING_LOOP, 0, "backing fd is a partition "
			      "of a loop device, or a device mapped onto one");
	if (S_ISBLK(st->st_mode))
		return 0;
	if (!S_ISREG(st->st_mode)) {
		lfd_make_error(err, 0, 0, LFD_R_BACKING_KIND,
			       "backing fd is a %s, not a regular file",
			       S_ISDIR(st->st_mode) ? "directory" :
			       S_ISSOCK(st->st_mode) ? "socket" :
			       S_ISFIFO(st->st_mode) ? "pipe" :
			       S_ISCHR(st->st_mode) ? "character device" :
			       "special file");
		return -1;
	}
	return 0;
}

/* How the caller opened the file.  The helper never reopens it by path: the
 * fd is the caller's proof of access, and its mode is the access granted. */
static int check_backing_access(int fd, int *read_only, struct lfd_msg *err)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0)
		return refuse(err, LFD_R_BACKING_ACCESS, errno, "backing fd unusable");
	if (fl & O_PATH)
		return refuse(err, LFD_R_BACKING_ACCESS, 0, "backing fd is O_PATH: open the image for reading");
	if ((fl & O_ACCMODE) == O_WRONLY)
		return refuse(err, LFD_R_BACKING_ACCESS, 0, "backing fd is write-only: open it O_RDWR or O_RDONLY");
	if (fl & O_APPEND)
		return refuse(err, LFD_R_BACKING_ACCESS, 0, "backing fd is O_APPEND");
	/* A read-only fd forces a read-only device (the kernel does the same
	 * for LOOP_CONFIGURE; say so in the reply rather than surprise). */
	*read_only = (fl & O_ACCMODE) == O_RDONLY;
	return 0;
}

static int check_geometry(const struct lfd_attach_req *req, const struct stat *st,
			  uint64_t size, struct lfd_msg *err)
{
	uint32_t ss = req->sector_size;
	uint64_t align = ss ? ss : 512;

	if (ss != 0 && (ss < 512 || ss > 65536 || (ss & (ss - 1)) != 0))
		return refuse(err, LFD_R_BAD_OPTION, 0, "sector size must be "
			      "a power of two from 512 to 65536");
	if (req->offset % align != 0 || req->sizelimit % align != 0)
		return refuse(err, LFD_R_BAD_OPTION, 0, "offset and sizelimit "
			      "must be multiples of the sector size");
	if (!S_ISREG(st->st_mode))
		return 0;	/* block device: the kernel checks against its size */
	if (req->offset >= size)
		return refuse(err, LFD_R_BAD_OPTION, 0, "offset is at or beyond the end of the backing file");
	if (req->sizelimit > size - req->offset)
		return refuse(err, LFD_R_BAD_OPTION, 0, "offset + sizelimit is beyond the end of the backing file");
	return 0;
}

static int check_backing(const struct session *s, int fd,
			 const struct lfd_attach_req *req, int *read_only,
			 struct stat *st, struct lfd_msg *err)
{
	struct statfs sfs;
	const char *fs;

	if (check_backing_access(fd, read_only, err) < 0)
		return -1;
	if (fstat(fd, st) < 0)
		return refuse(err, LFD_R_BACKING_ACCESS, errno, "cannot stat backing fd");
	if (check_backing_kind(s, fd, st, err) < 0)
		return -1;
	if (fstatfs(fd, &sfs) < 0)
		return refuse(err, LFD_R_BACKING_ACCESS, errno, "cannot statfs backing fd");
	/* Also what refuses kernel interfaces posing as regular files (proc,
	 * sysfs, cgroupfs...): they are not in the policy's table. */
	if (!policy_allows_fs(&s->policy, (unsigned long)sfs.f_type, &fs)) {
		if (fs)
			lfd_make_error(err, 0, 0, LFD_R_BACKING_FS, "backing file "
				       "is on %s, not allowed by the policy "
				       "(allow-backing-fs %s): its fsync can be made "
				       "to wait, and the bind's fsync would stall "
				       "every loop attach on the machine", fs, fs);
		else
			lfd_make_error(err, 0, 0, LFD_R_BACKING_FS, "backing file "
				       "is on a filesystem of type 0x%lx, neither a "
				       "local one nor one the policy can allow (a "
				       "kernel pseudo filesystem, or one whose fsync "
				       "could stall every loop attach on the machine)",
				       (unsigned long)sfs.f_type);
		return -1;
	}
	return check_geometry(req, st, (uint64_t)st->st_size, err);
}

/* ---- finding and binding a device ------------------------------------------ */

static int open_loop_node(uint32_t index, int read_only)
{
	char path[32];

	snprintf(path, sizeof(path), "/dev/loop%u", index);
	return open(path, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC |
		    O_NOFOLLOW | O_NOCTTY);
}

/* The node must be the loop block device it claims to be. */
static int verify_loop_node(int fd, uint32_t index, struct stat *st,
			    struct lfd_msg *err)
{
	if (fstat(fd, st) < 0)
		return refuse(err, LFD_R_KERNEL, errno, "cannot stat loop node");
	if (!S_ISBLK(st->st_mode) || major(st->st_rdev) != LOOP_MAJOR_NR) {
		lfd_make_error(err, 0, ENODEV, LFD_R_NO_DEVICE,
			       "/dev/loop%u is not a loop block device", index);
		return -1;
	}
	return 0;
}

/* An ACL left on the node by a grant would outlive the ownership. */
static int drop_node_acl(int fd)
{
	if (fremovexattr(fd, "system.posix_acl_access") == 0 ||
	    errno == ENODATA || errno == EOPNOTSUPP)
		return 0;
	return -1;
}

/*
 * Before anyone's data goes through a node, only root may reach it: no
 * world access and no ACL (left by a user's grant, say).  The owner is
 * root here: user-owned nodes are recreated first (recreate_node).
 */
static int reset_node_access(int fd, uint32_t index, struct stat *st,
			     struct lfd_msg *err)
{
	mode_t mode = st->st_mode & 0770;

	if ((mode != (st->st_mode & 07777) && fchmod(fd, mode) < 0) ||
	    drop_node_acl(fd) < 0) {
		lfd_make_error(err, 0, errno, LFD_R_NO_DEVICE,
			       "/dev/loop%u (mode %04o) cannot be made root-only "
			       "before use: %s", index,
			       (unsigned)(st->st_mode & 07777), strerror(errno));
		return -1;
	}
	st->st_mode = (st->st_mode & ~(mode_t)07777) | mode;
	return 0;
}

/*
 * A free node still owned by a user was left by a grant whose helper was
 * killed (only root can do that); its owner could open every later
 * attachment of it.  Rather than chown by path (Landlock does not confine
 * chown or chmod), have the kernel recreate it: LOOP_CTL_REMOVE refuses a
 * device that is bound or open (someone else's), and the node a new
 * LOOP_CTL_ADD makes is root's, mode 0600.
 */
static int recreate_node(const struct session *s, uint32_t index)
{
	if (ioctl(s->ctl_fd, LOOP_CTL_REMOVE, (unsigned long)index) < 0)
		return -1;
	if (ioctl(s->ctl_fd, LOOP_CTL_ADD, (unsigned long)index) < 0 &&
	    errno != EEXIST)
		return -1;
	logmsg("/dev/loop%u was free but owned by a user (a killed helper's "
	       "grant): recreated as root's", index);
	return 0;
}

/*
 * The binding itself, told apart from the device: its sysfs directory
 * (/sys/devices/virtual/block/loopN/loop, by the shortest path: no
 * symlink) is made at the bind and removed at the
 * unbind, and a new bind makes a new one, with another inode number
 * (kernfs ids are not reused); LOOP_CHANGE_FD keeps it (KERNEL-FACTS.md).
 * Neither the disk sequence number (LOOP_CHANGE_FD changes it while the
 * device stays bound) nor LOOP_GET_STATUS64 (it returns the backing file's
 * getattr error, which a FUSE image chooses: ENXIO passes for "unbound")
 * can say whether our binding is gone.  0 with *ino, or -1 with errno
 * (ENOENT: no binding).
 */
static int binding_ino(uint32_t index, uint64_t *ino)
{
	char path[64];
	struct stat st;

	snprintf(path, sizeof(path), "/sys/devices/virtual/block/loop%u/loop",
		 index);
	if (stat(path, &st) < 0)
		return -1;
	*ino = (uint64_t)st.st_ino;
	return 0;
}

/* LOOP_CTL_GET_FREE reserves nothing: only touch a node that is unbound.
 * Asked only of the node GET_FREE has just named, or that has_binding saw
 * without a binding: LOOP_GET_STATUS64 on a bound device stats its backing
 * file, which a stalled FUSE or NFS server never answers.  (A sysfs lookup
 * here instead, has_binding's, halved the attach cycles of 64 concurrent
 * sessions: kernfs lookups wait for the binds' own sysfs changes.) */
static int node_unbound(int fd)
{
	struct loop_info64 info;

	return ioctl(fd, LOOP_GET_STATUS64, &info) < 0 && errno == ENXIO;
}

/* Whether device n has a binding now, asked of sysfs alone, never of the
 * device: 1, or 0 (unbound, or no such device). */
static int has_binding(uint32_t n)
{
	uint64_t ino;

	return binding_ino(n, &ino) == 0;
}

enum node_state { NODE_READY, NODE_TAKEN, NODE_ABSENT, NODE_ERROR,
		  NODE_USER_OWNED };

static enum node_state check_free_node(int fd, uint32_t n, struct stat *st,
					struct lfd_msg *err)
{
	if (verify_loop_node(fd, n, st, err) < 0)
		return NODE_ERROR;
	if (!node_unbound(fd))
		return NODE_TAKEN;
	if (st->st_uid != 0)
		return NODE_USER_OWNED;
	if (reset_node_access(fd, n, st, err) < 0)
		return NODE_ERROR;
	return NODE_READY;
}

/* One attempt at free device n: open it, and check it is an unbound loop
 * node owned by root; make it root-only.  NODE_USER_OWNED: root cannot
 * open it, or it is a user's, and may be a stale grant. */
static enum node_state try_free_node(uint32_t n, int ro, int *fd,
				     struct stat *st, struct lfd_msg *err)
{
	enum node_state state;

	*fd = open_loop_node(n, ro);
	if (*fd < 0 && errno == EACCES)
		return NODE_USER_OWNED;	/* root has no CAP_DAC_OVERRIDE */
	if (*fd < 0 && errno == ENOENT)
		return NODE_ABSENT;	/* never added, or removed */
	if (*fd < 0 && errno == ENXIO)
		return NODE_TAKEN;	/* being torn down */
	if (*fd < 0) {
		lfd_make_error(err, 0, errno, LFD_R_KERNEL,
			       "cannot open /dev/loop%u: %s", n, strerror(errno));
		return NODE_ERROR;
	}
	state = check_free_node(*fd, n, st, err);
	if (state != NODE_READY) {
		close(*fd);
		*fd = -1;
	}
	return state;
}

/* Open free device n as an unbound, root-only loop node, recreating a
 * user-owned one once.  0: *fd ready; 1: taken or unusable, try another;
 * 2: pinned (user-owned and held open: LOOP_CTL_REMOVE fails with EBUSY);
 * -1: error in err. */
static int open_free_node(const struct session *s, uint32_t n, int ro, int *fd,
			  struct stat *st, struct lfd_msg *err)
{
	enum node_state state = try_free_node(n, ro, fd, st, err);

	if (state == NODE_USER_OWNED) {
		if (recreate_node(s, n) < 0)
			return errno == EBUSY ? 2 : 1;
		state = try_free_node(n, ro, fd, st, err);
	}
	if (state == NODE_ERROR)
		return -1;
	return state == NODE_READY ? 0 : 1;
}

/*
 * LOOP_CTL_GET_FREE returns the lowest free index, so a free node that a
 * user owns and holds open (a grant whose session died without its guard,
 * or root's chown) would be returned to every attacher on the machine.
 * Skip it: make or take a device above it, and name the pinned one in the
 * log for the administrator.  *n is the index used.
 */
static int open_past_pinned(const struct session *s, uint32_t *n, int ro,
			    int *fd, struct stat *st, struct lfd_msg *err)
{
	uint32_t pinned = *n, i;
	int rc;

	for (i = pinned + 1; i <= pinned + PINNED_SCAN; i++) {
		if (ioctl(s->ctl_fd, LOOP_CTL_ADD, (unsigned long)i) < 0 &&
		    errno != EEXIST)
			continue;
		rc = open_free_node(s, i, ro, fd, st, err);
		if (rc < 0)
			return -1;
		if (rc == 0) {
			logmsg("/dev/loop%u is free but owned by a user who holds "
			       "it open; skipped (using /dev/loop%u): remove it "
			       "once it is closed (losetup -d; LOOP_CTL_REMOVE)",
			       pinned, i);
			*n = i;
			return 0;
		}
	}
	return 1;
}

static uint32_t kernel_flags(uint32_t flags)
{
	uint32_t k = LO_FLAGS_AUTOCLEAR;	/* a dead helper cannot leak it */

	if (flags & LFD_ATTACH_READ_ONLY)
		k |= LO_FLAGS_READ_ONLY;
	if (flags & LFD_ATTACH_PARTSCAN)
		k |= LO_FLAGS_PARTSCAN;
	if (flags & LFD_ATTACH_DIRECT_IO)
		k |= LO_FLAGS_DIRECT_IO;
	return k;
}

/* LOOP_CONFIGURE (5.8+; the helper refuses kernels before 5.15 at start)
 * binds and sets the status in one call, so nobody sees the device bound
 * with the wrong offset, size limit or flags. */
static int bind_device(int devfd, int backing_fd, const struct lfd_attach_req *req,
		       uint32_t flags)
{
	struct loop_config cfg;

	memset(&cfg, 0, sizeof(cfg));
	cfg.fd = (uint32_t)backing_fd;
	cfg.block_size = req->sector_size;
	cfg.info.lo_offset = req->offset;
	cfg.info.lo_sizelimit = req->sizelimit;
	cfg.info.lo_flags = kernel_flags(flags);
	snprintf((char *)cfg.info.lo_file_name, LO_NAME_SIZE, "loopfd");
	return ioctl(devfd, LOOP_CONFIGURE, &cfg);
}

/*
 * Write back what the caller left dirty in the image, and wait, before the
 * bind: LOOP_CONFIGURE's own fsync of the backing file runs with the
 * device's lock held while the device still looks free, so every attacher
 * on the machine sent there would wait for that write-back (a gigabyte of
 * scattered dirty pages on ext4: 2 s, helper-21; KERNEL-FACTS.md).  Here
 * only this session waits.  sync_file_range with its waits checks the open
 * file's write-back error cursor: an error there belongs to data the caller
 * wrote before the attach, which did not reach the disk; the attach is
 * refused with it (said, not swallowed).  0, or -1 with err.
 */
static int write_back_image(const struct attach_job *j, struct lfd_msg *err)
{
	if (sync_file_range(j->backing_fd, 0, 0, SYNC_FILE_RANGE_WAIT_BEFORE |
			    SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) == 0)
		return 0;
	lfd_make_error(err, 0, errno, errno == EIO || errno == ENOSPC ||
		       errno == EDQUOT ? LFD_R_DATA_LOST : LFD_R_KERNEL,
		       "data written to the image before the attach did not "
		       "reach its disk (%s): not attaching", strerror(errno));
	return -1;
}

/* The disk sequence number (5.15+, which the helper requires) of the device
 * behind fd: unique per attachment since boot, so a device cleared and bound
 * again by someone else never passes for ours. */
static int read_diskseq(int fd, uint64_t *seq)
{
	*seq = 0;
	return ioctl(fd, BLKGETDISKSEQ, seq);
}

/* Read back what the kernel made of the attachment, through the held fd. */
static int read_identity(struct device *d, const struct attach_job *j,
			 struct lfd_msg *err)
{
	struct loop_info64 info;
	uint64_t seq = 0, size = 0;

	if (ioctl(d->fd, LOOP_GET_STATUS64, &info) < 0 ||
	    read_diskseq(d->fd, &seq) < 0 ||
	    ioctl(d->fd, BLKGETSIZE64, &size) < 0)
		return refuse(err, LFD_R_KERNEL, errno, "cannot read back the new attachment");
	if (info.lo_device != (uint64_t)j->backing_dev ||
	    info.lo_inode != (uint64_t)j->backing_ino) {
		lfd_make_error(err, 0, ESTALE, LFD_R_DEVICE_CHANGED,
			       "/dev/loop%u changed while it was being attached",
			       d->ident.index);
		return -1;
	}
	d->ident.diskseq = seq;
	d->ident.size = size;
	d->ident.offset = info.lo_offset;
	d->ident.sizelimit = info.lo_sizelimit;
	d->ident.backing_dev = info.lo_device;
	d->ident.backing_ino = info.lo_inode;
	d->ident.flags = LFD_ATTACH_AUTOCLEAR;
	if (info.lo_flags & LO_FLAGS_READ_ONLY)
		d->ident.flags |= LFD_ATTACH_READ_ONLY;
	if (info.lo_flags & LO_FLAGS_PARTSCAN)
		d->ident.flags |= LFD_ATTACH_PARTSCAN;
	if (info.lo_flags & LO_FLAGS_DIRECT_IO)
		d->ident.flags |= LFD_ATTACH_DIRECT_IO;
	return 0;
}

/*
 * After losing a race for a device, wait a random 0 .. 50 us << min(tries, 5)
 * before asking GET_FREE again.  GET_FREE sends every concurrent attacher to
 * the same lowest free index and only one can bind it; without the jitter
 * the losers move on together and collide again (make bench: 64 concurrent
 * sessions exhausted 32 immediate retries, "no free loop device").
 */
static void collision_backoff(int tries)
{
	static uint32_t seed;
	uint32_t cap = (uint32_t)ATTACH_BACKOFF_US << (tries < 5 ? tries : 5);

	if (seed == 0)
		seed = ((uint32_t)getpid() * 2654435761u) | 1u;
	seed ^= seed << 13;	/* xorshift32 */
	seed ^= seed >> 17;
	seed ^= seed << 5;
	sleep_us(seed % cap);
}

/* The node we opened (and made root-only) for this attachment. */
static void keep_node(struct device *d, int fd, uint32_t idx,
		      const struct stat *st)
{
	d->fd = fd;
	d->rdev = st->st_rdev;
	d->node_uid = st->st_uid;
	d->node_gid = st->st_gid;
	d->node_mode = st->st_mode & 07777;
	d->ident.index = idx;
	d->ident.major = major(st->st_rdev);
	d->ident.minor = minor(st->st_rdev);
}

/*
 * Get a free device and bind it, keeping our fd (opened before the bind, so
 * before the client can write) in d->fd.  LOOP_CTL_GET_FREE reserves
 * nothing: another attacher may bind the same device first, and
 * LOOP_CONFIGURE then fails with EBUSY; take a fresh one, a bounded number
 * of times.
 */
static int bind_free_device(struct session *s, int backing_fd,
			    const struct lfd_attach_req *req, uint32_t flags,
			    struct device *d, struct lfd_msg *err)
{
	struct stat st;
	uint32_t idx;
	int tries, n, fd, rc, e, ro = (flags & LFD_ATTACH_READ_ONLY) != 0;

	for (tries = 0; tries < ATTACH_TRIES; tries++) {
		n = ioctl(s->ctl_fd, LOOP_CTL_GET_FREE);
		if (n < 0)
			return refuse(err, LFD_R_NO_DEVICE, errno, "no free loop device (LOOP_CTL_GET_FREE)");
		idx = (uint32_t)n;
		rc = open_free_node(s, idx, ro, &fd, &st, err);
		if (rc == 2)
			rc = open_past_pinned(s, &idx, ro, &fd, &st, err);
		if (rc < 0)
			return -1;
		if (rc > 0) {
			collision_backoff(tries);
			continue;
		}
		if (bind_device(fd, backing_fd, req, flags) == 0) {
			keep_node(d, fd, idx, &st);
			return 0;
		}
		e = errno;	/* before close() can change it */
		close(fd);
		if (e != EBUSY && e != EAGAIN) {
			lfd_make_error(err, 0, e, e == EINVAL ?
				       LFD_R_BAD_OPTION : LFD_R_KERNEL,
				       "LOOP_CONFIGURE on /dev/loop%u failed: %s",
				       idx, strerror(e));
			return -1;
		}
		collision_backoff(tries);
	}
	return refuse(err, LFD_R_NO_DEVICE, EBUSY, "no free loop device "
		      "after repeated collisions with other attachers");
}

/* Another open of our device: by path, then proven to be the same device
 * by its device number.  -1 with errno; ESTALE: the node is another
 * device's. */
static int open_same_device(const struct device *d, int read_only)
{
	struct stat st;
	int fd = open_loop_node(d->ident.index, read_only);

	if (fd < 0)
		return -1;
	if (fstat(fd, &st) < 0 || !S_ISBLK(st.st_mode) || st.st_rdev != d->rdev) {
		close(fd);
		errno = ESTALE;
		return -1;
	}
	return fd;
}

/* The client's fd: a separate open file description of the same device,
 * so that nothing the client does to its fd (flock, close, fcntl) touches
 * the one the helper flushes through. */
static int open_client_fd(const struct device *d, struct lfd_msg *err)
{
	int fd = open_same_device(d, (d->ident.flags & LFD_ATTACH_READ_ONLY) != 0);

	if (fd < 0 && errno == ESTALE)
		return refuse(err, LFD_R_DEVICE_CHANGED, ESTALE, "device node changed while attaching");
	if (fd < 0)
		return refuse(err, LFD_R_KERNEL, errno, "cannot open the device for the client");
	return fd;
}

/* --grant: the node belongs to the caller for the attachment's life, so
 * that path-based tools (mkfs on /dev/fd/3) can reopen it. */
static int grant_node(const struct session *s, struct device *d,
		      struct lfd_msg *err)
{
	if (fchown(d->fd, s->caller.uid, (gid_t)-1) < 0)
		return refuse(err, LFD_R_KERNEL, errno, "cannot give the device node to the caller");
	d->granted = 1;
	return 0;
}

/* Give the node back to its owner and mode from before the grant, without
 * any ACL the caller set.  Done before every flush and clear, so the caller
 * cannot open the node again from then on. */
static int restore_node(struct device *d)
{
	if (!d->granted)
		return 0;
	if (fchown(d->fd, d->node_uid, d->node_gid) < 0 ||
	    fchmod(d->fd, d->node_mode) < 0 || drop_node_acl(d->fd) < 0) {
		logmsg("/dev/loop%u: cannot give the node back to root: %s",
		       d->ident.index, strerror(errno));
		return -1;
	}
	d->granted = 0;
	return 0;
}

/*
 * The release makes the image durable with fsync of the backing file itself,
 * not of the device (flush_device).  LOOP_CONFIGURE takes a reference to the
 * open file the client sent (fget of its fd: lo_backing_file is that struct
 * file), so a dup of the fd is the very file the loop worker would fsync for
 * a device flush: the same errseq cursor, no reopen by path, nothing the
 * kernel does not already hold while the device is bound (the client's OFD
 * locks live as long as the loop's reference anyway; flags it sets later with
 * F_SETFL are the dup's too, and fsync ignores them).  The helper never reads,
 * writes or locks through it, and closes it when the release ends.  Being the
 * client's open file, its errseq cursor is the client's: a client that fsyncs
 * its own backing fd before the release is told of an error there, and the
 * release no longer sees it (as with fsync of the device before).
 */
static int keep_backing_fd(struct device *d, int backing_fd, struct lfd_msg *err)
{
	d->backing_fd = fcntl(backing_fd, F_DUPFD_CLOEXEC, 3);
	if (d->backing_fd < 0)
		return refuse(err, LFD_R_KERNEL, errno, "cannot keep the backing fd for the release's flush");
	return 0;
}

static void drop_backing_fd(struct device *d)
{
	if (d->backing_fd >= 0)
		close(d->backing_fd);
	d->backing_fd = -1;
}

/*
 * An attachment, in steps, so that a batch can take each step for all its
 * entries before the next, and bind them on threads (threads.c):
 * loop_attach_prepare (the backing fd), loop_attach_bind or
 * loop_reserve_nodes + loop_bind_reserved (a node, LOOP_CONFIGURE, the
 * read-back), loop_attach_finish (the client's fd, the guard, the grant).
 * loop_attach_undo takes back whatever a failed attachment did.
 */
int loop_attach_prepare(const struct session *s, struct attach_job *j)
{
	struct device *d = j->d;
	struct stat backing;
	int ro = 0;

	d->fd = -1;
	d->backing_fd = -1;
	j->bound = 0;
	j->flags = j->req->flags;
	if (check_backing(s, j->backing_fd, j->req, &ro, &backing, &j->err) < 0)
		return -1;
	j->backing_dev = backing.st_dev;
	j->backing_ino = backing.st_ino;
	if (ro)
		j->flags |= LFD_ATTACH_READ_ONLY;
	/* The owner of a node can open it read-write, whatever the device's
	 * read-only flag: a granted read-only device would hand the caller a
	 * writable opener by path, with LOOP_SET_STATUS64 (partition scan,
	 * direct I/O) past the policy. */
	if ((j->flags & LFD_ATTACH_GRANT) && (j->flags & LFD_ATTACH_READ_ONLY))
		return refuse(&j->err, LFD_R_BAD_OPTION, EINVAL, "--grant is refused "
			      "on a read-only attachment (the granted node could "
			      "be opened read-write): write through the fd instead");
	return keep_backing_fd(d, j->backing_fd, &j->err);
}

/* Just bound through d->fd: read back what the kernel made of it and find
 * its binding.  On failure loop_attach_undo unbinds it. */
static int identify(struct attach_job *j)
{
	struct device *d = j->d;

	j->bound = 1;
	d->ident.sector_size = j->req->sector_size ? j->req->sector_size : 512;
	if (read_identity(d, j, &j->err) < 0)
		return -1;
	/* Our fd keeps the device bound: the directory is our binding's. */
	if (binding_ino(d->ident.index, &d->binding_ino) < 0) {
		lfd_make_error(&j->err, 0, errno, LFD_R_KERNEL, "cannot find "
			       "/sys/devices/virtual/block/loop%u/loop (%s): "
			       "without sysfs a release could not tell when the "
			       "device has detached", d->ident.index,
			       strerror(errno));
		return -1;
	}
	return 0;
}

/* A free device found by LOOP_CTL_GET_FREE, bound. */
int loop_attach_bind(struct session *s, struct attach_job *j)
{
	if (write_back_image(j, &j->err) < 0 ||
	    bind_free_device(s, j->backing_fd, j->req, j->flags, j->d,
			     &j->err) < 0)
		return -1;
	return identify(j);
}

/* Free node idx, added first if there is none: 0 with *fd, 1 to try the
 * next index, -1 with err.  A bound one (someone else's: the scan passes
 * them) is not even opened: node_unbound would stat its backing file, and
 * holding someone's device open could make their release find it busy, or
 * their detach happen in our close.  A user-owned one is left alone: the
 * scan reaches indices GET_FREE would not yet name, and only GET_FREE's
 * own node is worth recreating (open_free_node). */
static int reserve_node(const struct session *s, uint32_t idx, int ro,
			int *fd, struct stat *st, struct lfd_msg *err)
{
	enum node_state state;

	if (has_binding(idx))
		return 1;
	state = try_free_node(idx, ro, fd, st, err);
	if (state == NODE_ABSENT &&
	    (ioctl(s->ctl_fd, LOOP_CTL_ADD, (unsigned long)idx) == 0 ||
	     errno == EEXIST))
		state = try_free_node(idx, ro, fd, st, err);
	if (state == NODE_ERROR)
		return -1;
	return state == NODE_READY ? 0 : 1;
}

/*
 * A different free node for each of a batch's jobs, opened and made
 * root-only as for loop_attach_bind, so that they can be bound at the same
 * time: LOOP_CTL_GET_FREE would name the same lowest free index to all of
 * them until one is bound.  The nodes are the free ones from GET_FREE's
 * index up, adding missing ones (as GET_FREE adds one when none is free).
 * Nothing is reserved against other attachers: one that binds a node first
 * makes our LOOP_CONFIGURE fail with EBUSY (loop_bind_reserved).  Jobs left
 * without a node (a scan past RESERVE_SCAN indices, an error) are bound
 * one by one afterwards.
 */
void loop_reserve_nodes(struct session *s, struct attach_job *j, unsigned n)
{
	struct stat st;
	uint32_t idx, end;
	unsigned i = 0;
	int n0, fd, rc;

	n0 = ioctl(s->ctl_fd, LOOP_CTL_GET_FREE);
	if (n0 < 0)
		return;
	end = (uint32_t)n0 + n + RESERVE_SCAN;
	for (idx = (uint32_t)n0; i < n && idx < end; idx++) {
		rc = reserve_node(s, idx, (j[i].flags & LFD_ATTACH_READ_ONLY) != 0,
				  &fd, &st, &j[i].err);
		if (rc < 0)
			return;
		if (rc == 0)
			keep_node(j[i++].d, fd, idx, &st);
	}
}

/*
 * Bind the node loop_reserve_nodes kept for this job; safe on threads (no
 * fd is opened: threads.c).  0: bound; 1: another attacher bound the node
 * first, or there was none, so bind with loop_attach_bind; -1: error.
 */
int loop_bind_reserved(struct attach_job *j)
{
	struct device *d = j->d;
	int e;

	if (d->fd < 0)
		return 1;
	if (write_back_image(j, &j->err) < 0) {
		close(d->fd);
		d->fd = -1;
		return -1;
	}
	if (bind_device(d->fd, j->backing_fd, j->req, j->flags) == 0)
		return identify(j);
	e = errno;	/* before close() can change it */
	close(d->fd);
	d->fd = -1;
	if (e == EBUSY || e == EAGAIN)
		return 1;
	lfd_make_error(&j->err, 0, e, e == EINVAL ? LFD_R_BAD_OPTION : LFD_R_KERNEL,
		       "LOOP_CONFIGURE on /dev/loop%u failed: %s",
		       d->ident.index, strerror(e));
	return -1;
}

/* The client's fd, then the guard, then the grant. */
int loop_attach_finish(struct session *s, struct attach_job *j, int *client_fd)
{
	struct device *d = j->d;

	/* The client's fd before the grant: once the node is the caller's,
	 * root without CAP_DAC_OVERRIDE can no longer open it. */
	*client_fd = open_client_fd(d, &j->err);
	if (*client_fd < 0)
		return -1;
	/* The guard hears of the device before the node is the caller's:
	 * whatever ends this process from here, the node is given back and
	 * the slots stay held until the device is gone. */
	if (guard_note_attached(s, d, (j->flags & LFD_ATTACH_GRANT) != 0) < 0) {
		lfd_make_error(&j->err, 0, errno, LFD_R_KERNEL, "the session's "
			       "guard is gone (%s): not attaching", strerror(errno));
		close(*client_fd);
		return -1;
	}
	if ((j->flags & LFD_ATTACH_GRANT) && grant_node(s, d, &j->err) < 0) {
		close(*client_fd);
		guard_note_gone(s, d);
		return -1;
	}
	if (d->granted)
		d->ident.flags |= LFD_ATTACH_GRANT;
	return 0;
}

/* A failed attachment, before the client had the device: nobody but us has
 * used it, so there is no data to flush.  Only a node we bound is cleared. */
void loop_attach_undo(struct attach_job *j)
{
	struct device *d = j->d;

	restore_node(d);
	if (j->bound)
		ioctl(d->fd, LOOP_CLR_FD, 0);
	if (d->fd >= 0)
		close(d->fd);
	d->fd = -1;
	j->bound = 0;
	drop_backing_fd(d);
}

/* ---- release ---------------------------------------------------------------- */

/*
 * Is the device behind our fd still the attachment we made?  The disk
 * sequence number changes on every bind; the backing dev/inode catch
 * LOOP_CHANGE_FD, which a client may do to its read-only device.  (A client's
 * LOOP_CLR_FD cannot unbind it while the helper holds its fd: with other
 * openers the kernel only sets AUTOCLEAR.)  Acting on a device that fails
 * this check could flush or clear a binding that is not ours.
 */
static int verify_same(const struct device *d, struct lfd_msg *err)
{
	struct loop_info64 info;
	uint64_t seq = 0;

	if (ioctl(d->fd, LOOP_GET_STATUS64, &info) < 0) {
		lfd_make_error(err, 0, ESTALE, LFD_R_DEVICE_CHANGED,
			       "/dev/loop%u cannot be checked (LOOP_GET_STATUS64: "
			       "%s); not flushed or cleared, data written through "
			       "it is not known to be in the image",
			       d->ident.index, strerror(errno));
		return -1;
	}
	if (read_diskseq(d->fd, &seq) < 0 || seq != d->ident.diskseq ||
	    info.lo_device != d->ident.backing_dev ||
	    info.lo_inode != d->ident.backing_ino) {
		lfd_make_error(err, 0, ESTALE, LFD_R_DEVICE_CHANGED,
			       "/dev/loop%u is no longer the attachment loopfd "
			       "made (re-bound or re-pointed); not flushed or "
			       "cleared by the helper", d->ident.index);
		return -1;
	}
	return 0;
}

static void data_lost(const struct device *d, int e, int shared,
		      struct lfd_msg *err)
{
	if (shared)
		lfd_make_error(err, 0, EIO, LFD_R_DATA_LOST,
			       "/dev/loop%u: the image's own write-back failed "
			       "(%s; seen through another device on the same "
			       "open image): data written through this device "
			       "may NOT all be in the image",
			       d->ident.index, strerror(e));
	else
		lfd_make_error(err, 0, EIO, LFD_R_DATA_LOST,
			       "/dev/loop%u: writeback to the image failed (%s): "
			       "data written through the device is NOT all in "
			       "the image", d->ident.index, strerror(e));
}

enum dev_state { DEV_OURS, DEV_GONE, DEV_RUNDOWN, DEV_UNKNOWN };

/* Is our binding still there, by its sysfs directory (binding_ino)? */
static enum dev_state binding_state(const struct device *d)
{
	uint64_t ino;

	if (binding_ino(d->ident.index, &ino) < 0)
		return errno == ENOENT ? DEV_GONE : DEV_UNKNOWN;
	return ino == d->binding_ino ? DEV_OURS : DEV_GONE;
}

/* The autoclear detach of someone else's last close removes the sysfs
 * directory before it lets go of the backing file, all under the disk's
 * open mutex: an open of the node waits until it is done. */
static void wait_out_teardown(const struct device *d)
{
	int fd = open_loop_node(d->ident.index, 1);

	if (fd >= 0)
		close(fd);
}

/*
 * Is our binding still there?  DEV_GONE: its sysfs directory is gone or
 * another binding's; with others set (someone else may be closing the
 * device as we look), only once any teardown in progress has ended.  Our
 * own close, the last, detaches before it returns: then nothing is opened.
 * Else the node is opened: DEV_RUNDOWN when that fails with ENXIO, which on
 * 6.18 happens only while a LOOP_CLR_FD by a sole opener is pending on an
 * fd still open: someone cleared it, write-back may fail.  Held open, the
 * binding cannot end, and is checked again: it may have ended between the
 * first look and the open, and the index been bound anew.  DEV_OURS: still
 * bound as we bound it (re-pointed by a reader's LOOP_CHANGE_FD or not);
 * *fd is then an open fd the caller owns.  DEV_UNKNOWN: anything else;
 * never taken for "gone".  Nothing here asks the backing file.
 */
static enum dev_state probe_device(const struct device *d, int others, int *fd)
{
	enum dev_state state = binding_state(d);

	*fd = -1;
	if (state == DEV_GONE && others)
		wait_out_teardown(d);
	if (state != DEV_OURS)
		return state;
	*fd = open_same_device(d, 1);
	if (*fd < 0)
		return errno == ENXIO ? DEV_RUNDOWN : DEV_UNKNOWN;
	state = binding_state(d);
	if (state != DEV_OURS) {
		close(*fd);
		*fd = -1;
	}
	return state;
}

/*
 * Release, race-free.  The detach is left to the last close, which writes
 * back while still bound: the device carries AUTOCLEAR from its bind
 * (kernel_flags).  LOOP_CLR_FD by the sole opener would instead put it in
 * rundown, where the last close's write-back fails: anything written by an
 * opener that closed between our flush and the clear would be lost.  A
 * client with a writable fd can clear AUTOCLEAR (LOOP_SET_STATUS64); only
 * then is it armed again, by LOOP_CLR_FD while the helper holds a second
 * fd, where the kernel only sets AUTOCLEAR.  (Always doing so cost 5 us of
 * a batch's device here: an open, a close.)  Each round then flushes
 * through our fd (reporting writeback errors), closes it - the detach
 * happens inside that close if nobody else holds the device - and looks
 * whether our binding is gone (probe_device).
 */
static int autoclear_armed(const struct device *d)
{
	struct loop_info64 info;

	return ioctl(d->fd, LOOP_GET_STATUS64, &info) == 0 &&
	       (info.lo_flags & LO_FLAGS_AUTOCLEAR);
}

static int hand_over_to_autoclear(struct device *d, struct lfd_msg *err)
{
	int probe;

	if (autoclear_armed(d))
		return 0;
	probe = open_same_device(d, 1);
	if (probe < 0)
		return refuse(err, LFD_R_KERNEL, errno,
			      "cannot open the device a second time to clear it");
	if (ioctl(d->fd, LOOP_CLR_FD, 0) < 0)
		logmsg("/dev/loop%u: LOOP_CLR_FD: %s", d->ident.index, strerror(errno));
	close(d->fd);
	d->fd = probe;
	return 0;
}

/* Write back the device's page cache through fd and wait for it.  The wait
 * ends in file_check_and_advance_wb_err: a loop request that failed (the
 * backing file's ENOSPC, which the loop driver turns into EIO) is reported
 * here, once per open file description of the device.  No REQ_OP_FLUSH. */
static int write_back_device(int fd)
{
	return sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WAIT_BEFORE |
			       SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
}

/*
 * Make the image durable: fsync of the backing file, the open file the loop
 * worker writes through.  Buffered loop writes land in the backing file's
 * page cache; a failure of *its* write-back to the disk is recorded in the
 * backing file's mapping (errseq), not the device's: write_back_device does
 * not see it, this fsync does (KERNEL-FACTS.md, "Which call sees which
 * writeback error").  fsync of the device would do the same through the loop
 * worker (lo_req_flush: vfs_fsync of lo_backing_file), plus a round trip
 * through that worker: 80 against 53 us for a clean device here, this
 * function's part of which is the fsync.  A read-only device wrote nothing.
 */
static int make_backing_durable(const struct device *d)
{
	if (d->ident.flags & LFD_ATTACH_READ_ONLY)
		return 0;
	return fsync(d->backing_fd);
}

static void keep_first_error(struct device *d, int e)
{
	if (d->lost_errno == 0)
		d->lost_errno = e;
}

/* The image's own write-back failed (fsync of the backing file): kept apart
 * too, for the other devices on the same open image (serve.c). */
static void image_lost(struct device *d, int e)
{
	keep_first_error(d, e);
	if (d->image_errno == 0)
		d->image_errno = e;
}

/* The full flush through fd: both steps. */
static void flush_device(struct device *d, int fd)
{
	if (write_back_device(fd) < 0)
		keep_first_error(d, errno);
	if (make_backing_durable(d) < 0)
		image_lost(d, errno);
}

/*
 * One round: flush through our fd, close it (the detach happens inside that
 * close if nobody else holds the device), and probe.  The first round
 * follows the release's own flush: it only writes back pages others dirtied
 * since, and reports their errors, without making the backing file durable
 * again (the kernel's exception: what another opener writes during the
 * release).  Later rounds, after waiting for other openers, do the full
 * flush.  d->cleared is set when someone else's LOOP_CLR_FD put the device
 * in rundown.
 */
static enum dev_state release_round(struct device *d, int round)
{
	enum dev_state st;

	if (d->fd >= 0) {
		if (round > 0)
			flush_device(d, d->fd);
		else if (write_back_device(d->fd) < 0)
			keep_first_error(d, errno);
		close(d->fd);
		d->fd = -1;
	}
	st = probe_device(d, round > 0, &d->fd);
	if (st == DEV_RUNDOWN)
		d->cleared = 1;
	if (st != DEV_OURS && d->fd >= 0) {
		close(d->fd);
		d->fd = -1;
	}
	return st;
}

/*
 * The release's own flush, through the fd opened before the client wrote:
 * a device write-back error is the only reliable news of lost data, and
 * each open file description sees it once.  BLKFLSBUF then drops the clean
 * cache (its own result proves nothing).  Touches nothing but d: the
 * flushes of a batch run on threads of their own (threads.c).
 */
void loop_flush(struct device *d)
{
	if (write_back_device(d->fd) < 0)
		keep_first_error(d, errno);
	if (ioctl(d->fd, BLKFLSBUF, 0) < 0)
		logmsg("/dev/loop%u: BLKFLSBUF: %s", d->ident.index, strerror(errno));
	if (make_backing_durable(d) < 0)
		image_lost(d, errno);
}

/*
 * A release in steps (serve.c takes them), so that a batch can flush its
 * devices concurrently and clear them all before it waits for any:
 *  - loop_release_begin: the device checked, the node taken back
 *    (RELEASE_STILL_ATTACHED: not ours any more, left alone);
 *  - loop_flush;
 *  - loop_release_clear: autoclear armed, then one round, at once;
 *  - loop_release_wait: rounds every RELEASE_POLL_MS, each with the full
 *    flush, until gone or timeout_ms passed;
 *  - loop_release_outcome: the answer.
 */
int loop_release_begin(struct device *d, struct lfd_msg *err)
{
	d->lost_errno = 0;
	d->image_errno = 0;
	d->cleared = 0;
	if (verify_same(d, err) < 0) {
		restore_node(d);	/* never leave a user owning another binding */
		close(d->fd);
		d->fd = -1;
		drop_backing_fd(d);
		return RELEASE_STILL_ATTACHED;
	}
	/* Back to root first: from here no new open by the caller succeeds. */
	restore_node(d);
	return 0;
}

enum clear_result loop_release_clear(struct device *d, struct lfd_msg *err)
{
	enum dev_state st;

	if (hand_over_to_autoclear(d, err) < 0) {
		close(d->fd);
		d->fd = -1;
		drop_backing_fd(d);
		if (d->lost_errno)	/* the flush's news first: it is consumed */
			data_lost(d, d->lost_errno, 0, err);
		return CLEAR_ERROR;
	}
	st = release_round(d, 0);
	return st == DEV_GONE ? CLEAR_GONE :
	       st == DEV_UNKNOWN ? CLEAR_UNKNOWN : CLEAR_HELD;
}

int loop_release_wait(struct device *d, uint32_t timeout_ms,
		      uint32_t *waited_ms)
{
	uint64_t start = now_ms();
	enum dev_state st;
	int round;

	*waited_ms = 0;
	for (round = 1;; round++) {
		if (*waited_ms >= timeout_ms)
			return 0;
		sleep_ms(RELEASE_POLL_MS);
		st = release_round(d, round);
		*waited_ms = (uint32_t)(now_ms() - start);
		if (st == DEV_GONE)
			return 1;
		if (st == DEV_UNKNOWN)
			return 0;
	}
}

int loop_release_outcome(struct device *d, int gone, uint32_t waited_ms,
			 struct lfd_msg *err)
{
	/* Devices sharing one open image (a partitioned image's, say) share
	 * its errseq cursor: a failure of the image's own write-back is told
	 * to the first fsync through any of them, and only to it.  The session
	 * passes it on to the others (serve.c): their data may be in what was
	 * lost. */
	int shared = d->lost_errno == 0 && d->shared_loss != 0;

	if (shared)
		d->lost_errno = d->shared_loss;
	if (d->fd >= 0)
		close(d->fd);
	d->fd = -1;
	/* The loop holds its own reference to the file while still bound. */
	drop_backing_fd(d);
	if (d->lost_errno)
		data_lost(d, d->lost_errno, shared, err);
	else if (d->cleared)
		lfd_make_error(err, 0, EIO, LFD_R_DATA_LOST,
			       "/dev/loop%u was cleared (LOOP_CLR_FD) by another "
			       "opener during the release: data written through "
			       "it may NOT all be in the image", d->ident.index);
	else if (!gone)
		lfd_make_error(err, 0, EBUSY, LFD_R_BUSY,
			       "busy: /dev/loop%u is still open elsewhere after "
			       "%u ms; it will detach when closed (what was "
			       "written before the release is flushed)",
			       d->ident.index, waited_ms);
	if (!gone)
		return RELEASE_STILL_ATTACHED;
	return d->lost_errno || d->cleared ? RELEASE_FAILED : RELEASE_DONE;
}

/* A client can clear AUTOCLEAR (LOOP_SET_STATUS64 on its writable fd) after
 * a busy release; without it the device would never detach.  Set it again
 * on every check, with a second fd of ours open beside the probe's: never
 * the sole opener, LOOP_CLR_FD then only sets AUTOCLEAR. */
static void rearm_autoclear(const struct device *d, int fd)
{
	int second = open_same_device(d, 1);

	/* It asks nothing of the backing file, unlike LOOP_GET/SET_STATUS64:
	 * a FUSE image failing getattr cannot keep the device bound for ever. */
	if (second >= 0 && ioctl(fd, LOOP_CLR_FD, 0) < 0)
		logmsg("/dev/loop%u: cannot re-arm autoclear: %s",
		       d->ident.index, strerror(errno));
	if (second >= 0)
		close(second);
}

/* A device released busy or changed: gone yet?  Its slots are held until
 * it is, so a client cannot pin devices past its limit by keeping them open
 * and releasing them. */
int loop_detached(const struct device *d)
{
	int fd;
	enum dev_state st = probe_device(d, 1, &fd);

	if (st == DEV_OURS) {
		rearm_autoclear(d, fd);
		close(fd);	/* if we were its last opener, it detaches here */
		st = probe_device(d, 1, &fd);
		if (fd >= 0)
			close(fd);
	}
	return st == DEV_GONE;
}
