/* remus_primary.c — the protected side: live copy, staged epochs, a sender thread, acks, status. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include "replication/ckpt_copy.h"
#include "replication/remus_priv.h"
#include "replication/sock.h"
#include "vmm/vmm.h"
#include "common/clock.h"
#include "common/errf.h"
#include "common/log.h"

#define PRECOPY_MAX_ROUNDS 5
#define PRECOPY_FEW_PAGES 1024
#define SEND_TIMEOUT_MS 10000

/* ---- sender thread -----------------------------------------------------------------------------
 */

static void sender_error(struct remus *r, const char *what, struct sr_ctx *w, int rc)
{
	pthread_mutex_lock(&r->lock);
	snprintf(r->sender_err, sizeof(r->sender_err), "%s: %s", what,
		 w && *sr_error(w) ? sr_error(w) : strerror(-rc));
	pthread_mutex_unlock(&r->lock);
	remus_notify(r, RA_SENDER_FAILED);
}

static void account(struct remus *r, struct sr_ctx *w, struct sr_out *out)
{
	struct sr_stats ss;

	sr_stats(w, &ss);
	pthread_mutex_lock(&r->lock);
	r->bytes_raw = ss.payload_in;
	r->bytes_wire = out->bytes;
	r->sst = ss;
	if (r->delta)
		sr_delta_get_stats(r->delta, &r->delta_st);
	pthread_mutex_unlock(&r->lock);
}

/* Live full copy: every page while the guest runs, then rounds of the pages dirtied meanwhile (up
 * to PRECOPY_MAX_ROUNDS in all, ending after a round of at most PRECOPY_FEW_PAGES). Each round is
 * an epoch without machine state (the standby writes it straight into its replica). */
struct precopy_ctx {
	struct remus *r;
	struct sr_ctx *w;
	struct sr_out *out;
};

static int precopy_round_end(void *opaque, const struct ckpt_round *rd)
{
	struct precopy_ctx *c = opaque;

	(void)rd;
	account(c->r, c->w, c->out);
	return 0;
}

static int precopy_next(void *opaque, const struct ckpt_round *rd)
{
	struct remus *r = ((struct precopy_ctx *)opaque)->r;

	r->precopy_rounds++;
	r->precopy_pages += rd->dirty;
	return rd->dirty <= PRECOPY_FEW_PAGES || r->precopy_rounds >= PRECOPY_MAX_ROUNDS ? CKPT_LAST_ROUND
											 : CKPT_ROUND;
}

static int precopy(struct remus *r, struct sr_ctx *w, struct sr_out *out, uint64_t *epoch)
{
	static const struct ckpt_policy pol = {.round_end = precopy_round_end, .next = precopy_next};
	struct precopy_ctx c = {.r = r, .w = w, .out = out};
	char err[256];
	bool io;

	r->precopy_rounds = 1;
	r->precopy_pages = vm_mem(r->vm)->nr_pages;
	return ckpt_engine_precopy(&r->eng, w, &pol, &c, epoch, &io, err, sizeof(err));
}

/* The session's start on the sender thread: HELLO, the stream header, disks and the live full copy
 * (pre-copy rounds). 0 with *wp and *epoch (the first checkpoint's number); else the error is
 * reported (and *wp, if any, still to be freed). */
