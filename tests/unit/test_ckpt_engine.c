/* test_ckpt_engine.c — the checkpoint engine on real KVM VMs (merge, stage, extents, policy). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "tests/unit/need.h"

#include "hv/dev/uart.h"
#include "hv/dirty.h"
#include "hv/hv.h"
#include "hv/mem.h"
#include "hv/pvh.h"
#include "replication/checkpoint.h"
#include "replication/ckpt_engine.h"
#include "replication/stream.h"

#define TMEM (16ull << 20)

static const struct ckpt_ops stage_ops = {.name = "test-stage", .log_flags = DIRTY_START_ALL, .stage = true};
static const struct ckpt_ops write_ops = {.name = "test-write", .log_flags = DIRTY_START_CLEAN};

/* A VM that never runs: set-up failure of the code under test fails the test. */
static struct vm *new_vm(void)
{
	struct vm_config cfg = {.name = "t", .mem_size = TMEM, .nr_vcpus = 1};
	struct vm *vm = NULL;
	char err[256] = "";
	int rc = vm_create(&cfg, &vm, err, sizeof(err));

	if (rc)
		print_message("vm_create: %s\n", err);
	assert_int_equal(rc, 0);
	return vm;
}

static void fill_page(struct vm *vm, uint64_t idx, uint8_t seed)
{
	uint8_t page[GUEST_PAGE_SIZE];

	for (size_t i = 0; i < sizeof(page); i++)
		page[i] = (uint8_t)(seed + i * 7);
	assert_int_equal(mem_write(vm_mem(vm), mem_page_gpa(vm_mem(vm), idx), page, sizeof(page)), 0);
}

static void set_bit(uint64_t *bm, uint64_t i)
{
	bm[i / 64] |= 1ull << (i % 64);
}

/* Pages in the caller's merge set are staged although nobody dirtied them; dirty ones too. */
static void test_merge_set_honoured(void **state)
{
	struct vm *vm = new_vm();
	struct guest_mem *gm = vm_mem(vm);
	struct ckpt_engine e;
	char err[256] = "";
	uint64_t *merge = calloc(dirty_bitmap_words(gm->nr_pages), sizeof(uint64_t));

	(void)state;
	assert_non_null(merge);
	assert_int_equal(ckpt_engine_init(&e, vm, &stage_ops, NULL), 0);
	assert_int_equal(ckpt_engine_start(&e, err, sizeof(err)), 0);
	struct ckpt_epoch ep = {.epoch = 1};
	assert_int_equal(ckpt_engine_epoch(&e, &ep, err, sizeof(err)), 0);
	assert_int_equal(ep.pages, gm->nr_pages); /* DIRTY_START_ALL: the first set is everything */
	assert_true(e.stage.have_state);

	fill_page(vm, 10, 1);
	set_bit(merge, 5);
	set_bit(merge, 77);
	set_bit(merge, gm->nr_pages - 1);
	ep = (struct ckpt_epoch){.epoch = 2, .merge = merge};
	assert_int_equal(ckpt_engine_epoch(&e, &ep, err, sizeof(err)), 0);
	assert_int_equal(ep.pages, 4);
	assert_int_equal(e.stage.n, 4);
	assert_int_equal(e.stage.epoch, 2);
	const uint64_t want[] = {5, 10, 77, gm->nr_pages - 1};
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(e.stage.idx[i], want[i]);
		assert_ptr_equal(e.stage.ptrs[i], e.stage.data + i * GUEST_PAGE_SIZE);
		assert_memory_equal(e.stage.ptrs[i], mem_page_host(gm, want[i]), GUEST_PAGE_SIZE);
	}
	/* Without a merge set and without writes: nothing. */
	ep = (struct ckpt_epoch){.epoch = 3};
	assert_int_equal(ckpt_engine_epoch(&e, &ep, err, sizeof(err)), 0);
	assert_int_equal(e.stage.n, 0);
	assert_int_equal(vm_resume(vm), -EINVAL); /* every epoch released its hold */
	ckpt_engine_free(&e);
	free(merge);
	vm_destroy(vm);
}

/* Remus's hot pages, on a running guest rewriting a 256 KiB working set: the keep set holds every
 * page dirty at a recent sync, and (manual-protect mode) a page dirty at a sync whose keep set held
 * it was left writable with its dirty bit set, so the next sync reports it again, written or not. */
