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

static void *sender_main(void *arg)
{
	struct remus *r = arg;
	struct sr_out out;
	struct sr_ctx *w = NULL;
	struct sr_header h;
	uint8_t hello[REMUS_MSG_SIZE];
	uint64_t epoch, hb_ns = (uint64_t)r->hb_timeout_ms * 1000000ull / 4;
	int rc;

	pthread_setname_np(pthread_self(), "remus-send");
	sr_out_fd(&out, r->fd, SEND_TIMEOUT_MS);
	remus_msg_encode(hello, REMUS_MSG_HELLO,
			 remus_hello_value(r->interval_ms, r->hb_timeout_ms) |
				 (r->colo_on ? REMUS_HELLO_COLO : 0));
	rc = sr_out_write(&out, hello, sizeof(hello));
	if (rc) {
		sender_error(r, "sending hello", NULL, rc);
		return NULL;
	}
	rc = sr_writer_new(&w, &out, true, 1);
	/* Not with COLO: a delta is XORed against the page the standby last received, and a running
	 * secondary rewrites its pages between checkpoints. */
	if (!rc && r->delta && !r->colo_on)
		rc = sr_set_delta(w, r->delta); /* empties it: this stream's standby starts from nothing */
	if (rc) {
		sender_error(r, "stream writer", NULL, rc);
		return NULL;
	}
	sr_header_from_mem(&h, vm_mem(r->vm), (uint32_t)vm_nr_vcpus(r->vm));
	pthread_mutex_lock(&r->lock);
	epoch = r->next_epoch;
	pthread_mutex_unlock(&r->lock);
	rc = sr_write_header(w, &h);
	if (rc) {
		sender_error(r, "live full copy", w, rc);
		goto out;
	}
	/* Disks: the blocks that differ from the standby's, then memory, then what was written meanwhile. */
	char derr[256];
	rc = remus_disk_sync(r, w, &epoch, false, derr, sizeof(derr));
	if (!rc && !r->resume && (rc = precopy(r, w, &out, &epoch))) { /* resume: RAM equal */
		sender_error(r, "live full copy", w, rc);
		goto out;
	}
	if (!rc)
		rc = remus_disk_sync(r, w, &epoch, true, derr, sizeof(derr));
	if (rc) {
		pthread_mutex_lock(&r->lock);
		snprintf(r->sender_err, sizeof(r->sender_err), "%s", derr);
		pthread_mutex_unlock(&r->lock);
		remus_notify(r, RA_SENDER_FAILED);
		goto out;
	}
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
		uint64_t t0;

		pthread_mutex_lock(&r->lock);
		if (!r->job_pending && !r->stop_sender && !colo_sender_pending(r)) {
			struct timespec ts; /* r->cond waits on CLOCK_MONOTONIC (remus_setup) */
			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_nsec += (long)hb_ns;
			ts.tv_sec += ts.tv_nsec / 1000000000L;
			ts.tv_nsec %= 1000000000L;
			pthread_cond_timedwait(&r->cond, &r->lock, &ts);
		}
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
		/* Take the staged epoch: its buffers become ours (r->tx) and ours go back to the engine,
		 * so the loop can capture the next epoch while this one is sent (the loop touches
		 * eng.stage only while job_pending is false). Ours first grow to the stage's size
		 * (unlocked: job_pending holds the loop off eng.stage), so the pause that fills them
		 * neither allocates nor faults. */
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
		struct sr_stats s0, s1;
		sr_stats(w, &s0);
		t0 = now_ns();
		rc = ckpt_stage_write(w, &r->tx);
		if (rc) {
			sender_error(r, "sending epoch", w, rc);
			break;
		}
		uint64_t t1 = now_ns();
		sr_stats(w, &s1);
		account(r, w, &out);
		pthread_mutex_lock(&r->lock);
		r->sent[r->tx.epoch % 64] = (struct remus_sent){.epoch = r->tx.epoch,
								.t_start = t0,
								.t_end = t1,
								.send_ns = s1.write_ns - s0.write_ns};
		r->send_ns_last = t1 - t0;
		r->last_sent_epoch = r->tx.epoch;
		hist_record(&r->send_hist, r->send_ns_last);
		if (r->tl[r->last_sent_epoch % REMUS_TL].epoch == r->last_sent_epoch)
			r->tl[r->last_sent_epoch % REMUS_TL].send_us = (int32_t)(r->send_ns_last / 1000);
		bool stop = r->stop_sender;
		pthread_mutex_unlock(&r->lock);
		if (stop)
			break;
	}
	colo_sender_attach(r, NULL); /* no direct write after this */
	pthread_mutex_lock(&r->lock);
	bool clean = r->stop_sender && !*r->sender_err;
	uint64_t last = r->last_sent_epoch > epoch ? r->last_sent_epoch : epoch;
	pthread_mutex_unlock(&r->lock);
	if (clean) {
		/* ABANDON (unprotect, stop, a local error): the stream's END tells the standby that
		 * replication ended on purpose; it stays held and answers ABANDONED. END must follow
		 * a CHECKPOINT_END: close any heartbeat-only epoch with an empty one (no pages, no
		 * state). */
		if (sr_write_end(w))
			if (!sr_write_checkpoint_end(w, last + 1))
				sr_write_end(w);
	}
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

