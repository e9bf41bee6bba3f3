/*
 * System-wide device accounting without a daemon, shared by all three modes.
 *
 * One root-owned file, $(RUNSTATEDIR)/slots, is never written: its byte
 * ranges are slots.  A session holds a device slot by holding an
 * open-file-description lock (F_OFD_SETLK) on one byte: bytes
 * [0, POLICY_MAX_TOTAL) are the global slots, and each uid has
 * POLICY_MAX_PER_USER bytes of its own further on.  The kernel drops a
 * process's OFD locks when its last fd to the description closes, so a
 * session that dies by any means, SIGKILL included, frees its slots
 * without anyone cleaning up.  Every session opens the file itself: locks
 * taken through one description never conflict with each other.
 */
#include "helper.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int check_root_dir(const char *dir, char *err, size_t errlen)
{
	struct stat st;

	if (lstat(dir, &st) < 0) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		return -1;
	}
	/* A directory someone else controls could have the slot file swapped
	 * for one whose locks they hold, or a symlink to a file they own. */
	if (!S_ISDIR(st.st_mode) || st.st_uid != 0 ||
	    (st.st_mode & (S_IWGRP | S_IWOTH))) {
		snprintf(err, errlen, "%s: must be a directory owned by root and "
			 "not group- or world-writable", dir);
		return -1;
	}
	return 0;
}

int quota_open(const char *rundir, char *err, size_t errlen)
{
	char path[4096];
	struct stat st;
	int fd;

	if (mkdir(rundir, 0755) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "%s: cannot create: %s", rundir, strerror(errno));
		return -1;
	}
	if (check_root_dir(rundir, err, errlen) < 0)
		return -1;
	if ((size_t)snprintf(path, sizeof(path), "%s/slots", rundir) >= sizeof(path)) {
		snprintf(err, errlen, "%s: path too long", rundir);
		return -1;
	}
	fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != 0) {
		snprintf(err, errlen, "%s: not a regular file owned by root", path);
		close(fd);
		return -1;
	}
	return fd;
}

uint64_t quota_user_base(uid_t uid)
{
	return (uint64_t)POLICY_MAX_TOTAL + (uint64_t)uid * POLICY_MAX_PER_USER;
}

/* Past every uid's device slots: QUOTA_SESSIONS_PER_UID bytes per uid. */
uint64_t quota_session_base(uid_t uid)
{
	return (uint64_t)POLICY_MAX_TOTAL +
	       ((uint64_t)UINT32_MAX + 1) * POLICY_MAX_PER_USER +
	       (uint64_t)uid * QUOTA_SESSIONS_PER_UID;
}

static int lock_byte(int fd, uint64_t off, short type)
{
	struct flock fl;

	memset(&fl, 0, sizeof(fl));
	fl.l_type = type;
	fl.l_whence = SEEK_SET;
	fl.l_start = (off_t)off;
	fl.l_len = 1;
	fl.l_pid = 0;		/* required for OFD locks */
	return fcntl(fd, F_OFD_SETLK, &fl);
}

static int bit_set(const unsigned char *bits, unsigned i)
{
	return (bits[i / 8] >> (i % 8)) & 1;
}

/* Sessions start their scan at different slots (by pid), so concurrent
 * attachers do not all contend for slot 0 first. */
int quota_take(int fd, uint64_t base, unsigned limit, const unsigned char *held)
{
	unsigned start = ((uint32_t)getpid() * 2654435761u) % limit;
	unsigned k, i;

	for (k = 0; k < limit; k++) {
		i = (start + k) % limit;
		if (bit_set(held, i))
			continue;
		if (lock_byte(fd, base + i, F_WRLCK) == 0)
			return (int)i;
		if (errno != EAGAIN && errno != EACCES)
			return -1;
	}
	errno = EDQUOT;
	return -1;
}

int quota_put(int fd, uint64_t base, int slot)
{
	if (slot < 0)
		return 0;
	return lock_byte(fd, base + (uint64_t)slot, F_UNLCK);
}
