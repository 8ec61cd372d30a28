/* colo_primary.c — the COLO primary: forward input to the SVM, compare outputs, checkpoint on divergence. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replication/remus_priv.h"
#include "replication/witness.h"
#include "vmm/vmm.h"
#include "common/clock.h"
#include "common/errf.h"
#include "common/le.h"
#include "common/log.h"

/* Queue a record for the sender thread (any thread but the sender). Frames (drop true) beyond the
 * bound are dropped: the SVM misses an input, diverges, and a checkpoint repairs it. */
static int enqueue(struct remus *r, uint32_t type, const void *pre, size_t plen, const void *body,
		   size_t blen, bool drop)
{
	struct colo *c = r->colo;
	struct colo_qent *e;

	pthread_mutex_lock(&r->lock);
	if (drop && c->qbytes + plen + blen > COLO_Q_MAX_BYTES) {
		c->fwd_dropped++;
		pthread_mutex_unlock(&r->lock);
		return -ENOBUFS;
	}
	pthread_mutex_unlock(&r->lock);
	e = malloc(sizeof(*e) + plen + blen);
	if (!e)
		return -ENOMEM;
	e->next = NULL;
	e->t = now_ns();
	e->type = type;
	e->len = (uint32_t)(plen + blen);
	if (plen)
		memcpy(e->data, pre, plen);
	if (blen)
		memcpy(e->data + plen, body, blen);
	pthread_mutex_lock(&r->lock);
	if (c->qtail)
		c->qtail->next = e;
	else
		c->qhead = e;
	c->qtail = e;
	c->qbytes += e->len;
	if (type == SR_REC_COLO_INBOUND)
		c->fwd_frames++;
	if (type == 0)
		c->q_epochs++;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->lock);
	return 0;
}

/* Loop thread: a forwarded frame written on the stream by this thread itself when nobody else writes,
 * no staged epoch waits in the queue and the socket has room; records queued before it (a fallback
 * while the sender wrote) go first, so one busy moment does not send every later frame through the
 * sender thread. Else false (queue it). Saves waking the sender thread for each request. */
static bool forward_direct(struct remus *r, const uint8_t pre[8], const void *frame, size_t len)
{
	struct colo *c = r->colo;
	struct pollfd pfd = {.fd = r->fd, .events = POLLOUT};
	struct colo_qent *q = NULL, *n;
	uint8_t rec[8 + COLO_CMP_MAX_FRAME];
	int rc = 0;

	pthread_mutex_lock(&r->lock);
	bool mine = c->w && !c->wbusy && !c->q_epochs && !r->stop_sender;
	if (mine)
		c->wbusy = true;
	pthread_mutex_unlock(&r->lock);
	if (!mine)
		return false;
	if (poll(&pfd, 1, 0) != 1 || !(pfd.revents & POLLOUT)) {
		rc = 1; /* full: the sender waits for room, not the loop */
	} else {
		pthread_mutex_lock(&r->lock); /* only the loop queues: nothing is added meanwhile */
		q = c->qhead;
		c->qhead = c->qtail = NULL;
		c->qbytes = 0;
		pthread_mutex_unlock(&r->lock);
	}
	for (; q; q = n) {
		n = q->next;
		uint64_t t = now_ns();
		if (!rc)
			rc = sr_write_record(c->w, q->type, q->data, q->len);
		if (q->type == SR_REC_COLO_INBOUND) {
			pthread_mutex_lock(&r->lock);
			remus_ring_push(&r->colo_fwdq_ns, t - q->t);
			pthread_mutex_unlock(&r->lock);
		}
		free(q);
	}
	if (!rc) {
		memcpy(rec, pre, 8);
		memcpy(rec + 8, frame, len);
		rc = sr_write_record(c->w, SR_REC_COLO_INBOUND, rec, 8 + len);
	}
	pthread_mutex_lock(&r->lock);
	c->wbusy = false;
	if (rc <= 0) {
		c->fwd_frames++;
		c->fwd_direct++;
	}
	if (rc < 0 && !*r->sender_err)
		snprintf(r->sender_err, sizeof(r->sender_err), "sending to the secondary: %s",
			 *sr_error(c->w) ? sr_error(c->w) : strerror(-rc));
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
	if (rc < 0)
		remus_notify(r, RA_SENDER_FAILED);
	return rc <= 0;
}

bool colo_sender_pending(struct remus *r)
{
	return r->colo && r->colo->qhead && !r->colo->wbusy;
}

