/* test_colo_compare_tcp.c — unit tests of the COLO comparator's TCP matching: resegmentation, retransmission, reordering, ISN offsets, inbound rewriting, FIN/RST. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "tests/unit/colo_sink.h"

#define SA (TH_SYN | TH_ACK)
#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_PSH 0x08
#define TH_ACK 0x10
#define CISN 0x50000000u /* the client's ISN: both VMs acknowledge it */

static const uint8_t mss_opt[4] = {2, 4, 0x05, 0xb4};
static uint8_t data[4000];

static void fill_data(void)
{
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7 + i / 251);
}

/* PVM and SVM SYN/ACKs with ISNs pisn and sisn: the PVM's is released once both are seen */
static void handshake(struct colo_cmp *c, struct sink *s, const struct fdef *d, uint32_t pisn, uint32_t sisn)
{
	uint8_t a[128], b[128];
	size_t an = fb_tcp_opts(a, d, pisn, CISN + 1, SA, NULL, 0, mss_opt, 4);
	size_t bn = fb_tcp_opts(b, d, sisn, CISN + 1, SA, NULL, 0, mss_opt, 4);
	int before = s->n;

	pvm(c, a, an, MS(1));
	assert_int_equal(s->n, before);
	svm(c, b, bn, MS(1));
	assert_int_equal(s->n, before + 1);
	assert_released(s, before, a, an);
}

/* a data segment [off, off + len) of the stream (after the SYN) */
static size_t seg(uint8_t *f, const struct fdef *d, uint32_t isn, uint32_t off, uint32_t len, uint8_t flags)
{
	return fb_tcp(f, d, isn + 1 + off, CISN + 1, flags, data + off, len);
}

static void test_identical(void **state)
{
	struct fdef d = flow_vm(4, 80, 40000);
	uint8_t f[3][2048];
	size_t n[3];
	struct colo_cmp_stats st;
	struct sink s;
	struct colo_cmp *c = cmp_new(&s, 0, 0, 0);
	int i;

	(void)state;
	handshake(c, &s, &d, 1000, 1000);
	for (i = 0; i < 3; i++) {
		n[i] = seg(f[i], &d, 1000, (uint32_t)i * 100, 100, TH_ACK | TH_PSH);
		pvm(c, f[i], n[i], MS(2));
	}
	assert_int_equal(s.n, 1);
	for (i = 0; i < 3; i++) {
		svm(c, f[i], n[i], MS(3));
		assert_int_equal(s.n, 2 + i);
		assert_released(&s, 1 + i, f[i], n[i]);
	}
	st = stats(c);
	assert_int_equal(st.tcp.compared, 4);
	assert_int_equal(st.tcp.matched, 4);
	assert_int_equal(st.compared, 4);
	assert_int_equal(st.held_frames, 0);
	assert_int_equal(st.svm_frames, 0);
	assert_int_equal(s.ndiv, 0);
	colo_cmp_free(c);
	sink_free(&s);
}

/* PVM 1000 + 500 bytes, SVM 1500 (and the other way round): the same bytes match */
static void test_resegment(void **state)
{
	struct fdef d = flow_vm(4, 80, 40001);
	uint8_t p1[2048], p2[2048], q[2048];
	size_t n1, n2, qn;
	struct sink s;
	struct colo_cmp *c = cmp_new(&s, 0, 0, 0);

	(void)state;
	handshake(c, &s, &d, 7, 7);
	n1 = seg(p1, &d, 7, 0, 1000, TH_ACK);
	n2 = seg(p2, &d, 7, 1000, 500, TH_ACK | TH_PSH);
	pvm(c, p1, n1, MS(2));
	pvm(c, p2, n2, MS(2));
	qn = seg(q, &d, 7, 0, 1500, TH_ACK | TH_PSH);
	svm(c, q, qn, MS(2));
	assert_int_equal(s.n, 3);
	assert_released(&s, 1, p1, n1);
	assert_released(&s, 2, p2, n2);
	assert_int_equal(stats(c).svm_frames, 0);
	/* the other way: PVM 1500, SVM 1000 then 500 */
	qn = seg(q, &d, 7, 1500, 1500, TH_ACK);
	pvm(c, q, qn, MS(3));
	n1 = seg(p1, &d, 7, 1500, 1000, TH_ACK);
	svm(c, p1, n1, MS(3));
	assert_int_equal(s.n, 3); /* 1000 of its 1500 bytes matched: held */
	assert_int_equal(stats(c).held_frames, 1);
	n2 = seg(p2, &d, 7, 2500, 500, TH_ACK);
	svm(c, p2, n2, MS(3));
	assert_int_equal(s.n, 4);
	assert_released(&s, 3, q, qn);
	assert_int_equal(stats(c).tcp.matched, 4);
	assert_int_equal(stats(c).svm_frames, 0);
	assert_int_equal(s.ndiv, 0);
	colo_cmp_free(c);
	sink_free(&s);
}

