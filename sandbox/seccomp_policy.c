/*
 * seccomp_policy: the helper's syscall allowlists, one per stage, compiled
 * into BPF at build time.  This is a build tool, not part of the helper:
 * it runs libseccomp's rule compiler and prints the two programs as C
 * arrays ($(O)/seccomp_filters.h), which sandbox/seccomp.c loads with one
 * seccomp() call each.  The setuid helper so carries no rule compiler
 * (less code running as root before the filter is in place) and does not
 * spend ~200 us of every session start (measured, make bench) building the
 * same two programs again.
 *
 * The programs are for the architecture the helper is built for, named on
 * the command line (`seccomp_policy aarch64`; default: the build machine's
 * own).  This tool always runs on the build machine, with its libseccomp:
 * libseccomp can emit a filter for an architecture other than its own, and
 * translates each syscall by name to that architecture's number.  What
 * differs between architectures is spelled out where it matters:
 *  - syscall numbers: translated by libseccomp, never taken from this
 *    machine's headers;
 *  - syscalls an architecture lacks: aarch64 (like every architecture after
 *    2012) has no poll, open, stat or other legacy calls, only ppoll,
 *    openat, newfstatat; such entries are left out of that architecture's
 *    program (listed in a comment in the output), since its libc never
 *    makes them;
 *  - open(2) flags: O_NOFOLLOW and O_LARGEFILE have different values on
 *    x86-64 and arm64 (asm/fcntl.h), so the openat mask is per architecture
 *    (struct sb_arch below; the two swap values, so today's mask comes out
 *    the same on both, but only because both flags are allowed);
 *  - ioctl request numbers, PROT_EXEC and the seccomp() operation are the
 *    same on both (the generic _IOC encoding, asm-generic/mman-common.h).
 *
 * Anything not listed kills the whole process (SIGSYS), never returns an
 * error: a compromised helper must not get to probe, and a helper bug that
 * reaches an unexpected syscall is better stopped than half-handled.
 *
 * Only the target's own ABI is allowed.  On x86-64 a process can also
 * enter the kernel through the i386 ABI (int $0x80: different numbers, so
 * a "deny socket" rule for x86-64 would not see i386 socketcall) and the
 * x32 ABI (x86-64 arch value, numbers with bit 30 set).  libseccomp 2.5's
 * filter for a context holding only x86_64 sends a wrong arch value to the
 * BADARCH action and, for the x86_64 arch, any number >= 0x40000000
 * (except -1) to the BADARCH action too; both are KILL_PROCESS here.
 * tests/integration/t_seccomp.sh checks both entry points.  On arm64 the
 * other entry point is 32-bit ARM (compat, AUDIT_ARCH_ARM): a wrong arch
 * value, killed the same way.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/fs.h>
#include <linux/futex.h>
#include <linux/loop.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* openat in a stage: not at all, or with the flags below and read-write or
 * read-only access; SETUP (the listener, for its sessions' set-up) adds
 * O_CREAT (the slot file), O_DIRECTORY and O_PATH (Landlock's rules, the
 * cgroup checks). */
enum sb_open { SB_OPEN_NONE, SB_OPEN_RDWR, SB_OPEN_RDONLY, SB_OPEN_SETUP };

/* A stage: plain syscalls, the ioctl requests allowed, and whether openat
 * is allowed (with restricted flags).  mmap/mprotect without PROT_EXEC are
 * in every stage; malloc and stdio need them. */
struct sb_stage {
	const int *syscalls;
	size_t nsyscalls;
	const unsigned long *ioctls;
	size_t nioctls;
	enum sb_open open;		/* openat allowed, and with which access */
	int allow_stacking;
	int allow_fork;			/* clone, with fork()'s flags only */
	int allow_threads;		/* pthread_create and pthread_join */
	const struct sb_stage *const *includes;	/* stages allowed as well */
	size_t nincludes;
};

#define SB_COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* The architectures programs can be made for, and their open(2) flags
 * that differ (the kernel's asm/fcntl.h; this machine's O_NOFOLLOW would be
 * arm64's O_DIRECTORY... so they are never taken from its headers).
 * O_LARGEFILE: glibc defines it as 0 on 64-bit targets, but a library
 * passing the kernel's bit is harmless (the kernel forces it on for 64-bit
 * processes anyway). */
