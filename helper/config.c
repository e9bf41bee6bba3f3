/*
 * The policy file, $(SYSCONFDIR)/loopfd.conf.  PAM-free and polkit-free: one
 * root-owned file says who may use loopfd and what they may ask for.
 *
 *   # comment
 *   allow-users alice 1001        who may use loopfd (names or ids)
 *   allow-groups builders         ... or members of these groups
 *   max-devices-per-user 16       1..256
 *   max-devices 256               system-wide, 1..65536
 *   allow-grant yes|no            --grant (chown of /dev/loopN to the caller)
 *   allow-partscan yes|no
 *   allow-direct-io yes|no
 *   allow-block-devices yes|no    block devices as backing (not loop devices)
 *   allow-backing-fs fuse overlay ...  backing files on these filesystems too
 *
 * Without allow-users and allow-groups lines anyone who can run or reach
 * the helper is served.  Anything the parser does not understand makes the
 * whole file invalid: a typo in a security policy must not silently mean
 * "the default".
 */
#include "helper.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONFIG_MAX_SIZE	65536
#define CONFIG_MAX_LINE	1024

void policy_defaults(struct policy *p)
{
	memset(p, 0, sizeof(*p));
	p->max_per_user = 16;
	p->max_total = 256;
	p->allow_grant = 1;
	p->allow_partscan = 1;
	p->allow_direct_io = 1;
	p->allow_block_devices = 0;
}

struct parser {
	const char *path;
	unsigned line;
	char *err;
	size_t errlen;
	unsigned seen;		/* bit per scalar keyword: duplicates are errors */
};

__attribute__((format(printf, 2, 3)))
static int parse_error(struct parser *ps, const char *fmt, ...)
{
	char what[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	snprintf(ps->err, ps->errlen, "%s:%u: %s", ps->path, ps->line, what);
	return -1;
}

/* A decimal number without sign, leading junk or overflow. */
static int parse_number(const char *s, unsigned long max, unsigned long *out)
{
	char *end;
	unsigned long v;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || *end != '\0' || v > max)
		return -1;
	*out = v;
	return 0;
}

/*
 * Names are looked up in /etc/passwd and /etc/group themselves, never
 * through NSS: the helper is static, and NSS would dlopen modules (and a
 * second libc) into a setuid process, or ask a directory service whose
 * answer could change who may attach.  Use numeric ids for users that only
 * a directory service knows.  Both files start each line "name:x:id:".
 */
static int lookup_id(const char *file, const char *name, uint32_t *id)
{
	char line[CONFIG_MAX_LINE];
	size_t n = strlen(name);
	unsigned long v;
	char *end;
	FILE *f;
	int found = 0;

	if (parse_number(name, UINT32_MAX - 1, &v) == 0) {
		*id = (uint32_t)v;
		return 0;
	}
	f = fopen(file, "re");
	if (f == NULL)
		return -1;
	while (!found && fgets(line, sizeof(line), f) != NULL) {
		char *pw, *num;

		if (strncmp(line, name, n) != 0 || line[n] != ':')
			continue;
		pw = line + n + 1;
		num = strchr(pw, ':');
		if (num == NULL || *++num < '0' || *num > '9')
			continue;
		errno = 0;
		v = strtoul(num, &end, 10);
		if (errno == 0 && *end == ':' && v < UINT32_MAX) {
			*id = (uint32_t)v;
			found = 1;
		}
	}
	fclose(f);
	return found ? 0 : -1;
}

/* allow-users and allow-groups: names (from file) or numeric ids, into
 * ids[], at most POLICY_MAX_IDS in all. */
