/* colo_standby.c — the COLO secondary: run in lockstep on forwarded input, send output and dirty sets, apply checkpoints. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "replication/remus_priv.h"
#include "vmm/vmm.h"
#include "common/clock.h"
#include "common/errf.h"
#include "common/le.h"
#include "common/log.h"

/* One record to the primary: REMUS_MSG_RECORD header + pre + body (padded by the queue). */
static int send_record(struct colo *c, uint32_t type, const void *pre, size_t plen, const void *body,
		       size_t blen, bool drop)
{
	uint8_t h[REMUS_MSG_SIZE + 16];

	remus_record_header(h, type, (uint32_t)(plen + blen));
	memcpy(h + REMUS_MSG_SIZE, pre, plen);
	return colo_txq_put(c, h, REMUS_MSG_SIZE + plen, body, blen, drop);
}

/* vCPU thread: the SVM's output goes to the primary's comparator, never to the wire. */
static void svm_tx_hook(void *opaque, int netidx, const void *frame, size_t len)
{
	struct colo *c = opaque;
	uint8_t pre[8];

	le_put32(pre, (uint32_t)netidx);
	/* the primary's stamp of the last input injected: it measures the round trip (profile) */
	le_put32(pre + 4, __atomic_load_n(&c->stamp, __ATOMIC_RELAXED));
	if (!send_record(c, SR_REC_COLO_OUTPUT, pre, 8, frame, len, true)) {
		pthread_mutex_lock(&c->txlock);
		c->out_frames++;
		pthread_mutex_unlock(&c->txlock);
	}
}

/* CKPT_REQ: pause, send the pages this SVM dirtied since the last checkpoint, drop input until the
 * epoch is applied (the primary's epoch already holds it). */
static int on_req(struct remus *r, struct colo *c, const uint8_t *b, uint32_t len)
{
	uint64_t nr = vm_mem(r->vm)->nr_pages, words = dirty_bitmap_words(nr);
	uint8_t pre[16];
	int rc;

	if (len < 16 || c->in_ckpt)
		return -EPROTO;
	if (!c->svm_paused) { /* paused already: an ABANDONed session's hold becomes this one */
		rc = vm_pause(r->vm); /* before its first start: the vCPUs will start parked */
		if (rc)
			return rc;
		c->svm_paused = true;
	}
	c->in_ckpt = true;
	c->req_epoch = le_get64(b);
	if (c->log) {
		if (dirty_log_sync(c->log, c->bm) < 0)
			dirty_bitmap_fill(c->bm, nr); /* unknown: everything */
	} else {
		memset(c->bm, 0, words * 8);
	}
	le_put64(pre, c->req_epoch);
	le_put64(pre + 8, nr);
	return send_record(c, SR_REC_COLO_DIRTY, pre, 16, c->bm, words * 8, false);
}

int colo_standby_record(void *opaque, uint32_t type, const uint8_t *body, uint32_t len)
{
	struct remus *r = opaque;
	struct colo *c = r->colo;

	if (type == SR_REC_COLO_CKPT_REQ)
		return on_req(r, c, body, len);
	if (type != SR_REC_COLO_INBOUND)
		return 0;
	if (len <= 8)
		return -EINVAL;
	if (!c->svm_running || c->in_ckpt) {
		c->in_dropped_ckpt++;
		return 0;
	}
	pthread_mutex_lock(&r->lock);
	bool gone = r->failed_over;
	pthread_mutex_unlock(&r->lock);
	if (gone)
		return 0;
	__atomic_store_n(&c->stamp, le_get32(body + 4), __ATOMIC_RELAXED);
	if (vmm_net_inject(r->v, (int)((uint32_t)body[0] | (uint32_t)body[1] << 8), body + 8, len - 8))
		c->inject_dropped++;
	else
		c->injected++;
	return 0;
}

int colo_standby_applied(struct remus *r, char *err, size_t errlen)
{
	struct colo *c = r->colo;
	uint8_t pre[16];
	uint64_t t0 = now_ns();
	int rc;

	if (!c->in_ckpt)
		return 0; /* a live-copy round */
	/* The pages are in RAM (commit_epoch); the state is the committed one. Paused since REQ. */
	rc = ckpt_state_apply(&r->committed, r->vm, err, errlen);
	if (!rc) /* disks: the SVM's own writes go (overlay), the image holds the primary's */
		rc = remus_disk_colo_checkpoint(r, err, errlen);
	if (rc)
		return rc;
	if (!c->log) {
		rc = dirty_log_start(&c->log, r->vm, DIRTY_START_CLEAN, err, errlen);
		if (rc)
			return rc;
	}
	(void)dirty_log_sync(c->log, c->bm); /* what the apply wrote is the primary's, not ours */
	bool first = !c->svm_running;
	c->svm_running = true;
	c->in_ckpt = false;
	c->applies++;
	c->apply_ns_last = now_ns() - t0;
	if (first) {
		vmm_set_tx_hook(r->v, svm_tx_hook, c);
		remus_notify(r, RA_COLO_START); /* vmm_start_vcpus on the loop; parked until resume */
	}
	/* the ack goes before the resumed SVM's first output: the primary compares what follows it
	 * against the new state */
	le_put64(pre, c->req_epoch);
	le_put64(pre + 8, c->apply_ns_last);
	rc = send_record(c, SR_REC_COLO_CKPT_ACK, pre, 16, NULL, 0, false);
	if (c->svm_paused)
		vm_resume(r->vm);
	c->svm_paused = false;
	return rc;
}

void colo_standby_start_vcpus(struct remus *r)
{
	if (r->role != REMUS_STANDBY || !vmm_held(r->v))
		return;
	pthread_mutex_lock(&r->lock);
	bool gone = r->failed_over;
	pthread_mutex_unlock(&r->lock);
	if (gone)
		return; /* the takeover starts them */
	int rc = vmm_start_vcpus(r->v);
	/* A secondary takes its input from the primary only; the loop thread also runs tap RX, so no
	 * tap frame slips in between. */
	vmm_net_rx_tap(r->v, false);
	if (rc)
		log_error("colo", vmm_name(r->v), "cannot start the secondary's vCPUs: %s", strerror(-rc));
	else
		log_info("colo", vmm_name(r->v), "secondary running in lockstep");
}

int colo_standby_takeover(struct remus *r, char *err, size_t errlen)
{
	struct colo *c = r->colo;
	int rc = 0;

	colo_standby_end(r); /* the writer: nothing goes to the lost primary any more */
	vmm_set_tx_hook(r->v, NULL, NULL);
	rc = remus_disk_colo_takeover(r, err, errlen); /* our overlays are the disk: into the images */
	if (rc)
		return rc;
	if (vmm_held(r->v))
		rc = vmm_start_vcpus(r->v);
	vmm_net_rx_tap(r->v, true);
	if (c->svm_paused)
		vm_resume(r->vm); /* mid-checkpoint: the partial epoch was dropped, our own state goes on */
	c->svm_paused = c->in_ckpt = false;
	dirty_log_free(c->log);
	c->log = NULL;
	if (rc)
		return errf(err, errlen, rc, "cannot start vCPUs: %s", strerror(-rc));
	return 0;
}