struct sb_arch {
	const char *name;		/* as seccomp_arch_resolve_name() knows it */
	unsigned long o_nofollow, o_largefile, o_directory;
};

static const struct sb_arch sb_arches[] = {
	{ "x86_64", 0400000, 0100000, 0200000 },
	{ "aarch64", 0100000, 0400000, 040000 },
};

/* The table checked against the headers of the machine this is built on
 * (each architecture's values are so checked where it builds natively). */
#if defined(__x86_64__)
_Static_assert(O_NOFOLLOW == 0400000 && O_DIRECTORY == 0200000, "x86_64 O_NOFOLLOW");
#elif defined(__aarch64__)
_Static_assert(O_NOFOLLOW == 0100000 && O_DIRECTORY == 040000, "aarch64 O_NOFOLLOW");
#endif

/* Flags with the same value on every architecture above
 * (asm-generic/fcntl.h; x86 uses the generic values for these). */
#define SB_O_ACCMODE	03
#define SB_O_NOCTTY	0400
#define SB_O_NONBLOCK	04000
#define SB_O_CLOEXEC	02000000
#define SB_O_CREAT	0100
#define SB_O_PATH	010000000

/* openat flags the helper may use: access mode and harmless modifiers.
 * Everything else is killed: O_CREAT/O_TMPFILE (make files), O_TRUNC
 * (destroy one), O_PATH/O_DIRECTORY (walk the tree), O_APPEND, O_DIRECT,
 * O_SYNC... none has a use in serving loop devices. */
_Static_assert(O_ACCMODE == SB_O_ACCMODE && O_NOCTTY == SB_O_NOCTTY &&
	       O_NONBLOCK == SB_O_NONBLOCK && O_CLOEXEC == SB_O_CLOEXEC &&
	       O_CREAT == SB_O_CREAT && O_PATH == SB_O_PATH,
	       "generic open flags");


static unsigned long
open_flags(const struct sb_arch *a, enum sb_open o)
{
	unsigned long f = SB_O_CLOEXEC | SB_O_NOCTTY | SB_O_NONBLOCK |
			  a->o_nofollow | a->o_largefile;

	/* O_RDONLY is 0: without O_ACCMODE no access bit is allowed. */
	if (o == SB_OPEN_SETUP)
		return f | SB_O_ACCMODE | SB_O_CREAT | a->o_directory | SB_O_PATH;
	return o == SB_OPEN_RDWR ? f | SB_O_ACCMODE : f;
}

/* restart_syscall is in both lists because the kernel itself issues it: a
 * nanosleep, clock_nanosleep or timed poll interrupted by a stop signal
 * (SIGSTOP, or SIGTSTP from a terminal) resumes through it after SIGCONT.
 * Without it, stopping and continuing the helper kills it mid-session.  It
 * only resumes a syscall this filter already let through. */
static const int serve_syscalls[] = {
	SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(writev),
	SCMP_SYS(recvmsg), SCMP_SYS(sendmsg),
	SCMP_SYS(poll), SCMP_SYS(ppoll),
	SCMP_SYS(close),
	SCMP_SYS(fstat), SCMP_SYS(newfstatat), SCMP_SYS(statx),
	SCMP_SYS(fstatfs),
	SCMP_SYS(fcntl),
	SCMP_SYS(fsync), SCMP_SYS(fdatasync), SCMP_SYS(sync_file_range),
	SCMP_SYS(fchown), SCMP_SYS(fchmod), SCMP_SYS(fremovexattr),
	SCMP_SYS(clock_gettime), SCMP_SYS(clock_nanosleep),
	SCMP_SYS(nanosleep),
	SCMP_SYS(getpid), SCMP_SYS(gettid),
	SCMP_SYS(brk), SCMP_SYS(munmap), SCMP_SYS(mremap),
	SCMP_SYS(madvise),
	SCMP_SYS(rt_sigreturn), SCMP_SYS(rt_sigprocmask),
	SCMP_SYS(restart_syscall),
	SCMP_SYS(exit), SCMP_SYS(exit_group),
	SCMP_SYS(getrandom),
};