void colo_sender_attach(struct remus *r, struct sr_ctx *w)
{
	pthread_mutex_lock(&r->lock);
	if (r->colo_on) {
		while (r->colo->wbusy)
			pthread_cond_wait(&r->cond, &r->lock);
		r->colo->w = w;
	}
	pthread_mutex_unlock(&r->lock);
}

int colo_sender_heartbeat(struct remus *r, struct sr_ctx *w)
{
	struct colo *c = r->colo;
	uint64_t now;
	int rc;

	pthread_mutex_lock(&r->lock);
	while (c->wbusy)
		pthread_cond_wait(&r->cond, &r->lock);
	c->wbusy = true;
	pthread_mutex_unlock(&r->lock);
	now = now_ns();
	rc = sr_write_record(w, REMUS_REC_HEARTBEAT, &now, sizeof(now));
	pthread_mutex_lock(&r->lock);
	c->wbusy = false;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
	return rc;
}

int colo_sender_drain(struct remus *r, struct sr_ctx *w)
{
	struct colo *c = r->colo;
	struct colo_qent *e, *next;
	int rc = 0;

	pthread_mutex_lock(&r->lock);
	while (c->wbusy) /* the loop writes a frame itself */
		pthread_cond_wait(&r->cond, &r->lock);
	e = c->qhead;
	c->qhead = c->qtail = NULL;
	c->qbytes = 0;
	c->q_epochs = 0;
	if (e)
		c->wbusy = true;
	pthread_mutex_unlock(&r->lock);
	if (!e)
		return 0;
	for (; e; e = next) {
		next = e->next;
		if (!rc && e->type == 0) {
			/* the staged epoch, at its place among the frames */
			rc = ckpt_stage_write(w, &r->eng.stage);
			pthread_mutex_lock(&r->lock);
			if (!rc) {
				r->last_sent_epoch = r->eng.stage.epoch;
				c->t_epoch_sent = now_ns();
			}
			r->job_pending = false;
			pthread_mutex_unlock(&r->lock);
		} else if (!rc) {
			uint64_t t = now_ns();
			rc = sr_write_record(w, e->type, e->data, e->len);
			if (e->type == SR_REC_COLO_INBOUND) {
				pthread_mutex_lock(&r->lock);
				remus_ring_push(&r->colo_fwdq_ns, t - e->t);
				pthread_mutex_unlock(&r->lock);
			}
		}
		free(e);
	}
	pthread_mutex_lock(&r->lock);
	c->wbusy = false;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
	return rc ? rc : 1;
}

/* ---- stashes: what the PVM does between its checkpoint's capture and the SVM's ack -------------- */

static void stash_put(struct colo_stash *s, int netidx, const void *frame, size_t len)
{
	size_t need = s->len + 8 + len;

	if (need > s->cap) {
		size_t cap = s->cap ? s->cap : 65536;
		while (cap < need)
			cap *= 2;
		uint8_t *b = cap <= COLO_Q_MAX_BYTES ? realloc(s->buf, cap) : NULL;
		if (!b) {
			s->dropped++; /* lost like on a wire: never released unverified */
			return;
		}
		s->buf = b;
		s->cap = cap;
	}
	le_put32(s->buf + s->len, (uint32_t)netidx);
	le_put32(s->buf + s->len + 4, (uint32_t)len);
	memcpy(s->buf + s->len + 8, frame, len);
	s->len = need;
}

/* Loop thread: the frames the PVM's taps delivered during the checkpoint go to the SVM now. */
static void forward(struct remus *r, int netidx, uint8_t *buf, size_t len);

static void rxstash_flush(struct remus *r)
{
	struct colo_stash *s = &r->colo->rxstash;

	for (size_t off = 0; off + 8 <= s->len;) {
		uint32_t idx = le_get32(s->buf + off), len = le_get32(s->buf + off + 4);
		forward(r, (int)idx, s->buf + off + 8, len);
		off += 8 + len;
	}
	s->len = 0;
}

/* The PVM's output of the stash enters the comparator (stash_lock held), then passes straight. */
static void txstash_flush(struct colo *c)
{
	struct colo_stash *s = &c->txstash;
	uint64_t now = now_ns();

	for (size_t off = 0; off + 8 <= s->len;) {
		uint32_t idx = le_get32(s->buf + off), len = le_get32(s->buf + off + 4);
		(void)colo_cmp_primary(c->cmp, (int)idx, s->buf + off + 8, len, now);
		off += 8 + len;
	}
	s->len = 0;
	c->stashing = false;
}

/* ---- hooks -------------------------------------------------------------------------------------- */

/* A frame for the SVM (loop thread): its TCP acks moved into the SVM's sequence space, stamped for
 * the round-trip profile, written at once when the stream is free, else queued for the sender. */
