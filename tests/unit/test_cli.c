/* test_cli.c — command-line helpers: sizes, bounded integers, VM names, default control socket paths, the
 * VM registry behind `doppel list`, and the exit code a control call maps to. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/parse.h"
#include "tools/common/ctl_client.h"
#include "vmm/registry.h"

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

/* ---- registry ------------------------------------------------------------------------------------ */

static int listen_unix(const char *path, bool do_listen)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	unlink(path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	if (do_listen)
		assert_int_equal(listen(fd, 4), 0);
	return fd;
}

static int count_files(const char *dir)
{
	char cmd[512];
	FILE *p;
	int n = -1;

	snprintf(cmd, sizeof(cmd), "ls -A %s | wc -l", dir);
	p = popen(cmd, "r");
	assert_non_null(p);
	assert_int_equal(fscanf(p, "%d", &n), 1);
	pclose(p);
	return n;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_registry(void **state)
{
	char tmpl[] = "/tmp/doppel-reg-XXXXXX", dir[256], vms[256], sa[300], sb[300], file_a[320],
	     file_b[320], path[400], err[256];
	struct vmreg_entry *e = NULL, one;
	int fa, fb, n;
	pid_t dead;

	(void)state;
	assert_non_null(mkdtemp(tmpl));
	snprintf(dir, sizeof(dir), "%s", tmpl);
	setenv("DOPPEL_RUNTIME_DIR", dir, 1);
	assert_non_null(vmreg_dir(vms, sizeof(vms)));
	snprintf(path, sizeof(path), "%s/vms", dir);
	assert_string_equal(vms, path);
	/* no directory yet: an empty registry */
	assert_int_equal(vmreg_list(&e, err, sizeof(err)), 0);
	assert_null(e);

	snprintf(sa, sizeof(sa), "%s/a.sock", dir);
	snprintf(sb, sizeof(sb), "%s/b.sock", dir);
	fa = listen_unix(sa, true);
	fb = listen_unix(sb, false); /* bound, nothing listening: a dead VM's stale socket */
	assert_int_equal(vmreg_add("vm-a", sa, file_a, sizeof(file_a), err, sizeof(err)), 0);
	snprintf(path, sizeof(path), "%s/vm-a.%d.json", vms, (int)getpid());
	assert_string_equal(file_a, path);
	assert_int_equal(vmreg_read(file_a, &one, err, sizeof(err)), 0);
	assert_string_equal(one.name, "vm-a");
	assert_string_equal(one.control, sa);
	assert_int_equal(one.pid, getpid());
	assert_true(one.started > 1.7e9);
	assert_int_equal(vmreg_add("vm-b", sb, file_b, sizeof(file_b), err, sizeof(err)), 0);
	/* junk and an entry of a dead process (a reaped child's pid) */
	snprintf(path, sizeof(path), "%s/junk.json", vms);
	write_file(path, "{not json");
	dead = fork();
	if (dead == 0)
		_exit(0);
	waitpid(dead, NULL, 0);
	snprintf(path, sizeof(path), "%s/vm-c.%d.json", vms, (int)dead);
	{
		char text[400];

		snprintf(text, sizeof(text), "{\"name\":\"vm-c\",\"pid\":%d,\"control\":\"%s\"}\n", (int)dead,
			 sa);
		write_file(path, text);
	}
	assert_int_equal(count_files(vms), 4);

	n = vmreg_list(&e, err, sizeof(err));
	assert_int_equal(n, 1);
	assert_string_equal(e[0].name, "vm-a");
	assert_string_equal(e[0].control, sa);
	assert_string_equal(e[0].file, file_a);
	free(e);
	assert_int_equal(count_files(vms), 1); /* b (dead socket), junk and c (dead pid) were removed */

	vmreg_remove(file_a);
	assert_int_equal(count_files(vms), 0);
	assert_int_equal(vmreg_list(&e, err, sizeof(err)), 0);
	/* bad entries are rejected with a reason */
	snprintf(path, sizeof(path), "%s/x.json", vms);
	write_file(path, "{\"name\":\"../x\",\"pid\":1,\"control\":\"/s\"}");
	assert_int_equal(vmreg_read(path, &one, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "not a registry entry"));
	unlink(path);
	close(fa);
	close(fb);
	unlink(sa);
	unlink(sb);
	rmdir(vms);
	rmdir(dir);
	unsetenv("DOPPEL_RUNTIME_DIR");
}

/* ---- exit codes of a control call -------------------------------------------------------------------- */

static void test_outcome(void **state)
{
	struct json_object *refused = json_tokener_parse("{\"ok\":false,\"error\":\"x\",\"refused\":true}");
	struct json_object *failed = json_tokener_parse("{\"ok\":false,\"error\":\"x\"}");
	struct json_object *odd = json_tokener_parse("{\"ok\":false,\"error\":\"x\",\"refused\":\"true\"}");

	(void)state;
	assert_int_equal(ctl_outcome(0, NULL), 0);
	assert_int_equal(ctl_outcome(-ENOENT, NULL), 3);
	assert_int_equal(ctl_outcome(-ECONNREFUSED, NULL), 3);
	assert_int_equal(ctl_outcome(-EREMOTEIO, refused), 4);
	assert_int_equal(ctl_outcome(-EREMOTEIO, failed), 1);
	assert_int_equal(ctl_outcome(-EREMOTEIO, odd), 1); /* only a JSON true counts */
	assert_int_equal(ctl_outcome(-EREMOTEIO, NULL), 1);
	assert_int_equal(ctl_outcome(-ETIMEDOUT, NULL), 1);
	assert_int_equal(ctl_outcome(-EPROTO, refused), 1);
	json_object_put(refused);
	json_object_put(failed);
	json_object_put(odd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_size_valid),    cmocka_unit_test(test_size_invalid),
		cmocka_unit_test(test_size_overflow), cmocka_unit_test(test_uint),
		cmocka_unit_test(test_names),	      cmocka_unit_test(test_default_path),
		cmocka_unit_test(test_registry),      cmocka_unit_test(test_outcome),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
