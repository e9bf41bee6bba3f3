/*
 * The loopfd command's own pieces, shared by cli.c (run, the options),
 * command.c (starting COMMAND) and hold.c (attach, exec, list, detach).
 * Not library API.
 */
#ifndef LOOPFD_CLI_H
#define LOOPFD_CLI_H

#include "loopfd.h"

#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/*
 * Exit statuses of loopfd itself.  COMMAND's own status passes through
 * unchanged, so these sit where coreutils' env, nice and timeout put theirs
 * (125 and below), away from the 1 and 2 that commands use for failure.
 */
#define EXIT_LOOPFD_SETUP	125	/* usage, setup or attach: COMMAND never ran */
#define EXIT_LOOPFD_DATA	124	/* a release did not confirm the data */
#define EXIT_LOOPFD_BUSY	123	/* released busy: detaches at the last close */
#define EXIT_CANNOT_EXEC	126
#define EXIT_NOT_FOUND		127

#define DEFAULT_TIMEOUT_MS	10000u

#define MAX_SELECTORS		32	/* --partition SEL on one IMAGE */

/* Options of one IMAGE: those before the first IMAGE, then its own. */
struct image_opts {
	struct loopfd_attach_opts attach;
	int lock;			/* --lock */
	int partitions;			/* --partitions */
	const char *sel[MAX_SELECTORS];	/* --partition SEL..., nsel of them */
	size_t nsel;
};

/* The options of run and attach that apply to the whole command. */
struct options {
	struct image_opts img;		/* the defaults for every IMAGE */
	uint32_t timeout_ms;		/* release timeout */
	const char *timeout_arg;	/* as given, NULL for the default */
	const char *socket_path;	/* NULL: $LOOPFD_SOCKET or setuid helper */
	int verbose;
	int json;
};

struct image {
	const char *path;		/* for messages: "disk.img partition 2" too */
	char *owned_path;		/* path, when made here */
	struct image_opts opts;
	int fd;				/* the opened image, until attached */
	int attached;
	const struct loopfd_partition_table *table;	/* a partition: of this */
	size_t part;			/* table->parts[part]; table NULL: whole */
	struct loopfd_device dev;
};

/* cli.c */
void usage_error(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));
uint32_t parse_seconds(const char *opt, const char *arg);
void parse_command_line(int argc, char **argv, struct options *o,
			struct image **imgs, size_t *n, char ***cmd);
int open_image(struct image *img);
void error_text(char *buf, size_t cap, const char *what,
		const struct loopfd_error *err);
void print_error(const char *what, const struct loopfd_error *err);
int flush_stdout(void);
int print_help(void);
void hint_grant(char **cmd, int status, int granted, int allowed, int held);
void help_if_asked(int argc, char **argv);

/* One device handed to COMMAND. */
struct cmd_device {
	int fd;			/* ours, close-on-exec */
	const char *name;	/* "loopN" */
	const char *path;	/* "/dev/loopN" */
};

/* command.c */
void command_scan_inherited(void);
int command_first_fd(void);
int command_run(char **cmd, const struct cmd_device *devs, size_t n);
void command_forward_set(sigset_t *set);

/* hold.c: the loopfd subcommands that outlive one command */
int cmd_attach(int argc, char **argv);
int cmd_exec(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_detach(int argc, char **argv);

/* report.c */
void report_busy_openers(const struct loopfd_device *dev);
void report_full_filesystem(const char *image);
void json_string(FILE *f, const char *s);
void json_device_fields(FILE *f, const char *image,
			const struct loopfd_device *d);
void json_device(FILE *f, const char *event, const char *image,
		 const struct loopfd_device *dev);
void json_receipt(FILE *f, const char *image, const struct loopfd_device *dev,
		  int ok, const struct loopfd_error *err, uint32_t waited_ms);
const char *release_text(const struct loopfd_error *err);
const char *release_outcome(int ok, const struct loopfd_error *err);
int release_exit_status(const struct loopfd_error *err);

#endif
