/* ckpt_engine.c — the one checkpoint engine (see ckpt_engine.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/errf.h"
#include "replication/ckpt_copy.h"
#include "replication/ckpt_engine.h"

#define STAGE_PREGROW 4096

int ckpt_engine_init(struct ckpt_engine *e, struct vm *vm, const struct ckpt_ops *ops, void *opaque)
{
	memset(e, 0, sizeof(*e));
	e->vm = vm;
	e->gm = vm_mem(vm);
	e->ops = ops;
	e->opaque = opaque;
	size_t words = dirty_bitmap_words(e->gm->nr_pages);
	e->bitmap = calloc(words, sizeof(uint64_t));
	e->carry = calloc(words, sizeof(uint64_t));
	if (ops->keep_hot) {
		e->hot = calloc(words, sizeof(uint64_t));
		e->seen = calloc(words, sizeof(uint64_t));
		e->seen_prev = calloc(words, sizeof(uint64_t));
	}
	e->batch = ckpt_batch_new(NULL, 1);
	if (!e->bitmap || !e->carry || (ops->keep_hot && (!e->hot || !e->seen || !e->seen_prev)) ||
	    !e->batch) {
		ckpt_engine_free(e);
		return -ENOMEM;
	}
	/* The copy helper only where the paused vCPU's core is really free: on 2 CPUs the sender and a
	 * local standby need it, and with the helper the Remus system tests were flaky here (docs/remus.md,
	 * "What bounds Remus on this host"). Best effort: without it the loop copies alone. */
	if (ops->stage && sysconf(_SC_NPROCESSORS_ONLN) >= CKPT_COPY_MIN_CPUS && ckpt_copier_new(&e->copier))
		e->copier = NULL;
	return 0;
}

int ckpt_engine_start(struct ckpt_engine *e, char *err, size_t errlen)
{
	return ckpt_engine_start_flags(e, e->ops->log_flags, err, errlen);
}

int ckpt_engine_start_flags(struct ckpt_engine *e, unsigned flags, char *err, size_t errlen)
{
	int rc;

	if (e->hot) {
		size_t sz = dirty_bitmap_words(e->gm->nr_pages) * sizeof(uint64_t);
		memset(e->hot, 0, sz);
		memset(e->seen, 0, sz);
		memset(e->seen_prev, 0, sz);
	}
	e->hot_pages = 0;
	e->hot_age = e->win_age = e->hot_slice = 0;
	/* Touched now so the first epochs do not fault the stage in inside the pause. */
	if (e->ops->stage && !e->stage.cap && !ckpt_stage_reserve(&e->stage, STAGE_PREGROW))
		memset(e->stage.data, 0, e->stage.cap * GUEST_PAGE_SIZE);
	rc = e->log ? 0 : dirty_log_start(&e->log, e->vm, flags, err, errlen); /* running: resume */
	if (rc) {
		e->log = NULL;
		return rc;
	}
	if (e->disks && (rc = disk_repl_start(e->disks))) {
		ckpt_engine_stop(e);
		return errf(err, errlen, rc, "cannot start the disk write log: %s", strerror(-rc));
	}
	return 0;
}

void ckpt_engine_stop(struct ckpt_engine *e)
{
	if (e->disks)
		disk_repl_stop(e->disks);
	dirty_log_free(e->log);
	e->log = NULL;
}

void ckpt_engine_free(struct ckpt_engine *e)
{
	ckpt_engine_stop(e);
	free(e->bitmap);
	free(e->carry);
	free(e->hot);
	free(e->seen);
	free(e->seen_prev);
	ckpt_batch_free(e->batch);
	ckpt_copier_free(e->copier);
	ckpt_stage_free(&e->stage);
	memset(e, 0, sizeof(*e));
}

/* keep_hot: a page dirty at this sync that was also dirty at any sync of the last
 * CKPT_HOT_WINDOW..2*CKPT_HOT_WINDOW epochs stays writable (e->hot is the keep set handed to the
 * sync). "Dirty at two syncs in a row" alone never learns a hot set the guest sweeps more slowly
 * than one pass per epoch -- and a guest faulting on every page (3-10 us each here) sweeps a 64 MiB
 * set in ~6 epochs, so it stayed slow for ever (0.1 % of its speed). Every CKPT_HOT_COOL epochs one
 * of CKPT_HOT_SLICES slices of the set is re-protected, so pages that went cold stop being copied
 * (each page is re-checked every CKPT_HOT_COOL * CKPT_HOT_SLICES epochs). */