/* a difference inside resegmented data: the matched segment leaves, MISMATCH once, the rest held */
static void test_payload_mismatch(void **state)
{
	struct fdef d = flow_vm(4, 80, 40002);
	uint8_t p1[2048], p2[2048], q[2048];
	size_t n1, n2, qn;
	struct colo_cmp_stats st;
	struct sink s;
	struct colo_cmp *c = cmp_new(&s, 0, 0, 0);

	(void)state;
	handshake(c, &s, &d, 5, 5);
	n1 = seg(p1, &d, 5, 0, 1000, TH_ACK);
	n2 = seg(p2, &d, 5, 1000, 500, TH_ACK);
	pvm(c, p1, n1, MS(2));
	pvm(c, p2, n2, MS(2));
	data[1200] ^= 0xff;
	qn = seg(q, &d, 5, 0, 1500, TH_ACK);
	data[1200] ^= 0xff;
	svm(c, q, qn, MS(2));
	assert_int_equal(s.n, 2);
	assert_released(&s, 1, p1, n1);
	assert_int_equal(s.ndiv, 1);
	assert_int_equal(s.why[0], COLO_CMP_MISMATCH);
	st = stats(c);
	assert_int_equal(st.tcp.mismatched, 1);
	assert_int_equal(st.tcp.matched, 2);
	assert_int_equal(st.held_frames, 1);
	assert_int_equal(st.svm_frames, 0);
	assert_int_equal(st.dropped_svm, 1);
	/* the diverged flow: later SVM segments dropped, PVM held, no second callback */
	qn = seg(q, &d, 5, 1500, 10, TH_ACK);
	svm(c, q, qn, MS(3));
	pvm(c, q, qn, MS(3));
	assert_int_equal(s.ndiv, 1);
	assert_int_equal(stats(c).held_frames, 2);
	assert_int_equal(stats(c).dropped_svm, 2);
	colo_cmp_checkpoint_done(c);
	assert_int_equal(s.n, 4);
	assert_released(&s, 2, p2, n2);
	assert_released(&s, 3, q, qn);
	/* after the checkpoint the SVM continues in the PVM's sequence space */
	qn = seg(q, &d, 5, 1510, 20, TH_ACK);
	pvm(c, q, qn, MS(4));
	svm(c, q, qn, MS(4));
	assert_int_equal(s.n, 5);
	assert_int_equal(s.ndiv, 1);
	colo_cmp_free(c);
	sink_free(&s);
}

/* a retransmission of released bytes leaves at once; the SVM's is never queued */
static void test_retransmission(void **state)
{
	struct fdef d = flow_vm(4, 80, 40003);
	uint8_t p[2048], q[2048];
	size_t pn, qn;
	struct sink s;
	struct colo_cmp *c = cmp_new(&s, 0, 0, 0);

	(void)state;
	handshake(c, &s, &d, 100, 100);
	pn = seg(p, &d, 100, 0, 300, TH_ACK);
	pvm(c, p, pn, MS(2));
	svm(c, p, pn, MS(2));
	assert_int_equal(s.n, 2);
	pvm(c, p, pn, MS(3)); /* retransmitted */
	assert_int_equal(s.n, 3);
	assert_released(&s, 2, p, pn);
	svm(c, p, pn, MS(3));
	assert_int_equal(stats(c).svm_frames, 0);
	/* a retransmission that also carries new bytes [200, 400): held until they match */
	qn = seg(q, &d, 100, 200, 200, TH_ACK);
	pvm(c, q, qn, MS(4));
	assert_int_equal(s.n, 3);
	pn = seg(p, &d, 100, 300, 100, TH_ACK);
	svm(c, p, pn, MS(4));
	assert_int_equal(s.n, 4);
	assert_released(&s, 3, q, qn);
	assert_int_equal(stats(c).tcp.matched, 3);
	assert_int_equal(stats(c).released, 4);
	assert_int_equal(colo_cmp_tick(c, MS(1000)), COLO_CMP_NONE);
	colo_cmp_free(c);
	sink_free(&s);
}

