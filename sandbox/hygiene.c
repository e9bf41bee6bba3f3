/*
 * Process hygiene: undo everything a hostile caller could have set up in the
 * process image it handed to a setuid-root program (open fds, ignored or
 * blocked signals, tiny resource limits, a poisoned environment, an odd
 * umask or cwd) and take the helper out of the caller's kill/ptrace reach.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#include "sandbox.h"

#define SB_STACK_SOFT (8UL * 1024 * 1024)
#define SB_NOFILE 1024
/* 64 held devices with their backing dups (128), a 64-device batch in flight
 * (64 received backing fds, 64 client fds to send), the session's own, margin */
#define SB_NOFILE_MIN 320
#define SB_STACK_MIN (1UL * 1024 * 1024)	/* deepest path: a few 16 KiB messages */
#define SB_MEMORY_MIN (256UL * 1024 * 1024)	/* peak RSS is under 2 MiB */

int
sb_ensure_stdio(void)
{
	int fd, nfd;

	for (fd = 0; fd <= 2; fd++) {
		if (fcntl(fd, F_GETFD) != -1)
			continue;
		if (errno != EBADF)
			return -1;
		/* open() returns the lowest free fd, and 0..fd-1 are open by
		 * now, so this fills exactly the hole at fd. */
		nfd = open("/dev/null", O_RDWR | O_NOCTTY);
		if (nfd == -1)
			return -1;
		if (nfd != fd) {
			close(nfd);
			errno = EBADF;
			return -1;
		}
	}
	return 0;
}

/* Close [lo, hi] with close_range(2) (5.9+; the helper requires 5.15).
 * Closing a hole is not an error. */
static int
close_span(unsigned int lo, unsigned int hi)
{
	if (lo > hi)
		return 0;
	return close_range(lo, hi, 0);
}

/* The smallest fd in keep[] that is >= lo, or -1 when there is none.  keep[]
 * is tiny (the socket, maybe a log fd), so a linear scan per span is cheaper
 * to review than sorting a copy. */
static int
next_kept(const int *keep, size_t n, unsigned int lo)
{
	int best = -1;
	size_t i;

	for (i = 0; i < n; i++) {
		if (keep[i] < 0 || (unsigned int)keep[i] < lo)
			continue;
		if (best == -1 || keep[i] < best)
			best = keep[i];
	}
	return best;
}

int
sb_close_fds_except(const int *keep, size_t n)
{
	unsigned int lo = 3;
	int k;

	/* Every fd the caller left open (a directory fd, a socket to
	 * somewhere, a file it wants us to write to) is a capability the
	 * helper must not carry.  Close the spans between kept fds. */
	while ((k = next_kept(keep, n, lo)) != -1) {
		if (close_span(lo, (unsigned int)k - 1) == -1)
			return -1;
		if (k == INT_MAX)
			return 0;
		lo = (unsigned int)k + 1;
	}
	return close_span(lo, ~0U);
}

/* The kernel's struct sigaction on x86-64.  Its layout differs between
 * architectures (arm64 has no sa_restorer), but that does not matter here:
 * SIG_DFL is 0 and so is every other field, and a kernel that reads the
 * mask from another offset still reads zeros. */
struct kernel_sigaction {
	void (*handler)(int);
	unsigned long flags;
	void (*restorer)(void);
	unsigned long mask;
};

static int
reset_reserved_signal(int sig)
{
	struct kernel_sigaction ksa = { .handler = SIG_DFL };

	return (int)syscall(SYS_rt_sigaction, sig, &ksa, NULL, sizeof(ksa.mask));
}

