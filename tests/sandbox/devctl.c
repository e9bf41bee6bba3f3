/*
 * devctl: what a hostile client can do to its own device through the fd
 * loopfd gave it.
 *
 *   devctl clear FD             LOOP_CLR_FD
 *   devctl change FD FILE       LOOP_CHANGE_FD to FILE (read-only devices)
 *   devctl offset FD BYTES      LOOP_SET_STATUS64 with a new offset
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
	fprintf(stderr, "devctl: bad arguments\n");
	return 2;
}