static void forward(struct remus *r, int netidx, uint8_t *buf, size_t len)
{
	uint8_t pre[8];

	(void)colo_cmp_rewrite_inbound(r->colo->cmp, netidx, buf, len);
	le_put32(pre, (uint32_t)netidx);
	le_put32(pre + 4, (uint32_t)(now_ns() / 1000) | 1); /* the SVM echoes it; never 0 */
	if (!forward_direct(r, pre, buf, len))
		(void)enqueue(r, SR_REC_COLO_INBOUND, pre, 8, buf, len, true);
}

/* Loop thread: a frame the PVM's tap delivers to the PVM goes to the SVM too. Not during the live
 * copy (the SVM does not run yet); after the ack when it arrives during a checkpoint (the SVM
 * drops input until it applied the epoch, and the comparator maps sequence numbers afresh then). */
static void rx_hook(void *opaque, int netidx, const void *frame, size_t len)
{
	struct remus *r = opaque;
	uint8_t buf[COLO_CMP_MAX_FRAME];

	if (r->role != REMUS_PRIMARY || !r->colo || len > sizeof(buf))
		return;
	pthread_mutex_lock(&r->lock);
	bool live = r->precopy_done;
	pthread_mutex_unlock(&r->lock);
	if (!live)
		return;
	if (r->colo->cs == CS_WAIT_ACK) {
		stash_put(&r->colo->rxstash, netidx, frame, len);
		return;
	}
	memcpy(buf, frame, len);
	forward(r, netidx, buf, len);
}

/* vCPU thread: the PVM's output goes to the comparator, or to the stash during a checkpoint. */
static void tx_hook(void *opaque, int netidx, const void *frame, size_t len)
{
	struct colo *c = ((struct remus *)opaque)->colo;

	pthread_mutex_lock(&c->stash_lock);
	if (c->stashing)
		stash_put(&c->txstash, netidx, frame, len);
	else
		(void)colo_cmp_primary(c->cmp, netidx, frame, len, now_ns());
	pthread_mutex_unlock(&c->stash_lock);
}

static void release_cb(void *opaque, int netidx, const void *frame, size_t len)
{
	struct remus *r = opaque;

	/* Only a copy whose witness lease is provably valid releases (any thread: an atomic read);
	 * otherwise the frame is dropped and the loop's lease check fences this copy. */
	if (r->wit && !witness_lease_valid(r->wit))
		return;
	(void)vmm_net_output(r->v, netidx, frame, len);
}

static void diverged_cb(void *opaque, enum colo_cmp_reason why)
{
	struct remus *r = opaque;

	__atomic_or_fetch(&r->colo->diverged, 1u << why, __ATOMIC_ACQ_REL);
	remus_notify(r, RA_COLO);
}

/* ---- checkpoints ------------------------------------------------------------------------------ */

static void request(struct remus *r, enum colo_why why)
{
	struct colo *c = r->colo;
	uint8_t b[16];

	if (r->role != REMUS_PRIMARY || c->cs != CS_IDLE ||
	    (r->pstate != PS_SYNCING && r->pstate != PS_PROTECTED))
		return;
	pthread_mutex_lock(&r->lock);
	bool live = r->precopy_done;
	pthread_mutex_unlock(&r->lock);
	if (!live)
		return;
	c->cs = CS_REQ;
	c->why = why;
	c->ckpt_epoch = r->next_epoch;
	c->t_req = now_ns();
	le_put64(b, c->ckpt_epoch);
	le_put32(b + 8, (uint32_t)why);
	le_put32(b + 12, 0);
	if (enqueue(r, SR_REC_COLO_CKPT_REQ, b, sizeof(b), NULL, 0, false))
		remus_primary_abandon(r, "colo: out of memory");
}

void colo_primary_async(struct remus *r)
{
	struct colo *c = r->colo;
	unsigned d;

	if (!c)
		return;
	d = __atomic_exchange_n(&c->diverged, 0, __ATOMIC_ACQ_REL);
	if (d & (1u << COLO_CMP_MISMATCH))
		request(r, COLO_WHY_MISMATCH);
	else if (d & (1u << COLO_CMP_QUEUE))
		request(r, COLO_WHY_QUEUE);
	else if (d & (1u << COLO_CMP_TIMEOUT))
		request(r, COLO_WHY_TIMEOUT);
}

static void periodic_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct remus *r = w->data;
	struct colo *c = r->colo;

	(void)loop, (void)revents;
	if (c->cs == CS_IDLE && now_ns() - c->last_ckpt_ns >= (uint64_t)c->interval_ms * 1000000ull)
		request(r, COLO_WHY_PERIODIC);
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct remus *r = w->data;

	(void)loop, (void)revents;
	(void)colo_cmp_tick(r->colo->cmp, now_ns());
}

