/* colo_compare.c — COLO comparator: flow table, frame queues, ordered release, divergence, timers and stats. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <xxhash.h>

#include "common/clock.h"

#include "netbuf/colo_int.h"

#define TAB_MIN 1024u
#define EXPIRE_PER_TICK 1024u
/* frame buffer classes: small (ACKs, DNS), one MTU, one maximal (TSO-sized) frame */
static const uint32_t slab_cap[COLO_SLAB_CLASSES] = {256, 2048, COLO_CMP_MAX_FRAME};
static const uint32_t slab_keep[COLO_SLAB_CLASSES] = {1024, 1024, 16};

/* ---- frame entries: a free list per size class, so the steady state allocates nothing ---- */

static struct colo_ent *ent_get(struct colo_cmp *c, size_t len)
{
	struct colo_ent *e;
	int cls = 0;

	while (len > slab_cap[cls])
		cls++; /* len <= COLO_CMP_MAX_FRAME: the last class fits */
	if (c->slab[cls]) {
		e = c->slab[cls];
		c->slab[cls] = e->fnext;
		c->slab_n[cls]--;
		return e;
	}
	e = malloc(sizeof(*e) + slab_cap[cls]);
	if (!e)
		return NULL;
	e->cap = slab_cap[cls];
	e->cls = (uint8_t)cls;
	return e;
}

static void ent_put(struct colo_cmp *c, struct colo_ent *e)
{
	if (c->slab_n[e->cls] < slab_keep[e->cls]) {
		e->fnext = c->slab[e->cls];
		c->slab[e->cls] = e;
		c->slab_n[e->cls]++;
		return;
	}
	free(e);
}

/* ---- queues: each entry is on its flow's queue and on the global age list ---- */

void colo_enqueue(struct colo_cmp *c, struct colo_ent *e)
{
	struct colo_q *q = &e->flow->q[e->side];

	e->fnext = NULL;
	e->fprev = q->tail;
	if (q->tail)
		q->tail->fnext = e;
	else
		q->head = e;
	q->tail = e;
	q->n++;
	e->anext = NULL;
	e->aprev = c->atail;
	if (c->atail)
		c->atail->anext = e;
	else
		c->ahead = e;
	c->atail = e;
	c->held_frames[e->side]++;
	c->held_bytes[e->side] += e->len;
}

static void dequeue(struct colo_cmp *c, struct colo_ent *e)
{
	struct colo_q *q = &e->flow->q[e->side];

	if (e->fprev)
		e->fprev->fnext = e->fnext;
	else
		q->head = e->fnext;
	if (e->fnext)
		e->fnext->fprev = e->fprev;
	else
		q->tail = e->fprev;
	q->n--;
	if (e->aprev)
		e->aprev->anext = e->anext;
	else
		c->ahead = e->anext;
	if (e->anext)
		e->anext->aprev = e->aprev;
	else
		c->atail = e->aprev;
	c->held_frames[e->side]--;
	c->held_bytes[e->side] -= e->len;
}

static void count(struct colo_cmp *c, uint8_t kind, bool match)
{
	struct colo_cmp_proto_stats *ps = &c->ps[kind];

	c->st.compared++;
	ps->compared++;
	if (match) {
		c->st.matched++;
		ps->matched++;
	} else {
		c->st.mismatched++;
		ps->mismatched++;
	}
}

/* Output a queued PVM frame (compared: it was released because the SVM matched it). */
void colo_release(struct colo_cmp *c, struct colo_ent *e, bool compared)
{
	dequeue(c, e);
	if (compared) {
		count(c, e->kind, true);
		c->hold[c->nhold++ % COLO_CMP_HOLD_RING] = c->now > e->t ? c->now - e->t : 0;
	}
	c->st.released++;
	c->cfg.release(c->cfg.opaque, e->flow->key.netidx, e->data, e->len);
	ent_put(c, e);
}

/* Output a PVM frame that was never queued (a pure ACK with nothing held before it, a
 * retransmission of released bytes). */
void colo_release_now(struct colo_cmp *c, struct colo_ent *e)
{
	c->st.released++;
	c->cfg.release(c->cfg.opaque, e->flow->key.netidx, e->data, e->len);
	ent_put(c, e);
}

