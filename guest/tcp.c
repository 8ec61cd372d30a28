/* tcp.c — the test guest's TCP: passive open, sliding window, RTO retransmission, FIN/RST, TIME_WAIT. */
#include "tcp.h"

/*
 * Everything the peer sends is validated before use (checksum, header length, flags, sequence
 * window); what fails is dropped (counted) or answered with an ACK/RST as RFC 793/5961 say, never
 * trusted. No window scaling, no SACK, no congestion control beyond the peer's window; out-of-order
 * segments are dropped (the peer retransmits). One table of TCP_CONNS connections; when it is full
 * a SYN takes the slot of a TIME_WAIT or the oldest SYN_RCVD connection, else it is dropped.
 */

#define F_FIN 0x01
#define F_SYN 0x02
#define F_RST 0x04
#define F_PSH 0x08
#define F_ACK 0x10
#define TCP_HLEN 20
#define TCP_NIL 0xffff
#define TCP_BUCKETS 512
#define MS 1000000ull
#define RTO_INIT (1000 * MS)
#define RTO_MIN (200 * MS)
#define RTO_MAX (10000 * MS)
#define TIME_WAIT_NS (1000 * MS) /* bounded TIME_WAIT */
#define FIN_WAIT2_NS (30000 * MS)
#define MAX_RETRIES 10
#define SYN_RETRIES 4

#define SEQ_LT(a, b) ((int32_t)((a) - (b)) < 0)
#define SEQ_LE(a, b) ((int32_t)((a) - (b)) <= 0)
#define SEQ_GT(a, b) ((int32_t)((a) - (b)) > 0)

static struct {
	struct tcp_conn conns[TCP_CONNS];
	struct tcp_conn rst; /* scratch for resets to segments without a connection */
	uint16_t buckets[TCP_BUCKETS];
	uint64_t pend[TCP_CONNS / 64]; /* connections with something to send */
	struct {
		uint16_t port;
		tcp_app_fn fn;
	} lst[4];
	unsigned nlst, active;
	bool isn_fixed;
	uint64_t isn_ctr;
	struct tcp_stats st;
} tcp;

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

static uint32_t tuple_hash(const struct net_peer *p, uint16_t lport, uint16_t rport)
{
	uint64_t h = ((uint64_t)lport << 16 | rport) ^ (p->v6 ? 0x6000000000ull : 0);

	if (p->v6)
		for (int i = 0; i < 16; i += 4)
			h = mix64(h ^ get32(p->ip6 + i));
	else
		h = mix64(h ^ ((uint64_t)p->ip4 << 32));
	return (uint32_t)h;
}

static bool peer_eq(const struct net_peer *a, const struct net_peer *b)
{
	if (a->v6 != b->v6)
		return false;
	return a->v6 ? !memcmp(a->ip6, b->ip6, 16) : a->ip4 == b->ip4;
}

void tcp_init(void)
{
	for (unsigned i = 0; i < TCP_BUCKETS; i++)
		tcp.buckets[i] = TCP_NIL;
	for (unsigned i = 0; i < TCP_CONNS; i++)
		tcp.conns[i].state = TCP_FREE;
}

void tcp_listen(uint16_t port, tcp_app_fn fn)
{
	const char *v = cmdline_get("isn");

	tcp.isn_fixed = v && !strcmp(v, "fixed");
	if (tcp.nlst < 4) {
		tcp.lst[tcp.nlst].port = port;
		tcp.lst[tcp.nlst].fn = fn;
		tcp.nlst++;
	}
}

void tcp_get_stats(struct tcp_stats *st)
{
	*st = tcp.st;
	st->active = tcp.active;
}

static inline void mark(struct tcp_conn *c)
{
	unsigned i = (unsigned)(c - tcp.conns);

	tcp.pend[i / 64] |= 1ull << (i % 64);
}

static struct tcp_conn *conn_find(const struct net_peer *p, uint16_t lport, uint16_t rport)
{
	uint16_t i = tcp.buckets[tuple_hash(p, lport, rport) % TCP_BUCKETS];

	for (unsigned hops = 0; i != TCP_NIL && hops < TCP_CONNS; hops++) {
		struct tcp_conn *c = &tcp.conns[i];

		if (c->lport == lport && c->rport == rport && peer_eq(&c->peer, p))
			return c;
		i = c->next;
	}
	return NULL;
}

