/* Unit tests: the minimum kernel check (helper/kernel.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "helper.h"

/* kernel.c reports through logmsg; the parser under test never does. */
void logmsg(const char *fmt, ...)
{
	(void)fmt;
}

static void test_release_forms(void **state)
{
	(void)state;
	assert_true(kernel_release_at_least("5.15.0", 5, 15));
	assert_true(kernel_release_at_least("5.15", 5, 15));
	assert_true(kernel_release_at_least("5.15.0-91-generic", 5, 15));
	assert_true(kernel_release_at_least("6.1.0-13-amd64", 5, 15));
	assert_true(kernel_release_at_least("6.18.44-fc-v669", 5, 15));
	assert_true(kernel_release_at_least("5.16-rc1", 5, 15));
	assert_true(kernel_release_at_least("10.0", 5, 15));
	assert_false(kernel_release_at_least("5.14.21", 5, 15));
	assert_false(kernel_release_at_least("5.4.0-150-generic", 5, 15));
	assert_false(kernel_release_at_least("4.19.0", 5, 15));
	assert_false(kernel_release_at_least("2.6.40", 5, 15));	/* UNAME26 */
}

static void test_malformed_refused(void **state)
{
	(void)state;
	assert_false(kernel_release_at_least("", 5, 15));
	assert_false(kernel_release_at_least("6", 5, 15));
	assert_false(kernel_release_at_least("6.", 5, 15));
	assert_false(kernel_release_at_least("v6.1", 5, 15));
	assert_false(kernel_release_at_least("-6.1", 5, 15));
	assert_false(kernel_release_at_least(" 6.1", 5, 15));
	assert_false(kernel_release_at_least("6.+1", 5, 15));
	assert_false(kernel_release_at_least("6,1", 5, 15));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_release_forms),
		cmocka_unit_test(test_malformed_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
