/* migrate_send.c — the source side: pre-copy rounds on a sender thread, then stop-and-copy. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/errf.h"
#include "migrate/sender.h"
#include "replication/ckpt_engine.h"
#include "replication/disk_repl.h"
#include "replication/delta.h"
#include "replication/sock.h"
#include "replication/tls.h"
#include "replication/stream.h"
#include "vmm/vmm.h"
#include "common/clock.h"
#include "common/log.h"

/* Migration writes every epoch straight from RAM; its stop-and-copy epoch stays paused
 * (switchover). */
static const struct ckpt_ops mig_ops = {
	.name = "migration",
	.log_flags = DIRTY_START_CLEAN,
};

static double secs(uint64_t a, uint64_t b)
{
	return (double)(b - a) / 1e9;
}

void mig_publish(struct sender *s, uint64_t left, double est_ms)
{
	struct mig *m = s->m;
	struct sr_stats st;
	double el = secs(s->t0, now_ns());

	sr_stats(s->w, &st);
	pthread_mutex_lock(&m->lock);
	m->prog.round = s->epoch;
	m->prog.pages_left = left;
	m->prog.bytes_wire = s->out.bytes;
	m->prog.bytes_raw = s->pages_sent * GUEST_PAGE_SIZE;
	m->prog.rate_mbps = el > 0 ? (double)s->out.bytes / el / 1e6 : 0;
	m->prog.est_downtime_ms = est_ms;
	m->prog.throttle = s->conv.throttle;
	m->prog.compress = s->compress;
	pthread_mutex_unlock(&m->lock);
}

/* Bandwidth cap: sleep until the bytes written so far fit max_bw since t0. */
void mig_pace(struct sender *s)
{
	uint64_t bw = s->m->p.max_bw;
	if (!bw)
		return;
	double due = (double)s->out.bytes / (double)bw, el = secs(s->t0, now_ns());
	if (due > el) {
		double d = due - el;
		struct timespec ts = {.tv_sec = (time_t)d, .tv_nsec = (long)((d - (double)(time_t)d) * 1e9)};
		nanosleep(&ts, NULL);
	}
}

/* After every chunk the batcher wrote (pre-copy rounds and stop-and-copy). */
static int on_chunk(void *opaque, size_t n, uint64_t write_ns)
{
	struct sender *s = opaque;

	s->pages_sent += n;
	/* auto: time one full chunk raw, one compressed; keep the faster (pages/s incl. the link).
	 */
	if (s->m->p.compress == MIG_COMP_AUTO && s->auto_phase < 2 && n >= CHUNK_PAGES / 2) {
		double r = (double)n / ((double)(write_ns ? write_ns : 1) / 1e9);
		if (s->auto_phase == 0) {
			s->rate_raw = r;
			s->compress = true;
		} else {
			s->rate_zstd = r;
			/* zstd unless raw is clearly faster: one chunk each is a noisy sample on a
			 * shared machine, and zstd puts ~100x fewer bytes on the link here. */
			s->compress = s->rate_zstd >= 0.8 * s->rate_raw;
		}
		s->auto_phase++;
		sr_set_compress(s->w, s->compress, ZSTD_LEVEL);
	}
	mig_pace(s);
	s->round_sent += n;
	mig_publish(s, s->left > s->round_sent ? s->left - s->round_sent : 0, s->est_ms);
	return 0;
}

static void log_round(struct sender *s, uint64_t pages, double sec, uint64_t dirty)
{
	struct json_object *r = json_object_new_object();

	json_object_object_add(r, "pages", json_object_new_int64((int64_t)pages));
	json_object_object_add(r, "ms", json_object_new_double(sec * 1e3));
	json_object_object_add(r, "dirty", json_object_new_int64((int64_t)dirty));
	json_object_object_add(r, "disk_dirty_bytes", json_object_new_int64((int64_t)s->disk_left));
	json_object_object_add(r, "at_ms", json_object_new_double(secs(s->t0, now_ns()) * 1e3));
	json_object_object_add(r, "throttle_pct", json_object_new_double(s->conv.throttle * 100));
	json_object_object_add(r, "throttle_cost_ms",
			       json_object_new_double(conv_throttle_cost_ms(&s->conv, dirty)));
	json_object_object_add(r, "postcopy_cost_ms",
			       json_object_new_double(conv_postcopy_cost_ms(&s->conv, dirty)));
	json_object_array_add(s->rlog, r);
}

