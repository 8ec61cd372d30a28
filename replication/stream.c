/* stream.c — checkpoint stream codec: header, records, epoch checksums, zstd page batches. */
#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zstd.h>

#include "replication/stream.h"
#include "replication/stream_priv.h"
#include "common/errf.h"

int sr_fail(struct sr_ctx *ctx, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(ctx->err, sizeof(ctx->err), fmt, ap);
	va_end(ap);
	/* -EINVAL is a caller mistake caught before any byte moved; anything else breaks the stream. */
	if (rc != -EINVAL && !ctx->dead)
		ctx->dead = rc;
	return rc;
}

const char *sr_type_name(uint32_t type, char *buf, size_t len)
{
	static const char *const names[] = {NULL,	    "PAGE_DATA",      "ZERO_PAGES", "VCPU_STATE",
					    "DEVICE_STATE", "CHECKPOINT_END", "END",	    "PAGE_DELTA"};
	static const char *const disk_names[] = {"DISK_WRITE", "DISK_INFO"};

	if (type < sizeof(names) / sizeof(names[0]) && names[type])
		snprintf(buf, len, "%s", names[type]);
	else if (type >= SR_REC_DISK_WRITE && type <= SR_REC_DISK_INFO)
		snprintf(buf, len, "%s", disk_names[type - SR_REC_DISK_WRITE]);
	else
		snprintf(buf, len, "%s(0x%x)", type & SR_REC_OPTIONAL ? "OPTIONAL" : "UNKNOWN", type);
	return buf;
}

/* ---- ctx ---- */

static int ctx_new(struct sr_ctx **out)
{
	struct sr_ctx *ctx = calloc(1, sizeof(*ctx));

	*out = NULL;
	if (!ctx)
		return -ENOMEM;
	ctx->xs = XXH64_createState();
	if (!ctx->xs) {
		free(ctx);
		return -ENOMEM;
	}
	XXH64_reset(ctx->xs, 0);
	*out = ctx;
	return 0;
}

int sr_writer_new(struct sr_ctx **out, struct sr_out *o, bool compress, int level)
{
	int rc = ctx_new(out);

	if (rc)
		return rc;
	(*out)->writer = true;
	(*out)->out = o;
	sr_set_compress(*out, compress, level);
	return 0;
}

int sr_reader_new(struct sr_ctx **out, struct sr_in *in)
{
	int rc = ctx_new(out);

	if (rc)
		return rc;
	(*out)->in = in;
	return 0;
}

void sr_ctx_free(struct sr_ctx *ctx)
{
	if (!ctx)
		return;
	sr_mt_free(ctx);
	sr_delta_buffers_free(ctx);
	XXH64_freeState(ctx->xs);
	ZSTD_freeCCtx(ctx->cctx);
	ZSTD_freeDCtx(ctx->dctx);
	free(ctx->rec);
	free(ctx->stage);
	free(ctx->zr);
	free(ctx->body);
	free(ctx->pages);
	free(ctx);
}

const char *sr_error(const struct sr_ctx *ctx)
{
	return ctx->err;
}

void sr_stats(const struct sr_ctx *ctx, struct sr_stats *out)
{
	*out = ctx->st;
}

uint64_t sr_nr_pages(const struct sr_ctx *ctx)
{
	return ctx->have_hdr ? ctx->hdr.nr_pages : 0;
}

void sr_set_compress(struct sr_ctx *ctx, bool compress, int level)
{
	ctx->compress = compress;
	ctx->level = level;
}

/* ---- header ---- */

void sr_header_from_mem(struct sr_header *h, const struct guest_mem *gm, uint32_t nr_vcpus)
{
	memset(h, 0, sizeof(*h));
	h->version = SR_VERSION;
	h->page_size = SR_PAGE_SIZE;
	h->nr_vcpus = nr_vcpus;
	h->mem_size = gm->size;
	h->nr_regions = (uint32_t)gm->nr;
	for (int i = 0; i < gm->nr && i < (int)SR_MAX_REGIONS; i++)
		h->regions[i] = (struct sr_region){.gpa = gm->r[i].gpa, .size = gm->r[i].size};
	h->nr_pages = gm->size / SR_PAGE_SIZE;
}

