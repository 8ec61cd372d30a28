/* stream.h — the versioned checkpoint stream (snapshots, Remus, migration): records, writer, reader. */
#ifndef DOPPEL_REPLICATION_STREAM_H
#define DOPPEL_REPLICATION_STREAM_H

/*
 * The byte format is specified in docs/stream.md; this header mirrors it. Summary:
 *   header  "DOPPELSR" u32 version u32 0x01020304 u32 page_size u32 nr_vcpus u64 mem_size
 *           u32 nr_regions u32 flags {u64 gpa,u64 size}[nr_regions] u64 xxh64(header)
 *   record  u32 type (bit 31 = OPTIONAL), u32 length (<= 64 MiB), body, zero pad to 8
 *   epoch   records ... CHECKPOINT_END{epoch, nr_records, nr_data_pages, nr_zero_pages, xxh64}
 *   END     after a CHECKPOINT_END
 *   DISK_WRITE{u32 disk, u32 op, u64 sector, u64 nr_sectors, data}  DISK_INFO{u32 disk, u32 flags,
 *           u64 size, u8 id[20], u32 0, u64 content}: a disk's writes of the epoch / its identity
 * All functions return 0 (or a documented count) on success and -errno on failure; on failure
 * sr_error(ctx) holds one line naming what was wrong. A ctx is either a writer or a reader, owns
 * its zstd contexts and buffers, and is not thread-safe (use one per stream).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hv/mem.h"
#include "replication/delta.h"
#include "replication/rw.h"

#define SR_MAGIC "DOPPELSR"
#define SR_VERSION 1u
#define SR_ENDIAN_MARKER 0x01020304u
#define SR_PAGE_SIZE 4096u
#define SR_MAX_VCPUS 1024u
#define SR_MAX_MEM (1ull << 40)
#define SR_MAX_REGIONS 8u
#define SR_MAX_RECORD (64u << 20) /* body length limit */
#define SR_BATCH_PAGES 512u /* PAGE_DATA count limit (2 MiB of payload) */
#define SR_MAX_VCPU_BLOB (1u << 20)
#define SR_DEV_NAME_LEN 32u /* includes the terminating NUL */

#define SR_REC_OPTIONAL 0x80000000u
/* COLO records (docs/stream.md, docs/colo.md), all optional: plain readers skip them.
 * PVM -> SVM on the checkpoint stream: INBOUND, CKPT_REQ. SVM -> PVM as REMUS_MSG_RECORD bodies:
 * OUTPUT, DIRTY, CKPT_ACK. Little endian. */
#define SR_REC_COLO_INBOUND (SR_REC_OPTIONAL | 0x200u) /* u32 netidx, u32 0, frame: for the SVM's NIC */
#define SR_REC_COLO_OUTPUT (SR_REC_OPTIONAL | 0x201u) /* u32 netidx, u32 0, frame the SVM sent */
#define SR_REC_COLO_DIRTY (SR_REC_OPTIONAL | 0x202u) /* u64 epoch, u64 nr_pages, bitmap (u64 words) */
#define SR_REC_COLO_CKPT_REQ (SR_REC_OPTIONAL | 0x203u) /* u64 epoch, u32 reason, u32 0: pause, send DIRTY */
#define SR_REC_COLO_CKPT_ACK (SR_REC_OPTIONAL | 0x204u) /* u64 epoch, u64 apply ns: applied, running */
enum sr_rec_type {
	SR_REC_PAGE_DATA = 1,
	SR_REC_ZERO_PAGES = 2,
	SR_REC_VCPU_STATE = 3,
	SR_REC_DEVICE_STATE = 4,
	SR_REC_CHECKPOINT_END = 5,
	SR_REC_END = 6,
	SR_REC_PAGE_DELTA = 7, /* mandatory: a reader that does not know it must refuse the stream */
	/* 8..15 left for memory encodings; disks (docs/stream.md, docs/disk.md) */
	SR_REC_DISK_WRITE = 16,
	SR_REC_DISK_INFO = 17,
};

#define SR_MAX_DISKS 64u /* DISK_WRITE / DISK_INFO disk index limit */
#define SR_DISK_SECTOR 512u
#define SR_DISK_WRITE_HDR 24u /* u32 disk, u32 op, u64 sector, u64 nr_sectors */
#define SR_DISK_MAX_SECTORS (1ull << 54) /* sector + nr_sectors bound: byte offsets fit in 63 bits */
#define SR_DISK_ID_LEN 20u /* the virtio-blk GET_ID serial, NUL-padded, not terminated */
#define SR_DISK_INFO_LEN 48u
#define SR_DISK_F_READONLY 1u
enum sr_disk_op {
	SR_DISK_OP_WRITE = 0, /* data: nr_sectors * 512 bytes follow */
	SR_DISK_OP_ZEROES = 1, /* the sectors read as zero afterwards */
	SR_DISK_OP_DISCARD = 2, /* the sectors' contents are undefined afterwards (holes punched) */
};

