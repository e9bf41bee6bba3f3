/*
 * The guard: what must stay true when a session process dies, however.
 *
 * A session process can die without running its teardown (a bug that the
 * seccomp filter kills, a crash on hostile input, root's SIGKILL).  Its
 * devices are then safe on their own: they carry AUTOCLEAR, and the last
 * close writes back while still bound.  Two things are not:
 *
 *  - a node granted to the caller stays the caller's after the device
 *    detaches; the caller can then open the free /dev/loopN and see
 *    whatever anyone (root's losetup, the next loopfd user) binds there;
 *  - the session's slots (OFD locks, quota.c) vanish with it, while the
 *    devices stay attached through the client's fds: limits bypassed.
 *
 * So every session forks a guard before it reads anything from the client.
 * The guard holds the same open file description of the slot file (so the
 * slots outlive the session process), reads a note from its parent before
 * every grant and after every device is gone, and when its parent is gone
 * (end of the pipe, whatever the cause) it gives every node still granted
 * back to root, then watches the devices left until they detach, and only
 * then exits and so frees the slots.  It never reads anything the client
 * sends, holds no device fd (that would keep a device from detaching), and
 * runs under a seccomp filter of its own.
 */
#include "helper.h"
#include "sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

/* One note, written whole (well under PIPE_BUF: atomic) by the session. */
struct guard_note {
	uint32_t gone;		/* 0: attached (maybe granted); 1: gone */
	uint32_t index;
	uint64_t rdev;
	uint64_t diskseq;
	uint32_t node_uid;	/* owner and mode to give the node back */
	uint32_t node_gid;
	uint32_t node_mode;
	uint32_t grant;		/* a grant was asked for */
};

static int write_note(const struct session *s, const struct guard_note *n)
{
	ssize_t w;

	do
		w = write(s->guard_fd, n, sizeof(*n));
	while (w < 0 && errno == EINTR);
	if (w == (ssize_t)sizeof(*n))
		return 0;
	if (w >= 0)
		errno = EIO;
	return -1;
}

static void note_from_device(const struct device *d, struct guard_note *n)
{
	memset(n, 0, sizeof(*n));
	n->index = d->ident.index;
	n->rdev = (uint64_t)d->rdev;
	n->diskseq = d->ident.diskseq;
	n->node_uid = (uint32_t)d->node_uid;
	n->node_gid = (uint32_t)d->node_gid;
	n->node_mode = (uint32_t)d->node_mode;
}

int guard_note_attached(const struct session *s, const struct device *d,
			int grant)
{
	struct guard_note n;

	note_from_device(d, &n);
	n.grant = grant != 0;
	return write_note(s, &n);
}

void guard_note_gone(const struct session *s, const struct device *d)
{
	struct guard_note n;

	note_from_device(d, &n);
	n.gone = 1;
	/* A guard that is gone (only root can do that) has nothing to be
	 * told; the session still restores and releases everything itself. */
	if (write_note(s, &n) < 0 && errno != EPIPE)
		logmsg("guard: %s", strerror(errno));
}

/* ---- the guard process ------------------------------------------------------ */

static struct device *find_watched(struct device *g, uint32_t index,
				   uint64_t diskseq)
{
	unsigned i;

	for (i = 0; i < LFD_MAX_DEVICES; i++)
		if (g[i].in_use && g[i].ident.index == index &&
		    g[i].ident.diskseq == diskseq)
			return &g[i];
	return NULL;
}

/* Keep the device a note describes, or forget it. */
static void take_note(struct device *g, const struct guard_note *n)
{
	struct device *d = find_watched(g, n->index, n->diskseq);
	unsigned i;

	if (n->gone) {
		if (d)
			d->in_use = 0;
		return;
	}
	for (i = 0; d == NULL && i < LFD_MAX_DEVICES; i++)
		if (!g[i].in_use)
			d = &g[i];
	if (d == NULL) {
		logmsg("guard: more devices than a session may hold; ignoring "
		       "/dev/loop%u", n->index);
		return;
	}
	memset(d, 0, sizeof(*d));
	d->in_use = 1;
	d->fd = -1;
	d->ident.index = n->index;
	d->ident.diskseq = n->diskseq;
	d->rdev = (dev_t)n->rdev;
	d->node_uid = n->node_uid;
	d->node_gid = n->node_gid;
	d->node_mode = n->node_mode & 07777;
	d->granted = n->grant != 0;
}