int sr_header_check_mem(const struct sr_header *h, const struct guest_mem *gm, char *err, size_t errlen)
{
	if (h->mem_size != gm->size || h->nr_regions != (uint32_t)gm->nr)
		return errf(err, errlen, -EINVAL,
			    "stream: image has %llu bytes in %u regions, this VM %llu bytes in %d",
			    (unsigned long long)h->mem_size, h->nr_regions, (unsigned long long)gm->size,
			    gm->nr);
	for (uint32_t i = 0; i < h->nr_regions; i++)
		if (h->regions[i].gpa != gm->r[i].gpa || h->regions[i].size != gm->r[i].size)
			return errf(err, errlen, -EINVAL,
				    "stream: image region %u [0x%llx,+0x%llx) differs from VM's", i,
				    (unsigned long long)h->regions[i].gpa,
				    (unsigned long long)h->regions[i].size);
	return 0;
}

/* Shared by writer and reader: everything but magic/version/checksum. */
int sr_check_header(struct sr_ctx *ctx, const struct sr_header *h)
{
	uint64_t sum = 0, end = 0;

	if (h->nr_vcpus < 1 || h->nr_vcpus > SR_MAX_VCPUS)
		return sr_fail(ctx, -EBADMSG, "stream: header nr_vcpus %u out of range 1..%u", h->nr_vcpus,
			       SR_MAX_VCPUS);
	if (h->mem_size < SR_PAGE_SIZE || h->mem_size > SR_MAX_MEM || h->mem_size % SR_PAGE_SIZE)
		return sr_fail(ctx, -EBADMSG,
			       "stream: header mem_size %llu not a page multiple in 4096..%llu",
			       (unsigned long long)h->mem_size, (unsigned long long)SR_MAX_MEM);
	if (h->nr_regions < 1 || h->nr_regions > SR_MAX_REGIONS)
		return sr_fail(ctx, -EBADMSG, "stream: header nr_regions %u out of range 1..%u",
			       h->nr_regions, SR_MAX_REGIONS);
	for (uint32_t i = 0; i < h->nr_regions; i++) {
		const struct sr_region *r = &h->regions[i];

		if (r->gpa % SR_PAGE_SIZE || r->size % SR_PAGE_SIZE || !r->size ||
		    r->gpa + r->size < r->gpa || r->gpa < end || r->size > SR_MAX_MEM)
			return sr_fail(ctx, -EBADMSG,
				       "stream: header region %u [0x%llx,+0x%llx) unaligned, empty, "
				       "overlapping or unsorted",
				       i, (unsigned long long)r->gpa, (unsigned long long)r->size);
		end = r->gpa + r->size;
		sum += r->size;
	}
	if (sum != h->mem_size)
		return sr_fail(ctx, -EBADMSG, "stream: header regions sum to %llu, mem_size is %llu",
			       (unsigned long long)sum, (unsigned long long)h->mem_size);
	return 0;
}

int sr_write_header(struct sr_ctx *ctx, const struct sr_header *h)
{
	uint8_t b[SR_HDR_FIXED + 16 * SR_MAX_REGIONS + 8];
	size_t n;
	int rc;

	if (!ctx->writer || ctx->have_hdr)
		return sr_fail(ctx, -EINVAL, "stream: header written twice or on a reader");
	rc = sr_check_header(ctx, h);
	if (rc)
		return rc;
	memcpy(b, SR_MAGIC, 8);
	put32(b + 8, SR_VERSION);
	put32(b + 12, SR_ENDIAN_MARKER);
	put32(b + 16, SR_PAGE_SIZE);
	put32(b + 20, h->nr_vcpus);
	put64(b + 24, h->mem_size);
	put32(b + 32, h->nr_regions);
	put32(b + 36, 0);
	n = SR_HDR_FIXED;
	for (uint32_t i = 0; i < h->nr_regions; i++, n += 16) {
		put64(b + n, h->regions[i].gpa);
		put64(b + n + 8, h->regions[i].size);
	}
	put64(b + n, XXH64(b, n, 0));
	n += 8;
	rc = sr_put(ctx, b, n);
	if (rc)
		return sr_fail(ctx, rc, "stream: writing header: %s", strerror(-rc));
	ctx->hdr = *h;
	ctx->hdr.version = SR_VERSION;
	ctx->hdr.page_size = SR_PAGE_SIZE;
	ctx->hdr.nr_pages = h->mem_size / SR_PAGE_SIZE;
	ctx->have_hdr = true;
	return 0;
}

