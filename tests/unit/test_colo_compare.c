/* test_colo_compare.c — unit tests of the COLO comparator: non-TCP protocols, VLANs, bounds, timeouts, checkpoints, table growth, malformed frames. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "tests/unit/colo_sink.h"

static void test_bad_args(void **state)
{
	struct colo_cmp_cfg cfg = {0};
	struct colo_cmp *c = (void *)1;
	struct sink s;
	uint8_t f[64] = {0};

	(void)state;
	assert_int_equal(colo_cmp_new(&c, NULL), -EINVAL);
	assert_null(c);
	assert_int_equal(colo_cmp_new(&c, &cfg), -EINVAL); /* no release callback */
	assert_null(c);
	colo_cmp_free(NULL);
	c = cmp_new(&s, 0, 0, 0);
	assert_int_equal(colo_cmp_primary(c, 0, f, 0, 1), -EINVAL);
	assert_int_equal(colo_cmp_secondary(c, 0, f, 0, 1), -EINVAL);
	assert_int_equal(colo_cmp_primary(c, 0, NULL, 60, 1), -EINVAL);
	{
		uint8_t *big = calloc(1, COLO_CMP_MAX_FRAME + 1);

		assert_int_equal(colo_cmp_primary(c, 0, big, COLO_CMP_MAX_FRAME + 1, 1), -EINVAL);
		/* exactly the maximum is a frame (other, whole-frame compare) */
		assert_int_equal(colo_cmp_primary(c, 0, big, COLO_CMP_MAX_FRAME, 1), 0);
		assert_int_equal(colo_cmp_secondary(c, 0, big, COLO_CMP_MAX_FRAME, 1), 0);
		free(big);
	}
	assert_int_equal(colo_cmp_rewrite_inbound(c, 0, f, 0), -EINVAL);
	assert_int_equal(colo_cmp_rewrite_inbound(c, 0, NULL, 10), -EINVAL);
	assert_int_equal(stats(c).invalid, 4);
	assert_int_equal(stats(c).matched, 1);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.len[0], COLO_CMP_MAX_FRAME);
	colo_cmp_free(c);
	sink_free(&s);
}

/* UDP frames match in order; TTL, IP id and checksums may differ */
static void test_udp_in_order(void **state)
{
	struct fdef d = flow_vm(4, 53, 40000), d2;
	uint8_t p[3][128], q[128];
	size_t pn[3], qn;
	struct colo_cmp_stats st;
	struct sink s;
	struct colo_cmp *c = cmp_new(&s, 0, 0, 0);
	int i;

	(void)state;
	for (i = 0; i < 3; i++) {
		char msg[32];

		snprintf(msg, sizeof(msg), "reply %d", i);
		d.ipid = (uint16_t)(100 + i);
		pn[i] = fb_udp(p[i], &d, msg, strlen(msg));
		pvm(c, p[i], pn[i], MS(1));
	}
	assert_int_equal(s.n, 0);
	assert_int_equal(stats(c).held_frames, 3);
	d2 = d;
	for (i = 0; i < 3; i++) {
		char msg[32];

		snprintf(msg, sizeof(msg), "reply %d", i);
		d2.ttl = 17; /* a different TTL and IP id: both ignored */
		d2.ipid = (uint16_t)(7000 + i);
		qn = fb_udp(q, &d2, msg, strlen(msg));
		assert_memory_not_equal(q, p[i], qn);
		svm(c, q, qn, MS(2));
		assert_int_equal(s.n, i + 1);
		assert_released(&s, i, p[i], pn[i]);
	}
	st = stats(c);
	assert_int_equal(st.compared, 3);
	assert_int_equal(st.matched, 3);
	assert_int_equal(st.mismatched, 0);
	assert_int_equal(st.udp.compared, 3);
	assert_int_equal(st.udp.matched, 3);
	assert_int_equal(st.tcp.compared, 0);
	assert_int_equal(st.flows, 1);
	assert_int_equal(st.held_frames, 0);
	assert_int_equal(st.held_bytes, 0);
	assert_int_equal(st.svm_frames, 0);
	assert_int_equal(st.released, 3);
	assert_int_equal(st.divergence_since_ns, 0);
	assert_int_equal(s.ndiv, 0);
	assert_int_equal(colo_cmp_tick(c, MS(10000)), COLO_CMP_NONE);
	colo_cmp_free(c);
	sink_free(&s);
}