void colo_drop_now(struct colo_cmp *c, struct colo_ent *e, bool cnt)
{
	if (cnt)
		c->st.dropped_svm++;
	ent_put(c, e);
}

/* Forget a queued SVM frame: matched (count false) or dropped unmatched (count true). */
void colo_drop(struct colo_cmp *c, struct colo_ent *e, bool cnt)
{
	dequeue(c, e);
	if (cnt)
		c->st.dropped_svm++;
	ent_put(c, e);
}

void colo_diverge(struct colo_cmp *c, enum colo_cmp_reason why)
{
	if (c->reason != COLO_CMP_NONE)
		return;
	c->reason = why;
	c->st.divergences++;
	if (c->cfg.diverged)
		c->cfg.diverged(c->cfg.opaque, why);
}

/* A mismatch on flow f: count it, stop comparing the flow until the next checkpoint (its PVM
 * frames stay held, its SVM frames are dropped) and ask for a checkpoint. */
void colo_mismatch(struct colo_cmp *c, struct colo_flow *f)
{
	count(c, f->q[SIDE_P].head ? f->q[SIDE_P].head->kind : f->kind, false);
	f->diverged = true;
	while (f->q[SIDE_S].head)
		colo_drop(c, f->q[SIDE_S].head, true);
	colo_diverge(c, COLO_CMP_MISMATCH);
}

/* ---- flow table: chained hash, doubled when the load passes 1; flows on an LRU list ---- */

static void list_del(struct colo_list *l, struct colo_flow *f)
{
	if (f->lprev)
		f->lprev->lnext = f->lnext;
	else
		l->head = f->lnext;
	if (f->lnext)
		f->lnext->lprev = f->lprev;
	else
		l->tail = f->lprev;
}

static void list_add(struct colo_list *l, struct colo_flow *f)
{
	f->lnext = NULL;
	f->lprev = l->tail;
	if (l->tail)
		l->tail->lnext = f;
	else
		l->head = f;
	l->tail = f;
}

static void flow_touch(struct colo_cmp *c, struct colo_flow *f, uint64_t now)
{
	struct colo_list *l = f->closed ? &c->closed : &c->lru;

	if (now > f->last)
		f->last = now;
	if (l->tail != f) {
		list_del(l, f);
		list_add(l, f);
	}
}

void colo_flow_reopen(struct colo_cmp *c, struct colo_flow *f)
{
	if (!f->closed)
		return;
	list_del(&c->closed, f);
	f->closed = false;
	list_add(&c->lru, f);
}

void colo_flow_close(struct colo_cmp *c, struct colo_flow *f)
{
	if (f->closed)
		return;
	list_del(&c->lru, f);
	f->closed = true;
	list_add(&c->closed, f);
}

/* Bring a flow up to date with the last checkpoint (lazily: a checkpoint touches no flow). */
static void flow_sync(struct colo_cmp *c, struct colo_flow *f)
{
	if (f->gen == c->gen)
		return;
	f->gen = c->gen;
	f->diverged = false;
	if (f->kind == CK_TCP)
		colo_tcp_checkpoint(f);
}

static void grow(struct colo_cmp *c)
{
	size_t nb = c->nbuckets * 2, i;
	struct colo_flow **t = calloc(nb, sizeof(*t)), *f, *n;

	if (!t)
		return; /* keep the old table: longer chains, still correct */
	for (i = 0; i < c->nbuckets; i++)
		for (f = c->tab[i]; f; f = n) {
			n = f->hnext;
			f->hnext = t[f->hash & (nb - 1)];
			t[f->hash & (nb - 1)] = f;
		}
	free(c->tab);
	c->tab = t;
	c->nbuckets = nb;
}

static struct colo_flow *flow_find(struct colo_cmp *c, const struct colo_key *k, uint64_t h)
{
	struct colo_flow *f;

	for (f = c->tab[h & (c->nbuckets - 1)]; f; f = f->hnext)
		if (f->hash == h && !memcmp(&f->key, k, sizeof(*k)))
			return f;
	return NULL;
}

static void evict(struct colo_cmp *c);

