/* postcopy_send.c — the source side of post-copy: stale set, switchover, pages on demand and pushed. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/errf.h"
#include "common/log.h"
#include "migrate/sender.h"
#include "replication/tls.h"
#include "vmm/vmm.h"

/* Pages sent after a requested one: the guest tends to go on from there, and one long run costs one
 * frame, one pwritev and one UFFDIO_CONTINUE on the destination (per page: ~15-20 us alone, ~4-8 us in
 * runs of 256 here; docs/migration.md, "What bounds disruption on this host"). */
#define PREFETCH (PC_MAX_RUN - 1)
#define BG_RUN PC_MAX_RUN /* pages per background frame (1 MiB): a request waits behind at most this */
#define REQ_RING 4096

/* The back channel during post-copy, read by its own thread while the sender pushes. */
struct pc_src {
	struct sender *s;
	pthread_t th;
	pthread_mutex_t lock;
	uint64_t ring[REQ_RING];
	unsigned head, tail; /* requests: ring[tail..head) */
	bool running, done, failed, stop;
	struct mig_msg running_msg;
	uint64_t t_running, t_done;
	uint64_t requests;
	char err[200];
};

/* Pages of RAM holding data (the rest are holes: never written). */
static uint64_t data_pages(struct guest_mem *gm)
{
	uint64_t pos = 0, first, count, n = 0;
	bool data;

	while (mem_extent_next(gm, &pos, &first, &count, &data))
		if (data)
			n += count;
	return n;
}

int pc_send_mode(struct sender *s)
{
	struct mig *m = s->m;

	s->pc_at_once = m->p.postcopy == MIG_PC_NOW;
	if (m->p.postcopy == MIG_PC_AUTO) {
		uint64_t data = data_pages(s->gm), nr = s->gm->nr_pages;
		double held = 1.0 - (double)data / (double)nr;
		s->pc_at_once = held >= m->p.postcopy_min_frac;
		log_debug("migrate", vmm_name(m->v), "post-copy auto: %llu of %llu pages hold data: %s",
			  (unsigned long long)data, (unsigned long long)nr,
			  s->pc_at_once ? "post-copy at once" : "pre-copy first (too little held at once)");
	}
	struct pc_frame f = {.magic = PC_MAGIC,
			     .type = PC_MODE,
			     .first = s->pc_at_once,
			     .count = m->p.shared_disks ? PC_MODE_SHARED_DISKS : 0};
	return sr_out_write(&s->out, &f, sizeof(f));
}

void pc_mode_accepted(struct sender *s)
{
	/* A destination that is not all zero holds no hole as current (it did not drop its RAM on
	 * PC_MODE either: it drops only a zero one), so auto goes back to pre-copy first. */
	if (s->pc_at_once && s->m->p.postcopy == MIG_PC_AUTO && !s->dst_zero)
		s->pc_at_once = false;
}

int pc_send_switch(struct sender *s, const uint64_t *stale)
{
	uint64_t words = stale ? dirty_bitmap_words(s->gm->nr_pages) : 0;
	struct pc_frame f = {.magic = PC_MAGIC, .type = PC_SWITCH, .first = stale ? 1 : 0, .count = words};
	int rc = sr_out_write(&s->out, &f, sizeof(f));

	if (!rc && words)
		rc = sr_out_write(&s->out, stale, words * sizeof(uint64_t));
	return rc;
}

void pc_all_data_pages(struct sender *s, uint64_t *bm)
{
	uint64_t pos = 0, first, count;
	bool data;

	while (mem_extent_next(s->gm, &pos, &first, &count, &data))
		if (data || !s->dst_zero)
			for (uint64_t i = first; i < first + count; i++)
				bm[i / 64] |= 1ull << (i % 64);
}

/* Read one 144-byte message, waiting while nothing arrives; -EPIPE on EOF, -ECANCELED when stopped. */
static int read_msg(struct pc_src *p, struct mig_msg *msg)
{
	size_t off = 0;

	while (off < sizeof(*msg)) {
		struct pollfd pf = {.fd = p->s->fd, .events = POLLIN};
		pthread_mutex_lock(&p->lock);
		bool stop = p->stop;
		pthread_mutex_unlock(&p->lock);
		if (stop)
			return -ECANCELED;
		ssize_t n;
		if (p->s->link) { /* TLS: the back channel is read through the link */
			n = tls_link_recv(p->s->link, (char *)msg + off, sizeof(*msg) - off, 100);
			if (n == -ETIMEDOUT)
				continue;
		} else {
			int pr = poll(&pf, 1, 100);
			if (pr < 0 && errno != EINTR)
				return -errno;
			if (pr <= 0)
				continue;
			n = recv(p->s->fd, (char *)msg + off, sizeof(*msg) - off, 0);
		}
		if (n == 0)
			return -EPIPE;
		if (n < 0 && errno != EINTR && errno != EAGAIN)
			return -errno;
		if (n > 0)
			off += (size_t)n;
	}
	if (msg->magic != MIG_MSG_MAGIC)
		return -EBADMSG;
	msg->text[sizeof(msg->text) - 1] = 0;
	return 0;
}

