/*
 * Out of the invoking user's reach, beyond signals and ptrace.
 *
 * A setuid helper inherits more than ids from its caller: the cgroup it sits
 * in, its oom_score_adj, its scheduling policy, nice value and I/O priority,
 * and its hard resource limits.  Each is a way to end or stop the helper
 * between a flush and a clear, or to kill it while it holds a granted node.
 * Each step here either takes the lever away or fails (EPERM, with *what
 * naming the lever), and the helper then refuses to serve: fail closed.
 *
 * The kernel facts each step rests on are in SECURITY.md ("Out of the
 * caller's reach"), measured on 6.18.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sandbox.h"

#define SB_OOM_IMMUNE	(-1000)
#define SB_OOM_SCORE_ADJ	"/proc/self/oom_score_adj"
#define SB_IOPRIO_WHO_PROCESS	1
#define SB_MOUNTINFO_LINE	4096
#define SB_CGROUP_LINE		4096

/* ---- cgroups ---------------------------------------------------------------- */

/*
 * cgroup migration checks write access to cgroup.procs of the destination
 * and of the common ancestor, never the moved process's credentials; freeze
 * and kill act on every member of a cgroup and its descendants.  So a
 * caller that can write any control file of our cgroup or of an ancestor
 * (systemd's Delegate=yes chowns user@UID.service to the user; cgroups the
 * user makes below are wholly its own) can kill, freeze, starve or move us.
 * A cgroup is out of its reach when the directory and the files that act
 * on members are root's and not writable by group or others.
 */
static const char *const sb_member_files[] = {
	"cgroup.procs", "cgroup.threads", "cgroup.kill", "cgroup.freeze",
	"cgroup.subtree_control", "freezer.state", "tasks",
	"memory.max", "memory.high", "memory.oom.group",
	"memory.limit_in_bytes", "cpu.max", "pids.max",
};

static int
root_only(const struct stat *st)
{
	return st->st_uid == 0 && (st->st_mode & (S_IWGRP | S_IWOTH)) == 0;
}

/*
 * A memory limit on a cgroup we share, whoever set it, lets the caller
 * bring the OOM killer into it (fill a tmpfs from inside); with
 * oom_score_adj above -1000 we could be its choice, session and guard
 * alike.  Limited: 1; not (or no such controller here): 0; -1: error.
 */
static const struct {
	const char *file;
	const char *unlimited;		/* exact contents when not limited */
} sb_memory_limits[] = {
	{ "memory.max", "max\n" },
	{ "memory.high", "max\n" },
	{ "memory.oom.group", "0\n" },
	{ "memory.limit_in_bytes", "9223372036854771712\n" },
	{ "memory.memsw.limit_in_bytes", "9223372036854771712\n" },
};

static int
memory_limited(int dirfd)
{
	char buf[32];
	ssize_t n;
	size_t i;
	int fd;

	for (i = 0; i < sizeof(sb_memory_limits) / sizeof(sb_memory_limits[0]); i++) {
		fd = openat(dirfd, sb_memory_limits[i].file,
			    O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd == -1 && errno == ENOENT)
			continue;
		if (fd == -1)
			return -1;
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n < 0)
			return -1;
		buf[n] = '\0';
		if (strcmp(buf, sb_memory_limits[i].unlimited) != 0)
			return 1;
	}
	return 0;
}

/* 1: dir and its member files are root's alone (and, unless we are
 * immune to the OOM killer, it sets no memory limit); 0: not; -1: error. */
static int
cgroup_dir_root_only(int dirfd, int oom_immune)
{
	struct stat st;
	size_t i;
	int limited;

	if (fstat(dirfd, &st) == -1)
		return -1;
	if (!root_only(&st))
		return 0;
	limited = oom_immune ? 0 : memory_limited(dirfd);
	if (limited != 0)
		return limited == 1 ? 0 : -1;
	for (i = 0; i < sizeof(sb_member_files) / sizeof(sb_member_files[0]); i++) {
		if (fstatat(dirfd, sb_member_files[i], &st, AT_SYMLINK_NOFOLLOW) == -1) {
			if (errno == ENOENT)
				continue;
			return -1;
		}
		if (!root_only(&st))
			return 0;
	}
	return 1;
}

/* Every cgroup from path (relative to the mount) up to the mount's root is
 * root's alone?  1 yes, 0 no, -1 error. */