static int parse_ids(struct parser *ps, const char *key, const char *what,
		     const char *file, char **args, int nargs,
		     uint32_t *ids, size_t *n)
{
	int i;

	if (nargs == 0)
		return parse_error(ps, "%s needs at least one %s", key, what);
	for (i = 0; i < nargs; i++) {
		if (*n == POLICY_MAX_IDS)
			return parse_error(ps, "more than %d %ss", POLICY_MAX_IDS, what);
		if (lookup_id(file, args[i], &ids[*n]) < 0)
			return parse_error(ps, "unknown %s '%s' (not in %s; use a "
					   "numeric id)", what, args[i], file);
		(*n)++;
	}
	return 0;
}

static int parse_bool(struct parser *ps, const char *key, char **args,
		      int nargs, int *out)
{
	if (nargs != 1)
		return parse_error(ps, "%s takes one value: yes or no", key);
	if (strcmp(args[0], "yes") == 0)
		*out = 1;
	else if (strcmp(args[0], "no") == 0)
		*out = 0;
	else
		return parse_error(ps, "%s: '%s' is not yes or no", key, args[0]);
	return 0;
}

static int parse_limit(struct parser *ps, const char *key, char **args,
		       int nargs, unsigned long max, unsigned *out)
{
	unsigned long v;

	if (nargs != 1)
		return parse_error(ps, "%s takes one number", key);
	if (parse_number(args[0], max, &v) < 0 || v == 0)
		return parse_error(ps, "%s: '%s' is not a number from 1 to %lu",
				   key, args[0], max);
	*out = (unsigned)v;
	return 0;
}

/*
 * The filesystems a backing file may lie on.  LOOP_CONFIGURE fsyncs the
 * backing file while it holds the device's lock and the device still looks
 * free, so every attacher on the machine that LOOP_CTL_GET_FREE sends there
 * (root's losetup too) waits for that fsync (KERNEL-FACTS.md).  Allowed
 * without a policy line: filesystems whose fsync no user can make wait.
 * ext4's takes no lock a writer holds across a page fault (helper-20: a
 * write whose source buffer is an mmap of a stalled FUSE file held btrfs's
 * fsync, not ext4's); tmpfs and ramfs have nothing to write; iso9660,
 * squashfs and erofs cannot be written.  The others only where the policy
 * names them: FUSE waits for a user-space server, which any user can run;
 * overlayfs and ecryptfs pass the fsync to a layer a user can put on FUSE;
 * network filesystems wait for their server; btrfs, and the filesystems
 * whose fsync is the generic one (vfat, exfat...), take the inode lock,
 * which a writer holds while its source buffer faults; the rest were not
 * measured.  A type not in this table is refused.
 */
struct fs_kind {
	const char *name;
	unsigned long magic;		/* statfs f_type */
	int local;			/* allowed without allow-backing-fs */
};

static const struct fs_kind fs_kinds[] = {
	{ "ext4", EXT4_SUPER_MAGIC, 1 },	/* ext2, ext3 and ext4 */
	{ "tmpfs", TMPFS_MAGIC, 1 },	/* devtmpfs too: block device nodes */
	{ "ramfs", RAMFS_MAGIC, 1 },
	{ "iso9660", ISOFS_SUPER_MAGIC, 1 },
	{ "squashfs", SQUASHFS_MAGIC, 1 },
	{ "erofs", EROFS_SUPER_MAGIC_V1, 1 },
	{ "xfs", XFS_SUPER_MAGIC, 0 },
	{ "btrfs", BTRFS_SUPER_MAGIC, 0 },
	{ "f2fs", F2FS_SUPER_MAGIC, 0 },
	{ "bcachefs", 0xCA451A4E, 0 },	/* not in linux/magic.h */
	{ "zfs", 0x2FC12FC1, 0 },		/* out of tree */
	{ "jfs", 0x3153464A, 0 },		/* not in linux/magic.h */
	{ "nilfs2", NILFS_SUPER_MAGIC, 0 },
	{ "vfat", MSDOS_SUPER_MAGIC, 0 },
	{ "exfat", EXFAT_SUPER_MAGIC, 0 },
	{ "ntfs3", 0x7366746E, 0 },	/* not in linux/magic.h */
	{ "hfsplus", 0x482B, 0 },		/* not in linux/magic.h */
	{ "udf", UDF_SUPER_MAGIC, 0 },
	{ "fuse", FUSE_SUPER_MAGIC, 0 },	/* fuseblk and virtiofs too */
	{ "overlay", OVERLAYFS_SUPER_MAGIC, 0 },
	{ "ecryptfs", ECRYPTFS_SUPER_MAGIC, 0 },
	{ "nfs", NFS_SUPER_MAGIC, 0 },
	{ "cifs", CIFS_SUPER_MAGIC, 0 },
	{ "smb2", SMB2_SUPER_MAGIC, 0 },
	{ "9p", V9FS_MAGIC, 0 },		/* its server chooses f_type */
	{ "ceph", CEPH_SUPER_MAGIC, 0 },
};