/* DIRTY from the SVM: run the engine's epoch with its dirty set merged. The PVM resumes as soon as
 * its state is captured (the epoch is a copy in the stage); its output from then on is stashed and
 * compared after the SVM applied the epoch, so nothing it says after the capture leaves with the
 * checkpoint's held output. */
static void on_dirty(struct remus *r, const uint8_t *b, uint32_t len)
{
	struct colo *c = r->colo;
	uint64_t nr = vm_mem(r->vm)->nr_pages, words = dirty_bitmap_words(nr);

	if (len < 16 || c->cs != CS_REQ || le_get64(b) != c->ckpt_epoch || le_get64(b + 8) != nr ||
	    len != 16 + words * 8) {
		remus_primary_lost(r, "colo: unexpected dirty set from the standby (epoch %llu, %u bytes)",
				   len >= 8 ? (unsigned long long)le_get64(b) : 0ull, len);
		return;
	}
	c->t_dirty = now_ns();
	remus_ring_push(&r->colo_req_dirty_ns, c->t_dirty - c->t_req);
	memcpy(c->merge, b + 16, words * 8);
	c->svm_dirty_last = dirty_bitmap_count(c->merge, nr);
	c->svm_dirty_total += c->svm_dirty_last;
	/* The engine resumes the PVM itself, still at the loop's real-time priority during the epoch
	 * (remus_checkpoint), right after colo_primary_captured turned the stash on. */
	if (remus_checkpoint(r, c->merge, false)) {
		/* the SVM waits paused for this epoch: never leave it waiting */
		if (r->role == REMUS_PRIMARY && r->pstate != PS_ABANDONING)
			remus_primary_abandon(r, "colo: the checkpoint could not be taken");
		return;
	}
	c->cs = CS_WAIT_ACK; /* the loop's tap frames: stashed (rx_hook) */
	remus_ring_push(&r->colo_pause_ns, r->pause_ns.v[(r->pause_ns.n - 1) % REMUS_RING]);
	c->t_epoch_q = now_ns();
	if (enqueue(r, 0, NULL, 0, NULL, 0, false))
		remus_primary_abandon(r, "colo: out of memory");
}

static void on_ack(struct remus *r, const uint8_t *b, uint32_t len)
{
	struct colo *c = r->colo;
	uint64_t now = now_ns();

	if (len < 16 || c->cs != CS_WAIT_ACK || le_get64(b) != c->ckpt_epoch) {
		remus_primary_lost(r, "colo: unexpected checkpoint ack from the standby");
		return;
	}
	r->acked_epoch = c->ckpt_epoch;
	if (!remus_witness_may_release(r))
		return; /* fenced: nothing more leaves */
	/* The checkpoint's output first (the SVM has its state), then what the PVM said since the
	 * capture enters the comparator, to be matched by what the SVM says after its ack. */
	pthread_mutex_lock(&c->stash_lock);
	colo_cmp_checkpoint_done(c->cmp);
	txstash_flush(c);
	pthread_mutex_unlock(&c->stash_lock);
	c->nr_ckpt[c->why]++;
	c->last_ckpt_ns = now;
	c->cs = CS_IDLE;
	rxstash_flush(r);
	pthread_mutex_lock(&r->lock);
	uint64_t sent = c->t_epoch_sent;
	pthread_mutex_unlock(&r->lock);
	if (sent >= c->t_epoch_q && sent <= now) {
		remus_ring_push(&r->colo_send_ns, sent - c->t_epoch_q);
		remus_ring_push(&r->colo_ack_wait_ns, now - sent);
	}
	remus_ring_push(&r->colo_hold_ns, now - r->last_t_pause);
	remus_ring_push(&r->ack_ns, now - c->t_req);
	remus_primary_acked(r, c->ckpt_epoch, now);
	/* a divergence seen during the checkpoint was about output it has now released */
	__atomic_store_n(&c->diverged, 0, __ATOMIC_RELEASE);
}

void colo_primary_captured(struct remus *r)
{
	struct colo *c = r->colo;

	pthread_mutex_lock(&c->stash_lock); /* the vCPUs are parked: no output in flight */
	c->stashing = true;
	pthread_mutex_unlock(&c->stash_lock);
}