/* Stored as unsigned long, the type glibc's ioctl() passes: BLKGETDISKSEQ
 * (_IOR(0x12, 128, __u64) = 0x80081280) has bit 31 set and, through an
 * int, would become 0xffffffff80081280 and never match the real call. */
static const unsigned long serve_ioctls[] = {
	LOOP_CTL_GET_FREE, LOOP_CTL_ADD, LOOP_CTL_REMOVE,
	LOOP_CONFIGURE,
	LOOP_GET_STATUS64, LOOP_CLR_FD,
	BLKFLSBUF, BLKGETDISKSEQ, BLKGETSIZE64,
};

static const int teardown_syscalls[] = {
	SCMP_SYS(write), SCMP_SYS(writev),
	SCMP_SYS(close),
	SCMP_SYS(fsync), SCMP_SYS(fdatasync), SCMP_SYS(sync_file_range),
	SCMP_SYS(fchown), SCMP_SYS(fchmod), SCMP_SYS(fremovexattr),
	SCMP_SYS(fstat), SCMP_SYS(newfstatat),
	SCMP_SYS(fcntl),
	SCMP_SYS(clock_gettime), SCMP_SYS(clock_nanosleep),
	SCMP_SYS(nanosleep),
	SCMP_SYS(getpid),
	SCMP_SYS(brk), SCMP_SYS(munmap), SCMP_SYS(madvise),
	/* glibc's malloc asks getrandom for its first heap's randomization:
	 * a first malloc after this stage would otherwise be killed. */
	SCMP_SYS(getrandom),
	SCMP_SYS(rt_sigreturn),
	SCMP_SYS(restart_syscall),
	SCMP_SYS(exit), SCMP_SYS(exit_group),
};

static const unsigned long teardown_ioctls[] = {
	BLKFLSBUF, LOOP_CLR_FD, LOOP_GET_STATUS64,
	BLKGETDISKSEQ,
};

/*
 * The guard (helper/guard.c): reads its parent's notes from a pipe; once
 * the parent is gone, gives granted nodes back to root by path (lstat,
 * fchownat, fchmodat, lremovexattr: the node may be mode 0000 by then, and
 * root without CAP_DAC_OVERRIDE could not open it) and watches the devices
 * until they detach, re-arming autoclear through a read-only open (LOOP_CLR_FD
 * with a second fd open: it only sets AUTOCLEAR) and finding a detach by
 * the binding's sysfs directory (stat).
 */
static const int guard_syscalls[] = {
	SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(writev),
	SCMP_SYS(close),
	SCMP_SYS(fstat), SCMP_SYS(newfstatat),
	SCMP_SYS(fchownat), SCMP_SYS(fchmodat), SCMP_SYS(lremovexattr),
	SCMP_SYS(fcntl),
	SCMP_SYS(clock_gettime), SCMP_SYS(clock_nanosleep),
	SCMP_SYS(nanosleep),
	SCMP_SYS(getpid),
	SCMP_SYS(brk), SCMP_SYS(munmap), SCMP_SYS(madvise),
	SCMP_SYS(getrandom),
	SCMP_SYS(rt_sigreturn),
	SCMP_SYS(restart_syscall),
	SCMP_SYS(exit), SCMP_SYS(exit_group),
};

static const unsigned long guard_ioctls[] = {
	LOOP_CLR_FD,
};

/*
 * The daemon's listener, and what its session children do before their own
 * stages are loaded (filters stack: every later stage's calls must pass
 * this one too, so it includes them).  What it takes away is everything
 * else: execve, new sockets, bind/connect, mount, ptrace, bpf, keyrings...
 * fork is clone with exactly fork()'s flags (allow_fork); accept4, the peer checks,
 * wait4, the SIGTERM handler and unlink of the socket are the listener's;
 * file opens (policy, /etc/passwd, slot file), mkdir of the run directory,
 * capabilities, Landlock, the guard's pipe and fork, and seccomp are the
 * session's set-up.
 */