#define FS_KINDS	(sizeof(fs_kinds) / sizeof(fs_kinds[0]))

int policy_allows_fs(const struct policy *p, unsigned long f_type,
		     const char **name)
{
	size_t i;

	*name = NULL;
	for (i = 0; i < FS_KINDS; i++) {
		if (fs_kinds[i].magic != f_type)
			continue;
		*name = fs_kinds[i].name;
		return fs_kinds[i].local || (p->backing_fs & (1u << i)) != 0;
	}
	return 0;
}

static void policy_only_names(char *buf, size_t cap)
{
	size_t i, len = 0;

	buf[0] = '\0';
	for (i = 0; i < FS_KINDS && len < cap; i++)
		if (!fs_kinds[i].local)
			len += (size_t)snprintf(buf + len, cap - len, "%s%s",
						len ? " " : "", fs_kinds[i].name);
}

static int parse_backing_fs(struct parser *ps, const char *key, char **args,
			    int nargs, uint32_t *out)
{
	char names[256];
	size_t i;
	int a;

	if (nargs == 0)
		return parse_error(ps, "%s takes one or more filesystem names", key);
	for (a = 0; a < nargs; a++) {
		for (i = 0; i < FS_KINDS; i++)
			if (strcmp(args[a], fs_kinds[i].name) == 0)
				break;
		if (i < FS_KINDS && fs_kinds[i].local)
			return parse_error(ps, "%s: '%s' is local, always allowed",
					   key, args[a]);
		if (i == FS_KINDS) {
			policy_only_names(names, sizeof(names));
			return parse_error(ps, "%s: '%s' is not one of: %s", key,
					   args[a], names);
		}
		*out |= 1u << i;
	}
	return 0;
}

enum keyword {
	KW_USERS, KW_GROUPS, KW_PER_USER, KW_TOTAL, KW_GRANT, KW_PARTSCAN,
	KW_DIRECT_IO, KW_BLOCK_DEVICES, KW_BACKING_FS, KW_COUNT
};

static const char *const keywords[KW_COUNT] = {
	[KW_USERS] = "allow-users",
	[KW_GROUPS] = "allow-groups",
	[KW_PER_USER] = "max-devices-per-user",
	[KW_TOTAL] = "max-devices",
	[KW_GRANT] = "allow-grant",
	[KW_PARTSCAN] = "allow-partscan",
	[KW_DIRECT_IO] = "allow-direct-io",
	[KW_BLOCK_DEVICES] = "allow-block-devices",
	[KW_BACKING_FS] = "allow-backing-fs",
};

static int parse_directive(struct parser *ps, char **words, int nwords,
			   struct policy *p)
{
	char **args = words + 1;
	int nargs = nwords - 1;
	int kw;

