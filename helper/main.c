/*
 * loopfd-helper: attach loop devices to backing-file fds for unprivileged
 * callers, and flush and clear them safely on release.
 *
 * Read this file top to bottom: it is the order in which privilege is
 * narrowed.  Nothing from the caller (argv, environment, fds, limits,
 * signals, cgroup, oom_score_adj, scheduling) is trusted before the hygiene
 * and reach steps; nothing from the client's socket is read before the
 * policy is loaded, the caller authorized, the capability set is
 * {CAP_SYS_ADMIN} (plus CAP_CHOWN when --grant is allowed), Landlock
 * confines files to /dev, the session's guard runs, and the seccomp
 * allowlist is loaded.
 *
 * Ways in, one serving path (serve.c):
 *   loopfd-helper --fd N          setuid root, spawned by libloopfd with one
 *                                 end of a socketpair on fd N
 *   loopfd-helper --listen PATH   root daemon, one process per connection
 *   loopfd-helper --systemd       socket activation (LISTEN_FDS=1)
 */
#include "helper.h"
#include "paths.h"
#include "sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_CONNECTIONS	256	/* daemon: concurrent session processes */
#define MAX_CONNECTIONS_PER_UID	32	/* so one user cannot fill the table */
#define SEND_TIMEOUT_S	10	/* a client that stops reading ends its session */

enum run_mode { RUN_SESSION, RUN_LISTEN, RUN_SYSTEMD };

struct options {
	enum run_mode mode;
	int fd;			/* RUN_SESSION */
	const char *path;	/* RUN_LISTEN */
};

static const char usage_text[] =
"usage: loopfd-helper --fd N          (spawned by libloopfd; setuid root)\n"
"       loopfd-helper --listen PATH   (root daemon on a Unix socket)\n"
"       loopfd-helper --systemd       (systemd socket activation)\n"
"       loopfd-helper --check-config  (as root: check the policy file)\n"
"       loopfd-helper --help | --version\n"
"\n"
"The privileged half of loopfd: attaches loop devices to backing-file fds\n"
"sent by unprivileged clients, and flushes and clears them on release.\n"
"Users run 'loopfd', not this program.  Policy: " LOOPFD_CONFIG_PATH "\n";

static void die(const char *step, int err) __attribute__((noreturn));
static void die(const char *step, int err)
{
	logmsg("%s: %s", step, strerror(err));
	_exit(1);
}

static int parse_fd(const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || end == s || v < 3 || v > 1023)
		return -1;
	return (int)v;
}

/* --check-config: what every session would make of the policy file, with
 * the full text of any problem (root only: it may quote the file). */
static int check_config(void)
{
	struct policy p;
	char err[512];

	if (config_load(LOOPFD_CONFIG_PATH, &p, err, sizeof(err)) != 0) {
		fprintf(stderr, "loopfd-helper: %s\n", err);
		return 1;
	}
	printf("%s: valid%s\n", LOOPFD_CONFIG_PATH,
	       access(LOOPFD_CONFIG_PATH, F_OK) == 0 ? "" : " (missing: the defaults)");
	return 0;
}

/*
 * argv from a setuid caller is hostile: argc may be 0 (CVE-2021-4034's
 * shape: argv[0] NULL and argv[1] the environment).  Only exact argument
 * counts are accepted, and argv is never written.  A non-root invoker may
 * only ask for a session on an inherited socket: --listen would let it
 * create root-owned sockets anywhere.
 */
static void parse_args(int argc, char **argv, int invoker_is_root,
		       struct options *o)
{
	memset(o, 0, sizeof(*o));
	o->fd = -1;
	if (argc == 2 && strcmp(argv[1], "--help") == 0) {
		fputs(usage_text, stdout);
		exit(0);
	}
	if (argc == 2 && strcmp(argv[1], "--version") == 0) {
		puts("loopfd-helper " LOOPFD_VERSION);
		exit(0);
	}
	if (invoker_is_root && argc == 2 && strcmp(argv[1], "--check-config") == 0)
		exit(check_config());
	if (argc == 3 && strcmp(argv[1], "--fd") == 0 &&
	    (o->fd = parse_fd(argv[2])) >= 0) {
		o->mode = RUN_SESSION;
		return;
	}
	if (invoker_is_root && argc == 3 && strcmp(argv[1], "--listen") == 0 &&
	    argv[2][0] == '/') {
		o->mode = RUN_LISTEN;
		o->path = argv[2];
		return;
	}
	if (invoker_is_root && argc == 2 && strcmp(argv[1], "--systemd") == 0) {
		o->mode = RUN_SYSTEMD;
		o->fd = 3;
		return;
	}
	if (argc >= 1 && !invoker_is_root)
		fputs("loopfd-helper: only '--fd N' is accepted from a non-root "
		      "invoker; run 'loopfd' instead\n", stderr);
	else
		fputs(usage_text, stderr);
	exit(2);
}