static void conn_free(struct tcp_conn *c)
{
	uint16_t idx = (uint16_t)(c - tcp.conns);
	uint16_t *pp = &tcp.buckets[tuple_hash(&c->peer, c->lport, c->rport) % TCP_BUCKETS];

	for (unsigned hops = 0; *pp != TCP_NIL && hops < TCP_CONNS; hops++) {
		if (*pp == idx) {
			*pp = c->next;
			break;
		}
		pp = &tcp.conns[*pp].next;
	}
	c->state = TCP_FREE;
	tcp.active--;
}

/* A free slot, else a TIME_WAIT one, else the oldest half-open one; NULL if all are in use. */
static struct tcp_conn *conn_alloc(void)
{
	struct tcp_conn *tw = NULL, *syn = NULL;

	for (unsigned i = 0; i < TCP_CONNS; i++) {
		struct tcp_conn *c = &tcp.conns[i];

		if (c->state == TCP_FREE)
			return c;
		if (c->state == TCP_TIME_WAIT && !tw)
			tw = c;
		if (c->state == TCP_SYN_RCVD && (!syn || c->timer_at < syn->timer_at))
			syn = c; /* the earliest SYN-ACK retransmission deadline: the oldest */
	}
	if (!tw && !syn)
		return NULL;
	if (!tw)
		tcp.st.syn_drop++;
	conn_free(tw ? tw : syn);
	return tw ? tw : syn;
}

static uint16_t our_mss(const struct net_peer *p)
{
	return p->v6 ? 1440 : 1460;
}

static uint16_t rcv_wnd(const struct tcp_conn *c)
{
	return (uint16_t)(TCP_RXBUF - c->rx_len);
}

/* Build and queue one segment; data is n bytes at offset off from tx_head. False: no TX buffer. */
static bool seg_out(struct tcp_conn *c, uint8_t flags, uint32_t seq, uint32_t off, uint32_t n, bool mss)
{
	size_t hl = TCP_HLEN + (mss ? 4 : 0), plen = hl + n;
	uint8_t *u = net_tx_begin(&c->peer, PROTO_TCP, plen);

	if (!u)
		return false;
	put16(u, c->lport);
	put16(u + 2, c->rport);
	put32(u + 4, seq);
	put32(u + 8, (flags & F_ACK) ? c->rcv_nxt : 0);
	u[12] = (uint8_t)((hl / 4) << 4);
	u[13] = flags;
	put16(u + 14, rcv_wnd(c));
	put32(u + 16, 0);
	if (mss) {
		u[20] = 2;
		u[21] = 4;
		put16(u + 22, our_mss(&c->peer));
	}
	if (n) {
		uint32_t at = (c->tx_head + off) % TCP_TXBUF, first = TCP_TXBUF - at;

		if (first > n)
			first = n;
		memcpy(u + hl, c->tx + at, first);
		memcpy(u + hl + first, c->tx, n - first);
	}
	put16(u + 16, csum_fold(csum_add(net_pseudo(&c->peer, PROTO_TCP, plen), u, plen)));
	net_tx_end();
	if (flags & F_ACK)
		c->ack_now = false;
	return true;
}

/* A reset for a segment that has no connection (never in answer to a RST). */
static void rst_reply(const struct net_peer *p, const uint8_t *seg, uint32_t seglen)
{
	struct tcp_conn *t = &tcp.rst;

	t->peer = *p;
	t->lport = get16(seg + 2);
	t->rport = get16(seg);
	t->rx_len = TCP_RXBUF;
	if (seg[13] & F_ACK) {
		seg_out(t, F_RST, get32(seg + 8), 0, 0, false);
	} else {
		t->rcv_nxt = get32(seg + 4) + seglen;
		seg_out(t, F_RST | F_ACK, 0, 0, 0, false);
	}
	tcp.st.rst_tx++;
}

static void timer_arm(struct tcp_conn *c, uint64_t now)
{
	if (!c->timer_at)
		c->timer_at = now + c->rto_ns;
}