static struct colo_flow *flow_get(struct colo_cmp *c, const struct colo_pkt *p, uint64_t now)
{
	uint64_t h = XXH3_64bits_withSeed(&p->key, sizeof(p->key), c->seed);
	struct colo_flow *f = flow_find(c, &p->key, h), **b;

	if (f) {
		flow_sync(c, f);
		flow_touch(c, f, now);
		return f;
	}
	if (c->nflows >= c->cfg.max_flows)
		evict(c);
	f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	f->key = p->key;
	f->hash = h;
	f->kind = p->kind;
	f->gen = c->gen;
	f->last = now;
	b = &c->tab[h & (c->nbuckets - 1)];
	f->hnext = *b;
	*b = f;
	list_add(&c->lru, f);
	c->nflows++;
	if (c->nflows > c->nbuckets)
		grow(c);
	return f;
}

static void flow_free(struct colo_cmp *c, struct colo_flow *f)
{
	struct colo_flow **pp = &c->tab[f->hash & (c->nbuckets - 1)];

	while (*pp != f)
		pp = &(*pp)->hnext;
	*pp = f->hnext;
	list_del(f->closed ? &c->closed : &c->lru, f);
	c->nflows--;
	c->st.expired++;
	free(f);
}

/* Expire flows idle for longer than `age` from the head of list l (at most `budget`). A flow with
 * frames queued is never expired (it moves to the tail). */
static void expire(struct colo_cmp *c, struct colo_list *l, uint64_t age, uint64_t now, unsigned budget)
{
	struct colo_flow *f;

	while ((f = l->head) && budget--) {
		if (f->last + age >= now)
			break;
		if (f->q[0].n || f->q[1].n) {
			f->last = now;
			list_del(l, f);
			list_add(l, f);
			continue;
		}
		flow_free(c, f);
	}
}

/* At the flow bound: free the least recently used flow that has nothing queued (closed flows
 * first). Looks at a few flows only; when all hold frames the table goes over the bound. */
static void evict(struct colo_cmp *c)
{
	struct colo_list *lists[2] = {&c->closed, &c->lru};
	int i, n;

	for (i = 0; i < 2; i++) {
		struct colo_flow *f = lists[i]->head;

		for (n = 0; f && n < 8; n++, f = f->lnext)
			if (!f->q[0].n && !f->q[1].n) {
				flow_free(c, f);
				return;
			}
	}
}

/* ---- non-TCP flows: frames match in order ---- */

static void match_in_order(struct colo_cmp *c, struct colo_flow *f)
{
	struct colo_ent *p, *s;

	while (!f->diverged && (p = f->q[SIDE_P].head) && (s = f->q[SIDE_S].head)) {
		if (!colo_ent_equal(p, s)) {
			colo_mismatch(c, f);
			return;
		}
		colo_drop(c, s, false);
		colo_release(c, p, true);
	}
}

/* ---- API ---- */

int colo_cmp_new(struct colo_cmp **out, const struct colo_cmp_cfg *cfg)
{
	struct colo_cmp *c;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!cfg || !cfg->release)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->tab = calloc(TAB_MIN, sizeof(*c->tab));
	if (!c->tab) {
		free(c);
		return -ENOMEM;
	}
	c->nbuckets = TAB_MIN;
	/* a secret hash seed: peers choose their addresses and ports, so they must not be able to
	 * choose colliding keys */
	if (getrandom(&c->seed, sizeof(c->seed), GRND_NONBLOCK) != sizeof(c->seed))
		c->seed = now_ns() ^ (uint64_t)(uintptr_t)c;
	c->cfg = *cfg;
	if (!c->cfg.timeout_ms)
		c->cfg.timeout_ms = COLO_CMP_DEFAULT_TIMEOUT_MS;
	if (!c->cfg.max_bytes)
		c->cfg.max_bytes = COLO_CMP_DEFAULT_BYTES;
	if (!c->cfg.max_frames)
		c->cfg.max_frames = COLO_CMP_DEFAULT_FRAMES;
	if (!c->cfg.idle_ms)
		c->cfg.idle_ms = COLO_CMP_DEFAULT_IDLE_MS;
	if (!c->cfg.max_flows)
		c->cfg.max_flows = COLO_CMP_DEFAULT_FLOWS;
	c->timeout_ns = (uint64_t)c->cfg.timeout_ms * 1000000ull;
	c->idle_ns = (uint64_t)c->cfg.idle_ms * 1000000ull;
	pthread_mutex_init(&c->lock, NULL);
	*out = c;
	return 0;
}

