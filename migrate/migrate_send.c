/* migrate_send.c — the source side: converging pre-copy rounds on a sender thread, then stop-and-copy. */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hv/dirty.h"
#include "migrate/migrate_priv.h"
#include "replication/checkpoint.h"
#include "replication/sock.h"
#include "replication/stream.h"
#include "vmm/vmm.h"
#include "common/clock.h"

#define CHUNK_PAGES 4096u   /* pages per sr_write_pages_mt call (16 MiB raw) */
#define NTHREADS 2          /* compression workers: both cores */
#define ZSTD_LEVEL 1

struct sender {
	struct mig *m;
	struct vm *vm;
	struct guest_mem *gm;
	int fd;
	struct sr_out out;
	struct sr_ctx *w;
	struct dirty_log *log;
	uint64_t *bm, *bm2;
	uint64_t *idx;
	const void **ptr;
	struct throttle thr;
	struct converge conv;
	bool compress;
	bool dst_zero; /* the destination's RAM is known to be all zero */
	int auto_phase;      /* auto compression: 0 = try raw, 1 = try zstd, 2 = decided */
	double rate_raw, rate_zstd;
	uint64_t t0, t_accepted, pages_sent, epoch;
	uint64_t left;  /* pages to send in the current round (for progress) */
	double est_ms;  /* downtime estimate at the last sync */
	struct json_object *rlog; /* per-round {pages, ms, dirty, throttle} */
	char err[300];
};

static double secs(uint64_t a, uint64_t b)
{
	return (double)(b - a) / 1e9;
}

static void publish(struct sender *s, uint64_t left, double est_ms)
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
static void pace(struct sender *s)
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

