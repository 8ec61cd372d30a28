/* colo_priv.h — COLO inside the Remus engine: lockstep secondary, compared output, checkpoints on divergence. */
#ifndef DOPPEL_REPLICATION_COLO_PRIV_H
#define DOPPEL_REPLICATION_COLO_PRIV_H

#include <ev.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "netbuf/colo_compare.h"

struct remus;
struct remus_msg;
struct sr_ctx;
struct dirty_log;
struct json_object;

/* Why a COLO checkpoint was taken (status "checkpoints"). */
enum colo_why {
	COLO_WHY_MISMATCH,
	COLO_WHY_TIMEOUT,
	COLO_WHY_QUEUE,
	COLO_WHY_PERIODIC,
	COLO_WHY_INITIAL,
	COLO_WHY_N
};

/* Where the primary's checkpoint is. */
enum colo_cstate {
	CS_IDLE, /* both VMs run */
	CS_REQ, /* CKPT_REQ queued/sent: waiting for the SVM's DIRTY */
	CS_WAIT_ACK, /* epoch staged, PVM held paused: waiting for CKPT_ACK */
};

/* One entry of the primary's ordered send queue (sender thread): a record body to write, or the
 * staged epoch (type 0) at the place it was taken among the forwarded frames. */
struct colo_qent {
	struct colo_qent *next;
	uint64_t t; /* now_ns() when queued */
	uint32_t type, len;
	uint8_t data[];
};

#define COLO_Q_MAX_BYTES (8u << 20) /* forwarded frames not yet written: beyond, dropped */
#define COLO_TXQ_MAX (16u << 20) /* SVM -> PVM bytes not yet written: beyond, frames dropped */
#define COLO_DEFAULT_INTERVAL_MS 2000u
#define COLO_TICK_MS 10u

struct colo {
	struct remus *r;
	/* ---- primary (loop thread unless noted) ---- */
	struct colo_cmp *cmp;
	uint32_t interval_ms, timeout_ms;
	ev_timer periodic_w, tick_w;
	unsigned diverged; /* atomic: 1 << enum colo_cmp_reason, set by the comparator */
	enum colo_cstate cs;
	enum colo_why why;
	uint64_t ckpt_epoch, t_req;
	uint64_t *merge; /* the SVM's dirty set for the epoch */
	bool pvm_paused; /* the epoch's stay_paused hold is ours */
	uint64_t nr_ckpt[COLO_WHY_N];
	uint64_t last_ckpt_ns, svm_dirty_last, svm_dirty_total;
	struct colo_qent *qhead, *qtail; /* r->lock */
	uint64_t qbytes; /* r->lock */
	/* The sender's stream (r->lock): the loop writes a forwarded frame on it itself when the queue
	 * is empty and nobody writes (wbusy, r->lock), saving the hand-off to the sender thread. */
	struct sr_ctx *w;
	bool wbusy;
	uint32_t q_epochs; /* r->lock: staged epochs in the queue (the loop never writes those) */
	uint64_t fwd_direct; /* r->lock: frames the loop wrote itself */
	/* From the epoch's capture until the SVM's ack the PVM runs again: its output is stashed
	 * (stash_lock; vCPU threads) and enters the comparator after the checkpoint's held output
	 * was released; frames its taps deliver meanwhile are forwarded after the ack (loop). */
	pthread_mutex_t stash_lock;
	bool stashing; /* stash_lock */
	struct colo_stash {
		uint8_t *buf;
		size_t len, cap;
		uint64_t dropped;
	} txstash, rxstash;
	uint64_t t_dirty, t_epoch_q, t_epoch_sent; /* t_epoch_sent: r->lock */
	uint32_t last_echo; /* the SVM's last echoed forward stamp (loop) */
	uint64_t fwd_frames, fwd_dropped, svm_frames; /* fwd_*: r->lock */
	/* ---- standby ---- */
	bool svm_running; /* reader: the first state was applied (vCPUs started or starting) */
	bool in_ckpt; /* reader: between CKPT_REQ and its epoch: inbound frames are dropped */
	bool svm_paused; /* reader: our pause hold on the SVM */
	uint64_t req_epoch;
	uint32_t stamp; /* atomic: the stamp of the last frame injected, echoed in the SVM's output */
	struct dirty_log *log;
	uint64_t *bm;
	uint64_t injected, inject_dropped, in_dropped_ckpt; /* reader */
	uint64_t out_frames, out_dropped; /* txq lock */
	uint64_t applies, apply_ns_last;
	/* SVM -> PVM writer: every byte to the primary goes through this queue and one thread */
	pthread_mutex_t txlock;
	pthread_cond_t txcond;
	uint8_t *txbuf, *txspare;
	size_t txlen, txcap, txsparecap;
	int txfd;
	bool txstop, tx_running, tx_failed;
	bool txsending; /* txlock: a thread is writing on txfd (the writer, or a caller directly) */
	uint64_t out_direct; /* txlock: records sent by their caller without the writer */
	pthread_t txthread;
};