/* systemd passes LISTEN_PID/LISTEN_FDS; honoured only for a root invoker
 * (a setuid caller controls the environment) and read before it is wiped. */
static void check_socket_activation(const struct options *o)
{
	const char *pid = getenv("LISTEN_PID"), *n = getenv("LISTEN_FDS");

	if (o->mode != RUN_SYSTEMD)
		return;
	if (!pid || !n || strtol(pid, NULL, 10) != (long)getpid() ||
	    strcmp(n, "1") != 0) {
		logmsg("--systemd: expected LISTEN_PID=%d and LISTEN_FDS=1",
		       (int)getpid());
		exit(1);
	}
}

/* The caller as the process sees it: real ids, inherited groups. */
static void record_invoker(struct caller *c)
{
	memset(c, 0, sizeof(*c));
	c->uid = getuid();
	c->gid = getgid();
	c->ngroups = getgroups(CALLER_MAX_GROUPS, c->groups);
	if (c->ngroups < 0)
		c->ngroups = 0;
}

/* The caller as the kernel vouches for it on a socket. */
static int record_peer(int sock, struct caller *c)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	memset(c, 0, sizeof(*c));
	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -1;
	c->uid = cred.uid;
	c->gid = cred.gid;
	len = sizeof(c->groups);
	if (getsockopt(sock, SOL_SOCKET, SO_PEERGROUPS, c->groups, &len) == 0)
		c->ngroups = (int)(len / sizeof(gid_t));
	return 0;
}

static int is_seqpacket(int fd)
{
	int type = 0;
	socklen_t len = sizeof(type);

	return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 &&
	       type == SOCK_SEQPACKET;
}

static int is_listening(int fd)
{
	int on = 0;
	socklen_t len = sizeof(on);

	return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on;
}

/* Whatever fails now is reported to the client in place of service.  The
 * log gets the full text; the client gets why, which must not quote a file
 * it may not be able to read. */
static void refuse_service(struct session *s, enum lfd_reason r, const char *why)
{
	static char text[LFD_MSG_TEXT];

	snprintf(text, sizeof(text), "%s", why);
	s->refusal = text;
	s->refusal_reason = r;
	/* In setuid mode the log is the caller's stderr, and the reply tells
	 * it already: said once. */
	if (s->mode != LFD_MODE_SETUID)
		logmsg("refusing uid %u: %s", (unsigned)s->caller.uid, why);
}

/* Could anyone, the caller included, read the policy file itself?  Then
 * quoting it tells nothing new.  Only "everyone" is judged (world-readable,
 * every directory above world-searchable): group bits, ACLs and the
 * caller's groups are not worth the risk of misjudging. */
static int caller_can_read(const char *path)
{
	char dir[PATH_MAX];
	struct stat st;
	char *slash;

	if (stat(path, &st) < 0 || !(st.st_mode & S_IROTH) ||
	    strlen(path) >= sizeof(dir))
		return 0;
	memcpy(dir, path, strlen(path) + 1);
	while ((slash = strrchr(dir, '/')) != NULL && slash != dir) {
		*slash = '\0';
		if (stat(dir, &st) < 0 || !(st.st_mode & S_IXOTH))
			return 0;
	}
	return 1;
}

/* Step: the policy, read anew for every session.  Unusable means no
 * service (and no grant), never the defaults. */
static void load_policy(struct session *s)
{
	char err[512], pub[LFD_MSG_TEXT];
	int rc = config_load(LOOPFD_CONFIG_PATH, &s->policy, err, sizeof(err));

	if (rc == 0)
		return;
	policy_defaults(&s->policy);
	s->policy.allow_grant = 0;
	if (rc != CONFIG_ERR_CONTENTS ||
	    caller_can_read(LOOPFD_CONFIG_PATH)) {
		refuse_service(s, LFD_R_CONFIG, err);
		return;
	}
	/* A parse error quotes the file, which the caller cannot read: the
	 * words go to the log only, and in setuid mode the log is the
	 * caller's stderr. */
	if (s->mode != LFD_MODE_SETUID)
		logmsg("%s", err);
	snprintf(pub, sizeof(pub), "%s is not a valid policy file (it is "
		 "not readable by uid %u: 'loopfd-helper --check-config' as "
		 "root names the line and the problem)", LOOPFD_CONFIG_PATH,
		 (unsigned)s->caller.uid);
	refuse_service(s, LFD_R_CONFIG, pub);
}