	for (kw = 0; kw < KW_COUNT; kw++)
		if (strcmp(words[0], keywords[kw]) == 0)
			break;
	if (kw == KW_COUNT)
		return parse_error(ps, "unknown keyword '%s'", words[0]);
	if (kw != KW_USERS && kw != KW_GROUPS && kw != KW_BACKING_FS) {
		if (ps->seen & (1u << kw))
			return parse_error(ps, "%s given twice", words[0]);
		ps->seen |= 1u << kw;
	}
	switch (kw) {
	case KW_USERS:
		p->restricted = 1;
		return parse_ids(ps, words[0], "user", "/etc/passwd", args,
				 nargs, p->users, &p->nusers);
	case KW_GROUPS:
		p->restricted = 1;
		return parse_ids(ps, words[0], "group", "/etc/group", args,
				 nargs, p->groups, &p->ngroups);
	case KW_PER_USER:
		return parse_limit(ps, words[0], args, nargs,
				   POLICY_MAX_PER_USER, &p->max_per_user);
	case KW_TOTAL:
		return parse_limit(ps, words[0], args, nargs,
				   POLICY_MAX_TOTAL, &p->max_total);
	case KW_GRANT:
		return parse_bool(ps, words[0], args, nargs, &p->allow_grant);
	case KW_PARTSCAN:
		return parse_bool(ps, words[0], args, nargs, &p->allow_partscan);
	case KW_DIRECT_IO:
		return parse_bool(ps, words[0], args, nargs, &p->allow_direct_io);
	case KW_BLOCK_DEVICES:
		return parse_bool(ps, words[0], args, nargs,
				  &p->allow_block_devices);
	default:
		return parse_backing_fs(ps, words[0], args, nargs,
					&p->backing_fs);
	}
}

/* Split line (modified in place) into words; '#' starts a comment. */
static int split_words(struct parser *ps, char *line, char **words, int max)
{
	int n = 0;
	char *save = NULL, *w;
	char *hash = strchr(line, '#');

	if (hash)
		*hash = '\0';
	for (w = strtok_r(line, " \t\r", &save); w; w = strtok_r(NULL, " \t\r", &save)) {
		if (n == max)
			return parse_error(ps, "too many words");
		words[n++] = w;
	}
	return n;
}

int config_parse(const char *text, size_t len, const char *path,
		 struct policy *p, char *err, size_t errlen)
{
	struct parser ps = { .path = path, .err = err, .errlen = errlen };
	char line[CONFIG_MAX_LINE + 1];
	char *words[POLICY_MAX_IDS + 2];
	size_t pos = 0, end;
	int n;

	policy_defaults(p);
	while (pos < len) {
		ps.line++;
		for (end = pos; end < len && text[end] != '\n'; end++)
			;
		if (end - pos > CONFIG_MAX_LINE)
			return parse_error(&ps, "line longer than %d bytes",
					   CONFIG_MAX_LINE);
		if (memchr(text + pos, '\0', end - pos) != NULL)
			return parse_error(&ps, "NUL byte in line");
		memcpy(line, text + pos, end - pos);
		line[end - pos] = '\0';
		pos = end + 1;
		n = split_words(&ps, line, words, POLICY_MAX_IDS + 2);
		if (n < 0)
			return -1;
		if (n > 0 && parse_directive(&ps, words, n, p) < 0)
			return -1;
	}
	if (p->max_per_user > p->max_total) {
		ps.line = 0;
		return parse_error(&ps, "max-devices-per-user (%u) exceeds max-devices (%u)",
				   p->max_per_user, p->max_total);
	}
	return 0;
}

/* The checks a root-trusted file must pass before its contents mean
 * anything: anyone who can write it can grant themselves devices. */
static int check_config_file(int fd, const char *path, char *err, size_t errlen)
{
	struct stat st;

	if (fstat(fd, &st) < 0) {
		snprintf(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		return -1;
	}
	if (st.st_uid != 0) {
		snprintf(err, errlen, "%s: owned by uid %u, must be owned by root",
			 path, (unsigned)st.st_uid);
		return -1;
	}
	if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		snprintf(err, errlen, "%s: mode %04o is group- or world-writable",
			 path, (unsigned)(st.st_mode & 07777));
		return -1;
	}
	if (st.st_size > CONFIG_MAX_SIZE) {
		snprintf(err, errlen, "%s: larger than %d bytes", path, CONFIG_MAX_SIZE);
		return -1;
	}
	return 0;
}

