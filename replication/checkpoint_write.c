/* checkpoint_write.c — the one page batcher: RAM pages out to the stream in chunks. */
#include <errno.h>
#include <stdlib.h>

#include "common/clock.h"
#include "hv/dirty.h"
#include "replication/checkpoint.h"

struct ckpt_batch *ckpt_batch_new(struct sr_ctx *w, int nthreads)
{
	struct ckpt_batch *b = malloc(sizeof(*b));

	if (!b)
		return NULL;
	b->w = w;
	b->nthreads = nthreads;
	b->chunk = CKPT_CHUNK_MAX;
	b->prog = NULL;
	b->on_chunk = NULL;
	b->opaque = NULL;
	b->pages = 0;
	b->n = 0;
	return b;
}

void ckpt_batch_free(struct ckpt_batch *b)
{
	free(b);
}

static void progress_add(struct ckpt_progress *p, uint64_t n)
{
	if (p)
		__atomic_fetch_add(&p->done, n, __ATOMIC_RELAXED);
}

static void progress_total(struct ckpt_progress *p, uint64_t total)
{
	if (p)
		__atomic_store_n(&p->total, total, __ATOMIC_RELAXED);
}

int ckpt_batch_flush(struct ckpt_batch *b)
{
	size_t n = b->n;
	uint64_t t;
	int rc;

	if (!n)
		return 0;
	t = now_ns();
	rc = b->nthreads > 1 ? sr_write_pages_mt(b->w, b->idx, b->ptr, n, b->nthreads)
			     : sr_write_pages(b->w, b->idx, b->ptr, n);
	b->n = 0;
	if (rc)
		return rc;
	b->pages += n;
	progress_add(b->prog, n);
	return b->on_chunk ? b->on_chunk(b->opaque, n, now_ns() - t) : 0;
}

int ckpt_batch_page(struct ckpt_batch *b, const struct guest_mem *gm, uint64_t idx)
{
	const void *p = mem_page_host(gm, idx);
	size_t chunk = b->chunk && b->chunk < CKPT_CHUNK_MAX ? b->chunk : CKPT_CHUNK_MAX;

	if (!p)
		return 0;
	b->idx[b->n] = idx;
	b->ptr[b->n] = p;
	if (++b->n >= chunk)
		return ckpt_batch_flush(b);
	return 0;
}

int ckpt_batch_write_all(struct ckpt_batch *b, const struct guest_mem *gm, bool skip_holes)
{
	uint64_t pos = 0, first, count;
	bool data;
	int rc = 0;

	progress_total(b->prog, gm->nr_pages);
	while (!rc && mem_extent_next(gm, &pos, &first, &count, &data)) {
		if (!data) {
			if (!skip_holes)
				rc = sr_write_zero_range(b->w, first, count);
			progress_add(b->prog, count);
			continue;
		}
		for (uint64_t p = first; p < first + count && !rc; p++)
			rc = ckpt_batch_page(b, gm, p);
	}
	return rc ? rc : ckpt_batch_flush(b);
}

int ckpt_batch_write_bitmap(struct ckpt_batch *b, const struct guest_mem *gm, const uint64_t *bitmap)
{
	int rc = 0;

	if (b->prog)
		progress_total(b->prog, dirty_bitmap_count(bitmap, gm->nr_pages));
	for (uint64_t pos = 0, idx; !rc && (idx = dirty_next(bitmap, gm->nr_pages, &pos)) != UINT64_MAX;)
		rc = ckpt_batch_page(b, gm, idx);
	return rc ? rc : ckpt_batch_flush(b);
}

/* ---- one-shot forms ---------------------------------------------------------------------------
 */

static int one_shot(struct sr_ctx *w, struct guest_mem *gm, const uint64_t *bitmap, int nthreads,
		    struct ckpt_progress *prog)
{
	struct ckpt_batch *b = ckpt_batch_new(w, nthreads);
	int rc;

	if (!b)
		return -ENOMEM;
	b->prog = prog;
	rc = bitmap ? ckpt_batch_write_bitmap(b, gm, bitmap) : ckpt_batch_write_all(b, gm, false);
	ckpt_batch_free(b);
	return rc;
}

int ckpt_write_all_pages(struct sr_ctx *w, struct guest_mem *gm, int nthreads)
{
	return one_shot(w, gm, NULL, nthreads, NULL);
}

int ckpt_write_all_pages_progress(struct sr_ctx *w, struct guest_mem *gm, int nthreads,
				  struct ckpt_progress *prog)
{
	return one_shot(w, gm, NULL, nthreads, prog);
}

int ckpt_write_dirty_pages(struct sr_ctx *w, struct guest_mem *gm, const uint64_t *bitmap, int nthreads)
{
	return one_shot(w, gm, bitmap, nthreads, NULL);
}

int ckpt_write_dirty_pages_progress(struct sr_ctx *w, struct guest_mem *gm, const uint64_t *bitmap,
				    int nthreads, struct ckpt_progress *prog)
{
	return one_shot(w, gm, bitmap, nthreads, prog);
}
