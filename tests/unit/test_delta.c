/* test_delta.c — PAGE_DELTA: round trips, cache eviction, a receiver without the base, corrupt deltas refused. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "hv/mem.h"
#include "replication/checkpoint.h"
#include "replication/delta.h"
#include "replication/stream.h"

#define NP 256 /* pages of each fake RAM */
#define PG SR_PAGE_SIZE

static uint64_t rng_state;

static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* A sender's RAM and a receiver's RAM, both plain buffers. */
struct pair {
	uint8_t *a, *b;
	struct guest_mem ga, gb;
};

static void pair_init(struct pair *p)
{
	p->a = aligned_alloc(PG, NP * PG);
	p->b = aligned_alloc(PG, NP * PG);
	assert_non_null(p->a);
	assert_non_null(p->b);
	for (size_t i = 0; i < NP * PG / 8; i++) /* random: incompressible */
		((uint64_t *)p->a)[i] = rnd();
	memset(p->b, 0, NP * PG);
	assert_int_equal(mem_init_buffer(&p->ga, p->a, NP * PG), 0);
	assert_int_equal(mem_init_buffer(&p->gb, p->b, NP * PG), 0);
}

static void pair_free(struct pair *p)
{
	mem_destroy(&p->ga);
	mem_destroy(&p->gb);
	free(p->a);
	free(p->b);
}

static uint8_t *page(uint8_t *ram, uint64_t i)
{
	return ram + i * PG;
}

/* One epoch of pages idx[0..n) of RAM a (no state) to w. */
static void write_epoch(struct sr_ctx *w, struct pair *p, const uint64_t *idx, size_t n, uint64_t epoch)
{
	const void *ptrs[NP];

	for (size_t i = 0; i < n; i++)
		ptrs[i] = page(p->a, idx[i]);
	assert_int_equal(sr_write_pages(w, idx, ptrs, n), 0);
	assert_int_equal(sr_write_checkpoint_end(w, epoch), 0);
}

/* Read the next epoch of r: staged (base = base_gm, then applied to gb) or direct into gb. Returns
 * ckpt_read_epoch's rc; err gets its reason. staged: 0 direct, 1 staged pages, KEPT staged record bodies
 * decoded into RAM at apply (a Remus standby). */
#define KEPT 2
static int read_epoch(struct sr_ctx *r, struct pair *p, int staged, struct guest_mem *base_gm, char *err,
		      size_t errlen)
{
	struct ckpt_stage stg = {0};
	int rc;

	stg.base = base_gm;
	stg.keep_bodies = staged == KEPT;
	rc = ckpt_read_epoch(r, &stg, staged ? NULL : &p->gb, err, errlen);
	if (rc == 1 && staged) {
		int arc = ckpt_stage_apply_pages(&stg, &p->gb, err, errlen);
		if (arc)
			rc = arc;
	}
	ckpt_stage_free(&stg);
	return rc;
}

static void open_writer(struct sr_ctx **w, struct sr_out *o, struct pair *p, bool compress,
			struct sr_delta *d)
{
	struct sr_header h;

	sr_out_mem(o, 0);
	assert_int_equal(sr_writer_new(w, o, compress, 1), 0);
	if (d)
		assert_int_equal(sr_set_delta(*w, d), 0);
	sr_header_from_mem(&h, &p->ga, 1);
	assert_int_equal(sr_write_header(*w, &h), 0);
}

static void open_reader(struct sr_ctx **r, struct sr_in *in, const struct sr_out *o)
{
	struct sr_header h;

	sr_in_mem(in, o->buf, o->len);
	assert_int_equal(sr_reader_new(r, in), 0);
	assert_int_equal(sr_read_header(*r, &h), 0);
}

/* Epoch 1: every page (all misses, cached). Epoch 2: the same pages after the changes below. */
static void change_pages(struct pair *p, uint64_t *idx, size_t *n)
{
	*n = 0;
	for (uint64_t i = 0; i < NP; i++) {
		uint64_t *w = (uint64_t *)page(p->a, i);

		switch (i % 5) {
		case 0: /* two words: a sparse delta */
			w[0] ^= rnd() | 1;
			w[511] = rnd();
			break;
		case 1: /* unchanged: dirty but identical */
			break;
		case 2: /* rewritten: dense */
			for (int k = 0; k < 512; k++)
				w[k] = rnd();
			break;
		case 3: /* zeroed */
			memset(w, 0, PG);
			break;
		default: /* a cache line */
			for (int k = 64; k < 72; k++)
				w[k] = rnd();
		}
		idx[(*n)++] = i;
	}
}