/*
 * Whoever can replace the file, or a directory on its path, writes the
 * policy.  Every directory from the file's up to / must be root's and not
 * group- or world-writable, unless sticky: in a root-owned sticky directory
 * (/tmp) only root can rename or remove a root-owned entry.  A symlink on
 * the way is refused rather than followed (the directories behind it would
 * need the same checks).  Checked before the file is opened, so that a file
 * missing from an untrusted directory does not mean "the defaults".
 */
static int check_config_dirs(const char *path, char *err, size_t errlen)
{
	char dir[PATH_MAX];
	struct stat st;
	char *slash;

	if (path[0] != '/' || strlen(path) >= sizeof(dir)) {
		snprintf(err, errlen, "%s: not an absolute path", path);
		return -1;
	}
	memcpy(dir, path, strlen(path) + 1);
	while ((slash = strrchr(dir, '/')) != NULL) {
		slash[slash == dir ? 1 : 0] = '\0';
		if (lstat(dir, &st) < 0) {
			snprintf(err, errlen, "%s: cannot check directory %s: %s",
				 path, dir, strerror(errno));
			return -1;
		}
		if (!S_ISDIR(st.st_mode) || st.st_uid != 0 ||
		    ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX))) {
			snprintf(err, errlen, "%s: directory %s (%s, uid %u, mode "
				 "%04o) must be a directory owned by root and not "
				 "group- or world-writable unless sticky", path, dir,
				 S_ISLNK(st.st_mode) ? "a symlink" :
				 S_ISDIR(st.st_mode) ? "directory" : "not a directory",
				 (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
			return -1;
		}
		if (strcmp(dir, "/") == 0)
			break;
	}
	return 0;
}

static ssize_t read_all(int fd, char *buf, size_t cap)
{
	size_t got = 0;
	ssize_t n;

	while (got < cap) {
		n = read(fd, buf + got, cap - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

int config_load(const char *path, struct policy *p, char *err, size_t errlen)
{
	static char text[CONFIG_MAX_SIZE + 1];
	ssize_t len;
	int fd;

	if (check_config_dirs(path, err, errlen) < 0)
		return -1;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
	if (fd < 0 && errno == ENOENT) {
		policy_defaults(p);
		return 0;
	}
	if (fd < 0) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	if (check_config_file(fd, path, err, errlen) < 0) {
		close(fd);
		return -1;
	}
	len = read_all(fd, text, sizeof(text));
	if (len < 0)
		snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
	close(fd);
	if (len < 0)
		return -1;
	if ((size_t)len > CONFIG_MAX_SIZE) {
		snprintf(err, errlen, "%s: larger than %d bytes", path, CONFIG_MAX_SIZE);
		return -1;
	}
	if (config_parse(text, (size_t)len, path, p, err, errlen) < 0)
		return CONFIG_ERR_CONTENTS;
	return 0;
}

static int gid_listed(const struct policy *p, gid_t g)
{
	size_t i;

	for (i = 0; i < p->ngroups; i++)
		if (p->groups[i] == g)
			return 1;
	return 0;
}

int policy_allows(const struct policy *p, const struct caller *c)
{
	size_t i;
	int g;

	if (!p->restricted || c->uid == 0)
		return 1;
	for (i = 0; i < p->nusers; i++)
		if (p->users[i] == c->uid)
			return 1;
	if (gid_listed(p, c->gid))
		return 1;
	for (g = 0; g < c->ngroups; g++)
		if (gid_listed(p, c->groups[g]))
			return 1;
	return 0;
}