static int sender_open(struct remus *r, struct sr_out *out, struct sr_ctx **wp, uint64_t *epoch)
{
	uint8_t hello[REMUS_MSG_SIZE];
	struct sr_header h;
	char derr[256];
	int rc;

	remus_msg_encode(hello, REMUS_MSG_HELLO,
			 remus_hello_value(r->interval_ms, r->hb_timeout_ms) |
				 (r->colo_on ? REMUS_HELLO_COLO : 0));
	rc = sr_out_write(out, hello, sizeof(hello));
	if (rc) {
		sender_error(r, "sending hello", NULL, rc);
		return rc;
	}
	rc = sr_writer_new(wp, out, true, 1);
	/* Not with COLO: a delta is XORed against the page the standby last received, and a running
	 * secondary rewrites its pages between checkpoints. */
	if (!rc && r->delta && !r->colo_on)
		rc = sr_set_delta(*wp, r->delta); /* empties it: this stream's standby starts from nothing */
	if (rc) {
		sender_error(r, "stream writer", NULL, rc);
		return rc;
	}
	sr_header_from_mem(&h, vm_mem(r->vm), (uint32_t)vm_nr_vcpus(r->vm));
	pthread_mutex_lock(&r->lock);
	*epoch = r->next_epoch;
	pthread_mutex_unlock(&r->lock);
	rc = sr_write_header(*wp, &h);
	if (rc) {
		sender_error(r, "live full copy", *wp, rc);
		return rc;
	}
	/* Disks: the blocks that differ from the standby's, then memory, then what was written meanwhile. */
	rc = remus_disk_sync(r, *wp, epoch, false, derr, sizeof(derr));
	if (!rc && !r->resume && (rc = precopy(r, *wp, out, epoch))) { /* resume: RAM equal */
		sender_error(r, "live full copy", *wp, rc);
		return rc;
	}
	if (!rc)
		rc = remus_disk_sync(r, *wp, epoch, true, derr, sizeof(derr));
	if (rc) {
		pthread_mutex_lock(&r->lock);
		snprintf(r->sender_err, sizeof(r->sender_err), "%s", derr);
		pthread_mutex_unlock(&r->lock);
		remus_notify(r, RA_SENDER_FAILED);
	}
	return rc;
}

/* Called with r->lock held and job_pending set; returns with it released. Takes the staged epoch:
 * its buffers become ours (r->tx) and ours go back to the engine, so the loop can capture the next
 * epoch while this one is sent (the loop touches eng.stage only while job_pending is false). Ours
 * first grow to the stage's size (unlocked: job_pending holds the loop off eng.stage), so the pause
 * that fills them neither allocates nor faults. 0 or the write error (reported). */
static int sender_send_epoch(struct remus *r, struct sr_ctx *w, struct sr_out *out)
{
	struct sr_stats s0, s1;
	uint64_t t0, t1;
	int rc;

	if (r->tx.cap < r->eng.stage.cap) {
		size_t cap = r->eng.stage.cap;
		pthread_mutex_unlock(&r->lock);
		(void)ckpt_stage_reserve(&r->tx, cap); /* best effort: else the pause grows it */
		pthread_mutex_lock(&r->lock);
	}
	struct ckpt_stage t = r->tx;
	r->tx = r->eng.stage;
	r->eng.stage = t;
	r->job_pending = false;
	pthread_mutex_unlock(&r->lock);
	sr_stats(w, &s0);
	t0 = now_ns();
	rc = ckpt_stage_write(w, &r->tx);
	if (rc) {
		sender_error(r, "sending epoch", w, rc);
		return rc;
	}
	t1 = now_ns();
	sr_stats(w, &s1);
	account(r, w, out);
	pthread_mutex_lock(&r->lock);
	r->sent[r->tx.epoch % 64] = (struct remus_sent){
		.epoch = r->tx.epoch, .t_start = t0, .t_end = t1, .send_ns = s1.write_ns - s0.write_ns};
	r->send_ns_last = t1 - t0;
	r->last_sent_epoch = r->tx.epoch;
	hist_record(&r->send_hist, r->send_ns_last);
	if (r->tl[r->last_sent_epoch % REMUS_TL].epoch == r->last_sent_epoch)
		r->tl[r->last_sent_epoch % REMUS_TL].send_us = (int32_t)(r->send_ns_last / 1000);
	pthread_mutex_unlock(&r->lock);
	return 0;
}

