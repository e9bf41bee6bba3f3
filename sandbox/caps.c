/*
 * Capabilities: the helper stays uid 0 (the loop nodes are root-owned 0600
 * and it reaches them by ownership, not by CAP_DAC_OVERRIDE) but keeps only
 * CAP_SYS_ADMIN (BLKFLSBUF) and, when the config lets it hand devices to the
 * caller, CAP_CHOWN.  Securebits make uid 0 stop meaning "all capabilities"
 * so that nothing the helper does later (an execve, a setuid call) can
 * bring the rest back.
 */
#include <errno.h>
#include <linux/securebits.h>
#include <sys/capability.h>
#include <sys/prctl.h>

#include "sandbox.h"

/* NOROOT: execve as uid 0 no longer grants a full permitted set.
 * NO_SETUID_FIXUP: uid changes neither drop nor restore capabilities.
 * KEEP_CAPS stays off, and locked off.
 * NO_CAP_AMBIENT_RAISE: no capability can be carried across execve.
 * Every bit locked, so not even CAP_SETPCAP (which we drop) could undo it. */
#define SB_SECUREBITS (SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | \
	SECBIT_NO_SETUID_FIXUP | SECBIT_NO_SETUID_FIXUP_LOCKED | \
	SECBIT_KEEP_CAPS_LOCKED | \
	SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED)

/* Capability numbers fit in the kernel's 64-bit masks; a kernel that
 * answers PR_CAPBSET_READ beyond that is not one we understand. */
#define SB_CAP_LIMIT 64

static int
lock_securebits(void)
{
	int cur;

	cur = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
	if (cur == -1)
		return -1;
	/* Second call (a daemon's per-connection child): the bits are set and
	 * locked, and CAP_SETPCAP is gone, so setting them again would fail
	 * with EPERM.  Anything other than exactly our value is an error
	 * that the PR_SET below reports. */
	if (cur == SB_SECUREBITS)
		return 0;
	return prctl(PR_SET_SECUREBITS, SB_SECUREBITS, 0, 0, 0);
}

/* Empty the bounding set so that no execve, by any route, can gain a
 * capability we no longer hold.  The kernel, not a header, says how many
 * capabilities exist: PR_CAPBSET_READ fails with EINVAL past the last one,
 * so capabilities newer than our headers are dropped too. */
static int
drop_bounding_set(void)
{
	int cap, in;

	for (cap = 0; cap < SB_CAP_LIMIT; cap++) {
		in = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
		if (in == -1 && errno == EINVAL)
			return 0;
		if (in == -1)
			return -1;
		/* Already dropped (second call, without CAP_SETPCAP). */
		if (in == 0)
			continue;
		if (cap_drop_bound((cap_value_t)cap) == -1)
			return -1;
	}
	errno = EOVERFLOW;
	return -1;
}

/* permitted = effective = the kept capabilities, inheritable empty.  This
 * can only lower the sets: the kernel refuses (EPERM) to add to permitted,
 * so a second call asking for CAP_CHOWN after it was dropped fails. */
static int
set_process_caps(int keep_chown)
{
	cap_value_t keep[2] = { CAP_SYS_ADMIN, CAP_CHOWN };
	int nkeep = keep_chown ? 2 : 1;
	cap_t caps;
	int rc = -1, saved;

	caps = cap_init();
	if (caps == NULL)
		return -1;
	if (cap_set_flag(caps, CAP_PERMITTED, nkeep, keep, CAP_SET) == 0 &&
	    cap_set_flag(caps, CAP_EFFECTIVE, nkeep, keep, CAP_SET) == 0)
		rc = cap_set_proc(caps);
	saved = errno;
	cap_free(caps);
	errno = saved;
	return rc;
}

int
sb_narrow_caps(int keep_chown)
{
	/* Order matters: securebits and the bounding set need CAP_SETPCAP,
	 * which set_process_caps removes. */
	if (lock_securebits() == -1)
		return -1;
	if (drop_bounding_set() == -1)
		return -1;
	/* Ambient capabilities would survive an execve of an unprivileged
	 * program; clearing needs no privilege. */
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) == -1)
		return -1;
	if (set_process_caps(keep_chown) == -1)
		return -1;
	/* No execve can ever raise privileges again (setuid bits, file caps).
	 * Landlock and seccomp also accept a filter from an NNP process
	 * without looking at CAP_SYS_ADMIN. */
	return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
}
