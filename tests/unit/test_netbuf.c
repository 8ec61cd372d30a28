/* test_netbuf.c — unit tests of the output-commit buffer: hold, epoch marks, ordered release, bounds. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "netbuf/netbuf.h"

struct sink {
	int n;
	int netidx[64];
	uint8_t first[64];
	size_t len[64];
	int pressure;
};

static void out_fn(void *opaque, int netidx, const void *frame, size_t len)
{
	struct sink *s = opaque;

	if (s->n < 64) {
		s->netidx[s->n] = netidx;
		s->first[s->n] = ((const uint8_t *)frame)[0];
		s->len[s->n] = len;
	}
	s->n++;
}

static void pressure_fn(void *opaque)
{
	((struct sink *)opaque)->pressure++;
}

static void hold_byte(struct netbuf *nb, int idx, uint8_t b, size_t len)
{
	uint8_t f[1600];

	memset(f, b, sizeof(f));
	assert_int_equal(netbuf_hold(nb, idx, f, len), 0);
}

static void test_passthrough_until_begin(void **state)
{
	struct sink s = {0};
	struct netbuf *nb;
	uint8_t f[60] = {7};

	(void)state;
	assert_int_equal(netbuf_new(&nb, 0, 0, out_fn, &s), 0);
	assert_int_equal(netbuf_hold(nb, 0, f, sizeof(f)), 1);
	assert_int_equal(s.n, 1);
	netbuf_begin(nb);
	assert_int_equal(netbuf_hold(nb, 0, f, sizeof(f)), 0);
	assert_int_equal(s.n, 1);
	netbuf_free(nb);
}

static void test_release_up_to_acked_in_order(void **state)
{
	struct sink s = {0};
	struct netbuf *nb;
	struct netbuf_stats st;

	(void)state;
	assert_int_equal(netbuf_new(&nb, 0, 0, out_fn, &s), 0);
	netbuf_begin(nb);
	hold_byte(nb, 0, 1, 60); /* ARP-sized */
	hold_byte(nb, 1, 2, 1514);
	assert_int_equal(netbuf_mark(nb, 5), 2);
	hold_byte(nb, 0, 3, 86); /* IPv6-sized */
	assert_int_equal(netbuf_mark(nb, 6), 1);
	hold_byte(nb, 0, 4, 100); /* open segment */
	assert_int_equal(netbuf_release(nb, 4), 0);
	assert_int_equal(s.n, 0);
	assert_int_equal(netbuf_release(nb, 5), 2);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.first[0], 1);
	assert_int_equal(s.first[1], 2);
	assert_int_equal(s.netidx[1], 1);
	assert_int_equal(s.len[1], 1514);
	/* an ack beyond every mark never releases the open segment */
	assert_int_equal(netbuf_release(nb, 100), 1);
	assert_int_equal(s.first[2], 3);
	netbuf_get_stats(nb, &st);
	assert_int_equal(st.held_frames, 1);
	assert_int_equal(st.held_bytes, 100);
	assert_int_equal(netbuf_mark(nb, 7), 1);
	assert_int_equal(netbuf_release(nb, 7), 1);
	assert_int_equal(s.first[3], 4);
	netbuf_get_stats(nb, &st);
	assert_int_equal(st.held_frames, 0);
	assert_int_equal(st.released_frames, 4);
	netbuf_free(nb);
}

static void test_mark_must_increase(void **state)
{
	struct sink s = {0};
	struct netbuf *nb;

	(void)state;
	assert_int_equal(netbuf_new(&nb, 0, 0, out_fn, &s), 0);
	netbuf_begin(nb);
	assert_int_equal(netbuf_mark(nb, 3), 0);
	assert_int_equal(netbuf_mark(nb, 3), -EINVAL);
	assert_int_equal(netbuf_mark(nb, 2), -EINVAL);
	assert_int_equal(netbuf_mark(nb, 0), -EINVAL);
	assert_int_equal(netbuf_mark(nb, 4), 0);
	netbuf_free(nb);
}

