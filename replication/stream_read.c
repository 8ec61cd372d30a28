/* stream_read.c — checkpoint stream reader: header and record validation, epoch check, page decoding. */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replication/stream_priv.h"

/* Fuzz builds (-DDOPPEL_FUZZ) do not enforce the checksums, so mutations reach the parsers behind
 * them; every other check stays on. */
#ifdef DOPPEL_FUZZ
#define SR_FUZZING 1
#else
#define SR_FUZZING 0
#endif

/* ---- reader: bytes ---- */

static int read_exact(struct sr_ctx *ctx, void *buf, size_t len, const char *what)
{
	uint64_t off = ctx->in->bytes;
	ssize_t n = sr_in_read(ctx->in, buf, len);

	if (n == (ssize_t)len)
		return 0;
	if (n == -ETIMEDOUT)
		return sr_fail(ctx, -ETIMEDOUT,
			       "stream: timed out reading %s at offset %llu (peer silent %d ms)", what,
			       (unsigned long long)off, ctx->in->timeout_ms);
	if (n < 0)
		return sr_fail(ctx, (int)n, "stream: reading %s at offset %llu: %s", what,
			       (unsigned long long)off, strerror((int)-n));
	return sr_fail(ctx, -EPIPE, "truncated stream: EOF in %s at offset %llu (wanted %zu bytes, got %zd)",
		       what, (unsigned long long)off, len, n);
}

int sr_read_header(struct sr_ctx *ctx, struct sr_header *h)
{
	uint8_t b[SR_HDR_FIXED + 16 * SR_MAX_REGIONS + 8];
	uint32_t v;
	size_t n;
	int rc;

	if (ctx->writer || ctx->have_hdr)
		return sr_fail(ctx, -EINVAL, "stream: header read twice or on a writer");
	rc = read_exact(ctx, b, SR_HDR_FIXED, "header");
	if (rc)
		return rc;
	if (memcmp(b, SR_MAGIC, 8)) {
		char m[9];

		for (int i = 0; i < 8; i++)
			m[i] = b[i] >= 0x20 && b[i] < 0x7f && b[i] != '"' ? (char)b[i] : '?';
		m[8] = 0;
		return sr_fail(ctx, -EBADMSG, "stream: bad magic \"%s\" (not a doppel stream)", m);
	}
	if ((v = get32(b + 8)) != SR_VERSION)
		return sr_fail(ctx, -EPROTONOSUPPORT,
			       "stream: unsupported format version %u (this reader knows %u)", v, SR_VERSION);
	if ((v = get32(b + 12)) != SR_ENDIAN_MARKER)
		return sr_fail(ctx, -EBADMSG, "stream: byte-order marker 0x%08x, want 0x%08x (little endian)",
			       v, SR_ENDIAN_MARKER);
	if ((v = get32(b + 16)) != SR_PAGE_SIZE)
		return sr_fail(ctx, -EBADMSG, "stream: page size %u, this reader supports %u", v,
			       SR_PAGE_SIZE);
	if ((v = get32(b + 36)) != 0)
		return sr_fail(ctx, -EBADMSG, "stream: header flags 0x%x, must be 0 in version 1", v);
	memset(h, 0, sizeof(*h));
	h->version = SR_VERSION;
	h->page_size = SR_PAGE_SIZE;
	h->nr_vcpus = get32(b + 20);
	h->mem_size = get64(b + 24);
	h->nr_regions = get32(b + 32);
	if (h->nr_regions < 1 || h->nr_regions > SR_MAX_REGIONS)
		return sr_fail(ctx, -EBADMSG, "stream: header nr_regions %u out of range 1..%u",
			       h->nr_regions, SR_MAX_REGIONS);
	n = SR_HDR_FIXED + 16 * h->nr_regions;
	rc = read_exact(ctx, b + SR_HDR_FIXED, n + 8 - SR_HDR_FIXED, "header region table");
	if (rc)
		return rc;
	if (get64(b + n) != XXH64(b, n, 0) && !SR_FUZZING)
		return sr_fail(ctx, -EBADMSG,
			       "stream: header checksum mismatch (stream 0x%016llx, "
			       "computed 0x%016llx)",
			       (unsigned long long)get64(b + n), (unsigned long long)XXH64(b, n, 0));
	for (uint32_t i = 0; i < h->nr_regions; i++) {
		h->regions[i].gpa = get64(b + SR_HDR_FIXED + 16 * i);
		h->regions[i].size = get64(b + SR_HDR_FIXED + 16 * i + 8);
	}
	rc = sr_check_header(ctx, h);
	if (rc)
		return rc;
	h->nr_pages = h->mem_size / SR_PAGE_SIZE;
	ctx->hdr = *h;
	ctx->have_hdr = true;
	return 0;
}