/* How long matched PVM frames were held: their arrival to the SVM twin's (nearest-rank p50/p99);
 * frames released by a checkpoint are not matches and do not count. */
static void test_hold_time(void **state)
{
	struct fdef d = flow_vm(4, 53, 40000);
	uint8_t p[4][128];
	size_t pn[4];
	struct sink s;
	struct colo_cmp *c = cmp_new(&s, 0, 0, 0);

	(void)state;
	assert_int_equal(stats(c).hold_p50_ns, 0);
	assert_int_equal(stats(c).hold_p99_ns, 0);
	for (int i = 0; i < 4; i++) {
		char msg[32];

		snprintf(msg, sizeof(msg), "reply %d", i);
		pn[i] = fb_udp(p[i], &d, msg, strlen(msg));
		pvm(c, p[i], pn[i], MS(1 + (uint64_t)i)); /* held since 1, 2, 3, 4 ms */
	}
	for (int i = 0; i < 3; i++)
		svm(c, p[i], pn[i], MS(10)); /* matched at 10 ms: held 9, 8, 7 ms */
	assert_int_equal(s.n, 3);
	assert_int_equal(stats(c).hold_p50_ns, MS(8));
	assert_int_equal(stats(c).hold_p99_ns, MS(9));
	colo_cmp_checkpoint_done(c); /* the fourth goes out unmatched: no hold sample */
	assert_int_equal(s.n, 4);
	assert_int_equal(stats(c).hold_p50_ns, MS(8));
	assert_int_equal(stats(c).hold_p99_ns, MS(9));
	colo_cmp_free(c);
	sink_free(&s);
}

/* ICMP, ICMPv6, ARP, ND and an unknown ethertype, each matched and counted in its class */
static void test_protocols(void **state)
{
	struct fdef d4 = flow_vm(4, 0, 0), d6 = flow_vm(6, 0, 0);
	uint8_t f[6][256], raw[80];
	size_t n[6];
	struct colo_cmp_stats st;
	struct sink s;
	struct colo_cmp *c = cmp_new(&s, 0, 0, 0);
	int i;

	(void)state;
	n[0] = fb_icmp(f[0], &d4, 0, 0x1234, "ping", 4);
	n[1] = fb_icmp(f[1], &d6, 129, 0x1234, "ping6", 5);
	n[2] = fb_arp(f[2], &d4, 2);
	n[3] = fb_na(f[3], &d6, d6.src);
	fb_eth(raw, &d4, 0x88b5);
	memset(raw + 14, 0xab, sizeof(raw) - 14);
	memcpy(f[4], raw, sizeof(raw));
	n[4] = sizeof(raw);
	d6.ext6 = true; /* ICMPv6 behind two extension headers */
	n[5] = fb_icmp(f[5], &d6, 129, 0x4321, "ext", 3);
	for (i = 0; i < 6; i++)
		pvm(c, f[i], n[i], MS(1));
	assert_int_equal(s.n, 0);
	d4.ttl = d6.ttl = 3;
	for (i = 0; i < 6; i++)
		svm(c, f[i], n[i], MS(2));
	assert_int_equal(s.n, 6);
	for (i = 0; i < 6; i++)
		assert_released(&s, i, f[i], n[i]);
	st = stats(c);
	assert_int_equal(st.compared, 6);
	assert_int_equal(st.matched, 6);
	assert_int_equal(st.icmp.matched, 3);
	assert_int_equal(st.arp.matched, 2);
	assert_int_equal(st.other.matched, 1);
	assert_int_equal(st.udp.compared + st.tcp.compared, 0);
	assert_int_equal(st.malformed, 0);
	assert_int_equal(st.flows, 6);
	colo_cmp_free(c);
	sink_free(&s);
}

