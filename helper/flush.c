/*
 * The flushes of a batch release, run concurrently.
 *
 * A release's flush mostly waits: for the device's write-back and for the
 * backing file's fsync, which on a clean image is a cache flush of the disk
 * under it.  Concurrent flushes overlap those waits (the block layer merges
 * flush requests that are pending together): a batch release of 41 clean
 * devices came to 51, 39, 34 and 40 us a device on 2, 4, 8 and 16 threads
 * (KERNEL-FACTS.md).  So up to FLUSH_THREADS threads, this one included,
 * take devices from a shared counter; a thread that cannot start leaves its
 * share to the others.
 *
 * Every flush is joined before loop_flush_all returns, so all of a batch's
 * data is in the images before the first clear (a device whose image lies
 * on another device of the batch is flushed before that one goes).  No
 * thread outlives the call: the session stacks its teardown filter later
 * with seccomp() without TSYNC, which filters the calling thread only, and
 * no other per-thread state (credentials, Landlock) changes while threads
 * run.  The threads open no fds: a shared fd table grows only after an RCU
 * grace period, 10-12 ms here (KERNEL-FACTS.md).  Their own syscalls (clone
 * with pthread_create's flags, futex, rseq...) are allowed by the serve
 * filter (sandbox/seccomp_policy.c).
 */
#include "helper.h"

#include <pthread.h>

#define FLUSH_THREADS	8
/* Not glibc's default, which is the caller's RLIMIT_STACK: a flush and a
 * log line need a few KiB; above PTHREAD_STACK_MIN everywhere (128 KiB on
 * arm64), or pthread_create would refuse it. */
#define FLUSH_STACK	((size_t)256 * 1024)

struct flush_work {
	struct device **dev;
	unsigned n;
	unsigned next;		/* the next device to flush; shared */
};

static void flush_some(struct flush_work *w)
{
	unsigned i;

	while ((i = __atomic_fetch_add(&w->next, 1, __ATOMIC_RELAXED)) < w->n)
		loop_flush(w->dev[i]);
}

static void *flush_thread(void *arg)
{
	flush_some(arg);
	return NULL;
}

static unsigned start_threads(struct flush_work *w, pthread_t *t, unsigned max)
{
	pthread_attr_t attr;
	unsigned started = 0;

	if (pthread_attr_init(&attr) != 0)
		return 0;
	if (pthread_attr_setstacksize(&attr, FLUSH_STACK) == 0)
		while (started < max &&
		       pthread_create(&t[started], &attr, flush_thread, w) == 0)
			started++;
	pthread_attr_destroy(&attr);
	return started;
}

void loop_flush_all(struct device **dev, unsigned n)
{
	struct flush_work w = { dev, n, 0 };
	pthread_t t[FLUSH_THREADS - 1];
	unsigned i, started = 0;

	if (n > 1)
		started = start_threads(&w, t, n - 1 < FLUSH_THREADS - 1 ?
					n - 1 : FLUSH_THREADS - 1);
	flush_some(&w);
	for (i = 0; i < started; i++)
		pthread_join(t[i], NULL);
}