int
sb_stdio_to_devnull(void)
{
	int null, fd, i;

	null = open("/dev/null", O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (null == -1)
		return -1;
	/* No dup2 under seccomp: close each one, and F_DUPFD, which takes
	 * the lowest free number from i on, puts /dev/null right there. */
	for (i = 0; i < 3; i++) {
		if (null == i)
			continue;
		close(i);
		fd = fcntl(null, F_DUPFD, i);
		if (fd != i) {
			/* errno: F_DUPFD's, or EBADF when it filled another
			 * number, kept across the closes */
			int e = fd == -1 ? errno : EBADF;

			if (fd != -1)
				close(fd);
			close(null);
			errno = e;
			return -1;
		}
	}
	if (null > 2)
		close(null);
	return 0;
}

int
sb_reset_signals(void)
{
	static const int ignored[] = {
		SIGPIPE, SIGXFSZ, SIGALRM, SIGVTALRM, SIGPROF,
		SIGHUP, SIGINT, SIGQUIT, SIGTSTP, SIGTTIN, SIGTTOU,
	};
	struct sigaction sa = { 0 };
	sigset_t none;
	size_t i;
	int sig;

	/* Ignored dispositions survive execve: a caller could make us ignore
	 * SIGPIPE or SIGTERM, or leave signals blocked, to change how we
	 * fail.  Handlers are reset by execve already; this covers SIG_IGN. */
	sa.sa_handler = SIG_DFL;
	sigemptyset(&sa.sa_mask);
	for (sig = 1; sig < NSIG; sig++) {
		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		if (sigaction(sig, &sa, NULL) == 0)
			continue;
		/* glibc reserves two realtime signals for itself (cancellation,
		 * setxid) and refuses them with EINVAL, but an ignore set by
		 * the caller is inherited all the same: reset them with the
		 * raw syscall. */
		if (errno != EINVAL || reset_reserved_signal(sig) == -1)
			return -1;
	}
	/* Deliberate exceptions: signals the caller can still have sent to
	 * us after sb_leave_callers_reach, which must not kill the helper
	 * between a flush and a clear.  SIGPIPE and SIGXFSZ: a write to a
	 * stderr whose reader is gone, or past a caller-lowered RLIMIT_FSIZE
	 * that cannot be raised, fails as an error instead.  SIGALRM,
	 * SIGVTALRM, SIGPROF: interval timers survive execve (disarmed in
	 * sb_reset_process, ignored in case of a race).  SIGHUP, SIGINT,
	 * SIGQUIT, SIGTSTP, SIGTTIN, SIGTTOU: a controlling terminal the
	 * caller holds can send them to our process group even when setsid()
	 * fails because the caller made us a group leader. */
	sa.sa_handler = SIG_IGN;
	for (i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++)
		if (sigaction(ignored[i], &sa, NULL) == -1)
			return -1;
	if (sigemptyset(&none) == -1)
		return -1;
	return sigprocmask(SIG_SETMASK, &none, NULL);
}

/* Set one limit.  Raising a hard limit needs CAP_SYS_RESOURCE, which the
 * helper normally holds when this runs, but which a container's bounding
 * set may lack (this project's CI machines do).  Without it, settle for
 * what the current hard limit allows, as long as the soft limit reaches
 * min_soft: below that the helper would fail later, mid-session, so it
 * fails now (EPERM), before touching any device. */
static int
set_limit(int resource, rlim_t soft, rlim_t hard, rlim_t min_soft)
{
	struct rlimit rl = { .rlim_cur = soft, .rlim_max = hard };

	if (setrlimit(resource, &rl) == 0)
		return 0;
	if (errno != EPERM || getrlimit(resource, &rl) == -1)
		return -1;
	/* RLIM_INFINITY is the largest rlim_t, so plain minimums work, and
	 * a min_soft of RLIM_INFINITY demands an unlimited hard limit. */
	if (hard < rl.rlim_max)
		rl.rlim_max = hard;
	rl.rlim_cur = soft < rl.rlim_max ? soft : rl.rlim_max;
	if (rl.rlim_cur < min_soft) {
		errno = EPERM;
		return -1;
	}
	return setrlimit(resource, &rl);
}

/* The limits to reset, and the least each must reach when its hard limit
 * cannot be raised.  A hard RLIMIT_CPU ends in SIGKILL, and one the caller
 * set stays armed on a root process (raising it needs CAP_SYS_RESOURCE,
 * which a bounding set may lack): it must be unlimited, or we refuse.  The
 * same for RLIMIT_RTTIME, which counts once a task runs a realtime policy.
 * A tiny stack limit turns the next stack growth into SIGSEGV; tiny memory
 * limits fail an allocation between a flush and a clear. */
static const struct {
	int resource;
	const char *name;
	rlim_t soft, hard, min_soft;
} sb_limits[] = {
	/* No core files: a dump of the helper would hold other users'
	 * state and could be written where the caller can read it. */
	{ RLIMIT_CORE, "RLIMIT_CORE", 0, 0, 0 },
	/* A known fd budget.  A caller-lowered one could make recvmsg drop
	 * passed fds (MSG_CTRUNC) or an open fail with EMFILE halfway
	 * through a session. */
	{ RLIMIT_NOFILE, "RLIMIT_NOFILE", SB_NOFILE, SB_NOFILE, SB_NOFILE_MIN },
	{ RLIMIT_CPU, "RLIMIT_CPU", RLIM_INFINITY, RLIM_INFINITY, RLIM_INFINITY },
	{ RLIMIT_RTTIME, "RLIMIT_RTTIME", RLIM_INFINITY, RLIM_INFINITY, RLIM_INFINITY },
	{ RLIMIT_FSIZE, "RLIMIT_FSIZE", RLIM_INFINITY, RLIM_INFINITY, 0 },
	{ RLIMIT_AS, "RLIMIT_AS", RLIM_INFINITY, RLIM_INFINITY, SB_MEMORY_MIN },
	{ RLIMIT_DATA, "RLIMIT_DATA", RLIM_INFINITY, RLIM_INFINITY, SB_MEMORY_MIN },
	/* 8 MiB soft, the usual default.  The caller's stack limit already
	 * shaped our layout at execve (an unlimited one once selected the
	 * legacy, less random mmap layout); from here on it only bounds
	 * stack growth, and the hard limit stays open for that. */
	{ RLIMIT_STACK, "RLIMIT_STACK", SB_STACK_SOFT, RLIM_INFINITY, SB_STACK_MIN },
};

int
sb_reset_limits(const char **which)
{
	size_t i;

	for (i = 0; i < sizeof(sb_limits) / sizeof(sb_limits[0]); i++) {
		*which = sb_limits[i].name;
		if (set_limit(sb_limits[i].resource, sb_limits[i].soft,
		    sb_limits[i].hard, sb_limits[i].min_soft) == -1)
			return -1;
	}
	*which = NULL;
	return 0;
}

int
sb_reset_environment(void)
{
	/* LD_*, MALLOC_*, LOCPATH, TZ, GCONV_PATH and friends are the
	 * caller's way into our libc.  glibc strips some for setuid programs;
	 * drop all of them rather than trust that list. */
	if (clearenv() != 0) {
		errno = ENOMEM;
		return -1;
	}
	return setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin", 1);
}

static int
disarm_itimers(void)
{
	static const int which[] = { ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF };
	struct itimerval off = { { 0, 0 }, { 0, 0 } };
	size_t i;

	for (i = 0; i < sizeof(which) / sizeof(which[0]); i++)
		if (setitimer(which[i], &off, NULL) == -1)
			return -1;
	return 0;
}

int
sb_reset_process(void)
{
	/* Anything we create (should there ever be something) is ours alone. */
	umask(077);
	/* The caller's cwd may be on a filesystem it wants kept busy, or a
	 * directory it can rename under us. */
	if (chdir("/") == -1)
		return -1;
	/* Interval timers survive execve: a caller's setitimer() would
	 * deliver SIGALRM, SIGVTALRM or SIGPROF to us at a moment it chose. */
	if (disarm_itimers() == -1)
		return -1;
	/* Not dumpable: no core file, and ptrace_may_access() refuses
	 * non-root tracers even when the uids match. */
	return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

/* Check that all three ids are 0, in case a kernel or LSM quietly ignored
 * part of a set*id call. */
static int
ids_are_root(void)
{
	uid_t ru, eu, su;
	gid_t rg, eg, sg;

	if (getresuid(&ru, &eu, &su) == -1 || getresgid(&rg, &eg, &sg) == -1)
		return -1;
	if (ru != 0 || eu != 0 || su != 0 || rg != 0 || eg != 0 || sg != 0) {
		errno = EPERM;
		return -1;
	}
	return 0;
}

int
sb_leave_callers_reach(void)
{
	/* Supplementary groups are inherited from the caller: drop them so
	 * no group-owned file is reachable through them. */
	if (setgroups(0, NULL) == -1)
		return -1;
	/* gid before uid: once the uids are all 0 it would still work, but
	 * the usual order keeps this correct if the helper ever drops to a
	 * non-root uid instead. */
	if (setresgid(0, 0, 0) == -1)
		return -1;
	/* kill(2) is allowed when the sender's real or effective uid equals
	 * the target's real or saved uid.  A setuid helper starts with the
	 * caller's real uid, so the caller could signal it at any moment
	 * (e.g. between LOOP_CLR_FD steps).  ptrace additionally needs the
	 * target dumpable and all its uids equal to the tracer's; making all
	 * three ids 0 (and sb_reset_process's non-dumpable) closes both. */
	if (setresuid(0, 0, 0) == -1)
		return -1;
	return ids_are_root();
}