static void *reader_main(void *arg)
{
	struct pc_src *p = arg;
	struct mig_msg msg;

	for (;;) {
		int rc = read_msg(p, &msg);
		pthread_mutex_lock(&p->lock);
		if (rc == -ECANCELED) {
			pthread_mutex_unlock(&p->lock);
			return NULL;
		}
		if (!rc && msg.type == MIG_PAGE_REQ) {
			if (p->head - p->tail < REQ_RING)
				p->ring[p->head++ % REQ_RING] = msg.t_start_ns;
			p->requests++;
		} else if (!rc && msg.type == MIG_RUNNING) {
			p->running = true;
			p->running_msg = msg;
			p->t_running = now_ns();
		} else if (!rc && msg.type == MIG_PC_DONE) {
			p->done = true;
			p->t_done = now_ns();
		} else {
			p->failed = true;
			if (!rc && msg.type == MIG_ERROR)
				snprintf(p->err, sizeof(p->err), "the destination failed: %.120s", msg.text);
			else
				snprintf(p->err, sizeof(p->err), "the link to the destination broke: %s",
					 rc == -EPIPE ? "connection closed"
					 : rc	      ? strerror(-rc)
						      : "unexpected message");
		}
		bool end = p->done || p->failed;
		pthread_mutex_unlock(&p->lock);
		if (end)
			return NULL;
	}
}

static bool all_zero(const uint8_t *pg)
{
	const uint64_t *w = (const uint64_t *)pg;

	for (size_t i = 0; i < GUEST_PAGE_SIZE / 8; i++)
		if (w[i])
			return false;
	return true;
}

static bool bit(const uint64_t *bm, uint64_t i)
{
	return bm[i / 64] >> (i % 64) & 1;
}

/* Send the stale pages of [idx, idx + max) that are still pending, as zero / data runs (stopping at
 * the first page not pending or at a region end); clears them in pend. Returns pages sent or -errno. */
static int64_t send_run(struct sender *s, uint64_t *pend, uint64_t idx, uint64_t max)
{
	uint64_t n = 0;
	uint8_t *base = mem_page_host(s->gm, idx);

	while (n < max && idx + n < s->gm->nr_pages && bit(pend, idx + n) &&
	       mem_page_host(s->gm, idx + n) == base + (n << GUEST_PAGE_SHIFT))
		n++;
	for (uint64_t i = 0; i < n;) {
		bool z = all_zero(base + (i << GUEST_PAGE_SHIFT));
		uint64_t j = i + 1;
		while (j < n && all_zero(base + (j << GUEST_PAGE_SHIFT)) == z)
			j++;
		struct pc_frame f = {
			.magic = PC_MAGIC, .type = z ? PC_ZERO : PC_PAGES, .first = idx + i, .count = j - i};
		int rc = sr_out_write(&s->out, &f, sizeof(f));
		if (!rc && !z)
			rc = sr_out_write(&s->out, base + (i << GUEST_PAGE_SHIFT),
					  (j - i) << GUEST_PAGE_SHIFT);
		if (rc)
			return rc;
		i = j;
	}
	for (uint64_t i = 0; i < n; i++)
		pend[(idx + i) / 64] &= ~(1ull << ((idx + i) % 64));
	return (int64_t)n;
}

/* Push every pending page: requested ones first (with a few after them), the rest from where the
 * guest last asked. Returns 0 or -errno (with s->err). */
static int push(struct sender *s, struct pc_src *p, uint64_t *pend, uint64_t left)
{
	uint64_t cursor = 0, nr = s->gm->nr_pages, sent_req = 0;

	while (left) {
		uint64_t req = UINT64_MAX;
		pthread_mutex_lock(&p->lock);
		bool failed = p->failed;
		if (p->tail != p->head)
			req = p->ring[p->tail++ % REQ_RING];
		pthread_mutex_unlock(&p->lock);
		if (failed)
			return errf(s->err, sizeof(s->err), -ENOLINK, "%s", p->err);
		int64_t n;
		if (req != UINT64_MAX) {
			if (req >= nr || !bit(pend, req))
				continue;
			n = send_run(s, pend, req, 1 + PREFETCH);
			cursor = req + (n > 0 ? (uint64_t)n : 0);
			sent_req++;
		} else {
			uint64_t pos = cursor < nr ? cursor : 0, q = dirty_next(pend, nr, &pos);
			if (q == UINT64_MAX) {
				pos = 0;
				q = dirty_next(pend, nr, &pos);
			}
			n = send_run(s, pend, q, BG_RUN);
			cursor = q + (n > 0 ? (uint64_t)n : 1);
		}
		if (n < 0)
			return errf(s->err, sizeof(s->err), (int)n, "the link to the destination broke: %s",
				    strerror((int)-n));
		left -= (uint64_t)n;
		s->pages_sent += (uint64_t)n;
		mig_pace(s);
		mig_publish(s, left, 0);
	}
	struct pc_frame f = {.magic = PC_MAGIC, .type = PC_DONE};
	int rc = sr_out_write(&s->out, &f, sizeof(f));
	if (rc)
		return errf(s->err, sizeof(s->err), rc, "the link to the destination broke: %s",
			    strerror(-rc));
	(void)sent_req;
	return 0;
}