static int
cgroup_path_root_only(const char *mnt, const char *path, int oom_immune)
{
	char dir[PATH_MAX];
	char *slash;
	int fd, ok;

	if ((size_t)snprintf(dir, sizeof(dir), "%s%s", mnt, path) >= sizeof(dir)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	for (;;) {
		fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
		if (fd == -1)
			return -1;
		ok = cgroup_dir_root_only(fd, oom_immune);
		close(fd);
		if (ok != 1)
			return ok;
		if (strlen(dir) <= strlen(mnt))
			return 1;
		slash = strrchr(dir, '/');
		if (slash == NULL || slash < dir + strlen(mnt))
			return 1;
		*slash = '\0';
	}
}

/* Write value and a newline to the control file at path, in one write(2):
 * the kernel parses each write of a cgroup or proc file on its own. */
static int
write_number(const char *path, long value)
{
	char buf[24];
	int fd, len, rc;

	fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd == -1)
		return -1;
	len = snprintf(buf, sizeof(buf), "%ld\n", value);
	rc = write(fd, buf, (size_t)len) == len ? 0 : -1;
	if (close(fd) == -1)
		rc = -1;
	return rc;
}

/* Move this process into the root cgroup of the hierarchy mounted at mnt.
 * Root's cgroup.procs is root's: the caller cannot move us back (it would
 * need write access to the common ancestor, the root), and the root cgroup
 * has no cgroup.kill, cgroup.freeze or freezer.state. */
