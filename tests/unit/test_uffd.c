/* test_uffd.c — unit tests of hv/uffd.c: missing-page faults (COPY/ZEROPAGE) and minor faults (CONTINUE) on memfd RAM. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hv/uffd.h"

#define SIZE (1ull << 20) /* 256 pages */

struct toucher {
	struct guest_mem *gm;
	uint64_t idx;
	uint64_t seen;
};

static void *touch(void *arg)
{
	struct toucher *t = arg;

	t->seen = *(volatile uint64_t *)mem_page_host(t->gm, t->idx);
	return NULL;
}

/* Missing mode: a present page never faults; a discarded one faults (reported with its index) until
 * installed, and reads what was installed; zero-installed pages read zero; a second install is
 * skipped; zap and continue are minor mode only. */
static void test_fault_and_install(void **state)
{
	struct guest_mem gm;
	struct mem_uffd *u;
	struct toucher t = {.gm = &gm, .idx = 7};
	uint8_t page[2 * 4096];
	uint64_t idx = 0;
	pthread_t th;
	char err[200];

	(void)state;
	assert_int_equal(mem_create(&gm, SIZE), 0);
	for (uint64_t i = 0; i < gm.nr_pages; i++)
		*(uint64_t *)mem_page_host(&gm, i) = 1000 + i;
	assert_int_equal(mem_discard(&gm, 7, 2), 0);
	assert_int_equal(mem_uffd_open(&gm, false, &u, err, sizeof(err)), 0);
	assert_false(mem_uffd_minor(u));
	assert_int_equal(mem_uffd_zap(u, 6, 1), -EOPNOTSUPP);
	assert_int_equal(mem_uffd_continue(u, 6), -EOPNOTSUPP);
	assert_int_equal(*(volatile uint64_t *)mem_page_host(&gm, 6), 1006); /* present: no fault */
	assert_int_equal(pthread_create(&th, NULL, touch, &t), 0);
	bool minor = true;
	assert_int_equal(mem_uffd_next_fault(u, &idx, &minor, 5000), 1);
	assert_int_equal(idx, 7);
	assert_false(minor);
	memset(page, 0, sizeof(page));
	*(uint64_t *)page = 4242;
	*(uint64_t *)(page + 4096) = 4343;
	assert_int_equal(mem_uffd_copy(u, 7, page, 1), 0);
	pthread_join(th, NULL);
	assert_int_equal(t.seen, 4242);
	assert_int_equal(mem_uffd_copy(u, 7, page, 2), 0); /* 7 present: skipped, 8 installed */
	assert_int_equal(*(uint64_t *)mem_page_host(&gm, 7), 4242);
	assert_int_equal(*(uint64_t *)mem_page_host(&gm, 8), 4343);
	assert_int_equal(mem_uffd_next_fault(u, &idx, NULL, 10), 0); /* nothing pending */
	assert_int_equal(mem_discard(&gm, 20, 1), 0);
	assert_int_equal(mem_uffd_zero(u, 20, 1), 0);
	assert_int_equal(*(uint64_t *)mem_page_host(&gm, 20), 0);
	assert_int_equal(mem_uffd_copy(u, gm.nr_pages - 1, page, 2), -EINVAL); /* past the end */
	mem_uffd_close(u);
	mem_destroy(&gm);
}

/* Touch page idx on a thread and expect exactly one fault of that page and kind; returns the thread. */
static pthread_t expect_fault(struct mem_uffd *u, struct toucher *t, uint64_t idx, bool want_minor)
{
	pthread_t th;
	uint64_t got = UINT64_MAX;
	bool minor = !want_minor;

	t->idx = idx;
	assert_int_equal(pthread_create(&th, NULL, touch, t), 0);
	assert_int_equal(mem_uffd_next_fault(u, &got, &minor, 5000), 1);
	assert_int_equal(got, idx);
	assert_int_equal(minor, want_minor);
	return th;
}

/* Minor mode: a zapped page keeps its page cache (the memfd still reads it) and faults MINOR; it
 * resolves either with new content (mem_uffd_copy: written into the page cache, then mapped) or as it
 * is (mem_uffd_continue). A hole faults MISSING and resolves with mem_uffd_zero. A zapped page
 * installed before anyone touches it never faults. */
static void test_minor_faults(void **state)
{
	struct guest_mem gm;
	struct mem_uffd *u;
	struct toucher t = {.gm = &gm};
	uint8_t page[4096] = {0};
	uint64_t v = 0, idx;
	char err[200];
	pthread_t th;

	(void)state;
	assert_int_equal(mem_create(&gm, SIZE), 0);
	for (uint64_t i = 0; i < gm.nr_pages; i++)
		*(uint64_t *)mem_page_host(&gm, i) = 1000 + i;
	assert_int_equal(mem_uffd_open(&gm, true, &u, err, sizeof(err)), 0);
	assert_true(mem_uffd_minor(u)); /* this kernel has minor faults on shmem */
	assert_int_equal(mem_uffd_zap(u, 7, 2), 0);
	assert_int_equal(mem_uffd_zap(u, 30, 1), 0);
	assert_int_equal(pread(gm.memfd, &v, 8, 7 * 4096), 8);
	assert_int_equal(v, 1007); /* the page cache stayed */
	assert_int_equal(*(volatile uint64_t *)mem_page_host(&gm, 6), 1006); /* not zapped: no fault */

	th = expect_fault(u, &t, 7, true);
	*(uint64_t *)page = 4242;
	assert_int_equal(mem_uffd_copy(u, 7, page, 1), 0);
	pthread_join(th, NULL);
	assert_int_equal(t.seen, 4242);

	th = expect_fault(u, &t, 8, true);
	assert_int_equal(mem_uffd_continue(u, 8), 0);
	pthread_join(th, NULL);
	assert_int_equal(t.seen, 1008);
	assert_int_equal(mem_uffd_continue(u, 8), 0); /* already mapped: a no-op */

	assert_int_equal(mem_discard(&gm, 20, 1), 0);
	th = expect_fault(u, &t, 20, false);
	assert_int_equal(mem_uffd_zero(u, 20, 1), 0);
	pthread_join(th, NULL);
	assert_int_equal(t.seen, 0);

	*(uint64_t *)page = 5151;
	assert_int_equal(mem_uffd_copy(u, 30, page, 1), 0);
	assert_int_equal(*(volatile uint64_t *)mem_page_host(&gm, 30), 5151);
	assert_int_equal(mem_uffd_next_fault(u, &idx, NULL, 10), 0); /* none of this faulted */
	assert_int_equal(mem_uffd_copy(u, gm.nr_pages - 1, page, 2), -EINVAL); /* past the end */
	mem_uffd_close(u);
	mem_destroy(&gm);
}

static void test_needs_memfd(void **state)
{
	static uint8_t buf[SIZE];
	struct guest_mem gm;
	struct mem_uffd *u;
	char err[200];

	(void)state;
	assert_int_equal(mem_init_buffer(&gm, buf, SIZE), 0);
	assert_int_equal(mem_uffd_open(&gm, true, &u, err, sizeof(err)), -EINVAL);
	assert_null(u);
	assert_string_equal(err, "post-copy needs memfd-backed RAM");
	mem_destroy(&gm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fault_and_install),
		cmocka_unit_test(test_minor_faults),
		cmocka_unit_test(test_needs_memfd),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