static void round_trip(bool compress, int staged)
{
	struct pair p;
	struct sr_delta *d;
	struct sr_delta_stats ds;
	struct sr_stats ss;
	struct sr_ctx *w, *r;
	struct sr_out o;
	struct sr_in in;
	uint64_t idx[NP];
	size_t n = NP;
	char err[256];
	uint8_t *e1 = malloc(NP * PG);

	assert_non_null(e1);
	pair_init(&p);
	assert_int_equal(sr_delta_new(&d, NP * PG), 0);
	open_writer(&w, &o, &p, compress, d);
	for (uint64_t i = 0; i < NP; i++)
		idx[i] = i;
	write_epoch(w, &p, idx, n, 1);
	memcpy(e1, p.a, NP * PG);
	change_pages(&p, idx, &n);
	write_epoch(w, &p, idx, n, 2);
	assert_int_equal(sr_write_end(w), 0);
	sr_stats(w, &ss);
	sr_delta_get_stats(d, &ds);
	/* epoch 2: 52 sparse + 51 cache-line pages as deltas, 51 unchanged, 51 dense, 51 zero */
	assert_int_equal(ds.misses, NP);
	assert_int_equal(ds.delta_pages, 52 + 51);
	assert_int_equal(ds.unchanged, 51);
	assert_int_equal(ds.dense, 51);
	assert_int_equal(ss.delta_pages, 103);
	assert_true(ss.delta_batches >= 1);
	assert_int_equal(ss.delta_unchanged, 51);
	if (compress) /* 103 deltas of one or two changed words or one cache line: far below a page each */
		assert_true(ds.delta_bytes < 103 * 200);
	else
		assert_int_equal(ds.delta_bytes, 103 * PG);

	open_reader(&r, &in, &o);
	assert_int_equal(read_epoch(r, &p, false, NULL, err, sizeof(err)), 1); /* epoch 1 direct */
	assert_memory_equal(e1, p.b, NP * PG);
	assert_int_equal(read_epoch(r, &p, staged, &p.gb, err, sizeof(err)), 1);
	assert_memory_equal(p.a, p.b, NP * PG);
	assert_int_equal(read_epoch(r, &p, staged, &p.gb, err, sizeof(err)), 0); /* END */
	sr_ctx_free(r);
	sr_ctx_free(w);
	sr_out_free(&o);
	sr_delta_free(d);
	pair_free(&p);
	free(e1);
}

static void test_round_trip_zstd_staged(void **state)
{
	(void)state;
	round_trip(true, true);
}

/* Kept bodies: zstd PAGE_DATA of contiguous runs decode straight into RAM, PAGE_DELTA XOR into it. */
static void test_round_trip_zstd_kept(void **state)
{
	(void)state;
	round_trip(true, KEPT);
}

static void test_round_trip_raw_kept(void **state)
{
	(void)state;
	round_trip(false, KEPT);
}

static void test_round_trip_raw_direct(void **state)
{
	(void)state;
	round_trip(false, false);
}

/* A cache of 4 pages: page 4 evicts page 0 (same slot); page 0 then goes out plain and still arrives
 * right; page 1 stays cached and goes out as a delta. */
static void test_eviction(void **state)
{
	struct pair p;
	struct sr_delta *d;
	struct sr_delta_stats ds;
	struct sr_ctx *w, *r;
	struct sr_out o;
	struct sr_in in;
	uint64_t e1[] = {0, 1}, e2[] = {4}, e3[] = {0, 1};
	char err[256];

	(void)state;
	pair_init(&p);
	assert_int_equal(sr_delta_new(&d, 4 * PG), 0);
	open_writer(&w, &o, &p, true, d);
	write_epoch(w, &p, e1, 2, 1);
	assert_non_null(sr_delta_lookup(d, 0));
	write_epoch(w, &p, e2, 1, 2);
	assert_null(sr_delta_lookup(d, 0));
	assert_non_null(sr_delta_lookup(d, 4));
	((uint64_t *)page(p.a, 0))[3]++;
	((uint64_t *)page(p.a, 1))[3]++;
	write_epoch(w, &p, e3, 2, 3);
	assert_int_equal(sr_write_end(w), 0);
	sr_delta_get_stats(d, &ds);
	assert_int_equal(ds.slots, 4);
	assert_int_equal(ds.misses, 4); /* 0, 1, 4, 0 again */
	assert_int_equal(ds.evictions, 2); /* 4 evicted 0, then 0 evicted 4 */
	assert_int_equal(ds.delta_pages, 1); /* page 1 */
	assert_memory_equal(sr_delta_lookup(d, 0), page(p.a, 0), PG);
	open_reader(&r, &in, &o);
	for (int e = 0; e < 3; e++)
		assert_int_equal(read_epoch(r, &p, true, &p.gb, err, sizeof(err)), 1);
	assert_memory_equal(page(p.a, 0), page(p.b, 0), 2 * PG);
	assert_memory_equal(page(p.a, 4), page(p.b, 4), PG);
	sr_ctx_free(r);
	sr_ctx_free(w);
	sr_out_free(&o);
	sr_delta_free(d);
	pair_free(&p);
}

