/*
 * sandbox/: everything that takes the helper from "a setuid-root process in
 * a state the caller chose" to "one capability, a syscall allowlist, /dev
 * only".  helper/main.c calls these in order; each is one step a reviewer can
 * check, and each returns -1 with errno set on failure (the caller names the
 * step in its error message and exits: fail closed).
 */
#ifndef LOOPFD_SANDBOX_H
#define LOOPFD_SANDBOX_H

#include <stddef.h>
#include <sys/types.h>

/* ---- process hygiene (sandbox/hygiene.c) --------------------------------- */

/* fds 0, 1, 2 open (to /dev/null where the caller closed them), so that no
 * file the helper opens later can become its stdout or stderr. */
int sb_ensure_stdio(void);

/* Close every fd above 2 except the n fds in keep[]. */
int sb_close_fds_except(const int *keep, size_t n);

/* Every signal disposition back to SIG_DFL, mask emptied; ignored: SIGPIPE
 * and SIGXFSZ (a failed log write is an error, not a death), the interval
 * timer signals and the terminal signals (the caller's timers and tty can
 * still reach us after sb_leave_callers_reach). */
int sb_reset_signals(void);

/* Resource limits to fixed values: RLIMIT_CORE 0; RLIMIT_NOFILE 1024;
 * RLIMIT_CPU, RLIMIT_RTTIME, RLIMIT_FSIZE, RLIMIT_AS, RLIMIT_DATA unlimited,
 * RLIMIT_STACK 8 MiB soft, unlimited hard, where the hard limit allows (root
 * may raise it).  A caller-lowered limit must neither kill the helper nor
 * make it fail halfway through a release.  Where a hard limit cannot be
 * raised (no CAP_SYS_RESOURCE, e.g. a container's bounding set) the soft
 * limit goes as high as the hard one allows, and the call fails with EPERM
 * and *which naming the limit if that leaves RLIMIT_CPU or RLIMIT_RTTIME
 * finite (their hard limit kills), RLIMIT_NOFILE below 320, RLIMIT_STACK
 * below 1 MiB or RLIMIT_AS/RLIMIT_DATA below 256 MiB. */
int sb_reset_limits(const char **which);

/* Replace the environment with a fixed minimal one (PATH only). */
int sb_reset_environment(void);

/* umask 077, cwd "/", interval timers disarmed, not dumpable (no core, no
 * ptrace by the caller). */
int sb_reset_process(void);

/* Replace fds 0-2 by a read-only /dev/null (writes fail, harmlessly), so
 * that a helper outliving its session holds nothing of the caller's open.
 * Usable under the teardown seccomp stage (open read-only, close, fcntl). */
int sb_stdio_to_devnull(void);

/* Setuid mode: make real, effective and saved uid and gid 0 and drop
 * supplementary groups, so the invoking user can neither signal nor ptrace
 * the helper (kill(2) and ptrace check the target's real/saved uid).
 * Call after the caller's identity has been recorded. */
int sb_leave_callers_reach(void);

/* ---- out of the caller's reach (sandbox/reach.c) ------------------------ */

/* Setuid mode, as root with full capabilities: leave every cgroup the
 * caller could write to (kill, freeze, migrate, limit) for the root cgroup
 * of its hierarchy, and, unless oom_immune, every cgroup with a memory
 * limit (whoever set it: the caller could fill it and bring the OOM killer
 * in).  -1 with errno, and what naming the cgroup, when a cgroup cannot be
 * proven out of reach or left. */
int sb_leave_user_cgroups(int oom_immune, char *what, size_t whatlen);

/* oom_score_adj -1000 (*immune = 1), or 0 where CAP_SYS_RESOURCE is
 * missing (*immune = 0); -1 (EPERM) if it stays above 0. */
int sb_reset_oom_score(int *immune);

/* SCHED_OTHER, nice 0, default I/O priority, every CPU, default timer
 * slack: nothing the caller set can starve the helper. */
int sb_reset_scheduling(void);

/* ---- capabilities (sandbox/caps.c) --------------------------------------- */

/* Bounding set emptied, ambient set cleared, securebits NOROOT,
 * NO_SETUID_FIXUP, KEEP_CAPS off, NO_CAP_AMBIENT_RAISE, all locked;
 * permitted = effective = {CAP_SYS_ADMIN} plus CAP_CHOWN when keep_chown;
 * inheritable empty; no_new_privs on.  Idempotent: a second call (a daemon's
 * per-connection child narrowing further) only lowers the sets. */
int sb_narrow_caps(int keep_chown);

/* ---- Landlock (sandbox/landlock.c) --------------------------------------- */

/* Filesystem access only beneath /dev (read, write, device ioctls).
 * Returns 0 when enforced, 1 when the kernel has no Landlock (the caller
 * logs once and goes on), -1 on error. */
int sb_landlock_dev_only(void);

/* ---- seccomp (sandbox/seccomp.c) ----------------------------------------- */

/* Stage 1, before the first byte from the client is read: the syscalls and
 * ioctl requests the serving loop uses, nothing else.  Default action
 * SCMP_ACT_KILL_PROCESS, native architecture only. */
int sb_seccomp_serve(void);

/* Stage 2, stacked when the session ends: only what flushing and clearing
 * the remaining devices, closing, logging and exiting need. */
int sb_seccomp_teardown(void);

/* The session's guard process (helper/guard.c): reading its parent's
 * notes, giving nodes back by path, watching devices detach. */
int sb_seccomp_guard(void);

/* The daemon's listener: accept, fork, reap, log; no files, no devices. */
int sb_seccomp_listener(void);

#endif