/* colo.c: both sides */
int colo_new(struct remus *r, struct colo **out);
void colo_free(struct colo *c); /* NULL-safe; threads already stopped */
void colo_status(struct remus *r, struct json_object *o);
const char *colo_why_name(enum colo_why w);

/* colo_primary.c */
/* protect --mode colo: what remus_cmd_protect does besides the Remus session. 0 or -errno. */
int colo_primary_start(struct remus *r, uint32_t interval_ms, uint32_t timeout_ms, char *err, size_t errlen);
void colo_primary_precopy_done(struct remus *r); /* loop: the live copy is on the standby */
void colo_primary_async(struct remus *r); /* loop: the comparator diverged */
void colo_primary_msg(struct remus *r, const struct remus_msg *m); /* loop: a record from the SVM */
/* Loop, inside the checkpoint's pause (the engine's commit): stash the PVM's output from now on. */
void colo_primary_captured(struct remus *r);
/* Sender thread: write what the queue holds, in order (r->lock NOT held). 1 when something was
 * written, 0 when the queue was empty, -errno on a stream error. */
int colo_sender_drain(struct remus *r, struct sr_ctx *w);
bool colo_sender_pending(struct remus *r); /* r->lock held */
/* Sender thread: its stream, shared with the loop's direct writes (NULL when it ends). */
void colo_sender_attach(struct remus *r, struct sr_ctx *w);
int colo_sender_heartbeat(struct remus *r, struct sr_ctx *w); /* sender: one heartbeat, 0 or -errno */
/* The session ends (any way): timers and hooks off, the PVM's pause released. run_alone: the SVM
 * is gone, the comparator passes every frame (held ones first). */
void colo_primary_stop(struct remus *r, bool run_alone);

/* colo_standby.c (reader thread unless noted) */
int colo_standby_begin(struct remus *r, int fd); /* HELLO said COLO: writer thread, hooks */
void colo_standby_end(struct remus *r); /* reader end: stop the writer (any thread holding no lock) */
int colo_standby_record(void *opaque, uint32_t type, const uint8_t *body, uint32_t len); /* sr hook */
/* After commit_epoch of a stateful epoch: apply the state to the running SVM, resume, CKPT_ACK. */
int colo_standby_applied(struct remus *r, char *err, size_t errlen);
/* Queue bytes for the primary (any thread). Frames past COLO_TXQ_MAX are dropped (drop true). */
int colo_txq_put(struct colo *c, const void *hdr, size_t hlen, const void *body, size_t blen, bool drop);
void colo_standby_start_vcpus(struct remus *r); /* loop: the first state is in */
/* Loop: take over as the VM (the primary is lost): the SVM keeps running with its own state. */
int colo_standby_takeover(struct remus *r, char *err, size_t errlen);

#endif