enum sr_page_encoding { SR_ENC_RAW = 0, SR_ENC_ZSTD = 1 };

struct sr_region {
	uint64_t gpa, size;
};

struct sr_header {
	uint32_t version; /* filled by the reader; the writer always writes SR_VERSION */
	uint32_t page_size; /* ditto, SR_PAGE_SIZE */
	uint32_t nr_vcpus;
	uint64_t mem_size;
	uint32_t nr_regions;
	struct sr_region regions[SR_MAX_REGIONS];
	uint64_t nr_pages; /* mem_size / SR_PAGE_SIZE, filled by both sr_write_header and the reader */
};

/* The record the reader returned last. Pointers point into the ctx and are valid until the next
 * sr_read_record or sr_ctx_free. Only the member of the union matching `type` is set. */
struct sr_record {
	uint32_t type; /* SR_REC_* (unknown optional records are skipped, never returned) */
	uint32_t length; /* body length */
	const uint8_t *body;
	union {
		struct {
			uint32_t count, encoding; /* indices: sr_page_idx(rec, i) */
		} pages;
		struct {
			uint32_t count, encoding; /* indices: sr_page_idx(rec, i) */
			uint64_t base_hash;
		} delta;
		struct {
			uint32_t nr_ranges;
		} zero;
		struct {
			uint32_t vcpu;
			const uint8_t *blob;
			uint32_t blob_len;
		} vcpu;
		struct {
			uint32_t kind;
			char name[SR_DEV_NAME_LEN];
			const uint8_t *blob;
			uint32_t blob_len;
		} dev;
		struct {
			uint64_t epoch, nr_records, nr_data_pages, nr_zero_pages, checksum;
		} ckpt;
		struct {
			uint32_t disk, op; /* disk < SR_MAX_DISKS, op enum sr_disk_op */
			uint64_t sector,
				nr_sectors; /* nr_sectors >= 1, sector + nr_sectors <= SR_DISK_MAX_SECTORS */
			const uint8_t *data; /* OP_WRITE: nr_sectors * 512 bytes; else NULL */
		} disk;
		struct {
			uint32_t disk, flags; /* flags: SR_DISK_F_READONLY */
			uint64_t size; /* bytes, a multiple of 512, >= 512 */
			char id[SR_DISK_ID_LEN + 1]; /* NUL-terminated copy of the serial */
			uint64_t content; /* xxh64 of the disk's 64 KiB block xxh64s; 0: not recorded */
		} dinfo;
	};
};

struct sr_stats {
	uint64_t records, data_pages, zero_pages, raw_batches, zstd_batches;
	uint64_t payload_in, payload_out; /* page bytes before / after compression */
	uint64_t delta_pages, delta_batches; /* pages / records sent as PAGE_DELTA */
	uint64_t delta_unchanged; /* dirty pages not sent at all: identical to their last copy */
	uint64_t write_ns; /* writer: time spent in the output's write (the rest is encoding) */
};

struct sr_ctx;

/* Writer over `out` (not owned; must outlive the ctx). compress=false writes raw PAGE_DATA
 * (--compress none); otherwise zstd at `level` (1 recommended; negative levels are faster).
 * Returns 0 or -ENOMEM. */
int sr_writer_new(struct sr_ctx **ctx, struct sr_out *out, bool compress, int level)
	__attribute__((warn_unused_result));
/* Reader over `in` (not owned). Returns 0 or -ENOMEM. */
int sr_reader_new(struct sr_ctx **ctx, struct sr_in *in) __attribute__((warn_unused_result));
void sr_ctx_free(struct sr_ctx *ctx); /* NULL-safe */
const char *sr_error(const struct sr_ctx *ctx); /* "" when no error */
void sr_stats(const struct sr_ctx *ctx, struct sr_stats *out);
/* RAM pages of the image: the header's nr_pages once it was written or read, else 0. */
uint64_t sr_nr_pages(const struct sr_ctx *ctx);
/* Change compression between records (writer only). */
void sr_set_compress(struct sr_ctx *ctx, bool compress, int level);
/* Delta encoding (writer only; docs/stream.md PAGE_DELTA): from now on sr_write_pages sends a page
 * found in `cache` with its last copy sent as the XOR against it, skips it when unchanged, and
 * caches every page it sends. The cache is emptied here (it must describe what THIS stream's
 * receiver holds) and is not owned; NULL turns delta encoding off. Only for a receiver whose RAM is
 * updated by every epoch in order (Remus, migration), never for a file. Pages then go out through
 * sr_write_pages only (sr_write_pages_mt falls back to it); sr_write_zero_range forgets its
 * pages. Attach it before the first page of the stream. Returns 0, or -EINVAL on a reader, -ENOMEM. */