/* Send what the window allows, a FIN when due, else a pure ACK if one is owed. False: TX full. */
static bool tcp_output(struct tcp_conn *c, uint64_t now)
{
	bool sent = false;

	if (c->state == TCP_SYN_RCVD) {
		if (!seg_out(c, F_SYN | F_ACK, c->iss, 0, 0, true))
			return false;
		timer_arm(c, now);
		return true;
	}
	if (c->state == TCP_TIME_WAIT || c->state == TCP_FIN_WAIT2) {
		if (c->ack_now && !seg_out(c, F_ACK, c->snd_nxt, 0, 0, false))
			return false;
		return true;
	}
	while (!c->fin_sent) {
		uint32_t off = c->snd_nxt - c->snd_una, wnd = c->snd_wnd, n;

		if (c->probe && wnd == 0)
			wnd = 1;
		n = c->tx_len - off;
		if (n > c->mss)
			n = c->mss;
		if (off + n > wnd)
			n = wnd > off ? wnd - off : 0;
		if (n == 0)
			break;
		if (!seg_out(c, F_ACK | F_PSH, c->snd_nxt, off, n, false))
			return false;
		if (!c->rtt_at && c->snd_nxt == c->snd_max) {
			c->rtt_at = now;
			c->rtt_seq = c->snd_nxt + n;
		}
		c->snd_nxt += n;
		if (SEQ_GT(c->snd_nxt, c->snd_max))
			c->snd_max = c->snd_nxt;
		timer_arm(c, now);
		sent = true;
	}
	c->probe = false;
	if (c->tx_len && c->snd_wnd == 0 && c->snd_una == c->snd_max)
		timer_arm(c, now); /* persist: probe the zero window when it fires */
	if (c->close_req && !c->fin_sent && c->snd_nxt - c->snd_una == c->tx_len &&
	    c->state != TCP_TIME_WAIT) {
		if (!seg_out(c, F_FIN | F_ACK, c->snd_nxt, 0, 0, false))
			return false;
		c->fin_sent = true;
		c->snd_nxt++;
		if (SEQ_GT(c->snd_nxt, c->snd_max))
			c->snd_max = c->snd_nxt;
		if (c->state == TCP_ESTABLISHED)
			c->state = TCP_FIN_WAIT1;
		else if (c->state == TCP_CLOSE_WAIT)
			c->state = TCP_LAST_ACK;
		timer_arm(c, now);
		sent = true;
	}
	if (!sent && c->ack_now && !seg_out(c, F_ACK, c->snd_nxt, 0, 0, false))
		return false;
	return true;
}

void tcp_flush(void)
{
	uint64_t now = 0;

	for (unsigned w = 0; w < TCP_CONNS / 64; w++) {
		while (tcp.pend[w]) {
			unsigned b = (unsigned)__builtin_ctzll(tcp.pend[w]);
			struct tcp_conn *c = &tcp.conns[w * 64 + b];

			tcp.pend[w] &= ~(1ull << b);
			if (c->state == TCP_FREE)
				continue;
			if (!now)
				now = now_ns() | 1;
			if (!tcp_output(c, now)) {
				tcp.pend[w] |= 1ull << b; /* TX ring full: the rest waits for the next poll */
				return;
			}
		}
	}
}

/* ---- the service side ------------------------------------------------------------------------- */

size_t tcp_space(const struct tcp_conn *c)
{
	if (c->close_req || (c->state != TCP_ESTABLISHED && c->state != TCP_CLOSE_WAIT))
		return 0;
	return TCP_TXBUF - c->tx_len;
}

void tcp_write(struct tcp_conn *c, const void *p, size_t n)
{
	const uint8_t *s = p;
	uint32_t at, first;

	if (n > tcp_space(c))
		n = tcp_space(c);
	at = (c->tx_head + c->tx_len) % TCP_TXBUF;
	first = TCP_TXBUF - at;
	if (first > n)
		first = (uint32_t)n;
	memcpy(c->tx + at, s, first);
	memcpy(c->tx, s + first, n - first);
	c->tx_len += (uint32_t)n;
	mark(c);
}

void tcp_consume(struct tcp_conn *c, size_t n)
{
	uint16_t before = rcv_wnd(c);

	if (n > c->rx_len)
		n = c->rx_len;
	memmove(c->rx, c->rx + n, c->rx_len - n);
	c->rx_len -= (uint32_t)n;
	if (before < c->mss && rcv_wnd(c) >= c->mss) {
		c->ack_now = true; /* window update */
		mark(c);
	}
}

void tcp_close(struct tcp_conn *c)
{
	c->close_req = true;
	mark(c);
}

static void run_app(struct tcp_conn *c)
{
	if (c->state == TCP_ESTABLISHED || c->state == TCP_CLOSE_WAIT) {
		if (c->rx_len || c->app_left)
			tcp.lst[c->app].fn(c);
	}
	/* the peer closed: close too once every complete request is answered */
	if (c->state == TCP_CLOSE_WAIT && !c->close_req && !c->app_left && (!c->rx_len || !c->tx_len))
		tcp_close(c);
}