/* ---- writer: records ---- */

/* Account a record of the current epoch in the running hash (hdr = its 8-byte header). */
void sr_epoch_add(struct sr_ctx *ctx, const uint8_t *hdr, const void *body, size_t len)
{
	XXH64_update(ctx->xs, hdr, 8);
	if (len)
		XXH64_update(ctx->xs, body, len);
	ctx->ep_records++;
}

void sr_epoch_reset(struct sr_ctx *ctx)
{
	XXH64_reset(ctx->xs, 0);
	ctx->ep_records = ctx->ep_data = ctx->ep_zero = 0;
}

int sr_wr_check(struct sr_ctx *ctx)
{
	if (ctx->dead)
		return ctx->dead;
	if (!ctx->writer || !ctx->have_hdr || ctx->ended)
		return sr_fail(ctx, -EINVAL, "stream: record written %s",
			       !ctx->writer ? "on a reader"
			       : ctx->ended ? "after END"
					    : "before header");
	return 0;
}

/* Write one record made of pre[prelen] + blob[bloblen]; hash it unless it closes the epoch. */
static int wr_rec(struct sr_ctx *ctx, uint32_t type, const void *pre, size_t prelen, const void *blob,
		  size_t bloblen, bool in_epoch)
{
	uint8_t h[8 + 48];
	size_t len = prelen + bloblen;
	char tn[32];
	int rc;

	if (len > SR_MAX_RECORD || prelen > 48)
		return sr_fail(ctx, -EINVAL, "stream: record %s length %zu exceeds maximum %u",
			       sr_type_name(type, tn, sizeof(tn)), len, SR_MAX_RECORD);
	put32(h, type);
	put32(h + 4, (uint32_t)len);
	if (prelen)
		memcpy(h + 8, pre, prelen);
	if (in_epoch) {
		XXH64_update(ctx->xs, h, 8 + prelen);
		if (bloblen)
			XXH64_update(ctx->xs, blob, bloblen);
		ctx->ep_records++;
	}
	rc = sr_put(ctx, h, 8 + prelen);
	if (!rc && bloblen)
		rc = sr_put(ctx, blob, bloblen);
	if (!rc && pad8(len))
		rc = sr_put(ctx, sr_zeros, pad8(len));
	if (rc)
		return sr_fail(ctx, rc, "stream: writing %s record: %s", sr_type_name(type, tn, sizeof(tn)),
			       strerror(-rc));
	ctx->st.records++;
	return 0;
}

int sr_write_record(struct sr_ctx *ctx, uint32_t type, const void *body, size_t len)
{
	const uint8_t *b = body;
	int rc = sr_wr_check(ctx);

	if (rc)
		return rc;
	/* Account page counts as the reader will, so hand-made records still close an epoch. */
	if (type == SR_REC_PAGE_DATA && len >= 8)
		ctx->ep_data += get32(b);
	if (type == SR_REC_ZERO_PAGES)
		for (size_t off = 8; off + 16 <= len; off += 16)
			ctx->ep_zero += get64(b + off + 8);
	return wr_rec(ctx, type, NULL, 0, body, len, true);
}

int sr_write_vcpu(struct sr_ctx *ctx, uint32_t vcpu, const void *blob, size_t len)
{
	uint8_t pre[8];
	int rc = sr_wr_check(ctx);

	if (rc)
		return rc;
	if (vcpu >= ctx->hdr.nr_vcpus || len < 1 || len > SR_MAX_VCPU_BLOB)
		return sr_fail(ctx, -EINVAL, "stream: VCPU_STATE vcpu %u (of %u) blob %zu bytes invalid",
			       vcpu, ctx->hdr.nr_vcpus, len);
	put32(pre, vcpu);
	put32(pre + 4, 0);
	return wr_rec(ctx, SR_REC_VCPU_STATE, pre, 8, blob, len, true);
}