/* ICMP echo with another hop limit / flow label matches; with other data mismatches */
static void test_icmp6_fields(void **state)
{
	struct fdef d = flow_vm(6, 0, 0), e;
	uint8_t a[256], b[256];
	size_t an, bn;
	struct sink s;
	struct colo_cmp *c = cmp_new(&s, 0, 0, 0);

	(void)state;
	d.flowlabel = 0x12345;
	an = fb_icmp(a, &d, 129, 7, "same", 4);
	e = d;
	e.flowlabel = 0xabcde;
	e.ttl = 1;
	bn = fb_icmp(b, &e, 129, 7, "same", 4);
	pvm(c, a, an, MS(1));
	svm(c, b, bn, MS(1));
	assert_int_equal(s.n, 1);
	an = fb_icmp(a, &d, 129, 7, "one!", 4);
	bn = fb_icmp(b, &d, 129, 7, "two!", 4);
	pvm(c, a, an, MS(2));
	svm(c, b, bn, MS(2));
	assert_int_equal(s.n, 1);
	assert_int_equal(s.ndiv, 1);
	assert_int_equal(s.why[0], COLO_CMP_MISMATCH);
	assert_int_equal(stats(c).icmp.mismatched, 1);
	assert_int_equal(stats(c).icmp.matched, 1);
	colo_cmp_free(c);
	sink_free(&s);
}

/* a mismatch fires diverged(MISMATCH) once per episode; checkpoint_done starts a new episode */
static void test_mismatch_once(void **state)
{
	struct fdef a = flow_vm(4, 1000, 2000), b = flow_vm(4, 1001, 2001);
	uint8_t f[6][128];
	size_t n[6];
	struct colo_cmp_stats st;
	struct sink s;
	struct colo_cmp *c = cmp_new(&s, 0, 0, 0);

	(void)state;
	n[0] = fb_udp(f[0], &a, "AAAA", 4);
	n[1] = fb_udp(f[1], &a, "AAAB", 4);
	n[2] = fb_udp(f[2], &b, "BBBB", 4);
	n[3] = fb_udp(f[3], &b, "BBBC", 4);
	pvm(c, f[0], n[0], MS(1));
	svm(c, f[1], n[1], MS(1));
	assert_int_equal(s.ndiv, 1);
	assert_int_equal(s.why[0], COLO_CMP_MISMATCH);
	assert_int_equal(colo_cmp_tick(c, MS(2)), COLO_CMP_MISMATCH);
	pvm(c, f[2], n[2], MS(2));
	svm(c, f[3], n[3], MS(2));
	assert_int_equal(s.ndiv, 1); /* same episode */
	/* the diverged flow drops the SVM's frames and holds the PVM's */
	svm(c, f[0], n[0], MS(3));
	pvm(c, f[0], n[0], MS(3));
	st = stats(c);
	assert_int_equal(st.mismatched, 2);
	assert_int_equal(st.udp.mismatched, 2);
	assert_int_equal(st.matched, 0);
	assert_int_equal(st.held_frames, 3);
	assert_int_equal(st.svm_frames, 0);
	assert_int_equal(st.dropped_svm, 3);
	assert_int_equal(s.n, 0);
	colo_cmp_checkpoint_done(c);
	assert_int_equal(s.n, 3);
	assert_released(&s, 0, f[0], n[0]);
	assert_released(&s, 1, f[2], n[2]);
	assert_released(&s, 2, f[0], n[0]);
	assert_int_equal(colo_cmp_tick(c, MS(4)), COLO_CMP_NONE);
	/* compared again after the checkpoint: a match, then a new episode */
	pvm(c, f[2], n[2], MS(5));
	svm(c, f[2], n[2], MS(5));
	assert_int_equal(s.n, 4);
	pvm(c, f[1], n[1], MS(6));
	svm(c, f[0], n[0], MS(6));
	assert_int_equal(s.ndiv, 2);
	assert_int_equal(s.why[1], COLO_CMP_MISMATCH);
	assert_int_equal(stats(c).mismatched, 3);
	assert_int_equal(stats(c).divergences, 2);
	colo_cmp_free(c);
	sink_free(&s);
}

