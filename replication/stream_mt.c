/* stream_mt.c — parallel PAGE_DATA compression: worker threads encode batches, the caller writes them in order. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "replication/stream_priv.h"

/*
 * Worker w encodes batches w, w+nt, w+2nt... each into its own slot; the calling thread takes
 * slots in batch order, hashes and writes them. So the bytes on the wire are in a fixed order and
 * the epoch checksum is computed exactly as single-threaded. A slot is FREE or READY.
 */
struct sr_mt_slot {
	uint8_t *rec, *stage;
	ZSTD_CCtx *cctx;
	size_t len;
	uint32_t n;
	bool zstd, ready;
};

struct sr_mt {
	int nt; /* slots allocated */
	int running; /* threads of the current call */
	struct sr_mt_slot slot[SR_MT_MAX];
	pthread_mutex_t lock;
	pthread_cond_t cv;
	bool abort;
	/* the current call */
	const uint64_t *idx;
	const void *const *ptrs;
	size_t nnz, nb;
	bool compress;
	int level;
};

struct mt_arg {
	struct sr_mt *mt;
	int w;
};

void sr_mt_free(struct sr_ctx *ctx)
{
	struct sr_mt *mt = ctx->mt;

	if (!mt)
		return;
	for (int i = 0; i < mt->nt; i++) {
		free(mt->slot[i].rec);
		free(mt->slot[i].stage);
		ZSTD_freeCCtx(mt->slot[i].cctx);
	}
	pthread_mutex_destroy(&mt->lock);
	pthread_cond_destroy(&mt->cv);
	free(mt);
	ctx->mt = NULL;
}

static int mt_setup(struct sr_ctx *ctx, int nt)
{
	struct sr_mt *mt = ctx->mt;

	if (!mt) {
		mt = calloc(1, sizeof(*mt));
		if (!mt)
			return -ENOMEM;
		pthread_mutex_init(&mt->lock, NULL);
		pthread_cond_init(&mt->cv, NULL);
		ctx->mt = mt;
	}
	for (; mt->nt < nt; mt->nt++) {
		struct sr_mt_slot *s = &mt->slot[mt->nt];

		s->rec = malloc(SR_BATCH_REC_CAP);
		s->stage = malloc((size_t)SR_BATCH_PAGES * SR_PAGE_SIZE);
		s->cctx = ZSTD_createCCtx();
		if (!s->rec || !s->stage || !s->cctx) {
			free(s->rec);
			free(s->stage);
			ZSTD_freeCCtx(s->cctx);
			memset(s, 0, sizeof(*s));
			return -ENOMEM;
		}
	}
	return 0;
}

static void *mt_worker(void *arg)
{
	struct mt_arg *a = arg;
	struct sr_mt *mt = a->mt;
	struct sr_mt_slot *s = &mt->slot[a->w];

	for (size_t b = (size_t)a->w; b < mt->nb; b += (size_t)mt->running) {
		size_t first = b * SR_BATCH_PAGES;
		uint32_t n = (uint32_t)(mt->nnz - first < SR_BATCH_PAGES ? mt->nnz - first : SR_BATCH_PAGES);

		bool abort;

		pthread_mutex_lock(&mt->lock);
		while (s->ready && !mt->abort)
			pthread_cond_wait(&mt->cv, &mt->lock);
		abort = mt->abort;
		pthread_mutex_unlock(&mt->lock);
		if (abort)
			break;
		s->len = sr_encode_batch(s->cctx, mt->compress, mt->level, s->rec, s->stage, mt->idx + first,
					 mt->ptrs + first, n, &s->zstd, false);
		s->n = n;
		pthread_mutex_lock(&mt->lock);
		s->ready = true;
		pthread_cond_broadcast(&mt->cv);
		pthread_mutex_unlock(&mt->lock);
	}
	return NULL;
}

int sr_write_pages_mt(struct sr_ctx *ctx, const uint64_t *page_idx, const void *const *page_ptrs, size_t n,
		      int nthreads)
{
	struct mt_arg args[SR_MT_MAX];
	pthread_t th[SR_MT_MAX];
	uint64_t *nz_idx = NULL;
	const void **nz_ptr = NULL;
	struct sr_mt *mt;
	size_t nnz = 0;
	int rc, started = 0;

	if (nthreads <= 1 || n <= SR_BATCH_PAGES || ctx->delta)
		return sr_write_pages(ctx, page_idx, page_ptrs, n);
	if (nthreads > SR_MT_MAX)
		nthreads = SR_MT_MAX;
	rc = sr_wr_check(ctx);
	if (!rc)
		rc = sr_wr_buffers(ctx);
	if (rc)
		return rc;
	rc = mt_setup(ctx, nthreads);
	nz_idx = malloc(n * sizeof(*nz_idx));
	nz_ptr = malloc(n * sizeof(*nz_ptr));
	if (rc || !nz_idx || !nz_ptr) {
		rc = sr_fail(ctx, -ENOMEM, "stream: out of memory for compression threads");
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		if (page_idx[i] >= ctx->hdr.nr_pages) {
			rc = sr_fail(ctx, -EINVAL, "stream: page index %llu beyond %llu pages",
				     (unsigned long long)page_idx[i], (unsigned long long)ctx->hdr.nr_pages);
			goto out;
		}
	/* Split: zero pages become ranges now, the rest is compacted for the workers. */
	for (size_t i = 0; i < n; i++) {
		if (sr_page_is_zero(page_ptrs[i])) {
			rc = sr_add_zero(ctx, page_idx[i]);
			if (rc)
				goto out;
		} else {
			nz_idx[nnz] = page_idx[i];
			nz_ptr[nnz++] = page_ptrs[i];
		}
	}
	mt = ctx->mt;
	mt->idx = nz_idx;
	mt->ptrs = nz_ptr;
	mt->nnz = nnz;
	mt->nb = (nnz + SR_BATCH_PAGES - 1) / SR_BATCH_PAGES;
	mt->compress = ctx->compress;
	mt->level = ctx->level;
	mt->abort = false;
	mt->running = nthreads;
	for (int w = 0; w < nthreads; w++)
		mt->slot[w].ready = false;
	for (; started < nthreads; started++) {
		args[started] = (struct mt_arg){.mt = mt, .w = started};
		if (pthread_create(&th[started], NULL, mt_worker, &args[started])) {
			rc = sr_fail(ctx, -EAGAIN, "stream: cannot start compression threads");
			break;
		}
	}
	for (size_t b = 0; !rc && b < mt->nb; b++) {
		struct sr_mt_slot *s = &mt->slot[b % (size_t)nthreads];

		pthread_mutex_lock(&mt->lock);
		while (!s->ready)
			pthread_cond_wait(&mt->cv, &mt->lock);
		pthread_mutex_unlock(&mt->lock);
		rc = sr_emit_batch(ctx, s->rec, s->len, s->n, s->zstd);
		pthread_mutex_lock(&mt->lock);
		s->ready = false;
		if (rc)
			mt->abort = true;
		pthread_cond_broadcast(&mt->cv);
		pthread_mutex_unlock(&mt->lock);
	}
	if (rc) {
		pthread_mutex_lock(&mt->lock);
		mt->abort = true;
		pthread_cond_broadcast(&mt->cv);
		pthread_mutex_unlock(&mt->lock);
	}
	for (int w = 0; w < started; w++)
		pthread_join(th[w], NULL);
	if (!rc)
		rc = sr_flush_zero(ctx);
out:
	free(nz_idx);
	free(nz_ptr);
	return rc;
}
