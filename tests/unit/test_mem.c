/* test_mem.c — unit tests of guest RAM: gpa_ptr bounds, device-dirty tracking, page index mapping. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hv/mem.h"

#define SMALL (1ull << 20) /* 256 pages */
#define BIG (MEM_LOW_LIMIT + (8ull << 20))

static bool bit(const uint64_t *bm, uint64_t i)
{
	return bm[i / 64] & (1ull << (i % 64));
}

static void test_init_errors(void **state)
{
	struct guest_mem gm;
	uint8_t buf[8192];

	(void)state;
	assert_int_equal(mem_init_buffer(&gm, buf, 0), -EINVAL);
	assert_int_equal(gm.memfd, -1);
	assert_int_equal(mem_init_buffer(&gm, buf, 4095), -EINVAL);
	assert_int_equal(mem_init_buffer(&gm, NULL, 4096), -EINVAL);
	assert_int_equal(mem_create(&gm, 0), -EINVAL);
	assert_int_equal(mem_create(&gm, 4096 + 1), -EINVAL);
	assert_int_equal(gm.nr, 0);
	mem_destroy(&gm);
	mem_destroy(&gm); /* idempotent */
}

static void test_gpa_ptr_bounds(void **state)
{
	struct guest_mem gm;
	uint8_t *buf = calloc(1, SMALL);

	(void)state;
	assert_non_null(buf);
	assert_int_equal(mem_init_buffer(&gm, buf, SMALL), 0);
	assert_int_equal(gm.nr, 1);
	assert_int_equal(gm.nr_pages, SMALL / 4096);

	assert_ptr_equal(gpa_ptr(&gm, 0, 1), buf);
	assert_ptr_equal(gpa_ptr(&gm, 0, SMALL), buf);
	assert_ptr_equal(gpa_ptr(&gm, SMALL - 1, 1), buf + SMALL - 1);
	assert_null(gpa_ptr(&gm, SMALL, 1)); /* one past */
	assert_null(gpa_ptr(&gm, SMALL - 1, 2)); /* last byte + one past */
	assert_null(gpa_ptr(&gm, 0, SMALL + 1));
	assert_ptr_equal(gpa_ptr(&gm, 0, 0), buf); /* len 0 */
	assert_ptr_equal(gpa_ptr(&gm, SMALL, 0), buf + SMALL); /* len 0 at the end: "inside" */
	assert_null(gpa_ptr(&gm, SMALL + 1, 0));
	assert_null(gpa_ptr(&gm, 1, UINT64_MAX)); /* gpa + len overflows */
	assert_null(gpa_ptr(&gm, SMALL - 1, UINT64_MAX));
	assert_null(gpa_ptr(&gm, UINT64_MAX, 1));
	assert_null(gpa_ptr(&gm, UINT64_MAX, 0));
	assert_null(gpa_ptr(&gm, UINT64_MAX - 4095, 4096));
	assert_null(gpa_ptr(&gm, MEM_HIGH_BASE, 1)); /* no high region */
	assert_ptr_equal(GPA_PTR(&gm, SMALL - 8, uint64_t), buf + SMALL - 8);
	assert_null(GPA_PTR(&gm, SMALL - 7, uint64_t));
	mem_destroy(&gm);
	free(buf);
}

static void test_read_write(void **state)
{
	struct guest_mem gm;
	uint8_t *buf = calloc(1, SMALL);
	uint8_t out[16], pat[16];

	(void)state;
	assert_non_null(buf);
	assert_int_equal(mem_init_buffer(&gm, buf, SMALL), 0);
	for (int i = 0; i < 16; i++)
		pat[i] = (uint8_t)(0xa0 + i);
	assert_int_equal(mem_write(&gm, SMALL - 16, pat, 16), 0);
	assert_memory_equal(buf + SMALL - 16, pat, 16);
	assert_int_equal(mem_read(&gm, SMALL - 16, out, 16), 0);
	assert_memory_equal(out, pat, 16);
	assert_int_equal(mem_write(&gm, SMALL - 15, pat, 16), -EFAULT);
	assert_int_equal(buf[SMALL - 15], pat[1]); /* nothing copied */
	memset(out, 0x55, sizeof(out));
	assert_int_equal(mem_read(&gm, SMALL - 8, out, 16), -EFAULT);
	assert_int_equal(out[0], 0x55);
	assert_int_equal(mem_write(&gm, UINT64_MAX - 3, pat, 8), -EFAULT);
	mem_destroy(&gm);
	free(buf);
}