/* ---- reader: records ---- */

/* Read len bytes of body (+pad) into ctx->body, growing it only as bytes actually arrive. */
static int read_body(struct sr_ctx *ctx, size_t need, const char *tn)
{
	size_t got = 0;
	char what[64];
	int rc;

	snprintf(what, sizeof(what), "record %s body", tn);
	if (!ctx->body) { /* so an empty body is still a valid pointer */
		ctx->body = malloc(64);
		if (!ctx->body)
			return sr_fail(ctx, -ENOMEM, "stream: out of memory for a record");
		ctx->body_cap = 64;
	}
	while (got < need) {
		size_t chunk = need - got < (1u << 20) ? need - got : (1u << 20);

		if (got + chunk > ctx->body_cap) {
			size_t cap = ctx->body_cap * 2;
			uint8_t *nb;

			if (cap < got + chunk)
				cap = got + chunk;
			if (cap > need)
				cap = need;
			if (cap < 64)
				cap = 64;
			nb = realloc(ctx->body, cap);
			if (!nb)
				return sr_fail(ctx, -ENOMEM, "stream: out of memory for a %zu-byte record",
					       need);
			ctx->body = nb;
			ctx->body_cap = cap;
		}
		rc = read_exact(ctx, ctx->body + got, chunk, what);
		if (rc)
			return rc;
		got += chunk;
	}
	return 0;
}

uint64_t sr_page_idx(const struct sr_record *rec, uint32_t i)
{
	return get64(rec->body + (rec->type == SR_REC_PAGE_DELTA ? 16 : 8) + 8 * (size_t)i);
}

static int parse_pages(struct sr_ctx *ctx, struct sr_record *rec)
{
	uint32_t n, enc;
	size_t fixed;

	if (rec->length < 8)
		return sr_fail(ctx, -EBADMSG, "stream: PAGE_DATA length %u too short", rec->length);
	n = get32(rec->body);
	enc = get32(rec->body + 4);
	if (n < 1 || n > SR_BATCH_PAGES)
		return sr_fail(ctx, -EBADMSG, "stream: PAGE_DATA count %u out of range 1..%u", n,
			       SR_BATCH_PAGES);
	fixed = 8 + 8 * (size_t)n;
	if (enc == SR_ENC_RAW) {
		if (rec->length != fixed + (size_t)n * SR_PAGE_SIZE)
			return sr_fail(ctx, -EBADMSG,
				       "stream: raw PAGE_DATA of %u pages has length %u, want %zu", n,
				       rec->length, fixed + (size_t)n * SR_PAGE_SIZE);
	} else if (enc == SR_ENC_ZSTD) {
		if (rec->length <= fixed)
			return sr_fail(ctx, -EBADMSG,
				       "stream: zstd PAGE_DATA of %u pages has no payload (length %u)", n,
				       rec->length);
	} else {
		return sr_fail(ctx, -EBADMSG, "stream: PAGE_DATA encoding %u unknown", enc);
	}
	rec->pages.count = n;
	rec->pages.encoding = enc;
	for (uint32_t i = 0; i < n; i++)
		if (sr_page_idx(rec, i) >= ctx->hdr.nr_pages)
			return sr_fail(ctx, -EBADMSG, "stream: PAGE_DATA page index %llu beyond %llu pages",
				       (unsigned long long)sr_page_idx(rec, i),
				       (unsigned long long)ctx->hdr.nr_pages);
	ctx->ep_data += n;
	return 0;
}

