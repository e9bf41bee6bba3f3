/*
 * hostile_exec: start the setuid helper the way a hostile invoker could, then
 * check it still behaves, or try to reach a running helper.
 *
 *   hostile_exec [--argc0] [--close-stdio] [--nofile N] [--nofile-soft N]
 *                [--fsize N] [--itimer MS] [--pause MS]
 *                [--env K=V]... [--image PATH] HELPER
 *	Runs HELPER on one end of a socketpair (fd 3), with argv empty
 *	(--argc0), fds 0-2 closed, RLIMIT_NOFILE/RLIMIT_FSIZE lowered and the
 *	given environment only, an interval timer armed (--itimer).  Then HELLO, LIST and, with --image, ATTACH
 *	and RELEASE.  Prints "served", or "closed: exit N" when the helper
 *	ended the session without a reply; exit 0 when every reply was right.
 *
 *   hostile_exec --idle PATH N SECONDS
 *	Connects N times to the daemon socket PATH and sends nothing; prints
 *	how many connections the daemon closed within 1 s ("early") and how
 *	many more by SECONDS ("late"), with the time of the last close.
 *
 *   hostile_exec --reach PID
 *	Tries kill(SIGSTOP), kill(SIGKILL) and PTRACE_ATTACH on PID and
 *	prints each result; exit 0 if all three failed with EPERM.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <poll.h>
#include <time.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include "loopfd_proto.h"

#define MAX_ENV 32

struct setup {
	int argc0;
	int close_stdio;
	long nofile;
	int nofile_soft_only;
	long fsize;
	long itimer_ms;		/* arm ITIMER_REAL before exec */
	long pause_ms;		/* between HELLO and LIST */
	char *env[MAX_ENV + 1];
	int nenv;
	const char *image;
	const char *helper;
};

static int try_reach(pid_t pid)
{
	int ok = 1, rc;

	rc = kill(pid, SIGSTOP);
	printf("kill SIGSTOP: %s\n", rc == 0 ? "succeeded" : strerror(errno));
	ok &= rc < 0 && errno == EPERM;
	if (rc == 0)
		kill(pid, SIGCONT);
	rc = ptrace(PTRACE_ATTACH, pid, NULL, NULL);
	printf("ptrace attach: %s\n", rc == 0 ? "succeeded" : strerror(errno));
	ok &= rc < 0 && errno == EPERM;
	if (rc == 0) {
		waitpid(pid, NULL, __WALL);
		ptrace(PTRACE_DETACH, pid, NULL, NULL);
	}
	rc = kill(pid, SIGKILL);
	printf("kill SIGKILL: %s\n", rc == 0 ? "succeeded" : strerror(errno));
	ok &= rc < 0 && errno == EPERM;
	return ok ? 0 : 1;
}

static void exec_helper(const struct setup *su, int sock)
{
	char *argv_normal[] = { "loopfd-helper", "--fd", "3", NULL };
	char *argv_empty[] = { NULL };
	struct rlimit rl;
	int i;

	if (dup2(sock, 3) < 0)
		_exit(120);
	if (su->nofile > 0) {
		if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
			_exit(121);
		rl.rlim_cur = (rlim_t)su->nofile;
		if (!su->nofile_soft_only)
			rl.rlim_max = (rlim_t)su->nofile;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			_exit(121);
	}
	if (su->fsize >= 0) {
		rl.rlim_cur = rl.rlim_max = (rlim_t)su->fsize;
		if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
			_exit(122);
	}
	if (su->itimer_ms > 0) {
		struct itimerval it = { { 0, 0 }, { su->itimer_ms / 1000,
						    (su->itimer_ms % 1000) * 1000 } };

		it.it_interval = it.it_value;
		if (setitimer(ITIMER_REAL, &it, NULL) < 0)
			_exit(123);
	}
	if (su->close_stdio)
		for (i = 0; i < 3; i++)
			close(i);
	execve(su->helper, su->argc0 ? argv_empty : argv_normal, (char **)su->env);
	_exit(127);
}

static long transact(int sock, struct lfd_msg *m, int fd_out, int *fd_in)
{
	uint8_t buf[LFD_MAX_MSG];
	int fds[4], nfds, flags, i;
	size_t len = lfd_encode(m, buf, sizeof(buf));
	long n;

	if (len == 0)
		return -1;
	if (lfd_send(sock, buf, len, fd_out) < 0)
		return errno == EPIPE || errno == ECONNRESET ? 0 : -1;
	n = lfd_recv(sock, buf, sizeof(buf), fds, 4, &nfds, &flags);
	if (n < 0 && errno == ECONNRESET)
		return 0;
	if (n <= 0)
		return n;
	for (i = 0; i < nfds && i < 4; i++) {
		if (fd_in && i == 0)
			*fd_in = fds[0];
		else
			close(fds[i]);
	}
	if (lfd_decode(buf, (size_t)n, m) != LFD_R_NONE)
		return -1;
	return n;
}

static int expect(int sock, struct lfd_msg *m, uint16_t op, int fd_out,
		  int *fd_in, const char *what)
{
	long n;

	m->version = LFD_VERSION;
	m->op = op;
	m->seq++;
	n = transact(sock, m, fd_out, fd_in);
	if (n == 0)
		return 1;		/* session closed */
	if (n < 0 || m->op != (op | LFD_REPLY)) {
		printf("bad reply to %s: %s\n", what, n < 0 ? "undecodable" :
		       m->op == LFD_OP_ERROR ? m->u.error.text : "wrong op");
		return -1;
	}
	return 0;
}