static void test_dirty(void **state)
{
	struct guest_mem gm;
	uint8_t *buf = calloc(1, SMALL);
	uint64_t bm[SMALL / 4096 / 64];
	uint8_t data[0x2001] = {0};

	(void)state;
	assert_non_null(buf);
	assert_int_equal(mem_init_buffer(&gm, buf, SMALL), 0);

	assert_int_equal(mem_write(&gm, 0x1fff, data, 1), 0); /* page 1 only */
	assert_int_equal(mem_write(&gm, 0x4fff, data, 2), 0); /* pages 4, 5 */
	assert_int_equal(mem_write(&gm, 0x8000, data, 0x2001), 0); /* pages 8, 9, 10 */
	assert_int_equal(mem_write(&gm, 0x20000, data, 0), 0); /* len 0: nothing */
	assert_int_equal(mem_write(&gm, SMALL - 1, data, 1), 0); /* last page */
	mem_mark_dirty(&gm, SMALL - 1, 2); /* past the end: ignored */
	mem_mark_dirty(&gm, UINT64_MAX, 2);
	mem_mark_dirty(&gm, 0x30000, 0);

	memset(bm, 0, sizeof(bm));
	bm[0] = 1ull << 63; /* take ORs into out: pre-existing bits stay */
	mem_dev_dirty_take(&gm, bm);
	for (uint64_t pg = 0; pg < SMALL / 4096; pg++) {
		bool want = pg == 1 || pg == 4 || pg == 5 || pg == 8 || pg == 9 || pg == 10 ||
			    pg == SMALL / 4096 - 1 || pg == 63;
		assert_int_equal(bit(bm, pg), want);
	}
	memset(bm, 0, sizeof(bm));
	mem_dev_dirty_take(&gm, bm); /* cleared by the previous take */
	for (size_t w = 0; w < sizeof(bm) / 8; w++)
		assert_int_equal(bm[w], 0);

	mem_mark_dirty(&gm, 0x3000, 0x1000); /* exactly one page */
	mem_dev_dirty_take(&gm, bm);
	for (uint64_t pg = 0; pg < SMALL / 4096; pg++)
		assert_int_equal(bit(bm, pg), pg == 3);
	mem_destroy(&gm);
	free(buf);
}

static void test_page_index_low(void **state)
{
	struct guest_mem gm;
	uint8_t *buf = calloc(1, SMALL);

	(void)state;
	assert_non_null(buf);
	assert_int_equal(mem_init_buffer(&gm, buf, SMALL), 0);
	for (uint64_t i = 0; i < gm.nr_pages; i++) {
		assert_int_equal(mem_page_gpa(&gm, i), i << 12);
		assert_int_equal(mem_page_index(&gm, i << 12), i);
		assert_int_equal(mem_page_index(&gm, (i << 12) + 4095), i);
		assert_ptr_equal(mem_page_host(&gm, i), buf + (i << 12));
	}
	assert_int_equal(mem_page_index(&gm, SMALL), UINT64_MAX);
	assert_int_equal(mem_page_index(&gm, UINT64_MAX), UINT64_MAX);
	assert_int_equal(mem_page_gpa(&gm, gm.nr_pages), UINT64_MAX);
	assert_int_equal(mem_page_gpa(&gm, UINT64_MAX), UINT64_MAX);
	assert_null(mem_page_host(&gm, gm.nr_pages));
	mem_destroy(&gm);
	free(buf);
}

