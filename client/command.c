/*
 * Starting COMMAND for `loopfd run` and `loopfd exec`: fork, and in the
 * child place the device fds and execvp, the way doas and bubblewrap start
 * their commands.  execvp(3) does the PATH walk and runs a file the kernel
 * cannot run by itself (no #! line) with /bin/sh; an exec failure travels
 * back to us over a close-on-exec pipe, so that the messages and the exit
 * statuses (127 not found, 126 not executable) are ours to write.
 *
 * Nested runs: when loopfd runs inside another loopfd's COMMAND, the outer
 * devices are already on fds 3... and named in LOOPFD_DEVICES.  The new
 * devices go on the fds after them, and the variables are appended to.
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define FIRST_DEVICE_FD		3

/* What the environment says about devices an outer loopfd gave us,
 * read before loopfd opens anything of its own (whose fds could otherwise
 * pass for inherited ones). */
static struct {
	int first_fd;		/* where our devices go */
	const char *devices;	/* LOOPFD_DEVICES to append to, or NULL */
	const char *names;	/* LOOPFD_NAMES to append to, or NULL */
} inherited = { FIRST_DEVICE_FD, NULL, NULL };

/*
 * LOOPFD_DEVICES="/dev/fd/3 /dev/fd/4": if every entry is an fd that is
 * open in this process, our devices go after the highest; otherwise the
 * variable is stale (a command closed them) and we start afresh at 3.
 */
void command_scan_inherited(void)
{
	const char *devs = getenv("LOOPFD_DEVICES"), *p;
	char *end;
	long fd, top = FIRST_DEVICE_FD - 1;

	if (devs == NULL || devs[0] == '\0')
		return;
	for (p = devs; *p != '\0'; p = end) {
		while (*p == ' ')
			p++;
		if (*p == '\0')
			break;
		if (strncmp(p, "/dev/fd/", 8) != 0)
			return;
		errno = 0;
		fd = strtol(p + 8, &end, 10);
		if (errno != 0 || end == p + 8 || (*end != ' ' && *end != '\0') ||
		    fd < FIRST_DEVICE_FD || fd > 65535 || fcntl((int)fd, F_GETFD) < 0)
			return;
		if (fd > top)
			top = fd;
	}
	inherited.first_fd = (int)top + 1;
	inherited.devices = devs;
	inherited.names = getenv("LOOPFD_NAMES");
}

/* "OLD NEW..." or "NEW...": one variable, appended to when nested. */
static int set_list(const char *var, const char *old, const char *const *items,
		    size_t n, int fd_form)
{
	size_t cap = (old ? strlen(old) : 0) + n * 48 + 1, len = 0, i;
	char *buf = malloc(cap);
	int rc;

	if (buf == NULL)
		return -1;
	buf[0] = '\0';
	if (old && old[0] != '\0')
		len = (size_t)snprintf(buf, cap, "%s", old);
	for (i = 0; i < n; i++) {
		const char *sep = len ? " " : "";

		if (fd_form)
			len += (size_t)snprintf(buf + len, cap - len, "%s/dev/fd/%d",
						sep, inherited.first_fd + (int)i);
		else
			len += (size_t)snprintf(buf + len, cap - len, "%s%s",
						sep, items[i]);
	}
	rc = setenv(var, buf, 1);
	free(buf);
	return rc;
}

/* The fd COMMAND gets our first device on (3 unless an outer loopfd's
 * devices are there). */
int command_first_fd(void)
{
	return inherited.first_fd;
}

/* LOOPFD_DEVICE, LOOPFD_NAME and LOOPFD_PATH name our first device;
 * LOOPFD_DEVICES and LOOPFD_NAMES list every device COMMAND has. */
static int export_env(const struct cmd_device *devs, size_t n)
{
	const char **names = calloc(n ? n : 1, sizeof(*names));
	char first[32];
	size_t i;
	int rc = -1;

	if (names == NULL)
		goto out;
	for (i = 0; i < n; i++)
		names[i] = devs[i].name;
	snprintf(first, sizeof(first), "/dev/fd/%d", inherited.first_fd);
	if (setenv("LOOPFD_DEVICE", first, 1) == 0 &&
	    setenv("LOOPFD_NAME", devs[0].name, 1) == 0 &&
	    setenv("LOOPFD_PATH", devs[0].path, 1) == 0 &&
	    set_list("LOOPFD_DEVICES", inherited.devices, names, n, 1) == 0 &&
	    set_list("LOOPFD_NAMES", inherited.names, names, n, 0) == 0)
		rc = 0;
out:
	if (rc < 0)
		perror("loopfd: setting the environment");
	free(names);
	return rc;
}

void command_forward_set(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGQUIT);
	sigaddset(set, SIGCHLD);
}

/* What the child tells us when it does not get as far as COMMAND. */
struct child_failure {
	int preparing;		/* our own setup, not the exec */
	int err;
};

static void child_fail(int pipe_fd, int preparing, int err)
{
	struct child_failure f = { preparing, err };

	if (write(pipe_fd, &f, sizeof(f)) < 0) {
		/* nothing left to tell it with */
	}
	_exit(EXIT_NOT_FOUND);
}

/*
 * The child: devices onto their fds (dup2 of a close-on-exec copy gives an
 * fd without FD_CLOEXEC), the signal mask from before ours, exec.
 */
