/*
 * The two steps of a batch that run on threads: the binds of a batch
 * attach and the flushes of a batch release.
 *
 * Both mostly wait.  LOOP_CONFIGURE fsyncs the backing file (on a clean
 * image, a cache flush of the disk under it) and a release's flush waits
 * for the device's write-back and for that same fsync.  Done at the same
 * time, the waits overlap (the block layer merges flush requests that are
 * pending together): on 2 vCPUs, 41 binds came to 53, 47, 34, 30 and 34 us
 * a device on 1, 2, 3, 4 and 8 threads, and 41 clean flushes to 51, 39, 34
 * and 40 on 2, 4, 8 and 16 (KERNEL-FACTS.md).  So up to BIND_THREADS or
 * FLUSH_THREADS threads, this one included, take items from a shared
 * counter; a thread that cannot start leaves its share to the others.
 *
 * Every thread is joined before loop_bind_all or loop_flush_all returns:
 * all of a batch's data is in the images before the first clear (a device
 * whose image lies on another device of the batch is flushed before that
 * one goes), and no thread outlives the request.  The session stacks its
 * teardown filter later with seccomp() without TSYNC, which filters the
 * calling thread only, and no other per-thread state (credentials,
 * Landlock) changes while threads run.  The threads open no fds (the nodes
 * are opened before, by loop_reserve_nodes): a shared fd table grows only
 * after an RCU grace period, 10-12 ms here (KERNEL-FACTS.md).  Their own
 * syscalls (clone with pthread_create's flags, futex, rseq...) are allowed
 * by the serve filter (sandbox/seccomp_policy.c).
 */
#include "helper.h"

#include <pthread.h>

#define BIND_THREADS	4
#define BIND_MIN	8	/* fewer binds do not pay for starting threads */
#define FLUSH_THREADS	8
/* Not glibc's default, which is the caller's RLIMIT_STACK: a flush and a
 * log line need a few KiB; above PTHREAD_STACK_MIN everywhere (128 KiB on
 * arm64), or pthread_create would refuse it. */
#define THREAD_STACK	((size_t)256 * 1024)

struct spread {
	void (*one)(void *items, unsigned i);
	void *items;
	unsigned n;
	unsigned next;		/* the next item; shared */
};

static void take_items(struct spread *w)
{
	unsigned i;

	while ((i = __atomic_fetch_add(&w->next, 1, __ATOMIC_RELAXED)) < w->n)
		w->one(w->items, i);
}

static void *spread_thread(void *arg)
{
	take_items(arg);
	return NULL;
}

static unsigned start_threads(struct spread *w, pthread_t *t, unsigned max)
{
	pthread_attr_t attr;
	unsigned started = 0;

	if (pthread_attr_init(&attr) != 0)
		return 0;
	if (pthread_attr_setstacksize(&attr, THREAD_STACK) == 0)
		while (started < max &&
		       pthread_create(&t[started], &attr, spread_thread, w) == 0)
			started++;
	pthread_attr_destroy(&attr);
	return started;
}

/* one(items, i) for each i < n, on up to threads threads, this one
 * included; all joined on return. */
static void spread_over_threads(void (*one)(void *, unsigned), void *items,
				unsigned n, unsigned threads)
{
	struct spread w = { one, items, n, 0 };
	pthread_t t[FLUSH_THREADS - 1];
	unsigned i, started = 0;

	if (threads > FLUSH_THREADS)
		threads = FLUSH_THREADS;
	if (n > 1 && threads > 1)
		started = start_threads(&w, t, n - 1 < threads - 1 ?
					n - 1 : threads - 1);
	take_items(&w);
	for (i = 0; i < started; i++)
		pthread_join(t[i], NULL);
}

static void bind_one(void *items, unsigned i)
{
	struct attach_job *j = items;

	j[i].bind_rc = loop_bind_reserved(&j[i]);
}

/*
 * The jobs' nodes are reserved and bound on threads; a job whose node
 * another attacher took first (or that got none) is then bound alone,
 * through LOOP_CTL_GET_FREE, in entry order, up to the first failure.
 */
unsigned loop_bind_all(struct session *s, struct attach_job *j, unsigned n)
{
	unsigned i;

	for (i = 0; i < n; i++)
		j[i].bind_rc = 1;
	if (n >= BIND_MIN) {
		loop_reserve_nodes(s, j, n);
		spread_over_threads(bind_one, j, n, BIND_THREADS);
	}
	for (i = 0; i < n; i++) {
		if (j[i].bind_rc == 1)
			j[i].bind_rc = loop_attach_bind(s, &j[i]);
		if (j[i].bind_rc < 0)
			return i;
	}
	return n;
}

static void flush_one(void *items, unsigned i)
{
	struct device **dev = items;

	loop_flush(dev[i]);
}

void loop_flush_all(struct device **dev, unsigned n)
{
	spread_over_threads(flush_one, dev, n, FLUSH_THREADS);
}
