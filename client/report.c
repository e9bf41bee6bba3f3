/*
 * What loopfd tells its user beyond the library's messages: release
 * outcomes (text, JSON receipts, exit statuses), the processes that keep a
 * busy device open, a full filesystem under an image.
 */
#include "cli.h"
#include "loopfd_proto.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>

/* ---- release outcomes ------------------------------------------------------ */

/* The helper's own words: the library prefixes them with the operation. */
const char *release_text(const struct loopfd_error *err)
{
	const char *msg = loopfd_strerror(err);
	static const char *const prefixes[] = {
		"release: helper refused: ", "release: ",
	};
	size_t i;

	for (i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
		if (strncmp(msg, prefixes[i], strlen(prefixes[i])) == 0)
			return msg + strlen(prefixes[i]);
	return msg;
}

/* The receipt's "outcome": one word a script can switch on. */
const char *release_outcome(int ok, const struct loopfd_error *err)
{
	if (ok)
		return "released";
	switch (err->reason) {
	case LFD_R_BUSY:		return "busy";
	case LFD_R_DATA_LOST:		return "data-lost";
	case LFD_R_DEVICE_CHANGED:	return "device-changed";
	default:			return "failed";
	}
}

/* Busy: everything written before the release is in the image (the helper
 * flushed before waiting), the device detaches at its last close.  Anything
 * else: the data is not confirmed. */
int release_exit_status(const struct loopfd_error *err)
{
	return err->reason == LFD_R_BUSY ? EXIT_LOOPFD_BUSY : EXIT_LOOPFD_DATA;
}

/* ---- JSON ------------------------------------------------------------------- */

void json_string(FILE *f, const char *s)
{
	const unsigned char *p;

	fputc('"', f);
	for (p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

static const char *json_bool(int v)
{
	return v ? "true" : "false";
}

/* The fields every device record has (list, attach event, receipt). */
void json_device_fields(FILE *f, const char *image,
			       const struct loopfd_device *d)
{
	fputs("\"name\":", f);
	json_string(f, d->name);
	fputs(",\"device\":", f);
	json_string(f, d->path);
	fputs(",\"image\":", f);
	json_string(f, image);
	fprintf(f, ",\"backing_dev\":\"%u:%u\",\"backing_ino\":%" PRIu64
		",\"major\":%u,\"minor\":%u,\"diskseq\":%" PRIu64
		",\"size\":%" PRIu64 ",\"offset\":%" PRIu64
		",\"sizelimit\":%" PRIu64 ",\"sector_size\":%u"
		",\"read_only\":%s,\"partscan\":%s,\"direct_io\":%s"
		",\"granted\":%s",
		major((dev_t)d->backing_dev), minor((dev_t)d->backing_dev),
		d->backing_ino, d->major, d->minor, d->diskseq, d->size,
		d->offset, d->sizelimit, d->sector_size,
		json_bool(d->flags & LOOPFD_READ_ONLY),
		json_bool(d->flags & LOOPFD_PARTSCAN),
		json_bool(d->flags & LOOPFD_DIRECT_IO),
		json_bool(d->flags & LOOPFD_GRANT));
}

void json_device(FILE *f, const char *event, const char *image,
		 const struct loopfd_device *dev)
{
	fputs("{\"event\":", f);
	json_string(f, event);
	fputc(',', f);
	json_device_fields(f, image, dev);
	fputs("}\n", f);
}

/*
 * The release receipt.  flushed: everything written through the device
 * before the release reached the image; detached: the device no longer
 * references it; null where the outcome leaves it unknown.
 */
void json_receipt(FILE *f, const char *image, const struct loopfd_device *dev,
		  int ok, const struct loopfd_error *err, uint32_t waited_ms)
{
	const char *outcome = release_outcome(ok, err);
	int busy = !ok && err->reason == LFD_R_BUSY;

	fputs("{\"event\":\"release\",\"outcome\":", f);
	json_string(f, outcome);
	fprintf(f, ",\"ok\":%s,\"flushed\":%s,\"detached\":%s,\"busy\":%s,"
		"\"data_lost\":%s,", json_bool(ok),
		ok || busy ? "true" : "null", ok ? "true" : busy ? "false" : "null",
		json_bool(busy), json_bool(!ok && err->reason == LFD_R_DATA_LOST));
	if (ok)
		fprintf(f, "\"waited_ms\":%u,\"error\":null,", (unsigned)waited_ms);
	else {
		fputs("\"waited_ms\":null,\"error\":", f);
		json_string(f, release_text(err));
		fputc(',', f);
	}
	json_device_fields(f, image, dev);
	fputs("}\n", f);
}

/* ---- who holds a busy device ------------------------------------------------ */

/* Does process pid have an fd on block device rdev?  Only processes whose
 * fds we may read (our own, as the kernel's ptrace check allows) count. */
static int holds_device(int pid, dev_t rdev)
{
	char dir[64], link[96];
	struct dirent *e;
	struct stat st;
	DIR *d;
	int found = 0;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", pid);
	d = opendir(dir);
	if (d == NULL)
		return 0;
	while (!found && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(link, sizeof(link), "%s/%.24s", dir, e->d_name);
		found = stat(link, &st) == 0 && S_ISBLK(st.st_mode) &&
			st.st_rdev == rdev;
	}
	closedir(d);
	return found;
}

static void print_comm(int pid)
{
	char path[64], comm[64] = "?";
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/comm", pid);
	f = fopen(path, "re");
	if (f != NULL) {
		if (fgets(comm, sizeof(comm), f) != NULL)
			comm[strcspn(comm, "\n")] = '\0';
		fclose(f);
	}
	fprintf(stderr, " %d (%s)", pid, comm);
}

/* "loopfd: /dev/loop7 is still open in: 1234 (sleep) 1240 (sh)" */
void report_busy_openers(const struct loopfd_device *dev)
{
	dev_t rdev = makedev(dev->major, dev->minor);
	struct dirent *e;
	DIR *d = opendir("/proc");
	int n = 0;

	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] < '1' || e->d_name[0] > '9' ||
		    !holds_device(atoi(e->d_name), rdev))
			continue;
		if (n++ == 0)
			fprintf(stderr, "loopfd: %s is still open in:", dev->path);
		if (n <= 20)
			print_comm(atoi(e->d_name));
	}
	closedir(d);
	if (n > 20)
		fprintf(stderr, " and %d more", n - 20);
	if (n > 0)
		fputc('\n', stderr);
	else
		fprintf(stderr, "loopfd: no process you can see holds %s open "
			"(another user's process or a mount may)\n", dev->path);
}