static int parse_zero(struct sr_ctx *ctx, struct sr_record *rec)
{
	uint64_t np = ctx->hdr.nr_pages, sum = 0;
	uint32_t n;

	if (rec->length < 24 || (rec->length - 8) % 16)
		return sr_fail(ctx, -EBADMSG, "stream: ZERO_PAGES length %u not 8 + 16*n (n >= 1)",
			       rec->length);
	n = get32(rec->body);
	if (n != (rec->length - 8) / 16 || get32(rec->body + 4))
		return sr_fail(ctx, -EBADMSG,
			       "stream: ZERO_PAGES nr_ranges %u disagrees with length %u or reserved set", n,
			       rec->length);
	for (uint32_t i = 0; i < n; i++) {
		uint64_t first = get64(rec->body + 8 + 16 * (size_t)i);
		uint64_t count = get64(rec->body + 16 + 16 * (size_t)i);

		if (!count || first >= np || count > np - first)
			return sr_fail(ctx, -EBADMSG, "stream: ZERO_PAGES range %llu+%llu outside %llu pages",
				       (unsigned long long)first, (unsigned long long)count,
				       (unsigned long long)np);
		sum += count;
	}
	rec->zero.nr_ranges = n;
	ctx->ep_zero += sum;
	return 0;
}

static int parse_vcpu(struct sr_ctx *ctx, struct sr_record *rec)
{
	uint32_t v;

	if (rec->length < 9 || rec->length > 8 + SR_MAX_VCPU_BLOB)
		return sr_fail(ctx, -EBADMSG, "stream: VCPU_STATE length %u out of range 9..%u", rec->length,
			       8 + SR_MAX_VCPU_BLOB);
	v = get32(rec->body);
	if (v >= ctx->hdr.nr_vcpus || get32(rec->body + 4))
		return sr_fail(ctx, -EBADMSG, "stream: VCPU_STATE vcpu %u (of %u) or reserved invalid", v,
			       ctx->hdr.nr_vcpus);
	rec->vcpu.vcpu = v;
	rec->vcpu.blob = rec->body + 8;
	rec->vcpu.blob_len = rec->length - 8;
	return 0;
}

static int parse_device(struct sr_ctx *ctx, struct sr_record *rec)
{
	const char *name;
	size_t nl;

	if (rec->length < 8 + SR_DEV_NAME_LEN)
		return sr_fail(ctx, -EBADMSG, "stream: DEVICE_STATE length %u too short", rec->length);
	name = (const char *)rec->body + 8;
	nl = strnlen(name, SR_DEV_NAME_LEN);
	if (get32(rec->body + 4) || !sr_name_ok(name, nl))
		return sr_fail(ctx, -EBADMSG, "stream: DEVICE_STATE name or reserved field invalid");
	for (size_t i = nl; i < SR_DEV_NAME_LEN; i++)
		if (name[i])
			return sr_fail(ctx, -EBADMSG, "stream: DEVICE_STATE name not NUL-padded");
	rec->dev.kind = get32(rec->body);
	memcpy(rec->dev.name, name, SR_DEV_NAME_LEN);
	rec->dev.blob = rec->body + 8 + SR_DEV_NAME_LEN;
	rec->dev.blob_len = rec->length - 8 - SR_DEV_NAME_LEN;
	return 0;
}

