/* colo_primary.c — the COLO primary: forward input to the SVM, compare outputs, checkpoint on divergence. */
#include <errno.h>
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
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->lock);
	return 0;
}

bool colo_sender_pending(struct remus *r)
{
	return r->colo && r->colo->qhead;
}

int colo_sender_drain(struct remus *r, struct sr_ctx *w)
{
	struct colo *c = r->colo;
	struct colo_qent *e, *next;
	int rc = 0;

	pthread_mutex_lock(&r->lock);
	e = c->qhead;
	c->qhead = c->qtail = NULL;
	c->qbytes = 0;
	pthread_mutex_unlock(&r->lock);
	if (!e)
		return 0;
	for (; e; e = next) {
		next = e->next;
		if (!rc && e->type == 0) {
			/* the staged epoch, at its place among the frames */
			rc = ckpt_stage_write(w, &r->eng.stage);
			pthread_mutex_lock(&r->lock);
			if (!rc)
				r->last_sent_epoch = r->eng.stage.epoch;
			r->job_pending = false;
			pthread_mutex_unlock(&r->lock);
		} else if (!rc) {
			rc = sr_write_record(w, e->type, e->data, e->len);
		}
		free(e);
	}
	return rc ? rc : 1;
}

/* ---- hooks -------------------------------------------------------------------------------------- */

/* Loop thread: a frame the PVM's tap delivers to the PVM goes to the SVM too, its TCP acks moved
 * into the SVM's sequence space. Not during the live copy (the SVM does not run yet). */
static void rx_hook(void *opaque, int netidx, const void *frame, size_t len)
{
	struct remus *r = opaque;
	uint8_t pre[8], buf[COLO_CMP_MAX_FRAME];

	if (r->role != REMUS_PRIMARY || !r->colo || len > sizeof(buf))
		return;
	pthread_mutex_lock(&r->lock);
	bool live = r->precopy_done;
	pthread_mutex_unlock(&r->lock);
	if (!live)
		return;
	memcpy(buf, frame, len);
	(void)colo_cmp_rewrite_inbound(r->colo->cmp, netidx, buf, len);
	le_put32(pre, (uint32_t)netidx);
	le_put32(pre + 4, 0);
	(void)enqueue(r, SR_REC_COLO_INBOUND, pre, 8, buf, len, true);
}

/* vCPU thread: the PVM's output goes to the comparator. */
static void tx_hook(void *opaque, int netidx, const void *frame, size_t len)
{
	struct remus *r = opaque;

	(void)colo_cmp_primary(r->colo->cmp, netidx, frame, len, now_ns());
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

/* DIRTY from the SVM: run the engine's epoch with its dirty set merged, the PVM staying paused
 * until the SVM has applied it (its output after the pause belongs to the next checkpoint). */
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
	memcpy(c->merge, b + 16, words * 8);
	c->svm_dirty_last = dirty_bitmap_count(c->merge, nr);
	c->svm_dirty_total += c->svm_dirty_last;
	if (remus_checkpoint(r, c->merge, true)) {
		/* the SVM waits paused for this epoch: never leave it waiting */
		if (r->role == REMUS_PRIMARY && r->pstate != PS_ABANDONING)
			remus_primary_abandon(r, "colo: the checkpoint could not be taken");
		return;
	}
	c->pvm_paused = true;
	c->cs = CS_WAIT_ACK;
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
		return; /* fenced: nothing more leaves, the guest stays paused */
	/* before the PVM runs again: its next output must be compared, not released with the held */
	colo_cmp_checkpoint_done(c->cmp);
	if (c->pvm_paused)
		vm_resume(r->vm);
	c->pvm_paused = false;
	c->nr_ckpt[c->why]++;
	c->last_ckpt_ns = now;
	c->cs = CS_IDLE;
	remus_ring_push(&r->ack_ns, now - c->t_req);
	remus_ring_push(&r->colo_pause_ns, now - r->last_t_pause);
	remus_primary_acked(r, c->ckpt_epoch, now);
	/* a divergence seen during the checkpoint was about output it has now released */
	__atomic_store_n(&c->diverged, 0, __ATOMIC_RELEASE);
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
	pthread_mutex_lock(&r->lock);
	for (struct colo_qent *e = c->qhead, *n; e; e = n) {
		n = e->next;
		free(e);
	}
	c->qhead = c->qtail = NULL;
	c->qbytes = 0;
	pthread_mutex_unlock(&r->lock);
	if (run_alone && c->cmp)
		colo_cmp_passthrough(c->cmp); /* held output first, then every frame at once */
}
