/*
 * devctl: what a hostile client can do to its own device through the fd
 * loopfd gave it.
 *
 *   devctl clear FD             LOOP_CLR_FD
 *   devctl change FD FILE       LOOP_CHANGE_FD to FILE (read-only devices)
 *   devctl offset FD BYTES      LOOP_SET_STATUS64 with a new offset
 *   devctl noautoclear FD       LOOP_SET_STATUS64 without LO_FLAGS_AUTOCLEAR
 *   devctl noautoclear-blind FD the same without reading the status first
 *                               (offset and size limit 0, as loopfd's
 *                               defaults): works while the backing file
 *                               fails getattr, which LOOP_GET_STATUS64 asks
 *   devctl clear-loop FD MS     LOOP_CLR_FD as fast as it can for MS ms,
 *                               keeping FD open (hunting the moment the
 *                               helper holds no fd of its own)
 *
 * Exit 0 when the kernel accepted the ioctl, 1 with the errno text if not.
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

static int report(const char *what, int rc)
{
	if (rc < 0) {
		printf("%s: %s\n", what, strerror(errno));
		return 1;
	}
	printf("%s: ok\n", what);
	return 0;
}

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int clear_loop(int fd, long ms)
{
	long end = now_ms() + ms, n = 0;

	while (now_ms() < end)
		if (ioctl(fd, LOOP_CLR_FD, 0) == 0)
			n++;
	printf("LOOP_CLR_FD: %ld accepted\n", n);
	return 0;
}

int main(int argc, char **argv)
{
	struct loop_info64 info;
	int fd, file;

	if (argc < 3) {
		fprintf(stderr, "usage: devctl clear|change|offset FD [ARG]\n");
		return 2;
	}
	fd = atoi(argv[2]);
	if (strcmp(argv[1], "clear") == 0)
		return report("LOOP_CLR_FD", ioctl(fd, LOOP_CLR_FD, 0));
	if (strcmp(argv[1], "change") == 0 && argc == 4) {
		file = open(argv[3], O_RDONLY | O_CLOEXEC);
		if (file < 0)
			return report(argv[3], -1);
		return report("LOOP_CHANGE_FD", ioctl(fd, LOOP_CHANGE_FD, file));
	}
	if (strcmp(argv[1], "offset") == 0 && argc == 4) {
		if (ioctl(fd, LOOP_GET_STATUS64, &info) < 0)
			return report("LOOP_GET_STATUS64", -1);
		info.lo_offset = strtoull(argv[3], NULL, 10);
		return report("LOOP_SET_STATUS64", ioctl(fd, LOOP_SET_STATUS64, &info));
	}
	if (strcmp(argv[1], "noautoclear") == 0) {
		if (ioctl(fd, LOOP_GET_STATUS64, &info) < 0)
			return report("LOOP_GET_STATUS64", -1);
		info.lo_flags &= ~(unsigned)LO_FLAGS_AUTOCLEAR;
		return report("LOOP_SET_STATUS64", ioctl(fd, LOOP_SET_STATUS64, &info));
	}
	if (strcmp(argv[1], "noautoclear-blind") == 0) {
		memset(&info, 0, sizeof(info));
		return report("LOOP_SET_STATUS64", ioctl(fd, LOOP_SET_STATUS64, &info));
	}
	if (strcmp(argv[1], "clear-loop") == 0 && argc == 4)
		return clear_loop(fd, atol(argv[3]));
	fprintf(stderr, "devctl: bad arguments\n");
	return 2;
}