static void test_hot_pages_kept(void **state)
{
	static const struct ckpt_ops hot_ops = {
		.name = "test-hot", .log_flags = DIRTY_START_CLEAN, .keep_hot = true, .stage = true};
	struct vm_config cfg = {.name = "t", .mem_size = 64ull << 20, .nr_vcpus = 1};
	struct vm *vm = NULL;
	struct uart *u = NULL;
	struct pvh_image img;
	struct ckpt_engine e;
	char err[256] = "", guest[4096];
	int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);

	(void)state;
	need_kvm();
	need_guest_elf(guest, sizeof(guest));
	assert_true(devnull >= 0);
	assert_int_equal(vm_create(&cfg, &vm, err, sizeof(err)), 0);
	assert_int_equal(uart_attach(vm, UART_COM1_BASE, devnull, &u), 0);
	assert_int_equal(pvh_load_file(vm_mem(vm), guest, "work=dirty ws=256K", &img, err, sizeof(err)), 0);
	assert_int_equal(vm_set_pvh_entry(vm, img.entry, img.start_info), 0);
	assert_int_equal(ckpt_engine_init(&e, vm, &hot_ops, NULL), 0);
	assert_int_equal(ckpt_engine_start(&e, err, sizeof(err)), 0);
	bool manual = !strcmp(dirty_log_mode(e.log), "manual-protect");
	size_t words = dirty_bitmap_words(vm_mem(vm)->nr_pages);
	uint64_t *prev = calloc(words, sizeof(uint64_t)), *kept = calloc(words, sizeof(uint64_t));
	assert_non_null(prev);
	assert_non_null(kept);
	assert_int_equal(vm_start(vm), 0);
	uint64_t seen = 0;
	for (uint64_t k = 1; k <= 6; k++) {
		struct timespec ts = {0, 20 * 1000 * 1000};
		nanosleep(&ts, NULL);
		/* kept: dirty at the last sync and in the keep set it was given */
		for (size_t w = 0; w < words; w++)
			kept[w] = prev[w] & e.bitmap[w];
		memcpy(prev, e.hot, words * sizeof(uint64_t));
		struct ckpt_epoch ep = {.epoch = k};
		int rc = ckpt_engine_epoch(&e, &ep, err, sizeof(err));
		if (rc)
			print_message("epoch: %s (vm: %s)\n", err, vm_error(vm));
		assert_int_equal(rc, 0);
		/* left writable: dirty now and in the keep set the sync was given (prev) */
		uint64_t left = 0;
		for (size_t w = 0; w < words; w++) {
			left += (uint64_t)__builtin_popcountll(e.bitmap[w] & prev[w]);
			/* the next keep set: everything dirty at a sync of the last window */
			assert_int_equal(e.hot[w] & e.bitmap[w], e.bitmap[w]);
		}
		assert_int_equal(e.hot_pages, left);
		/* From the fourth epoch: the first one also reported the loader's writes
		 * (device-dirty, not KVM-dirty: no write protection can keep those). */
		for (size_t w = 0; manual && k >= 4 && w < words; w++)
			assert_int_equal(e.bitmap[w] & kept[w], kept[w]);
		seen += ep.pages;
	}
	assert_true(seen > 0); /* the guest did dirty pages */
	vm_stop(vm, 0);
	vm_wait(vm);
	ckpt_engine_free(&e);
	free(prev);
	free(kept);
	vm_destroy(vm); /* frees the attached UART */
	close(devnull);
}