/* Step: is this caller (kernel-vouched ids) allowed by the policy? */
static void authorize_caller(struct session *s)
{
	char why[LFD_MSG_TEXT];

	if (s->refusal || policy_allows(&s->policy, &s->caller))
		return;
	snprintf(why, sizeof(why), "uid %u is not allowed to use loopfd by %s",
		 (unsigned)s->caller.uid, LOOPFD_CONFIG_PATH);
	refuse_service(s, LFD_R_NOT_AUTHORIZED, why);
}

/* The slot file and /dev/loop-control, while files can be opened; only
 * for a caller who will be served. */
static void open_session_files(struct session *s)
{
	char err[512];

	if (s->refusal)
		return;
	s->quota_fd = quota_open(LOOPFD_RUNDIR, err, sizeof(err));
	if (s->quota_fd < 0) {
		refuse_service(s, LFD_R_CONFIG, err);
		return;
	}
	s->ctl_fd = open("/dev/loop-control", O_RDWR | O_CLOEXEC | O_NOCTTY);
	if (s->ctl_fd < 0) {
		snprintf(err, sizeof(err), "/dev/loop-control: %s", strerror(errno));
		refuse_service(s, LFD_R_NO_DEVICE, err);
	}
}

/* At most QUOTA_SESSIONS_PER_UID setuid sessions per uid at once: a slot
 * of the slot file, an OFD lock the guard shares, so it is held until
 * both processes are gone. */
static void take_session_slot(struct session *s)
{
	unsigned char none[QUOTA_SESSIONS_PER_UID / 8] = { 0 };
	char why[LFD_MSG_TEXT];

	if (s->refusal || s->mode != LFD_MODE_SETUID)
		return;
	if (quota_take(s->quota_fd, quota_session_base(s->caller.uid),
		       QUOTA_SESSIONS_PER_UID, none) >= 0)
		return;
	snprintf(why, sizeof(why), "uid %u already runs %d loopfd sessions "
		 "(setuid helpers), the limit", (unsigned)s->caller.uid,
		 QUOTA_SESSIONS_PER_UID);
	refuse_service(s, LFD_R_QUOTA_USER, why);
}

#ifndef SO_PASSPIDFD
#define SO_PASSPIDFD	76	/* Linux 6.5; older libc headers lack it */
#endif

static void disable_sockopt(int sock, int opt)
{
	int off = 0;

	/* ENOPROTOOPT on kernels without the option: nothing to turn off. */
	setsockopt(sock, SOL_SOCKET, opt, &off, sizeof(off));
}

/* A lever the caller holds over us that we cannot take away: refuse to
 * serve, and say which and what to do instead. */
static void refuse_reach(const char *lever, const char *why)
	__attribute__((noreturn));
static void refuse_reach(const char *lever, const char *why)
{
	logmsg("refusing to run: %s: %s; the caller could end or stop the "
	       "helper between a flush and a clear.  Use socket mode instead "
	       "(loopfd-helper --listen, or the loopfd.socket unit, with "
	       "LOOPFD_SOCKET)", lever, why);
	_exit(1);
}

/* Setuid session with a slot: out of every cgroup the caller could use
 * against us.  Refused sessions stay where they are (they hold nothing,
 * end at once, and so stay under the user's own pids limit). */
static void leave_user_cgroups(const struct session *s)
{
	char what[PATH_MAX + 64];

	if (s->mode != LFD_MODE_SETUID || s->refusal)
		return;
	if (sb_leave_user_cgroups(s->oom_immune, what, sizeof(what)) < 0)
		refuse_reach(what, errno == ENOENT ? "not mounted where the "
			     "helper can check who controls it" :
			     errno == EPERM ? "even its hierarchy's root is "
			     "writable by others or memory-limited" :
			     strerror(errno));
}

/*
 * One session, from a connected socket to exit.  Privilege is narrowed
 * here, in this order, before the first byte from the client is read.
 */
