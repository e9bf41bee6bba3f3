/*
 * Logging: one line to stderr per message, written with a single write(2)
 * so lines from concurrent session processes do not interleave.  stderr is
 * the journal under systemd, the daemon's log file, or the invoking user's
 * terminal in setuid mode.  No syslog: that would need socket(2), which the
 * seccomp filter forbids.
 */
#include "helper.h"

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

void logmsg(const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n, m;

	n = snprintf(line, sizeof(line), "loopfd-helper[%d]: ", (int)getpid());
	if (n < 0)
		return;
	va_start(ap, fmt);
	m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		return;
	n += m;
	if ((size_t)n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		return;		/* nowhere left to report it */
}