/* Wait (r->lock held) for work or a heartbeat's due time. r->cond waits on CLOCK_MONOTONIC. */
static void sender_wait(struct remus *r, uint64_t hb_ns)
{
	struct timespec ts;

	if (r->job_pending || r->stop_sender || colo_sender_pending(r))
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_nsec += (long)hb_ns;
	ts.tv_sec += ts.tv_nsec / 1000000000L;
	ts.tv_nsec %= 1000000000L;
	pthread_cond_timedwait(&r->cond, &r->lock, &ts);
}

/* The session's end on purpose (unprotect, stop, a local error): the stream's END tells the standby
 * that replication ended on purpose; it stays held and answers ABANDONED. END must follow a
 * CHECKPOINT_END: close any heartbeat-only epoch with an empty one (no pages, no state). */
static void sender_close(struct remus *r, struct sr_ctx *w, uint64_t epoch)
{
	pthread_mutex_lock(&r->lock);
	bool clean = r->stop_sender && !*r->sender_err;
	uint64_t last = r->last_sent_epoch > epoch ? r->last_sent_epoch : epoch;
	pthread_mutex_unlock(&r->lock);
	if (clean && sr_write_end(w) && !sr_write_checkpoint_end(w, last + 1))
		sr_write_end(w);
}

static void *sender_main(void *arg)
{
	struct remus *r = arg;
	struct sr_out out;
	struct sr_ctx *w = NULL;
	uint64_t epoch, hb_ns = (uint64_t)r->hb_timeout_ms * 1000000ull / 4;
	int rc;

	pthread_setname_np(pthread_self(), "remus-send");
	sr_out_fd(&out, r->fd, SEND_TIMEOUT_MS);
	if (sender_open(r, &out, &w, &epoch))
		goto out;
	account(r, w, &out);
	pthread_mutex_lock(&r->lock);
	r->next_epoch = epoch; /* the loop starts numbering checkpoints here */
	r->first_ckpt = epoch;
	r->precopy_done = true;
	pthread_mutex_unlock(&r->lock);
	colo_sender_attach(r, w); /* COLO: the loop may write forwarded frames itself */
	remus_notify(r, RA_PRECOPY_DONE);
	sr_set_pages_stable(w, true); /* from now on pages come from the stage, not live RAM */
	for (;;) {
		pthread_mutex_lock(&r->lock);
		sender_wait(r, hb_ns);
		if (r->stop_sender) {
			pthread_mutex_unlock(&r->lock);
			break;
		}
		if (r->colo_on) {
			/* COLO: forwarded frames, checkpoint requests and staged epochs, in order */
			pthread_mutex_unlock(&r->lock);
			rc = colo_sender_drain(r, w);
			if (rc < 0) {
				sender_error(r, "sending to the secondary", w, rc);
				break;
			}
			if (rc > 0) {
				account(r, w, &out);
				continue;
			}
			pthread_mutex_lock(&r->lock);
		}
		if (!r->job_pending || r->colo_on) {
			pthread_mutex_unlock(&r->lock);
			uint64_t now = now_ns();
			rc = r->colo_on ? colo_sender_heartbeat(r, w)
					: sr_write_record(w, REMUS_REC_HEARTBEAT, &now, sizeof(now));
			if (rc) {
				sender_error(r, "sending heartbeat", w, rc);
				break;
			}
			continue;
		}
		if (sender_send_epoch(r, w, &out))
			break;
		pthread_mutex_lock(&r->lock);
		bool stop = r->stop_sender;
		pthread_mutex_unlock(&r->lock);
		if (stop)
			break;
	}
	colo_sender_attach(r, NULL); /* no direct write after this */
	sender_close(r, w, epoch);
out:
	sr_ctx_free(w);
	return NULL;
}

/* ---- loop side ---------------------------------------------------------------------------------
 */

static void out_fn(void *opaque, int netidx, const void *frame, size_t len)
{
	vmm_net_output(opaque, netidx, frame, len);
}