static int converse(const struct setup *su, int sock)
{
	struct lfd_msg m;
	int rc, img = -1, dev = -1;

	memset(&m, 0, sizeof(m));
	m.u.hello_req.min_version = m.u.hello_req.max_version = 1;
	rc = expect(sock, &m, LFD_OP_HELLO, -1, NULL, "hello");
	if (rc != 0)
		return rc;
	if (su->pause_ms > 0)
		usleep((useconds_t)su->pause_ms * 1000);
	memset(&m.u, 0, sizeof(m.u));
	if ((rc = expect(sock, &m, LFD_OP_LIST, -1, NULL, "list")) != 0)
		return rc < 0 ? rc : -1;
	if (!su->image)
		return 0;
	img = open(su->image, O_RDWR | O_CLOEXEC);
	if (img < 0) {
		perror(su->image);
		return -1;
	}
	memset(&m.u, 0, sizeof(m.u));
	rc = expect(sock, &m, LFD_OP_ATTACH, img, &dev, "attach");
	close(img);
	if (rc != 0 || dev < 0)
		return -1;
	if (write(dev, "loopfd", 6) != 6)
		rc = -1;
	close(dev);
	m.u.release_req.id = m.u.attach_rep.id;
	m.u.release_req.timeout_ms = 5000;
	if (expect(sock, &m, LFD_OP_RELEASE, -1, NULL, "release") != 0)
		return -1;
	return rc;
}

static int run_hostile(const struct setup *su)
{
	int sv[2], status, rc;
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return 2;
	pid = fork();
	if (pid == 0) {
		close(sv[0]);
		exec_helper(su, sv[1]);
	}
	close(sv[1]);
	rc = converse(su, sv[0]);
	close(sv[0]);
	waitpid(pid, &status, 0);
	if (rc == 1) {
		printf("closed: %s %d\n", WIFEXITED(status) ? "exit" : "signal",
		       WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
		return WIFSIGNALED(status) ? 1 : 0;
	}
	if (rc == 0)
		printf("served\n");
	return rc == 0 ? 0 : 1;
}

static double seconds_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Wait until every fd has hung up or until limit seconds; count those that
 * did by 1 s and after. */
static int idle_connections(const char *path, int n, double limit)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct pollfd p[256];
	struct timespec t0;
	int i, open_left, early = 0, late = 0;
	double last = 0, t;

	if (n < 1 || n > 256 || strlen(path) >= sizeof(addr.sun_path))
		return 2;
	memcpy(addr.sun_path, path, strlen(path) + 1);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 0; i < n; i++) {
		p[i].fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		p[i].events = POLLIN;
		if (p[i].fd < 0 || connect(p[i].fd, (struct sockaddr *)&addr,
					   sizeof(addr)) < 0) {
			perror(path);
			return 2;
		}
		usleep(2000);	/* in order, so the daemon sees them in order */
	}
	open_left = n;
	while (open_left > 0 && (t = seconds_since(&t0)) < limit) {
		if (poll(p, (nfds_t)n, 100) < 0)
			return 2;
		for (i = 0; i < n; i++) {
			if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP)))
				continue;
			close(p[i].fd);
			p[i].fd = -1;
			open_left--;
			last = seconds_since(&t0);
			if (last < 1.0)
				early++;
			else
				late++;
		}
	}
	printf("early %d late %d open %d last %.1f\n", early, late, open_left, last);
	return 0;
}

int main(int argc, char **argv)
{
	struct setup su = { .nofile = -1, .fsize = -1 };
	int i;

	if (argc == 3 && strcmp(argv[1], "--reach") == 0)
		return try_reach((pid_t)atoi(argv[2]));
	if (argc == 5 && strcmp(argv[1], "--idle") == 0)
		return idle_connections(argv[2], atoi(argv[3]), atof(argv[4]));
	for (i = 1; i < argc - 1; i++) {
		if (strcmp(argv[i], "--argc0") == 0)
			su.argc0 = 1;
		else if (strcmp(argv[i], "--close-stdio") == 0)
			su.close_stdio = 1;
		else if (strcmp(argv[i], "--nofile") == 0 && i + 1 < argc - 1)
			su.nofile = atol(argv[++i]);
		else if (strcmp(argv[i], "--nofile-soft") == 0 && i + 1 < argc - 1) {
			su.nofile = atol(argv[++i]);
			su.nofile_soft_only = 1;
		} else if (strcmp(argv[i], "--fsize") == 0 && i + 1 < argc - 1)
			su.fsize = atol(argv[++i]);
		else if (strcmp(argv[i], "--itimer") == 0 && i + 1 < argc - 1)
			su.itimer_ms = atol(argv[++i]);
		else if (strcmp(argv[i], "--pause") == 0 && i + 1 < argc - 1)
			su.pause_ms = atol(argv[++i]);
		else if (strcmp(argv[i], "--env") == 0 && i + 1 < argc - 1 &&
			 su.nenv < MAX_ENV)
			su.env[su.nenv++] = argv[++i];
		else if (strcmp(argv[i], "--image") == 0 && i + 1 < argc - 1)
			su.image = argv[++i];
		else {
			fprintf(stderr, "hostile_exec: bad argument %s\n", argv[i]);
			return 2;
		}
	}
	if (i != argc - 1) {
		fprintf(stderr, "usage: hostile_exec [options] HELPER | --reach PID\n");
		return 2;
	}
	su.helper = argv[i];
	signal(SIGPIPE, SIG_IGN);
	return run_hostile(&su);
}