static int parse_ckpt(struct sr_ctx *ctx, struct sr_record *rec)
{
	uint64_t sum = XXH64_digest(ctx->xs);

	if (rec->length != 40)
		return sr_fail(ctx, -EBADMSG, "stream: CHECKPOINT_END length %u, want 40", rec->length);
	rec->ckpt.epoch = get64(rec->body);
	rec->ckpt.nr_records = get64(rec->body + 8);
	rec->ckpt.nr_data_pages = get64(rec->body + 16);
	rec->ckpt.nr_zero_pages = get64(rec->body + 24);
	rec->ckpt.checksum = get64(rec->body + 32);
	if (ctx->have_epoch && rec->ckpt.epoch <= ctx->last_epoch)
		return sr_fail(ctx, -EBADMSG, "stream: epoch %llu not after previous epoch %llu",
			       (unsigned long long)rec->ckpt.epoch, (unsigned long long)ctx->last_epoch);
	if (rec->ckpt.checksum != sum && !SR_FUZZING)
		return sr_fail(ctx, -EBADMSG,
			       "stream: epoch %llu checksum mismatch (stream 0x%016llx, computed 0x%016llx)",
			       (unsigned long long)rec->ckpt.epoch, (unsigned long long)rec->ckpt.checksum,
			       (unsigned long long)sum);
	if (rec->ckpt.nr_records != ctx->ep_records || rec->ckpt.nr_data_pages != ctx->ep_data ||
	    rec->ckpt.nr_zero_pages != ctx->ep_zero)
		return sr_fail(ctx, -EBADMSG,
			       "stream: epoch %llu counts mismatch (stream %llu records %llu+%llu pages, "
			       "read %llu records %llu+%llu pages)",
			       (unsigned long long)rec->ckpt.epoch, (unsigned long long)rec->ckpt.nr_records,
			       (unsigned long long)rec->ckpt.nr_data_pages,
			       (unsigned long long)rec->ckpt.nr_zero_pages,
			       (unsigned long long)ctx->ep_records, (unsigned long long)ctx->ep_data,
			       (unsigned long long)ctx->ep_zero);
	sr_epoch_reset(ctx);
	ctx->have_epoch = true;
	ctx->last_epoch = rec->ckpt.epoch;
	return 0;
}

static int parse_disk_write(struct sr_ctx *ctx, struct sr_record *rec)
{
	uint64_t sector, n;
	uint32_t disk, op;

	if (rec->length < SR_DISK_WRITE_HDR)
		return sr_fail(ctx, -EBADMSG, "stream: DISK_WRITE length %u too short", rec->length);
	disk = get32(rec->body);
	op = get32(rec->body + 4);
	sector = get64(rec->body + 8);
	n = get64(rec->body + 16);
	if (disk >= SR_MAX_DISKS || op > SR_DISK_OP_DISCARD || !n || n > SR_DISK_MAX_SECTORS ||
	    sector > SR_DISK_MAX_SECTORS - n)
		return sr_fail(ctx, -EBADMSG, "stream: DISK_WRITE disk %u op %u sectors %llu+%llu invalid",
			       disk, op, (unsigned long long)sector, (unsigned long long)n);
	if (rec->length - SR_DISK_WRITE_HDR != (op == SR_DISK_OP_WRITE ? n * SR_DISK_SECTOR : 0))
		return sr_fail(ctx, -EBADMSG,
			       "stream: DISK_WRITE length %u does not match %llu sectors of op %u",
			       rec->length, (unsigned long long)n, op);
	rec->disk.disk = disk;
	rec->disk.op = op;
	rec->disk.sector = sector;
	rec->disk.nr_sectors = n;
	rec->disk.data = op == SR_DISK_OP_WRITE ? rec->body + SR_DISK_WRITE_HDR : NULL;
	return 0;
}

static int parse_disk_info(struct sr_ctx *ctx, struct sr_record *rec)
{
	const char *id = (const char *)rec->body + 16;

	if (rec->length != SR_DISK_INFO_LEN)
		return sr_fail(ctx, -EBADMSG, "stream: DISK_INFO length %u, want %u", rec->length,
			       SR_DISK_INFO_LEN);
	rec->dinfo.disk = get32(rec->body);
	rec->dinfo.flags = get32(rec->body + 4);
	rec->dinfo.size = get64(rec->body + 8);
	if (rec->dinfo.disk >= SR_MAX_DISKS || rec->dinfo.flags & ~SR_DISK_F_READONLY ||
	    rec->dinfo.size < SR_DISK_SECTOR || rec->dinfo.size % SR_DISK_SECTOR || get32(rec->body + 36))
		return sr_fail(ctx, -EBADMSG, "stream: DISK_INFO disk %u size %llu flags %u invalid",
			       rec->dinfo.disk, (unsigned long long)rec->dinfo.size, rec->dinfo.flags);
	memcpy(rec->dinfo.id, id, SR_DISK_ID_LEN);
	rec->dinfo.id[SR_DISK_ID_LEN] = 0;
	rec->dinfo.content = get64(rec->body + 40);
	return 0;
}

