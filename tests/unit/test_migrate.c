/* test_migrate.c — unit tests of the pre-copy estimator (migrate/converge.c) and the back-channel messages. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "migrate/converge.h"
#include "migrate/migrate_priv.h"

static void test_unknown_rate_never_fits(void **state)
{
	struct converge c;

	(void)state;
	conv_init(&c, 10);
	assert_false(conv_fits(&c, 1));
	assert_true(conv_fits(&c, 0)); /* nothing left: only the fixed overhead */
	conv_round_sent(&c, 10, 0.001); /* too few pages to measure */
	assert_true(c.page_rate == 0);
	assert_false(conv_fits(&c, 1));
}

static void test_estimate_from_rate(void **state)
{
	struct converge c;

	(void)state;
	conv_init(&c, 10);
	conv_round_sent(&c, 100000, 0.25); /* 400k pages/s */
	assert_true(c.page_rate > 399999 && c.page_rate < 400001);
	/* 2000 pages -> 5 ms + overhead (fits 70 % of 10 ms) */
	double e = conv_estimate_ms(&c, 2000);
	assert_true(e > 5 + CONV_DEFAULT_OVERHEAD_MS - 0.01 && e < 5 + CONV_DEFAULT_OVERHEAD_MS + 0.01);
	assert_true(conv_fits(&c, 2000));
	assert_false(conv_fits(&c, 3000)); /* 7.5 ms + overhead > 7 ms */
	/* EWMA: a slower round halves the way */
	conv_round_sent(&c, 100000, 0.5);
	assert_true(c.page_rate > 299999 && c.page_rate < 300001);
}

static void test_throttle_grows_without_progress(void **state)
{
	struct converge c;
	double t;

	(void)state;
	conv_init(&c, 10);
	conv_round_sent(&c, 50000, 0.1); /* 500k pages/s */
	t = conv_round_synced(&c, 50000, 0.1); /* everything dirty again: 500k/s dirty rate */
	assert_true(t == CONV_THROTTLE_FIRST);
	conv_round_sent(&c, 50000, 0.1);
	t = conv_round_synced(&c, 50000, 0.1);
	assert_true(t > CONV_THROTTLE_FIRST);
	for (int i = 0; i < 20; i++) {
		conv_round_sent(&c, 50000, 0.1);
		t = conv_round_synced(&c, 50000, 0.1);
	}
	assert_true(t == CONV_THROTTLE_MAX);
}

/* The disruption estimates behind --postcopy=auto (converge.h): exact values of the model. */
static void test_throttle_vs_postcopy_cost(void **state)
{
	struct converge c;

	(void)state;
	conv_init(&c, 10);
	assert_true(conv_throttle_cost_ms(&c, 1000) >= 1e9); /* no rate yet */
	assert_true(conv_postcopy_cost_ms(&c, 1000) >= 1e9);
	conv_round_sent(&c, 100000, 0.25); /* P = 400k pages/s */
	(void)conv_round_synced(&c, 100000, 0.125); /* D = 800k pages/s: f = 1 - P/2D = 0.75 */
	assert_float_equal(conv_postcopy_cost_ms(&c, 40000), 100.0, 1e-9); /* 40k / 400k/s */
	/* r = 800k * 0.25 / 400k = 0.5: lost = 0.75 * 40000 / (400k * 0.5) = 150 ms */
	assert_float_equal(conv_throttle_cost_ms(&c, 40000), 150.0, 1e-9);

	conv_init(&c, 10);
	conv_round_sent(&c, 100000, 0.25); /* P = 400k */
	(void)conv_round_synced(&c, 30000, 0.125); /* D = 240k: f = 0.5 (first step), r = 0.3 */
	assert_float_equal(conv_throttle_cost_ms(&c, 40000), 0.5 * 40000 / (400000 * 0.7) * 1e3, 1e-9);
	assert_true(conv_throttle_cost_ms(&c, 40000) < conv_postcopy_cost_ms(&c, 40000)); /* D < P */
}

static void test_no_throttle_when_converging(void **state)
{
	struct converge c;
	uint64_t left = 50000;

	(void)state;
	conv_init(&c, 10);
	for (int i = 0; i < 10 && !conv_fits(&c, left); i++) {
		double s = (double)left / 400000.0;
		conv_round_sent(&c, left, s);
		left = (uint64_t)(s * 50000.0); /* dirty rate 1/8 of the page rate */
		assert_true(conv_round_synced(&c, left, s) == 0);
	}
	assert_true(conv_fits(&c, left));
}

/* The two-phase switchover's messages go both ways and keep their timestamps. */
static void test_ready_go_roundtrip(void **state)
{
	struct mig_msg m;
	int sv[2];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(mig_msg_send(sv[1], MIG_READY, 11, 22, NULL), 0);
	assert_int_equal(mig_msg_recv(sv[0], &m, 1000), 0);
	assert_int_equal(m.type, MIG_READY);
	assert_true(m.t_start_ns == 11 && m.t_running_ns == 22);
	assert_int_equal(mig_msg_send(sv[0], MIG_GO, 0, 0, NULL), 0);
	assert_int_equal(mig_msg_recv(sv[1], &m, 1000), 0);
	assert_int_equal(m.type, MIG_GO);
	assert_int_equal(mig_msg_send(sv[1], MIG_RUNNING, 1, 2, "end=1\n"), 0);
	assert_int_equal(mig_msg_recv(sv[0], &m, 1000), 0);
	assert_int_equal(m.type, MIG_RUNNING);
	assert_string_equal(m.text, "end=1?"); /* control characters are masked */
	close(sv[0]);
	close(sv[1]);
}

/* A GO cut short by the link is never a GO: the destination sees EOF (and discards). */
static void test_partial_go_is_eof(void **state)
{
	struct mig_msg m = {.magic = MIG_MSG_MAGIC, .type = MIG_GO};
	int sv[2];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(write(sv[0], &m, sizeof(m) - 1), (ssize_t)sizeof(m) - 1);
	close(sv[0]);
	assert_int_equal(mig_msg_recv(sv[1], &m, 1000), -EPIPE);
	close(sv[1]);
}

/* Silence is a timeout, unknown types and bad magic are protocol errors. */
static void test_bad_messages(void **state)
{
	struct mig_msg m = {.magic = MIG_MSG_MAGIC, .type = MIG_MSG_LAST + 1};
	int sv[2];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(mig_msg_recv(sv[1], &m, 50), -ETIMEDOUT);
	m = (struct mig_msg){.magic = MIG_MSG_MAGIC, .type = MIG_MSG_LAST + 1};
	assert_int_equal(write(sv[0], &m, sizeof(m)), (ssize_t)sizeof(m));
	assert_int_equal(mig_msg_recv(sv[1], &m, 1000), -EBADMSG);
	m = (struct mig_msg){.magic = 0x12345678, .type = MIG_GO};
	assert_int_equal(write(sv[0], &m, sizeof(m)), (ssize_t)sizeof(m));
	assert_int_equal(mig_msg_recv(sv[1], &m, 1000), -EBADMSG);
	close(sv[0]);
	close(sv[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unknown_rate_never_fits),
		cmocka_unit_test(test_estimate_from_rate),
		cmocka_unit_test(test_throttle_grows_without_progress),
		cmocka_unit_test(test_throttle_vs_postcopy_cost),
		cmocka_unit_test(test_no_throttle_when_converging),
		cmocka_unit_test(test_ready_go_roundtrip),
		cmocka_unit_test(test_partial_go_is_eof),
		cmocka_unit_test(test_bad_messages),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
