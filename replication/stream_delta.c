/* stream_delta.c — PAGE_DELTA records: pages sent as the XOR against their last copy sent (writer and reader). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "replication/stream_priv.h"

/* ---- writer ---------------------------------------------------------------------------------- */

int sr_set_delta(struct sr_ctx *ctx, struct sr_delta *cache)
{
	if (!ctx->writer)
		return sr_fail(ctx, -EINVAL, "stream: delta encoding on a reader");
	if (cache && !ctx->drec) {
		ctx->snap = malloc((size_t)SR_BATCH_PAGES * SR_PAGE_SIZE);
		ctx->dstage = malloc((size_t)SR_BATCH_PAGES * SR_PAGE_SIZE);
		ctx->drec = malloc(SR_BATCH_REC_CAP + 8);
		if (!ctx->snap || !ctx->dstage || !ctx->drec) {
			sr_delta_buffers_free(ctx);
			return sr_fail(ctx, -ENOMEM, "stream: out of memory for delta buffers");
		}
	}
	if (cache)
		sr_delta_reset(cache);
	ctx->delta = cache;
	return 0;
}

void sr_set_pages_stable(struct sr_ctx *ctx, bool stable)
{
	ctx->stable = stable;
}

void sr_delta_buffers_free(struct sr_ctx *ctx)
{
	free(ctx->snap);
	free(ctx->dstage);
	free(ctx->drec);
	ctx->snap = ctx->dstage = ctx->drec = NULL;
}

/* Encode and write the pending PAGE_DELTA (ctx->didx / dhash / dstage, n pages). */
static int flush_delta(struct sr_ctx *ctx, uint32_t n)
{
	uint8_t *rec = ctx->drec, *payload;
	size_t raw = (size_t)n * SR_PAGE_SIZE, plen = 0, len;
	bool zstd = false;
	int rc;

	if (!n)
		return 0;
	payload = rec + 24 + 8 * (size_t)n;
	for (uint32_t i = 0; i < n; i++) {
		ctx->dhash[i] = htole64(ctx->dhash[i]);
		put64(rec + 24 + 8 * (size_t)i, ctx->didx[i]);
	}
	put32(rec + 8, n);
	put64(rec + 16, XXH3_64bits(ctx->dhash, 8 * (size_t)n));
	if (ctx->compress && ctx->cctx) {
		plen = ZSTD_compressCCtx(ctx->cctx, payload, ZSTD_compressBound(raw), ctx->dstage, raw,
					 ctx->level);
		zstd = !ZSTD_isError(plen) && plen < raw;
	}
	if (!zstd) {
		memcpy(payload, ctx->dstage, raw);
		plen = raw;
	}
	put32(rec + 12, zstd ? SR_ENC_ZSTD : SR_ENC_RAW);
	len = 16 + 8 * (size_t)n + plen;
	put32(rec, SR_REC_PAGE_DELTA);
	put32(rec + 4, (uint32_t)len);
	memset(rec + 8 + len, 0, pad8(len));
	sr_epoch_add(ctx, rec, rec + 8, len);
	rc = sr_put(ctx, rec, 8 + len + pad8(len));
	if (rc)
		return sr_fail(ctx, rc, "stream: writing PAGE_DELTA record: %s", strerror(-rc));
	ctx->ep_data += n;
	ctx->st.records++;
	ctx->st.delta_pages += n;
	ctx->st.delta_batches++;
	ctx->st.payload_in += raw;
	ctx->st.payload_out += plen;
	sr_delta_account(ctx->delta, plen);
	return 0;
}

static int flush_plain(struct sr_ctx *ctx, const uint64_t *idx, const void *const *ptrs, uint32_t n)
{
	bool zstd;
	size_t len;

	if (!n)
		return 0;
	len = sr_encode_batch(ctx->cctx, ctx->compress, ctx->level, ctx->rec, ctx->stage, idx, ptrs, n, &zstd,
			      true);
	return sr_emit_batch(ctx, ctx->rec, len, n, zstd);
}

/*
 * sr_write_pages with the cache: each non-zero page is first copied once (ctx->snap: a live page may
 * change while it is read, and what the cache keeps must be exactly what the stream carries; not
 * when the caller said its pages are stable: sr_set_pages_stable), then
 * encoded against the cache: unchanged pages are dropped, sparse changes go to PAGE_DELTA, the rest
 * to PAGE_DATA. Zero pages go out as ZERO_PAGES and are forgotten by the cache.
 */
int sr_write_pages_delta(struct sr_ctx *ctx, const uint64_t *page_idx, const void *const *page_ptrs, size_t n)
{
	uint64_t bidx[SR_BATCH_PAGES];
	const void *bptr[SR_BATCH_PAGES];
	uint32_t bn = 0, dn = 0;
	int rc = 0;

	for (size_t i = 0; i < n && !rc; i++) {
		uint64_t idx = page_idx[i];
		const uint8_t *snap = ctx->snap + (size_t)bn * SR_PAGE_SIZE;

		if (sr_page_is_zero(page_ptrs[i])) {
			sr_delta_forget(ctx->delta, idx);
			rc = sr_add_zero(ctx, idx);
			continue;
		}
		if (ctx->stable) /* a stage: what is read now is what the stream and the cache get */
			snap = page_ptrs[i];
		else
			memcpy((uint8_t *)snap, page_ptrs[i], SR_PAGE_SIZE);
		switch (sr_delta_encode(ctx->delta, idx, snap, ctx->dstage + (size_t)dn * SR_PAGE_SIZE,
					&ctx->dhash[dn])) {
		case SR_DELTA_UNCHANGED:
			ctx->st.delta_unchanged++;
			break;
		case SR_DELTA_XOR:
			ctx->didx[dn++] = idx;
			if (dn == SR_BATCH_PAGES) {
				rc = flush_delta(ctx, dn);
				dn = 0;
			}
			break;
		default: /* miss, dense: plain */
			bidx[bn] = idx;
			bptr[bn++] = snap;
			if (bn == SR_BATCH_PAGES) {
				rc = flush_plain(ctx, bidx, bptr, bn);
				bn = 0;
			}
		}
	}
	if (!rc)
		rc = flush_plain(ctx, bidx, bptr, bn);
	if (!rc)
		rc = flush_delta(ctx, dn);
	return rc ? rc : sr_flush_zero(ctx);
}