static int64_t hot_sync(struct ckpt_engine *e, size_t words)
{
	bool cool = ++e->hot_age >= CKPT_HOT_COOL;
	int64_t n;

	if (cool) {
		/* One slice of the keep set (bitmap words w with w % CKPT_HOT_SLICES == slice) is
		 * re-protected: its still-hot pages fault once and are kept again at the next sync.
		 * Slices spread the faults (a whole 64 MiB set at once costs the guest ~160 ms). */
		for (size_t i = e->hot_slice; i < words; i += CKPT_HOT_SLICES)
			e->hot[i] = 0;
		e->hot_slice = (e->hot_slice + 1) % CKPT_HOT_SLICES;
		e->hot_age = 0;
	}
	if (++e->win_age >= CKPT_HOT_WINDOW) {
		uint64_t *t = e->seen_prev;
		e->seen_prev = e->seen;
		e->seen = t;
		memset(e->seen, 0, words * sizeof(uint64_t));
		e->win_age = 0;
	}
	n = dirty_log_sync_keep(e->log, e->bitmap, e->hot);
	if (n < 0)
		return n;
	if (n > CKPT_HOT_MAX) { /* too big to copy every epoch: forget it all */
		memset(e->hot, 0, words * sizeof(uint64_t));
		memset(e->seen, 0, words * sizeof(uint64_t));
		memset(e->seen_prev, 0, words * sizeof(uint64_t));
		e->hot_pages = 0;
		return n;
	}
	uint64_t kept = 0;
	for (size_t i = 0; i < words; i++) {
		kept += (uint64_t)__builtin_popcountll(e->bitmap[i] & e->hot[i]);
		e->seen[i] |= e->bitmap[i];
		e->hot[i] = e->seen[i] | e->seen_prev[i];
	}
	e->hot_pages = kept;
	return n;
}

/* Paused: the dirty set into e->bitmap (| ep->merge). Returns its page count or -errno. */
static int64_t epoch_sync(struct ckpt_engine *e, struct ckpt_epoch *ep)
{
	size_t words = dirty_bitmap_words(e->gm->nr_pages);
	int64_t n;

	if (!e->log) {
		memset(e->bitmap, 0, words * sizeof(uint64_t));
		n = 0;
	} else if (e->ops->keep_hot) {
		n = hot_sync(e, words);
	} else {
		n = dirty_log_sync(e->log, e->bitmap);
	}
	if (n == -ECANCELED && ep->all_pages) {
		/* replication or migration took the log over: a full image needs none */
		ckpt_engine_stop(e);
		memset(e->bitmap, 0, words * sizeof(uint64_t));
		n = 0;
	}
	if (n >= 0 && ep->merge) {
		for (size_t i = 0; i < words; i++)
			e->bitmap[i] |= ep->merge[i];
		n = (int64_t)dirty_bitmap_count(e->bitmap, e->gm->nr_pages);
	}
	return n;
}

/* Paused: copy the dirty pages into the stage (Remus): list them (ptrs = their RAM), then copy, on
 * two cores for a large epoch (ckpt_copy.h). */
static int stage_pages(struct ckpt_engine *e, struct ckpt_epoch *ep, uint64_t n, char *err, size_t errlen)
{
	struct ckpt_stage *stg = &e->stage;
	uint64_t pos = 0, p;

	if (ckpt_stage_reserve(stg, (size_t)n))
		return errf(err, errlen, -ENOMEM, "checkpoint capture failed: out of memory");
	stg->n = 0;
	while ((p = dirty_next(e->bitmap, e->gm->nr_pages, &pos)) != UINT64_MAX) {
		const void *src = mem_page_host(e->gm, p);
		if (src) {
			stg->idx[stg->n] = p;
			stg->ptrs[stg->n++] = src;
		}
	}
	ep->ph.helped = ckpt_copier_copy(e->copier, stg);
	e->copy_helped += ep->ph.helped;
	stg->epoch = ep->epoch;
	stg->pages = stg->n;
	return 0;
}

/* Paused: pages (from RAM), state, CHECKPOINT_END to ep->w. */
static int write_epoch(struct ckpt_engine *e, struct ckpt_epoch *ep, char *err, size_t errlen)
{
	struct ckpt_batch *b = e->batch;
	int rc;

	b->w = ep->w;
	rc = ep->state_only  ? 0
	     : ep->all_pages ? ckpt_batch_write_all(b, e->gm, false)
			     : ckpt_batch_write_bitmap(b, e->gm, e->bitmap);
	if (!rc)
		rc = ckpt_state_write(ep->w, &e->stage.st);
	if (!rc && (rc = disk_repl_epoch(e->disks, ep->w, ep->all_pages, ep->disk_data, ep->disk_sidecar, err,
					 errlen))) {
		ep->io_failed = *sr_error(ep->w) != 0;
		return rc;
	}
	if (!rc)
		rc = sr_write_checkpoint_end(ep->w, ep->epoch);
	ep->io_failed = rc != 0;
	if (rc)
		return errf(err, errlen, rc, "%s", *sr_error(ep->w) ? sr_error(ep->w) : strerror(-rc));
	return 0;
}