/*
 * Give a node granted to uid back, by path: the caller may have made it
 * mode 0000, which root without CAP_DAC_OVERRIDE could not open.  /dev is
 * root's: the node at the path is the device if its device number says so.
 * A node that is no longer uid's is left alone: it was given back already,
 * or belongs to someone else's grant by now.
 */
static void give_back(const struct device *d, uid_t uid)
{
	char path[32];
	struct stat st;

	snprintf(path, sizeof(path), "/dev/loop%u", d->ident.index);
	if (lstat(path, &st) < 0 || !S_ISBLK(st.st_mode) ||
	    st.st_rdev != d->rdev || st.st_uid != uid)
		return;
	if (fchownat(AT_FDCWD, path, d->node_uid, d->node_gid,
		     AT_SYMLINK_NOFOLLOW) < 0 ||
	    fchmodat(AT_FDCWD, path, d->node_mode, 0) < 0 ||
	    (lremovexattr(path, "system.posix_acl_access") < 0 &&
	     errno != ENODATA && errno != EOPNOTSUPP)) {
		logmsg("guard: %s: cannot give the node back to root: %s",
		       path, strerror(errno));
		return;
	}
	logmsg("guard: %s: the session process died with the node granted "
	       "to uid %u; given back to root", path, (unsigned)uid);
}

static int watching(const struct device *g)
{
	unsigned i;

	for (i = 0; i < LFD_MAX_DEVICES; i++)
		if (g[i].in_use)
			return 1;
	return 0;
}

static void watch_until_detached(struct device *g, uid_t uid)
{
	unsigned i;

	for (i = 0; i < LFD_MAX_DEVICES; i++)
		if (g[i].in_use)
			logmsg("guard: uid %u's session process died with "
			       "/dev/loop%u attached; its slots stay held until "
			       "it detaches", (unsigned)uid, g[i].ident.index);
	while (watching(g)) {
		for (i = 0; i < LFD_MAX_DEVICES; i++)
			if (g[i].in_use && loop_detached(&g[i]))
				g[i].in_use = 0;
		if (watching(g))
			sleep_ms(WATCH_INTERVAL_MS);
	}
}

static void guard_run(const struct session *s, int notes)
	__attribute__((noreturn));
static void guard_run(const struct session *s, int notes)
{
	static struct device g[LFD_MAX_DEVICES];
	struct guard_note n;
	ssize_t r;
	unsigned i;

	/* In setuid mode stdio are the caller's: a guard that watches a
	 * device must not keep a pipe reader of the caller's stderr waiting. */
	if (s->mode == LFD_MODE_SETUID && sb_stdio_to_devnull() < 0)
		_exit(1);
	/* Only root can signal the guard; still, a stop or restart of the
	 * daemon's unit must not end it before its devices are safe. */
	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	if (sb_seccomp_guard() < 0)
		_exit(1);
	for (;;) {
		r = read(notes, &n, sizeof(n));
		if (r < 0 && errno == EINTR)
			continue;
		if (r != (ssize_t)sizeof(n))
			break;		/* 0: the session process is gone */
		take_note(g, &n);
	}
	for (i = 0; i < LFD_MAX_DEVICES; i++)
		if (g[i].in_use && g[i].granted)
			give_back(&g[i], s->caller.uid);
	watch_until_detached(g, s->caller.uid);
	_exit(0);
}

int guard_start(struct session *s)
{
	int p[2];
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (pid == 0) {
		/* Nothing of the client's and no way to make new devices. */
		close(p[1]);
		close(s->sock);
		if (s->ctl_fd >= 0)
			close(s->ctl_fd);
		guard_run(s, p[0]);
	}
	close(p[0]);
	s->guard_fd = p[1];
	return 0;
}