void colo_primary_msg(struct remus *r, const struct remus_msg *m)
{
	struct colo *c = r->colo;

	if (!c)
		return;
	switch (m->rec_type) {
	case SR_REC_COLO_OUTPUT:
		if (m->rec_len > 8 && c->cs != CS_WAIT_ACK) {
			uint32_t idx = (uint32_t)m->body[0] | (uint32_t)m->body[1] << 8;
			uint32_t echo = le_get32(m->body + 4);
			if (echo && echo != c->last_echo) { /* the first output after an input */
				c->last_echo = echo;
				remus_ring_push(&r->colo_rtt_ns,
						(uint64_t)((uint32_t)(now_ns() / 1000) - echo) * 1000);
			}
			c->svm_frames++;
			(void)colo_cmp_secondary(c->cmp, (int)idx, m->body + 8, m->rec_len - 8, now_ns());
		}
		break;
	case SR_REC_COLO_DIRTY:
		on_dirty(r, m->body, m->rec_len);
		break;
	case SR_REC_COLO_CKPT_ACK:
		on_ack(r, m->body, m->rec_len);
		break;
	default:
		break; /* unknown optional record: skipped */
	}
}

void colo_primary_precopy_done(struct remus *r)
{
	struct colo *c = r->colo;
	double iv = (double)(c->interval_ms < 100 ? c->interval_ms : 100) / 1e3;

	c->last_ckpt_ns = now_ns();
	ev_timer_init(&c->periodic_w, periodic_cb, iv, iv);
	c->periodic_w.data = r;
	ev_timer_start(r->loop, &c->periodic_w);
	ev_timer_init(&c->tick_w, tick_cb, COLO_TICK_MS / 1e3, COLO_TICK_MS / 1e3);
	c->tick_w.data = r;
	ev_timer_start(r->loop, &c->tick_w);
	request(r, COLO_WHY_INITIAL);
}

int colo_primary_start(struct remus *r, uint32_t interval_ms, uint32_t timeout_ms, char *err, size_t errlen)
{
	struct colo *c = r->colo;
	int rc;

	if (!c) {
		rc = colo_new(r, &c);
		if (rc)
			return errf(err, errlen, rc, "out of memory");
		r->colo = c;
	}
	if (c->cmp) {
		/* a vCPU may be inside the old tx hook (a held session): swap while they are parked */
		int paused = vm_pause(r->vm);
		colo_cmp_free(c->cmp);
		c->cmp = NULL;
		if (!paused)
			vm_resume(r->vm);
	}
	struct colo_cmp_cfg cfg = {
		.timeout_ms = timeout_ms,
		.release = release_cb,
		.diverged = diverged_cb,
		.opaque = r,
	};
	rc = colo_cmp_new(&c->cmp, &cfg);
	if (rc)
		return errf(err, errlen, rc, "cannot create the comparator: %s", strerror(-rc));
	free(c->merge);
	c->merge = calloc(dirty_bitmap_words(vm_mem(r->vm)->nr_pages), 8);
	if (!c->merge)
		return errf(err, errlen, -ENOMEM, "out of memory");
	c->interval_ms = interval_ms;
	c->timeout_ms = timeout_ms;
	c->cs = CS_IDLE;
	c->pvm_paused = false;
	c->stashing = false;
	c->txstash.len = c->rxstash.len = 0;
	c->last_echo = 0;
	__atomic_store_n(&c->diverged, 0, __ATOMIC_RELEASE);
	vmm_set_tx_hook(r->v, tx_hook, r);
	vmm_set_rx_hook(r->v, rx_hook, r);
	return 0;
}

void colo_primary_stop(struct remus *r, bool run_alone)
{
	struct colo *c = r->colo;

	if (!c)
		return;
	ev_timer_stop(r->loop, &c->periodic_w);
	ev_timer_stop(r->loop, &c->tick_w);
	vmm_set_rx_hook(r->v, NULL, NULL);
	if (c->pvm_paused)
		vm_resume(r->vm); /* a fence holds its own pause */
	c->pvm_paused = false;
	c->cs = CS_IDLE;
	c->rxstash.len = 0; /* no SVM to forward to */
	pthread_mutex_lock(&c->stash_lock);
	if (run_alone && c->cmp)
		colo_cmp_passthrough(c->cmp); /* held output first, then every frame at once */
	txstash_flush(c); /* the comparator has them: passed (run alone) or held */
	pthread_mutex_unlock(&c->stash_lock);
	pthread_mutex_lock(&r->lock);
	for (struct colo_qent *e = c->qhead, *n; e; e = n) {
		n = e->next;
		free(e);
	}
	c->qhead = c->qtail = NULL;
	c->qbytes = 0;
	c->q_epochs = 0;
	pthread_mutex_unlock(&r->lock);
}