int sr_write_device(struct sr_ctx *ctx, uint32_t kind, const char *name, const void *blob, size_t len)
{
	uint8_t pre[8 + SR_DEV_NAME_LEN] = {0};
	size_t nl = name ? strnlen(name, SR_DEV_NAME_LEN) : 0;
	int rc = sr_wr_check(ctx);

	if (rc)
		return rc;
	if (!sr_name_ok(name, nl))
		return sr_fail(ctx, -EINVAL, "stream: DEVICE_STATE name must be 1..%u printable chars",
			       SR_DEV_NAME_LEN - 1);
	put32(pre, kind);
	memcpy(pre + 8, name, nl);
	return wr_rec(ctx, SR_REC_DEVICE_STATE, pre, sizeof(pre), blob, len, true);
}

int sr_write_zero_range(struct sr_ctx *ctx, uint64_t first, uint64_t count)
{
	uint8_t b[24];
	int rc = sr_wr_check(ctx);

	if (rc)
		return rc;
	if (!count || first >= ctx->hdr.nr_pages || count > ctx->hdr.nr_pages - first)
		return sr_fail(ctx, -EINVAL, "stream: zero range %llu+%llu outside %llu pages",
			       (unsigned long long)first, (unsigned long long)count,
			       (unsigned long long)ctx->hdr.nr_pages);
	if (ctx->delta)
		sr_delta_forget_range(ctx->delta, first, count);
	put32(b, 1);
	put32(b + 4, 0);
	put64(b + 8, first);
	put64(b + 16, count);
	ctx->ep_zero += count;
	ctx->st.zero_pages += count;
	return wr_rec(ctx, SR_REC_ZERO_PAGES, b, sizeof(b), NULL, 0, true);
}

int sr_write_checkpoint_end(struct sr_ctx *ctx, uint64_t epoch)
{
	uint8_t b[40];
	int rc = sr_wr_check(ctx);

	if (rc)
		return rc;
	if (ctx->have_epoch && epoch <= ctx->last_epoch)
		return sr_fail(ctx, -EINVAL, "stream: epoch %llu not after previous epoch %llu",
			       (unsigned long long)epoch, (unsigned long long)ctx->last_epoch);
	put64(b, epoch);
	put64(b + 8, ctx->ep_records);
	put64(b + 16, ctx->ep_data);
	put64(b + 24, ctx->ep_zero);
	put64(b + 32, XXH64_digest(ctx->xs));
	rc = wr_rec(ctx, SR_REC_CHECKPOINT_END, b, sizeof(b), NULL, 0, false);
	if (rc)
		return rc;
	sr_epoch_reset(ctx);
	ctx->have_epoch = true;
	ctx->last_epoch = epoch;
	return 0;
}

int sr_write_end(struct sr_ctx *ctx)
{
	int rc = sr_wr_check(ctx);

	if (rc)
		return rc;
	if (!ctx->have_epoch || ctx->ep_records)
		return sr_fail(ctx, -EINVAL, "stream: END must directly follow a CHECKPOINT_END");
	rc = wr_rec(ctx, SR_REC_END, NULL, 0, NULL, 0, false);
	if (!rc)
		ctx->ended = true;
	return rc;
}

/* ---- writer: pages ---- */

bool sr_page_is_zero(const void *page)
{
	const uint64_t *p = page;

	for (size_t i = 0; i < SR_PAGE_SIZE / 8; i += 8)
		if (p[i] | p[i + 1] | p[i + 2] | p[i + 3] | p[i + 4] | p[i + 5] | p[i + 6] | p[i + 7])
			return false;
	return true;
}

int sr_wr_buffers(struct sr_ctx *ctx)
{
	if (!ctx->rec) {
		ctx->rec_cap = SR_BATCH_REC_CAP;
		ctx->rec = malloc(ctx->rec_cap);
		ctx->stage = malloc((size_t)SR_BATCH_PAGES * SR_PAGE_SIZE);
		ctx->zr_cap = SR_ZERO_RANGES_MAX;
		ctx->zr = malloc(ctx->zr_cap * 16);
		if (!ctx->rec || !ctx->stage || !ctx->zr)
			return sr_fail(ctx, -ENOMEM, "stream: out of memory for page buffers");
	}
	if (ctx->compress && !ctx->cctx) {
		ctx->cctx = ZSTD_createCCtx();
		if (!ctx->cctx)
			return sr_fail(ctx, -ENOMEM, "stream: out of memory for zstd");
	}
	return 0;
}

