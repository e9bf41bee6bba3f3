/*
 * loopfd-helper: the privileged program.  One serving code path
 * (serve.c), three ways in (main.c), the loop-device work (loopdev.c), the
 * policy file (config.c), system-wide device accounting (quota.c).
 */
#ifndef LOOPFD_HELPER_H
#define LOOPFD_HELPER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "loopfd_proto.h"

#define POLICY_MAX_IDS		64
#define POLICY_MAX_PER_USER	256	/* slots reserved per uid in the slot file */
#define POLICY_MAX_TOTAL	65536
#define CALLER_MAX_GROUPS	256
#define SESSION_END_TIMEOUT_MS	10000	/* release wait when a client vanished */
#define HELLO_TIMEOUT_MS	10000	/* a connection that says nothing */
#define REFUSED_TIMEOUT_MS	1000	/* a refused one: for its first request */
#define WATCH_INTERVAL_MS	1000	/* re-check of devices released busy */

/* ---- policy (config.c) ---------------------------------------------------- */

struct policy {
	int restricted;			/* any allow-users/allow-groups line */
	uid_t users[POLICY_MAX_IDS];
	size_t nusers;
	gid_t groups[POLICY_MAX_IDS];
	size_t ngroups;
	unsigned max_per_user;		/* default 16 */
	unsigned max_total;		/* default 256 */
	int allow_grant;		/* default yes */
	int allow_partscan;		/* default yes */
	int allow_direct_io;		/* default yes */
	int allow_block_devices;	/* default no */
	uint32_t backing_fs;		/* allow-backing-fs: bit per policy-only kind */
};

void policy_defaults(struct policy *p);

/* Whether a backing file on a filesystem of type f_type (statfs) may be
 * attached: the local ones always, the others only where allow-backing-fs
 * names them (config.c says why).  *name: the type's name, or NULL. */
int policy_allows_fs(const struct policy *p, unsigned long f_type,
		     const char **name);

/* Parse the text of a config file.  On error returns -1 and writes a
 * message naming path, line and problem into err. */
int config_parse(const char *text, size_t len, const char *path,
		 struct policy *p, char *err, size_t errlen);

/* Check the directories above path (root's, not group- or world-writable
 * unless sticky), then open, check (root-owned, not group/world-writable,
 * regular) and parse path.  A missing file in trusted directories gives the
 * defaults.  -1 with a message in err; CONFIG_ERR_CONTENTS (-2) when the
 * message quotes the file's contents (a parse error), which must then go to
 * the log only: the caller may not be able to read the file. */
#define CONFIG_ERR_CONTENTS	(-2)
int config_load(const char *path, struct policy *p, char *err, size_t errlen);

/* ---- the caller ----------------------------------------------------------- */

struct caller {
	uid_t uid;
	gid_t gid;
	gid_t groups[CALLER_MAX_GROUPS];
	int ngroups;
};

int policy_allows(const struct policy *p, const struct caller *c);

/* ---- quota (quota.c): byte-range OFD locks on one root-owned file --------- */

/* Open (creating) $(RUNSTATEDIR)/slots for this session: a file description
 * of its own, so that locks conflict between sessions and vanish with a
 * session's process, whatever kills it. */
int quota_open(const char *rundir, char *err, size_t errlen);

/* Take a free slot among limit slots of the region; -1 with errno EDQUOT
 * when all are held by other sessions.  held is a bitset of the slots this
 * session holds already (its own locks would not conflict). */
int quota_take(int fd, uint64_t base, unsigned limit, const unsigned char *held);
int quota_put(int fd, uint64_t base, int slot);
uint64_t quota_user_base(uid_t uid);
#define QUOTA_GLOBAL_BASE	0
/* Setuid sessions (each with its guard) a uid may run at once: root
 * processes its user's pids and memory limits no longer count. */
#define QUOTA_SESSIONS_PER_UID	128
uint64_t quota_session_base(uid_t uid);

/* ---- a session ------------------------------------------------------------ */

struct device {
	int in_use;
	int watching;			/* released busy/changed: slots held until gone */
	int fd;				/* the helper's own fd, opened before attach */
	int backing_fd;			/* the helper's dup of the client's backing fd */
	int lost_errno;			/* a release's flushes: first error, or 0 */
	int image_errno;		/* ... of them, the image's own write-back */
	int shared_loss;		/* another device's image_errno, same image */
	int cleared;			/* a release saw another opener's LOOP_CLR_FD */
	struct lfd_device ident;	/* what the client was told */
	dev_t rdev;
	uint64_t binding_ino;		/* its binding's sysfs directory (loopdev.c) */
	int granted;			/* node chowned to the caller */
	uid_t node_uid;			/* node owner/mode to restore */
	gid_t node_gid;
	mode_t node_mode;
	int user_slot;
	int global_slot;
};

