/* checkpoint_bodies.c — a standby's stage of verified PAGE_DATA / PAGE_DELTA bodies, decoded straight into RAM at commit. */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "common/errf.h"
#include "common/le.h"
#include "replication/checkpoint.h"
#include "replication/stream.h"

/* Offset of the page indices in a body: PAGE_DATA {u32 n, u32 enc}, PAGE_DELTA {.., u64 base_hash}. */
static size_t idx_off(uint32_t type)
{
	return type == SR_REC_PAGE_DELTA ? 16 : 8;
}

int ckpt_stage_keep_body(struct ckpt_stage *s, const struct sr_record *rec, size_t limit)
{
	uint32_t n = rec->type == SR_REC_PAGE_DELTA ? rec->delta.count : rec->pages.count;
	uint32_t enc = rec->type == SR_REC_PAGE_DELTA ? rec->delta.encoding : rec->pages.encoding;
	size_t hdr = idx_off(rec->type) + 8 * (size_t)n;

	if (s->pages + n > limit)
		return -E2BIG;
	if (enc == SR_ENC_ZSTD) {
		/* The one thing about a zstd payload that can be checked without decoding it: the frame
		 * says it holds exactly n pages. Frames without a content size are decoded now instead. */
		unsigned long long fcs = ZSTD_getFrameContentSize(rec->body + hdr, rec->length - hdr);
		if (fcs == ZSTD_CONTENTSIZE_UNKNOWN)
			return 1;
		if (fcs != (unsigned long long)n * SR_PAGE_SIZE)
			return -EBADMSG;
	}
	if (s->nrec == s->rcap) {
		size_t cap = s->rcap ? s->rcap * 2 : 64;
		void *nr = realloc(s->recs, cap * sizeof(*s->recs));
		if (!nr)
			return -ENOMEM;
		s->recs = nr;
		s->rcap = cap;
	}
	size_t off = (s->blen + 7) & ~(size_t)7; /* 8-aligned as in the stream: raw XORs go by words */
	if (off + rec->length > s->bcap) {
		size_t cap = s->bcap ? s->bcap : (size_t)1 << 20;
		while (cap < off + rec->length)
			cap *= 2;
		void *nb = realloc(s->bodies, cap);
		if (!nb)
			return -ENOMEM;
		s->bodies = nb;
		s->bcap = cap;
	}
	memcpy(s->bodies + off, rec->body, rec->length);
	s->recs[s->nrec++] =
		(struct ckpt_body){.type = rec->type, .n = n, .enc = enc, .off = off, .len = rec->length};
	s->blen = off + rec->length;
	s->pages += n;
	return 0;
}

/* The pages of one kept body, decoded: raw payloads in place, zstd into RAM when the pages are one
 * contiguous run of a PAGE_DATA (*direct), else into the scratch buffer. */
static int decode(struct ckpt_stage *s, struct guest_mem *gm, const struct ckpt_body *b, const uint8_t **out,
		  bool *direct)
{
	const uint8_t *body = s->bodies + b->off, *ix = body + idx_off(b->type);
	size_t hdr = idx_off(b->type) + 8 * (size_t)b->n, raw = (size_t)b->n * SR_PAGE_SIZE;
	uint8_t *dst = s->scratch;

	*direct = false;
	if (b->enc == SR_ENC_RAW) {
		*out = body + hdr;
		return 0;
	}
	if (b->type == SR_REC_PAGE_DATA) {
		uint8_t *first = mem_page_host(gm, le_get64(ix));
		uint8_t *last = mem_page_host(gm, le_get64(ix + 8 * ((size_t)b->n - 1)));
		bool run = first && last == first + raw - SR_PAGE_SIZE;
		for (uint32_t i = 1; run && i < b->n; i++)
			run = le_get64(ix + 8 * (size_t)i) == le_get64(ix) + i;
		if (run) {
			dst = first;
			*direct = true;
		}
	}
	size_t got = ZSTD_decompressDCtx(s->dctx, dst, raw, body + hdr, b->len - hdr);
	if (ZSTD_isError(got) || got != raw)
		return -EBADMSG;
	*out = dst;
	return 0;
}

int ckpt_stage_apply_bodies(struct ckpt_stage *s, struct guest_mem *gm, char *err, size_t errlen)
{
	if (!s->nrec)
		return 0;
	if (!s->dctx && !(s->dctx = ZSTD_createDCtx()))
		return errf(err, errlen, -ENOMEM, "out of memory for zstd");
	if (!s->scratch && !(s->scratch = malloc((size_t)SR_BATCH_PAGES * SR_PAGE_SIZE)))
		return errf(err, errlen, -ENOMEM, "out of memory for the decode buffer");
	for (size_t r = 0; r < s->nrec; r++) {
		const struct ckpt_body *b = &s->recs[r];
		const uint8_t *ix = s->bodies + b->off + idx_off(b->type), *pages;
		bool direct;
		if (decode(s, gm, b, &pages, &direct))
			return errf(err, errlen, -EBADMSG,
				    "a verified %s record of %u pages does not decompress (the sender wrote "
				    "an invalid zstd frame)",
				    b->type == SR_REC_PAGE_DELTA ? "PAGE_DELTA" : "PAGE_DATA", b->n);
		if (direct)
			continue;
		for (uint32_t i = 0; i < b->n; i++) {
			uint8_t *dst = mem_page_host(gm, le_get64(ix + 8 * (size_t)i));
			if (!dst)
				continue; /* indices were checked against the header when read */
			if (b->type == SR_REC_PAGE_DELTA)
				sr_delta_xor(dst, pages + (size_t)i * SR_PAGE_SIZE);
			else
				memcpy(dst, pages + (size_t)i * SR_PAGE_SIZE, SR_PAGE_SIZE);
		}
	}
	return 0;
}

void ckpt_stage_bodies_free(struct ckpt_stage *s)
{
	free(s->bodies);
	free(s->recs);
	free(s->scratch);
	ZSTD_freeDCtx(s->dctx);
	s->bodies = s->scratch = NULL;
	s->recs = NULL;
	s->dctx = NULL;
	s->blen = s->bcap = s->nrec = s->rcap = 0;
}