static const int listener_syscalls[] = {
	SCMP_SYS(accept4), SCMP_SYS(getsockopt), SCMP_SYS(setsockopt),
	SCMP_SYS(wait4),
	SCMP_SYS(gettid), SCMP_SYS(set_robust_list),
	SCMP_SYS(rt_sigaction), SCMP_SYS(rt_sigprocmask), SCMP_SYS(rt_sigreturn),
	SCMP_SYS(unlink), SCMP_SYS(unlinkat),
	SCMP_SYS(lseek), SCMP_SYS(mkdir), SCMP_SYS(mkdirat), SCMP_SYS(pipe2),
	SCMP_SYS(prctl), SCMP_SYS(capget), SCMP_SYS(capset),
	SCMP_SYS(landlock_create_ruleset), SCMP_SYS(landlock_add_rule),
	SCMP_SYS(landlock_restrict_self),
	SCMP_SYS(mremap),
};

static const struct sb_stage serve_stage = {
	.syscalls = serve_syscalls, .nsyscalls = SB_COUNT(serve_syscalls),
	.ioctls = serve_ioctls, .nioctls = SB_COUNT(serve_ioctls),
	.open = SB_OPEN_RDWR,
	/* The teardown filter is loaded from inside this one. */
	.allow_stacking = 1,
	/* A batch binds and flushes on threads (helper/threads.c). */
	.allow_threads = 1,
};

static const struct sb_stage teardown_stage = {
	.syscalls = teardown_syscalls,
	.nsyscalls = SB_COUNT(teardown_syscalls),
	.ioctls = teardown_ioctls, .nioctls = SB_COUNT(teardown_ioctls),
	/* Finding out whether a device released busy has detached means
	 * opening its node again, read-only. */
	.open = SB_OPEN_RDONLY,
	.allow_stacking = 0,
};

static const struct sb_stage guard_stage = {
	.syscalls = guard_syscalls, .nsyscalls = SB_COUNT(guard_syscalls),
	.ioctls = guard_ioctls, .nioctls = SB_COUNT(guard_ioctls),
	/* the watch's read-only probe opens, and /dev/null for stdio */
	.open = SB_OPEN_RDONLY,
	.allow_stacking = 0,
};

static const struct sb_stage *const listener_includes[] = {
	&serve_stage, &teardown_stage, &guard_stage,
};

/* Set-up opens (SB_OPEN_SETUP): still no O_TRUNC, O_APPEND, O_TMPFILE.
 * The session's serve stage narrows opens again. */
static const struct sb_stage listener_stage = {
	.syscalls = listener_syscalls, .nsyscalls = SB_COUNT(listener_syscalls),
	.ioctls = NULL, .nioctls = 0,
	.open = SB_OPEN_SETUP,
	.allow_stacking = 1,
	.allow_fork = 1,
	.includes = listener_includes, .nincludes = SB_COUNT(listener_includes),
};

/* Argument comparisons, spelled out rather than through SCMP_A<n>(), whose
 * two-value form leaves datum_b to an implicit zero that clang warns about
 * (-Wmissing-field-initializers). */
static struct scmp_arg_cmp
arg_equals(unsigned int arg, scmp_datum_t value)
{
	struct scmp_arg_cmp c = {
		.arg = arg, .op = SCMP_CMP_EQ, .datum_a = value, .datum_b = 0,
	};

	return c;
}

/* (argument & mask) == 0: none of the bits in mask set. */
static struct scmp_arg_cmp
arg_lacks_bits(unsigned int arg, scmp_datum_t mask)
{
	struct scmp_arg_cmp c = {
		.arg = arg, .op = SCMP_CMP_MASKED_EQ, .datum_a = mask,
		.datum_b = 0,
	};

	return c;
}

/*
 * The rule helpers below return what libseccomp returns: 0, or -errno.
 */

/* The syscalls of a stage that the target architecture has.  A name it
 * lacks (poll on aarch64) is left out and listed in the output; a name no
 * architecture knows is an error.  nrs[] are this machine's numbers (what
 * SCMP_SYS() gives and libseccomp expects): it translates them by name. */