/* an unmatched frame older than timeout_ms: TIMEOUT via tick, once */
static void test_timeout(void **state)
{
	struct fdef d = flow_vm(4, 53, 5353);
	uint8_t f[128];
	size_t n = fb_udp(f, &d, "x", 1);
	struct sink s;
	struct colo_cmp *c = cmp_new(&s, 50, 0, 0);

	(void)state;
	pvm(c, f, n, MS(1000));
	assert_int_equal(stats(c).divergence_since_ns, MS(1000));
	assert_int_equal(colo_cmp_tick(c, MS(1049)), COLO_CMP_NONE);
	assert_int_equal(colo_cmp_tick(c, MS(1050)), COLO_CMP_NONE);
	assert_int_equal(s.ndiv, 0);
	assert_int_equal(colo_cmp_tick(c, MS(1050) + 1), COLO_CMP_TIMEOUT);
	assert_int_equal(s.ndiv, 1);
	assert_int_equal(s.why[0], COLO_CMP_TIMEOUT);
	assert_int_equal(colo_cmp_tick(c, MS(2000)), COLO_CMP_TIMEOUT);
	assert_int_equal(s.ndiv, 1);
	colo_cmp_checkpoint_done(c);
	assert_int_equal(s.n, 1);
	assert_int_equal(stats(c).divergence_since_ns, 0);
	/* an SVM frame without a PVM twin times out too (default timeout 100 ms) */
	colo_cmp_free(c);
	sink_free(&s);
	c = cmp_new(&s, 0, 0, 0);
	svm(c, f, n, MS(5000));
	assert_int_equal(colo_cmp_tick(c, MS(5100)), COLO_CMP_NONE);
	assert_int_equal(colo_cmp_tick(c, MS(5101)), COLO_CMP_TIMEOUT);
	assert_int_equal(s.ndiv, 1);
	colo_cmp_checkpoint_done(c);
	assert_int_equal(stats(c).dropped_svm, 1);
	assert_int_equal(s.n, 0);
	colo_cmp_free(c);
	sink_free(&s);
}

/* over the frame / byte bound: diverged(QUEUE) once, nothing dropped, all released in order */
static void test_queue_bound(void **state)
{
	struct fdef d = flow_vm(4, 7, 8);
	uint8_t f[8][600], pay[500];
	size_t n[8];
	struct colo_cmp_stats st;
	struct sink s;
	struct colo_cmp *c = cmp_new(&s, 0, 0, 4);
	int i;

	(void)state;
	for (i = 0; i < 6; i++) {
		memset(pay, 'a' + i, sizeof(pay));
		n[i] = fb_udp(f[i], &d, pay, 10);
		pvm(c, f[i], n[i], MS(1));
		assert_int_equal(s.ndiv, i < 4 ? 0 : 1);
	}
	assert_int_equal(s.why[0], COLO_CMP_QUEUE);
	/* still the same episode: the timeout is reported as the current reason, not called back */
	assert_int_equal(colo_cmp_tick(c, MS(1000)), COLO_CMP_QUEUE);
	assert_int_equal(s.ndiv, 1);
	st = stats(c);
	assert_int_equal(st.held_frames, 6);
	assert_int_equal(st.released, 0);
	assert_int_equal(st.dropped_svm, 0);
	colo_cmp_checkpoint_done(c);
	assert_int_equal(s.n, 6);
	for (i = 0; i < 6; i++)
		assert_released(&s, i, f[i], n[i]);
	colo_cmp_free(c);
	sink_free(&s);

	/* bytes: 1000 bytes bound, 542-byte frames: the second is over */
	c = cmp_new(&s, 0, 1000, 0);
	memset(pay, 'z', sizeof(pay));
	n[0] = fb_udp(f[0], &d, pay, 500);
	pvm(c, f[0], n[0], MS(1));
	assert_int_equal(s.ndiv, 0);
	pvm(c, f[0], n[0], MS(1));
	assert_int_equal(s.ndiv, 1);
	assert_int_equal(s.why[0], COLO_CMP_QUEUE);
	assert_int_equal(stats(c).held_bytes, 2 * n[0]);
	/* the SVM side over its bound: its frame is dropped (a checkpoint discards it anyway) */
	d.sport = 99;
	memset(pay, 'y', sizeof(pay));
	n[1] = fb_udp(f[1], &d, pay, 500);
	svm(c, f[1], n[1], MS(1));
	svm(c, f[1], n[1], MS(1));
	assert_int_equal(stats(c).svm_frames, 1);
	assert_int_equal(stats(c).dropped_svm, 1);
	colo_cmp_checkpoint_done(c);
	assert_int_equal(s.n, 2);
	assert_int_equal(stats(c).dropped_svm, 2);
	colo_cmp_free(c);
	sink_free(&s);
}

