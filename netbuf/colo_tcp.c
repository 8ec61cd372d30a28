/* colo_tcp.c — COLO comparator TCP matching: payload by sequence range, ISN offsets, SYN/FIN/RST by position, inbound ack rewriting. */
#include <string.h>

#include "netbuf/colo_int.h"

/*
 * One flow is one direction of a connection: VM -> peer. The PVM's and the SVM's segments are
 * queued per side; f->m is the PVM sequence number up to which both streams were compared equal.
 * An SVM sequence number s is s + f->off in PVM space, f->off = PVM ISN - SVM ISN, learnt when both
 * sides sent a SYN (f->syn_gen counts each side's SYNs with a new ISN; the offset is known while
 * the counts agree). A segment occupies [seq, seq + vlen), vlen = SYN + payload + FIN; the SYN and
 * the FIN are compared by position like bytes, a RST by position at m (it has no length).
 */

enum unit_kind { U_NONE = 0, U_SYN, U_DATA, U_FIN, U_RST };

struct unit {
	struct colo_ent *e;
	enum unit_kind kind;
	uint32_t dataoff, avail;
};

static bool off_known(const struct colo_flow *f)
{
	return f->syn_gen[SIDE_P] == f->syn_gen[SIDE_S];
}

/* e's sequence numbers in PVM space */
static uint32_t base(const struct colo_flow *f, const struct colo_ent *e)
{
	return e->side == SIDE_P ? e->seq : e->seq + f->off;
}

static enum unit_kind unit_at(const struct colo_flow *f, struct colo_ent *e, uint32_t m, struct unit *u)
{
	uint32_t b = base(f, e), rel = m - b, syn = !!(e->tflags & TH_SYN);

	u->e = e;
	if (e->tflags & TH_RST)
		return u->kind = (b == m && !e->rst_matched) ? U_RST : U_NONE;
	if (!e->vlen || seq_lt(m, b) || !seq_lt(m, b + e->vlen))
		return u->kind = U_NONE;
	if (syn && rel == 0)
		return u->kind = U_SYN;
	if (rel < syn + e->paylen) {
		u->dataoff = rel - syn;
		u->avail = e->paylen - u->dataoff;
		return u->kind = U_DATA;
	}
	return u->kind = U_FIN;
}

/* the first segment of the queue that covers position m */
static bool find_unit(const struct colo_flow *f, const struct colo_q *q, uint32_t m, struct unit *u)
{
	struct colo_ent *e;

	for (e = q->head; e; e = e->fnext)
		if (unit_at(f, e, m, u) != U_NONE)
			return true;
	return false;
}

static bool bytes_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
	return !memcmp(a, b, n);
}

/* TCP options of two SYNs: equal except the timestamp option's values (kind 8, length 10). */
static bool opts_equal(const uint8_t *a, const uint8_t *b, uint32_t n)
{
	uint32_t i = 0;

	while (i < n) {
		uint32_t l;

		if (a[i] == 0 || i + 1 >= n)
			return bytes_equal(a + i, b + i, n - i);
		if (a[i] == 1) {
			if (b[i] != 1)
				return false;
			i++;
			continue;
		}
		l = a[i + 1];
		if (l < 2 || l > n - i)
			return bytes_equal(a + i, b + i, n - i);
		if (a[i] == 8 && l == 10) {
			if (!bytes_equal(a + i, b + i, 2))
				return false;
		} else if (!bytes_equal(a + i, b + i, l)) {
			return false;
		}
		i += l;
	}
	return true;
}

/* SYN (or SYN/ACK): flags (PSH aside), the ack number, the options; not the ISN, not the window */
static bool syn_equal(const struct colo_ent *p, const struct colo_ent *s)
{
	if ((p->tflags ^ s->tflags) & (uint8_t)~TH_PSH)
		return false;
	if ((p->tflags & TH_ACK) && p->ack != s->ack)
		return false;
	if (p->optlen != s->optlen)
		return false;
	return opts_equal(p->data + p->optoff, s->data + s->optoff, p->optlen);
}

/* PVM segments at the head whose range matched leave (in order; a pure ACK needs no twin), and
 * matched SVM segments at the head are forgotten. */
static void release_done(struct colo_cmp *c, struct colo_flow *f)
{
	struct colo_ent *e;

	while ((e = f->q[SIDE_P].head)) {
		if (e->tflags & TH_RST) {
			if (!e->rst_matched)
				break;
			colo_release(c, e, true);
			colo_flow_close(c, f);
		} else if (!e->vlen) {
			colo_release(c, e, false); /* pure ACK / window update: nothing earlier is held now */
		} else if (f->synced && seq_le(e->seq + e->vlen, f->m)) {
			if (e->tflags & TH_FIN)
				f->fin_out = true;
			colo_release(c, e, true);
		} else {
			break;
		}
	}
	if (f->synced && off_known(f))
		while ((e = f->q[SIDE_S].head) &&
		       ((e->tflags & TH_RST) ? e->rst_matched : seq_le(base(f, e) + e->vlen, f->m)))
			colo_drop(c, e, false);
}

/* Compare the two streams from m on as far as both go, releasing as it goes (so the segments
 * looked for are at the queue heads when both VMs send in order). Returns false on a mismatch. */
static bool match(struct colo_cmp *c, struct colo_flow *f)
{
	struct unit up, us;

	for (;;) {
		if (!find_unit(f, &f->q[SIDE_P], f->m, &up) || !find_unit(f, &f->q[SIDE_S], f->m, &us))
			return true;
		if (up.kind != us.kind)
			return false;
		switch (up.kind) {
		case U_SYN:
			if (!syn_equal(up.e, us.e))
				return false;
			f->m++;
			break;
		case U_DATA: {
			uint32_t n = up.avail < us.avail ? up.avail : us.avail;

			if (!bytes_equal(up.e->data + up.e->payoff + up.dataoff,
					 us.e->data + us.e->payoff + us.dataoff, n))
				return false;
			f->m += n;
			break;
		}
		case U_FIN:
			f->m++;
			break;
		default: /* U_RST: both reset the connection at the same position */
			up.e->rst_matched = us.e->rst_matched = true;
			return true;
		}
		release_done(c, f);
	}
}