static const char *io_err(struct sender *s, int rc)
{
	static const char *const none = "";
	const char *e = s->w ? sr_error(s->w) : none;
	return *e ? e : strerror(-rc);
}

/* Why the link failed: prefer what the destination said, if it said anything. */
void mig_link_error(struct sender *s, int rc, const char *what)
{
	struct mig_msg msg;

	if (mig_msg_recv_link(s->fd, s->link, &msg, 50) == 0 &&
	    (msg.type == MIG_REJECT || msg.type == MIG_ERROR))
		snprintf(s->err, sizeof(s->err), "destination failed: %s", msg.text);
	else
		snprintf(s->err, sizeof(s->err), "%s: %s", what, io_err(s, rc));
}

/* Wait for the destination to have applied the epoch just sent. */
int mig_wait_epoch(struct sender *s)
{
	struct mig_msg msg;
	int rc = mig_msg_recv_link(s->fd, s->link, &msg, s->m->p.io_timeout_ms);

	if (rc) {
		snprintf(s->err, sizeof(s->err), "destination stopped answering: %s",
			 rc == -ETIMEDOUT ? "no answer (timed out)"
			 : rc == -EPIPE	  ? "connection closed"
					  : strerror(-rc));
		return rc;
	}
	if (msg.type == MIG_REJECT || msg.type == MIG_ERROR) {
		snprintf(s->err, sizeof(s->err), "destination failed: %s", msg.text);
		return -EREMOTEIO;
	}
	if (msg.type != MIG_EPOCH || msg.t_start_ns != s->epoch) {
		snprintf(s->err, sizeof(s->err), "destination sent an unexpected message (type %u)",
			 msg.type);
		return -EPROTO;
	}
	return 0;
}

static const char *recv_err(int rc)
{
	return rc == -ETIMEDOUT ? "no answer (timed out)"
	       : rc == -EPIPE	? "connection closed"
				: strerror(-rc);
}

/* Connect, send the stream header, wait for ACCEPT. */
static int connect_dst(struct sender *s)
{
	struct mig *m = s->m;
	struct sr_header h;
	struct mig_msg msg;
	int rc;

	uint64_t deadline = now_ns() + (uint64_t)m->p.connect_timeout_ms * 1000000ull;
	s->fd = sock_connect(m->p.to, m->p.connect_timeout_ms, s->err, sizeof(s->err));
	if (s->fd < 0)
		return s->fd;
	if (m->tls) {
		char id[TLS_ID_MAX], e2[256];
		rc = tls_wrap_link(m->tls, false, &s->fd, deadline, &s->link, id, sizeof(id), e2, sizeof(e2));
		if (rc)
			return errf(s->err, sizeof(s->err), rc, "destination %.200s: %s", m->p.to, e2);
		log_info("migrate", vmm_name(m->v), "migration to %s over TLS 1.3 (peer certificate %s)",
			 m->p.to, id);
	}
	sr_out_fd(&s->out, s->fd, m->p.io_timeout_ms);
	s->out.tls = s->link; /* TLS: the stream is encrypted on this thread, no relay hop */
	s->compress = m->p.compress != MIG_COMP_NONE;
	if (m->p.compress == MIG_COMP_AUTO)
		s->compress = false; /* phase 0 tries raw first */
	rc = sr_writer_new(&s->w, &s->out, s->compress, ZSTD_LEVEL);
	if (rc)
		return errf(s->err, sizeof(s->err), -ENOMEM, "out of memory");
	sr_header_from_mem(&h, s->gm, (uint32_t)vm_nr_vcpus(s->vm));
	rc = sr_write_header(s->w, &h);
	if (!rc)
		rc = pc_send_mode(s);
	if (rc) {
		mig_link_error(s, rc, "cannot send the stream header");
		return rc;
	}
	rc = mig_msg_recv_link(s->fd, s->link, &msg, m->p.io_timeout_ms);
	if (rc)
		return errf(s->err, sizeof(s->err), rc, "destination %.200s did not accept the migration: %s",
			    m->p.to, recv_err(rc));
	if (msg.type != MIG_ACCEPT)
		return errf(s->err, sizeof(s->err), -ECONNREFUSED, "destination rejected the migration: %s",
			    msg.text);
	s->dst_zero = msg.t_start_ns == 1;
	pc_mode_accepted(s);
	s->t_accepted = now_ns();
	return 0;
}