static void test_bounded_memory(void **state)
{
	struct sink s = {0};
	struct netbuf *nb;
	struct netbuf_stats st;
	uint8_t f[1000] = {0};

	(void)state;
	assert_int_equal(netbuf_new(&nb, 4000, 8, out_fn, &s), 0);
	netbuf_set_pressure_cb(nb, pressure_fn, &s);
	netbuf_begin(nb);
	for (int i = 0; i < 4; i++)
		assert_int_equal(netbuf_hold(nb, 0, f, sizeof(f)), 0);
	assert_int_equal(s.pressure, 1); /* crossed 3/4 once */
	assert_int_equal(netbuf_hold(nb, 0, f, sizeof(f)), -ENOBUFS);
	assert_int_equal(netbuf_hold(nb, 0, f, 0), -EINVAL);
	assert_int_equal(netbuf_hold(nb, 0, f, NETBUF_MAX_FRAME + 1), -EINVAL);
	netbuf_get_stats(nb, &st);
	assert_int_equal(st.dropped, 3);
	assert_int_equal(st.held_bytes, 4000);
	/* frame-count bound */
	assert_int_equal(netbuf_mark(nb, 1), 4);
	assert_int_equal(netbuf_release(nb, 1), 4);
	for (int i = 0; i < 8; i++)
		assert_int_equal(netbuf_hold(nb, 0, f, 10), 0);
	assert_int_equal(netbuf_hold(nb, 0, f, 10), -ENOBUFS);
	assert_int_equal(s.pressure, 2); /* re-armed by the mark */
	netbuf_free(nb); /* frees held frames without output */
	assert_int_equal(s.n, 4);
}

static void test_release_all_on_unprotect(void **state)
{
	struct sink s = {0};
	struct netbuf *nb;
	uint8_t f[60] = {9};

	(void)state;
	assert_int_equal(netbuf_new(&nb, 0, 0, out_fn, &s), 0);
	netbuf_begin(nb);
	hold_byte(nb, 0, 1, 60);
	assert_int_equal(netbuf_mark(nb, 1), 1);
	hold_byte(nb, 0, 2, 60);
	assert_int_equal(netbuf_release_all(nb), 2);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.first[0], 1);
	assert_int_equal(s.first[1], 2);
	assert_int_equal(netbuf_hold(nb, 0, f, sizeof(f)), 1); /* passthrough now */
	assert_int_equal(s.n, 3);
	/* holding again continues with later epochs */
	netbuf_begin(nb);
	hold_byte(nb, 0, 5, 60);
	assert_int_equal(netbuf_mark(nb, 2), 1);
	assert_int_equal(netbuf_release(nb, 2), 1);
	assert_int_equal(s.first[3], 5);
	netbuf_free(nb);
}

/* A fenced primary drops what it held: nothing of it is ever output, later frames stay held. */
static void test_drop_all_when_fenced(void **state)
{
	struct sink s = {0};
	struct netbuf *nb;
	struct netbuf_stats st;

	(void)state;
	assert_int_equal(netbuf_new(&nb, 0, 0, out_fn, &s), 0);
	netbuf_begin(nb);
	hold_byte(nb, 0, 1, 60);
	assert_int_equal(netbuf_mark(nb, 1), 1);
	hold_byte(nb, 0, 2, 60);
	assert_int_equal(netbuf_drop_all(nb), 2);
	assert_int_equal(s.n, 0);
	netbuf_get_stats(nb, &st);
	assert_true(st.held_frames == 0 && st.held_bytes == 0 && st.dropped == 2 && st.holding);
	hold_byte(nb, 0, 3, 60); /* still holding */
	assert_int_equal(netbuf_release(nb, 1), 0);
	assert_int_equal(s.n, 0);
	assert_int_equal(netbuf_mark(nb, 2), 1);
	assert_int_equal(netbuf_release(nb, 2), 1);
	assert_int_equal(s.first[0], 3);
	netbuf_free(nb);
}

static void test_bad_args(void **state)
{
	struct netbuf *nb = (void *)1;

	(void)state;
	assert_int_equal(netbuf_new(&nb, 0, 0, NULL, NULL), -EINVAL);
	assert_null(nb);
	netbuf_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_passthrough_until_begin),
		cmocka_unit_test(test_release_up_to_acked_in_order),
		cmocka_unit_test(test_mark_must_increase),
		cmocka_unit_test(test_bounded_memory),
		cmocka_unit_test(test_release_all_on_unprotect),
		cmocka_unit_test(test_drop_all_when_fenced),
		cmocka_unit_test(test_bad_args),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