/* Write a staged epoch to a memory stream, read it back, apply it to a second VM: RAM identical. */
static void test_stage_round_trip(void **state)
{
	struct vm *a = new_vm(), *b = new_vm();
	struct ckpt_engine e;
	struct ckpt_stage stg = {0};
	struct sr_out out;
	struct sr_in in;
	struct sr_ctx *w, *r;
	struct sr_header h;
	char err[256] = "";

	(void)state;
	for (uint64_t p = 0; p < vm_mem(a)->nr_pages; p += 37)
		fill_page(a, p, (uint8_t)p);
	assert_int_equal(ckpt_engine_init(&e, a, &stage_ops, NULL), 0);
	assert_int_equal(ckpt_engine_start(&e, err, sizeof(err)), 0);
	struct ckpt_epoch ep = {.epoch = 7};
	assert_int_equal(ckpt_engine_epoch(&e, &ep, err, sizeof(err)), 0);

	sr_out_mem(&out, 0);
	assert_int_equal(sr_writer_new(&w, &out, true, 1), 0);
	sr_header_from_mem(&h, vm_mem(a), 1);
	assert_int_equal(sr_write_header(w, &h), 0);
	assert_int_equal(ckpt_stage_write(w, &e.stage), 0);
	assert_int_equal(sr_write_end(w), 0);

	sr_in_mem(&in, out.buf, out.len);
	assert_int_equal(sr_reader_new(&r, &in), 0);
	assert_int_equal(sr_read_header(r, &h), 0);
	assert_int_equal(ckpt_read_epoch(r, &stg, NULL, err, sizeof(err)), 1);
	assert_int_equal(stg.epoch, 7);
	assert_int_equal(stg.pages + stg.zero_pages, vm_mem(a)->nr_pages); /* zero pages go as ranges */
	assert_true(stg.have_state);
	for (size_t i = 0; i < stg.n; i++)
		assert_ptr_equal(stg.ptrs[i], stg.data + i * GUEST_PAGE_SIZE);
	assert_int_equal(ckpt_stage_apply(&stg, b, err, sizeof(err)), 0);
	assert_memory_equal(vm_mem(a)->r[0].host, vm_mem(b)->r[0].host, vm_mem(a)->size);
	assert_int_equal(ckpt_read_epoch(r, &stg, NULL, err, sizeof(err)), 0); /* END */

	ckpt_stage_free(&stg);
	sr_ctx_free(r);
	sr_ctx_free(w);
	sr_out_free(&out);
	ckpt_engine_free(&e);
	vm_destroy(a);
	vm_destroy(b);
}

/* Writing mode (migration's stop-and-copy): pages from RAM, state, CHECKPOINT_END, left paused. */
static void test_write_mode_stays_paused(void **state)
{
	struct vm *vm = new_vm();
	struct guest_mem *gm = vm_mem(vm);
	struct ckpt_engine e;
	struct ckpt_stage stg = {0};
	struct sr_out out;
	struct sr_in in;
	struct sr_ctx *w, *r;
	struct sr_header h;
	char err[256] = "";
	uint64_t *merge = calloc(dirty_bitmap_words(gm->nr_pages), sizeof(uint64_t));

	(void)state;
	assert_non_null(merge);
	assert_int_equal(ckpt_engine_init(&e, vm, &write_ops, NULL), 0);
	assert_int_equal(ckpt_engine_start(&e, err, sizeof(err)), 0);
	fill_page(vm, 3, 9);
	memset(mem_page_host(gm, 200), 0x5a, GUEST_PAGE_SIZE); /* not dirty: no VMM or guest write */
	set_bit(merge, 200);
	sr_out_mem(&out, 0);
	assert_int_equal(sr_writer_new(&w, &out, false, 1), 0);
	sr_header_from_mem(&h, gm, 1);
	assert_int_equal(sr_write_header(w, &h), 0);
	struct ckpt_epoch ep = {.epoch = 4, .merge = merge, .stay_paused = true, .w = w};
	assert_int_equal(ckpt_engine_epoch(&e, &ep, err, sizeof(err)), 0);
	assert_int_equal(ep.pages, 2);
	assert_int_equal(vm_resume(vm), 0); /* the epoch's hold was kept */
	assert_int_equal(vm_resume(vm), -EINVAL); /* and it was the only one */
	assert_int_equal(sr_write_end(w), 0);

	sr_in_mem(&in, out.buf, out.len);
	assert_int_equal(sr_reader_new(&r, &in), 0);
	assert_int_equal(sr_read_header(r, &h), 0);
	assert_int_equal(ckpt_read_epoch(r, &stg, NULL, err, sizeof(err)), 1);
	assert_int_equal(stg.epoch, 4);
	assert_int_equal(stg.n, 2);
	assert_int_equal(stg.idx[0], 3);
	assert_int_equal(stg.idx[1], 200);
	assert_memory_equal(stg.data, mem_page_host(gm, 3), GUEST_PAGE_SIZE);
	assert_memory_equal(stg.data + GUEST_PAGE_SIZE, mem_page_host(gm, 200), GUEST_PAGE_SIZE);
	assert_true(stg.have_state);

	ckpt_stage_free(&stg);
	sr_ctx_free(r);
	sr_ctx_free(w);
	sr_out_free(&out);
	ckpt_engine_free(&e);
	free(merge);
	vm_destroy(vm);
}