/* Wait for the destination's MIG_PC_DONE (every page installed) and its RUNNING. */
static int await_done(struct sender *s, struct pc_src *p)
{
	uint64_t end = now_ns() + (uint64_t)s->m->p.io_timeout_ms * 1000000ull;

	for (;;) {
		pthread_mutex_lock(&p->lock);
		bool done = p->done && p->running, failed = p->failed;
		pthread_mutex_unlock(&p->lock);
		if (done)
			return 0;
		if (failed)
			return errf(s->err, sizeof(s->err), -ENOLINK, "%s", p->err);
		if (now_ns() > end)
			return errf(s->err, sizeof(s->err), -ETIMEDOUT,
				    "the destination did not confirm it has every page (timed out)");
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
}

static void add_stats(struct json_object *o, struct pc_src *p, uint64_t stale, uint64_t t_go)
{
	json_object_object_add(o, "postcopy", json_object_new_boolean(1));
	json_object_object_add(o, "postcopy_at_once", json_object_new_boolean(p->s->pc_at_once));
	json_object_object_add(o, "postcopy_pages", json_object_new_int64((int64_t)stale));
	json_object_object_add(o, "postcopy_requests", json_object_new_int64((int64_t)p->requests));
	json_object_object_add(o, "postcopy_ms", json_object_new_double((double)(p->t_done - t_go) / 1e6));
}

/* Committed (GO sent): serve and push until the destination has every page. */
static int after_go(struct sender *s, struct ckpt_epoch *ep, uint64_t *pend, uint64_t stale,
		    struct json_object **result)
{
	struct pc_src *p = calloc(1, sizeof(*p));
	uint64_t t_go = s->t_go;
	int rc;

	if (!p)
		return errf(s->err, sizeof(s->err), SW_PC_LOST, "out of memory after GO");
	p->s = s;
	pthread_mutex_init(&p->lock, NULL);
	mig_set_state(s->m, "postcopy", true);
	rc = pthread_create(&p->th, NULL, reader_main, p);
	if (rc) {
		free(p);
		return errf(s->err, sizeof(s->err), SW_PC_LOST, "cannot start the post-copy reader");
	}
	rc = push(s, p, pend, stale);
	if (!rc)
		rc = await_done(s, p);
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_mutex_unlock(&p->lock);
	pthread_join(p->th, NULL);
	if (!rc) {
		mig_publish(s, 0, 0);
		*result = mig_result_json(s, ep, &p->running_msg, s->t_go, p->t_done);
		add_stats(*result, p, stale, t_go);
	} else {
		rc = SW_PC_LOST;
	}
	pthread_mutex_destroy(&p->lock);
	free(p);
	return rc;
}

int pc_source_run(struct sender *s, struct json_object **result)
{
	struct mig *m = s->m;
	struct ckpt_epoch ep = {
		.epoch = s->epoch, .merge = s->eng.carry, .stay_paused = true, .w = s->w, .state_only = true};
	struct mig_msg msg;
	uint64_t t_ack = 0, *pend = NULL, stale;
	int rc;

	throttle_stop(&s->thr);
	mig_set_state(m, "completing", false);
	if (s->delta)
		(void)sr_set_delta(s->w, NULL); /* the destination will run: its RAM stops being the base */
	pthread_mutex_lock(&m->lock);
	m->prog.postcopy = true;
	pthread_mutex_unlock(&m->lock);
	rc = ckpt_engine_epoch(&s->eng, &ep, s->err, sizeof(s->err));
	if (rc) {
		if (ep.io_failed)
			mig_link_error(s, rc, "migration stream failed");
		return rc; /* resumed by the engine */
	}
	if ((rc = mig_disks_flush(s)))
		goto resume;
	stale = ep.pages; /* e->bitmap: dirty since sent | not sent yet */
	size_t words = dirty_bitmap_words(s->gm->nr_pages);
	pend = malloc(words * sizeof(uint64_t));
	if (!pend) {
		rc = errf(s->err, sizeof(s->err), -ENOMEM, "out of memory");
		goto resume;
	}
	memcpy(pend, s->eng.bitmap, words * sizeof(uint64_t));
	if (s->pc_at_once) { /* paused now: the data extents are final */
		pc_all_data_pages(s, pend);
		stale = dirty_bitmap_count(pend, s->gm->nr_pages);
	}
	rc = sr_write_end(s->w);
	if (!rc)
		rc = pc_send_switch(s, pend);
	if (rc) {
		mig_link_error(s, rc, "migration stream failed");
		goto resume;
	}
	log_debug("migrate", vmm_name(m->v),
		  "post-copy: %llu pages still to come from here (paused %.1f ms ago)",
		  (unsigned long long)stale, (double)(now_ns() - ep.t_pause) / 1e6);
	rc = mig_switchover(s, &msg, &t_ack, true);
	if (rc)
		goto resume; /* not committed */
	rc = after_go(s, &ep, pend, stale, result);
	free(pend);
	return rc;
resume:
	free(pend);
	vm_resume(s->vm);
	return rc;
}
