/*
 * Landlock: after this, the helper can open nothing outside /dev, and
 * inside /dev only read, write, list and issue device ioctls.  uid 0 with
 * CAP_SYS_ADMIN is still a lot of authority over files owned by root; this
 * takes the filesystem away from it.  Raw syscalls: glibc has no wrappers,
 * and the installed <linux/landlock.h> (6.1) lacks the newer access bits.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/landlock.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sandbox.h"

/* Access rights newer than the installed header; values are kernel ABI. */
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)	/* ABI 3 */
#endif
#ifndef LANDLOCK_ACCESS_FS_IOCTL_DEV
#define LANDLOCK_ACCESS_FS_IOCTL_DEV (1ULL << 15)	/* ABI 5 */
#endif
#ifndef LANDLOCK_ACCESS_NET_BIND_TCP
#define LANDLOCK_ACCESS_NET_BIND_TCP (1ULL << 0)	/* ABI 4 */
#define LANDLOCK_ACCESS_NET_CONNECT_TCP (1ULL << 1)
#endif
#ifndef LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET
#define LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0)	/* ABI 6 */
#define LANDLOCK_SCOPE_SIGNAL (1ULL << 1)
#endif

/* The ruleset attribute as of ABI 6.  Older kernels accept the longer
 * struct as long as the fields they do not know are zero. */
struct sb_ruleset_attr {
	uint64_t handled_access_fs;
	uint64_t handled_access_net;
	uint64_t scoped;
};

/* Every filesystem right ABI 1 knows. */
#define SB_FS_ABI1 (LANDLOCK_ACCESS_FS_EXECUTE | \
	LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_READ_FILE | \
	LANDLOCK_ACCESS_FS_READ_DIR | LANDLOCK_ACCESS_FS_REMOVE_DIR | \
	LANDLOCK_ACCESS_FS_REMOVE_FILE | LANDLOCK_ACCESS_FS_MAKE_CHAR | \
	LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG | \
	LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_MAKE_FIFO | \
	LANDLOCK_ACCESS_FS_MAKE_BLOCK | LANDLOCK_ACCESS_FS_MAKE_SYM)

/* Beneath /dev: open device nodes for reading and writing (loop-control
 * and loopN), list directories (nothing secret in /dev; lets the helper
 * look for nodes), truncate (ABI 3+: an O_TRUNC open of a device node is a
 * no-op, but the kernel still checks the right), and device ioctls (ABI
 * 5+): without IOCTL_DEV a domain that handles it gets EACCES from every
 * LOOP_* and BLK* ioctl on a node opened after restrict_self. */
#define SB_DEV_ABI1 (LANDLOCK_ACCESS_FS_READ_FILE | \
	LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_READ_DIR)

static int
landlock_abi(void)
{
	return (int)syscall(SYS_landlock_create_ruleset, NULL, 0,
	    LANDLOCK_CREATE_RULESET_VERSION);
}

/* Handle every right the running kernel knows, so that each one is denied
 * unless the /dev rule grants it.  A right left unhandled is allowed
 * everywhere. */
static struct sb_ruleset_attr
ruleset_for(int abi)
{
	struct sb_ruleset_attr attr = { .handled_access_fs = SB_FS_ABI1 };

	if (abi >= 2)
		attr.handled_access_fs |= LANDLOCK_ACCESS_FS_REFER;
	if (abi >= 3)
		attr.handled_access_fs |= LANDLOCK_ACCESS_FS_TRUNCATE;
	/* No rule grants TCP: the helper opens no sockets after this point
	 * (seccomp kills socket() anyway); handling it costs nothing. */
	if (abi >= 4)
		attr.handled_access_net = LANDLOCK_ACCESS_NET_BIND_TCP |
		    LANDLOCK_ACCESS_NET_CONNECT_TCP;
	if (abi >= 5)
		attr.handled_access_fs |= LANDLOCK_ACCESS_FS_IOCTL_DEV;
	/* No signals to processes outside this domain (also covers SIGIO
	 * aimed elsewhere with F_SETOWN, which seccomp's fcntl rule allows),
	 * no connecting to abstract unix sockets outside it. */
	if (abi >= 6)
		attr.scoped = LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET |
		    LANDLOCK_SCOPE_SIGNAL;
	return attr;
}

static uint64_t
dev_rights_for(int abi)
{
	uint64_t rights = SB_DEV_ABI1;

	if (abi >= 3)
		rights |= LANDLOCK_ACCESS_FS_TRUNCATE;
	if (abi >= 5)
		rights |= LANDLOCK_ACCESS_FS_IOCTL_DEV;
	return rights;
}

static int
add_dev_rule(int ruleset, uint64_t rights)
{
	struct landlock_path_beneath_attr pb = { .allowed_access = rights };
	int dev, rc, saved;

	/* O_PATH: the rule needs an anchor, not read access to /dev. */
	dev = open("/dev", O_PATH | O_CLOEXEC | O_DIRECTORY);
	if (dev == -1)
		return -1;
	pb.parent_fd = dev;
	rc = (int)syscall(SYS_landlock_add_rule, ruleset,
	    LANDLOCK_RULE_PATH_BENEATH, &pb, 0);
	saved = errno;
	close(dev);
	errno = saved;
	return rc == -1 ? -1 : 0;
}

int
sb_landlock_dev_only(void)
{
	struct sb_ruleset_attr attr;
	int abi, ruleset, rc, saved;

	abi = landlock_abi();
	if (abi == -1) {
		/* Not built in, or disabled at boot (lsm=): the caller logs
		 * and relies on seccomp and capabilities alone. */
		if (errno == ENOSYS || errno == EOPNOTSUPP)
			return 1;
		return -1;
	}
	attr = ruleset_for(abi);
	ruleset = (int)syscall(SYS_landlock_create_ruleset, &attr,
	    sizeof(attr), 0);
	if (ruleset == -1)
		return -1;
	rc = add_dev_rule(ruleset, dev_rights_for(abi));
	/* restrict_self needs no_new_privs (sb_narrow_caps set it) or
	 * CAP_SYS_ADMIN. */
	if (rc == 0)
		rc = (int)syscall(SYS_landlock_restrict_self, ruleset, 0);
	saved = errno;
	close(ruleset);
	errno = saved;
	return rc == -1 ? -1 : 0;
}