static void tx_hook(void *opaque, int netidx, const void *frame, size_t len)
{
	struct remus *r = opaque;

	netbuf_hold(r->nb, netidx, frame, len);
}

static void pressure(void *opaque)
{
	remus_notify(opaque, RA_FORCE_EPOCH);
}

/* Still paused, the epoch staged: output from now on belongs to the next epoch. */
static int remus_commit(struct ckpt_engine *e, struct ckpt_epoch *ep, char *err, size_t errlen)
{
	struct remus *r = e->opaque;

	(void)err, (void)errlen;
	netbuf_mark(r->nb, ep->epoch);
	if (r->colo_on)
		colo_primary_captured(r); /* its output from here on waits for the SVM's ack */
	return 0;
}

static const struct ckpt_ops remus_ops = {
	.name = "remus",
	.log_flags = DIRTY_START_ALL,
	.keep_hot = true,
	.stage = true,
	.commit = remus_commit,
};

int remus_primary_log_from_now(struct remus *r, char *err, size_t errlen)
{
	int rc = r->eng_ready ? 0 : ckpt_engine_init(&r->eng, r->vm, &remus_ops, r);

	r->eng_ready = !rc;
	if (rc)
		return errf(err, errlen, rc, "out of memory");
	return ckpt_engine_start_flags(&r->eng, DIRTY_START_CLEAN, err, errlen);
}

/* One checkpoint: the engine's epoch (pause, sync, capture, stage the dirty pages, mark the output
 * boundary, resume), then hand the stage to the sender. */
int remus_checkpoint(struct remus *r, const uint64_t *merge, bool stay_paused)
{
	struct ckpt_epoch ep = {.epoch = r->next_epoch, .merge = merge, .stay_paused = stay_paused};
	char err[256];
	int rc;

	pthread_mutex_lock(&r->lock);
	bool busy = r->job_pending || !r->precopy_done;
	pthread_mutex_unlock(&r->lock);
	if (r->pstate != PS_SYNCING && r->pstate != PS_PROTECTED)
		return -1;
	if (busy) {
		r->skipped++;
		return -1;
	}
	/* The pause runs on this (the loop) thread: at real-time priority the sender, the host's
	 * other work and a local standby cannot stretch it. Only around the epoch (outside the
	 * pause): threads this thread creates later (migration, zstd, snapshot workers) must not
	 * inherit SCHED_FIFO. Best effort: needs CAP_SYS_NICE (probed at protect). */
	if (r->fifo_ok)
		pthread_setschedparam(pthread_self(), SCHED_FIFO, &(struct sched_param){.sched_priority = 1});
	rc = ckpt_engine_epoch(&r->eng, &ep, err, sizeof(err));
	if (r->fifo_ok)
		pthread_setschedparam(pthread_self(), SCHED_OTHER,
				      &(struct sched_param){.sched_priority = 0});
	if (rc == -ESHUTDOWN)
		return -1; /* the VM is stopping (doppel stop): the exit hook ends replication */
	if (rc) {
		remus_record_event(r, "error", ep.epoch, "checkpoint failed: %s", err);
		remus_primary_abandon(r, "checkpoint failed: %s", err);
		return -1;
	}
	uint64_t t1 = ep.t_pause + ep.pause_ns, e = ep.epoch;
	r->last_t_pause = ep.t_pause;
	hist_record(&r->pause_hist, ep.pause_ns);
	pthread_mutex_lock(&r->lock); /* the sender fills in send_us of earlier entries */
	r->tl[e % REMUS_TL] = (struct remus_tl){.epoch = e,
						.t_ns = t1,
						.pause_us = (uint32_t)(ep.pause_ns / 1000),
						.send_us = -1,
						.ack_us = -1};
	pthread_mutex_unlock(&r->lock);
	r->ph_kick = ep.ph.kick;
	r->ph_sync = ep.ph.sync;
	r->ph_capture = ep.ph.capture;
	r->ph_copy = ep.ph.copy;
	remus_ring_push(&r->ph_ring[REMUS_PH_PAUSE], ep.pause_ns);
	remus_ring_push(&r->ph_ring[REMUS_PH_KICK], ep.ph.kick);
	remus_ring_push(&r->ph_ring[REMUS_PH_SYNC], ep.ph.sync);
	remus_ring_push(&r->ph_ring[REMUS_PH_CAPTURE], ep.ph.capture);
	remus_ring_push(&r->ph_ring[REMUS_PH_COPY], ep.ph.copy);
	r->next_epoch = e + 1;
	remus_ring_push(&r->pause_ns, ep.pause_ns);
	r->cap_epoch[e % 64] = e;
	r->cap_ns[e % 64] = t1;
	r->epochs++;
	r->dirty_last = ep.pages;
	r->dirty_total += ep.pages;
	pthread_mutex_lock(&r->lock);
	r->job_pending = true;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->lock);
	return 0;
}