static int get_ms(struct json_object *req, const char *key, uint32_t def, uint32_t lo, uint32_t hi,
		  uint32_t *out)
{
	struct json_object *j;

	*out = def;
	if (!json_object_object_get_ex(req, key, &j))
		return 0;
	if (!json_object_is_type(j, json_type_int))
		return -EINVAL;
	int64_t x = json_object_get_int64(j);
	if (x < lo || x > hi)
		return -EINVAL;
	*out = (uint32_t)x;
	return 0;
}

/* protect's COLO arguments: "mode", "checkpoint_interval_ms", "compare_timeout_ms". NULL when
 * fine, else the error reply. */
static struct json_object *colo_args(struct remus *r, struct json_object *req, bool *colo, uint32_t *civ,
				     uint32_t *cto)
{
	struct json_object *j;

	if (json_object_object_get_ex(req, "mode", &j)) {
		const char *m = json_object_is_type(j, json_type_string) ? json_object_get_string(j) : "";
		if (strcmp(m, "remus") && strcmp(m, "colo"))
			return ctl_error("bad mode (remus or colo)");
		*colo = !strcmp(m, "colo");
	}
	if (!*colo)
		return NULL;
	if (get_ms(req, "checkpoint_interval_ms", COLO_DEFAULT_INTERVAL_MS, REMUS_MIN_INTERVAL_MS,
		   REMUS_MAX_INTERVAL_MS, civ))
		return ctl_error("bad checkpoint_interval_ms (%u..%u)", REMUS_MIN_INTERVAL_MS,
				 REMUS_MAX_INTERVAL_MS);
	if (get_ms(req, "compare_timeout_ms", 100, 1, 60000, cto))
		return ctl_error("bad compare_timeout_ms (1..60000)");
	if (!vmm_net_count(r->v))
		return ctl_error("--mode colo needs a network device (--net): it compares output");
	return NULL;
}

static void protect_start_event(struct remus *r)
{
	struct json_object *f = json_object_new_object();

	json_object_object_add(f, "peer", json_object_new_string(r->peer));
	json_object_object_add(f, "interval_ms", json_object_new_int((int)r->interval_ms));
	json_object_object_add(f, "heartbeat_timeout_ms", json_object_new_int((int)r->hb_timeout_ms));
	json_object_object_add(f, "standby_lost",
			       json_object_new_string(remus_lost_policy_name(r->lost_policy)));
	remus_event_fields(r, "protect-start", r->next_epoch - 1, f, "protecting to %s", r->peer);
}