static int
move_to_root_cgroup(const char *mnt)
{
	char path[PATH_MAX];

	if ((size_t)snprintf(path, sizeof(path), "%s/cgroup.procs", mnt) >= sizeof(path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return write_number(path, (long)getpid());
}

/* Is every comma-separated name of want in the comma-separated list have? */
static int
options_have_all(const char *have, const char *want)
{
	const char *w = want, *h, *e;
	size_t n;

	while (*w) {
		n = strcspn(w, ",");
		for (h = have;; h = e + 1) {
			e = h + strcspn(h, ",");
			if ((size_t)(e - h) == n && strncmp(h, w, n) == 0)
				break;
			if (*e == '\0')
				return 0;
		}
		w += n;
		if (*w == ',')
			w++;
	}
	return 1;
}

/* Does a mountinfo line mount the hierarchy of a /proc/self/cgroup entry
 * with controllers ctl ("" for cgroup v2), at its root?  Fills mnt. */
static int
mount_of_hierarchy(char *line, const char *ctl, char *mnt, size_t mntlen)
{
	char *f[10], *sep, *save = NULL, *tok, *opt;
	int n = 0;

	sep = strstr(line, " - ");
	if (sep == NULL)
		return 0;
	*sep = '\0';
	for (tok = strtok_r(line, " ", &save); tok && n < 10;
	     tok = strtok_r(NULL, " ", &save))
		f[n++] = tok;
	/* f[3] is the mount's root within the hierarchy, f[4] the mount point */
	if (n < 5 || strcmp(f[3], "/") != 0)
		return 0;
	save = NULL;
	tok = strtok_r(sep + 3, " ", &save);		/* fstype */
	if (tok == NULL)
		return 0;
	if (ctl[0] == '\0') {
		if (strcmp(tok, "cgroup2") != 0)
			return 0;
	} else {
		if (strcmp(tok, "cgroup") != 0)
			return 0;
		(void)strtok_r(NULL, " ", &save);	/* source */
		opt = strtok_r(NULL, " \n", &save);	/* super options */
		if (opt == NULL || !options_have_all(opt, ctl))
			return 0;
	}
	/* mount points with spaces are escaped (\040): none of ours */
	if (strchr(f[4], '\\') != NULL || strlen(f[4]) >= mntlen)
		return 0;
	memcpy(mnt, f[4], strlen(f[4]) + 1);
	return 1;
}

/* Where is the hierarchy with controllers ctl mounted at its root? */
static int
find_hierarchy_mount(const char *ctl, char *mnt, size_t mntlen)
{
	char line[SB_MOUNTINFO_LINE];
	FILE *f = fopen("/proc/self/mountinfo", "re");
	int found = 0;

	if (f == NULL)
		return -1;
	while (!found && fgets(line, sizeof(line), f) != NULL)
		found = mount_of_hierarchy(line, ctl, mnt, mntlen);
	fclose(f);
	return found;
}

/* One line of /proc/self/cgroup ("ID:CONTROLLERS:PATH"): out of reach
 * already, or moved out to the root; else -1 with *what set. */
static int
leave_user_cgroup(char *line, int oom_immune, char *what, size_t whatlen)
{
	char mnt[PATH_MAX], *ctl, *path;
	int ok;

	ctl = strchr(line, ':');
	path = ctl ? strchr(ctl + 1, ':') : NULL;
	if (path == NULL)
		return 0;
	*path++ = '\0';
	ctl++;
	path[strcspn(path, "\n")] = '\0';
	if (strcmp(path, "/") == 0)
		return 0;
	snprintf(what, whatlen, "the cgroup %s (%s)", path,
		 *ctl ? ctl : "cgroup2");
	ok = find_hierarchy_mount(ctl, mnt, sizeof(mnt));
	if (ok <= 0) {
		/* Not mounted where we can see it: the caller, who sees the
		 * same mounts, could still mount cgroup2 in a namespace of its
		 * own; nothing proves the cgroup is out of its reach. */
		if (ok == 0)
			errno = ENOENT;
		return -1;
	}
	ok = cgroup_path_root_only(mnt, path, oom_immune);
	if (ok == 1)
		return 0;
	if (ok == -1 || move_to_root_cgroup(mnt) == -1)
		return -1;
	/* The root cgroup itself must be root's alone (a cgroup namespace's
	 * root could be a delegated cgroup). */
	ok = cgroup_path_root_only(mnt, "", oom_immune);
	if (ok != 1) {
		if (ok == 0)
			errno = EPERM;
		return -1;
	}
	return 0;
}

int
sb_leave_user_cgroups(int oom_immune, char *what, size_t whatlen)
{
	char line[SB_CGROUP_LINE];
	FILE *f = fopen("/proc/self/cgroup", "re");
	int rc = 0;

	if (f == NULL) {
		snprintf(what, whatlen, "/proc/self/cgroup");
		return -1;
	}
	while (rc == 0 && fgets(line, sizeof(line), f) != NULL)
		rc = leave_user_cgroup(line, oom_immune, what, whatlen);
	fclose(f);
	return rc;
}

/* ---- oom_score_adj ------------------------------------------------------------- */

static int
read_oom_score_adj(int *value)
{
	char buf[16] = "";
	ssize_t n;
	int fd;

	fd = open(SB_OOM_SCORE_ADJ, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0) {
		errno = EIO;
		return -1;
	}
	*value = atoi(buf);
	return 0;
}

/*
 * oom_score_adj survives the setuid exec: a caller's 1000 makes us the OOM
 * killer's first choice.  -1000 (never chosen) needs CAP_SYS_RESOURCE;
 * without it (a bounding set that lacks it) 0 is allowed down to the
 * inherited oom_score_adj_min, which only a privileged writer can raise.
 */
int
sb_reset_oom_score(int *immune)
{
	int v;

	if (write_number(SB_OOM_SCORE_ADJ, SB_OOM_IMMUNE) == -1 &&
	    (errno != EACCES || write_number(SB_OOM_SCORE_ADJ, 0) == -1))
		return -1;
	if (read_oom_score_adj(&v) == -1)
		return -1;
	if (v > 0) {
		errno = EPERM;
		return -1;
	}
	*immune = v == SB_OOM_IMMUNE;
	return 0;
}

/* ---- scheduling ------------------------------------------------------------ */

/*
 * SCHED_IDLE, nice 19 and the idle I/O class are inherited too, and would
 * let the caller's own load starve a flush indefinitely.  Back to the
 * defaults; the caller cannot change them afterwards (sched_setscheduler,
 * setpriority and ioprio_set on another process need matching uids).
 */
int
sb_reset_scheduling(void)
{
	struct sched_param sp = { .sched_priority = 0 };
	cpu_set_t all;
	int i;

	if (sched_setscheduler(0, SCHED_OTHER, &sp) == -1)
		return -1;
	errno = 0;
	if (setpriority(PRIO_PROCESS, 0, 0) == -1 ||
	    getpriority(PRIO_PROCESS, 0) != 0) {
		if (errno == 0)
			errno = EPERM;
		return -1;
	}
	/* class NONE, data 0: I/O priority follows the (now default) nice */
	if (syscall(SYS_ioprio_set, SB_IOPRIO_WHO_PROCESS, 0, 0) == -1)
		return -1;
	CPU_ZERO(&all);
	for (i = 0; i < CPU_SETSIZE; i++)
		CPU_SET(i, &all);
	if (sched_setaffinity(0, sizeof(all), &all) == -1)
		return -1;
	/* A huge timer slack would stretch every wait; 0 means the default. */
	return prctl(PR_SET_TIMERSLACK, 0, 0, 0, 0);
}