static int write_chunk(struct sender *s, size_t n)
{
	int rc;

	if (!n)
		return 0;
	uint64_t t = now_ns();
	rc = sr_write_pages_mt(s->w, s->idx, s->ptr, n, NTHREADS);
	if (rc)
		return rc;
	s->pages_sent += n;
	/* auto: time one full chunk raw, one compressed; keep the faster (pages/s incl. the link). */
	if (s->m->p.compress == MIG_COMP_AUTO && s->auto_phase < 2 && n >= CHUNK_PAGES / 2) {
		double r = (double)n / secs(t, now_ns());
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
	pace(s);
	return 0;
}

/* Send the pages set in s->bm, read live from RAM, in chunks. Returns pages sent or -errno. */
static int64_t send_bitmap(struct sender *s)
{
	uint64_t pos = 0, p, total = 0;
	size_t n = 0;
	int rc;

	while ((p = dirty_next(s->bm, s->gm->nr_pages, &pos)) != UINT64_MAX) {
		s->idx[n] = p;
		s->ptr[n] = mem_page_host(s->gm, p);
		if (!s->ptr[n])
			continue;
		if (++n == CHUNK_PAGES) {
			rc = write_chunk(s, n);
			if (rc)
				return rc;
			total += n;
			n = 0;
			publish(s, s->left > total ? s->left - total : 0, s->est_ms);
		}
	}
	rc = write_chunk(s, n);
	return rc ? rc : (int64_t)(total + n);
}

/* Round 1: holes of the memfd go out as zero ranges without being read; data extents as pages. */
static int64_t first_round_bitmap(struct sender *s)
{
	struct guest_mem *gm = s->gm;
	int rc;

	memset(s->bm, 0, dirty_bitmap_words(gm->nr_pages) * sizeof(uint64_t));
	for (int i = 0; i < gm->nr; i++) {
		const struct mem_region *r = &gm->r[i];
		uint64_t np = r->size >> GUEST_PAGE_SHIFT, p = 0;
		while (p < np) {
			uint64_t d = p, h = np;
			if (gm->memfd >= 0) {
				off_t o = lseek(gm->memfd, (off_t)(r->fd_off + (p << GUEST_PAGE_SHIFT)), SEEK_DATA);
				d = (o < 0 || (uint64_t)o >= r->fd_off + r->size) ? np
					: ((uint64_t)o - r->fd_off) >> GUEST_PAGE_SHIFT;
				if (d < np) {
					o = lseek(gm->memfd, (off_t)(r->fd_off + (d << GUEST_PAGE_SHIFT)), SEEK_HOLE);
					h = (o < 0 || (uint64_t)o >= r->fd_off + r->size) ? np
						: ((uint64_t)o - r->fd_off + GUEST_PAGE_SIZE - 1) >> GUEST_PAGE_SHIFT;
				}
			}
			if (d > p && !s->dst_zero && (rc = sr_write_zero_range(s->w, r->pfn_base + p, d - p)))
				return rc;
			for (uint64_t q = d; q < h; q++)
				s->bm[(r->pfn_base + q) / 64] |= 1ull << ((r->pfn_base + q) % 64);
			p = h > d ? h : d + 1;
		}
	}
	return send_bitmap(s);
}

static void log_round(struct sender *s, uint64_t pages, double sec, uint64_t dirty)
{
	struct json_object *r = json_object_new_object();

	json_object_object_add(r, "pages", json_object_new_int64((int64_t)pages));
	json_object_object_add(r, "ms", json_object_new_double(sec * 1e3));
	json_object_object_add(r, "dirty", json_object_new_int64((int64_t)dirty));
	json_object_object_add(r, "at_ms", json_object_new_double(secs(s->t0, now_ns()) * 1e3));
	json_object_object_add(r, "throttle_pct", json_object_new_double(s->conv.throttle * 100));
	json_object_array_add(s->rlog, r);
}

static const char *io_err(struct sender *s, int rc)
{
	static const char *const none = "";
	const char *e = s->w ? sr_error(s->w) : none;
	return *e ? e : strerror(-rc);
}

/* Why the link failed: prefer what the destination said, if it said anything. */
static void link_error(struct sender *s, int rc, const char *what)
{
	struct mig_msg msg;

	if (mig_msg_recv(s->fd, &msg, 50) == 0 && (msg.type == MIG_REJECT || msg.type == MIG_ERROR))
		snprintf(s->err, sizeof(s->err), "destination failed: %s", msg.text);
	else
		snprintf(s->err, sizeof(s->err), "%s: %s", what, io_err(s, rc));
}

/* Wait for the destination to have applied the epoch just sent. */
static int wait_epoch(struct sender *s)
{
	struct mig_msg msg;
	int rc = mig_msg_recv(s->fd, &msg, s->m->p.io_timeout_ms);

	if (rc) {
		snprintf(s->err, sizeof(s->err), "destination stopped answering: %s",
			 rc == -ETIMEDOUT ? "no answer (timed out)" : rc == -EPIPE ? "connection closed" : strerror(-rc));
		return rc;
	}
	if (msg.type == MIG_REJECT || msg.type == MIG_ERROR) {
		snprintf(s->err, sizeof(s->err), "destination failed: %s", msg.text);
		return -EREMOTEIO;
	}
	if (msg.type != MIG_EPOCH || msg.t_start_ns != s->epoch) {
		snprintf(s->err, sizeof(s->err), "destination sent an unexpected message (type %u)", msg.type);
		return -EPROTO;
	}
	return 0;
}

static int run(struct sender *s, struct json_object **result)
{
	struct mig *m = s->m;
	struct sr_header h;
	struct ckpt_state st = {0};
	struct mig_msg msg;
	uint64_t t_round, t_pause = 0, t_ack;
	int64_t n, left;
	bool paused = false;
	int rc;

	s->fd = sock_connect(m->p.to, m->p.connect_timeout_ms, s->err, sizeof(s->err));
	if (s->fd < 0)
		return s->fd;
	sr_out_fd(&s->out, s->fd, m->p.io_timeout_ms);
	s->compress = m->p.compress != MIG_COMP_NONE;
	if (m->p.compress == MIG_COMP_AUTO)
		s->compress = false; /* phase 0 tries raw first */
	rc = sr_writer_new(&s->w, &s->out, s->compress, ZSTD_LEVEL);
	if (rc)
		goto nomem;
	s->bm = calloc(dirty_bitmap_words(s->gm->nr_pages), sizeof(uint64_t));
	s->bm2 = calloc(dirty_bitmap_words(s->gm->nr_pages), sizeof(uint64_t));
	s->idx = malloc(CHUNK_PAGES * sizeof(*s->idx));
	s->ptr = malloc(CHUNK_PAGES * sizeof(*s->ptr));
	if (!s->bm || !s->bm2 || !s->idx || !s->ptr)
		goto nomem;
	sr_header_from_mem(&h, s->gm, (uint32_t)vm_nr_vcpus(s->vm));
	rc = sr_write_header(s->w, &h);
	if (rc) {
		link_error(s, rc, "cannot send the stream header");
		return rc;
	}
	rc = mig_msg_recv(s->fd, &msg, m->p.io_timeout_ms);
	if (rc) {
		snprintf(s->err, sizeof(s->err), "destination %.200s did not accept the migration: %s", m->p.to,
			 rc == -ETIMEDOUT ? "no answer (timed out)" : rc == -EPIPE ? "connection closed" : strerror(-rc));
		return rc;
	}
	if (msg.type != MIG_ACCEPT) {
		snprintf(s->err, sizeof(s->err), "destination rejected the migration: %s", msg.text);
		return -ECONNREFUSED;
	}
	s->dst_zero = msg.t_start_ns == 1;
	s->t_accepted = now_ns();
	rc = dirty_log_start(&s->log, s->vm, DIRTY_START_CLEAN, s->err, sizeof(s->err));
	if (rc)
		return rc;
	rc = throttle_start(&s->thr, s->vm);
	if (rc) {
		snprintf(s->err, sizeof(s->err), "cannot start the throttle thread: %s", strerror(-rc));
		return rc;
	}

	/* Pre-copy. */
	t_round = now_ns();
	s->epoch = 1;
	n = first_round_bitmap(s);
	for (;;) {
		if (n < 0 || (rc = sr_write_checkpoint_end(s->w, s->epoch))) {
			link_error(s, n < 0 ? (int)n : rc, "migration stream failed");
			return n < 0 ? (int)n : rc;
		}
		rc = wait_epoch(s);
		if (rc)
			return rc;
		uint64_t t_sync = now_ns();
		conv_round_sent(&s->conv, (uint64_t)n, secs(t_round, t_sync));
		left = dirty_log_sync(s->log, s->bm);
		if (left < 0) {
			snprintf(s->err, sizeof(s->err), "dirty log sync failed: %s", strerror((int)-left));
			return (int)left;
		}
		throttle_set(&s->thr, conv_round_synced(&s->conv, (uint64_t)left, secs(t_round, t_sync)));
		log_round(s, (uint64_t)n, secs(t_round, t_sync), (uint64_t)left);
		s->left = (uint64_t)left;
		s->est_ms = conv_estimate_ms(&s->conv, (uint64_t)left);
		publish(s, s->left, s->est_ms);
		if (conv_fits(&s->conv, (uint64_t)left) || s->epoch >= m->p.max_rounds)
			break;
		if (!ctl_conn_alive(m->conn)) {
			snprintf(s->err, sizeof(s->err), "the client that asked for the migration went away");
			return -ECANCELED;
		}
		s->epoch++;
		t_round = t_sync;
		n = send_bitmap(s);
	}

	/* Stop and copy. */
	throttle_stop(&s->thr);
	pthread_mutex_lock(&m->lock);
	m->prog.state = "completing";
	pthread_mutex_unlock(&m->lock);
	t_pause = now_ns();
	rc = vm_pause(s->vm);
	if (rc) {
		snprintf(s->err, sizeof(s->err), "cannot pause the VM: %s", strerror(-rc));
		return rc;
	}
	paused = true;
	/* The pages of the deciding sync are still to send: OR this last sync into them. */
	left = dirty_log_sync(s->log, s->bm2);
	for (size_t i = 0; left >= 0 && i < dirty_bitmap_words(s->gm->nr_pages); i++)
		s->bm[i] |= s->bm2[i];
	if (left >= 0)
		left = (int64_t)dirty_bitmap_count(s->bm, s->gm->nr_pages);
	if (left < 0) {
		rc = (int)left;
		snprintf(s->err, sizeof(s->err), "dirty log sync failed: %s", strerror(-rc));
		goto resume;
	}
	s->epoch++;
	uint64_t final_pages = (uint64_t)left, t_synced = now_ns();
	n = send_bitmap(s);
	uint64_t t_pages = now_ns();
	rc = n < 0 ? (int)n : ckpt_state_capture(&st, s->vm, s->err, sizeof(s->err));
	uint64_t t_captured = now_ns();
	if (n >= 0 && rc) {
		ckpt_state_free(&st);
		goto resume;
	}
	if (!rc)
		rc = ckpt_state_write(s->w, &st);
	ckpt_state_free(&st);
	if (!rc)
		rc = sr_write_checkpoint_end(s->w, s->epoch);
	if (!rc)
		rc = sr_write_end(s->w);
	uint64_t t_sent = now_ns();
	if (rc) {
		link_error(s, rc, "migration stream failed");
		goto resume;
	}
	rc = mig_msg_recv(s->fd, &msg, m->p.io_timeout_ms);
	t_ack = now_ns();
	if (rc || msg.type != MIG_RUNNING) {
		if (!rc)
			snprintf(s->err, sizeof(s->err), "destination failed: %s", msg.text);
		else
			snprintf(s->err, sizeof(s->err), "destination did not confirm it runs: %s",
				 rc == -ETIMEDOUT ? "no answer (timed out)" : rc == -EPIPE ? "connection closed" : strerror(-rc));
		rc = rc ? rc : -EREMOTEIO;
		goto resume;
	}

	/* Done: the destination runs. The source stops once the reply is out. */
	struct sr_stats ss;
	bool exact = msg.t_running_ns > t_pause && msg.t_running_ns < t_ack;
	sr_stats(s->w, &ss);
	publish(s, 0, 0);
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "total_ms", json_object_new_double(secs(s->t0, t_ack) * 1e3));
	json_object_object_add(o, "downtime_ms",
			       json_object_new_double(secs(t_pause, exact ? msg.t_running_ns : t_ack) * 1e3));
	json_object_object_add(o, "downtime_source", json_object_new_string(exact ? "exact" : "ack"));
	json_object_object_add(o, "downtime_ack_ms", json_object_new_double(secs(t_pause, t_ack) * 1e3));
	json_object_object_add(o, "final_send_ms", json_object_new_double(secs(t_pause, t_sent) * 1e3));
	json_object_object_add(o, "final_sync_ms", json_object_new_double(secs(t_pause, t_synced) * 1e3));
	json_object_object_add(o, "final_pages_ms", json_object_new_double(secs(t_synced, t_pages) * 1e3));
	json_object_object_add(o, "final_capture_ms", json_object_new_double(secs(t_pages, t_captured) * 1e3));
	json_object_object_add(o, "dst_end_ms", json_object_new_double(secs(t_pause, msg.t_start_ns) * 1e3));
	json_object_object_add(o, "dst_info", json_object_new_string(msg.text));
	json_object_object_add(o, "final_pages", json_object_new_int64((int64_t)final_pages));
	json_object_object_add(o, "bytes_wire", json_object_new_int64((int64_t)s->out.bytes));
	json_object_object_add(o, "bytes_raw", json_object_new_int64((int64_t)(s->pages_sent * GUEST_PAGE_SIZE)));
	json_object_object_add(o, "pages_sent", json_object_new_int64((int64_t)s->pages_sent));
	json_object_object_add(o, "zero_pages", json_object_new_int64((int64_t)ss.zero_pages));
	json_object_object_add(o, "rounds", json_object_new_int64((int64_t)s->epoch));
	json_object_object_add(o, "compress", json_object_new_string(s->compress ? "zstd" : "none"));
	json_object_object_add(o, "max_throttle_pct", json_object_new_double(s->conv.throttle * 100));
	json_object_object_add(o, "page_rate", json_object_new_double(s->conv.page_rate));
	json_object_object_add(o, "dirty_rate", json_object_new_double(s->conv.dirty_rate));
	json_object_object_add(o, "round_log", json_object_get(s->rlog));
	json_object_object_add(o, "accepted_ms", json_object_new_double(secs(s->t0, s->t_accepted) * 1e3));
	*result = o;
	return 0;

nomem:
	snprintf(s->err, sizeof(s->err), "out of memory");
	return -ENOMEM;
resume:
	if (paused)
		vm_resume(s->vm);
	return rc;
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
	throttle_stop(&s->thr); /* the VM is left running on failure */
	dirty_log_free(s->log);
	sr_ctx_free(s->w);
	if (s->fd >= 0)
		close(s->fd);
	pthread_mutex_lock(&m->lock);
	m->prog.state = rc ? "failed" : "completed";
	if (rc)
		snprintf(m->prog.error, sizeof(m->prog.error), "%s", s->err);
	m->success = rc == 0;
	pthread_mutex_unlock(&m->lock);
	if (rc)
		ctl_reply(m->conn, ctl_error("migration failed: %s", s->err[0] ? s->err : strerror(-rc)));
	else
		ctl_reply(m->conn, result);
	json_object_put(s->rlog);
	free(s->bm);
	free(s->bm2);
	free(s->idx);
	free(s->ptr);
	free(s);
	ev_async_send(vmm_loop(m->v), &m->done_async);
	return NULL;
}