static int
allow_syscalls(scmp_filter_ctx ctx, uint32_t arch, const int *nrs, size_t n)
{
	const char *name;
	size_t i;
	int rc;

	for (i = 0; i < n; i++) {
		name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nrs[i]);
		if (name == NULL)
			return -EINVAL;
		/* Absent there: a negative "pseudo" number (or an error). */
		if (seccomp_syscall_resolve_name_arch(arch, name) < 0) {
			printf("/* (not on this architecture: %s) */\n", name);
			free((void *)name);
			continue;
		}
		free((void *)name);
		/* _exact: fail rather than let libseccomp rewrite a rule into
		 * something broader or different (e.g. on a multiplexed
		 * syscall). */
		rc = seccomp_rule_add_exact(ctx, SCMP_ACT_ALLOW, nrs[i], 0);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int
allow_ioctls(scmp_filter_ctx ctx, const unsigned long *reqs, size_t n)
{
	size_t i;
	int rc;

	/* SCMP_CMP_EQ on a 64-bit datum compares both halves of the
	 * register.  The kernel reads the request as unsigned int, so
	 * BLKFLSBUF | 1UL << 32 would act as BLKFLSBUF; a 32-bit compare
	 * would let such aliases through unnoticed, this kills them. */
	for (i = 0; i < n; i++) {
		rc = seccomp_rule_add_exact(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl),
		    1, arg_equals(1, (scmp_datum_t)reqs[i]));
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* No executable memory: a memory-corruption bug cannot map or mprotect
 * its way to running injected code.  prot is argument 2 of both. */
static int
allow_noexec_memory(scmp_filter_ctx ctx)
{
	int rc;

	rc = seccomp_rule_add_exact(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 1,
	    arg_lacks_bits(2, PROT_EXEC));
	if (rc < 0)
		return rc;
	return seccomp_rule_add_exact(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mprotect),
	    1, arg_lacks_bits(2, PROT_EXEC));
}

static int
allow_plain_openat(scmp_filter_ctx ctx, unsigned long allowed)
{
	/* The mask covers all 64 bits of the register: flags with any bit
	 * outside the allowed ones, including garbage above bit 31 that the
	 * kernel would ignore, are killed. */
	scmp_datum_t forbidden = ~(scmp_datum_t)allowed;

	return seccomp_rule_add_exact(ctx, SCMP_ACT_ALLOW, SCMP_SYS(openat),
	    1, arg_lacks_bits(2, forbidden));
}

/* Let this stage install a further filter (the next stage) and nothing
 * more: SECCOMP_SET_MODE_FILTER with no flags, so no TSYNC and no user
 * notification listener.  A stacked filter can only narrow what is
 * allowed.  sandbox/seccomp.c loads the teardown program with exactly
 * that call. */
static int
allow_stacking(scmp_filter_ctx ctx)
{
	return seccomp_rule_add_exact(ctx, SCMP_ACT_ALLOW, SCMP_SYS(seccomp),
	    2, arg_equals(0, SECCOMP_SET_MODE_FILTER), arg_equals(1, 0));
}

/* glibc's fork() (and so posix_spawn-free code here) is clone with these
 * flags and no others: no threads (CLONE_VM, CLONE_THREAD), no new
 * namespaces.  clone3 is not used by it and stays killed. */
#define SB_FORK_FLAGS	(CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD)

static int
allow_fork(scmp_filter_ctx ctx)
{
	return seccomp_rule_add_exact(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone),
	    1, arg_equals(0, SB_FORK_FLAGS));
}

/*
 * Threads, as glibc 2.36's pthread_create and pthread_join make them
 * (helper/threads.c), and nothing more:
 *  - clone with exactly pthread_create's flags: no new namespaces, no
 *    CLONE_PARENT or ptrace flags, no process other than a thread;
 *  - clone3 answered ENOSYS: seccomp cannot read its flags (they are in
 *    memory), and glibc then falls back to clone;
 *  - futex WAIT, WAKE and WAIT_BITSET, private or not, with or without
 *    CLOCK_REALTIME (pthread_join waits on the thread id with
 *    WAIT_BITSET|CLOCK_REALTIME; glibc's locks use WAIT/WAKE): no requeue,
 *    PI or WAKE_OP, the operations behind futex's privilege escalations;
 *  - the new thread's rseq and set_robust_list registrations;
 *  - rt_sigaction of SIGSETXID (33) only, which the first pthread_create
 *    installs.
 * The thread's stack (mmap, mprotect without PROT_EXEC, madvise, munmap)
 * and signal mask (rt_sigprocmask) calls are in the stage's list already.
 */
