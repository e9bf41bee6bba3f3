/*
 * grabber: a competitor for free loop devices, as root.
 *
 *   grabber FILE MS
 *
 * For MS milliseconds, as fast as it can, what a batch attach does: from
 * LOOP_CTL_GET_FREE's index up, for each of the next RANGE existing nodes,
 * open it and LOOP_CONFIGURE it to FILE with AUTOCLEAR; then close them all
 * (the autoclear detach: it was their only opener).  LOOP_CONFIGURE binds
 * only an unbound device and the grabber unbinds only what it bound, so
 * nothing else is touched; killed, its closes detach its devices.  Prints
 * how many binds it won and lost (EBUSY: another attacher bound the device
 * first).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#define RANGE	16

/* Node n bound to file: its fd, or -1 (lost, absent or unusable). */
static int grab(int n, int file, long *won, long *lost)
{
	struct loop_config cfg;
	char path[32];
	int fd;

	snprintf(path, sizeof(path), "/dev/loop%d", n);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -1;
	memset(&cfg, 0, sizeof(cfg));
	cfg.fd = (unsigned)file;
	cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
	if (ioctl(fd, LOOP_CONFIGURE, &cfg) == 0) {
		(*won)++;
		return fd;
	}
	if (errno == EBUSY)
		(*lost)++;
	close(fd);
	return -1;
}

int main(int argc, char **argv)
{
	long end, won = 0, lost = 0;
	int ctl, file, n, i, fd[RANGE];

	if (argc != 3) {
		fprintf(stderr, "usage: grabber FILE MS\n");
		return 2;
	}
	file = open(argv[1], O_RDWR | O_CLOEXEC);
	ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (file < 0 || ctl < 0) {
		perror("grabber: open");
		return 1;
	}
	end = now_ms() + atol(argv[2]);
	while (now_ms() < end) {
		n = ioctl(ctl, LOOP_CTL_GET_FREE);
		if (n < 0) {
			perror("grabber: LOOP_CTL_GET_FREE");
			return 1;
		}
		for (i = 0; i < RANGE; i++)
			fd[i] = grab(n + i, file, &won, &lost);
		for (i = 0; i < RANGE; i++)
			if (fd[i] >= 0)
				close(fd[i]);
	}
	printf("grabber: %ld won, %ld lost\n", won, lost);
	return 0;
}