/* ---- reader ---------------------------------------------------------------------------------- */

int sr_parse_delta(struct sr_ctx *ctx, struct sr_record *rec)
{
	uint32_t n, enc;
	size_t fixed;

	if (rec->length < 16)
		return sr_fail(ctx, -EBADMSG, "stream: PAGE_DELTA length %u too short", rec->length);
	n = get32(rec->body);
	enc = get32(rec->body + 4);
	if (n < 1 || n > SR_BATCH_PAGES)
		return sr_fail(ctx, -EBADMSG, "stream: PAGE_DELTA count %u out of range 1..%u", n,
			       SR_BATCH_PAGES);
	fixed = 16 + 8 * (size_t)n;
	if (enc == SR_ENC_RAW) {
		if (rec->length != fixed + (size_t)n * SR_PAGE_SIZE)
			return sr_fail(ctx, -EBADMSG,
				       "stream: raw PAGE_DELTA of %u pages has length %u, want %zu", n,
				       rec->length, fixed + (size_t)n * SR_PAGE_SIZE);
	} else if (enc == SR_ENC_ZSTD) {
		if (rec->length <= fixed)
			return sr_fail(ctx, -EBADMSG,
				       "stream: zstd PAGE_DELTA of %u pages has no payload (length %u)", n,
				       rec->length);
	} else {
		return sr_fail(ctx, -EBADMSG, "stream: PAGE_DELTA encoding %u unknown", enc);
	}
	rec->delta.count = n;
	rec->delta.encoding = enc;
	rec->delta.base_hash = get64(rec->body + 8);
	for (uint32_t i = 0; i < n; i++)
		if (sr_page_idx(rec, i) >= ctx->hdr.nr_pages)
			return sr_fail(ctx, -EBADMSG, "stream: PAGE_DELTA page index %llu beyond %llu pages",
				       (unsigned long long)sr_page_idx(rec, i),
				       (unsigned long long)ctx->hdr.nr_pages);
	ctx->ep_data += n;
	return 0;
}

int sr_check_delta_base(struct sr_ctx *ctx, const struct sr_record *rec, sr_base_fn base, void *opaque)
{
	uint64_t h[SR_BATCH_PAGES], sum;
	uint32_t n;

	if (rec->type != SR_REC_PAGE_DELTA || rec->body != ctx->body)
		return sr_fail(ctx, -EINVAL,
			       "stream: sr_decode_delta on a record that is not the current PAGE_DELTA");
	n = rec->delta.count;
	/* The bases first: a receiver that does not hold exactly what the sender XORed against must
	 * refuse, never apply (its RAM would silently become garbage). */
	for (uint32_t i = 0; i < n; i++) {
		const void *b = base ? base(opaque, sr_page_idx(rec, i)) : NULL;

		if (!b)
			return sr_fail(ctx, -EBADMSG,
				       "stream: PAGE_DELTA for page %llu, but this receiver holds no copy to "
				       "apply it to",
				       (unsigned long long)sr_page_idx(rec, i));
		h[i] = htole64(XXH3_64bits(b, SR_PAGE_SIZE));
	}
	sum = XXH3_64bits(h, 8 * (size_t)n);
	if (sum != rec->delta.base_hash)
		return sr_fail(
			ctx, -EBADMSG,
			"stream: PAGE_DELTA base mismatch (pages %llu..): this receiver's copies differ from "
			"the ones the sender XORed against (hash 0x%016llx, want 0x%016llx)",
			(unsigned long long)sr_page_idx(rec, 0), (unsigned long long)sum,
			(unsigned long long)rec->delta.base_hash);
	return 0;
}

int sr_decode_delta(struct sr_ctx *ctx, const struct sr_record *rec, sr_base_fn base, sr_page_fn fn,
		    void *opaque)
{
	const uint8_t *pages;
	uint32_t n = rec->delta.count;
	int rc = sr_check_delta_base(ctx, rec, base, opaque);

	if (rc)
		return rc;
	rc = sr_payload_pages(ctx, "PAGE_DELTA", rec->body + 16 + 8 * (size_t)n,
			      rec->length - 16 - 8 * (size_t)n, rec->delta.encoding, n, &pages);
	if (rc)
		return rc;
	if (pages != ctx->pages) { /* raw: XOR into the scratch buffer, not the record */
		memcpy(ctx->pages, pages, (size_t)n * SR_PAGE_SIZE);
		pages = ctx->pages;
	}
	for (uint32_t i = 0; i < n; i++) {
		uint8_t *p = ctx->pages + (size_t)i * SR_PAGE_SIZE;

		sr_delta_xor(p, base(opaque, sr_page_idx(rec, i)));
		rc = fn(opaque, sr_page_idx(rec, i), p);
		if (rc)
			return rc;
	}
	return 0;
}