int sr_set_delta(struct sr_ctx *ctx, struct sr_delta *cache);

/* Pages handed to sr_write_pages do not change while it runs (a Remus stage, not live RAM): the
 * delta writer then encodes and caches them where they are instead of copying each first. Writer
 * only; live pages again with false. */
void sr_set_pages_stable(struct sr_ctx *ctx, bool stable);
/* Fill a header from a VM's memory layout (hv/mem.h). */
void sr_header_from_mem(struct sr_header *h, const struct guest_mem *gm, uint32_t nr_vcpus);
/* 0 when h describes exactly gm's RAM layout, else -EINVAL with a line in err. */
int sr_header_check_mem(const struct sr_header *h, const struct guest_mem *gm, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* ---- writer ---- */

/* Validate h (same rules as the reader) and write it. Must be called first, once. */
int sr_write_header(struct sr_ctx *ctx, const struct sr_header *h) __attribute__((warn_unused_result));
/*
 * Write n pages: page_ptrs[i] points at the 4096 bytes of page page_idx[i] (< nr_pages, else
 * -EINVAL; indices must be distinct within an epoch, which is not checked). All-zero pages go out as ZERO_PAGES (consecutive indices merged),
 * the rest as PAGE_DATA batches of up to SR_BATCH_PAGES, each compressed as one unit (one
 * ZSTD_compressCCtx per batch, reused CCtx) unless compression is off or did not shrink it.
 * The hot path: no allocation after the first call.
 */
int sr_write_pages(struct sr_ctx *ctx, const uint64_t *page_idx, const void *const *page_ptrs, size_t n)
	__attribute__((warn_unused_result));
/* Same bytes as sr_write_pages, but batches are compressed by `nthreads` worker threads (capped at
 * 16, started and joined within the call) and written in order by the caller's thread. Falls back
 * to sr_write_pages for nthreads <= 1 or n <= SR_BATCH_PAGES. Allocates 2*8*n bytes per call. */
int sr_write_pages_mt(struct sr_ctx *ctx, const uint64_t *page_idx, const void *const *page_ptrs, size_t n,
		      int nthreads) __attribute__((warn_unused_result));
/* ZERO_PAGES for [first, first+count) ranges, for callers that know pages are zero (e.g. fresh RAM). */
int sr_write_zero_range(struct sr_ctx *ctx, uint64_t first, uint64_t count)
	__attribute__((warn_unused_result));
/* VCPU_STATE: vcpu < nr_vcpus, 1 <= len <= SR_MAX_VCPU_BLOB. */
int sr_write_vcpu(struct sr_ctx *ctx, uint32_t vcpu, const void *blob, size_t len)
	__attribute__((warn_unused_result));
/* DEVICE_STATE: name 1..31 printable ASCII, blob may be empty. */
int sr_write_device(struct sr_ctx *ctx, uint32_t kind, const char *name, const void *blob, size_t len)
	__attribute__((warn_unused_result));
/* Close the epoch: CHECKPOINT_END with the running counts and xxh64; resets them. epoch must be
 * greater than the previous one (the first may be anything). */
int sr_write_checkpoint_end(struct sr_ctx *ctx, uint64_t epoch) __attribute__((warn_unused_result));
/* END. Only right after sr_write_checkpoint_end (-EINVAL otherwise). */
int sr_write_end(struct sr_ctx *ctx);
/* DISK_WRITE: one completed guest write (op SR_DISK_OP_WRITE with nr_sectors * 512 bytes of data),
 * write-zeroes or discard of disk `disk`. -EINVAL (nothing written) when a field is out of range. */
int sr_write_disk_write(struct sr_ctx *ctx, uint32_t disk, uint32_t op, uint64_t sector, uint64_t nr_sectors,
			const void *data) __attribute__((warn_unused_result));
/* DISK_INFO: the identity of disk `disk` (size in bytes, flags, GET_ID serial or NULL, content hash
 * or 0). */
int sr_write_disk_info(struct sr_ctx *ctx, uint32_t disk, uint32_t flags, uint64_t size, const char *id,
		       uint64_t content) __attribute__((warn_unused_result));
/* Any record, unvalidated body (for tests and for OPTIONAL extensions). len <= SR_MAX_RECORD. */
int sr_write_record(struct sr_ctx *ctx, uint32_t type, const void *body, size_t len)
	__attribute__((warn_unused_result));

/* ---- reader ---- */

/* Read and validate the header (magic, version, byte order, page size, counts, regions, checksum). */
int sr_read_header(struct sr_ctx *ctx, struct sr_header *h) __attribute__((warn_unused_result));
/*
 * Read the next record into rec, validated: length bound, zero padding, known mandatory type,
 * every field of the body (PAGE_DATA: count, encoding, lengths, indices < nr_pages; ZERO_PAGES:
 * ranges in bounds; VCPU_STATE: vcpu < nr_vcpus; DEVICE_STATE: name; CHECKPOINT_END: epoch order,
 * counts and xxh64 of the epoch against what was read). Unknown optional records are skipped.
 * Returns 0; -EPIPE on a truncated stream (including EOF before END); -EBADMSG on malformed or
 * mismatching content; -ETIMEDOUT; -ENOMEM; -errno from I/O. After END, further calls return -EPIPE.
 * Decompression of PAGE_DATA is not done here: see sr_decode_pages (so the caller may stage).
 */
int sr_read_record(struct sr_ctx *ctx, struct sr_record *rec) __attribute__((warn_unused_result));

/* Page index i of a PAGE_DATA record (i < rec->pages.count). */
uint64_t sr_page_idx(const struct sr_record *rec, uint32_t i);

/* Called once per page; `page` (4096 bytes) is valid only during the call. Nonzero return stops
 * decoding and is returned by the decoder. */
typedef int (*sr_page_fn)(void *opaque, uint64_t page_idx, const void *page);
/* Called once per zero range. */
typedef int (*sr_zero_fn)(void *opaque, uint64_t first, uint64_t count);

/* Decode the PAGE_DATA record last returned by sr_read_record: decompress into a bounded internal
 * buffer, check the size is count*4096, then call fn for each page in order. Returns 0, -EBADMSG
 * (bad compressed data, size mismatch; err says which), -EINVAL (rec is not PAGE_DATA), or fn's rc. */
int sr_decode_pages(struct sr_ctx *ctx, const struct sr_record *rec, sr_page_fn fn, void *opaque)
	__attribute__((warn_unused_result));
/* The receiver's current copy of page idx (the delta base), or NULL when it has none. */
typedef const void *(*sr_base_fn)(void *opaque, uint64_t page_idx);
/* Decode the PAGE_DELTA record last returned by sr_read_record: decompress the XORs, take the base
 * of every page (base(opaque, idx)), check XXH3 over the bases against the record's base_hash
 * BEFORE anything is called, then call fn with base ^ XOR for each page in order. Returns 0,
 * -EBADMSG (no base, base mismatch, corrupt payload; err says which), -EINVAL, or fn's rc. */
int sr_decode_delta(struct sr_ctx *ctx, const struct sr_record *rec, sr_base_fn base, sr_page_fn fn,
		    void *opaque) __attribute__((warn_unused_result));
/* Only the first half of sr_decode_delta: the bases' hash against base_hash (what a receiver that
 * stages the record body and decodes it later must check before it keeps the record). 0, -EBADMSG
 * (err says which), -EINVAL. */
int sr_check_delta_base(struct sr_ctx *ctx, const struct sr_record *rec, sr_base_fn base, void *opaque)
	__attribute__((warn_unused_result));
/* Same for ZERO_PAGES. */
int sr_decode_zero_pages(struct sr_ctx *ctx, const struct sr_record *rec, sr_zero_fn fn, void *opaque)
	__attribute__((warn_unused_result));

/* Reader: fn sees every optional record ckpt/sr readers would skip (type, body, length), in stream
 * order, before the next record is read; a non-zero return fails the read with that errno. NULL
 * removes it. */
typedef int (*sr_optional_fn)(void *opaque, uint32_t type, const uint8_t *body, uint32_t len);
void sr_set_optional_hook(struct sr_ctx *rd, sr_optional_fn fn, void *opaque);

/* Name of a record type ("PAGE_DATA", "OPTIONAL(0x80000007)", ...), into buf. */
const char *sr_type_name(uint32_t type, char *buf, size_t len);

#endif