static void checkpoint(struct remus *r)
{
	(void)remus_checkpoint(r, NULL, false);
}

static void epoch_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop, (void)revents;
	checkpoint(w->data);
}

void remus_primary_acked(struct remus *r, uint64_t e, uint64_t now)
{
	if (r->pstate == PS_SYNCING && r->first_ckpt && e >= r->first_ckpt) {
		r->pstate = PS_PROTECTED;
		struct json_object *f = json_object_new_object();
		json_object_object_add(f, "peer", json_object_new_string(r->peer));
		json_object_object_add(f, "mode", json_object_new_string(r->colo_on ? "colo" : "remus"));
		json_object_object_add(f, "sync_ms",
				       json_object_new_double((double)(now - r->protect_start_ns) / 1e6));
		json_object_object_add(f, "precopy_rounds",
				       json_object_new_int64((int64_t)r->precopy_rounds));
		remus_event_fields(r, "protected", e, f, "first epoch acknowledged by %s", r->peer);
	}
	if (r->reply_conn && r->first_ckpt && e >= r->first_ckpt) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "role", json_object_new_string("primary"));
		json_object_object_add(o, "mode", json_object_new_string(r->colo_on ? "colo" : "remus"));
		json_object_object_add(o, "peer", json_object_new_string(r->peer));
		json_object_object_add(o, "epoch", json_object_new_int64((int64_t)e));
		json_object_object_add(o, "sync_ms",
				       json_object_new_double((double)(now - r->protect_start_ns) / 1e6));
		json_object_object_add(o, "precopy_rounds",
				       json_object_new_int64((int64_t)r->precopy_rounds));
		remus_finish_reply(&r->reply_conn, o);
	}
}

static void on_msg(void *opaque, const struct remus_msg *m)
{
	struct remus *r = opaque;
	uint64_t now = now_ns();

	r->last_rx_ns = now;
	if (m->type >= REMUS_MSG_DISK_SUMS && m->type <= REMUS_MSG_DISK_SUMS_END) {
		remus_disk_msg(r, m);
		return;
	}
	if (m->type == REMUS_MSG_ABANDONED) {
		remus_primary_abandoned(r, m->value);
		return;
	}
	if (m->type == REMUS_MSG_REJECT) {
		r->standby_rejected = true; /* it will not take over: its EOF follows */
		r->reject_reason = (uint32_t)m->value;
		return;
	}
	if (r->colo_on) {
		if (m->type == REMUS_MSG_RECORD)
			colo_primary_msg(r, m); /* COLO acks with CKPT_ACK, after the SVM resumed */
		return;
	}
	if (m->type != REMUS_MSG_ACK || m->value <= r->acked_epoch || m->value >= r->next_epoch)
		return;
	r->acked_epoch = m->value;
	if (!remus_witness_may_release(r))
		return; /* fenced: nothing more leaves */
	netbuf_release(r->nb, m->value);
	if (r->cap_epoch[m->value % 64] == m->value) {
		uint64_t t1 = r->cap_ns[m->value % 64];
		remus_ring_push(&r->ack_ns, now - t1);
		hist_record(&r->ack_hist, now - t1);
		pthread_mutex_lock(&r->lock);
		struct remus_sent sn = r->sent[m->value % 64];
		if (r->tl[m->value % REMUS_TL].epoch == m->value)
			r->tl[m->value % REMUS_TL].ack_us = (int32_t)((now - t1) / 1000);
		pthread_mutex_unlock(&r->lock);
		if (sn.epoch == m->value && sn.t_start >= t1 && sn.t_end <= now) {
			remus_ring_push(&r->ph_ring[REMUS_PH_QUEUE], sn.t_start - t1);
			remus_ring_push(&r->ph_ring[REMUS_PH_ENCODE], sn.t_end - sn.t_start - sn.send_ns);
			remus_ring_push(&r->ph_ring[REMUS_PH_SEND], sn.send_ns);
			remus_ring_push(&r->ph_ring[REMUS_PH_ACK_WAIT], now - sn.t_end);
			remus_ring_push(&r->ph_ring[REMUS_PH_ACK], now - t1);
		}
	}
	remus_primary_acked(r, m->value, now);
}