/* ---- the pre-copy policy: converge.c decides ------------------------------------------------- */

static int round_end(void *opaque, const struct ckpt_round *rd)
{
	struct sender *s = opaque;

	s->epoch = rd->epoch;
	return mig_wait_epoch(s);
}

static int next_round(void *opaque, const struct ckpt_round *rd)
{
	struct sender *s = opaque;
	double sec = secs(rd->t_start, rd->t_sync);

	enum mig_postcopy pc = s->m->p.postcopy;

	/* Disk blocks converge with memory: the round's blocks count as sent pages (the rate), the blocks
	 * written meanwhile as dirty pages (the estimate, the stop decision), 4 KiB for 4 KiB. */
	s->disk_left = s->disks_ready ? disk_repl_dirty_bytes(&s->disks) : 0;
	uint64_t dirty = rd->dirty + (s->disk_left + GUEST_PAGE_SIZE - 1) / GUEST_PAGE_SIZE;
	conv_round_sent(&s->conv, rd->sent + s->disk_round_pages, sec);
	s->disk_round_pages = 0;
	double applied = s->conv.throttle, thr = conv_round_synced(&s->conv, dirty, sec);
	/* auto: where the throttle would start or rise, post-copy instead when the destination holds
	 * enough of RAM current and post-copy's estimated work lost is the smaller (converge.h) */
	double held = 1.0 - (double)rd->dirty / (double)s->gm->nr_pages;
	bool pc_cheaper = conv_postcopy_cost_ms(&s->conv, dirty) < conv_throttle_cost_ms(&s->conv, dirty);
	if (pc == MIG_PC_ROUND || (pc == MIG_PC_AUTO && s->conv.stalls > 0 && !conv_fits(&s->conv, dirty) &&
				   held >= s->m->p.postcopy_min_frac && pc_cheaper)) {
		s->postcopy = true;
		s->conv.throttle = applied; /* post-copy instead of a (higher) throttle */
		log_round(s, rd->sent, sec, dirty);
		return CKPT_STOP;
	}
	throttle_set(&s->thr, thr);
	log_round(s, rd->sent, sec, dirty);
	s->left = dirty;
	s->round_sent = 0;
	s->est_ms = conv_estimate_ms(&s->conv, dirty);
	mig_publish(s, s->left, s->est_ms);
	if (conv_fits(&s->conv, dirty) || rd->epoch >= s->m->p.max_rounds)
		return CKPT_STOP;
	if (!ctl_conn_alive(s->m->conn))
		return errf(s->err, sizeof(s->err), -ECANCELED,
			    "the client that asked for the migration went away");
	if (rd->round == 1 && s->m->p.delta_bytes) {
		/* From round 2 on: the destination's RAM is the last copy sent of every page (written
		 * directly, in stream order, before it runs), so PAGE_DELTA needs nothing there. */
		int rc = sr_delta_new(&s->delta, s->m->p.delta_bytes);
		if (!rc)
			rc = sr_set_delta(s->w, s->delta);
		if (rc)
			return errf(s->err, sizeof(s->err), rc, "out of memory for the delta cache");
	}
	int rc = mig_disk_round(s);
	if (rc)
		return rc;
	s->epoch = rd->epoch + 1;
	return CKPT_ROUND;
}

