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
 * slots outlive the session process).  What it must know of the devices is
 * in a table the two share (an anonymous MAP_SHARED mapping made before the
 * fork): the session fills an entry before every grant and empties it once
 * the device is gone.  The guard reads the table only when its parent is
 * gone (the end of a pipe nobody writes to, whatever the cause of death).
 * Notes on that pipe, as before, woke the guard on the other CPU twice per
 * device: the table took 13 us a device off a 41-image `loopfd run` (149
 * against 134, interleaved runs).  Then it gives
 * every node still granted back to root, watches the devices left until
 * they detach, and only then exits and so frees the slots.  It never reads
 * anything the client sends, holds no device fd (that would keep a device
 * from detaching), and runs under a seccomp filter of its own.
 */
#include "helper.h"
#include "sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

/*
 * One entry per device slot of the session (struct session's dev[]).  Only
 * the session writes; the guard reads once the session is dead, when all
 * of its stores are visible.  state is stored last (release): a session
 * killed while filling an entry leaves it empty, and the device it
 * describes is then neither granted (the grant comes after the entry) nor
 * known to the guard (as if killed just before the entry was filled: the
 * device detaches with the client's last close, AUTOCLEAR).
 */
struct guard_entry {
	uint32_t state;		/* 0: empty; GUARD_ATTACHED */
	uint32_t index;
	uint64_t rdev;
	uint64_t binding_ino;	/* how the watch tells it detached (loopdev.c) */
	uint32_t node_uid;	/* owner and mode to give the node back */
	uint32_t node_gid;
	uint32_t node_mode;
	uint32_t grant;		/* a grant was asked for */
};
#define GUARD_ATTACHED	1

static struct guard_entry *entry_of(const struct session *s,
				    const struct device *d)
{
	return &s->guard_table[d - s->dev];
}

/* The guard is gone when the pipe's read end is closed (POLLERR on the
 * write end): only root or the OOM killer can do that. */
static int guard_alive(const struct session *s)
{
	struct pollfd p = { .fd = s->guard_fd, .events = POLLOUT };

	if (poll(&p, 1, 0) < 0)
		return -1;
	if (p.revents & (POLLERR | POLLHUP | POLLNVAL)) {
		errno = EPIPE;
		return -1;
	}
	return 0;
}

int guard_note_attached(const struct session *s, const struct device *d,
			int grant)
{
	struct guard_entry *e = entry_of(s, d);

	if (guard_alive(s) < 0)
		return -1;
	e->index = d->ident.index;
	e->rdev = (uint64_t)d->rdev;
	e->binding_ino = d->binding_ino;
	e->node_uid = (uint32_t)d->node_uid;
	e->node_gid = (uint32_t)d->node_gid;
	e->node_mode = (uint32_t)d->node_mode;
	e->grant = grant != 0;
	__atomic_store_n(&e->state, GUARD_ATTACHED, __ATOMIC_RELEASE);
	return 0;
}

void guard_note_gone(const struct session *s, const struct device *d)
{
	__atomic_store_n(&entry_of(s, d)->state, 0, __ATOMIC_RELEASE);
}

/* ---- the guard process ------------------------------------------------------ */

/* Watch the device an entry describes. */
static void take_entry(struct device *d, const struct guard_entry *e)
{
	memset(d, 0, sizeof(*d));
	d->in_use = 1;
	d->fd = -1;
	d->ident.index = e->index;
	d->binding_ino = e->binding_ino;
	d->rdev = (dev_t)e->rdev;
	d->node_uid = e->node_uid;
	d->node_gid = e->node_gid;
	d->node_mode = e->node_mode & 07777;
	d->granted = e->grant != 0;
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

/* Block until the session process is gone: the pipe's write end is its
 * alone, and it never writes. */
static void wait_for_parent_death(int death)
{
	char c;
	ssize_t r;

	do
		r = read(death, &c, 1);
	while (r > 0 || (r < 0 && errno == EINTR));
}

static void guard_run(const struct session *s, int death)
	__attribute__((noreturn));
static void guard_run(const struct session *s, int death)
{
	static struct device g[LFD_MAX_DEVICES];
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
	wait_for_parent_death(death);
	for (i = 0; i < LFD_MAX_DEVICES; i++)
		if (__atomic_load_n(&s->guard_table[i].state, __ATOMIC_ACQUIRE) ==
		    GUARD_ATTACHED)
			take_entry(&g[i], &s->guard_table[i]);
	for (i = 0; i < LFD_MAX_DEVICES; i++)
		if (g[i].in_use && g[i].granted)
			give_back(&g[i], s->caller.uid);
	watch_until_detached(g, s->caller.uid);
	_exit(0);
}

int guard_start(struct session *s)
{
	size_t size = sizeof(struct guard_entry) * LFD_MAX_DEVICES;
	int p[2];
	pid_t pid;

	s->guard_table = mmap(NULL, size, PROT_READ | PROT_WRITE,
			      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (s->guard_table == MAP_FAILED) {
		s->guard_table = NULL;
		return -1;
	}
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