static void run_session(struct session *s) __attribute__((noreturn));
static void run_session(struct session *s)
{
	struct timeval tv = { .tv_sec = SEND_TIMEOUT_S };
	int rc;

	/* 1. A client that never reads must not block us forever.  Options a
	 *    spawner may have set on our end of a socketpair are turned off:
	 *    SO_PASSCRED/SO_PASSPIDFD/SO_TIMESTAMP would attach control data
	 *    (a pidfd is an fd installed in our table) to every message. */
	setsockopt(s->sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	disable_sockopt(s->sock, SO_PASSCRED);
	disable_sockopt(s->sock, SO_PASSPIDFD);
	disable_sockopt(s->sock, SO_TIMESTAMP);

	/* 2. The policy, then the caller against it: two steps.  A refusal
	 *    is answered to every request; nothing else happens. */
	s->ctl_fd = s->quota_fd = s->guard_fd = -1;
	load_policy(s);
	authorize_caller(s);

	/* 3. Slot file and loop-control, while files can be opened. */
	open_session_files(s);

	/* 4. Setuid: a slot among the uid's sessions (they run as root,
	 *    outside the user's pids and memory limits), then out of every
	 *    cgroup the caller could use against us; refused sessions stay
	 *    put and end after one reply. */
	take_session_slot(s);
	leave_user_cgroups(s);

	/* 5. Capabilities: {CAP_SYS_ADMIN} (BLKFLSBUF), plus CAP_CHOWN only if
	 *    the policy allows --grant; bounding set empty, securebits locked,
	 *    no_new_privs. */
	if (sb_narrow_caps(s->policy.allow_grant) < 0)
		die("narrowing capabilities", errno);

	/* 6. Landlock: files only beneath /dev from here on.  Fail closed: a
	 *    uid-0 helper that could still open any root-owned file is not
	 *    run (Landlock is in every kernel we support, but can be left
	 *    out of the boot's lsm= list). */
	rc = sb_landlock_dev_only();
	if (rc != 0)
		die("Landlock (confining the helper to /dev)",
		    rc < 0 ? errno : EOPNOTSUPP);

	/* 7. The guard: a process that outlives this one, so that no death
	 *    of ours leaves a node granted or lets slots go early. */
	if (!s->refusal && guard_start(s) < 0)
		die("starting the session's guard", errno);

	/* 8. Setuid: let go of the caller's stdio.  A full pipe (or a stopped
	 *    terminal) on stderr would otherwise block the helper in its next
	 *    log line, between a flush and a clear, for as long as the caller
	 *    likes; everything from here on reaches the client as replies. */
	if (s->mode == LFD_MODE_SETUID && sb_stdio_to_devnull() < 0)
		die("letting go of the caller's stdio", errno);

	/* 9. seccomp stage 1: the serving loop's syscalls and ioctls only. */
	if (sb_seccomp_serve() < 0)
		die("seccomp (serve)", errno);

	/* 10. Serve until the client hangs up, crashes or is killed. */
	serve(s);

	/* 11. seccomp stage 2: only flush, clear, close, log and exit remain. */
	if (sb_seccomp_teardown() < 0)
		die("seccomp (teardown)", errno);
	session_end(s);
	_exit(0);
}

static int make_listen_socket(const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct stat st;
	int fd;

	if (strlen(path) >= sizeof(addr.sun_path))
		die("--listen: path too long", ENAMETOOLONG);
	memcpy(addr.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket", errno);
	/* Replace a stale socket from an earlier run, nothing else: not a
	 * file, and not the socket of a daemon that is still serving (a
	 * connect that succeeds; the daemon closes the probe connection). */
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			logmsg("--listen %s: exists and is not a socket", path);
			exit(1);
		}
		if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0 ||
		    errno == EAGAIN) {
			logmsg("--listen %s: a live daemon is serving this "
			       "socket; not replacing it", path);
			exit(1);
		}
		close(fd);
		unlink(path);
		fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		if (fd < 0)
			die("socket", errno);
	}
	/* Connectable by all: the policy, not the socket mode, decides who is
	 * served (SO_PEERCRED identifies every peer).  The mode comes from the
	 * umask at bind time, not a chmod by path afterwards, which would
	 * follow a symlink swapped in meanwhile. */
	umask(0111);
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		logmsg("--listen %s: bind: %s", path, strerror(errno));
		exit(1);
	}
	umask(077);
	if (listen(fd, 128) < 0)
		die("--listen", errno);
	return fd;
}

/* The daemon's session processes, by peer uid. */
struct connections {
	pid_t pid[MAX_CONNECTIONS];
	uid_t uid[MAX_CONNECTIONS];
	int n;
};

