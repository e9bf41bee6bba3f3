/*
 * The oldest kernel loopfd runs on: Linux 5.15.  It is the first with both
 * calls the helper's guarantees rest on: LOOP_CONFIGURE (5.8: bind and set
 * the status in one step) and BLKGETDISKSEQ (5.15: tells our attachment
 * from a later one on the same node).  close_range (5.9) comes with them.
 * Older kernels are refused at start, before anything else happens,
 * rather than served with weaker checks nobody can test.
 */
#include "helper.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#define KERNEL_MIN_MAJOR	5
#define KERNEL_MIN_MINOR	15

/* A decimal number at *p, which is moved past it. */
static int parse_number(const char **p, unsigned long *v)
{
	char *end;

	if (!isdigit((unsigned char)**p))
		return -1;
	*v = strtoul(*p, &end, 10);
	*p = end;
	return 0;
}

/* 1 if release ("MAJOR.MINOR[anything]", as uname(2) reports it) is
 * major.minor or later; 0 if older or not in that form. */
int kernel_release_at_least(const char *release, unsigned major, unsigned minor)
{
	unsigned long a, b;
	const char *p = release;

	if (parse_number(&p, &a) < 0 || *p++ != '.' || parse_number(&p, &b) < 0)
		return 0;
	return a > major || (a == major && b >= minor);
}

/* A caller can only make the release look older (personality UNAME26):
 * that denies the caller itself and nobody else. */
void require_minimum_kernel(void)
{
	struct utsname u;

	if (uname(&u) < 0) {
		logmsg("uname: %s", strerror(errno));
		exit(1);
	}
	if (kernel_release_at_least(u.release, KERNEL_MIN_MAJOR, KERNEL_MIN_MINOR))
		return;
	logmsg("this is Linux %s; loopfd needs Linux %d.%d or later "
	       "(LOOP_CONFIGURE, BLKGETDISKSEQ)", u.release,
	       KERNEL_MIN_MAJOR, KERNEL_MIN_MINOR);
	exit(1);
}
