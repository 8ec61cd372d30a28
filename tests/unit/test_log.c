/* test_log.c — unit tests of the logging API: level filter, JSON lines, sinks, one line per
 * message. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "common/log.h"

/* What the sink saw. */
struct seen {
	int n;
	enum log_level lvl[16];
	char comp[16][32], vm[16][32], msg[16][1100];
};

static void sink(void *opaque, enum log_level lvl, const char *component, const char *vm, const char *msg)
{
	struct seen *s = opaque;

	if (s->n >= 16)
		return;
	s->lvl[s->n] = lvl;
	snprintf(s->comp[s->n], sizeof(s->comp[0]), "%s", component ? component : "");
	snprintf(s->vm[s->n], sizeof(s->vm[0]), "%s", vm ? vm : "(null)");
	snprintf(s->msg[s->n], sizeof(s->msg[0]), "%s", msg);
	s->n++;
}

/* Each test: stderr off (keeps the test output clean), a fresh sink, level info, no JSON file. */
static int setup(void **state)
{
	struct seen *s = calloc(1, sizeof(*s));

	if (!s)
		return -1;
	log_set_stderr(0);
	log_set_level(LOG_INFO);
	log_set_sink(sink, s);
	*state = s;
	return 0;
}

static int teardown(void **state)
{
	log_set_sink(NULL, NULL);
	log_set_level(LOG_INFO);
	log_set_stderr(1);
	if (log_set_json_file(NULL, NULL, 0))
		return -1;
	free(*state);
	return 0;
}

static void test_sink_receives(void **state)
{
	struct seen *s = *state;

	log_warn("remus", "vm1", "standby silent for %d ms", 210);
	assert_int_equal(s->n, 1);
	assert_int_equal(s->lvl[0], LOG_WARN);
	assert_string_equal(s->comp[0], "remus");
	assert_string_equal(s->vm[0], "vm1");
	assert_string_equal(s->msg[0], "standby silent for 210 ms");
	log_info("vmm", NULL, "no vm");
	assert_int_equal(s->n, 2);
	assert_string_equal(s->vm[1], "(null)");
	/* a removed sink is not called */
	log_set_sink(NULL, NULL);
	log_error("vmm", NULL, "nobody hears this");
	assert_int_equal(s->n, 2);
}

static void test_level_filter(void **state)
{
	struct seen *s = *state;

	log_set_level(LOG_WARN);
	assert_int_equal(log_get_level(), LOG_WARN);
	log_debug("t", NULL, "d");
	log_info("t", NULL, "i");
	log_warn("t", NULL, "w");
	log_error("t", NULL, "e");
	assert_int_equal(s->n, 2);
	assert_string_equal(s->msg[0], "w");
	assert_string_equal(s->msg[1], "e");

	log_set_level(LOG_ERROR);
	log_warn("t", NULL, "w2");
	assert_int_equal(s->n, 2);

	log_set_level(LOG_DEBUG);
	log_debug("t", NULL, "d2");
	assert_int_equal(s->n, 3);
	assert_int_equal(s->lvl[2], LOG_DEBUG);
}

static void test_newline_flattened(void **state)
{
	struct seen *s = *state;

	log_info("t", "vm", "first\nsecond\r\nthird");
	assert_int_equal(s->n, 1);
	assert_null(strchr(s->msg[0], '\n'));
	assert_null(strchr(s->msg[0], '\r'));
	assert_string_equal(s->msg[0], "first second  third");
}

static void test_level_parse(void **state)
{
	static const char *const good[] = {"error", "warn", "info", "debug"};
	static const char *const junk[] = {"", "Error", "warning", "infoo", "3", " info", "debug ", "trace"};
	enum log_level l;

	(void)state;
	for (int i = 0; i < 4; i++) {
		l = (enum log_level)99;
		assert_int_equal(log_level_parse(good[i], &l), 0);
		assert_int_equal(l, i);
		assert_string_equal(log_level_name(l), good[i]);
	}
	for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
		l = LOG_WARN;
		assert_int_equal(log_level_parse(junk[i], &l), -EINVAL);
		assert_int_equal(l, LOG_WARN); /* untouched on error */
	}
	assert_int_equal(log_level_parse(NULL, &l), -EINVAL);
}

/* Read path's lines, parse each as JSON; returns how many (up to max). */
static int read_json_lines(const char *path, struct json_object **out, int max)
{
	FILE *f = fopen(path, "r");
	char line[8192];
	int n = 0;

	assert_non_null(f);
	while (n < max && fgets(line, sizeof(line), f)) {
		size_t len = strlen(line);
		assert_true(len > 0 && line[len - 1] == '\n'); /* every record a whole line */
		out[n] = json_tokener_parse(line);
		assert_non_null(out[n]);
		n++;
	}
	fclose(f);
	return n;
}

static const char *str_field(struct json_object *o, const char *key)
{
	struct json_object *v;

	assert_true(json_object_object_get_ex(o, key, &v));
	assert_true(json_object_is_type(v, json_type_string));
	return json_object_get_string(v);
}

static void test_json_lines(void **state)
{
	char path[] = "/tmp/test_log_XXXXXX", err[256] = "";
	struct json_object *o[8], *v;
	char big[1500];
	int fd, n;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(log_set_json_file(path, err, sizeof(err)), 0);
	log_warn("remus", "vm1", "took over at epoch %d: \"quoted\" and\nnewline", 7);
	log_debug("remus", "vm1", "filtered out");
	log_error("vmm", NULL, "no vm here");
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	log_info("migrate", "vm2", "%s", big); /* longer than the message buffer: cut, still valid JSON */
	assert_int_equal(log_set_json_file(NULL, err, sizeof(err)), 0);
	log_info("vmm", "vm1", "after close: not in the file");

	n = read_json_lines(path, o, 8);
	assert_int_equal(n, 3);
	for (int i = 0; i < n; i++) {
		assert_true(json_object_object_get_ex(o[i], "t", &v));
		assert_true(json_object_is_type(v, json_type_double));
		assert_true(json_object_get_double(v) >= 0);
	}
	assert_string_equal(str_field(o[0], "level"), "warn");
	assert_string_equal(str_field(o[0], "component"), "remus");
	assert_string_equal(str_field(o[0], "vm"), "vm1");
	assert_string_equal(str_field(o[0], "msg"), "took over at epoch 7: \"quoted\" and newline");
	assert_string_equal(str_field(o[1], "level"), "error");
	assert_string_equal(str_field(o[1], "component"), "vmm");
	assert_false(json_object_object_get_ex(o[1], "vm", NULL)); /* no VM: no key */
	assert_string_equal(str_field(o[2], "vm"), "vm2");
	assert_true(strlen(str_field(o[2], "msg")) > 1000);
	assert_true(json_object_get_double(json_object_object_get(o[2], "t")) >=
		    json_object_get_double(json_object_object_get(o[0], "t")));
	for (int i = 0; i < n; i++)
		json_object_put(o[i]);
	unlink(path);
}

static void test_json_open_error(void **state)
{
	char err[256] = "";

	(void)state;
	assert_int_equal(log_set_json_file("/nonexistent-dir/x/log.json", err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "/nonexistent-dir/x/log.json"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_sink_receives, setup, teardown),
		cmocka_unit_test_setup_teardown(test_level_filter, setup, teardown),
		cmocka_unit_test_setup_teardown(test_newline_flattened, setup, teardown),
		cmocka_unit_test_setup_teardown(test_level_parse, setup, teardown),
		cmocka_unit_test_setup_teardown(test_json_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_json_open_error, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