int sr_read_record(struct sr_ctx *ctx, struct sr_record *rec)
{
	uint8_t h[8];
	char tn[32];
	int rc;

	if (ctx->dead)
		return ctx->dead;
	if (ctx->writer || !ctx->have_hdr)
		return sr_fail(ctx, -EINVAL, "stream: record read before header or on a writer");
	if (ctx->ended)
		return sr_fail(ctx, -EPIPE, "stream: read past END");
	for (;;) {
		uint64_t off = ctx->in->bytes;
		ssize_t n = sr_in_read(ctx->in, h, 8);
		size_t pad;

		if (n == 0)
			return sr_fail(ctx, -EPIPE,
				       "truncated stream: EOF before END at offset %llu (%llu records "
				       "of an unfinished epoch)",
				       (unsigned long long)off, (unsigned long long)ctx->ep_records);
		if (n != 8) {
			rc = n < 0 ? (int)n : 0;
			if (rc == -ETIMEDOUT)
				return sr_fail(ctx, rc,
					       "stream: timed out waiting for a record at "
					       "offset %llu (peer silent %d ms)",
					       (unsigned long long)off, ctx->in->timeout_ms);
			if (rc)
				return sr_fail(ctx, rc, "stream: reading record header at offset %llu: %s",
					       (unsigned long long)off, strerror(-rc));
			return sr_fail(
				ctx, -EPIPE,
				"truncated stream: EOF in record header at offset %llu (got %zd of 8 bytes)",
				(unsigned long long)off, n);
		}
		memset(rec, 0, sizeof(*rec));
		rec->type = get32(h);
		rec->length = get32(h + 4);
		sr_type_name(rec->type, tn, sizeof(tn));
		if (rec->type == 0 || (rec->type > SR_REC_PAGE_DELTA && rec->type != SR_REC_DISK_WRITE &&
				       rec->type != SR_REC_DISK_INFO && !(rec->type & SR_REC_OPTIONAL)))
			return sr_fail(ctx, -EBADMSG,
				       "stream: unknown mandatory record type 0x%x at offset %llu", rec->type,
				       (unsigned long long)off);
		if (rec->length > SR_MAX_RECORD)
			return sr_fail(ctx, -EBADMSG, "stream: record %s length %u exceeds maximum %u", tn,
				       rec->length, SR_MAX_RECORD);
		pad = pad8(rec->length);
		rc = read_body(ctx, rec->length + pad, tn);
		if (rc)
			return rc;
		rec->body = ctx->body;
		if (pad && memcmp(ctx->body + rec->length, sr_zeros, pad))
			return sr_fail(ctx, -EBADMSG, "stream: record %s at offset %llu has nonzero padding",
				       tn, (unsigned long long)off);
		if (rec->type != SR_REC_CHECKPOINT_END && rec->type != SR_REC_END)
			sr_epoch_add(ctx, h, rec->body, rec->length);
		ctx->st.records++;
		switch (rec->type) {
		case SR_REC_PAGE_DATA:
			return parse_pages(ctx, rec);
		case SR_REC_ZERO_PAGES:
			return parse_zero(ctx, rec);
		case SR_REC_PAGE_DELTA:
			return sr_parse_delta(ctx, rec);
		case SR_REC_VCPU_STATE:
			return parse_vcpu(ctx, rec);
		case SR_REC_DEVICE_STATE:
			return parse_device(ctx, rec);
		case SR_REC_CHECKPOINT_END:
			return parse_ckpt(ctx, rec);
		case SR_REC_DISK_WRITE:
			return parse_disk_write(ctx, rec);
		case SR_REC_DISK_INFO:
			return parse_disk_info(ctx, rec);
		case SR_REC_END:
			if (rec->length)
				return sr_fail(ctx, -EBADMSG, "stream: END length %u, want 0", rec->length);
			if (!ctx->have_epoch || ctx->ep_records)
				return sr_fail(
					ctx, -EBADMSG,
					"stream: END after %llu uncommitted records (no CHECKPOINT_END)",
					(unsigned long long)ctx->ep_records);
			ctx->ended = true;
			return 0;
		default:
			continue; /* unknown optional: skipped, but hashed and counted */
		}
	}
}