/* checkpoint_done releases every held frame in order (across flows) and drops every SVM frame */
static void test_checkpoint_done(void **state)
{
	struct fdef a = flow_vm(4, 1, 2), b = flow_vm(6, 3, 4), x = flow_vm(4, 9, 9);
	uint8_t f[5][128];
	size_t n[5];
	struct colo_cmp_stats st;
	struct sink s;
	struct colo_cmp *c = cmp_new(&s, 0, 0, 0);
	int i;

	(void)state;
	n[0] = fb_udp(f[0], &a, "a1", 2);
	n[1] = fb_udp(f[1], &b, "b1", 2);
	n[2] = fb_udp(f[2], &a, "a2", 2);
	n[3] = fb_udp(f[3], &x, "s1", 2);
	n[4] = fb_udp(f[4], &x, "s2", 2);
	for (i = 0; i < 3; i++)
		pvm(c, f[i], n[i], MS(1));
	svm(c, f[3], n[3], MS(1));
	svm(c, f[4], n[4], MS(1));
	st = stats(c);
	assert_int_equal(st.held_frames, 3);
	assert_int_equal(st.svm_frames, 2);
	assert_int_equal(st.svm_bytes, n[3] + n[4]);
	colo_cmp_checkpoint_done(c);
	assert_int_equal(s.n, 3);
	for (i = 0; i < 3; i++)
		assert_released(&s, i, f[i], n[i]);
	st = stats(c);
	assert_int_equal(st.held_frames, 0);
	assert_int_equal(st.svm_frames, 0);
	assert_int_equal(st.dropped_svm, 2);
	assert_int_equal(st.compared, 0);
	assert_int_equal(st.released, 3);
	assert_int_equal(st.flows, 3); /* flows are kept */
	colo_cmp_free(c);
	sink_free(&s);
}

static void test_passthrough(void **state)
{
	struct fdef d = flow_vm(4, 1, 2), e = flow_vm(4, 3, 4);
	uint8_t f[3][128];
	size_t n[3];
	struct sink s;
	struct colo_cmp *c = cmp_new(&s, 0, 0, 0);

	(void)state;
	n[0] = fb_udp(f[0], &d, "1", 1);
	n[1] = fb_udp(f[1], &d, "2", 1);
	n[2] = fb_udp(f[2], &e, "3", 1);
	pvm(c, f[0], n[0], MS(1));
	pvm(c, f[1], n[1], MS(1));
	svm(c, f[2], n[2], MS(1));
	colo_cmp_passthrough(c);
	assert_int_equal(s.n, 2);
	pvm(c, f[2], n[2], MS(2));
	assert_int_equal(s.n, 3);
	assert_released(&s, 2, f[2], n[2]);
	svm(c, f[0], n[0], MS(2));
	assert_int_equal(s.n, 3);
	assert_int_equal(stats(c).passthrough, 1);
	assert_int_equal(stats(c).dropped_svm, 2);
	assert_int_equal(colo_cmp_tick(c, MS(100000)), COLO_CMP_NONE);
	assert_int_equal(s.ndiv, 0);
	colo_cmp_free(c);
	sink_free(&s);
}