int ckpt_engine_epoch(struct ckpt_engine *e, struct ckpt_epoch *ep, char *err, size_t errlen)
{
	char cerr[256];
	uint64_t t_kick, t_sync, t_cap, t_copy;
	int64_t n;
	int rc;

	ep->quiesced = ep->io_failed = false;
	ep->t_pause = now_ns();
	rc = vm_pause(e->vm);
	if (rc)
		return errf(err, errlen, rc, "cannot pause the VM: %s", strerror(-rc));
	ep->quiesced = true;
	t_kick = now_ns();
	n = epoch_sync(e, ep);
	t_sync = now_ns();
	if (n < 0) {
		rc = errf(err, errlen, (int)n, "dirty log sync failed: %s", strerror((int)-n));
		goto resume;
	}
	ep->pages = ep->all_pages ? e->gm->nr_pages : (uint64_t)n;
	rc = ckpt_state_capture(&e->stage.st, e->vm, cerr, sizeof(cerr));
	if (rc) {
		errf(err, errlen, rc, "checkpoint capture failed: %s",
		     rc == -ENOMEM ? "out of memory" : cerr);
		goto resume;
	}
	e->stage.have_state = true;
	t_cap = now_ns();
	rc = e->ops->stage ? stage_pages(e, ep, (uint64_t)n, err, errlen) : write_epoch(e, ep, err, errlen);
	if (!rc && e->ops->stage) /* the writes completed in this epoch go out with its stage */
		e->stage.disk_out = disk_repl_freeze(e->disks);
	t_copy = now_ns();
	if (!rc && e->ops->commit)
		rc = e->ops->commit(e, ep, err, errlen);
	if (rc)
		goto resume;
	ep->ph.kick = t_kick - ep->t_pause;
	ep->ph.sync = t_sync - t_kick;
	ep->ph.capture = t_cap - t_sync;
	ep->ph.copy = t_copy - t_cap;
	if (!ep->stay_paused)
		vm_resume(e->vm); /* releases this hold only: an operator's pause stays */
	ep->pause_ns = now_ns() - ep->t_pause;
	return 0;
resume:
	vm_resume(e->vm);
	return rc;
}

/* ---- pre-copy -------------------------------------------------------------------------------- */

static int sync_err(int64_t n, char *err, size_t errlen)
{
	return errf(err, errlen, (int)n, "dirty log sync failed: %s", strerror((int)-n));
}

int ckpt_engine_precopy(struct ckpt_engine *e, struct sr_ctx *w, const struct ckpt_policy *pol, void *opaque,
			uint64_t *epoch, bool *io_failed, char *err, size_t errlen)
{
	struct ckpt_batch *b = e->batch;
	struct ckpt_round rd = {.round = 1, .epoch = *epoch, .t_start = now_ns()};
	uint64_t before = b->pages;
	bool last = false;
	int64_t n;
	int rc;

	*io_failed = false;
	b->w = w;
	if (!(e->ops->log_flags & DIRTY_START_CLEAN) && (n = dirty_log_sync(e->log, e->bitmap)) < 0)
		return sync_err(n, err, errlen);
	rc = ckpt_batch_write_all(b, e->gm, pol->skip_holes);
	for (;;) {
		rd.sent = b->pages - before;
		if (!rc)
			rc = sr_write_checkpoint_end(w, rd.epoch);
		if (rc) {
			*io_failed = true;
			return errf(err, errlen, rc, "%s", *sr_error(w) ? sr_error(w) : strerror(-rc));
		}
		*epoch = rd.epoch + 1;
		if (pol->round_end && (rc = pol->round_end(opaque, &rd)))
			return rc;
		if (last)
			return 0;
		rd.t_sync = now_ns();
		n = dirty_log_sync(e->log, e->bitmap);
		if (n < 0)
			return sync_err(n, err, errlen);
		rd.dirty = (uint64_t)n;
		rc = pol->next(opaque, &rd);
		if (rc < 0)
			return rc;
		if (rc == CKPT_STOP) {
			uint64_t *t = e->carry;
			e->carry = e->bitmap;
			e->bitmap = t;
			return 0;
		}
		last = rc == CKPT_LAST_ROUND;
		rd.round++;
		rd.epoch++;
		rd.t_start = rd.t_sync;
		before = b->pages;
		rc = ckpt_batch_write_bitmap(b, e->gm, e->bitmap);
	}
}