static void child(char **cmd, const int *copies, size_t n, const sigset_t *orig,
		  int pipe_fd)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (dup2(copies[i], inherited.first_fd + (int)i) < 0)
			child_fail(pipe_fd, 1, errno);
	if (sigprocmask(SIG_SETMASK, orig, NULL) < 0)
		child_fail(pipe_fd, 1, errno);
	execvp(cmd[0], cmd);
	child_fail(pipe_fd, 0, errno);
}

/*
 * Each device is first copied above the target range (close-on-exec), so
 * that placing one in the child cannot overwrite another sitting on its
 * target.  Done here, in the parent, so that running out of fds is our
 * failure and said so.
 */
static int copy_devices(const struct cmd_device *devs, size_t n, int *copies)
{
	int top = inherited.first_fd + (int)n;
	size_t i;

	for (i = 0; i < n; i++) {
		copies[i] = fcntl(devs[i].fd, F_DUPFD_CLOEXEC, top);
		if (copies[i] < 0)
			return errno;
	}
	return 0;
}

/* fork + exec; 0 and *pid, or an error number and *preparing. */
static int start(char **cmd, const int *copies, size_t n, const sigset_t *orig,
		 pid_t *pid, int *preparing)
{
	struct child_failure f;
	int p[2];
	ssize_t r;

	*preparing = 1;
	if (pipe2(p, O_CLOEXEC) < 0)
		return errno;
	*pid = fork();
	if (*pid < 0) {
		close(p[0]);
		close(p[1]);
		return errno;
	}
	if (*pid == 0)
		child(cmd, copies, n, orig, p[1]);
	close(p[1]);
	do {
		r = read(p[0], &f, sizeof(f));
	} while (r < 0 && errno == EINTR);
	close(p[0]);
	if (r != (ssize_t)sizeof(f))
		return 0;		/* end of file: the exec succeeded */
	/* The child has exited: reap it here, before anyone waits for it. */
	while (waitpid(*pid, NULL, 0) < 0 && errno == EINTR)
		;
	*preparing = f.preparing;
	return f.err;
}

/* SIGINT and SIGQUIT from the kernel come from the terminal, which sends
 * them to the whole foreground process group: COMMAND got its own, and a
 * second one could cut its cleanup short. */
static void forward_signal(pid_t pid, const siginfo_t *si)
{
	if ((si->si_signo == SIGINT || si->si_signo == SIGQUIT) &&
	    si->si_code == SI_KERNEL)
		return;
	kill(pid, si->si_signo);
}

/* Wait for COMMAND, passing signals on.  Only this loop reaps it, so pid
 * cannot be reused by another process while we may still signal it. */
static int wait_command(pid_t pid, const sigset_t *set, int *status)
{
	siginfo_t si;
	pid_t r;

	for (;;) {
		if (sigwaitinfo(set, &si) < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (si.si_signo != SIGCHLD) {
			forward_signal(pid, &si);
			continue;
		}
		/* Any child's SIGCHLD (a spawned helper's too): is it ours? */
		r = waitpid(pid, status, WNOHANG);
		if (r == pid)
			return 0;
		if (r < 0 && errno != EINTR)
			return -1;
	}
}

static int exit_status(int st)
{
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return EXIT_LOOPFD_SETUP;
}

static int spawn_and_wait(char **cmd, const int *copies, size_t n)
{
	sigset_t set, orig;
	pid_t pid = -1;
	int st, rc, preparing;

	command_forward_set(&set);
	if (sigprocmask(SIG_BLOCK, &set, &orig) < 0) {
		perror("loopfd: sigprocmask");
		return EXIT_LOOPFD_SETUP;
	}
	rc = start(cmd, copies, n, &orig, &pid, &preparing);
	if (rc != 0 && preparing) {
		fprintf(stderr, "loopfd: cannot prepare to start %s: %s\n",
			cmd[0], strerror(rc));
		return EXIT_LOOPFD_SETUP;
	}
	if (rc != 0) {
		fprintf(stderr, "loopfd: %s: %s\n", cmd[0], strerror(rc));
		return rc == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_EXEC;
	}
	if (wait_command(pid, &set, &st) < 0) {
		perror("loopfd: waiting for the command");
		return EXIT_LOOPFD_SETUP;
	}
	return exit_status(st);
}

/*
 * Run COMMAND with devs on fds first_fd... and return its exit status: 127
 * if it was not found, 126 if it could not be started otherwise (as a shell
 * reports), EXIT_LOOPFD_SETUP if our own preparation or the waiting failed.
 * The forwarded signals stay blocked afterwards, through the release.
 */
int command_run(char **cmd, const struct cmd_device *devs, size_t n)
{
	int *copies = calloc(n ? n : 1, sizeof(*copies));
	size_t i;
	int rc;

	if (copies == NULL) {
		perror("loopfd");
		return EXIT_LOOPFD_SETUP;
	}
	for (i = 0; i < n; i++)
		copies[i] = -1;
	if (export_env(devs, n) < 0) {
		rc = EXIT_LOOPFD_SETUP;
	} else if ((rc = copy_devices(devs, n, copies)) != 0) {
		fprintf(stderr, "loopfd: cannot prepare to start %s: %s\n",
			cmd[0], strerror(rc));
		rc = EXIT_LOOPFD_SETUP;
	} else {
		rc = spawn_and_wait(cmd, copies, n);
	}
	for (i = 0; i < n; i++)
		if (copies[i] >= 0)
			close(copies[i]);
	free(copies);
	return rc;
}