/* 802.1Q and 802.1ad/802.1Q (QinQ): tagged flows match; another VLAN id is another flow */
static void test_vlan(void **state)
{
	struct fdef q = flow_vm(4, 5, 6), qq = flow_vm(6, 5, 6), other;
	uint8_t a[256], b[256];
	size_t an, bn;
	struct sink s;
	struct colo_cmp *c = cmp_new(&s, 10, 0, 0);

	(void)state;
	q.nvlan = 1;
	q.vlan[0] = 10;
	qq.nvlan = 2;
	qq.vlan[0] = 100;
	qq.vlan[1] = 10;
	an = fb_udp(a, &q, "tagged", 6);
	pvm(c, a, an, MS(1));
	svm(c, a, an, MS(1));
	an = fb_udp(a, &qq, "qinq", 4);
	pvm(c, a, an, MS(1));
	svm(c, a, an, MS(1));
	an = fb_tcp(a, &qq, 1, 1, 0x18, "tcp", 3);
	pvm(c, a, an, MS(1));
	svm(c, a, an, MS(1));
	assert_int_equal(s.n, 3);
	assert_int_equal(stats(c).flows, 3);
	assert_int_equal(stats(c).tcp.matched, 1);
	/* same 5-tuple, inner VLAN 20 instead of 10: a different flow, never matched */
	other = qq;
	other.vlan[1] = 20;
	an = fb_udp(a, &qq, "x", 1);
	bn = fb_udp(b, &other, "x", 1);
	pvm(c, a, an, MS(2));
	svm(c, b, bn, MS(2));
	assert_int_equal(s.n, 3);
	assert_int_equal(stats(c).flows, 4);
	assert_int_equal(colo_cmp_tick(c, MS(13)), COLO_CMP_TIMEOUT);
	assert_int_equal(stats(c).malformed, 0);
	colo_cmp_free(c);
	sink_free(&s);
}

/* 100,000 flows: the table grows, no flow state is lost, idle flows expire */
static void test_many_flows(void **state)
{
	enum { N = 100000 };
	struct fdef d = flow_vm(4, 0, 0), first = flow_vm(6, 1, 1);
	uint8_t f[128], g[128];
	size_t n, gn;
	struct sink s;
	struct colo_cmp *c = cmp_new(&s, 0, 0, 0);
	int i, ticks = 0;

	(void)state;
	gn = fb_udp(g, &first, "first", 5);
	pvm(c, g, gn, MS(1)); /* held across the whole run */
	for (i = 0; i < N; i++) {
		d.sport = (uint16_t)(1 + i % 50000);
		d.dst[2] = (uint8_t)(i / 50000);
		n = fb_udp(f, &d, &i, sizeof(i));
		pvm(c, f, n, MS(2));
		svm(c, f, n, MS(2));
	}
	assert_int_equal(s.n, N);
	assert_int_equal(stats(c).flows, N + 1);
	assert_int_equal(stats(c).matched, N);
	svm(c, g, gn, MS(3));
	assert_int_equal(s.n, N + 1);
	i = 0;
	d.sport = 1;
	d.dst[2] = 0;
	n = fb_udp(f, &d, &i, sizeof(i));
	assert_released(&s, 0, f, n); /* the first flow's frame came first */
	/* idle expiry: 60 s default, at most 1024 flows per tick */
	assert_int_equal(colo_cmp_tick(c, MS(2) + MS(60000)), COLO_CMP_NONE); /* idle 60 s exactly: kept */
	assert_int_equal(stats(c).flows, N + 1);
	while (stats(c).flows && ticks++ < 200)
		colo_cmp_tick(c, MS(4) + MS(60000));
	assert_int_equal(stats(c).flows, 0);
	assert_int_equal(stats(c).expired, N + 1);
	colo_cmp_free(c);
	sink_free(&s);
}