#define SB_THREAD_FLAGS	(CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | \
			 CLONE_THREAD | CLONE_SYSVSEM | CLONE_SETTLS | \
			 CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID)
#define SB_SIGSETXID	33
#define SB_FUTEX_MODIFIERS	(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME)

static int
allow_futex_op(scmp_filter_ctx ctx, scmp_datum_t op)
{
	struct scmp_arg_cmp c = {
		.arg = 1, .op = SCMP_CMP_MASKED_EQ,
		.datum_a = ~(scmp_datum_t)SB_FUTEX_MODIFIERS, .datum_b = op,
	};

	return seccomp_rule_add_exact(ctx, SCMP_ACT_ALLOW, SCMP_SYS(futex), 1, c);
}

static int
allow_threads(scmp_filter_ctx ctx)
{
	int rc;

	rc = seccomp_rule_add_exact(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone),
	    1, arg_equals(0, SB_THREAD_FLAGS));
	if (rc == 0)
		rc = seccomp_rule_add_exact(ctx, SCMP_ACT_ERRNO(ENOSYS),
		    SCMP_SYS(clone3), 0);
	if (rc == 0)
		rc = allow_futex_op(ctx, FUTEX_WAIT);
	if (rc == 0)
		rc = allow_futex_op(ctx, FUTEX_WAKE);
	if (rc == 0)
		rc = allow_futex_op(ctx, FUTEX_WAIT_BITSET);
	if (rc == 0)
		rc = seccomp_rule_add_exact(ctx, SCMP_ACT_ALLOW, SCMP_SYS(rseq), 0);
	if (rc == 0)
		rc = seccomp_rule_add_exact(ctx, SCMP_ACT_ALLOW,
		    SCMP_SYS(set_robust_list), 0);
	if (rc == 0)
		rc = seccomp_rule_add_exact(ctx, SCMP_ACT_ALLOW,
		    SCMP_SYS(rt_sigaction), 1, arg_equals(0, SB_SIGSETXID));
	return rc;
}

static int
add_stage_rules(scmp_filter_ctx ctx, const struct sb_arch *a, uint32_t arch,
		const struct sb_stage *st)
{
	size_t i;
	int rc;

	for (i = 0; i < st->nincludes; i++) {
		rc = add_stage_rules(ctx, a, arch, st->includes[i]);
		if (rc < 0)
			return rc;
	}
	rc = allow_syscalls(ctx, arch, st->syscalls, st->nsyscalls);
	if (rc == 0)
		rc = allow_ioctls(ctx, st->ioctls, st->nioctls);
	if (rc == 0)
		rc = allow_noexec_memory(ctx);
	if (rc == 0 && st->open != SB_OPEN_NONE)
		rc = allow_plain_openat(ctx, open_flags(a, st->open));
	if (rc == 0 && st->allow_stacking)
		rc = allow_stacking(ctx);
	if (rc == 0 && st->allow_fork)
		rc = allow_fork(ctx);
	if (rc == 0 && st->allow_threads)
		rc = allow_threads(ctx);
	return rc;
}

/* Filter attributes: both actions KILL_PROCESS.  (NNP and the loading
 * itself are sandbox/seccomp.c's: nothing here touches this process.) */
static int
set_stage_attrs(scmp_filter_ctx ctx)
{
	return seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH,
	    SCMP_ACT_KILL_PROCESS);
}

/* A filter context for the target architecture only.  seccomp_init()
 * holds this machine's; for another, it is added and this one removed, so
 * that the program accepts the target's arch value and no other. */
static scmp_filter_ctx
new_context(uint32_t arch)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);

	if (ctx == NULL || arch == seccomp_arch_native())
		return ctx;
	if (seccomp_arch_add(ctx, arch) < 0 ||
	    seccomp_arch_remove(ctx, SCMP_ARCH_NATIVE) < 0) {
		seccomp_release(ctx);
		return NULL;
	}
	return ctx;
}

/* The stage's BPF program, as libseccomp exports it, into *prog. */
static int
compile_stage(const struct sb_arch *a, const struct sb_stage *st,
	      struct sock_filter **prog, size_t *len)
{
	uint32_t arch = seccomp_arch_resolve_name(a->name);
	scmp_filter_ctx ctx;
	FILE *f;
	long size;
	int rc;