struct json_object *mig_result_json(struct sender *s, const struct ckpt_epoch *ep, const struct mig_msg *msg,
				    uint64_t t_sent, uint64_t t_ack)
{
	struct json_object *o = json_object_new_object();
	uint64_t t_pause = ep->t_pause, t_synced = t_pause + ep->ph.kick + ep->ph.sync;
	bool exact = msg->t_running_ns > t_pause && msg->t_running_ns < t_ack;
	struct sr_stats ss;

	sr_stats(s->w, &ss);
#define ADD(k, v) json_object_object_add(o, k, v)
	ADD("total_ms", json_object_new_double(secs(s->t0, t_ack) * 1e3));
	ADD("downtime_ms", json_object_new_double(secs(t_pause, exact ? msg->t_running_ns : t_ack) * 1e3));
	ADD("downtime_source", json_object_new_string(exact ? "exact" : "ack"));
	ADD("downtime_ack_ms", json_object_new_double(secs(t_pause, t_ack) * 1e3));
	ADD("final_send_ms", json_object_new_double(secs(t_pause, t_sent) * 1e3));
	ADD("final_sync_ms", json_object_new_double(secs(t_pause, t_synced) * 1e3));
	ADD("final_pages_ms", json_object_new_double((double)ep->ph.copy / 1e6));
	ADD("final_capture_ms", json_object_new_double((double)ep->ph.capture / 1e6));
	ADD("dst_end_ms", json_object_new_double(secs(t_pause, msg->t_start_ns) * 1e3));
	ADD("ready_ms", json_object_new_double(secs(t_pause, s->t_ready) * 1e3));
	ADD("go_ms", json_object_new_double(secs(t_pause, s->t_go) * 1e3));
	ADD("dst_info", json_object_new_string(msg->text));
	ADD("final_pages", json_object_new_int64((int64_t)ep->pages));
	ADD("bytes_wire", json_object_new_int64((int64_t)s->out.bytes));
	ADD("bytes_raw", json_object_new_int64((int64_t)(s->pages_sent * GUEST_PAGE_SIZE)));
	ADD("pages_sent", json_object_new_int64((int64_t)s->pages_sent));
	ADD("zero_pages", json_object_new_int64((int64_t)ss.zero_pages));
	ADD("rounds", json_object_new_int64((int64_t)s->epoch));
	ADD("compress", json_object_new_string(s->compress ? "zstd" : "none"));
	ADD("shared_disks", json_object_new_boolean(s->m->p.shared_disks));
	ADD("disk_initial_bytes", json_object_new_int64((int64_t)s->disk_initial));
	ADD("disk_round_bytes", json_object_new_int64((int64_t)s->disk_rounds));
	ADD("disk_final_bytes", json_object_new_int64((int64_t)s->disk_final));
	ADD("max_throttle_pct", json_object_new_double(s->conv.throttle * 100));
	ADD("page_rate", json_object_new_double(s->conv.page_rate));
	ADD("dirty_rate", json_object_new_double(s->conv.dirty_rate));
	ADD("round_log", json_object_get(s->rlog));
	ADD("accepted_ms", json_object_new_double(secs(s->t0, s->t_accepted) * 1e3));
	ADD("delta_pages", json_object_new_int64((int64_t)ss.delta_pages));
	ADD("delta_unchanged", json_object_new_int64((int64_t)ss.delta_unchanged));
	if (s->delta) {
		struct sr_delta_stats ds;
		sr_delta_get_stats(s->delta, &ds);
		ADD("delta_cache_bytes", json_object_new_int64((int64_t)ds.bytes));
		ADD("delta_bytes", json_object_new_int64((int64_t)ds.delta_bytes));
	}
#undef ADD
	return o;
}

