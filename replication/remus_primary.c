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

#include "replication/remus_priv.h"
#include "replication/sock.h"
#include "vmm/vmm.h"
#include "common/clock.h"
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

	sr_out_fd(&out, r->fd, SEND_TIMEOUT_MS);
	remus_msg_encode(hello, REMUS_MSG_HELLO, remus_hello_value(r->interval_ms, r->hb_timeout_ms));
	rc = sr_out_write(&out, hello, sizeof(hello));
	if (rc) {
		sender_error(r, "sending hello", NULL, rc);
		return NULL;
	}
	rc = sr_writer_new(&w, &out, true, 1);
	if (rc) {
		sender_error(r, "stream writer", NULL, rc);
		return NULL;
	}
	sr_header_from_mem(&h, vm_mem(r->vm), (uint32_t)vm_nr_vcpus(r->vm));
	pthread_mutex_lock(&r->lock);
	epoch = r->next_epoch;
	pthread_mutex_unlock(&r->lock);
	rc = sr_write_header(w, &h);
	if (!rc)
		rc = precopy(r, w, &out, &epoch);
	if (rc) {
		sender_error(r, "live full copy", w, rc);
		goto out;
	}
	account(r, w, &out);
	pthread_mutex_lock(&r->lock);
	r->next_epoch = epoch; /* the loop starts numbering checkpoints here */
	r->first_ckpt = epoch;
	r->precopy_done = true;
	pthread_mutex_unlock(&r->lock);
	remus_notify(r, RA_PRECOPY_DONE);

	for (;;) {
		uint64_t t0;

		pthread_mutex_lock(&r->lock);
		if (!r->job_pending && !r->stop_sender) {
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
		if (!r->job_pending) {
			pthread_mutex_unlock(&r->lock);
			uint64_t now = now_ns();
			rc = sr_write_record(w, REMUS_REC_HEARTBEAT, &now, sizeof(now));
			if (rc) {
				sender_error(r, "sending heartbeat", w, rc);
				break;
			}
			continue;
		}
		pthread_mutex_unlock(&r->lock);
		/* The staged epoch is ours until job_pending is cleared. */
		t0 = now_ns();
		rc = ckpt_stage_write(w, &r->eng.stage);
		if (rc) {
			sender_error(r, "sending epoch", w, rc);
			break;
		}
		account(r, w, &out);
		pthread_mutex_lock(&r->lock);
		r->send_ns_last = now_ns() - t0;
		r->last_sent_epoch = r->eng.stage.epoch;
		r->job_pending = false;
		bool stop = r->stop_sender;
		pthread_mutex_unlock(&r->lock);
		if (stop)
			break;
	}
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
	return 0;
}

static const struct ckpt_ops remus_ops = {
	.name = "remus",
	.log_flags = DIRTY_START_ALL,
	.keep_hot = true,
	.stage = true,
	.commit = remus_commit,
};

/* One checkpoint: the engine's epoch (pause, sync, capture, stage the dirty pages, mark the output
 * boundary, resume), then hand the stage to the sender. */
static void checkpoint(struct remus *r)
{
	struct ckpt_epoch ep = {.epoch = r->next_epoch};
	char err[256];
	int rc;

	pthread_mutex_lock(&r->lock);
	bool busy = r->job_pending || !r->precopy_done;
	pthread_mutex_unlock(&r->lock);
	if (r->pstate != PS_SYNCING && r->pstate != PS_PROTECTED)
		return;
	if (busy) {
		r->skipped++;
		return;
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
		return; /* the VM is stopping (doppel stop): the exit hook ends replication */
	if (rc) {
		remus_primary_abandon(r, "checkpoint failed: %s", err);
		return;
	}
	uint64_t t1 = ep.t_pause + ep.pause_ns, e = ep.epoch;
	r->ph_kick = ep.ph.kick;
	r->ph_sync = ep.ph.sync;
	r->ph_capture = ep.ph.capture;
	r->ph_copy = ep.ph.copy;
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
}

static void epoch_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop, (void)revents;
	checkpoint(w->data);
}

static void on_msg(void *opaque, const struct remus_msg *m)
{
	struct remus *r = opaque;
	uint64_t now = now_ns();

	r->last_rx_ns = now;
	if (m->type == REMUS_MSG_ABANDONED) {
		remus_primary_abandoned(r, m->value);
		return;
	}
	if (m->type == REMUS_MSG_REJECT) {
		r->standby_rejected = true; /* it will not take over: its EOF follows */
		r->reject_reason = (uint32_t)m->value;
		return;
	}
	if (m->type != REMUS_MSG_ACK || m->value <= r->acked_epoch || m->value >= r->next_epoch)
		return;
	r->acked_epoch = m->value;
	if (!remus_witness_may_release(r))
		return; /* fenced: nothing more leaves */
	netbuf_release(r->nb, m->value);
	if (r->cap_epoch[m->value % 64] == m->value)
		remus_ring_push(&r->ack_ns, now - r->cap_ns[m->value % 64]);
	if (r->pstate == PS_SYNCING && r->first_ckpt && m->value >= r->first_ckpt)
		r->pstate = PS_PROTECTED;
	if (r->reply_conn && r->first_ckpt && m->value >= r->first_ckpt) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "role", json_object_new_string("primary"));
		json_object_object_add(o, "peer", json_object_new_string(r->peer));
		json_object_object_add(o, "epoch", json_object_new_int64((int64_t)m->value));
		json_object_object_add(o, "sync_ms",
				       json_object_new_double((double)(now - r->protect_start_ns) / 1e6));
		json_object_object_add(o, "precopy_rounds",
				       json_object_new_int64((int64_t)r->precopy_rounds));
		remus_finish_reply(&r->reply_conn, o);
	}
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
		pthread_mutex_lock(&r->lock);
		snprintf(e, sizeof(e), "%s", r->sender_err);
		pthread_mutex_unlock(&r->lock);
		remus_primary_lost(r, "%s", e);
		return;
	}
	if ((flags & RA_PRECOPY_DONE) && r->pstate == PS_SYNCING) {
		ev_timer_set(&r->epoch_w, 0, (double)r->interval_ms / 1e3);
		ev_timer_again(r->loop, &r->epoch_w);
		checkpoint(r);
	}
	if (flags & RA_FORCE_EPOCH) {
		r->forced++;
		checkpoint(r);
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
	uint32_t iv, to;
	if (get_ms(req, "interval_ms", 25, REMUS_MIN_INTERVAL_MS, REMUS_MAX_INTERVAL_MS, &iv))
		return ctl_error("bad interval_ms (%u..%u)", REMUS_MIN_INTERVAL_MS, REMUS_MAX_INTERVAL_MS);
	if (get_ms(req, "heartbeat_timeout_ms", 200, REMUS_MIN_TIMEOUT_MS, REMUS_MAX_TIMEOUT_MS, &to))
		return ctl_error("bad heartbeat_timeout_ms (%u..%u)", REMUS_MIN_TIMEOUT_MS,
				 REMUS_MAX_TIMEOUT_MS);
	fd = sock_connect(peer, to > 2000 ? (int)to : 2000, err, sizeof(err));
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
	if (!rc)
		rc = ckpt_engine_start(&r->eng, err, sizeof(err));
	if (rc) {
		close(fd);
		return ctl_error("cannot start dirty logging: %s", r->eng_ready ? err : "out of memory");
	}
	snprintf(r->peer, sizeof(r->peer), "%s", peer);
	r->interval_ms = iv;
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
	netbuf_begin(r->nb);
	vmm_set_tx_hook(r->v, tx_hook, r);
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
}
