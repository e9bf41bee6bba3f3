/*
 * without_syscall: run a program as if the kernel lacked a system call.
 *
 *   without_syscall NAME ERRNO PROGRAM [ARG...]
 *
 * Installs a seccomp filter that fails NAME with ERRNO (a number) and lets
 * everything else through, then execs PROGRAM: a kernel built without
 * Landlock, or booted with it left out of lsm=, answers ENOSYS or
 * EOPNOTSUPP.  Run as root (CAP_SYS_ADMIN loads a filter without
 * no_new_privs, which would keep a setuid program from gaining privilege).
 */
#include <errno.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	scmp_filter_ctx ctx;
	int nr, e;

	if (argc < 4) {
		fprintf(stderr, "usage: without_syscall NAME ERRNO PROGRAM [ARG...]\n");
		return 2;
	}
	nr = seccomp_syscall_resolve_name(argv[1]);
	e = atoi(argv[2]);
	if (nr == __NR_SCMP_ERROR || e <= 0) {
		fprintf(stderr, "without_syscall: unknown syscall %s or errno %s\n",
			argv[1], argv[2]);
		return 2;
	}
	ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (ctx == NULL ||
	    seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0) < 0 ||
	    seccomp_rule_add(ctx, SCMP_ACT_ERRNO((unsigned)e), nr, 0) < 0 ||
	    seccomp_load(ctx) < 0) {
		fprintf(stderr, "without_syscall: cannot load the filter\n");
		return 1;
	}
	seccomp_release(ctx);
	execv(argv[3], argv + 3);
	fprintf(stderr, "without_syscall: %s: %s\n", argv[3], strerror(errno));
	return 127;
}
