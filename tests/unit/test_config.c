/* Unit tests: the policy file (helper/config.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "helper.h"

/* config.c logs nothing, but links against the helper's header. */
static char err[512];

static int parse(const char *text, struct policy *p)
{
	err[0] = '\0';
	return config_parse(text, strlen(text), "/etc/loopfd.conf", p, err,
			    sizeof(err));
}

static void test_defaults(void **state)
{
	struct policy p;

	(void)state;
	assert_int_equal(parse("", &p), 0);
	assert_int_equal(p.restricted, 0);
	assert_int_equal(p.max_per_user, 16);
	assert_int_equal(p.max_total, 256);
	assert_int_equal(p.allow_grant, 1);
	assert_int_equal(p.allow_partscan, 1);
	assert_int_equal(p.allow_direct_io, 1);
	assert_int_equal(p.allow_block_devices, 0);
	assert_int_equal(p.backing_fs, 0);
}

static void test_full_file(void **state)
{
	struct policy p;

	(void)state;
	assert_int_equal(parse("# policy\n"
			       "allow-users root 1000  # trailing comment\n"
			       "allow-users 1001\n"
			       "\tallow-groups 0 2000\n"
			       "max-devices-per-user 4\n"
			       "max-devices 100\r\n"
			       "allow-grant no\n"
			       "allow-partscan no\n"
			       "allow-direct-io no\n"
			       "allow-block-devices yes\n"
			       "allow-backing-fs fuse\n"
			       "allow-backing-fs overlay nfs", &p), 0);
	assert_int_equal(p.restricted, 1);
	assert_int_equal(p.nusers, 3);
	assert_int_equal(p.users[0], 0);
	assert_int_equal(p.users[1], 1000);
	assert_int_equal(p.users[2], 1001);
	assert_int_equal(p.ngroups, 2);
	assert_int_equal(p.groups[1], 2000);
	assert_int_equal(p.max_per_user, 4);
	assert_int_equal(p.max_total, 100);
	assert_int_equal(p.allow_grant, 0);
	assert_int_equal(p.allow_partscan, 0);
	assert_int_equal(p.allow_direct_io, 0);
	assert_int_equal(p.allow_block_devices, 1);
	assert_int_equal(p.backing_fs != 0, 1);
}

static void expect_error(const char *text, const char *needle)
{
	struct policy p;

	assert_int_equal(parse(text, &p), -1);
	if (strstr(err, needle) == NULL)
		fail_msg("error '%s' does not mention '%s'", err, needle);
	/* every message names the file */
	assert_non_null(strstr(err, "/etc/loopfd.conf"));
}

static void test_errors_name_file_line_problem(void **state)
{
	(void)state;
	expect_error("allow-gran yes\n", ":1: unknown keyword 'allow-gran'");
	expect_error("\n\nallow-grant maybe\n", ":3: allow-grant: 'maybe'");
	expect_error("allow-grant\n", "takes one value");
	expect_error("allow-grant yes no\n", "takes one value");
	expect_error("allow-grant yes\nallow-grant no\n", "given twice");
	expect_error("allow-backing-fs\n", "takes one or more filesystem names");
	expect_error("allow-backing-fs ext4\n", "'ext4' is local, always allowed");
	expect_error("allow-backing-fs fuse sshfs\n", "allow-backing-fs: 'sshfs' is "
		     "not one of: xfs btrfs f2fs bcachefs zfs jfs nilfs2 vfat exfat "
		     "ntfs3 hfsplus udf fuse overlay ecryptfs nfs cifs smb2 9p ceph");
	expect_error("max-devices-per-user 0\n", "from 1 to 256");
	expect_error("max-devices-per-user 257\n", "from 1 to 256");
	expect_error("max-devices-per-user -1\n", "is not a number");
	expect_error("max-devices-per-user 4x\n", "is not a number");
	expect_error("max-devices-per-user 99999999999999999999999\n", "not a number");
	expect_error("max-devices 65537\n", "from 1 to 65536");
	expect_error("max-devices 4\nmax-devices-per-user 5\n", "exceeds");
	expect_error("allow-users\n", "at least one user");
	expect_error("allow-groups\n", "at least one group");
	expect_error("allow-users no-such-user-loopfd-test\n", "unknown user");
	expect_error("allow-groups no-such-group-loopfd-test\n", "unknown group");
}

static void test_long_and_nul_lines(void **state)
{
	char *big = malloc(3000);
	struct policy p;

	(void)state;
	assert_non_null(big);
	memset(big, 'a', 2999);
	big[2999] = '\0';
	expect_error(big, "longer than");
	free(big);
	assert_int_equal(config_parse("allow-grant yes\0\n", 17, "/etc/loopfd.conf",
				      &p, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "NUL"));
}

/* Names come from /etc/passwd and /etc/group, parsed by the helper itself. */
static void test_names_from_files(void **state)
{
	struct policy p;

	(void)state;
	assert_int_equal(parse("allow-users nobody root\nallow-groups nogroup\n", &p), 0);
	assert_int_equal(p.users[0], 65534);
	assert_int_equal(p.users[1], 0);
	assert_int_equal(p.groups[0], 65534);
	/* a prefix of a name is not the name */
	expect_error("allow-users nobod\n", "unknown user 'nobod'");
	expect_error("allow-groups nogrou\n", "unknown group 'nogrou'");
}