/* Optional string field of a request: 0 (absent: *out NULL, or a string), -EINVAL (not a string). */
static int get_str(struct json_object *req, const char *key, const char **out)
{
	struct json_object *j;

	*out = NULL;
	if (!json_object_object_get_ex(req, key, &j))
		return 0;
	if (!json_object_is_type(j, json_type_string))
		return -EINVAL;
	*out = json_object_get_string(j);
	return 0;
}

/* Connect to the standby within timeout_ms; with "tls_dir" in the request, TLS 1.3 with mutual
 * authentication within the same bound (the handshake runs here, on the loop, like the connect).
 * Returns the descriptor the engine uses (the TLS relay's end with TLS) or -errno with err. */
static int protect_connect(struct remus *r, struct json_object *req, const char *peer, int timeout_ms,
			   char *err, size_t errlen)
{
	const char *dir, *name;
	struct tls_cfg *tc = NULL;
	char e2[256], id[TLS_ID_MAX];
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ull;
	int fd, rc;

	if (get_str(req, "tls_dir", &dir) || get_str(req, "tls_peer_name", &name))
		return errf(err, errlen, -EINVAL, "tls_dir and tls_peer_name must be strings");
	if (name && !dir)
		return errf(err, errlen, -EINVAL, "--tls-peer-name needs --tls-dir");
	if (dir && (rc = tls_cfg_load(&tc, dir, name, err, errlen)))
		return rc;
	fd = sock_connect(peer, timeout_ms, err, errlen);
	if (fd < 0) {
		tls_cfg_free(tc);
		return fd;
	}
	if (tc) {
		rc = tls_wrap(tc, false, &fd, deadline, id, sizeof(id), e2, sizeof(e2));
		if (rc) {
			if (fd >= 0)
				close(fd);
			tls_cfg_free(tc);
			return errf(err, errlen, rc, "standby %s: %s", peer, e2);
		}
		log_info("remus", vmm_name(r->v), "replication to %s over TLS 1.3 (peer certificate %s)",
			 peer, id);
	} else {
		log_warn("remus", vmm_name(r->v),
			 "replication to %s is plaintext and unauthenticated (no --tls-dir)", peer);
	}
	tls_cfg_free(r->tls);
	r->tls = tc;
	return fd;
}

struct json_object *remus_cmd_protect(struct remus *r, struct json_object *req)
{
	struct json_object *j;
	char err[256];
	int rc, fd;