/* reordering across flows, and out-of-order SVM segments within a flow */
static void test_reordering(void **state)
{
	struct fdef a = flow_vm(4, 80, 40010), b = flow_vm(6, 80, 40011);
	uint8_t a1[512], b1[512], s1[512], s2[512], p[1024];
	size_t an, bn, n1, n2, pn;
	struct sink s;
	struct colo_cmp *c = cmp_new(&s, 0, 0, 0);

	(void)state;
	handshake(c, &s, &a, 1, 1);
	handshake(c, &s, &b, 2, 2);
	an = seg(a1, &a, 1, 0, 50, TH_ACK);
	bn = seg(b1, &b, 2, 0, 60, TH_ACK);
	pvm(c, a1, an, MS(2));
	pvm(c, b1, bn, MS(2));
	svm(c, b1, bn, MS(2));
	assert_int_equal(s.n, 3);
	assert_released(&s, 2, b1, bn); /* B does not wait for A */
	svm(c, a1, an, MS(2));
	assert_int_equal(s.n, 4);
	assert_released(&s, 3, a1, an);
	/* PVM one 200-byte segment; the SVM's two halves arrive second half first */
	pn = seg(p, &a, 1, 50, 200, TH_ACK);
	pvm(c, p, pn, MS(3));
	n1 = seg(s1, &a, 1, 50, 100, TH_ACK);
	n2 = seg(s2, &a, 1, 150, 100, TH_ACK);
	svm(c, s2, n2, MS(3));
	assert_int_equal(s.n, 4);
	assert_int_equal(stats(c).svm_frames, 1);
	svm(c, s1, n1, MS(3));
	assert_int_equal(s.n, 5);
	assert_released(&s, 4, p, pn);
	assert_int_equal(stats(c).svm_frames, 0);
	/* the PVM's segments out of order: held in the PVM's order until all matched */
	n1 = seg(s1, &a, 1, 250, 100, TH_ACK);
	n2 = seg(s2, &a, 1, 350, 100, TH_ACK);
	pvm(c, s2, n2, MS(4));
	pvm(c, s1, n1, MS(4));
	pn = seg(p, &a, 1, 250, 200, TH_ACK);
	svm(c, p, pn, MS(4));
	assert_int_equal(s.n, 7);
	assert_released(&s, 5, s2, n2);
	assert_released(&s, 6, s1, n1);
	assert_int_equal(s.ndiv, 0);
	colo_cmp_free(c);
	sink_free(&s);
}

static uint32_t ack_of(const uint8_t *f, const struct fdef *d)
{
	return fb_get32(f + fb_l4off(d) + 8);
}

