/* test_hist.c — unit tests of common/hist: bucket placement at the bounds, bad set-up, concurrent
 * recording, and a Prometheus exposition whose cumulative buckets, _sum and _count agree. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/hist.h"

static const uint64_t le[] = {1000, 10000, 100000};

static void test_bad_init(void **state)
{
	static const uint64_t unsorted[] = {10, 5}, same[] = {10, 10};
	uint64_t many[HIST_MAX_BUCKETS + 1];
	struct hist h;

	(void)state;
	for (int i = 0; i <= HIST_MAX_BUCKETS; i++)
		many[i] = (uint64_t)i + 1;
	assert_int_equal(hist_init(&h, unsorted, 2), -EINVAL);
	assert_int_equal(hist_init(&h, same, 2), -EINVAL);
	assert_int_equal(hist_init(&h, le, 0), -EINVAL);
	assert_int_equal(hist_init(&h, NULL, 3), -EINVAL);
	assert_int_equal(hist_init(&h, many, HIST_MAX_BUCKETS + 1), -EINVAL);
	assert_int_equal(hist_init(&h, many, HIST_MAX_BUCKETS), 0);
}

static void test_buckets(void **state)
{
	struct hist h;
	struct hist_snap s;

	(void)state;
	assert_int_equal(hist_init(&h, le, 3), 0);
	hist_record(&h, 0); /* <= 1000 */
	hist_record(&h, 1000); /* le is inclusive */
	hist_record(&h, 1001); /* <= 10000 */
	hist_record(&h, 100000); /* <= 100000 */
	hist_record(&h, 100001); /* +Inf */
	hist_record(&h, UINT64_MAX / 4);
	hist_snapshot(&h, &s);
	assert_int_equal(s.nb, 3);
	assert_int_equal(s.cum[0], 2);
	assert_int_equal(s.cum[1], 3);
	assert_int_equal(s.cum[2], 4);
	assert_int_equal(s.cum[3], 6);
	assert_int_equal(s.count, 6);
	assert_true(s.sum_ns == 0 + 1000 + 1001 + 100000 + 100001 + UINT64_MAX / 4);
}

#define THREADS 4
#define PER 100000

static void *recorder(void *arg)
{
	struct hist *h = arg;

	for (int i = 0; i < PER; i++)
		hist_record(h, (uint64_t)(i % 4) * 5000); /* 0, 5000, 10000, 15000 */
	return NULL;
}

static void test_concurrent(void **state)
{
	pthread_t th[THREADS];
	struct hist h;
	struct hist_snap s;

	(void)state;
	assert_int_equal(hist_init(&h, le, 3), 0);
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, recorder, &h), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	hist_snapshot(&h, &s);
	/* nothing lost: every observation counted once, in its bucket */
	assert_int_equal(s.count, THREADS * PER);
	assert_int_equal(s.cum[0], THREADS * PER / 4); /* 0 */
	assert_int_equal(s.cum[1], THREADS * PER / 4 * 3); /* + 5000, 10000 */
	assert_int_equal(s.cum[2], THREADS * PER); /* + 15000 */
	assert_true(s.sum_ns == (uint64_t)THREADS * PER / 4 * (0 + 5000 + 10000 + 15000));
}

static void test_prom_text(void **state)
{
	struct hist h;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	(void)state;
	assert_non_null(f);
	assert_int_equal(hist_init(&h, le, 3), 0);
	hist_record(&h, 500);
	hist_record(&h, 2500000000ull);
	hist_prom(f, &h, "doppel_x_seconds", "A test.", NULL);
	hist_prom(f, &h, "doppel_y_seconds", "Labelled.", "dev=\"net0\"");
	fclose(f);
	assert_string_equal(buf, "# HELP doppel_x_seconds A test.\n"
				 "# TYPE doppel_x_seconds histogram\n"
				 "doppel_x_seconds_bucket{le=\"1e-06\"} 1\n"
				 "doppel_x_seconds_bucket{le=\"1e-05\"} 1\n"
				 "doppel_x_seconds_bucket{le=\"0.0001\"} 1\n"
				 "doppel_x_seconds_bucket{le=\"+Inf\"} 2\n"
				 "doppel_x_seconds_sum 2.5000005\n"
				 "doppel_x_seconds_count 2\n"
				 "# HELP doppel_y_seconds Labelled.\n"
				 "# TYPE doppel_y_seconds histogram\n"
				 "doppel_y_seconds_bucket{dev=\"net0\",le=\"1e-06\"} 1\n"
				 "doppel_y_seconds_bucket{dev=\"net0\",le=\"1e-05\"} 1\n"
				 "doppel_y_seconds_bucket{dev=\"net0\",le=\"0.0001\"} 1\n"
				 "doppel_y_seconds_bucket{dev=\"net0\",le=\"+Inf\"} 2\n"
				 "doppel_y_seconds_sum{dev=\"net0\"} 2.5000005\n"
				 "doppel_y_seconds_count{dev=\"net0\"} 2\n");
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad_init),
		cmocka_unit_test(test_buckets),
		cmocka_unit_test(test_concurrent),
		cmocka_unit_test(test_prom_text),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