	if (r->role == REMUS_STANDBY)
		return ctl_refused("%s is a standby; protect its primary instead", vmm_name(r->v));
	if (r->role == REMUS_PRIMARY)
		return ctl_refused("%s is already protected (peer %s)", vmm_name(r->v), r->peer);
	if (r->pstate == PS_FENCED)
		return ctl_refused("%s is fenced (another copy may be live): stop it", vmm_name(r->v));
	if (vmm_held(r->v) || vm_get_state(r->vm) != VM_RUNNING)
		return ctl_refused("%s is not running (%s)", vmm_name(r->v),
				   vm_state_name(vm_get_state(r->vm)));
	if (!json_object_object_get_ex(req, "peer", &j) || !json_object_is_type(j, json_type_string))
		return ctl_error("protect needs a \"peer\" string (ADDR:PORT)");
	const char *peer = json_object_get_string(j);
	if (strlen(peer) >= sizeof(r->peer))
		return ctl_error("peer address too long");
	enum remus_lost_policy lp = LOST_RELEASE;
	if (json_object_object_get_ex(req, "standby_lost", &j)) {
		const char *x = json_object_is_type(j, json_type_string) ? json_object_get_string(j) : "";
		if (remus_lost_policy_parse(x, &lp))
			return ctl_error("bad standby_lost (release, hold or fence)");
	}
	uint32_t grace, wttl, hold;
	if (get_ms(req, "fence_grace_ms", 5000, 0, 3600000, &grace))
		return ctl_error("bad fence_grace_ms (0..3600000)");
	if (remus_switch_protect_opts(r, req, err, sizeof(err)))
		return ctl_error("%s", err);
	if (get_ms(req, "hold_timeout_ms", 0, 0, 86400000, &hold))
		return ctl_error("bad hold_timeout_ms (0..86400000)");
	if (get_ms(req, "witness_ttl_ms", 1000, 100, 600000, &wttl))
		return ctl_error("bad witness_ttl_ms (100..600000)");
	if (json_object_object_get_ex(req, "witness", &j) && !r->wit) {
		struct json_object *wn = NULL;
		json_object_object_get_ex(req, "witness_name", &wn);
		if (!json_object_is_type(j, json_type_string) ||
		    remus_witness_config(r, json_object_get_string(j), wn ? json_object_get_string(wn) : NULL,
					 wttl, err, sizeof(err)))
			return ctl_error("bad witness: %s",
					 json_object_is_type(j, json_type_string) ? err : "not a string");
	}
	/* The key first: refuse to protect a copy that is not (or no longer) the active one. */
	if (remus_witness_primary_start(r, err, sizeof(err)))
		return ctl_error("%s", err);
	uint64_t dcache = SR_DELTA_DEFAULT;
	if (json_object_object_get_ex(req, "delta_cache", &j)) {
		if (!json_object_is_type(j, json_type_int) || json_object_get_int64(j) < 0 ||
		    (uint64_t)json_object_get_int64(j) > SR_DELTA_MAX)
			return ctl_error("bad delta_cache (bytes, 0..%llu; 0 = no delta encoding)",
					 (unsigned long long)SR_DELTA_MAX);
		dcache = (uint64_t)json_object_get_int64(j);
	}
	if (dcache != r->delta_bytes || (dcache && !r->delta)) {
		sr_delta_free(r->delta); /* the sender is not running: nobody else holds it */
		r->delta = NULL;
		r->delta_bytes = 0;
		if (dcache && sr_delta_new(&r->delta, dcache))
			return ctl_error("out of memory for a %llu-byte delta cache",
					 (unsigned long long)dcache);
		r->delta_bytes = dcache;
	}
	uint32_t iv, to;
	if (get_ms(req, "interval_ms", 25, REMUS_MIN_INTERVAL_MS, REMUS_MAX_INTERVAL_MS, &iv))
		return ctl_error("bad interval_ms (%u..%u)", REMUS_MIN_INTERVAL_MS, REMUS_MAX_INTERVAL_MS);
	if (get_ms(req, "heartbeat_timeout_ms", 200, REMUS_MIN_TIMEOUT_MS, REMUS_MAX_TIMEOUT_MS, &to))
		return ctl_error("bad heartbeat_timeout_ms (%u..%u)", REMUS_MIN_TIMEOUT_MS,
				 REMUS_MAX_TIMEOUT_MS);
	bool colo = false;
	uint32_t civ = COLO_DEFAULT_INTERVAL_MS, cto = 0;
	struct json_object *bad = colo_args(r, req, &colo, &civ, &cto);
	if (bad)
		return bad;
	fd = protect_connect(r, req, peer, to > 2000 ? (int)to : 2000, err, sizeof(err));
	if (fd < 0)
		return ctl_error("%s", err);
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	if (!r->nb) {
		rc = netbuf_new(&r->nb, 0, 0, out_fn, r->v);
		if (rc) {
			close(fd);
			return ctl_error("out of memory");
		}
		netbuf_set_pressure_cb(r->nb, pressure, r);
	}
	rc = r->eng_ready ? 0 : ckpt_engine_init(&r->eng, r->vm, &remus_ops, r);
	r->eng_ready = !rc;
	r->resume = r->eng.log && remus_switch_resume(req); /* logging since the switch point */
	if (!rc && (rc = remus_disk_protect(r))) {
		close(fd);
		return ctl_error("cannot set up disk replication: %s", strerror(-rc));
	}
	if (!rc)
		rc = ckpt_engine_start(&r->eng, err, sizeof(err));
	if (rc) {
		close(fd);
		return ctl_error("cannot start dirty logging: %s", r->eng_ready ? err : "out of memory");
	}
	/* The sender's buffer (swapped with the engine's stage per epoch): grown like the stage and
	 * touched now, so the first epochs after a swap do not fault it in inside the pause. */
	if (!r->tx.cap) {
		if (ckpt_stage_reserve(&r->tx, r->eng.stage.cap)) {
			ckpt_engine_stop(&r->eng);
			close(fd);
			return ctl_error("out of memory");
		}
		memset(r->tx.data, 0, r->tx.cap * GUEST_PAGE_SIZE);
	}
	if (colo && colo_primary_start(r, civ, cto, err, sizeof(err))) {
		ckpt_engine_stop(&r->eng);
		close(fd);
		return ctl_error("%s", err);
	}
	r->colo_on = colo;
	snprintf(r->peer, sizeof(r->peer), "%s", peer);
	pthread_mutex_lock(&r->lock); /* metrics count bytes across sessions */
	r->raw_base += r->bytes_raw;
	r->wire_base += r->bytes_wire;
	r->bytes_raw = r->bytes_wire = 0;
	pthread_mutex_unlock(&r->lock);
	r->interval_ms = colo ? civ : iv;
	r->hb_timeout_ms = to;
	r->lost_policy = lp;
	r->fence_grace_ms = grace;
	r->hold_timeout_ms = hold;
	ev_timer_stop(r->loop, &r->hold_w);
	r->standby_rejected = false;
	r->reject_reason = 0;
	r->pstate = PS_SYNCING;
	r->fd = fd;
	r->mb.n = 0;
	r->stop_sender = r->job_pending = r->precopy_done = false;
	r->sender_err[0] = 0;
	r->first_ckpt = 0;
	r->acked_epoch = r->last_sent_epoch = 0;
	r->last_error[0] = 0;
	r->last_rx_ns = r->protect_start_ns = now_ns();
	r->role = REMUS_PRIMARY;
	if (!colo) {
		netbuf_begin(r->nb);
		vmm_set_tx_hook(r->v, tx_hook, r);
	}
	ev_init(&r->epoch_w, epoch_cb);
	r->epoch_w.data = r;
	ev_io_init(&r->rx_w, rx_cb, fd, EV_READ);
	r->rx_w.data = r;
	ev_io_start(r->loop, &r->rx_w);
	ev_timer_init(&r->live_w, live_cb, (double)to / 4e3, (double)to / 4e3);
	r->live_w.data = r;
	ev_timer_start(r->loop, &r->live_w);
	rc = pthread_create(&r->sender, NULL, sender_main, r);
	if (rc) {
		/* nothing was sent: the standby sees no hello and ignores the connection */
		remus_primary_abandon(r, "cannot start the sender thread: %s", strerror(rc));
		return ctl_error("cannot start the sender thread");
	}
	r->sender_running = true;
	protect_start_event(r);
	/* May this thread go SCHED_FIFO around epochs (checkpoint)? Probe once, then back. */
	int pol;
	struct sched_param sp;
	if (!pthread_getschedparam(pthread_self(), &pol, &sp) && pol == SCHED_OTHER)
		r->fifo_ok = !pthread_setschedparam(pthread_self(), SCHED_FIFO,
						    &(struct sched_param){.sched_priority = 1}) &&
			     !pthread_setschedparam(pthread_self(), SCHED_OTHER, &sp);
	r->reply_conn = vmm_ctl_current(r->v);
	return r->reply_conn ? CTL_DEFER : json_object_new_object();
}

