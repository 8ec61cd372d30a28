/* test_remus_proto.c — unit tests of the Remus control messages: encoding, validation, reassembly. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "replication/remus_proto.h"

static void test_roundtrip(void **state)
{
	uint8_t b[REMUS_MSG_SIZE];
	struct remus_msg m;

	(void)state;
	remus_msg_encode(b, REMUS_MSG_ACK, 0x0102030405060708ull);
	/* little endian on the wire */
	assert_int_equal(b[0], 0x52);
	assert_int_equal(b[4], REMUS_MSG_ACK);
	assert_int_equal(b[8], 0x08);
	assert_int_equal(b[15], 0x01);
	assert_int_equal(remus_msg_decode(b, &m), 0);
	assert_int_equal(m.type, REMUS_MSG_ACK);
	assert_true(m.value == 0x0102030405060708ull);
}

static void test_bad_messages(void **state)
{
	uint8_t b[REMUS_MSG_SIZE];
	struct remus_msg m;

	(void)state;
	remus_msg_encode(b, REMUS_MSG_HEARTBEAT, 1);
	b[1] ^= 1;
	assert_int_equal(remus_msg_decode(b, &m), -EBADMSG);
	remus_msg_encode(b, 0, 1);
	assert_int_equal(remus_msg_decode(b, &m), -EBADMSG);
	remus_msg_encode(b, 99, 1);
	assert_int_equal(remus_msg_decode(b, &m), -EBADMSG);
}

static void test_hello(void **state)
{
	uint32_t iv, to;

	(void)state;
	assert_int_equal(remus_hello_parse(remus_hello_value(25, 200), &iv, &to), 0);
	assert_int_equal(iv, 25);
	assert_int_equal(to, 200);
	assert_int_equal(remus_hello_parse(remus_hello_value(0, 200), &iv, &to), -EINVAL);
	assert_int_equal(remus_hello_parse(remus_hello_value(25, 5), &iv, &to), -EINVAL);
	assert_int_equal(remus_hello_parse(remus_hello_value(25, 70000), &iv, &to), -EINVAL);
	assert_int_equal(remus_hello_parse(remus_hello_value(20000, 200), &iv, &to), -EINVAL);
}

struct got {
	int n;
	uint64_t v[8];
	uint32_t t[8];
};

static void on_msg(void *opaque, const struct remus_msg *m)
{
	struct got *g = opaque;

	if (g->n < 8) {
		g->v[g->n] = m->value;
		g->t[g->n] = m->type;
	}
	g->n++;
}

static void test_reassembly(void **state)
{
	uint8_t b[3 * REMUS_MSG_SIZE];
	struct remus_msgbuf mb = {0};
	struct got g = {0};

	(void)state;
	remus_msg_encode(b, REMUS_MSG_ACK, 1);
	remus_msg_encode(b + 16, REMUS_MSG_HEARTBEAT, 2);
	remus_msg_encode(b + 32, REMUS_MSG_ACK, 3);
	/* byte by byte, then a chunk spanning messages */
	for (int i = 0; i < 20; i++)
		assert_true(remus_msgbuf_feed(&mb, b + i, 1, on_msg, &g) >= 0);
	assert_int_equal(g.n, 1);
	assert_int_equal(remus_msgbuf_feed(&mb, b + 20, 28, on_msg, &g), 2);
	assert_int_equal(g.n, 3);
	assert_true(g.v[0] == 1 && g.v[1] == 2 && g.v[2] == 3);
	assert_int_equal(g.t[1], REMUS_MSG_HEARTBEAT);
	/* garbage */
	memset(b, 0xab, sizeof(b));
	assert_int_equal(remus_msgbuf_feed(&mb, b, 16, on_msg, &g), -EBADMSG);
	assert_int_equal(g.n, 3);
}

/* Defect 4 of issue 10: a dead primary's host or route (EHOSTUNREACH, ENETUNREACH, ECONNABORTED)
 * was classified as a bad epoch, so the standby never took over. Only integrity errors reject. */
static void test_read_error_classes(void **state)
{
	static const int transport[] = {ETIMEDOUT,    EPIPE,	   ECONNRESET, ECONNABORTED,
					EHOSTUNREACH, ENETUNREACH, EHOSTDOWN,  ENETDOWN,
					EIO,	      ENOTCONN,	   ESHUTDOWN};
	static const int integrity[] = {EBADMSG, EPROTO, EINVAL, E2BIG, EPROTONOSUPPORT};

	(void)state;
	for (size_t i = 0; i < sizeof(transport) / sizeof(transport[0]); i++)
		assert_true(remus_read_error_is_transport(-transport[i]));
	for (size_t i = 0; i < sizeof(integrity) / sizeof(integrity[0]); i++)
		assert_false(remus_read_error_is_transport(-integrity[i]));
}