/* ---- input ------------------------------------------------------------------------------------ */

static uint16_t parse_mss(const uint8_t *o, size_t olen, const struct net_peer *p)
{
	uint16_t mss = 536;

	for (size_t i = 0; i < olen;) {
		if (o[i] == 0)
			break;
		if (o[i] == 1) {
			i++;
			continue;
		}
		if (i + 1 >= olen || o[i + 1] < 2 || i + o[i + 1] > olen)
			break;
		if (o[i] == 2 && o[i + 1] == 4)
			mss = get16(o + i + 2);
		i += o[i + 1];
	}
	if (mss < 64)
		mss = 64;
	if (mss > our_mss(p))
		mss = our_mss(p);
	return mss;
}

static void passive_open(const struct net_peer *p, const uint8_t *seg, size_t doff, uint64_t now)
{
	uint16_t lport = get16(seg + 2);
	struct tcp_conn *c;
	unsigned l;
	uint64_t h;

	for (l = 0; l < tcp.nlst && tcp.lst[l].port != lport; l++)
		;
	if (l == tcp.nlst) {
		rst_reply(p, seg, 1);
		return;
	}
	if (!(c = conn_alloc())) {
		tcp.st.syn_drop++;
		return;
	}
	memset(c, 0, offsetof(struct tcp_conn, rx));
	c->peer = *p;
	c->app = (uint8_t)l;
	c->lport = lport;
	c->rport = get16(seg);
	c->rcv_nxt = get32(seg + 4) + 1;
	h = tuple_hash(p, c->lport, c->rport);
	c->iss = tcp.isn_fixed ? (uint32_t)h : (uint32_t)mix64(rdtsc() ^ h ^ ++tcp.isn_ctr << 40);
	c->snd_una = c->iss;
	c->snd_nxt = c->snd_max = c->iss + 1;
	c->snd_wnd = get16(seg + 14);
	c->mss = parse_mss(seg + TCP_HLEN, doff - TCP_HLEN, p);
	c->rto_ns = RTO_INIT;
	c->state = TCP_SYN_RCVD;
	c->next = tcp.buckets[h % TCP_BUCKETS];
	tcp.buckets[h % TCP_BUCKETS] = (uint16_t)(c - tcp.conns);
	tcp.active++;
	tcp.st.conns++;
	(void)now;
	mark(c);
}

static void rtt_sample(struct tcp_conn *c, uint64_t now)
{
	uint64_t r = now - c->rtt_at, d;

	c->rtt_at = 0;
	if (!c->srtt) {
		c->srtt = r;
		c->rttvar = r / 2;
	} else {
		d = c->srtt > r ? c->srtt - r : r - c->srtt;
		c->rttvar = (3 * c->rttvar + d) / 4;
		c->srtt = (7 * c->srtt + r) / 8;
	}
	c->rto_ns = c->srtt + 4 * c->rttvar;
	if (c->rto_ns < RTO_MIN)
		c->rto_ns = RTO_MIN;
	if (c->rto_ns > RTO_MAX)
		c->rto_ns = RTO_MAX;
}

/* An acceptable ACK: advance snd_una, free send space, follow our FIN. False: the conn is gone. */
static bool ack_input(struct tcp_conn *c, uint32_t ack, uint16_t win, bool pure, uint64_t now)
{
	if (SEQ_GT(ack, c->snd_una)) {
		uint32_t acked = ack - c->snd_una, data = acked > c->tx_len ? c->tx_len : acked;
		bool fin_acked =
			(c->state == TCP_FIN_WAIT1 || c->state == TCP_CLOSING || c->state == TCP_LAST_ACK) &&
			acked == c->tx_len + 1;

		c->tx_head = (c->tx_head + data) % TCP_TXBUF;
		c->tx_len -= data;
		c->snd_una = ack;
		if (SEQ_LT(c->snd_nxt, ack))
			c->snd_nxt = ack;
		if (c->rtt_at && SEQ_LE(c->rtt_seq, ack))
			rtt_sample(c, now);
		c->retries = c->dupacks = 0;
		c->timer_at = c->snd_una != c->snd_max ? now + c->rto_ns : 0;
		c->snd_wnd = win;
		mark(c);
		if (fin_acked) {
			c->fin_sent = true;
			if (c->state == TCP_LAST_ACK) {
				conn_free(c);
				return false;
			}
			if (c->state == TCP_FIN_WAIT1) {
				c->state = TCP_FIN_WAIT2;
				c->timer_at = now + FIN_WAIT2_NS;
			} else if (c->state == TCP_CLOSING) {
				c->state = TCP_TIME_WAIT;
				c->timer_at = now + TIME_WAIT_NS;
			}
		}
		run_app(c);
		return true;
	}
	if (ack == c->snd_una && pure && win == c->snd_wnd && c->snd_una != c->snd_max && ++c->dupacks == 3) {
		c->snd_nxt = c->snd_una; /* fast retransmit (go back N) */
		c->fin_sent = false;
		c->rtt_at = 0;
		tcp.st.retrans++;
	}
	if (win != c->snd_wnd) {
		c->snd_wnd = win;
		mark(c);
	}
	return true;
}