/* ISN offset learnt from the SYN/ACKs (with sequence wrap); inbound ack and SACK rewritten */
static void isn_offset(int family, int nvlan, bool ext6)
{
	struct fdef d = flow_vm(family, 6379, 40020), in;
	const uint32_t pisn = 0x10000000u, sisn = 0xffffff00u;
	uint8_t p[2048], q[2048], f[256], g[256], opt[12];
	size_t pn, qn, n;
	struct sink s;
	struct colo_cmp *c = cmp_new(&s, 0, 0, 0);

	d.nvlan = nvlan;
	d.vlan[0] = 3;
	d.vlan[1] = 4;
	d.ext6 = ext6;
	in = fb_rev(&d);
	handshake(c, &s, &d, pisn, sisn);
	pn = seg(p, &d, pisn, 0, 600, TH_ACK | TH_PSH);
	qn = seg(q, &d, sisn, 0, 600, TH_ACK | TH_PSH); /* crosses 2^32 in the SVM's space */
	pvm(c, p, pn, MS(2));
	svm(c, q, qn, MS(2));
	assert_int_equal(s.n, 2);
	assert_released(&s, 1, p, pn);
	/* client ACK of 600 bytes + SACK block [pisn + 1 + 700, pisn + 1 + 800) */
	opt[0] = opt[1] = 1;
	opt[2] = 5;
	opt[3] = 10;
	fb_put32(opt + 4, pisn + 1 + 700);
	fb_put32(opt + 8, pisn + 1 + 800);
	n = fb_tcp_opts(f, &in, CISN + 1, pisn + 1 + 600, TH_ACK, "x", 1, opt, sizeof(opt));
	assert_true(fb_l4_csum_ok(f, n, &in, 6));
	memcpy(g, f, n);
	assert_int_equal(colo_cmp_rewrite_inbound(c, 0, f, n), 0);
	assert_int_equal(ack_of(f, &in), sisn + 1 + 600);
	assert_int_equal(fb_get32(f + fb_l4off(&in) + 24), sisn + 1 + 700);
	assert_int_equal(fb_get32(f + fb_l4off(&in) + 28), sisn + 1 + 800);
	assert_true(fb_l4_csum_ok(f, n, &in, 6));
	/* only ack, SACK and checksum changed */
	assert_memory_equal(f, g, fb_l4off(&in) + 8);
	assert_memory_equal(f + fb_l4off(&in) + 12, g + fb_l4off(&in) + 12, 4);
	assert_memory_equal(f + fb_l4off(&in) + 18, g + fb_l4off(&in) + 18, 6);
	assert_memory_equal(f + fb_l4off(&in) + 32, g + fb_l4off(&in) + 32, n - fb_l4off(&in) - 32);
	/* a frame of another flow is left alone */
	in.sport++;
	n = fb_tcp(f, &in, CISN + 1, pisn + 1, TH_ACK, NULL, 0);
	memcpy(g, f, n);
	assert_int_equal(colo_cmp_rewrite_inbound(c, 0, f, n), 0);
	assert_memory_equal(f, g, n);
	in.sport--;
	/* after a checkpoint the offset is 0: nothing rewritten, the SVM speaks PVM numbers */
	colo_cmp_checkpoint_done(c);
	n = fb_tcp(f, &in, CISN + 1, pisn + 1 + 600, TH_ACK, NULL, 0);
	memcpy(g, f, n);
	assert_int_equal(colo_cmp_rewrite_inbound(c, 0, f, n), 0);
	assert_memory_equal(f, g, n);
	pn = seg(p, &d, pisn, 600, 10, TH_ACK);
	pvm(c, p, pn, MS(3));
	svm(c, p, pn, MS(3));
	assert_int_equal(s.n, 3);
	assert_int_equal(s.ndiv, 0);
	assert_int_equal(stats(c).malformed, 0);
	colo_cmp_free(c);
	sink_free(&s);
}

static void test_isn_offset_ip4(void **state)
{
	(void)state;
	isn_offset(4, 0, false);
}

static void test_isn_offset_ip6_ext_qinq(void **state)
{
	(void)state;
	isn_offset(6, 2, true);
}

static void test_isn_offset_vlan(void **state)
{
	(void)state;
	isn_offset(4, 1, false);
}

/* SYN/ACKs: options compared except timestamp values; another MSS is a mismatch */
static void test_syn_options(void **state)
{
	struct fdef d = flow_vm(4, 80, 40030);
	uint8_t a[128], b[128], o1[16] = {2, 4, 5, 0xb4, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2},
				o2[16] = {2, 4, 5, 0xb4, 1, 1, 8, 10, 9, 9, 9, 9, 0, 0, 0, 2};
	size_t an, bn;
	struct sink s;
	struct colo_cmp *c = cmp_new(&s, 0, 0, 0);

	(void)state;
	an = fb_tcp_opts(a, &d, 11, CISN + 1, SA, NULL, 0, o1, 16);
	bn = fb_tcp_opts(b, &d, 99, CISN + 1, SA, NULL, 0, o2, 16);
	pvm(c, a, an, MS(1));
	svm(c, b, bn, MS(1));
	assert_int_equal(s.n, 1);
	d.sport = 81;
	o2[3] = 0xb0; /* MSS 1456 */
	an = fb_tcp_opts(a, &d, 11, CISN + 1, SA, NULL, 0, o1, 16);
	bn = fb_tcp_opts(b, &d, 11, CISN + 1, SA, NULL, 0, o2, 16);
	pvm(c, a, an, MS(1));
	svm(c, b, bn, MS(1));
	assert_int_equal(s.n, 1);
	assert_int_equal(s.ndiv, 1);
	assert_int_equal(s.why[0], COLO_CMP_MISMATCH);
	/* another acknowledged client ISN: a mismatch too (same episode) */
	d.sport = 82;
	an = fb_tcp_opts(a, &d, 11, CISN + 1, SA, NULL, 0, mss_opt, 4);
	bn = fb_tcp_opts(b, &d, 11, CISN + 2, SA, NULL, 0, mss_opt, 4);
	pvm(c, a, an, MS(1));
	svm(c, b, bn, MS(1));
	assert_int_equal(stats(c).tcp.mismatched, 2);
	assert_int_equal(stats(c).tcp.matched, 1);
	assert_int_equal(s.ndiv, 1);
	colo_cmp_free(c);
	sink_free(&s);
}