/* Truncated / inconsistent frames of every layer: counted as malformed, compared whole, in order. */
static void test_malformed(void **state)
{
	struct fdef d4 = flow_vm(4, 80, 1234), d6 = flow_vm(6, 80, 1234), q = d4;
	uint8_t base[8][256], f[64][256];
	size_t bn[8], n[64], k = 0, i, j;
	struct colo_cmp_stats st;
	struct sink s;
	struct colo_cmp *c;

	(void)state;
	q.nvlan = 1;
	q.vlan[0] = 5;
	d6.ext6 = true;
	bn[0] = fb_tcp(base[0], &d4, 1, 2, 0x18, "hello", 5);
	bn[1] = fb_udp(base[1], &d4, "u", 1);
	bn[2] = fb_icmp(base[2], &d4, 0, 1, "i", 1);
	bn[3] = fb_arp(base[3], &d4, 1);
	bn[4] = fb_tcp(base[4], &d6, 1, 2, 0x18, "hello6", 6);
	bn[5] = fb_udp(base[5], &q, "v", 1);
	/* every truncation of each base frame */
	c = cmp_new(&s, 0, 0, 0);
	for (i = 0; i < 6; i++)
		for (j = 1; j < bn[i]; j++) {
			pvm(c, base[i], j, MS(1));
			svm(c, base[i], j, MS(1));
		}
	st = stats(c);
	{
		uint64_t sent = 0;

		for (i = 0; i < 6; i++)
			sent += bn[i] - 1;
		assert_int_equal(s.n, sent);
		assert_int_equal(st.matched, sent);
		/* every truncation is malformed (the base frames end where their headers say) */
		assert_int_equal(st.malformed, 2 * sent);
		assert_int_equal(st.other.matched, sent);
	}
	assert_int_equal(st.mismatched, 0);
	colo_cmp_free(c);
	sink_free(&s);

	/* inconsistent headers, each built from a valid frame */
#define MUT(src, off, val)                                                                                   \
	do {                                                                                                 \
		memcpy(f[k], base[src], bn[src]);                                                            \
		n[k] = bn[src];                                                                              \
		f[k][off] = (uint8_t)(val);                                                                  \
		k++;                                                                                         \
	} while (0)
	MUT(0, 14, 0x44); /* IPv4 ihl 4 */
	MUT(0, 14, 0x55); /* version 5 */
	MUT(0, 16, 0xff); /* total length over the frame */
	MUT(0, 17, 0x01);
	f[k - 1][16] = 0; /* total length under the header */
	MUT(0, 14 + 20 + 12, 0x40); /* TCP data offset 4 */
	MUT(0, 14 + 20 + 12, 0xf0); /* TCP data offset past the segment */
	MUT(1, 14 + 20 + 4, 0xff); /* UDP length over the datagram */
	MUT(1, 14 + 20 + 5, 0x04);
	f[k - 1][14 + 20 + 4] = 0; /* UDP length 4 */
	MUT(3, 14 + 5, 20); /* ARP protocol address length 20 */
	MUT(3, 14 + 4, 200); /* ARP hardware address length past the frame */
	MUT(4, 14 + 4, 0xff); /* IPv6 payload length over the frame */
	MUT(4, 14 + 40 + 1, 200); /* IPv6 extension header length past the packet */
	MUT(4, 14, 0x45); /* IPv6 ethertype, version 4 */
	/* nine chained IPv6 destination-options headers */
	{
		struct fdef e = flow_vm(6, 1, 1);
		uint8_t l4[80];

		memset(l4, 0, sizeof(l4));
		for (i = 0; i < 9; i++)
			l4[i * 8] = 60;
		n[k] = fb_ip(f[k], &e, 60, l4, sizeof(l4), -1);
		k++;
	}
	/* a third VLAN tag (two are parsed) and a VLAN tag cut short */
	memcpy(f[k], base[5], bn[5]);
	f[k][16] = 0x81;
	f[k][17] = 0;
	n[k++] = bn[5];
	memcpy(f[k], base[5], 16);
	n[k++] = 16;
	c = cmp_new(&s, 0, 0, 0);
	for (i = 0; i < k; i++) {
		pvm(c, f[i], n[i], MS(1));
		svm(c, f[i], n[i], MS(1));
		assert_int_equal(s.n, i + 1);
		assert_released(&s, (int)i, f[i], n[i]);
	}
	st = stats(c);
	assert_int_equal(st.matched, k);
	assert_int_equal(st.mismatched, 0);
	/* all malformed except the third-tag frame (compared whole as an unknown ethertype) */
	assert_int_equal(st.malformed, 2 * (k - 1));
	/* two different malformed frames mismatch */
	pvm(c, f[0], n[0], MS(2));
	svm(c, f[1], n[1], MS(2));
	assert_int_equal(s.ndiv, 1);
	assert_int_equal(stats(c).other.mismatched, 1);
	colo_cmp_free(c);
	sink_free(&s);
}