/* Read everything the standby sent. Returns false when the session ended (EOF, error, ABANDONED). */
static bool drain_rx(struct remus *r)
{
	uint8_t buf[4096];
	ssize_t n;

	for (;;) {
		n = recv(r->fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n > 0) {
			if (remus_msgbuf_feed(&r->mb, buf, (size_t)n, on_msg, r) < 0) {
				remus_primary_lost(r, "bad message from the standby");
				return false;
			}
			if (r->role != REMUS_PRIMARY)
				return false;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return true;
		remus_primary_lost(r, "standby closed the connection%s%s", n ? ": " : "",
				   n ? strerror(errno) : "");
		return false;
	}
}

static void rx_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop, (void)revents;
	drain_rx(w->data);
}

static void live_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct remus *r = w->data;

	(void)loop, (void)revents;
	/* libev runs expired timers before I/O in one iteration: after a stall of this loop the
	 * standby's heartbeats may sit unread in the socket. Read them before judging silence. */
	if (!drain_rx(r))
		return;
	uint64_t silent = now_ns() - r->last_rx_ns;
	if (silent > (uint64_t)r->hb_timeout_ms * 1000000ull)
		remus_primary_lost(r, "standby silent for %llu ms (timeout %u ms)",
				   (unsigned long long)(silent / 1000000), r->hb_timeout_ms);
}

void remus_primary_async(struct remus *r, unsigned flags)
{
	if (r->role != REMUS_PRIMARY)
		return;
	if (flags & RA_SENDER_FAILED) {
		char e[256];
		/* A standby that refused this VM closes while the sender writes: its REJECT, already
		 * received, decides (drain_rx ends the session on the EOF or reset behind it). */
		if (!drain_rx(r))
			return;
		pthread_mutex_lock(&r->lock);
		snprintf(e, sizeof(e), "%s", r->sender_err);
		pthread_mutex_unlock(&r->lock);
		remus_primary_lost(r, "%s", e);
		return;
	}
	if ((flags & RA_PRECOPY_DONE) && r->pstate == PS_SYNCING && r->colo_on) {
		colo_primary_precopy_done(r);
		return;
	}
	if (flags & RA_COLO) {
		if (r->colo_on)
			colo_primary_async(r);
		return;
	}
	if ((flags & RA_PRECOPY_DONE) && r->pstate == PS_SYNCING) {
		ev_timer_set(&r->epoch_w, 0, (double)r->interval_ms / 1e3);
		ev_timer_again(r->loop, &r->epoch_w);
		checkpoint(r);
	}
	if ((flags & RA_FORCE_EPOCH) && r->colo_on && r->colo) {
		/* the disk write log filled up: a checkpoint now, as for the comparator's queue bound */
		__atomic_or_fetch(&r->colo->diverged, 1u << COLO_CMP_QUEUE, __ATOMIC_ACQ_REL);
		colo_primary_async(r);
		return;
	}
	if (flags & RA_FORCE_EPOCH) {
		r->forced++;
		checkpoint(r);
		/* at most one event a second, with the count since the last one */
		uint64_t now = now_ns();
		if (now - r->forced_ev_ns >= 1000000000ull) {
			struct json_object *f = json_object_new_object();
			json_object_object_add(
				f, "count", json_object_new_int64((int64_t)(r->forced - r->forced_reported)));
			remus_event_fields(r, "epochs-forced", r->next_epoch - 1, f,
					   "held output filled the buffer: epochs taken early");
			r->forced_reported = r->forced;
			r->forced_ev_ns = now;
		}
	}
}