/* Extents tile [0, nr_pages) in order, inside regions; holes read as zero; written pages are data.
 */
static void check_extents(struct guest_mem *gm, const uint64_t *written, size_t nw, bool scan)
{
	static const uint8_t zero[GUEST_PAGE_SIZE];
	uint64_t pos = 0, first, count, next = 0, data_pages = 0;
	bool data;
	uint8_t *is_data = calloc(gm->nr_pages, 1);

	assert_non_null(is_data);
	while (mem_extent_next(gm, &pos, &first, &count, &data)) {
		assert_int_equal(first, next);
		assert_true(count > 0);
		assert_int_equal(pos, first + count);
		bool in_one = false;
		for (int i = 0; i < gm->nr; i++)
			in_one |= first >= gm->r[i].pfn_base &&
				  first + count <= gm->r[i].pfn_base + (gm->r[i].size >> GUEST_PAGE_SHIFT);
		assert_true(in_one);
		memset(is_data + first, data, count);
		data_pages += data ? count : 0;
		next = first + count;
	}
	assert_int_equal(next, gm->nr_pages);
	for (size_t i = 0; i < nw; i++)
		assert_true(is_data[written[i]]);
	/* The naive scan, after the walk (reading a hole may fill it): what is not data reads zero.
	 */
	for (uint64_t p = 0; scan && p < gm->nr_pages; p++)
		if (!is_data[p])
			assert_memory_equal(mem_page_host(gm, p), zero, GUEST_PAGE_SIZE);
	if (gm->memfd >= 0)
		assert_true(data_pages < gm->nr_pages); /* sparse RAM has holes */
	free(is_data);
}

static void test_extent_walk(void **state)
{
	struct guest_mem gm;
	const uint64_t written[] = {0, 1, 2, 100, 1023, 1024, 4095};
	const uint64_t two[] = {5, (MEM_LOW_LIMIT >> GUEST_PAGE_SHIFT) - 1, MEM_LOW_LIMIT >> GUEST_PAGE_SHIFT,
				(MEM_LOW_LIMIT >> GUEST_PAGE_SHIFT) + 300};
	uint8_t v = 0xa5;

	(void)state;
	assert_int_equal(mem_create(&gm, TMEM), 0);
	for (size_t i = 0; i < sizeof(written) / sizeof(written[0]); i++)
		assert_int_equal(mem_write(&gm, mem_page_gpa(&gm, written[i]) + 8, &v, 1), 0);
	check_extents(&gm, written, sizeof(written) / sizeof(written[0]), true);
	mem_destroy(&gm);

	/* Two regions (low RAM up to 3 GiB, the rest above 4 GiB): extents never straddle them. */
	assert_int_equal(mem_create(&gm, MEM_LOW_LIMIT + (4ull << 20)), 0);
	assert_int_equal(gm.nr, 2);
	for (size_t i = 0; i < sizeof(two) / sizeof(two[0]); i++)
		assert_int_equal(mem_write(&gm, mem_page_gpa(&gm, two[i]), &v, 1), 0);
	check_extents(&gm, two, sizeof(two) / sizeof(two[0]), false);
	mem_destroy(&gm);

	/* A plain buffer has no memfd: all data, one extent per region. */
	void *buf = calloc(1, 1 << 20);
	uint64_t pos = 0, first, count;
	bool data;
	assert_non_null(buf);
	assert_int_equal(mem_init_buffer(&gm, buf, 1 << 20), 0);
	assert_int_equal(mem_extent_next(&gm, &pos, &first, &count, &data), 1);
	assert_true(data);
	assert_int_equal(first, 0);
	assert_int_equal(count, gm.nr_pages);
	assert_int_equal(mem_extent_next(&gm, &pos, &first, &count, &data), 0);
	mem_destroy(&gm);
	free(buf);
}

/* ---- pre-copy policy --------------------------------------------------------------------------
 */

