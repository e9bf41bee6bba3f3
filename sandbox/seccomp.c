/*
 * seccomp: load the helper's allowlists.  The rules, and why each
 * syscall is there, are in sandbox/seccomp_policy.c, which libseccomp
 * compiles into BPF at build time ($(O)/seccomp_filters.h); here each
 * stage is one seccomp() call with a fixed program, so no rule compiler
 * runs as root and nothing is built at run time.
 */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sandbox.h"
#include "seccomp_filters.h"

/* SECCOMP_SET_MODE_FILTER with no flags: the form the serve stage allows
 * for loading the teardown stage (no TSYNC, no listener). */
static int
load_program(const struct sock_filter *insns, size_t len)
{
	struct sock_fprog prog = {
		.len = (unsigned short)len,
		.filter = (struct sock_filter *)insns,	/* the kernel only reads */
	};

	/* unsigned long arguments: the serve filter compares all 64 bits of
	 * the operation and flags when this loads the teardown stage. */
	return (int)syscall(SYS_seccomp, (unsigned long)SECCOMP_SET_MODE_FILTER,
			    0UL, &prog);
}

/* sock_fprog.len is 16 bits; the kernel takes at most BPF_MAXINSNS. */
_Static_assert(sizeof(sb_serve_filter) / sizeof(sb_serve_filter[0]) <= BPF_MAXINSNS,
	       "serve filter too long");
_Static_assert(sizeof(sb_teardown_filter) / sizeof(sb_teardown_filter[0]) <= BPF_MAXINSNS,
	       "teardown filter too long");

_Static_assert(sizeof(sb_guard_filter) / sizeof(sb_guard_filter[0]) <= BPF_MAXINSNS,
	       "guard filter too long");
_Static_assert(sizeof(sb_listener_filter) / sizeof(sb_listener_filter[0]) <= BPF_MAXINSNS,
	       "listener filter too long");

/* The kernel takes a filter from a process with no_new_privs or
 * CAP_SYS_ADMIN.  sb_narrow_caps has normally set it already; set it here
 * too so no stage depends on the order of the others nor on which
 * capabilities are kept. */
static int
load_first_program(const struct sock_filter *insns, size_t len)
{
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		return -1;
	return load_program(insns, len);
}

int
sb_seccomp_guard(void)
{
	return load_first_program(sb_guard_filter,
				  sizeof(sb_guard_filter) / sizeof(sb_guard_filter[0]));
}

int
sb_seccomp_listener(void)
{
	return load_first_program(sb_listener_filter,
				  sizeof(sb_listener_filter) / sizeof(sb_listener_filter[0]));
}

int
sb_seccomp_serve(void)
{
	return load_first_program(sb_serve_filter,
				  sizeof(sb_serve_filter) / sizeof(sb_serve_filter[0]));
}

int
sb_seccomp_teardown(void)
{
	return load_program(sb_teardown_filter,
			    sizeof(sb_teardown_filter) / sizeof(sb_teardown_filter[0]));
}
