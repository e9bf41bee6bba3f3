/*
 * libloopfd: loop devices for unprivileged programs, through loopfd-helper.
 *
 * The caller opens the backing file itself, with its own permissions, and
 * hands the open file to the helper; the helper attaches a loop device to it
 * and hands back an open device fd.  Releasing a device makes the helper
 * flush what was written through it and confirm that it is detached.
 *
 *	struct loopfd_session *s;
 *	struct loopfd_device dev;
 *	struct loopfd_error err;
 *	int img = open("disk.img", O_RDWR | O_CLOEXEC);
 *
 *	if (loopfd_connect(&s, NULL, &err) < 0 ||
 *	    loopfd_attach(s, img, NULL, &dev, &err) < 0)
 *		errx(1, "%s", loopfd_strerror(&err));
 *	close(img);
 *	... write to dev.fd ...
 *	close(dev.fd);
 *	if (loopfd_release(s, dev.id, 10000, NULL, &err) < 0)
 *		errx(1, "%s", loopfd_strerror(&err));
 *	loopfd_close(s);
 *
 * Every function that can fail returns 0 or -1; on -1, errno is err->err and
 * err->msg says what failed, naming the file, device or helper involved.
 * For an error reply from the helper, msg reads
 * "<operation>: helper refused: <the helper's text>" and err->reason is the
 * helper's reason code (one of LFD_R_* in the protocol); for a failure on
 * this side, err->reason is 0.  err may be NULL where the caller only wants
 * errno.
 *
 * A session is not thread-safe: use it from one thread at a time.  The
 * library keeps no state outside the session.
 */
#ifndef LOOPFD_H
#define LOOPFD_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

struct loopfd_session;

struct loopfd_error {
	int err;		/* errno value */
	int reason;		/* the helper's reason code, 0 if local */
	char msg[512];		/* human-readable, with context */
};

/* Attach flags (request) and effective flags (struct loopfd_device). */
#define LOOPFD_READ_ONLY	0x01u
#define LOOPFD_PARTSCAN		0x02u
#define LOOPFD_DIRECT_IO	0x04u
#define LOOPFD_GRANT		0x08u	/* /dev/loopN owned by the caller while attached */
#define LOOPFD_AUTOCLEAR	0x10u	/* effective flag, always set */

/* struct loopfd_info.features: what the helper's policy allows this caller */
#define LOOPFD_FEAT_GRANT	0x01u
#define LOOPFD_FEAT_PARTSCAN	0x02u
#define LOOPFD_FEAT_DIRECT_IO	0x04u
#define LOOPFD_FEAT_BATCH	0x08u	/* the helper takes batches in one request */

/* struct loopfd_info.mode: how the helper was started */
#define LOOPFD_MODE_SETUID	1u
#define LOOPFD_MODE_LISTEN	2u
#define LOOPFD_MODE_SYSTEMD	3u

struct loopfd_attach_opts {
	unsigned flags;		/* LOOPFD_READ_ONLY ... LOOPFD_GRANT */
	uint32_t sector_size;	/* 0: kernel default */
	uint64_t offset;	/* bytes into the backing file */
	uint64_t sizelimit;	/* 0: to the end of the backing file */
};

struct loopfd_device {
	int fd;			/* open device, close-on-exec; -1 in list entries */
	uint32_t id;		/* the session's handle, for loopfd_release */
	uint32_t index;		/* N of /dev/loopN */
	char name[32];		/* "loopN" */
	char path[48];		/* "/dev/loopN" */
	uint32_t major, minor;
	uint64_t diskseq;
	uint64_t size;		/* bytes */
	uint32_t flags;		/* effective LOOPFD_* flags */
	uint32_t sector_size;
	uint64_t offset, sizelimit;
	uint64_t backing_dev;	/* st_dev and st_ino of the backing file */
	uint64_t backing_ino;
};

struct loopfd_info {
	unsigned version;	/* protocol version in use */
	unsigned mode;		/* LOOPFD_MODE_* */
	unsigned features;	/* LOOPFD_FEAT_* */
	unsigned max_devices;	/* devices this session may hold */
	unsigned max_timeout_ms;	/* longest release timeout accepted */
	uint32_t uid, gid;	/* the caller, as the helper sees it */
};

/*
 * Connect to a helper and do the protocol handshake.
 *
 * socket_path: a `loopfd-helper --listen PATH` daemon's socket.  NULL: the
 * socket named by $LOOPFD_SOCKET if that is set and not empty, else start the
 * setuid helper (the compiled-in path; $LOOPFD_HELPER instead, but only for a
 * caller that is neither root nor setuid/setgid).
 */