struct pol_state {
	struct vm *vm;
	int stop_at; /* call of next() that stops */
	int last; /* return CKPT_LAST_ROUND instead of CKPT_STOP */
	int nexts, ends;
	uint64_t rounds[8], epochs[8];
};

static int t_round_end(void *opaque, const struct ckpt_round *rd)
{
	struct pol_state *p = opaque;

	assert_true(p->ends < 8);
	p->epochs[p->ends++] = rd->epoch;
	fill_page(p->vm, 40 + (uint64_t)p->ends, (uint8_t)p->ends); /* something for the next sync */
	return 0;
}

static int t_next(void *opaque, const struct ckpt_round *rd)
{
	struct pol_state *p = opaque;

	p->rounds[p->nexts++] = rd->round;
	assert_int_equal(rd->dirty, 1);
	if (p->nexts < p->stop_at)
		return CKPT_ROUND;
	return p->last ? CKPT_LAST_ROUND : CKPT_STOP;
}

static int count_epochs(struct sr_out *out)
{
	struct ckpt_stage stg = {0};
	struct sr_in in;
	struct sr_ctx *r;
	struct sr_header h;
	char err[256];
	int n = 0, rc;

	sr_in_mem(&in, out->buf, out->len);
	assert_int_equal(sr_reader_new(&r, &in), 0);
	assert_int_equal(sr_read_header(r, &h), 0);
	while ((rc = ckpt_read_epoch(r, &stg, NULL, err, sizeof(err))) == 1)
		n++;
	assert_int_equal(rc, 0);
	ckpt_stage_free(&stg);
	sr_ctx_free(r);
	return n;
}

static void run_precopy(int stop_at, int last)
{
	struct vm *vm = new_vm();
	struct pol_state p = {.vm = vm, .stop_at = stop_at, .last = last};
	const struct ckpt_policy pol = {.round_end = t_round_end, .next = t_next};
	struct ckpt_engine e;
	struct sr_out out;
	struct sr_ctx *w;
	struct sr_header h;
	char err[256] = "";
	uint64_t epoch = 10;
	bool io;

	assert_int_equal(ckpt_engine_init(&e, vm, &write_ops, NULL), 0);
	assert_int_equal(ckpt_engine_start(&e, err, sizeof(err)), 0);
	sr_out_mem(&out, 0);
	assert_int_equal(sr_writer_new(&w, &out, true, 1), 0);
	sr_header_from_mem(&h, vm_mem(vm), 1);
	assert_int_equal(sr_write_header(w, &h), 0);
	assert_int_equal(ckpt_engine_precopy(&e, w, &pol, &p, &epoch, &io, err, sizeof(err)), 0);
	assert_int_equal(p.nexts, stop_at);
	for (int i = 0; i < p.nexts; i++)
		assert_int_equal(p.rounds[i], i + 1);
	int rounds = stop_at + (last ? 1 : 0);
	assert_int_equal(p.ends, rounds);
	for (int i = 0; i < p.ends; i++)
		assert_int_equal(p.epochs[i], 10 + (uint64_t)i);
	assert_int_equal(epoch, 10 + (uint64_t)rounds);
	if (!last) /* the deciding sync's page waits in carry for the stop-and-copy merge */
		assert_int_equal(dirty_bitmap_count(e.carry, vm_mem(vm)->nr_pages), 1);
	assert_int_equal(sr_write_end(w), 0);
	assert_int_equal(count_epochs(&out), rounds);
	sr_ctx_free(w);
	sr_out_free(&out);
	ckpt_engine_free(&e);
	vm_destroy(vm);
}

static void test_policy_stops_precopy(void **state)
{
	(void)state;
	run_precopy(3, 0); /* rounds 1..3, the third sync decides stop-and-copy */
	run_precopy(1, 0); /* only the full round */
	run_precopy(2, 1); /* a last round after the second sync, no sync after it */
}

int main(void)
{
	// clang-format off
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_merge_set_honoured),
		cmocka_unit_test(test_hot_pages_kept),
		cmocka_unit_test(test_stage_round_trip),
		cmocka_unit_test(test_write_mode_stays_paused),
		cmocka_unit_test(test_extent_walk),
		cmocka_unit_test(test_policy_stops_precopy),
	};
	// clang-format on
	return cmocka_run_group_tests(tests, NULL, NULL);
}