static void data_input(struct tcp_conn *c, uint32_t seq, const uint8_t *d, uint32_t dlen, bool fin)
{
	uint32_t skip, n, room = TCP_RXBUF - c->rx_len;
	bool accepting =
		c->state == TCP_ESTABLISHED || c->state == TCP_FIN_WAIT1 || c->state == TCP_FIN_WAIT2;

	if (dlen || fin) {
		c->ack_now = true;
		mark(c);
	}
	if (SEQ_GT(seq, c->rcv_nxt)) {
		tcp.st.rx_ooo++; /* a hole before it: dropped, the duplicate ACK asks for the gap */
		return;
	}
	skip = c->rcv_nxt - seq;
	if (dlen && accepting && skip < dlen) {
		n = dlen - skip;
		if (n > room) {
			n = room;
			fin = false; /* the FIN lies beyond what we took */
		}
		memcpy(c->rx + c->rx_len, d + skip, n);
		c->rx_len += n;
		c->rcv_nxt += n;
	} else if (dlen && skip < dlen) {
		return; /* data after the peer's FIN or after ours was acked and closed: ignored */
	}
	if (fin && seq + dlen == c->rcv_nxt) {
		c->rcv_nxt++;
		if (c->state == TCP_ESTABLISHED) {
			c->state = TCP_CLOSE_WAIT;
		} else if (c->state == TCP_FIN_WAIT1) {
			c->state = TCP_CLOSING;
		} else if (c->state == TCP_FIN_WAIT2) {
			c->state = TCP_TIME_WAIT;
			c->timer_at = now_ns() + TIME_WAIT_NS;
		}
	}
}

static bool seq_acceptable(const struct tcp_conn *c, uint32_t seq, uint32_t seglen)
{
	uint32_t wnd = TCP_RXBUF - c->rx_len;

	if (seglen == 0)
		return seq == c->rcv_nxt || (wnd && SEQ_LE(c->rcv_nxt, seq) && SEQ_LT(seq, c->rcv_nxt + wnd));
	if (wnd == 0)
		return false;
	return (SEQ_LE(c->rcv_nxt, seq) && SEQ_LT(seq, c->rcv_nxt + wnd)) ||
	       (SEQ_LE(c->rcv_nxt, seq + seglen - 1) && SEQ_LT(seq + seglen - 1, c->rcv_nxt + wnd));
}

/* SYN_RCVD: the handshake's ACK. False: the segment is consumed. */
static bool syn_rcvd_input(struct tcp_conn *c, uint8_t fl, uint32_t seq, uint32_t ack, uint16_t win,
			   uint64_t now)
{
	if (fl & F_RST) {
		if (seq == c->rcv_nxt)
			conn_free(c);
		return false;
	}
	if (fl & F_SYN) {
		if (seq == c->rcv_nxt - 1)
			mark(c); /* the peer retransmitted its SYN: send the SYN-ACK again */
		return false;
	}
	if (!(fl & F_ACK) || ack != c->iss + 1) /* a wrong ACK was answered with a RST by the caller */
		return false;
	c->state = TCP_ESTABLISHED;
	c->snd_una = c->snd_nxt = c->snd_max = ack;
	c->snd_wnd = win;
	c->retries = 0;
	c->timer_at = 0;
	c->rto_ns = RTO_INIT;
	c->srtt = 0;
	(void)now;
	return true;
}