/* True when the destination has closed its end (EOF or an error pending): it will not take GO. */
static bool peer_gone(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
	char c;

	if (poll(&p, 1, 0) <= 0)
		return false;
	if (p.revents & (POLLRDHUP | POLLHUP | POLLERR))
		return true;
	return recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

void mig_set_state(struct mig *m, const char *state, bool committed)
{
	pthread_mutex_lock(&m->lock);
	m->prog.state = state;
	m->prog.committed = committed;
	pthread_mutex_unlock(&m->lock);
}

/* Phase two, the VM paused and END sent: READY -> commit -> GO -> RUNNING. Returns 0 (RUNNING in
 * msg), SW_UNCERTAIN (committed, no answer: stay paused) or another -errno (not committed, or the
 * destination said it will not run: resume). */
int mig_switchover(struct sender *s, struct mig_msg *msg, uint64_t *t_ack, bool until_go)
{
	struct mig *m = s->m;
	int rc = mig_msg_recv_link(s->fd, s->link, msg, m->p.io_timeout_ms);

	if (rc)
		return errf(s->err, sizeof(s->err), rc, "destination did not confirm it is ready: %s",
			    recv_err(rc));
	if (msg->type != MIG_READY)
		return errf(s->err, sizeof(s->err), -EREMOTEIO, "destination failed: %s", msg->text);
	s->t_ready = now_ns();
	if (peer_gone(s->link ? tls_link_net_fd(s->link) : s->fd))
		return errf(s->err, sizeof(s->err), -EPIPE,
			    "the link to the destination dropped after READY, before GO");
	/* The commit point. A GO not wholly in the send buffer can never reach the destination. */
	mig_set_state(m, "switchover", true);
	rc = mig_msg_send_link(s->fd, s->link, MIG_GO, 0, 0, NULL);
	if (rc) {
		mig_set_state(m, "completing", false);
		return errf(s->err, sizeof(s->err), rc, "cannot send GO to the destination: %s",
			    strerror(-rc));
	}
	s->t_go = now_ns();
	mig_disks_release(s);
	if (until_go)
		return 0;
	rc = mig_msg_recv_link(s->fd, s->link, msg, m->p.io_timeout_ms);
	*t_ack = now_ns();
	if (!rc && msg->type == MIG_RUNNING)
		return 0;
	if (!rc && msg->type == MIG_ERROR) { /* it exits without running: resuming is safe */
		char why[200];
		if (mig_disks_retake(s, why, sizeof(why))) {
			snprintf(s->err, sizeof(s->err), "destination failed after GO: %.60s; %.180s",
				 msg->text, why);
			return SW_UNCERTAIN;
		}
		mig_set_state(m, "completing", false);
		return errf(s->err, sizeof(s->err), -EREMOTEIO, "destination failed after GO: %s", msg->text);
	}
	snprintf(s->err, sizeof(s->err),
		 "switchover uncertain: GO was sent but the destination did not confirm it runs (%s); "
		 "the source stays paused: if the destination runs, stop the source; if it does not, "
		 "`doppel migrate NAME --resume-source`",
		 rc ? recv_err(rc) : "unexpected message");
	return SW_UNCERTAIN;
}

/* The final epoch: the engine pauses, merges the pages of the deciding sync (e->carry) into the
 * last dirty set, captures, writes, and stays paused; then END and the two-phase switchover. */
static int stop_and_copy(struct sender *s, struct json_object **result)
{
	struct mig *m = s->m;
	struct ckpt_epoch ep = {
		.epoch = s->epoch, .merge = s->eng.carry, .stay_paused = true, .w = s->w, .disk_data = true};
	struct mig_msg msg;
	uint64_t t_sent, t_ack = 0;
	int rc;

	throttle_stop(&s->thr);
	mig_set_state(m, "completing", false);
	s->round_sent = 0;
	uint64_t disk_before = mig_disk_sent_bytes(s);
	rc = ckpt_engine_epoch(&s->eng, &ep, s->err, sizeof(s->err));
	if (rc) {
		if (ep.io_failed)
			mig_link_error(s, rc, "migration stream failed");
		return rc; /* resumed by the engine */
	}
	s->disk_final = mig_disk_sent_bytes(s) - disk_before;
	if ((rc = mig_disks_flush(s)))
		goto resume;
	rc = sr_write_end(s->w);
	if (!rc)
		rc = pc_send_switch(s, NULL);
	t_sent = now_ns();
	if (rc) {
		mig_link_error(s, rc, "migration stream failed");
		goto resume;
	}
	rc = mig_switchover(s, &msg, &t_ack, false);
	if (rc == SW_UNCERTAIN)
		return rc; /* stays paused */
	if (rc)
		goto resume;
	/* Done: the destination runs. The source stops once the reply is out. */
	mig_publish(s, 0, 0);
	*result = mig_result_json(s, &ep, &msg, t_sent, t_ack);
	return 0;
resume:
	vm_resume(s->vm);
	return rc;
}

/* After an uncertain switchover: stay paused until the destination answers late (RUNNING: done;
 * ERROR: it will not run, resume) or the operator decides (--resume-source; `stop` ends us). */
static int wait_uncertain(struct sender *s)
{
	struct mig *m = s->m;
	struct mig_msg msg;

	for (;;) {
		pthread_mutex_lock(&m->lock);
		bool quit = m->quit, resume = m->op_resume;
		pthread_mutex_unlock(&m->lock);
		if (quit)
			return SW_UNCERTAIN;
		char why[200];
		if (resume && mig_disks_retake(s, why, sizeof(why))) {
			log_error("migrate", vmm_name(m->v), "refused --resume-source: %s", why);
			pthread_mutex_lock(&m->lock);
			struct ctl_conn *op = m->op_conn;
			m->op_resume = false;
			m->op_conn = NULL;
			pthread_mutex_unlock(&m->lock);
			if (op)
				ctl_reply(op, ctl_refused("%s", why));
			continue;
		}
		if (resume) {
			vm_resume(s->vm);
			log_warn("migrate", vmm_name(m->v),
				 "resumed by the operator after an uncertain switchover");
			snprintf(s->err, sizeof(s->err),
				 "resumed by the operator after an uncertain switchover");
			return -ECANCELED;
		}
		if (s->fd < 0) {
			struct timespec ts = {0, 100000000};
			nanosleep(&ts, NULL);
			continue;
		}
		int rc = mig_msg_recv_link(s->fd, s->link, &msg, 100);
		if (rc == -ETIMEDOUT)
			continue;
		if (!rc && msg.type == MIG_RUNNING)
			return 0;
		if (!rc && msg.type == MIG_ERROR && mig_disks_retake(s, why, sizeof(why))) {
			log_error("migrate", vmm_name(m->v), "destination failed after GO (%s), but %s",
				  msg.text, why);
			close(s->fd);
			s->fd = -1;
			continue;
		}
		if (!rc && msg.type == MIG_ERROR) {
			vm_resume(s->vm);
			snprintf(s->err, sizeof(s->err), "destination failed after GO: %s", msg.text);
			return -EREMOTEIO;
		}
		close(s->fd); /* EOF or garbage: only the operator can decide now */
		s->fd = -1;
	}
}

static int run(struct sender *s, struct json_object **result)
{
	struct ckpt_policy pol = {.round_end = round_end, .next = next_round};
	bool io_failed;
	int rc;

	rc = ckpt_engine_init(&s->eng, s->vm, &mig_ops, s);
	if (rc)
		return errf(s->err, sizeof(s->err), rc, "out of memory");
	s->eng_ready = true;
	s->eng.batch->nthreads = NTHREADS;
	s->eng.batch->chunk = CHUNK_PAGES;
	s->eng.batch->on_chunk = on_chunk;
	s->eng.batch->opaque = s;
	rc = mig_setup_disks(s);
	if (rc)
		return rc;
	rc = connect_dst(s);
	if (rc)
		return rc;
	if (s->pc_at_once) { /* no pre-copy round: every data page is stale */
		s->epoch = 1; /* the stale set is every data page, taken while paused */
		s->postcopy = true;
		return pc_source_run(s, result);
	}
	rc = ckpt_engine_start(&s->eng, s->err, sizeof(s->err));
	if (rc)
		return rc;
	rc = throttle_start(&s->thr, s->vm);
	if (rc)
		return errf(s->err, sizeof(s->err), rc, "cannot start the throttle thread: %s",
			    strerror(-rc));
	/* Pre-copy: the full round (holes as zero ranges unless the destination is all zero), then
	 * rounds until converge.c says the rest fits the downtime target. */
	uint64_t next = s->epoch = 1;
	rc = mig_precopy_disks(s, &next);
	if (rc)
		return rc;
	pol.skip_holes = s->dst_zero;
	rc = ckpt_engine_precopy(&s->eng, s->w, &pol, s, &next, &io_failed, s->err, sizeof(s->err));
	if (rc) {
		if (io_failed)
			mig_link_error(s, rc, "migration stream failed");
		return rc;
	}
	s->epoch = next; /* the stop-and-copy epoch */
	return s->postcopy ? pc_source_run(s, result) : stop_and_copy(s, result);
}

/* Everything but s itself and s->err. */
static void sender_free(struct sender *s)
{
	if (s->eng_ready)
		ckpt_engine_free(&s->eng);
	if (s->disks_ready)
		disk_repl_free(&s->disks);
	s->eng_ready = false;
	sr_ctx_free(s->w);
	s->w = NULL;
	sr_delta_free(s->delta); /* after its stream */
	s->delta = NULL;
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	tls_link_put(s->link);
	s->link = NULL;
	json_object_put(s->rlog);
	s->rlog = NULL;
}

/* The "migration-end" event and the metrics' counters. */
static void end_event(struct mig *m, struct sender *s, int rc, struct json_object *result)
{
	struct json_object *f = json_object_new_object(), *j;
	double down = -1;

	if (!rc && result && json_object_object_get_ex(result, "downtime_ms", &j))
		down = json_object_get_double(j);
	json_object_object_add(f, "result", json_object_new_string(rc ? "failed" : "completed"));
	json_object_object_add(f, "to", json_object_new_string(m->p.to));
	json_object_object_add(f, "total_ms", json_object_new_double((double)(now_ns() - s->t0) / 1e6));
	json_object_object_add(f, "rounds", json_object_new_int64((int64_t)s->epoch));
	json_object_object_add(f, "pages_sent", json_object_new_int64((int64_t)s->pages_sent));
	if (down >= 0)
		json_object_object_add(f, "downtime_ms", json_object_new_double(down));
	if (rc)
		json_object_object_add(f, "error",
				       json_object_new_string(s->err[0] ? s->err : strerror(-rc)));
	mig_event(m, "migration-end", "out", f);
	pthread_mutex_lock(&m->lock);
	if (rc) {
		m->nr_failed++;
	} else {
		m->nr_completed++;
		m->last_downtime_ms = down;
		m->prog.downtime_ms = down;
	}
	pthread_mutex_unlock(&m->lock);
}

void *mig_sender_main(void *arg)
{
	struct mig *m = arg;
	struct sender *s = calloc(1, sizeof(*s));
	struct json_object *result = NULL;
	int rc;

	if (!s) {
		ctl_reply(m->conn, ctl_error("migration failed: out of memory"));
		pthread_mutex_lock(&m->lock);
		m->prog.state = "failed";
		pthread_mutex_unlock(&m->lock);
		ev_async_send(vmm_loop(m->v), &m->done_async);
		return NULL;
	}
	s->m = m;
	s->fd = -1;
	s->vm = vmm_vm(m->v);
	s->gm = vm_mem(s->vm);
	s->t0 = now_ns();
	conv_init(&s->conv, m->p.downtime_ms);
	s->rlog = json_object_new_array();
	rc = run(s, &result);
	throttle_stop(&s->thr); /* the VM is left running on failure, paused when committed */
	if (rc == SW_UNCERTAIN) {
		log_error("migrate", vmm_name(m->v), "%s", s->err);
		pthread_mutex_lock(&m->lock);
		m->prog.state = "switchover-uncertain";
		snprintf(m->prog.error, sizeof(m->prog.error), "%s", s->err);
		m->uncertain = true;
		pthread_mutex_unlock(&m->lock);
		ctl_reply(m->conn, ctl_error("migration failed: %s", s->err));
		m->conn = NULL;
		rc = wait_uncertain(s);
		if (rc == SW_UNCERTAIN) { /* the process is ending (operator stop): touch nothing more */
			sender_free(s);
			free(s);
			return NULL;
		}
		if (rc == 0)
			log_info("migrate", vmm_name(m->v), "the destination confirmed late: it runs");
	}
	if (rc == SW_PC_LOST) { /* committed, the destination runs on pages it lacks: lost */
		log_error("migrate", vmm_name(m->v), "post-copy failed: %s", s->err);
		sender_free(s);
		pthread_mutex_lock(&m->lock);
		m->prog.state = "postcopy-failed";
		snprintf(m->prog.error, sizeof(m->prog.error),
			 "post-copy failed after the destination started: %.150s; neither host holds the "
			 "whole "
			 "VM, it stays paused here and cannot be resumed",
			 s->err);
		m->pc_lost = true;
		pthread_mutex_unlock(&m->lock);
		ctl_reply(m->conn, ctl_error("migration failed: %s", m->prog.error));
		free(s);
		ev_async_send(vmm_loop(m->v), &m->done_async);
		return NULL;
	}
	sender_free(s);
	end_event(m, s, rc, result);
	pthread_mutex_lock(&m->lock);
	m->prog.state = rc ? "failed" : "completed";
	if (rc)
		snprintf(m->prog.error, sizeof(m->prog.error), "%s", s->err);
	m->prog.committed = rc == 0;
	m->success = rc == 0;
	m->uncertain = false;
	struct ctl_conn *op = m->op_resume ? m->op_conn : NULL;
	pthread_mutex_unlock(&m->lock);
	if (op && rc) /* the operator's --resume-source: answered once the VM runs again */
		ctl_reply(op, json_object_new_object());
	else if (op)
		ctl_reply(op, ctl_error("the destination confirmed it runs: %s exits", vmm_name(m->v)));
	if (m->conn && rc)
		ctl_reply(m->conn, ctl_error("migration failed: %s", s->err[0] ? s->err : strerror(-rc)));
	else if (m->conn)
		ctl_reply(m->conn, result);
	else
		json_object_put(result);
	free(s);
	ev_async_send(vmm_loop(m->v), &m->done_async);
	return NULL;
}
