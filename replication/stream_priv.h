/* stream_priv.h — internals of the stream codec shared by stream.c and stream_mt.c (not an API). */
#ifndef DOPPEL_REPLICATION_STREAM_PRIV_H
#define DOPPEL_REPLICATION_STREAM_PRIV_H

#include <endian.h>
#include <string.h>
#include <xxhash.h>
#include <zstd.h>

#include "common/clock.h"
#include "replication/stream.h"

/* One PAGE_DATA record: 8 header + 8 + 8*512 indices + zstd bound of 2 MiB + 8 pad. */
#define SR_BATCH_REC_CAP (16 + 8 * SR_BATCH_PAGES + ZSTD_COMPRESSBOUND(SR_BATCH_PAGES * SR_PAGE_SIZE) + 8)
#define SR_ZERO_RANGES_MAX 4096u /* ranges per ZERO_PAGES record written (64 KiB) */
#define SR_MT_MAX 16

#define SR_HDR_FIXED 40u /* header bytes before the region table */

struct sr_mt;

struct sr_ctx {
	bool writer;
	struct sr_out *out;
	struct sr_in *in;
	char err[256];
	int dead; /* reader: first fatal error, returned again by later calls */

	struct sr_header hdr;
	bool have_hdr, ended;

	/* running epoch state (both directions) */
	XXH64_state_t *xs;
	uint64_t ep_records, ep_data, ep_zero;
	bool have_epoch;
	uint64_t last_epoch;

	/* writer */
	bool compress;
	int level;
	ZSTD_CCtx *cctx;
	uint8_t *rec, *stage; /* SR_BATCH_REC_CAP, 2 MiB */
	size_t rec_cap;
	uint64_t *zr; /* pending zero ranges {first, count}, host order until flushed */
	size_t zr_n, zr_cap;
	struct sr_mt *mt;
	struct sr_delta *delta; /* not owned */
	uint8_t *snap, *drec, *dstage; /* delta: plain batch copies, PAGE_DELTA record, its XORs */
	bool stable; /* sr_set_pages_stable: pages do not change while written (no snap copy) */
	uint64_t dhash[SR_BATCH_PAGES]; /* delta: XXH3 of each base of the pending PAGE_DELTA */
	uint64_t didx[SR_BATCH_PAGES];

	/* reader */
	ZSTD_DCtx *dctx;
	uint8_t *body, *pages; /* record body (+pad), 2 MiB decompression buffer */
	size_t body_cap;
	sr_optional_fn opt_fn;
	void *opt_opaque;

	struct sr_stats st;
};

/* ---- little-endian helpers ---- */

static inline void put32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

static inline void put64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}

static inline uint32_t get32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return le32toh(v);
}

static inline uint64_t get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return le64toh(v);
}

static inline size_t pad8(size_t len)
{
	return (8 - len % 8) % 8;
}

static const uint8_t sr_zeros[8];

static inline bool sr_name_ok(const char *name, size_t n)
{
	if (n < 1 || n >= SR_DEV_NAME_LEN)
		return false;
	for (size_t i = 0; i < n; i++)
		if (name[i] < 0x21 || name[i] > 0x7e)
			return false;
	return true;
}

/* sr_out_write, its time counted in the stats (send vs encode of an epoch). */
static inline int sr_put(struct sr_ctx *ctx, const void *buf, size_t len)
{
	uint64_t t = now_ns();
	int rc = sr_out_write(ctx->out, buf, len);

	ctx->st.write_ns += now_ns() - t;
	return rc;
}

int sr_check_header(struct sr_ctx *ctx, const struct sr_header *h);
void sr_epoch_add(struct sr_ctx *ctx, const uint8_t *hdr, const void *body, size_t len);
void sr_epoch_reset(struct sr_ctx *ctx);
int sr_fail(struct sr_ctx *ctx, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
bool sr_page_is_zero(const void *page);
int sr_wr_buffers(struct sr_ctx *ctx);
/* Encode a PAGE_DATA body into rec+8 (rec[0..8) left for the record header); returns body length.
 * in_place: pages that lie contiguously in memory nobody else writes are compressed where they are
 * (not gathered into stage first); live guest pages must be gathered (a stable copy). */
size_t sr_encode_batch(ZSTD_CCtx *cctx, bool compress, int level, uint8_t *rec, uint8_t *stage,
		       const uint64_t *idx, const void *const *pages, uint32_t n, bool *zstd, bool in_place);
int sr_emit_batch(struct sr_ctx *ctx, uint8_t *rec, size_t len, uint32_t n, bool zstd);
int sr_add_zero(struct sr_ctx *ctx, uint64_t idx);
int sr_flush_zero(struct sr_ctx *ctx);
int sr_wr_check(struct sr_ctx *ctx);
/* stream_delta.c */
int sr_write_pages_delta(struct sr_ctx *ctx, const uint64_t *page_idx, const void *const *page_ptrs,
			 size_t n);
int sr_parse_delta(struct sr_ctx *ctx, struct sr_record *rec);
void sr_delta_buffers_free(struct sr_ctx *ctx);
/* Decompress a PAGE_DATA / PAGE_DELTA payload of n pages into ctx->pages (or point at it, raw). */
int sr_payload_pages(struct sr_ctx *ctx, const char *what, const uint8_t *payload, size_t plen, uint32_t enc,
		     uint32_t n, const uint8_t **pages);
void sr_mt_free(struct sr_ctx *ctx);

#endif