void colo_cmp_free(struct colo_cmp *c)
{
	struct colo_ent *e, *n;
	size_t i;
	int k;

	if (!c)
		return;
	for (e = c->ahead; e; e = n) {
		n = e->anext;
		free(e);
	}
	for (k = 0; k < COLO_SLAB_CLASSES; k++)
		for (e = c->slab[k]; e; e = n) {
			n = e->fnext;
			free(e);
		}
	for (i = 0; i < c->nbuckets; i++) {
		struct colo_flow *f, *fn;

		for (f = c->tab[i]; f; f = fn) {
			fn = f->hnext;
			free(f);
		}
	}
	free(c->tab);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* Over the bound on this side: a checkpoint instead of a drop. Returns true when the frame
 * must not be queued (an SVM frame: the checkpoint discards the SVM's output anyway). */
static bool over_bound(struct colo_cmp *c, int side, size_t len)
{
	if (c->held_frames[side] + 1 <= c->cfg.max_frames && c->held_bytes[side] + len <= c->cfg.max_bytes)
		return false;
	colo_diverge(c, COLO_CMP_QUEUE);
	return side == SIDE_S;
}

static int frame_in(struct colo_cmp *c, int side, int netidx, const void *frame, size_t len, uint64_t now)
{
	struct colo_pkt p;
	struct colo_flow *f;
	struct colo_ent *e;

	if (!frame || !len || len > COLO_CMP_MAX_FRAME) {
		c->st.invalid++;
		return -EINVAL;
	}
	if (c->passthrough) {
		if (side == SIDE_S) {
			c->st.dropped_svm++;
		} else {
			c->st.passthrough++;
			c->st.released++;
			c->cfg.release(c->cfg.opaque, netidx, frame, len);
		}
		return 0;
	}
	colo_parse(frame, len, netidx, &p);
	if (p.malformed)
		c->st.malformed++;
	if (over_bound(c, side, len)) {
		c->st.dropped_svm++;
		return 0;
	}
	f = flow_get(c, &p, now);
	e = f ? ent_get(c, len) : NULL;
	if (!e) {
		/* no memory: never output unverified bytes; a checkpoint brings the VMs together */
		colo_diverge(c, COLO_CMP_QUEUE);
		if (side == SIDE_S)
			c->st.dropped_svm++;
		return -ENOMEM;
	}
	memcpy(e->data, frame, len);
	e->len = (uint32_t)len;
	e->flow = f;
	e->side = (uint8_t)side;
	e->t = now;
	e->rst_matched = false;
	e->kind = p.kind;
	e->tflags = p.tflags;
	e->seq = p.seq;
	e->ack = p.ack;
	e->payoff = p.payoff;
	e->paylen = p.paylen;
	e->optoff = p.optoff;
	e->optlen = p.optlen;
	e->cmp_end = p.cmp_end;
	e->nign = p.nign;
	memcpy(e->ign_off, p.ign_off, sizeof(e->ign_off));
	memcpy(e->ign_len, p.ign_len, sizeof(e->ign_len));
	if (f->kind == CK_TCP) {
		colo_tcp_frame(c, f, e);
		return 0;
	}
	if (f->diverged && side == SIDE_S) {
		colo_drop_now(c, e, true);
		return 0;
	}
	colo_enqueue(c, e);
	match_in_order(c, f);
	return 0;
}

int colo_cmp_primary(struct colo_cmp *c, int netidx, const void *frame, size_t len, uint64_t now)
{
	int rc;

	pthread_mutex_lock(&c->lock);
	c->now = now;
	rc = frame_in(c, SIDE_P, netidx, frame, len, now);
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int colo_cmp_secondary(struct colo_cmp *c, int netidx, const void *frame, size_t len, uint64_t now)
{
	int rc;

	pthread_mutex_lock(&c->lock);
	c->now = now;
	rc = frame_in(c, SIDE_S, netidx, frame, len, now);
	pthread_mutex_unlock(&c->lock);
	return rc;
}

enum colo_cmp_reason colo_cmp_tick(struct colo_cmp *c, uint64_t now)
{
	enum colo_cmp_reason r;

	pthread_mutex_lock(&c->lock);
	if (c->ahead && now > c->ahead->t && now - c->ahead->t > c->timeout_ns)
		colo_diverge(c, COLO_CMP_TIMEOUT);
	expire(c, &c->lru, c->idle_ns, now, EXPIRE_PER_TICK);
	expire(c, &c->closed, (uint64_t)COLO_CMP_CLOSED_LINGER_MS * 1000000ull, now, EXPIRE_PER_TICK);
	r = c->reason;
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* Release every held PVM frame (in arrival order, so in order per flow) and drop every SVM one. */
static void flush_all(struct colo_cmp *c)
{
	struct colo_ent *e;

	while ((e = c->ahead)) {
		if (e->side == SIDE_P)
			colo_release(c, e, false);
		else
			colo_drop(c, e, true);
	}
}

void colo_cmp_checkpoint_done(struct colo_cmp *c)
{
	pthread_mutex_lock(&c->lock);
	flush_all(c);
	c->gen++;
	c->reason = COLO_CMP_NONE;
	pthread_mutex_unlock(&c->lock);
}

void colo_cmp_passthrough(struct colo_cmp *c)
{
	pthread_mutex_lock(&c->lock);
	flush_all(c);
	c->passthrough = true;
	c->reason = COLO_CMP_NONE;
	pthread_mutex_unlock(&c->lock);
}

int colo_cmp_rewrite_inbound(struct colo_cmp *c, int netidx, void *frame, size_t len)
{
	struct colo_pkt p;
	struct colo_flow *f;
	uint8_t tmp[16];
	uint16_t t;

	if (!frame || !len || len > COLO_CMP_MAX_FRAME)
		return -EINVAL;
	colo_parse(frame, len, netidx, &p);
	if (!p.tcp)
		return 0;
	/* the flow is keyed in the VM -> peer direction */
	memcpy(tmp, p.key.src, 16);
	memcpy(p.key.src, p.key.dst, 16);
	memcpy(p.key.dst, tmp, 16);
	t = p.key.sport;
	p.key.sport = p.key.dport;
	p.key.dport = t;
	pthread_mutex_lock(&c->lock);
	f = flow_find(c, &p.key, XXH3_64bits_withSeed(&p.key, sizeof(p.key), c->seed));
	if (f) {
		flow_sync(c, f);
		colo_tcp_inbound(f, frame, &p);
		if ((f->fin_in && f->fin_out) || (p.tflags & TH_RST))
			colo_flow_close(c, f);
	}
	pthread_mutex_unlock(&c->lock);
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

void colo_cmp_get_stats(struct colo_cmp *c, struct colo_cmp_stats *st)
{
	pthread_mutex_lock(&c->lock);
	*st = c->st;
	st->tcp = c->ps[CK_TCP];
	st->udp = c->ps[CK_UDP];
	st->icmp = c->ps[CK_ICMP];
	st->arp = c->ps[CK_ARP];
	st->other = c->ps[CK_OTHER];
	st->flows = c->nflows;
	st->held_frames = c->held_frames[SIDE_P];
	st->held_bytes = c->held_bytes[SIDE_P];
	st->svm_frames = c->held_frames[SIDE_S];
	st->svm_bytes = c->held_bytes[SIDE_S];
	st->divergence_since_ns = c->ahead ? c->ahead->t : 0;
	uint64_t n = c->nhold < COLO_CMP_HOLD_RING ? c->nhold : COLO_CMP_HOLD_RING, h[COLO_CMP_HOLD_RING];
	memcpy(h, c->hold, n * sizeof(h[0]));
	pthread_mutex_unlock(&c->lock);
	qsort(h, n, sizeof(h[0]), cmp_u64);
	/* nearest rank: the smallest value with at least q of the samples at or below it */
	st->hold_p50_ns = n ? h[(n * 50 + 99) / 100 - 1] : 0;
	st->hold_p99_ns = n ? h[(n * 99 + 99) / 100 - 1] : 0;
}