/* Match what can be matched, release what matched; a mismatch marks the flow diverged. */
void colo_tcp_advance(struct colo_cmp *c, struct colo_flow *f)
{
	struct colo_ent *e, *n;
	bool ok = !f->synced || f->diverged || !off_known(f) || match(c, f);

	release_done(c, f);
	if (f->synced && off_known(f)) /* matched SVM segments behind unmatched ones */
		for (e = f->q[SIDE_S].head; e; e = n) {
			n = e->fnext;
			if ((e->tflags & TH_RST) ? e->rst_matched : seq_le(base(f, e) + e->vlen, f->m))
				colo_drop(c, e, false);
		}
	if (!ok)
		colo_mismatch(c, f); /* after releasing what did match */
	else if (f->fin_out && f->fin_in)
		colo_flow_close(c, f);
}

static void learn_syn(struct colo_cmp *c, struct colo_flow *f, const struct colo_ent *e)
{
	int side = e->side;

	if (f->syn_gen[side] && f->isn[side] == e->seq)
		return; /* a retransmitted SYN */
	f->isn[side] = e->seq;
	f->syn_gen[side]++;
	if (side == SIDE_P) { /* a new connection on this 5-tuple starts here */
		colo_flow_reopen(c, f);
		f->synced = true;
		f->m = e->seq;
		f->have_nxt = false;
		f->fin_out = f->fin_in = false;
	}
	if (off_known(f))
		f->off = f->isn[SIDE_P] - f->isn[SIDE_S];
}

static void pvm_segment(struct colo_cmp *c, struct colo_flow *f, struct colo_ent *e)
{
	uint32_t end = e->seq + e->vlen;

	if (!f->synced) { /* a connection older than the comparator (or its flow): start here */
		f->synced = true;
		f->m = e->seq;
	}
	if (!f->have_nxt || seq_lt(f->pvm_nxt, end)) {
		f->pvm_nxt = end;
		f->have_nxt = true;
	}
	if (!(e->tflags & TH_RST)) {
		if (!e->vlen && !f->q[SIDE_P].head) {
			colo_release_now(c, e); /* a pure ACK only acknowledges input both VMs received */
			return;
		}
		if (e->vlen && seq_le(end, f->m)) {
			colo_release_now(c, e); /* retransmission of bytes both VMs sent */
			return;
		}
	}
	colo_enqueue(c, e);
	colo_tcp_advance(c, f);
}

static void svm_segment(struct colo_cmp *c, struct colo_flow *f, struct colo_ent *e)
{
	if (f->diverged) {
		colo_drop_now(c, e, true);
		return;
	}
	if (!(e->tflags & TH_RST)) {
		if (!e->vlen || (f->synced && off_known(f) && seq_le(e->seq + f->off + e->vlen, f->m))) {
			colo_drop_now(c, e, false); /* a pure ACK, or bytes already matched */
			return;
		}
	}
	colo_enqueue(c, e);
	colo_tcp_advance(c, f);
}

void colo_tcp_frame(struct colo_cmp *c, struct colo_flow *f, struct colo_ent *e)
{
	if (e->tflags & TH_RST)
		e->vlen = 0;
	else
		e->vlen = !!(e->tflags & TH_SYN) + e->paylen + !!(e->tflags & TH_FIN);
	if (e->tflags & TH_SYN && !(e->tflags & TH_RST))
		learn_syn(c, f, e);
	if (e->side == SIDE_P)
		pvm_segment(c, f, e);
	else
		svm_segment(c, f, e);
}

/* After a checkpoint the SVM is a copy of the PVM: same sequence space, next byte the PVM's. */
void colo_tcp_checkpoint(struct colo_flow *f)
{
	f->off = 0;
	f->isn[SIDE_S] = f->isn[SIDE_P];
	f->syn_gen[SIDE_S] = f->syn_gen[SIDE_P];
	if (f->have_nxt) {
		f->synced = true;
		f->m = f->pvm_nxt;
	}
}

static void rewrite32(uint8_t *p, uint32_t off, uint16_t *csum)
{
	uint32_t old = get32(p), nw = old - off;

	put32(p, nw);
	*csum = colo_csum_fold_add(*csum, old, nw);
}

/* Peer -> VM segment for the SVM: ack and SACK edges from PVM space to SVM space. */
void colo_tcp_inbound(struct colo_flow *f, uint8_t *frame, const struct colo_pkt *p)
{
	uint8_t *th = frame + p->l4off, *o = frame + p->optoff;
	uint16_t csum;
	uint32_t i = 0;

	if (p->tflags & TH_FIN)
		f->fin_in = true;
	if (!off_known(f) || !f->off || !(p->tflags & TH_ACK))
		return;
	csum = get16(th + 16);
	rewrite32(th + 8, f->off, &csum);
	while (i < p->optlen) {
		uint32_t l, k;

		if (o[i] == 0)
			break;
		if (o[i] == 1) {
			i++;
			continue;
		}
		if (i + 1 >= p->optlen || (l = o[i + 1]) < 2 || l > p->optlen - i)
			break;
		if (o[i] == 5 && l >= 10 && (l - 2) % 8 == 0)
			for (k = i + 2; k < i + l; k += 4)
				rewrite32(o + k, f->off, &csum);
		i += l;
	}
	put16(th + 16, csum);
}
