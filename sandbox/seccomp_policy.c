/*
 * seccomp_policy: the helper's syscall allowlists, one per stage, compiled
 * into BPF at build time.  This is a build tool, not part of the helper:
 * it runs libseccomp's rule compiler and prints the two programs as C
 * arrays ($(O)/seccomp_filters.h), which sandbox/seccomp.c loads with one
 * seccomp() call each.  The setuid helper so carries no rule compiler
 * (less code running as root before the filter is in place) and does not
 * spend ~200 us of every session start (measured, make bench) building the
 * same two programs again.  The programs are for the architecture this is
 * built on, which is the one the helper is built for (no cross builds).
 *
 * Anything not listed kills the whole process (SIGSYS), never returns an
 * error: a compromised helper must not get to probe, and a helper bug that
 * reaches an unexpected syscall is better stopped than half-handled.
 *
 * Only the native ABI is allowed.  On x86-64 a process can also enter the
 * kernel through the i386 ABI (int $0x80: different numbers, so a "deny
 * socket" rule for x86-64 would not see i386 socketcall) and the x32 ABI
 * (x86-64 arch value, numbers with bit 30 set).  libseccomp 2.5's filter
 * for a context holding only x86_64 sends a wrong arch value to the
 * BADARCH action and, for the x86_64 arch, any number >= 0x40000000
 * (except -1) to the BADARCH action too; both are KILL_PROCESS here.
 * tests/integration/t_seccomp.sh checks both entry points.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* A stage: plain syscalls, the ioctl requests allowed, and whether openat
 * is allowed (with restricted flags).  mmap/mprotect without PROT_EXEC are
 * in every stage; malloc and stdio need them. */
struct sb_stage {
	const int *syscalls;
	size_t nsyscalls;
	const unsigned long *ioctls;
	size_t nioctls;
	unsigned long open_flags;	/* openat allowed with these; 0: not at all */
	int allow_stacking;
};

#define SB_COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* x86-64's kernel O_LARGEFILE; glibc defines O_LARGEFILE as 0 on 64-bit
 * targets, but a library passing the kernel's bit is harmless (the kernel
 * forces it on for 64-bit processes anyway). */
#define SB_KERNEL_O_LARGEFILE 0100000

/* openat flags the helper may use: access mode and harmless modifiers.
 * Everything else is killed: O_CREAT/O_TMPFILE (make files), O_TRUNC
 * (destroy one), O_PATH/O_DIRECTORY (walk the tree), O_APPEND, O_DIRECT,
 * O_SYNC... none has a use in serving loop devices. */
#define SB_OPEN_FLAGS (O_ACCMODE | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | \
	O_NOFOLLOW | SB_KERNEL_O_LARGEFILE)
/* The same without write access (O_RDONLY is 0: no access bit allowed). */
#define SB_OPEN_FLAGS_RDONLY (SB_OPEN_FLAGS & ~(unsigned long)O_ACCMODE)

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
	LOOP_CONFIGURE, LOOP_SET_STATUS64,
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
	BLKFLSBUF, LOOP_CLR_FD, LOOP_GET_STATUS64, LOOP_SET_STATUS64,
	BLKGETDISKSEQ,
};

static const struct sb_stage serve_stage = {
	.syscalls = serve_syscalls, .nsyscalls = SB_COUNT(serve_syscalls),
	.ioctls = serve_ioctls, .nioctls = SB_COUNT(serve_ioctls),
	.open_flags = SB_OPEN_FLAGS,
	/* The teardown filter is loaded from inside this one. */
	.allow_stacking = 1,
};

static const struct sb_stage teardown_stage = {
	.syscalls = teardown_syscalls,
	.nsyscalls = SB_COUNT(teardown_syscalls),
	.ioctls = teardown_ioctls, .nioctls = SB_COUNT(teardown_ioctls),
	/* Finding out whether a device released busy has detached means
	 * opening its node again, read-only. */
	.open_flags = SB_OPEN_FLAGS_RDONLY,
	.allow_stacking = 0,
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

static int
allow_syscalls(scmp_filter_ctx ctx, const int *nrs, size_t n)
{
	size_t i;
	int rc;

	/* _exact: fail rather than let libseccomp rewrite a rule into
	 * something broader or different (e.g. on a multiplexed syscall). */
	for (i = 0; i < n; i++) {
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

static int
add_stage_rules(scmp_filter_ctx ctx, const struct sb_stage *st)
{
	int rc;

	rc = allow_syscalls(ctx, st->syscalls, st->nsyscalls);
	if (rc == 0)
		rc = allow_ioctls(ctx, st->ioctls, st->nioctls);
	if (rc == 0)
		rc = allow_noexec_memory(ctx);
	if (rc == 0 && st->open_flags)
		rc = allow_plain_openat(ctx, st->open_flags);
	if (rc == 0 && st->allow_stacking)
		rc = allow_stacking(ctx);
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

/* The stage's BPF program, as libseccomp exports it, into *prog. */
static int
compile_stage(const struct sb_stage *st, struct sock_filter **prog,
	      size_t *len)
{
	scmp_filter_ctx ctx;
	FILE *f;
	long size;
	int rc;

	/* seccomp_init() includes only the native architecture. */
	ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
	if (ctx == NULL)
		return -ENOMEM;
	rc = set_stage_attrs(ctx);
	if (rc == 0)
		rc = add_stage_rules(ctx, st);
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
print_stage(const char *name, const struct sb_stage *st)
{
	struct sock_filter *prog = NULL;
	size_t i, len = 0;
	int rc = compile_stage(st, &prog, &len);

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

int
main(void)
{
	const struct scmp_version *v = seccomp_version();

	/* The output must not depend on the kernel of the build machine:
	 * API level 3 is what KILL_PROCESS needs (Linux 4.14), and all the
	 * rules use. */
	if (seccomp_api_set(3) < 0) {
		fprintf(stderr, "seccomp_policy: libseccomp lacks API level 3\n");
		return 1;
	}
	printf("/* Generated by sandbox/seccomp_policy.c with libseccomp %u.%u.%u:\n"
	       " * the helper's seccomp programs.  Do not edit; edit the policy. */\n"
	       "#include <linux/filter.h>\n",
	       v->major, v->minor, v->micro);
	if (print_stage("sb_serve_filter", &serve_stage) < 0 ||
	    print_stage("sb_teardown_filter", &teardown_stage) < 0)
		return 1;
	return fflush(stdout) == 0 ? 0 : 1;
}
