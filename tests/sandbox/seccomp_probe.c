/*
 * seccomp_probe: exercise sandbox/ from the outside, for
 * tests/integration/t_seccomp.sh.
 *
 *   seccomp_probe serve ACTION      load stage 1, then do ACTION
 *   seccomp_probe teardown ACTION   load stage 1 and stage 2 (as the helper
 *                                   does), then do ACTION
 *   seccomp_probe none ACTION       no filter: the control that shows each
 *                                   ACTION returns when nothing stops it
 *   seccomp_probe caps FIRST SECOND the helper's hygiene steps, then
 *                                   sb_narrow_caps(FIRST) and
 *                                   sb_narrow_caps(SECOND); prints the
 *                                   resulting process state
 *   seccomp_probe landlock          sb_narrow_caps(0), sb_landlock_dev_only,
 *                                   then prints what can still be opened
 *
 * ACTION exits 0 when the syscall returned, whatever it returned; a
 * forbidden one must never return: the filter kills the process with
 * SIGSYS.  Exit 2 means the probe itself failed (bad usage, filter not
 * loaded) and must fail every assertion.
 */
#include <asm/unistd.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/fs.h>
#include <linux/futex.h>
#include <linux/sched.h>
#include <pthread.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "sandbox.h"

/* The fd the caps mode keeps open across sb_close_fds_except. */
#define PROBE_KEPT_FD 7

extern char **environ;

/* /dev/null, opened before any filter: the ioctl and I/O actions need an
 * fd without needing openat. */
static int nullfd = -1;

/* ---- forbidden in every stage ------------------------------------------ */

static long
act_execve(void)
{
	char *argv[] = { (char *)"true", NULL };
	char *envp[] = { NULL };

	/* If this is not killed, /bin/true runs and exits 0: a failure the
	 * test sees. */
	return syscall(SYS_execve, "/bin/true", argv, envp);
}

static long
act_socket(void)
{
	return syscall(SYS_socket, AF_UNIX, SOCK_STREAM, 0);
}