/* A two-epoch stream whose second epoch is all PAGE_DELTA (pages 0..7, one word each). */
static void delta_stream(struct pair *p, struct sr_out *o, bool compress)
{
	struct sr_delta *d;
	struct sr_ctx *w;
	uint64_t idx[8] = {0, 1, 2, 3, 4, 5, 6, 7};
	struct sr_stats ss;

	assert_int_equal(sr_delta_new(&d, NP * PG), 0);
	open_writer(&w, o, p, compress, d);
	write_epoch(w, p, idx, 8, 1);
	for (int i = 0; i < 8; i++)
		((uint64_t *)page(p->a, (uint64_t)i))[i * 9]++;
	write_epoch(w, p, idx, 8, 2);
	assert_int_equal(sr_write_end(w), 0);
	sr_stats(w, &ss);
	assert_int_equal(ss.delta_pages, 8);
	sr_ctx_free(w);
	sr_delta_free(d);
}

/* The receiver must hold the base: staged without one, or with a page that differs from what the
 * sender XORed against, the epoch is refused with one line and RAM is untouched. */
static void test_no_base_refused(void **state)
{
	struct pair p;
	struct sr_ctx *r;
	struct sr_out o;
	struct sr_in in;
	char err[256];
	uint8_t *before = malloc(NP * PG);

	(void)state;
	assert_non_null(before);
	pair_init(&p);
	delta_stream(&p, &o, true);
	for (int variant = 0; variant < 2 * KEPT; variant++) { /* staged, then kept bodies */
		int mode = 1 + variant / 2;
		memset(p.b, 0, NP * PG);
		open_reader(&r, &in, &o);
		assert_int_equal(read_epoch(r, &p, false, NULL, err, sizeof(err)), 1);
		if (variant % 2)
			p.b[5 * PG + 100] ^= 1; /* the receiver's copy of page 5 is not the sent one */
		memcpy(before, p.b, NP * PG);
		int rc = read_epoch(r, &p, mode, variant % 2 ? &p.gb : NULL, err, sizeof(err));
		assert_int_equal(rc, -EBADMSG);
		assert_non_null(strstr(err, variant % 2 ? "base mismatch" : "holds no copy"));
		assert_null(strchr(err, '\n'));
		assert_memory_equal(before, p.b, NP * PG);
		sr_ctx_free(r);
	}
	sr_out_free(&o);
	free(before);
	pair_free(&p);
}

/* Offset of the first record of `type` in a stream buffer (after the header), or 0. */
static size_t find_record(const struct sr_out *o, uint32_t type)
{
	size_t off = 48 + 16 * (size_t)o->buf[32]; /* nr_regions, little endian, < 256 */

	while (off + 8 <= o->len) {
		uint32_t t, len;

		memcpy(&t, o->buf + off, 4);
		memcpy(&len, o->buf + off + 4, 4);
		if (t == type)
			return off;
		off += 8 + len + (8 - len % 8) % 8;
	}
	return 0;
}

/* Corrupt deltas: a flipped payload byte (raw: the epoch checksum; zstd: the checksum or the
 * decoder), a flipped base hash, an unknown encoding: refused, RAM untouched. A reader that does not
 * know PAGE_DELTA refuses it too: it is a mandatory type. */
static void test_corrupt_delta_refused(void **state)
{
	struct pair p;
	struct sr_ctx *r;
	struct sr_out o;
	struct sr_in in;
	char err[256];
	uint8_t *before = malloc(NP * PG);

	(void)state;
	assert_non_null(before);
	assert_int_equal(SR_REC_PAGE_DELTA & SR_REC_OPTIONAL, 0);
	for (int v = 0; v < 4 * KEPT; v++) { /* each corruption staged, then with kept bodies */
		int variant = v % 4, mode = 1 + v / 4;
		pair_init(&p);
		delta_stream(&p, &o, variant != 0);
		size_t off = find_record(&o, SR_REC_PAGE_DELTA);
		assert_true(off > 0);
		if (variant <= 1)
			o.buf[o.len - 60] ^= 0x40; /* inside the delta payload (END 8 + CKPT_END 48 before) */
		else if (variant == 2)
			o.buf[off + 8 + 8] ^= 1; /* base_hash */
		else
			o.buf[off + 8 + 4] = 9; /* encoding */
		open_reader(&r, &in, &o);
		assert_int_equal(read_epoch(r, &p, false, NULL, err, sizeof(err)), 1);
		memcpy(before, p.b, NP * PG);
		int rc = read_epoch(r, &p, mode, &p.gb, err, sizeof(err));
		print_message("variant %d mode %d: %d %s\n", variant, mode, rc, err);
		assert_int_equal(rc, -EBADMSG);
		assert_true(err[0] && !strchr(err, '\n'));
		assert_memory_equal(before, p.b, NP * PG);
		sr_ctx_free(r);
		sr_out_free(&o);
		pair_free(&p);
	}
	free(before);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_zstd_staged),
		cmocka_unit_test(test_round_trip_raw_direct),
		cmocka_unit_test(test_round_trip_zstd_kept),
		cmocka_unit_test(test_round_trip_raw_kept),
		cmocka_unit_test(test_eviction),
		cmocka_unit_test(test_no_base_refused),
		cmocka_unit_test(test_corrupt_delta_refused),
	};
	const char *s = getenv("DOPPEL_SEED");

	rng_state = s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL);
	if (!rng_state)
		rng_state = 1;
	print_message("DOPPEL_SEED=%llu\n", (unsigned long long)rng_state);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