/* pure ACKs and window updates: released without an SVM twin once nothing is held before them */
static void test_pure_ack(void **state)
{
	struct fdef d = flow_vm(4, 80, 40040);
	uint8_t a[128], p[512];
	size_t an, pn;
	struct sink s;
	struct colo_cmp *c = cmp_new(&s, 0, 0, 0);

	(void)state;
	handshake(c, &s, &d, 1, 9);
	an = fb_tcp(a, &d, 2, CISN + 10, TH_ACK, NULL, 0);
	pvm(c, a, an, MS(2));
	assert_int_equal(s.n, 2);
	assert_released(&s, 1, a, an);
	svm(c, a, an, MS(2)); /* the SVM's pure ACK: nothing to compare, not queued */
	assert_int_equal(stats(c).svm_frames, 0);
	pn = seg(p, &d, 1, 0, 100, TH_ACK);
	pvm(c, p, pn, MS(3));
	pvm(c, a, an, MS(3)); /* behind held data: waits */
	assert_int_equal(s.n, 2);
	assert_int_equal(stats(c).held_frames, 2);
	pn = seg(p, &d, 9, 0, 100, TH_ACK);
	svm(c, p, pn, MS(3));
	assert_int_equal(s.n, 4);
	assert_released(&s, 3, a, an);
	assert_int_equal(stats(c).tcp.compared, 2); /* SYN/ACK and the data segment */
	assert_int_equal(stats(c).released, 4);
	assert_int_equal(colo_cmp_tick(c, MS(1000)), COLO_CMP_NONE);
	colo_cmp_free(c);
	sink_free(&s);
}

/* FIN by position (with different segmentation), both FINs close the flow, which expires */
static void test_fin_close(void **state)
{
	struct fdef d = flow_vm(6, 80, 40050), in;
	uint8_t p[512], q1[512], q2[512], f[128];
	size_t pn, n1, n2, n;
	struct sink s;
	struct colo_cmp *c = cmp_new(&s, 0, 0, 0);

	(void)state;
	in = fb_rev(&d);
	handshake(c, &s, &d, 40, 4000);
	pn = seg(p, &d, 40, 0, 30, TH_ACK | TH_FIN);
	n1 = seg(q1, &d, 4000, 0, 30, TH_ACK);
	n2 = seg(q2, &d, 4000, 30, 0, TH_ACK | TH_FIN);
	pvm(c, p, pn, MS(2));
	svm(c, q1, n1, MS(2));
	assert_int_equal(s.n, 1); /* the FIN is not matched yet */
	svm(c, q2, n2, MS(2));
	assert_int_equal(s.n, 2);
	assert_released(&s, 1, p, pn);
	/* the client's FIN (through the inbound path) closes the flow */
	n = fb_tcp(f, &in, CISN + 1, 40 + 32, TH_ACK | TH_FIN, NULL, 0);
	assert_int_equal(colo_cmp_rewrite_inbound(c, 0, f, n), 0);
	assert_int_equal(ack_of(f, &in), 4000 + 32);
	assert_true(fb_l4_csum_ok(f, n, &in, 6));
	assert_int_equal(stats(c).flows, 1);
	assert_int_equal(colo_cmp_tick(c, MS(2) + MS(COLO_CMP_CLOSED_LINGER_MS)), COLO_CMP_NONE);
	assert_int_equal(stats(c).flows, 1);
	assert_int_equal(colo_cmp_tick(c, MS(3) + MS(COLO_CMP_CLOSED_LINGER_MS)), COLO_CMP_NONE);
	assert_int_equal(stats(c).flows, 0);
	assert_int_equal(stats(c).expired, 1);
	/* FIN against data at the same position: a mismatch */
	handshake(c, &s, &d, 40, 40);
	pn = seg(p, &d, 40, 0, 0, TH_ACK | TH_FIN);
	n1 = seg(q1, &d, 40, 0, 5, TH_ACK);
	pvm(c, p, pn, MS(5));
	svm(c, q1, n1, MS(5));
	assert_int_equal(s.ndiv, 1);
	assert_int_equal(stats(c).tcp.mismatched, 1);
	colo_cmp_free(c);
	sink_free(&s);
}