/* ---- a full filesystem under the image --------------------------------------- */

/*
 * The mount point and type of the filesystem with device number dev, from
 * /proc/self/mountinfo ("36 35 98:0 /root /mnt rw - ext4 ..."): the first
 * mount of it.  0, or -1 if it is not listed.
 */
static int find_mount(dev_t dev, char *where, size_t wcap, char *type,
		      size_t tcap)
{
	char line[4096], mnt[4096], fstype[64];
	unsigned maj, min;
	const char *sep;
	FILE *f = fopen("/proc/self/mountinfo", "re");
	int found = 0;

	if (f == NULL)
		return -1;
	while (!found && fgets(line, sizeof(line), f) != NULL) {
		if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &maj, &min, mnt) != 3 ||
		    makedev(maj, min) != dev || (sep = strstr(line, " - ")) == NULL ||
		    sscanf(sep + 3, "%63s", fstype) != 1)
			continue;
		snprintf(where, wcap, "%.*s", (int)(wcap - 1), mnt);	/* octal escapes kept */
		snprintf(type, tcap, "%s", fstype);
		found = 1;
	}
	fclose(f);
	return found ? 0 : -1;
}

/*
 * The loop driver turns the image's ENOSPC into EIO: data lost on a sparse
 * image usually means its filesystem is full.  Say so, naming the
 * filesystem, when it is.
 */
void report_full_filesystem(const char *image)
{
	char where[512] = "?", type[64] = "?";
	struct statvfs sv;
	struct stat st;
	uint64_t avail, total;

	if (statvfs(image, &sv) < 0 || stat(image, &st) < 0)
		return;
	avail = (uint64_t)sv.f_bavail * sv.f_frsize;
	total = (uint64_t)sv.f_blocks * sv.f_frsize;
	if (avail >= (UINT64_C(1) << 20) && avail >= total / 1000)
		return;
	find_mount(st.st_dev, where, sizeof(where), type, sizeof(type));
	fprintf(stderr, "loopfd: the filesystem holding %s (%s on %s) is full (%"
		PRIu64 " of %" PRIu64 " bytes free): writes through the device "
		"could not be stored in the image (the loop driver reports "
		"ENOSPC as EIO)\n", image, type, where, avail, total);
}