/* protect (remus_protect.c), after the connect: output buffering, the checkpoint engine (dirty
 * logging; resume_req: the engine logs since a switch point, RAM is equal), disk replication and the
 * sender's buffer. 0 or -errno with err. */
int remus_primary_prepare(struct remus *r, bool resume_req, char *err, size_t errlen)
{
	int rc;

	if (!r->nb) {
		if (netbuf_new(&r->nb, 0, 0, out_fn, r->v))
			return errf(err, errlen, -ENOMEM, "out of memory");
		netbuf_set_pressure_cb(r->nb, pressure, r);
	}
	rc = r->eng_ready ? 0 : ckpt_engine_init(&r->eng, r->vm, &remus_ops, r);
	r->eng_ready = !rc;
	if (rc)
		return errf(err, errlen, rc, "cannot start dirty logging: out of memory");
	r->resume = r->eng.log && resume_req;
	rc = remus_disk_protect(r);
	if (rc)
		return errf(err, errlen, rc, "cannot set up disk replication: %s", strerror(-rc));
	char e2[200];
	rc = ckpt_engine_start(&r->eng, e2, sizeof(e2));
	if (rc)
		return errf(err, errlen, rc, "cannot start dirty logging: %s", e2);
	/* The sender's buffer (swapped with the engine's stage per epoch): grown like the stage and
	 * touched now, so the first epochs after a swap do not fault it in inside the pause. */
	if (!r->tx.cap) {
		if (ckpt_stage_reserve(&r->tx, r->eng.stage.cap)) {
			ckpt_engine_stop(&r->eng);
			return errf(err, errlen, -ENOMEM, "out of memory");
		}
		memset(r->tx.data, 0, r->tx.cap * GUEST_PAGE_SIZE);
	}
	return 0;
}

/* protect, last step: the session runs on fd (non-blocking from here): acks and heartbeats read
 * on the loop, output held unless COLO (it compares instead), the sender thread started. 0, or -1
 * when the sender could not start (the session is abandoned). */
int remus_primary_arm(struct remus *r, int fd)
{
	int rc;

	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	if (!r->colo_on) {
		netbuf_begin(r->nb);
		vmm_set_tx_hook(r->v, tx_hook, r);
	}
	ev_init(&r->epoch_w, epoch_cb);
	r->epoch_w.data = r;
	ev_io_init(&r->rx_w, rx_cb, fd, EV_READ);
	r->rx_w.data = r;
	ev_io_start(r->loop, &r->rx_w);
	ev_timer_init(&r->live_w, live_cb, (double)r->hb_timeout_ms / 4e3, (double)r->hb_timeout_ms / 4e3);
	r->live_w.data = r;
	ev_timer_start(r->loop, &r->live_w);
	rc = pthread_create(&r->sender, NULL, sender_main, r);
	if (rc) {
		/* nothing was sent: the standby sees no hello and ignores the connection */
		remus_primary_abandon(r, "cannot start the sender thread: %s", strerror(rc));
		return -1;
	}
	r->sender_running = true;
	return 0;
}