static void test_new_messages(void **state)
{
	uint8_t b[REMUS_MSG_SIZE];
	struct remus_msg m;

	(void)state;
	remus_msg_encode(b, REMUS_MSG_ABANDONED, 42);
	assert_int_equal(remus_msg_decode(b, &m), 0);
	assert_int_equal(m.type, REMUS_MSG_ABANDONED);
	assert_true(m.value == 42);
	remus_msg_encode(b, REMUS_MSG_REJECT, REMUS_REJECT_STATE);
	assert_int_equal(remus_msg_decode(b, &m), 0);
	assert_int_equal(m.type, REMUS_MSG_REJECT);
	remus_msg_encode(b, REMUS_MSG_DISK_SUMS, 3ull << 48 | 1024);
	assert_int_equal(remus_msg_decode(b, &m), 0);
	assert_int_equal(m.type, REMUS_MSG_DISK_SUMS);
	assert_true(m.value == (3ull << 48 | 1024));
	remus_msg_encode(b, REMUS_MSG_DISK_SUM, 0xfedcba9876543210ull);
	assert_int_equal(remus_msg_decode(b, &m), 0);
	assert_true(m.type == REMUS_MSG_DISK_SUM && m.value == 0xfedcba9876543210ull);
	remus_msg_encode(b, REMUS_MSG_DISK_SUMS_END, 1);
	assert_int_equal(remus_msg_decode(b, &m), 0);
	assert_int_equal(m.type, REMUS_MSG_DISK_SUMS_END);
	/* switchover messages */
	remus_msg_encode(b, REMUS_MSG_GO, 7);
	assert_int_equal(remus_msg_decode(b, &m), 0);
	assert_int_equal(m.type, REMUS_MSG_GO);
	assert_true(m.value == 7);
	remus_msg_encode(b, REMUS_MSG_BACK, 7701);
	assert_int_equal(remus_msg_decode(b, &m), 0);
	assert_int_equal(m.type, REMUS_MSG_BACK);
	remus_msg_encode(b, REMUS_MSG_RUNNING, 7);
	assert_int_equal(remus_msg_decode(b, &m), 0);
	assert_int_equal(m.type, REMUS_MSG_RUNNING);
	remus_msg_encode(b, REMUS_MSG_RUNNING + 1, 0);
	assert_int_equal(remus_msg_decode(b, &m), -EBADMSG);
}

struct rec_got {
	int n;
	uint32_t type[4], len[4];
	uint8_t body[4][64];
};

static void on_rec(void *opaque, const struct remus_msg *m)
{
	struct rec_got *g = opaque;

	if (g->n < 4) {
		g->type[g->n] = m->type == REMUS_MSG_RECORD ? m->rec_type : m->type;
		g->len[g->n] = m->rec_len;
		if (m->body && m->rec_len <= 64)
			memcpy(g->body[g->n], m->body, m->rec_len);
	}
	g->n++;
}

/* COLO: REMUS_MSG_RECORD carries a padded body; messages around it stay intact, in any pieces. */
static void test_record_messages(void **state)
{
	uint8_t b[16 + 16 + 16 + 16 + 16];
	struct remus_msgbuf mb = {0};
	struct rec_got g = {0};
	uint32_t opt = 0x80000201u;

	(void)state;
	remus_msg_encode(b, REMUS_MSG_HEARTBEAT, 7);
	remus_record_header(b + 16, opt, 11);
	memcpy(b + 32, "hello world\0\0\0\0\0", 16);
	remus_record_header(b + 48, opt, 0); /* an empty body */
	remus_msg_encode(b + 64, REMUS_MSG_ACK, 9);
	for (size_t i = 0; i < sizeof(b); i += 3)
		assert_true(remus_msgbuf_feed(&mb, b + i, sizeof(b) - i < 3 ? sizeof(b) - i : 3, on_rec,
					      &g) >= 0);
	assert_int_equal(g.n, 4);
	assert_int_equal(g.type[0], REMUS_MSG_HEARTBEAT);
	assert_int_equal(g.type[1], opt);
	assert_int_equal(g.len[1], 11);
	assert_memory_equal(g.body[1], "hello world", 11);
	assert_int_equal(g.type[2], opt);
	assert_int_equal(g.len[2], 0);
	assert_int_equal(g.type[3], REMUS_MSG_ACK);
	/* a mandatory record type, or a body over the bound, ends the stream */
	remus_msgbuf_free(&mb);
	remus_record_header(b, 0x201u, 4);
	assert_int_equal(remus_msgbuf_feed(&mb, b, 16, on_rec, &g), -EBADMSG);
	remus_msgbuf_free(&mb);
	remus_record_header(b, opt, REMUS_MSG_MAX_BODY + 1);
	assert_int_equal(remus_msgbuf_feed(&mb, b, 16, on_rec, &g), -EBADMSG);
	remus_msgbuf_free(&mb);
	/* the HELLO's COLO flag is not part of the settings */
	uint32_t iv, to;
	assert_int_equal(remus_hello_parse(remus_hello_value(2000, 200) | REMUS_HELLO_COLO, &iv, &to), 0);
	assert_true(iv == 2000 && to == 200);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_bad_messages),
		cmocka_unit_test(test_hello),
		cmocka_unit_test(test_reassembly),
		cmocka_unit_test(test_read_error_classes),
		cmocka_unit_test(test_record_messages),
		cmocka_unit_test(test_new_messages),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