struct session {
	int sock;
	int mode;			/* enum lfd_mode */
	struct caller caller;
	struct policy policy;
	int ctl_fd;			/* /dev/loop-control */
	int quota_fd;
	int guard_fd;			/* its end tells the guard we are gone (guard.c) */
	struct guard_entry *guard_table;	/* shared with the guard (guard.c) */
	int oom_immune;			/* setuid: oom_score_adj is -1000 */
	const char *refusal;		/* set: answer every request with this */
	enum lfd_reason refusal_reason;
	int hello_done;
	int reply_failed;		/* client gone or not reading: end */
	uint32_t next_id;
	struct device dev[LFD_MAX_DEVICES];
	unsigned char user_slots[POLICY_MAX_PER_USER / 8];	/* bitsets of held slots */
	unsigned char global_slots[POLICY_MAX_TOTAL / 8];
};

/* serve.c */
void serve(struct session *s);
void session_end(struct session *s);

/* loopdev.c: an attachment, in steps (loopdev.c says more; serve.c takes
 * them) */
struct attach_job {
	struct device *d;
	int backing_fd;			/* the client's, from the request */
	const struct lfd_attach_req *req;
	uint32_t flags;			/* req's, READ_ONLY added for a read-only fd */
	dev_t backing_dev;		/* the backing file, to check the read-back */
	ino_t backing_ino;
	int bound;			/* LOOP_CONFIGURE through d->fd succeeded */
	int bind_rc;			/* loop_bind_all: 0, or -1 with err */
	struct lfd_msg err;
};
int loop_attach_prepare(const struct session *s, struct attach_job *j);
int loop_attach_bind(struct session *s, struct attach_job *j);
void loop_reserve_nodes(struct session *s, struct attach_job *j, unsigned n);
int loop_bind_reserved(struct attach_job *j);
int loop_attach_finish(struct session *s, struct attach_job *j, int *client_fd);
void loop_attach_undo(struct attach_job *j);
enum release_result {
	RELEASE_DONE = 0,		/* flushed, detached, all data in the file */
	RELEASE_FAILED = -1,		/* detached, but data was lost */
	RELEASE_STILL_ATTACHED = -2,	/* busy or changed: watch until gone */
};
/* A release, in steps (loopdev.c says more; serve.c takes them) */
int loop_release_begin(struct device *d, struct lfd_msg *err);
void loop_flush(struct device *d);
enum clear_result {
	CLEAR_GONE,		/* detached */
	CLEAR_HELD,		/* others hold it: loop_release_wait */
	CLEAR_UNKNOWN,		/* cannot tell: treated as still attached */
	CLEAR_ERROR,		/* not cleared: RELEASE_STILL_ATTACHED, error in err */
};
enum clear_result loop_release_clear(struct device *d, struct lfd_msg *err);
int loop_release_wait(struct device *d, uint32_t timeout_ms, uint32_t *waited_ms);
int loop_release_outcome(struct device *d, int gone, uint32_t waited_ms,
			 struct lfd_msg *err);

/* threads.c: a batch's binds and flushes on threads, all joined before
 * each returns.  loop_bind_all: the index of the first entry that failed
 * (its bind_rc -1 and err), or n. */
unsigned loop_bind_all(struct session *s, struct attach_job *j, unsigned n);
void loop_flush_all(struct device **dev, unsigned n);
int loop_detached(const struct device *d);

/* guard.c: a process per session that outlives it (see guard.c) */
int guard_start(struct session *s);
int guard_note_attached(const struct session *s, const struct device *d,
			int grant);
void guard_note_gone(const struct session *s, const struct device *d);

/* clock.c */
uint64_t now_ms(void);
void sleep_ms(unsigned ms);
void sleep_us(unsigned long us);

/* log.c: one line to stderr, prefixed "loopfd-helper[pid]: " */
void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* kernel.c: Linux 5.15 or later, or exit(1) with a message naming both. */
int kernel_release_at_least(const char *release, unsigned major, unsigned minor);
void require_minimum_kernel(void);

#endif