	if (arch == 0)
		return -EINVAL;
	ctx = new_context(arch);
	if (ctx == NULL)
		return -ENOMEM;
	rc = set_stage_attrs(ctx);
	if (rc == 0)
		rc = add_stage_rules(ctx, a, arch, st);
	f = rc == 0 ? tmpfile() : NULL;
	if (rc == 0 && f == NULL)
		rc = -errno;
	if (rc == 0)
		rc = seccomp_export_bpf(ctx, fileno(f));
	seccomp_release(ctx);
	if (rc < 0)
		goto out;
	size = lseek(fileno(f), 0, SEEK_END);
	if (size <= 0 || size % (long)sizeof(**prog) != 0 ||
	    size / (long)sizeof(**prog) > BPF_MAXINSNS) {
		rc = -EINVAL;
		goto out;
	}
	*len = (size_t)size / sizeof(**prog);
	*prog = malloc((size_t)size);
	if (*prog == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	if (pread(fileno(f), *prog, (size_t)size, 0) != size) {
		free(*prog);
		rc = -EIO;
	}
out:
	if (f)
		fclose(f);
	return rc;
}

static int
print_stage(const struct sb_arch *a, const char *name, const struct sb_stage *st)
{
	struct sock_filter *prog = NULL;
	size_t i, len = 0;
	int rc = compile_stage(a, st, &prog, &len);

	if (rc < 0) {
		fprintf(stderr, "seccomp_policy: %s: %s\n", name, strerror(-rc));
		return -1;
	}
	printf("\nstatic const struct sock_filter %s[%zu] = {\n", name, len);
	for (i = 0; i < len; i++)
		printf("\t{ 0x%02x, %u, %u, 0x%08x },\n", prog[i].code,
		       prog[i].jt, prog[i].jf, prog[i].k);
	printf("};\n");
	free(prog);
	return 0;
}

/* The architecture named on the command line, or this machine's. */
static const struct sb_arch *
target_arch(int argc, char **argv)
{
	const char *want = argc > 1 ? argv[1] : NULL;
	size_t i;

	for (i = 0; i < SB_COUNT(sb_arches); i++) {
		if (want ? strcmp(want, sb_arches[i].name) == 0 :
		    seccomp_arch_resolve_name(sb_arches[i].name) == seccomp_arch_native())
			return &sb_arches[i];
	}
	fprintf(stderr, "seccomp_policy: no seccomp policy for architecture '%s' "
		"(known: x86_64, aarch64)\n", want ? want : "of this machine");
	return NULL;
}

int
main(int argc, char **argv)
{
	const struct scmp_version *v = seccomp_version();
	const struct sb_arch *a = target_arch(argc, argv);

	/* The output must not depend on the kernel of the build machine:
	 * API level 3 is what KILL_PROCESS needs (Linux 4.14), and all the
	 * rules use. */
	if (a == NULL)
		return 1;
	if (seccomp_api_set(3) < 0) {
		fprintf(stderr, "seccomp_policy: libseccomp lacks API level 3\n");
		return 1;
	}
	printf("/* Generated by sandbox/seccomp_policy.c with libseccomp %u.%u.%u:\n"
	       " * the helper's seccomp programs for %s.  Do not edit; edit the\n"
	       " * policy. */\n"
	       "#include <linux/filter.h>\n",
	       v->major, v->minor, v->micro, a->name);
	/* A helper compiled for another architecture than the programs is
	 * a build error, not a helper killed at its first syscall. */
	printf("#if %s\n#error \"seccomp_filters.h holds programs for %s\"\n#endif\n",
	       strcmp(a->name, "aarch64") == 0 ? "!defined(__aarch64__)" :
	       "!defined(__x86_64__) || defined(__ILP32__)", a->name);
	if (print_stage(a, "sb_serve_filter", &serve_stage) < 0 ||
	    print_stage(a, "sb_teardown_filter", &teardown_stage) < 0 ||
	    print_stage(a, "sb_guard_filter", &guard_stage) < 0 ||
	    print_stage(a, "sb_listener_filter", &listener_stage) < 0)
		return 1;
	return fflush(stdout) == 0 ? 0 : 1;
}