/* 3 GiB + 8 MiB in a memfd (MAP_NORESERVE, untouched: cheap): low [0, 3G) and high [4G, 4G+8M). */
static void test_high_region(void **state)
{
	struct guest_mem gm;
	const uint64_t low_pages = MEM_LOW_LIMIT >> 12, hi_end = MEM_HIGH_BASE + (8ull << 20);
	uint64_t *bm;
	uint8_t *hi, b = 0;

	(void)state;
	assert_int_equal(mem_create(&gm, BIG), 0); /* a set-up failure of the code under test fails */
	assert_int_equal(gm.nr, 2);
	assert_int_equal(gm.r[0].gpa, 0);
	assert_int_equal(gm.r[0].size, MEM_LOW_LIMIT);
	assert_int_equal(gm.r[1].gpa, MEM_HIGH_BASE);
	assert_int_equal(gm.r[1].size, 8ull << 20);
	assert_int_equal(gm.nr_pages, BIG >> 12);
	hi = gm.r[1].host;

	assert_non_null(gpa_ptr(&gm, MEM_LOW_LIMIT - 1, 1));
	assert_null(gpa_ptr(&gm, MEM_LOW_LIMIT - 1, 2)); /* runs into the hole */
	assert_null(gpa_ptr(&gm, MEM_LOW_LIMIT, 1)); /* the MMIO hole */
	assert_null(gpa_ptr(&gm, 0xfeb00000, 4)); /* virtio-mmio */
	assert_null(gpa_ptr(&gm, MEM_HIGH_BASE - 1, 1));
	assert_null(gpa_ptr(&gm, MEM_HIGH_BASE - 1, 2)); /* spans hole -> high */
	assert_null(gpa_ptr(&gm, MEM_LOW_LIMIT - 4096, MEM_HIGH_BASE - MEM_LOW_LIMIT + 8192));
	assert_null(gpa_ptr(&gm, 0, BIG)); /* spans low and high */
	assert_ptr_equal(gpa_ptr(&gm, MEM_HIGH_BASE, 1), hi);
	assert_ptr_equal(gpa_ptr(&gm, MEM_HIGH_BASE, 8ull << 20), hi);
	assert_ptr_equal(gpa_ptr(&gm, hi_end - 1, 1), hi + (8ull << 20) - 1);
	assert_null(gpa_ptr(&gm, hi_end, 1));
	assert_null(gpa_ptr(&gm, hi_end - 1, 2));
	assert_null(gpa_ptr(&gm, MEM_HIGH_BASE, UINT64_MAX));

	/* Page index <-> gpa round trip at the edges of both regions and sampled inside. */
	assert_int_equal(mem_page_index(&gm, MEM_LOW_LIMIT - 1), low_pages - 1);
	assert_int_equal(mem_page_index(&gm, MEM_LOW_LIMIT), UINT64_MAX);
	assert_int_equal(mem_page_index(&gm, 0xfeb00000), UINT64_MAX);
	assert_int_equal(mem_page_index(&gm, MEM_HIGH_BASE), low_pages);
	assert_int_equal(mem_page_index(&gm, hi_end - 1), gm.nr_pages - 1);
	assert_int_equal(mem_page_index(&gm, hi_end), UINT64_MAX);
	assert_int_equal(mem_page_gpa(&gm, low_pages - 1), MEM_LOW_LIMIT - 4096);
	assert_int_equal(mem_page_gpa(&gm, low_pages), MEM_HIGH_BASE);
	assert_int_equal(mem_page_gpa(&gm, gm.nr_pages - 1), hi_end - 4096);
	assert_int_equal(mem_page_gpa(&gm, gm.nr_pages), UINT64_MAX);
	for (uint64_t i = 0; i < gm.nr_pages; i += 4093) {
		uint64_t gpa = mem_page_gpa(&gm, i);

		assert_int_not_equal(gpa, UINT64_MAX);
		assert_int_equal(mem_page_index(&gm, gpa), i);
		assert_ptr_equal(mem_page_host(&gm, i), gpa_ptr(&gm, gpa, 4096));
	}
	assert_ptr_equal(mem_page_host(&gm, low_pages), hi);

	/* Writes land in the memfd at the region's offset and dirty the right page index. */
	bm = calloc((gm.nr_pages + 63) / 64, sizeof(*bm));
	assert_non_null(bm);
	assert_int_equal(mem_write(&gm, MEM_HIGH_BASE + 0x1fff, "xy", 2), 0);
	assert_int_equal(mem_write(&gm, MEM_LOW_LIMIT - 1, "xy", 2), -EFAULT);
	assert_int_equal(pread(gm.memfd, &b, 1, (off_t)MEM_LOW_LIMIT + 0x2000), 1);
	assert_int_equal(b, 'y');
	mem_dev_dirty_take(&gm, bm);
	for (uint64_t w = 0; w < (gm.nr_pages + 63) / 64; w++) {
		uint64_t want = 0;

		if (w == (low_pages + 1) / 64)
			want |= 1ull << ((low_pages + 1) % 64);
		if (w == (low_pages + 2) / 64)
			want |= 1ull << ((low_pages + 2) % 64);
		assert_int_equal(bm[w], want);
	}
	free(bm);
	mem_destroy(&gm);
	assert_int_equal(gm.nr, 0);
	assert_int_equal(gm.memfd, -1);
	mem_destroy(&gm);
}

/* mem_destroy on a zeroed guest_mem must not close fd 0 (memfd 0 is not "an fd" there). */
static void test_destroy_zeroed(void **state)
{
	struct guest_mem gm;
	int saved = dup(0), nul = -1;

	(void)state;
	assert_true(saved >= 0);
	memset(&gm, 0, sizeof(gm));
	mem_destroy(&gm);
	bool open0 = fcntl(0, F_GETFD) != -1;
	if (!open0) { /* restore stdin before failing */
		nul = dup2(saved, 0);
		assert_int_equal(nul, 0);
	}
	close(saved);
	assert_true(open0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init_errors),    cmocka_unit_test(test_gpa_ptr_bounds),
		cmocka_unit_test(test_read_write),     cmocka_unit_test(test_dirty),
		cmocka_unit_test(test_page_index_low), cmocka_unit_test(test_high_region),
		cmocka_unit_test(test_destroy_zeroed),
	};
	return cmocka_run_group_tests_name("mem", tests, NULL, NULL);
}
