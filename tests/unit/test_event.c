/* test_event.c — unit tests of the event log (vmm/event.c): lines and seqs on disk, numbering continued
 * across reopen, bad input refused without effect, and the bounded queue: a writer stuck on a full pipe
 * drops lines from the file (counted, reported by an events-dropped line) but never blocks the emitter
 * nor loses an event from memory. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
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
#include <json-c/json.h>

#include "common/clock.h"
#include "vmm/event.h"

static char dir[64];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/doppel-evtest-XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* Every line of path parsed (at most 64). */
static int read_lines(const char *path, struct json_object **out)
{
	FILE *f = fopen(path, "r");
	char line[4096];
	int n = 0;

	assert_non_null(f);
	while (n < 64 && fgets(line, sizeof(line), f)) {
		assert_true(strlen(line) > 0 && line[strlen(line) - 1] == '\n');
		out[n] = json_tokener_parse(line);
		assert_non_null(out[n]);
		n++;
	}
	fclose(f);
	return n;
}

static const char *str(struct json_object *o, const char *k)
{
	struct json_object *j;

	return json_object_object_get_ex(o, k, &j) ? json_object_get_string(j) : NULL;
}

static int64_t num(struct json_object *o, const char *k)
{
	struct json_object *j;

	return json_object_object_get_ex(o, k, &j) ? json_object_get_int64(j) : -1;
}

static void test_lines_and_reopen(void **state)
{
	struct evlog *l;
	struct json_object *f, *lines[64];
	char path[128], err[256];

	(void)state;
	snprintf(path, sizeof(path), "%s/a/b/vm1.events.jsonl", dir); /* parents are created */
	assert_int_equal(evlog_open(&l, path, "vm1", 0, err, sizeof(err)), 0);
	f = json_object_new_object();
	json_object_object_add(f, "epoch", json_object_new_int(7));
	json_object_object_add(f, "seq", json_object_new_int(999)); /* reserved: ignored */
	json_object_object_add(f, "type", json_object_new_string("forged"));
	json_object_object_add(f, "ms", json_object_new_double(303.92666400000002));
	json_object_object_add(f, "small", json_object_new_double(0.000123456789));
	json_object_object_add(f, "nan", json_object_new_double(NAN));
	assert_int_equal(evlog_emit(l, "failover", f), 1);
	assert_int_equal(evlog_emit(l, "state", NULL), 2);
	assert_int_equal(evlog_emit(l, "witness-lost", json_object_new_object()), 3);
	assert_int_equal(evlog_flush(l, 5000), 0);
	evlog_close(l);
	assert_int_equal(read_lines(path, lines), 3);
	FILE *rf = fopen(path, "r");
	char raw[1024];
	assert_non_null(fgets(raw, sizeof(raw), rf));
	fclose(rf);
	assert_int_equal(num(lines[0], "seq"), 1);
	assert_string_equal(str(lines[0], "type"), "failover");
	assert_string_equal(str(lines[0], "vm"), "vm1");
	assert_int_equal(num(lines[0], "epoch"), 7);
	assert_non_null(strstr(raw, "\"ms\":303.927,\"small\":0.000123457,\"nan\":null"));
	assert_true(num(lines[0], "time") > 1600000000);
	assert_string_equal(str(lines[1], "type"), "state");
	assert_int_equal(num(lines[2], "seq"), 3);
	for (int i = 0; i < 3; i++)
		json_object_put(lines[i]);

	/* a new process continues the numbering after the file's last line */
	assert_int_equal(evlog_open(&l, path, "vm1", 0, err, sizeof(err)), 0);
	assert_int_equal(evlog_emit(l, "state", NULL), 4);
	struct json_object *e = evlog_last(l, "state");
	assert_non_null(e);
	assert_int_equal(num(e, "seq"), 4);
	json_object_put(e);
	assert_null(evlog_get(l, 3)); /* an earlier process's event: on disk, not in memory */
	evlog_close(l);
	assert_int_equal(read_lines(path, lines), 4);
	assert_int_equal(num(lines[3], "seq"), 4);
	for (int i = 0; i < 4; i++)
		json_object_put(lines[i]);
}

static void test_bad_input(void **state)
{
	static const char *const bad[] = {"",
					  "Failover",
					  "fail over",
					  "x\n",
					  "a/b",
					  "\"q\"",
					  "123456789012345678901234567890123"}; /* 33 chars */
	struct evlog *l;
	struct evlog_stats st;
	char path[128], err[256];
	uint64_t next, missed;

	(void)state;
	assert_int_equal(evlog_open(&l, NULL, "vm", 0, err, sizeof(err)), 0); /* memory only */
	assert_null(evlog_path(l));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(evlog_emit(l, bad[i], json_object_new_object()), -EINVAL);
	assert_int_equal(evlog_emit(l, NULL, NULL), -EINVAL);
	assert_int_equal(evlog_emit(l, "ok", json_object_new_array()), -EINVAL);
	assert_int_equal(evlog_emit(l, "ok", json_object_new_string("x")), -EINVAL);
	assert_int_equal(evlog_emit(NULL, "ok", NULL), -EINVAL);
	evlog_get_stats(l, &st);
	assert_int_equal(st.emitted, 0); /* nothing recorded */
	assert_int_equal(evlog_emit(l, "12345678901234567890123456789012", NULL), 1); /* 32: fine */
	struct json_object *a = evlog_since(l, 0, 10, &next, &missed);
	assert_int_equal(json_object_array_length(a), 1);
	assert_int_equal(next, 1);
	json_object_put(a);
	evlog_close(l);

	/* unusable paths: one clear line, nothing left behind */
	snprintf(path, sizeof(path), "%s/file", dir);
	close(open(path, O_CREAT | O_WRONLY, 0600));
	snprintf(path, sizeof(path), "%s/file/sub/x.jsonl", dir);
	assert_int_equal(evlog_open(&l, path, "vm", 0, err, sizeof(err)), -ENOTDIR);
	assert_non_null(strstr(err, "cannot create directory"));
	assert_null(l);
	assert_int_equal(evlog_open(&l, "", "vm", 0, err, sizeof(err)), -EINVAL);
	snprintf(path, sizeof(path), "%s", dir); /* a directory */
	assert_true(evlog_open(&l, path, "vm", 0, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "cannot open event log"));
}