int sr_payload_pages(struct sr_ctx *ctx, const char *what, const uint8_t *payload, size_t plen, uint32_t enc,
		     uint32_t n, const uint8_t **pages)
{
	size_t raw = (size_t)n * SR_PAGE_SIZE, got;
	unsigned long long fcs;

	if (!ctx->pages) {
		ctx->pages = malloc((size_t)SR_BATCH_PAGES * SR_PAGE_SIZE);
		if (!ctx->pages)
			return sr_fail(ctx, -ENOMEM, "stream: out of memory for page buffer");
	}
	if (enc == SR_ENC_RAW) {
		*pages = payload;
		return 0;
	}
	if (!ctx->dctx && !(ctx->dctx = ZSTD_createDCtx()))
		return sr_fail(ctx, -ENOMEM, "stream: out of memory for zstd");
	fcs = ZSTD_getFrameContentSize(payload, plen);
	if (fcs != ZSTD_CONTENTSIZE_UNKNOWN && fcs != ZSTD_CONTENTSIZE_ERROR && fcs > raw)
		return sr_fail(ctx, -EBADMSG, "stream: %s decompressed size %llu, want %zu (%u pages)", what,
			       fcs, raw, n);
	got = ZSTD_decompressDCtx(ctx->dctx, ctx->pages, raw, payload, plen);
	if (ZSTD_isError(got))
		return sr_fail(ctx, -EBADMSG, "stream: %s zstd payload corrupt: %s", what,
			       ZSTD_getErrorName(got));
	if (got != raw)
		return sr_fail(ctx, -EBADMSG, "stream: %s decompressed size %zu, want %zu (%u pages)", what,
			       got, raw, n);
	*pages = ctx->pages;
	return 0;
}

int sr_decode_pages(struct sr_ctx *ctx, const struct sr_record *rec, sr_page_fn fn, void *opaque)
{
	const uint8_t *pages;
	uint32_t n;
	int rc;

	if (rec->type != SR_REC_PAGE_DATA || rec->body != ctx->body)
		return sr_fail(ctx, -EINVAL,
			       "stream: sr_decode_pages on a record that is not the "
			       "current PAGE_DATA");
	n = rec->pages.count;
	rc = sr_payload_pages(ctx, "PAGE_DATA", rec->body + 8 + 8 * (size_t)n,
			      rec->length - 8 - 8 * (size_t)n, rec->pages.encoding, n, &pages);
	if (rc)
		return rc;
	for (uint32_t i = 0; i < n; i++) {
		rc = fn(opaque, sr_page_idx(rec, i), pages + (size_t)i * SR_PAGE_SIZE);
		if (rc)
			return rc;
	}
	return 0;
}

int sr_decode_zero_pages(struct sr_ctx *ctx, const struct sr_record *rec, sr_zero_fn fn, void *opaque)
{
	int rc;

	if (rec->type != SR_REC_ZERO_PAGES || rec->body != ctx->body)
		return sr_fail(ctx, -EINVAL,
			       "stream: sr_decode_zero_pages on a record that is not "
			       "the current ZERO_PAGES");
	for (uint32_t i = 0; i < rec->zero.nr_ranges; i++) {
		rc = fn(opaque, get64(rec->body + 8 + 16 * (size_t)i),
			get64(rec->body + 16 + 16 * (size_t)i));
		if (rc)
			return rc;
	}
	return 0;
}
