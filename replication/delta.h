/* delta.h — the sender's cache of last-sent pages for PAGE_DELTA (XOR against the last copy sent). */
#ifndef DOPPEL_REPLICATION_DELTA_H
#define DOPPEL_REPLICATION_DELTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Direct-mapped (slot = page index % slots, like QEMU's XBZRLE page cache): a contiguous hot set no
 * larger than the cache never collides. A slot holds the page index it caches and the exact 4096
 * bytes last written to the stream for it. The cache belongs to ONE stream: the receiver's RAM is
 * the other copy of it (docs/stream.md, "PAGE_DELTA"), so it is emptied when attached to a writer
 * (sr_set_delta) and must never outlive that stream. Not thread-safe (the writer's thread).
 *
 * Memory: `bytes` of slots reserved at creation, touched only as slots fill.
 */

#define SR_DELTA_DEFAULT (64ull << 20) /* --delta-cache default */
#define SR_DELTA_MAX (64ull << 30)
/* A hit goes out as a delta when at most this many of the page's 512 words changed AND its XOR has
 * more zero words than the page itself; otherwise it is sent as a plain page (a denser XOR
 * compresses no better than the page, and a mostly-zero page compresses as well on its own). */
#define SR_DELTA_DENSE_WORDS 256u

struct sr_delta;

struct sr_delta_stats {
	uint64_t slots; /* capacity in pages */
	uint64_t bytes; /* capacity in bytes */
	uint64_t hits; /* page found with its last-sent copy */
	uint64_t misses; /* not cached (first send or evicted): sent plain, now cached */
	uint64_t evictions; /* a miss that replaced another page's copy */
	uint64_t unchanged; /* hits identical to the last copy sent: nothing sent at all */
	uint64_t dense; /* hits whose XOR would not pay (see SR_DELTA_DENSE_WORDS): sent plain */
	uint64_t delta_pages; /* hits sent as PAGE_DELTA */
	uint64_t delta_bytes; /* PAGE_DELTA payload bytes written (after compression) */
};

/* A cache of `bytes` (rounded down to pages; at least 1 page, at most SR_DELTA_MAX). 0 or -errno. */
int sr_delta_new(struct sr_delta **out, uint64_t bytes) __attribute__((warn_unused_result));
void sr_delta_free(struct sr_delta *d); /* NULL-safe */
void sr_delta_reset(struct sr_delta *d); /* forget every page (counters stay) */
void sr_delta_get_stats(const struct sr_delta *d, struct sr_delta_stats *out);

/* The cached copy of page idx, or NULL. */
const void *sr_delta_lookup(const struct sr_delta *d, uint64_t idx);
/* Forget page idx (it was sent as zero, or will be sent in a way the cache does not follow). */
void sr_delta_forget(struct sr_delta *d, uint64_t idx);
void sr_delta_forget_range(struct sr_delta *d, uint64_t first, uint64_t count);

/*
 * Encode page idx (content `page`) against the cache:
 *   SR_DELTA_MISS      not cached: `page` is now cached; send it plain.
 *   SR_DELTA_UNCHANGED identical to the last copy sent: send nothing.
 *   SR_DELTA_DENSE     cached, but the XOR does not pay (SR_DELTA_DENSE_WORDS): `page` is now
 *                      cached; send it plain.
 *   SR_DELTA_XOR       cached: `xor_out` (4096 bytes) holds page ^ last copy, `*base_hash` the
 *                      XXH3-64 of that last copy, and `page` is now cached; send the XOR.
 */
enum sr_delta_kind { SR_DELTA_MISS, SR_DELTA_UNCHANGED, SR_DELTA_DENSE, SR_DELTA_XOR };
enum sr_delta_kind sr_delta_encode(struct sr_delta *d, uint64_t idx, const void *page, void *xor_out,
				   uint64_t *base_hash);
/* Count delta payload bytes actually written (for the stats). */
void sr_delta_account(struct sr_delta *d, uint64_t payload_bytes);

/* dst ^= src over one page. */
void sr_delta_xor(void *dst, const void *src);

#endif