size_t sr_encode_batch(ZSTD_CCtx *cctx, bool compress, int level, uint8_t *rec, uint8_t *stage,
		       const uint64_t *idx, const void *const *pages, uint32_t n, bool *zstd, bool in_place)
{
	uint8_t *payload = rec + 16 + 8 * (size_t)n;
	size_t raw = (size_t)n * SR_PAGE_SIZE, len = 0;

	put32(rec + 8, n);
	for (uint32_t i = 0; i < n; i++)
		put64(rec + 16 + 8 * (size_t)i, idx[i]);
	*zstd = false;
	if (compress && cctx) {
		const uint8_t *src = pages[0];
		bool contiguous = in_place; /* the delta writer's private copies: compress them in place */

		for (uint32_t i = 1; i < n && contiguous; i++)
			contiguous = pages[i] == src + (size_t)i * SR_PAGE_SIZE;
		if (!contiguous) {
			for (uint32_t i = 0; i < n; i++)
				memcpy(stage + (size_t)i * SR_PAGE_SIZE, pages[i], SR_PAGE_SIZE);
			src = stage;
		}
		len = ZSTD_compressCCtx(cctx, payload, ZSTD_compressBound(raw), src, raw, level);
		if (!ZSTD_isError(len) && len < raw)
			*zstd = true;
		else
			memcpy(payload, src, raw);
	} else {
		for (uint32_t i = 0; i < n; i++)
			memcpy(payload + (size_t)i * SR_PAGE_SIZE, pages[i], SR_PAGE_SIZE);
	}
	if (!*zstd)
		len = raw;
	put32(rec + 12, *zstd ? SR_ENC_ZSTD : SR_ENC_RAW);
	return 8 + 8 * (size_t)n + len;
}

/* Hash and write an encoded PAGE_DATA record (rec has room for the padding). */
int sr_emit_batch(struct sr_ctx *ctx, uint8_t *rec, size_t len, uint32_t n, bool zstd)
{
	int rc;

	put32(rec, SR_REC_PAGE_DATA);
	put32(rec + 4, (uint32_t)len);
	memset(rec + 8 + len, 0, pad8(len));
	sr_epoch_add(ctx, rec, rec + 8, len);
	rc = sr_put(ctx, rec, 8 + len + pad8(len));
	if (rc)
		return sr_fail(ctx, rc, "stream: writing PAGE_DATA record: %s", strerror(-rc));
	ctx->ep_data += n;
	ctx->st.records++;
	ctx->st.data_pages += n;
	ctx->st.payload_in += (uint64_t)n * SR_PAGE_SIZE;
	ctx->st.payload_out += len - 8 - 8 * (uint64_t)n;
	if (zstd)
		ctx->st.zstd_batches++;
	else
		ctx->st.raw_batches++;
	return 0;
}

static int flush_batch(struct sr_ctx *ctx, const uint64_t *idx, const void *const *pages, uint32_t n)
{
	bool zstd;
	size_t len;

	if (!n)
		return 0;
	len = sr_encode_batch(ctx->cctx, ctx->compress, ctx->level, ctx->rec, ctx->stage, idx, pages, n,
			      &zstd, false);
	return sr_emit_batch(ctx, ctx->rec, len, n, zstd);
}

int sr_flush_zero(struct sr_ctx *ctx)
{
	uint8_t pre[8];
	uint64_t sum = 0;
	int rc;

	if (!ctx->zr_n)
		return 0;
	for (size_t i = 0; i < ctx->zr_n; i++) {
		sum += ctx->zr[2 * i + 1];
		ctx->zr[2 * i] = htole64(ctx->zr[2 * i]);
		ctx->zr[2 * i + 1] = htole64(ctx->zr[2 * i + 1]);
	}
	put32(pre, (uint32_t)ctx->zr_n);
	put32(pre + 4, 0);
	rc = wr_rec(ctx, SR_REC_ZERO_PAGES, pre, 8, ctx->zr, ctx->zr_n * 16, true);
	ctx->zr_n = 0;
	if (rc)
		return rc;
	ctx->ep_zero += sum;
	ctx->st.zero_pages += sum;
	return 0;
}

