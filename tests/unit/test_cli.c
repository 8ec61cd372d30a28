/* test_cli.c — command-line helpers: sizes, bounded integers, VM names, default control socket paths. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/parse.h"

static uint64_t size_ok(const char *s)
{
	uint64_t v = 12345;

	assert_int_equal(parse_size(s, &v), 0);
	return v;
}

static void test_size_valid(void **state)
{
	(void)state;
	assert_int_equal(size_ok("0"), 0);
	assert_int_equal(size_ok("4096"), 4096);
	assert_int_equal(size_ok("512B"), 512);
	assert_int_equal(size_ok("4K"), 4096);
	assert_int_equal(size_ok("4k"), 4096);
	assert_int_equal(size_ok("4KiB"), 4096);
	assert_int_equal(size_ok("4KB"), 4096);
	assert_int_equal(size_ok("4kib"), 4096);
	assert_int_equal(size_ok("256M"), 256ull << 20);
	assert_int_equal(size_ok("2G"), 2ull << 30);
	assert_int_equal(size_ok("3GiB"), 3ull << 30);
	assert_int_equal(size_ok("1T"), 1ull << 40);
	assert_int_equal(size_ok("007M"), 7ull << 20);
	assert_int_equal(size_ok("18446744073709551615"), UINT64_MAX);
	assert_int_equal(size_ok("16777215T"), 16777215ull << 40); /* largest T that fits */
}

static void test_size_invalid(void **state)
{
	static const char *bad[] = {"",	   "K",	  "-1",	 "+1", " 1", "1 ",    "1 K",  "0x10", "1.5G", "1KK",
				    "1Ki", "1iB", "1BB", "1P", "1E", "1KiBx", "1G\n", "abc",  "1,000"};
	uint64_t v = 77;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(parse_size(bad[i], &v), -EINVAL);
		assert_int_equal(v, 77);
	}
	assert_int_equal(parse_size(NULL, &v), -EINVAL);
}

static void test_size_overflow(void **state)
{
	uint64_t v = 77;

	(void)state;
	assert_int_equal(parse_size("18446744073709551616", &v), -ERANGE);
	assert_int_equal(parse_size("99999999999999999999999", &v), -ERANGE);
	assert_int_equal(parse_size("16777216T", &v), -ERANGE); /* 2^24 * 2^40 = 2^64 */
	assert_int_equal(parse_size("17179869184G", &v), -ERANGE); /* 2^34 * 2^30 */
	assert_int_equal(parse_size("18014398509481984K", &v), -ERANGE);
	assert_int_equal(v, 77);
}

static void test_uint(void **state)
{
	uint64_t v = 77;

	(void)state;
	assert_int_equal(parse_uint("0", 0, 10, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(parse_uint("10", 0, 10, &v), 0);
	assert_int_equal(v, 10);
	assert_int_equal(parse_uint("64", 1, 64, &v), 0);
	assert_int_equal(parse_uint("18446744073709551615", 0, UINT64_MAX, &v), 0);
	assert_int_equal(v, UINT64_MAX);
	v = 77;
	assert_int_equal(parse_uint("11", 0, 10, &v), -ERANGE);
	assert_int_equal(parse_uint("0", 1, 10, &v), -ERANGE);
	assert_int_equal(parse_uint("18446744073709551616", 0, UINT64_MAX, &v), -ERANGE);
	assert_int_equal(parse_uint("", 0, 10, &v), -EINVAL);
	assert_int_equal(parse_uint("-1", 0, 10, &v), -EINVAL);
	assert_int_equal(parse_uint("+1", 0, 10, &v), -EINVAL);
	assert_int_equal(parse_uint(" 1", 0, 10, &v), -EINVAL);
	assert_int_equal(parse_uint("1 ", 0, 10, &v), -EINVAL);
	assert_int_equal(parse_uint("1K", 0, 10000, &v), -EINVAL);
	assert_int_equal(parse_uint("0x1", 0, 10, &v), -EINVAL);
	assert_int_equal(parse_uint(NULL, 0, 10, &v), -EINVAL);
	assert_int_equal(v, 77);
}

static void test_names(void **state)
{
	char name[CLI_NAME_MAX + 2];

	(void)state;
	assert_true(cli_name_valid("vm1"));
	assert_true(cli_name_valid("a"));
	assert_true(cli_name_valid("Primary_VM-2.test"));
	assert_true(cli_name_valid("9"));
	assert_false(cli_name_valid(NULL));
	assert_false(cli_name_valid(""));
	assert_false(cli_name_valid("-vm"));
	assert_false(cli_name_valid("."));
	assert_false(cli_name_valid(".."));
	assert_false(cli_name_valid(".hidden"));
	assert_false(cli_name_valid("a/b"));
	assert_false(cli_name_valid("a b"));
	assert_false(cli_name_valid("vm\n"));
	assert_false(cli_name_valid("vm\xc3\xa9"));
	memset(name, 'x', CLI_NAME_MAX);
	name[CLI_NAME_MAX] = '\0';
	assert_true(cli_name_valid(name));
	name[CLI_NAME_MAX] = 'x';
	name[CLI_NAME_MAX + 1] = '\0';
	assert_false(cli_name_valid(name));
}

static void test_default_path(void **state)
{
	char buf[108], tiny[20];

	(void)state;
	assert_ptr_equal(ctl_default_path("vm1", buf, sizeof(buf)), buf);
	assert_string_equal(buf, "/run/doppel/vm1.sock");
	assert_null(ctl_default_path("../etc", buf, sizeof(buf)));
	assert_null(ctl_default_path("a/b", buf, sizeof(buf)));
	assert_null(ctl_default_path("", buf, sizeof(buf)));
	assert_null(ctl_default_path("vm1", tiny, sizeof(tiny))); /* 21 bytes needed */
	assert_non_null(ctl_default_path("vm", tiny, sizeof(tiny)));
	assert_string_equal(tiny, "/run/doppel/vm.sock");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_size_valid),    cmocka_unit_test(test_size_invalid),
		cmocka_unit_test(test_size_overflow), cmocka_unit_test(test_uint),
		cmocka_unit_test(test_names),	      cmocka_unit_test(test_default_path),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