/* Reads the FIFO until told to stop and it stays quiet; keeps what it read. */
struct drain {
	int fd;
	volatile int go, stop;
	char *buf;
	size_t len, cap;
};

static void *drain_main(void *arg)
{
	struct drain *d = arg;
	char tmp[65536];

	while (!d->go)
		usleep(1000);
	for (;;) {
		struct pollfd p = {.fd = d->fd, .events = POLLIN};
		if (poll(&p, 1, 300) <= 0) {
			if (d->stop)
				break;
			continue;
		}
		ssize_t n = read(d->fd, tmp, sizeof(tmp));
		if (n <= 0)
			break;
		if (d->len + (size_t)n > d->cap) {
			d->cap = (d->len + (size_t)n) * 2;
			d->buf = realloc(d->buf, d->cap);
		}
		memcpy(d->buf + d->len, tmp, (size_t)n);
		d->len += (size_t)n;
	}
	return NULL;
}

#define EMIT 3000

static void test_bounded_queue(void **state)
{
	struct drain d = {0};
	struct evlog *l;
	struct evlog_stats st;
	pthread_t th;
	char path[128], err[256], pad[200];
	uint64_t next, missed;

	(void)state;
	snprintf(path, sizeof(path), "%s/fifo", dir);
	assert_int_equal(mkfifo(path, 0600), 0);
	d.fd = open(path, O_RDWR | O_NONBLOCK); /* a reader that reads only when told to */
	assert_true(d.fd >= 0);
	assert_int_equal(pthread_create(&th, NULL, drain_main, &d), 0);
	assert_int_equal(evlog_open(&l, path, "vm", 8, err, sizeof(err)), 0);
	memset(pad, 'x', sizeof(pad) - 1);
	pad[sizeof(pad) - 1] = 0;
	uint64_t t0 = now_ns();
	int64_t seq = 0;
	for (int i = 0; i < EMIT; i++) {
		struct json_object *f = json_object_new_object();
		json_object_object_add(f, "i", json_object_new_int(i));
		json_object_object_add(f, "pad", json_object_new_string(pad));
		int64_t s = evlog_emit(l, "load", f);
		assert_true(s > seq); /* increasing; the writer's events-dropped lines take seqs too */
		seq = s;
	}
	/* ~700 KB into a 64 KiB pipe nobody reads: the emitter never waited for the writer */
	assert_true(now_ns() - t0 < 2000000000ull);
	evlog_get_stats(l, &st);
	assert_true(st.emitted >= EMIT);
	assert_int_equal(st.last_seq, st.emitted);
	assert_true(st.dropped > 0);
	assert_true(st.queued <= 8);
	/* memory keeps the newest EVLOG_RING events whatever the file got */
	struct json_object *a = evlog_since(l, 0, EVLOG_RING, &next, &missed);
	assert_int_equal(json_object_array_length(a), EVLOG_RING);
	assert_int_equal(missed, st.last_seq - EVLOG_RING);
	assert_int_equal(next, st.last_seq);
	json_object_put(a);
	d.go = 1; /* the disk "recovers": what is queued goes out, then the drop report */
	assert_int_equal(evlog_flush(l, 10000), 0);
	evlog_get_stats(l, &st);
	evlog_close(l);
	d.stop = 1;
	pthread_join(th, NULL);
	close(d.fd);
	/* the file holds exactly the lines not dropped, in order, and events-dropped lines whose counts add
	 * up to the drops */
	int lines = 0, marker = 0;
	int64_t reported = 0, last_i = -1;
	for (char *p = d.buf, *e; p && p < d.buf + d.len; p = e + 1) {
		e = memchr(p, '\n', (size_t)(d.buf + d.len - p));
		assert_non_null(e);
		*e = 0;
		struct json_object *o = json_tokener_parse(p);
		assert_non_null(o);
		if (!strcmp(str(o, "type"), "events-dropped")) {
			marker++;
			reported += num(o, "count");
		} else {
			assert_true(num(o, "i") > last_i); /* in order */
			last_i = num(o, "i");
		}
		json_object_put(o);
		lines++;
	}
	assert_true(marker >= 1);
	assert_int_equal(st.write_errors, 0);
	assert_int_equal(reported, (int64_t)st.dropped); /* every drop reported */
	assert_int_equal(lines - marker, EMIT - (int)st.dropped);
	assert_int_equal(st.written, (uint64_t)lines);
	free(d.buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_lines_and_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bounded_queue, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