int loopfd_connect(struct loopfd_session **out, const char *socket_path,
		   struct loopfd_error *err);

/* What the helper said in the handshake; valid until loopfd_close. */
const struct loopfd_info *loopfd_session_info(const struct loopfd_session *s);

/*
 * Attach a loop device to backing_fd (which the caller keeps and may close
 * right after: the device holds its own reference).  opts may be NULL for
 * defaults.  On success dev describes the device and dev->fd is an open,
 * close-on-exec device fd that belongs to the caller.
 */
int loopfd_attach(struct loopfd_session *s, int backing_fd,
		  const struct loopfd_attach_opts *opts,
		  struct loopfd_device *dev, struct loopfd_error *err);

/*
 * Release device id: the helper waits up to timeout_ms for other openers
 * (close dev->fd and every copy of it first), flushes the device and
 * confirms the detach.  *waited_ms (may be NULL) gets the time it waited.
 * An error means the data or the detach could not be confirmed: the text
 * says which.
 */
int loopfd_release(struct loopfd_session *s, uint32_t id, uint32_t timeout_ms,
		   uint32_t *waited_ms, struct loopfd_error *err);

/* ---- batches -------------------------------------------------------------
 *
 * Many devices in one request and one reply each way: for a helper that
 * does not say LOOPFD_FEAT_BATCH, the library makes one request per device
 * instead, with the same outcome.
 */

#define LOOPFD_BATCH_MAX	64	/* devices in one batch call */

/*
 * Attach n (1 .. LOOPFD_BATCH_MAX) devices: devs[i] to backing_fds[i] with
 * opts[i] (opts may be NULL: defaults for all).  All or nothing: on success
 * every devs[i] is filled as by loopfd_attach; on failure none is attached
 * (the helper released those it had attached before the failing one) and
 * *failed (may be NULL) gets the index of the entry that failed, or n when
 * the failure was not one entry's (the session, the connection, n).
 */
int loopfd_attach_batch(struct loopfd_session *s, const int *backing_fds,
			const struct loopfd_attach_opts *opts, size_t n,
			struct loopfd_device *devs, size_t *failed,
			struct loopfd_error *err);

struct loopfd_release_result {
	uint32_t id;
	uint32_t waited_ms;		/* time spent waiting for other openers */
	struct loopfd_error error;	/* error.err 0: flushed and detached;
					   else as loopfd_release's err */
};

/*
 * Release n (1 .. LOOPFD_BATCH_MAX) devices, ids[i]'s outcome in
 * results[i]; one device's failure does not stop the others.  timeout_ms
 * bounds the whole call's waiting for other openers (one device's, for a
 * helper without LOOPFD_FEAT_BATCH).  0 when every device
 * was released; -1 otherwise, err saying how many were not (or, when the
 * request as a whole was refused, why: then every result carries that
 * error and nothing was released).  Ids must be distinct.
 */
int loopfd_release_batch(struct loopfd_session *s, const uint32_t *ids,
			 size_t n, uint32_t timeout_ms,
			 struct loopfd_release_result *results,
			 struct loopfd_error *err);

/*
 * The devices this session holds.  *count gets how many the helper listed;
 * at most max of them are stored in devs (with fd = -1).
 */
int loopfd_list(struct loopfd_session *s, struct loopfd_device *devs,
		size_t max, size_t *count, struct loopfd_error *err);

/*
 * Close the connection and free s (NULL is allowed).  The helper releases
 * whatever the session still holds, on its own.  For a spawned helper, waits
 * for it to exit, except while devices remain: one not released, or released
 * busy or device-changed.  The helper then releases them on its own and
 * stays until they have detached (so that they keep counting against the
 * caller's limits); it is not waited for, and the caller reaps it (SIGCHLD)
 * if it runs on.
 */
void loopfd_close(struct loopfd_session *s);

/* err->msg, or the errno text when msg is empty. */
const char *loopfd_strerror(const struct loopfd_error *err);

/* ---- partitioned images ---------------------------------------------------
 *
 * The caller reads the image's partition table itself, from the fd it
 * opened (util-linux's libblkid prober; no kernel partition parser ever sees
 * the image), and attaches each partition it wants as a device of its own:
 * a window of offset and sizelimit on the same backing file, with the
 * table's sector size.  Nothing new runs as root.
 *
 *	struct loopfd_partition_table t;
 *	size_t i;
 *
 *	if (loopfd_partitions_read(img, 0, &t, &err) < 0 ||
 *	    loopfd_partition_select(&t, "esp", &i, &err) < 0 ||
 *	    loopfd_attach_partition(s, img, &t, i, NULL, &dev, &err) < 0)
 *		errx(1, "%s", loopfd_strerror(&err));
 *	loopfd_partitions_free(&t);
 */