void tcp_input(const struct net_peer *p, const uint8_t *seg, size_t len)
{
	struct tcp_conn *c;
	size_t doff;
	uint32_t seq, ack, dlen, seglen;
	uint16_t win;
	uint8_t fl;
	uint64_t now;

	if (len < TCP_HLEN || (doff = (size_t)(seg[12] >> 4) * 4) < TCP_HLEN || doff > len ||
	    csum_fold(csum_add(net_pseudo(p, PROTO_TCP, len), seg, len)) != 0 || !get16(seg) ||
	    !get16(seg + 2)) {
		tcp.st.rx_bad++;
		return;
	}
	fl = seg[13];
	if ((fl & F_SYN) && (fl & (F_FIN | F_RST))) {
		tcp.st.rx_bad++;
		return;
	}
	seq = get32(seg + 4);
	ack = get32(seg + 8);
	win = get16(seg + 14);
	dlen = (uint32_t)(len - doff);
	seglen = dlen + !!(fl & F_FIN);
	now = now_ns() | 1;
	c = conn_find(p, get16(seg + 2), get16(seg));
	if (c && c->state == TCP_TIME_WAIT && (fl & F_SYN) && !(fl & F_ACK) && SEQ_GT(seq, c->rcv_nxt)) {
		conn_free(c); /* a new incarnation of the same 4-tuple */
		c = NULL;
	}
	if (!c) {
		if (fl & F_RST)
			return;
		if ((fl & (F_SYN | F_ACK)) == F_SYN)
			passive_open(p, seg, doff, now);
		else
			rst_reply(p, seg, seglen);
		return;
	}
	if (c->state == TCP_SYN_RCVD) {
		if ((fl & (F_RST | F_SYN)) == 0 && (fl & F_ACK) && ack != c->iss + 1) {
			rst_reply(p, seg, seglen);
			return;
		}
		if (!syn_rcvd_input(c, fl, seq, ack, win, now))
			return;
	}
	if (!seq_acceptable(c, seq, seglen)) {
		if (!(fl & F_RST)) {
			c->ack_now = true;
			mark(c);
		}
		return;
	}
	if (fl & F_RST) {
		tcp.st.rst_rx++;
		if (seq == c->rcv_nxt) {
			conn_free(c);
		} else { /* in the window but not exact: challenge ACK (RFC 5961) */
			c->ack_now = true;
			mark(c);
		}
		return;
	}
	if (fl & F_SYN) {
		c->ack_now = true;
		mark(c);
		return;
	}
	if (!(fl & F_ACK))
		return;
	if (SEQ_GT(ack, c->snd_max)) {
		c->ack_now = true;
		mark(c);
		return;
	}
	if (SEQ_LT(ack, c->snd_una - 0x40000000u)) /* far too old: ignore it */
		return;
	if (!ack_input(c, ack, win, dlen == 0 && !(fl & F_FIN), now))
		return;
	data_input(c, seq, seg + doff, dlen, fl & F_FIN);
	if (dlen)
		run_app(c);
	else if (c->state == TCP_CLOSE_WAIT)
		run_app(c);
}

/* ---- timers ----------------------------------------------------------------------------------- */

static void timer_fire(struct tcp_conn *c, uint64_t now)
{
	c->timer_at = 0;
	switch (c->state) {
	case TCP_TIME_WAIT:
	case TCP_FIN_WAIT2:
		conn_free(c);
		return;
	case TCP_SYN_RCVD:
		if (++c->retries > SYN_RETRIES) {
			conn_free(c);
			return;
		}
		break;
	default:
		if (c->snd_una == c->snd_max) { /* nothing in flight: a zero-window probe */
			c->probe = true;
			break;
		}
		if (++c->retries > MAX_RETRIES) {
			seg_out(c, F_RST, c->snd_nxt, 0, 0, false);
			tcp.st.rst_tx++;
			conn_free(c);
			return;
		}
		c->snd_nxt = c->snd_una; /* go back N */
		c->fin_sent = false;
		c->rtt_at = 0;
		tcp.st.retrans++;
		break;
	}
	c->rto_ns = c->rto_ns * 2 > RTO_MAX ? RTO_MAX : c->rto_ns * 2;
	mark(c);
	(void)now;
}

uint64_t tcp_next_timer(void)
{
	uint64_t at = UINT64_MAX;

	for (unsigned i = 0; tcp.active && i < TCP_CONNS; i++) {
		const struct tcp_conn *c = &tcp.conns[i];

		if (c->state != TCP_FREE && c->timer_at && c->timer_at < at)
			at = c->timer_at;
	}
	return at;
}

void tcp_timers(uint64_t now)
{
	if (!tcp.active)
		return;
	for (unsigned i = 0; i < TCP_CONNS; i++) {
		struct tcp_conn *c = &tcp.conns[i];

		if (c->state != TCP_FREE && c->timer_at && now >= c->timer_at)
			timer_fire(c, now);
	}
}