/* RST compared by position: at the same position it matches and closes; elsewhere it times out */
static void test_rst(void **state)
{
	struct fdef d = flow_vm(4, 80, 40060), e = flow_vm(4, 80, 40061);
	uint8_t p[256], q[256];
	size_t pn, qn;
	struct sink s;
	struct colo_cmp *c = cmp_new(&s, 20, 0, 0);

	(void)state;
	handshake(c, &s, &d, 1, 2);
	pn = seg(p, &d, 1, 0, 0, TH_RST | TH_ACK);
	qn = seg(q, &d, 2, 0, 0, TH_RST | TH_ACK);
	pvm(c, p, pn, MS(2));
	assert_int_equal(s.n, 1);
	svm(c, q, qn, MS(2));
	assert_int_equal(s.n, 2);
	assert_released(&s, 1, p, pn);
	assert_int_equal(colo_cmp_tick(c, MS(3) + MS(COLO_CMP_CLOSED_LINGER_MS)), COLO_CMP_NONE);
	assert_int_equal(stats(c).flows, 0);
	handshake(c, &s, &e, 1, 1);
	pn = seg(p, &e, 1, 0, 0, TH_RST);
	qn = seg(q, &e, 1, 5, 0, TH_RST);
	pvm(c, p, pn, MS(2));
	svm(c, q, qn, MS(2));
	assert_int_equal(s.n, 3);
	assert_int_equal(colo_cmp_tick(c, MS(23)), COLO_CMP_TIMEOUT);
	assert_int_equal(s.ndiv, 1);
	colo_cmp_free(c);
	sink_free(&s);
}

/* a connection older than the comparator (no SYN seen) and SVM output that comes first */
static void test_midstream_svm_first(void **state)
{
	struct fdef d = flow_vm(4, 80, 40070), e = flow_vm(4, 80, 40071);
	uint8_t p[512], a[128], b[512];
	size_t pn, an, bn;
	struct sink s;
	struct colo_cmp *c = cmp_new(&s, 0, 0, 0);

	(void)state;
	pn = seg(p, &d, 0x7fff0000u, 0, 100, TH_ACK);
	pvm(c, p, pn, MS(1));
	svm(c, p, pn, MS(1));
	assert_int_equal(s.n, 1);
	/* the SVM is ahead: its SYN/ACK and data arrive before the PVM's */
	an = fb_tcp_opts(a, &e, 300, CISN + 1, SA, NULL, 0, mss_opt, 4);
	bn = seg(b, &e, 300, 0, 200, TH_ACK);
	svm(c, a, an, MS(2));
	svm(c, b, bn, MS(2));
	assert_int_equal(s.n, 1);
	an = fb_tcp_opts(a, &e, 7, CISN + 1, SA, NULL, 0, mss_opt, 4);
	bn = seg(b, &e, 7, 0, 200, TH_ACK);
	pvm(c, a, an, MS(3));
	assert_int_equal(s.n, 2);
	pvm(c, b, bn, MS(3));
	assert_int_equal(s.n, 3);
	assert_released(&s, 2, b, bn);
	assert_int_equal(stats(c).svm_frames, 0);
	assert_int_equal(stats(c).tcp.matched, 3);
	colo_cmp_free(c);
	sink_free(&s);
}