static long
act_openat_creat(void)
{
	/* /dev/null exists, so even unfiltered this creates nothing. */
	return syscall(SYS_openat, AT_FDCWD, "/dev/null",
	    O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
}

static long
act_openat_path(void)
{
	return syscall(SYS_openat, AT_FDCWD, "/", O_PATH | O_CLOEXEC, 0);
}

static long
act_ioctl_unlisted(void)
{
	int n;

	return syscall(SYS_ioctl, nullfd, (unsigned long)FIONREAD, &n);
}

static long
act_ioctl_highbits(void)
{
	/* The kernel truncates the request to 32 bits: unfiltered, this is
	 * BLKFLSBUF (ENOTTY on /dev/null). */
	return syscall(SYS_ioctl, nullfd, (unsigned long)BLKFLSBUF | 1UL << 32,
	    0);
}

static long
act_ioctl_signext(void)
{
	/* BLKGETDISKSEQ as it looks after passing through an int. */
	return syscall(SYS_ioctl, nullfd,
	    0xffffffff00000000UL | (unsigned long)BLKGETDISKSEQ, 0);
}

static long
act_int80(void)
{
	long ret;

	/* i386 getpid (20) through the 32-bit entry point. */
	__asm__ volatile ("int $0x80"
	    : "=a" (ret)
	    : "a" (20L)
	    : "memory", "cc", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
	      "r15");
	return ret;
}

static long
act_x32(void)
{
	return syscall(__X32_SYSCALL_BIT | __NR_getpid);
}

static long
act_ptrace(void)
{
	/* Not being traced: ESRCH if it is let through.  No side effect. */
	return syscall(SYS_ptrace, PTRACE_PEEKUSER, getpid(), 0, 0);
}

static long
act_mount(void)
{
	return syscall(SYS_mount, "none", "/nonexistent-loopfd-probe",
	    "tmpfs", 0UL, NULL);
}

static long
act_bpf(void)
{
	return syscall(SYS_bpf, BPF_MAP_CREATE, NULL, 0);
}

static long
act_fork(void)
{
	long pid;

	/* Raw clone, so that nothing glibc's fork() does first is what
	 * gets killed.  A child that exists leaves at once. */
	pid = syscall(SYS_clone, (unsigned long)SIGCHLD, 0UL, NULL, NULL, 0UL);
	if (pid == 0)
		_exit(0);
	return pid;
}

static long
act_clone3(void)
{
	return syscall(SYS_clone3, NULL, 0UL);
}

/* clone with pthread_create's flags plus CLONE_NEWUSER: the kernel refuses
 * the pair (EINVAL) before making anything, so the unfiltered control
 * returns; the filter allows pthread_create's exact flags only. */
static long
act_clone_thread_newuser(void)
{
	unsigned long flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND |
			      CLONE_THREAD | CLONE_SYSVSEM | CLONE_SETTLS |
			      CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID |
			      CLONE_NEWUSER;

	return syscall(SYS_clone, flags, 0UL, NULL, NULL, 0UL);
}

/* futex operations outside WAIT, WAKE and WAIT_BITSET (the PI and requeue
 * operations behind futex's privilege escalations); bad arguments, so the
 * unfiltered control returns an error. */
static long
act_futex_requeue_pi(void)
{
	static uint32_t f1, f2;

	return syscall(SYS_futex, &f1, FUTEX_CMP_REQUEUE_PI | FUTEX_PRIVATE_FLAG,
		       1, 0UL, &f2, 1);
}

static long
act_futex_lock_pi(void)
{
	static uint32_t f = 1;	/* "owned" by tid 1: fails, never blocks */
	struct timespec none = { 0, 0 };

	return syscall(SYS_futex, &f, FUTEX_TRYLOCK_PI, 0, &none, NULL, 0);
}

/* clone3 answered ENOSYS by the serve filter (glibc then uses clone): exit
 * 3 for any other answer (the unfiltered kernel's is EINVAL or EFAULT). */
static long
act_clone3_enosys(void)
{
	if (syscall(SYS_clone3, NULL, 0UL) == -1 && errno == ENOSYS)
		return 0;
	_exit(3);
}

/* Long enough that pthread_join waits on the thread id (futex). */
static void *
probe_thread(void *arg)
{
	struct timespec t = { 0, 20 * 1000 * 1000 };

	nanosleep(&t, NULL);
	return arg;
}

/* What a batch release does: threads made and joined through glibc. */
static long
act_ok_threads(void)
{
	pthread_t t[3];
	int i;

	for (i = 0; i < 3; i++)
		if (pthread_create(&t[i], NULL, probe_thread, NULL) != 0)
			_exit(3);
	for (i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	return 0;
}

static long
act_kill(void)
{
	return syscall(SYS_kill, getpid(), 0);
}

static long
act_setuid(void)
{
	return syscall(SYS_setuid, 0);
}

static long
act_prctl(void)
{
	return syscall(SYS_prctl, PR_SET_DUMPABLE, 1UL, 0UL, 0UL, 0UL);
}

static long
act_mmap_exec(void)
{
	void *p;

	p = mmap(NULL, 4096, PROT_READ | PROT_EXEC,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? -1 : 0;
}

static long
act_mprotect_exec(void)
{
	void *p;

	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	return mprotect(p, 4096, PROT_READ | PROT_EXEC);
}

static long
act_seccomp_listener(void)
{
	return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
	    SECCOMP_FILTER_FLAG_NEW_LISTENER, NULL);
}

/* ---- allowed in the serving stage (some also in teardown) -------------- */

static long
act_ok_getpid(void)
{
	return syscall(SYS_getpid);
}

static long
open_dev_null(int flags)
{
	int fd = open("/dev/null", flags | O_CLOEXEC);

	if (fd != -1)
		close(fd);
	return fd;
}

/* Allowed while serving; the teardown stage reopens nodes read-only only. */
static long
act_openat_rdwr(void)
{
	return open_dev_null(O_RDWR);
}

static long
act_ok_openat_rdonly(void)
{
	return open_dev_null(O_RDONLY);
}

static long
act_ok_ioctl_listed(void)
{
	uint64_t size;

	return ioctl(nullfd, BLKGETSIZE64, &size);
}

static long
act_ok_ioctl_flsbuf(void)
{
	return ioctl(nullfd, BLKFLSBUF, 0);
}

static long
act_ok_ioctl_diskseq(void)
{
	uint64_t seq;

	return ioctl(nullfd, BLKGETDISKSEQ, &seq);
}

static long
act_ok_write(void)
{
	return write(nullfd, "x", 1);
}

static long
act_ok_mmap_noexec(void)
{
	void *p;

	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	if (mprotect(p, 4096, PROT_READ) == -1)
		return -1;
	return munmap(p, 4096);
}

static long
act_ok_malloc(void)
{
	/* Large enough for glibc to mmap it rather than use brk. */
	char *p = malloc(1 << 20);

	if (p == NULL)
		return -1;
	memset(p, 1, 1 << 20);
	free(p);
	return 0;
}

static long
act_ok_sleep(void)
{
	struct timespec ts = { .tv_sec = 1, .tv_nsec = 0 };

	/* The test stops and continues us meanwhile: the kernel then resumes
	 * the sleep through restart_syscall(2), not nanosleep. */
	return nanosleep(&ts, NULL);
}

static long
act_seccomp_stack(void)
{
	/* Loading another filter: the serving stage allows it (that is how
	 * teardown gets in); EFAULT here.  The teardown stage does not. */
	return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0UL, NULL);
}

static long
act_teardown_recvmsg(void)
{
	struct msghdr msg = { 0 };

	return recvmsg(nullfd, &msg, MSG_DONTWAIT);
}

static const struct {
	const char *name;
	long (*run)(void);
} actions[] = {
	{ "execve", act_execve },
	{ "socket", act_socket },
	{ "openat_creat", act_openat_creat },
	{ "openat_path", act_openat_path },
	{ "ioctl_unlisted", act_ioctl_unlisted },
	{ "ioctl_highbits", act_ioctl_highbits },
	{ "ioctl_signext", act_ioctl_signext },
	{ "int80", act_int80 },
	{ "x32", act_x32 },
	{ "ptrace", act_ptrace },
	{ "mount", act_mount },
	{ "bpf", act_bpf },
	{ "fork", act_fork },
	{ "clone3", act_clone3 },
	{ "clone_thread_newuser", act_clone_thread_newuser },
	{ "futex_requeue_pi", act_futex_requeue_pi },
	{ "futex_lock_pi", act_futex_lock_pi },
	{ "clone3_enosys", act_clone3_enosys },
	{ "ok_threads", act_ok_threads },
	{ "kill", act_kill },
	{ "setuid", act_setuid },
	{ "prctl", act_prctl },
	{ "mmap_exec", act_mmap_exec },
	{ "mprotect_exec", act_mprotect_exec },
	{ "seccomp_listener", act_seccomp_listener },
	{ "ok_getpid", act_ok_getpid },
	{ "ok_openat_rdonly", act_ok_openat_rdonly },
	{ "openat_rdwr", act_openat_rdwr },
	{ "ok_ioctl_listed", act_ok_ioctl_listed },
	{ "ok_ioctl_flsbuf", act_ok_ioctl_flsbuf },
	{ "ok_ioctl_diskseq", act_ok_ioctl_diskseq },
	{ "ok_write", act_ok_write },
	{ "ok_mmap_noexec", act_ok_mmap_noexec },
	{ "ok_malloc", act_ok_malloc },
	{ "ok_sleep", act_ok_sleep },
	{ "seccomp_stack", act_seccomp_stack },
	{ "teardown_recvmsg", act_teardown_recvmsg },
};

static long (*find_action(const char *name))(void)
{
	size_t i;

	for (i = 0; i < sizeof(actions) / sizeof(actions[0]); i++)
		if (strcmp(actions[i].name, name) == 0)
			return actions[i].run;
	return NULL;
}

static const char *
errname(int e)
{
	const char *s;

	if (e == 0)
		return "ok";
	s = strerrorname_np(e);
	return s != NULL ? s : "unknown";
}

static int
run_stage(const char *stage, const char *name)
{
	long (*run)(void) = find_action(name);
	long rc;
	int serve = 1, teardown = 0;

	if (run == NULL) {
		fprintf(stderr, "seccomp_probe: unknown action %s\n", name);
		return 2;
	}
	if (strcmp(stage, "none") == 0)
		serve = 0;
	else if (strcmp(stage, "teardown") == 0)
		teardown = 1;
	else if (strcmp(stage, "serve") != 0) {
		fprintf(stderr, "seccomp_probe: unknown stage %s\n", stage);
		return 2;
	}
	nullfd = open("/dev/null", O_RDWR | O_CLOEXEC);
	/* No core file from the expected SIGSYS. */
	if (nullfd == -1 || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == -1) {
		perror("seccomp_probe: setup");
		return 2;
	}
	if (serve && sb_seccomp_serve() == -1) {
		perror("seccomp_probe: sb_seccomp_serve");
		return 2;
	}
	if (teardown && sb_seccomp_teardown() == -1) {
		perror("seccomp_probe: sb_seccomp_teardown");
		return 2;
	}
	errno = 0;
	rc = run();
	fprintf(stderr, "%s %s: returned %ld (%s)\n", stage, name, rc,
	    rc == -1 ? errname(errno) : "ok");
	return 0;
}

/* ---- caps mode ----------------------------------------------------------- */

static void
print_status(const char *label)
{
	static const char *const keys[] = {
		"Uid:", "Gid:", "Groups:", "CapInh:", "CapPrm:", "CapEff:",
		"CapBnd:", "CapAmb:", "NoNewPrivs:", "SigBlk:", "SigIgn:",
	};
	char line[512];
	FILE *f;
	size_t i;

	f = fopen("/proc/self/status", "re");
	if (f == NULL) {
		printf("%s status: %s\n", label, errname(errno));
		return;
	}
	while (fgets(line, sizeof(line), f) != NULL)
		for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
			if (strncmp(line, keys[i], strlen(keys[i])) == 0)
				printf("%s %s", label, line);
	fclose(f);
	printf("%s Securebits: 0x%x\n", label,
	    (unsigned int)prctl(PR_GET_SECUREBITS, 0, 0, 0, 0));
}

/* Print the state the hygiene functions set: open fds, limits, env,
 * umask, cwd, dumpable. */
static void
print_hygiene(void)
{
	struct rlimit rl;
	struct dirent *de;
	char cwd[256], target[256];
	char **e;
	mode_t mask;
	ssize_t n;
	DIR *d;

	d = opendir("/proc/self/fd");
	printf("fds:");
	while (d != NULL && (de = readdir(d)) != NULL)
		if (de->d_name[0] != '.' && atoi(de->d_name) != dirfd(d))
			printf(" %s", de->d_name);
	printf("\n");
	if (d != NULL)
		closedir(d);
	n = readlink("/proc/self/fd/0", target, sizeof(target) - 1);
	target[n < 0 ? 0 : n] = '\0';
	printf("stdin: %s\n", target);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		printf("nofile: %llu %llu\n", (unsigned long long)rl.rlim_cur,
		    (unsigned long long)rl.rlim_max);
	if (getrlimit(RLIMIT_CORE, &rl) == 0)
		printf("core: %llu %llu\n", (unsigned long long)rl.rlim_cur,
		    (unsigned long long)rl.rlim_max);
	for (e = environ; *e != NULL; e++)
		printf("env: %s\n", *e);
	mask = umask(077);
	printf("umask: %03o\n", (unsigned int)mask);
	printf("cwd: %s\n", getcwd(cwd, sizeof(cwd)) != NULL ? cwd : "?");
	printf("dumpable: %d\n", prctl(PR_GET_DUMPABLE, 0, 0, 0, 0));
}

static int
hygiene_steps(void)
{
	const int keep[] = { PROBE_KEPT_FD };
	const char *limit_name;

	if (sb_ensure_stdio() == -1)
		return -1;
	if (sb_close_fds_except(keep, 1) == -1)
		return -1;
	if (sb_reset_signals() == -1 || sb_reset_limits(&limit_name) == -1)
		return -1;
	if (sb_reset_environment() == -1 || sb_reset_process() == -1)
		return -1;
	return sb_leave_callers_reach();
}

static int
caps_mode(const char *first, const char *second)
{
	int a = strcmp(first, "1") == 0, b = strcmp(second, "1") == 0;

	if (hygiene_steps() == -1) {
		printf("hygiene: %s\n", errname(errno));
		return 2;
	}
	print_hygiene();
	if (sb_narrow_caps(a) == -1) {
		printf("first: failed %s\n", errname(errno));
		return 2;
	}
	print_status("first");
	if (sb_narrow_caps(b) == -1) {
		printf("second: failed %s\n", errname(errno));
		return 2;
	}
	print_status("second");
	/* One way only: CAP_CHOWN, once dropped, cannot come back. */
	if (!b)
		printf("raise: %s\n", sb_narrow_caps(1) == 0 ? "allowed" :
		    errname(errno));
	return 0;
}

/* ---- landlock mode ------------------------------------------------------- */

static void
try_open(const char *label, const char *path, int flags)
{
	int fd, e;

	fd = open(path, flags | O_CLOEXEC, 0600);
	e = errno;
	printf("%s: %s\n", label, fd == -1 ? errname(e) : "ok");
	if (fd == -1)
		return;
	close(fd);
	if (flags & O_CREAT)
		unlink(path);
}

static int
landlock_mode(void)
{
	uint64_t size;
	int rc, fd;

	if (sb_narrow_caps(0) == -1) {
		printf("narrow: %s\n", errname(errno));
		return 2;
	}
	rc = sb_landlock_dev_only();
	printf("landlock: %d\n", rc);
	if (rc != 0)
		return rc == 1 ? 0 : 2;
	try_open("etc_passwd", "/etc/passwd", O_RDONLY);
	try_open("etc_dir", "/etc", O_RDONLY | O_DIRECTORY);
	try_open("proc_status", "/proc/self/status", O_RDONLY);
	try_open("dev_null", "/dev/null", O_RDWR);
	try_open("dev_dir", "/dev", O_RDONLY | O_DIRECTORY);
	try_open("dev_create", "/dev/loopfd-probe-must-not-exist",
	    O_WRONLY | O_CREAT | O_EXCL);
	/* IOCTL_DEV: a denied device ioctl is EACCES; granted, /dev/null
	 * answers ENOTTY itself. */
	fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return 2;
	rc = ioctl(fd, BLKGETSIZE64, &size);
	printf("dev_ioctl: %s\n", rc == -1 ? errname(errno) : "ok");
	close(fd);
	return 0;
}

int
main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "landlock") != 0 &&
	    strcmp(argv[1], "caps") != 0)
		return run_stage(argv[1], argv[2]);
	if (argc == 4 && strcmp(argv[1], "caps") == 0)
		return caps_mode(argv[2], argv[3]);
	if (argc == 2 && strcmp(argv[1], "landlock") == 0)
		return landlock_mode();
	fprintf(stderr, "usage: seccomp_probe serve|teardown ACTION\n"
	    "       seccomp_probe caps 0|1 0|1\n"
	    "       seccomp_probe landlock\n");
	return 2;
}