int sr_add_zero(struct sr_ctx *ctx, uint64_t idx)
{
	if (ctx->zr_n && ctx->zr[2 * ctx->zr_n - 2] + ctx->zr[2 * ctx->zr_n - 1] == idx) {
		ctx->zr[2 * ctx->zr_n - 1]++;
		return 0;
	}
	if (ctx->zr_n == ctx->zr_cap) {
		int rc = sr_flush_zero(ctx);

		if (rc)
			return rc;
	}
	ctx->zr[2 * ctx->zr_n] = idx;
	ctx->zr[2 * ctx->zr_n + 1] = 1;
	ctx->zr_n++;
	return 0;
}

int sr_write_pages(struct sr_ctx *ctx, const uint64_t *page_idx, const void *const *page_ptrs, size_t n)
{
	uint64_t bidx[SR_BATCH_PAGES];
	const void *bptr[SR_BATCH_PAGES];
	uint32_t bn = 0;
	int rc = sr_wr_check(ctx);

	if (!rc)
		rc = sr_wr_buffers(ctx);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++) /* before writing anything */
		if (page_idx[i] >= ctx->hdr.nr_pages)
			return sr_fail(ctx, -EINVAL, "stream: page index %llu beyond %llu pages",
				       (unsigned long long)page_idx[i],
				       (unsigned long long)ctx->hdr.nr_pages);
	if (ctx->delta)
		return sr_write_pages_delta(ctx, page_idx, page_ptrs, n);
	for (size_t i = 0; i < n; i++) {
		if (sr_page_is_zero(page_ptrs[i])) {
			rc = sr_add_zero(ctx, page_idx[i]);
		} else {
			bidx[bn] = page_idx[i];
			bptr[bn++] = page_ptrs[i];
			if (bn == SR_BATCH_PAGES) {
				rc = flush_batch(ctx, bidx, bptr, bn);
				bn = 0;
			}
		}
		if (rc)
			return rc;
	}
	rc = flush_batch(ctx, bidx, bptr, bn);
	return rc ? rc : sr_flush_zero(ctx);
}

/* ---- disks ---- */

int sr_write_disk_write(struct sr_ctx *ctx, uint32_t disk, uint32_t op, uint64_t sector, uint64_t nr_sectors,
			const void *data)
{
	uint8_t pre[SR_DISK_WRITE_HDR];
	uint64_t dlen = op == SR_DISK_OP_WRITE ? nr_sectors * SR_DISK_SECTOR : 0;
	int rc = sr_wr_check(ctx);

	if (rc)
		return rc;
	if (disk >= SR_MAX_DISKS || op > SR_DISK_OP_DISCARD || !nr_sectors ||
	    nr_sectors > SR_DISK_MAX_SECTORS || sector > SR_DISK_MAX_SECTORS - nr_sectors ||
	    dlen > SR_MAX_RECORD - SR_DISK_WRITE_HDR || (dlen && !data))
		return sr_fail(ctx, -EINVAL, "stream: DISK_WRITE disk %u op %u sectors %llu+%llu invalid",
			       disk, op, (unsigned long long)sector, (unsigned long long)nr_sectors);
	put32(pre, disk);
	put32(pre + 4, op);
	put64(pre + 8, sector);
	put64(pre + 16, nr_sectors);
	return wr_rec(ctx, SR_REC_DISK_WRITE, pre, sizeof(pre), data, (size_t)dlen, true);
}

int sr_write_disk_info(struct sr_ctx *ctx, uint32_t disk, uint32_t flags, uint64_t size, const char *id,
		       uint64_t content)
{
	uint8_t b[SR_DISK_INFO_LEN] = {0};
	int rc = sr_wr_check(ctx);

	if (rc)
		return rc;
	if (disk >= SR_MAX_DISKS || flags & ~SR_DISK_F_READONLY || size < SR_DISK_SECTOR ||
	    size % SR_DISK_SECTOR)
		return sr_fail(ctx, -EINVAL, "stream: DISK_INFO disk %u size %llu flags %u invalid", disk,
			       (unsigned long long)size, flags);
	put32(b, disk);
	put32(b + 4, flags);
	put64(b + 8, size);
	if (id)
		memcpy(b + 16, id, strnlen(id, SR_DISK_ID_LEN));
	put64(b + 40, content);
	return wr_rec(ctx, SR_REC_DISK_INFO, NULL, 0, b, sizeof(b), true);
}