static void test_rewrite_inbound_non_tcp(void **state)
{
	struct fdef d = flow_vm(4, 1, 2);
	uint8_t f[128], g[128];
	size_t n = fb_udp(f, &d, "abc", 3);
	struct sink s;
	struct colo_cmp *c = cmp_new(&s, 0, 0, 0);

	(void)state;
	memcpy(g, f, n);
	assert_int_equal(colo_cmp_rewrite_inbound(c, 0, f, n), 0);
	assert_memory_equal(f, g, n);
	assert_int_equal(colo_cmp_rewrite_inbound(c, 0, f, 5), 0);
	assert_memory_equal(f, g, n);
	colo_cmp_free(c);
	sink_free(&s);
}

/* at max_flows a new flow evicts the least recently used idle one, never one with frames queued */
static void test_flow_bound(void **state)
{
	struct colo_cmp_cfg cfg = {.max_flows = 100, .release = sink_release, .diverged = sink_diverged};
	struct fdef d = flow_vm(4, 0, 9), h = flow_vm(4, 1, 1);
	uint8_t f[128], g[128];
	size_t n, gn;
	struct sink s;
	struct colo_cmp *c = NULL;
	int i;

	(void)state;
	memset(&s, 0, sizeof(s));
	cfg.opaque = &s;
	assert_int_equal(colo_cmp_new(&c, &cfg), 0);
	gn = fb_udp(g, &h, "held", 4);
	pvm(c, g, gn, MS(1)); /* the oldest flow, with a frame held */
	for (i = 0; i < 150; i++) {
		d.sport = (uint16_t)(100 + i);
		n = fb_udp(f, &d, "x", 1);
		pvm(c, f, n, MS(2));
		svm(c, f, n, MS(2));
	}
	assert_int_equal(s.n, 150);
	assert_int_equal(stats(c).flows, 100);
	assert_int_equal(stats(c).expired, 51);
	/* the held flow survived: its SVM twin still matches */
	svm(c, g, gn, MS(3));
	assert_int_equal(s.n, 151);
	assert_released(&s, 150, g, gn);
	assert_int_equal(s.ndiv, 0);
	colo_cmp_free(c);
	sink_free(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad_args),
		cmocka_unit_test(test_udp_in_order),
		cmocka_unit_test(test_hold_time),
		cmocka_unit_test(test_protocols),
		cmocka_unit_test(test_icmp6_fields),
		cmocka_unit_test(test_mismatch_once),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_queue_bound),
		cmocka_unit_test(test_checkpoint_done),
		cmocka_unit_test(test_passthrough),
		cmocka_unit_test(test_vlan),
		cmocka_unit_test(test_many_flows),
		cmocka_unit_test(test_flow_bound),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_rewrite_inbound_non_tcp),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