#define LOOPFD_PART_MAX		1024	/* tables with more partitions are refused */

struct loopfd_partition {
	uint32_t number;	/* as the table numbers it, the N of sdaN: GPT
				   entry index + 1; MBR 1-4 primary, 5... logical */
	uint64_t start;		/* first sector, in the table's sector size */
	uint64_t size;		/* in sectors */
	uint64_t start_bytes;	/* start * sector size: the device's offset */
	uint64_t size_bytes;	/* size * sector size: its sizelimit */
	char type[40];		/* as sfdisk --json: GPT type GUID, upper case;
				   MBR type byte in hex, "83" */
	unsigned mbr_type;	/* MBR type byte; 0 for GPT */
	char type_name[32];	/* the type's name in the Discoverable Partitions
				   Specification ("esp", "root-x86-64", "swap",
				   "linux-generic"); "" if it has none */
	char uuid[40];		/* GPT partition GUID, upper case; MBR
				   "<disk id>-<NN>" (the kernel's PARTUUID) */
	char name[112];		/* GPT partition name (label), UTF-8; "" for MBR */
	uint64_t attrs;		/* GPT attribute bits; MBR the boot indicator
				   byte (0x80: bootable) */
	int extended;		/* MBR extended partition: the container of the
				   logical ones; listed, never attached */
};

struct loopfd_partition_table {
	char label[8];		/* "gpt" or "dos" (sfdisk's names) */
	char id[40];		/* GPT disk GUID, upper case; MBR "0x1234abcd" */
	uint32_t sector_size;	/* bytes per sector the table was read with */
	uint64_t disk_bytes;	/* size of the image file */
	uint64_t table_offset;	/* bytes: the GPT header or the MBR entries read */
	size_t count;
	struct loopfd_partition *parts;	/* count entries, in table order */
};

/*
 * Read the partition table of the image open on fd (a regular file or block
 * device; the file offset is not used).  sector_size 0: detected, 4096 if
 * a GPT header sits at byte 4096 (LBA 1 of 4096-byte sectors), else 512.
 * Refused, with an error naming the partition and the numbers: no table or
 * one of another kind than GPT or MBR, a GPT whose primary header is bad
 * (even with a good backup: repair the image first), entries outside the
 * GPT's usable area, partitions that overlap, start at sector 0 or end past
 * the end of the file, more than LOOPFD_PART_MAX partitions.  An empty
 * table is not an error.  Free t with loopfd_partitions_free.
 */
int loopfd_partitions_read(int fd, uint32_t sector_size,
			   struct loopfd_partition_table *t,
			   struct loopfd_error *err);

void loopfd_partitions_free(struct loopfd_partition_table *t);

/*
 * The partition sel names, into *index (of t->parts).  sel is a partition
 * number ("2"), a type GUID, an MBR type ("0x83"), a Discoverable
 * Partitions name ("esp", "xbootldr", "swap", "home", "srv", "var", "tmp",
 * "linux-generic", "root-x86-64", "usr-arm64", ...; "root", "usr",
 * "root-verity", ... without an architecture match that kind for any
 * architecture), or a GPT partition name.  Exactly one partition must
 * match: none or several is an error that lists what the table holds.
 */
int loopfd_partition_select(const struct loopfd_partition_table *t,
			    const char *sel, size_t *index,
			    struct loopfd_error *err);

/*
 * loopfd_attach of partition t->parts[index] of the image on backing_fd:
 * offset, sizelimit and sector size come from the table (opts may be NULL;
 * its offset and sizelimit must be 0, its sector_size 0 or the table's).
 */
int loopfd_attach_partition(struct loopfd_session *s, int backing_fd,
			    const struct loopfd_partition_table *t,
			    size_t index, const struct loopfd_attach_opts *opts,
			    struct loopfd_device *dev, struct loopfd_error *err);

/*
 * t as JSON, in sfdisk --json's layout and field meanings (label, id,
 * device, unit, sectorsize; per partition start and size in sectors, type,
 * uuid and name as sfdisk prints them, bootable), plus number, start_bytes,
 * size_bytes, type_name and extended.  device is printed as given.
 * 0, or -1 with errno if writing failed.
 */
int loopfd_partitions_json(FILE *f, const struct loopfd_partition_table *t,
			   const char *device);

#ifdef __cplusplus
}
#endif

#endif