static void test_policy_allows(void **state)
{
	struct policy p;
	struct caller c;

	(void)state;
	memset(&c, 0, sizeof(c));
	c.uid = 1000;
	c.gid = 1000;
	assert_int_equal(parse("", &p), 0);
	assert_true(policy_allows(&p, &c));		/* unrestricted */
	assert_int_equal(parse("allow-users 1001\nallow-groups 3000\n", &p), 0);
	assert_false(policy_allows(&p, &c));
	c.uid = 1001;
	assert_true(policy_allows(&p, &c));		/* by uid */
	c.uid = 1000;
	c.gid = 3000;
	assert_true(policy_allows(&p, &c));		/* by primary group */
	c.gid = 1000;
	c.groups[0] = 5;
	c.groups[1] = 3000;
	c.ngroups = 2;
	assert_true(policy_allows(&p, &c));		/* by supplementary group */
	c.ngroups = 1;
	assert_false(policy_allows(&p, &c));
	c.uid = 0;
	assert_true(policy_allows(&p, &c));		/* root always */
}

/* config_load's file checks: written to a temp dir as the test user. */
/* Local filesystems always; the others only where named; unknown never. */
static void test_backing_fs(void **state)
{
	struct policy p;
	const char *name;

	(void)state;
	assert_int_equal(parse("", &p), 0);
	assert_int_equal(policy_allows_fs(&p, 0xEF53, &name), 1);
	assert_string_equal(name, "ext4");
	assert_int_equal(policy_allows_fs(&p, 0x01021994, &name), 1);
	assert_int_equal(policy_allows_fs(&p, 0x65735546, &name), 0);
	assert_string_equal(name, "fuse");
	assert_int_equal(policy_allows_fs(&p, 0x794C7630, &name), 0);
	assert_string_equal(name, "overlay");
	assert_int_equal(policy_allows_fs(&p, 0x9123683E, &name), 0);
	assert_string_equal(name, "btrfs");
	assert_int_equal(policy_allows_fs(&p, 0x12345678, &name), 0);
	assert_null(name);
	assert_int_equal(parse("allow-backing-fs overlay\n", &p), 0);
	assert_int_equal(policy_allows_fs(&p, 0x794C7630, &name), 1);
	assert_int_equal(policy_allows_fs(&p, 0x65735546, &name), 0);
	assert_int_equal(policy_allows_fs(&p, 0x6969, &name), 0);
	assert_string_equal(name, "nfs");
}

static void test_load_file_checks(void **state)
{
	char dir[] = "/tmp/loopfd-unit.XXXXXX";
	char path[256];
	struct policy p;
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/loopfd.conf", dir);

	if (getuid() != 0) {
		/* a directory of the test user's: nothing in it is trusted,
		 * not even a missing file */
		assert_int_equal(config_load(path, &p, err, sizeof(err)), -1);
		assert_non_null(strstr(err, "must be a directory owned by root"));
		rmdir(dir);
		return;
	}
	/* missing file in trusted directories: defaults */
	assert_int_equal(config_load(path, &p, err, sizeof(err)), 0);
	assert_int_equal(p.max_per_user, 16);
	/* ... but not in a world-writable directory, missing or not */
	chmod(dir, 0777);
	assert_int_equal(config_load(path, &p, err, sizeof(err)), -1);
	assert_non_null(strstr(err, dir));
	assert_non_null(strstr(err, "mode 0777"));
	/* sticky (like /tmp) is fine: only root renames root's entries */
	chmod(dir, 01777);
	assert_int_equal(config_load(path, &p, err, sizeof(err)), 0);
	assert_int_equal(chown(dir, 65534, 65534), 0);
	assert_int_equal(config_load(path, &p, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "uid 65534"));
	assert_int_equal(chown(dir, 0, 0), 0);
	chmod(dir, 0700);

	f = fopen(path, "w");
	assert_non_null(f);
	fputs("max-devices-per-user 3\n", f);
	fclose(f);
	chmod(path, 0644);
	{
		assert_int_equal(chown(path, 0, 0), 0);
		assert_int_equal(config_load(path, &p, err, sizeof(err)), 0);
		assert_int_equal(p.max_per_user, 3);

		chmod(path, 0664);
		assert_int_equal(config_load(path, &p, err, sizeof(err)), -1);
		assert_non_null(strstr(err, "group- or world-writable"));
		chmod(path, 0646);
		assert_int_equal(config_load(path, &p, err, sizeof(err)), -1);
		chmod(path, 0644);

		assert_int_equal(chown(path, 65534, 0), 0);
		assert_int_equal(config_load(path, &p, err, sizeof(err)), -1);
		assert_non_null(strstr(err, "must be owned by root"));
		assert_non_null(strstr(err, path));
		assert_int_equal(chown(path, 0, 0), 0);
	}
	unlink(path);
	/* a directory in its place */
	assert_int_equal(mkdir(path, 0755), 0);
	assert_int_equal(config_load(path, &p, err, sizeof(err)), -1);
	rmdir(path);
	/* a symlink in its place is not followed */
	assert_int_equal(symlink("/etc/hostname", path), 0);
	assert_int_equal(config_load(path, &p, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "cannot open"));
	unlink(path);
	/* a parse error quotes the file: marked for the log only */
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("allow-users secret-token-xyz\n", f);
	fclose(f);
	chmod(path, 0600);
	assert_int_equal(config_load(path, &p, err, sizeof(err)), CONFIG_ERR_CONTENTS);
	assert_non_null(strstr(err, "secret-token-xyz"));
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_full_file),
		cmocka_unit_test(test_errors_name_file_line_problem),
		cmocka_unit_test(test_long_and_nul_lines),
		cmocka_unit_test(test_names_from_files),
		cmocka_unit_test(test_policy_allows),
		cmocka_unit_test(test_backing_fs),
		cmocka_unit_test(test_load_file_checks),
	};

	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