/* A random stream cut two different random ways on the two sides always matches. */
static void test_random_segmentation(void **state)
{
	struct fdef d = flow_vm(4, 80, 40080);
	uint8_t f[2048];
	unsigned seed = getenv("DOPPEL_SEED") ? (unsigned)strtoul(getenv("DOPPEL_SEED"), NULL, 0) : 12345;
	uint32_t total = sizeof(data);
	int round, np;
	struct sink s;
	struct colo_cmp *c;

	(void)state;
	printf("test_random_segmentation: DOPPEL_SEED=%u\n", seed);
	srand(seed);
	/* both sides interleaved at random, each cut its own random way, with random ISNs */
	for (round = 0; round < 20; round++) {
		uint32_t pisn = (uint32_t)rand(), sisn = (uint32_t)rand(), po = 0, so = 0;

		c = cmp_new(&s, 0, 0, 0);
		handshake(c, &s, &d, pisn, sisn);
		np = 0;
		while (po < total || so < total) {
			bool p = so >= total || (po < total && rand() % 2);
			uint32_t *o = p ? &po : &so, l = 1 + (uint32_t)rand() % 1400;
			size_t n;

			if (l > total - *o)
				l = total - *o;
			n = seg(f, &d, p ? pisn : sisn, *o, l, TH_ACK);
			*o += l;
			if (p) {
				pvm(c, f, n, MS(2));
				np++;
			} else {
				svm(c, f, n, MS(2));
			}
		}
		assert_int_equal(s.n, 1 + np);
		assert_int_equal(s.ndiv, 0);
		assert_int_equal(stats(c).held_frames, 0);
		assert_int_equal(stats(c).svm_frames, 0);
		colo_cmp_free(c);
		sink_free(&s);
	}
}

/* the PVM's and the SVM's frames from two threads at once (as the vCPU and the replication
 * receive thread do), ticks from a third: everything matches and leaves in order */
struct feeder {
	struct colo_cmp *c;
	const struct fdef *d;
	uint32_t isn;
	int side, seglen, nsent;
};

static void *feed(void *arg)
{
	struct feeder *fd = arg;
	uint8_t f[2048];
	uint32_t off;

	for (off = 0; off < sizeof(data);) {
		uint32_t l = (uint32_t)fd->seglen;
		size_t n;

		if (l > sizeof(data) - off)
			l = (uint32_t)sizeof(data) - off;
		n = seg(f, fd->d, fd->isn, off, l, TH_ACK);
		if ((fd->side ? colo_cmp_secondary : colo_cmp_primary)(fd->c, 0, f, n, MS(2)) != 0)
			return NULL;
		fd->nsent++;
		off += l;
	}
	return fd;
}

static void test_threads(void **state)
{
	struct fdef d = flow_vm(4, 80, 40090);
	struct sink s;
	struct colo_cmp *c;
	int round;

	(void)state;
	for (round = 0; round < 50; round++) {
		struct feeder p, q;
		pthread_t tp, tq;
		void *rp, *rq;

		c = cmp_new(&s, 1000, 0, 0);
		handshake(c, &s, &d, 77, 99999);
		p = (struct feeder){c, &d, 77, 0, 100 + round, 0};
		q = (struct feeder){c, &d, 99999, 1, 1400 - round, 0};
		assert_int_equal(pthread_create(&tp, NULL, feed, &p), 0);
		assert_int_equal(pthread_create(&tq, NULL, feed, &q), 0);
		for (int i = 0; i < 100; i++)
			assert_int_equal(colo_cmp_tick(c, MS(3)), COLO_CMP_NONE);
		assert_int_equal(pthread_join(tp, &rp), 0);
		assert_int_equal(pthread_join(tq, &rq), 0);
		assert_non_null(rp);
		assert_non_null(rq);
		assert_int_equal(s.n, 1 + p.nsent);
		for (int i = 1; i + 1 < s.kept; i++) /* in sequence order */
			assert_true(fb_get32(s.f[i] + 14 + 20 + 4) < fb_get32(s.f[i + 1] + 14 + 20 + 4));
		assert_int_equal(stats(c).held_frames, 0);
		assert_int_equal(stats(c).svm_frames, 0);
		assert_int_equal(s.ndiv, 0);
		colo_cmp_free(c);
		sink_free(&s);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_identical),
		cmocka_unit_test(test_resegment),
		cmocka_unit_test(test_payload_mismatch),
		cmocka_unit_test(test_retransmission),
		cmocka_unit_test(test_reordering),
		cmocka_unit_test(test_isn_offset_ip4),
		cmocka_unit_test(test_isn_offset_ip6_ext_qinq),
		cmocka_unit_test(test_isn_offset_vlan),
		cmocka_unit_test(test_syn_options),
		cmocka_unit_test(test_pure_ack),
		cmocka_unit_test(test_fin_close),
		cmocka_unit_test(test_rst),
		cmocka_unit_test(test_midstream_svm_first),
		cmocka_unit_test(test_random_segmentation),
		cmocka_unit_test(test_threads),
	};

	fill_data();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