static void reap_connections(struct connections *c)
{
	pid_t pid;
	int i;

	while ((pid = waitpid(-1, NULL, WNOHANG)) > 0) {
		for (i = 0; i < c->n; i++) {
			if (c->pid[i] != pid)
				continue;
			c->n--;
			c->pid[i] = c->pid[c->n];
			c->uid[i] = c->uid[c->n];
			break;
		}
	}
}

/* Room for one more session of uid?  Never blocks: a full table answers
 * new connections by closing them, so one user's idle connections cannot
 * stall everyone else's. */
static int admit(const struct connections *c, uid_t uid)
{
	int i, mine = 0;

	if (c->n >= MAX_CONNECTIONS)
		return 0;
	for (i = 0; i < c->n; i++)
		mine += c->uid[i] == uid;
	return mine < MAX_CONNECTIONS_PER_UID;
}

static void serve_connection(int lfd, int conn, int mode, const struct caller *peer)
	__attribute__((noreturn));
static void serve_connection(int lfd, int conn, int mode, const struct caller *peer)
{
	static struct session s;

	close(lfd);
	memset(&s, 0, sizeof(s));
	s.sock = conn;
	s.mode = mode;
	s.caller = *peer;
	run_session(&s);
}

/* SIGTERM and SIGINT end the daemon at once; they are blocked except while
 * it waits for a connection, so a fork is never interrupted halfway. */
static void block_stop_signals(sigset_t *stop, sigset_t *waitmask)
{
	sigemptyset(stop);
	sigaddset(stop, SIGTERM);
	sigaddset(stop, SIGINT);
	sigprocmask(SIG_BLOCK, stop, waitmask);
	sigdelset(waitmask, SIGTERM);
	sigdelset(waitmask, SIGINT);
}

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

/* Wait for a connection or a stop signal.  0: accept; -1: stop. */
static int wait_for_connection(int lfd, const sigset_t *waitmask)
{
	struct pollfd p = { .fd = lfd, .events = POLLIN };

	while (!stop_requested) {
		if (ppoll(&p, 1, NULL, waitmask) > 0)
			return 0;
	}
	return -1;
}

/* Daemon: accept, fork one session process per connection.  The parent
 * keeps only what its children need ({CAP_SYS_ADMIN, CAP_CHOWN}) and runs
 * under a seccomp filter of its own (no exec, no new sockets, no mounts);
 * each child narrows further from its own policy read. */
static void run_listener(int lfd, int mode, const char *path)
	__attribute__((noreturn));