void remus_primary_status(struct remus *r, struct json_object *o)
{
	struct json_object *p = json_object_new_object(), *d = json_object_new_object();
	struct json_object *b = json_object_new_object(), *a = json_object_new_object();
	struct json_object *h = json_object_new_object();
	struct netbuf_stats ns = {0};

	if (r->role == REMUS_STANDBY)
		return;
	pthread_mutex_lock(&r->lock);
	uint64_t raw = r->bytes_raw, wire = r->bytes_wire, send_ns = r->send_ns_last;
	pthread_mutex_unlock(&r->lock);
	json_object_object_add(o, "state", json_object_new_string(remus_pstate_name(r->pstate)));
	json_object_object_add(o, "standby_lost",
			       json_object_new_string(remus_lost_policy_name(r->lost_policy)));
	/* Without a witness a partition can leave two copies running: this primary releasing output
	 * after losing the standby while the standby (auto failover) takes over. */
	json_object_object_add(o, "split_brain_possible",
			       json_object_new_boolean(r->lost_policy == LOST_RELEASE && !r->wit));
	json_object_object_add(o, "epoch", json_object_new_int64((int64_t)(r->next_epoch - 1)));
	json_object_object_add(o, "acked_epoch", json_object_new_int64((int64_t)r->acked_epoch));
	json_object_object_add(o, "epochs", json_object_new_int64((int64_t)r->epochs));
	json_object_object_add(o, "epochs_skipped", json_object_new_int64((int64_t)r->skipped));
	json_object_object_add(o, "epochs_forced", json_object_new_int64((int64_t)r->forced));
	json_object_object_add(o, "precopy_rounds", json_object_new_int64((int64_t)r->precopy_rounds));
	json_object_object_add(
		p, "last_us",
		json_object_new_double(
			r->pause_ns.n ? (double)r->pause_ns.v[(r->pause_ns.n - 1) % REMUS_RING] / 1e3 : 0));
	json_object_object_add(p, "p50_us",
			       json_object_new_double((double)remus_ring_pct(&r->pause_ns, 0.5) / 1e3));
	json_object_object_add(p, "p99_us",
			       json_object_new_double((double)remus_ring_pct(&r->pause_ns, 0.99) / 1e3));
	struct json_object *ph = json_object_new_object();
	json_object_object_add(ph, "kick_us", json_object_new_double((double)r->ph_kick / 1e3));
	json_object_object_add(ph, "sync_us", json_object_new_double((double)r->ph_sync / 1e3));
	json_object_object_add(ph, "capture_us", json_object_new_double((double)r->ph_capture / 1e3));
	json_object_object_add(ph, "copy_us", json_object_new_double((double)r->ph_copy / 1e3));
	json_object_object_add(p, "last_phases", ph);
	json_object_object_add(o, "pause", p);
	json_object_object_add(d, "last", json_object_new_int64((int64_t)r->dirty_last));
	json_object_object_add(
		d, "avg", json_object_new_double(r->epochs ? (double)r->dirty_total / (double)r->epochs : 0));
	json_object_object_add(d, "hot", json_object_new_int64((int64_t)r->eng.hot_pages));
	json_object_object_add(o, "dirty_pages", d);
	json_object_object_add(b, "raw", json_object_new_int64((int64_t)raw));
	json_object_object_add(b, "wire", json_object_new_int64((int64_t)wire));
	json_object_object_add(b, "last_send_ms", json_object_new_double((double)send_ns / 1e6));
	json_object_object_add(o, "bytes", b);
	json_object_object_add(
		a, "last_ms",
		json_object_new_double(r->ack_ns.n ? (double)r->ack_ns.v[(r->ack_ns.n - 1) % REMUS_RING] / 1e6
						   : 0));
	json_object_object_add(a, "p50_ms",
			       json_object_new_double((double)remus_ring_pct(&r->ack_ns, 0.5) / 1e6));
	json_object_object_add(a, "p99_ms",
			       json_object_new_double((double)remus_ring_pct(&r->ack_ns, 0.99) / 1e6));
	json_object_object_add(o, "ack_latency", a);
	if (r->nb)
		netbuf_get_stats(r->nb, &ns);
	json_object_object_add(h, "frames", json_object_new_int64((int64_t)ns.held_frames));
	json_object_object_add(h, "bytes", json_object_new_int64((int64_t)ns.held_bytes));
	json_object_object_add(h, "released_frames", json_object_new_int64((int64_t)ns.released_frames));
	json_object_object_add(h, "dropped", json_object_new_int64((int64_t)ns.dropped));
	json_object_object_add(o, "held_output", h);
	remus_phases_status(r, o);
}
