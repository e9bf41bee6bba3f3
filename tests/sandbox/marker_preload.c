/*
 * A library that, if anything ever loads it into the helper, leaves a marker
 * file: the proof that LD_PRELOAD from a setuid caller had an effect.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((constructor)) static void leave_marker(void)
{
	const char *path = getenv("LOOPFD_MARKER");
	int fd;

	if (path == NULL)
		return;
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
	if (fd >= 0) {
		if (write(fd, "loaded\n", 7) < 0)
			_exit(99);
		close(fd);
	}
}