static void run_listener(int lfd, int mode, const char *path)
{
	static struct connections conns;
	struct sigaction sa = { .sa_handler = on_stop_signal };
	sigset_t stop, waitmask;
	struct caller peer;
	int conn;
	pid_t pid;

	if (sb_narrow_caps(1) < 0)
		die("narrowing capabilities", errno);
	block_stop_signals(&stop, &waitmask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	if (sb_seccomp_listener() < 0)
		die("seccomp (listener)", errno);
	logmsg("serving %s%s", path ? path : "socket-activated connections",
	       path ? " (SOCK_SEQPACKET)" : "");
	while (wait_for_connection(lfd, &waitmask) == 0) {
		conn = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		reap_connections(&conns);
		if (conn < 0) {
			if (errno != EINTR && errno != ECONNABORTED &&
			    errno != EAGAIN)
				logmsg("accept: %s", strerror(errno));
			continue;
		}
		if (record_peer(conn, &peer) < 0) {
			logmsg("closing a connection: SO_PEERCRED: %s",
			       strerror(errno));
			close(conn);
			continue;
		}
		if (!admit(&conns, peer.uid)) {
			logmsg("closing a connection from uid %u: too many "
			       "sessions", (unsigned)peer.uid);
			close(conn);
			continue;
		}
		pid = fork();
		if (pid == 0) {
			/* a session ignores SIGINT, as in every mode */
			signal(SIGTERM, SIG_DFL);
			signal(SIGINT, SIG_IGN);
			sigprocmask(SIG_UNBLOCK, &stop, NULL);
			serve_connection(lfd, conn, mode, &peer);
		}
		if (pid < 0) {
			logmsg("fork: %s", strerror(errno));
		} else {
			conns.pid[conns.n] = pid;
			conns.uid[conns.n] = peer.uid;
			conns.n++;
		}
		close(conn);
	}
	/* Sessions go on to their end on their own; a socket we made is
	 * removed so the next daemon does not take it for a live one. */
	reap_connections(&conns);
	if (path && unlink(path) < 0)
		logmsg("--listen %s: cannot remove: %s", path, strerror(errno));
	logmsg("stopped (signal); %d session%s still running, each to its "
	       "own end", conns.n, conns.n == 1 ? "" : "s");
	_exit(0);
}

/*
 * Setuid session: what else of the caller's reach a setuid exec carries
 * over.  Each step leaves the lever or refuses (sandbox/reach.c).  The
 * daemon modes are started by root (systemd): their cgroup, oom score and
 * scheduling are the administrator's.
 */
static void leave_session_reach(struct session *s)
{
	/* fails if the caller made us a group leader: the terminal signals
	 * are ignored for that */
	setsid();
	/* oom_score_adj first: whether the OOM killer can still pick us
	 * decides which cgroups are a lever (a memory limit on one we share,
	 * even root's, lets the caller bring the OOM killer in); the cgroups
	 * are left in run_session, once the session has a slot. */
	if (sb_reset_oom_score(&s->oom_immune) < 0)
		refuse_reach("oom_score_adj", errno == EPERM ? "cannot be brought "
			     "to 0 or below (oom_score_adj_min is above 0)" :
			     strerror(errno));
	if (sb_reset_scheduling() < 0)
		refuse_reach("the scheduling policy, nice value or I/O priority",
			     strerror(errno));
}

int main(int argc, char **argv)
{
	static struct session s;
	struct caller invoker;
	struct options o;
	const char *limit;
	int keep[1];

	/* 1. fds 0-2 open before anything else can be opened onto them. */
	if (sb_ensure_stdio() < 0)
		_exit(127);

	/* 2. Who invoked us, recorded once and kept in variables: from here
	 *    on privilege state is never re-derived from geteuid(). */
	record_invoker(&invoker);
	require_minimum_kernel();

	/* 3. Arguments: exact forms only; a non-root invoker gets --fd only. */
	parse_args(argc, argv, invoker.uid == 0, &o);
	check_socket_activation(&o);

	/* 4. Hygiene: inherited fds, signals, limits, environment, umask, cwd,
	 *    dumpability are all the caller's choice until reset here. */
	keep[0] = o.fd;
	if (sb_close_fds_except(keep, o.fd >= 0 ? 1 : 0) < 0)
		die("closing inherited fds", errno);
	if (sb_reset_signals() < 0)
		die("resetting signals", errno);
	if (sb_reset_limits(&limit) < 0)
		refuse_reach(limit, errno == EPERM ? "the caller's hard limit is "
			     "lower than the helper needs (or finite where a hard "
			     "limit kills), and raising it needs CAP_SYS_RESOURCE" :
			     strerror(errno));
	if (sb_reset_environment() < 0)
		die("resetting the environment", errno);
	if (sb_reset_process() < 0)
		die("resetting process state", errno);

	/* 5. Setuid: out of the invoking user's reach (no kill, no SIGSTOP,
	 *    no ptrace, no terminal signals), so it cannot freeze or kill us
	 *    between flush and clear. */
	if (sb_leave_callers_reach() < 0)
		refuse_reach("the process ids", errno == EPERM ? "setresuid(0) "
			     "failed: not running setuid root (a user namespace, "
			     "a nosuid mount or no_new_privs)" : strerror(errno));
	memset(&s, 0, sizeof(s));
	if (o.mode == RUN_SESSION)
		leave_session_reach(&s);

	switch (o.mode) {
	case RUN_SESSION:
		if (!is_seqpacket(o.fd)) {
			logmsg("--fd %d: not a SOCK_SEQPACKET socket", o.fd);
			_exit(1);
		}
		s.sock = o.fd;
		s.mode = LFD_MODE_SETUID;
		s.caller = invoker;
		run_session(&s);
	case RUN_LISTEN:
		run_listener(make_listen_socket(o.path), LFD_MODE_LISTEN, o.path);
	case RUN_SYSTEMD:
		if (!is_seqpacket(o.fd))
			die("LISTEN_FDS: fd 3 is not a SOCK_SEQPACKET socket", EINVAL);
		if (is_listening(o.fd))
			run_listener(o.fd, LFD_MODE_SYSTEMD, NULL);
		/* Accept=yes: fd 3 is one connection. */
		s.sock = o.fd;
		s.mode = LFD_MODE_SYSTEMD;
		if (record_peer(o.fd, &s.caller) < 0)
			die("SO_PEERCRED", errno);
		run_session(&s);
	}
	return 1;
}
