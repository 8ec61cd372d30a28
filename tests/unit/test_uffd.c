/* test_uffd.c — unit tests of hv/uffd.c: missing-page faults on memfd RAM, installed by COPY/ZEROPAGE. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

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

/* A present page never faults; a discarded one faults (reported with its index) until installed,
 * and reads what was installed; zero-installed pages read zero; a second install is skipped. */
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
	assert_int_equal(mem_uffd_open(&gm, &u, err, sizeof(err)), 0);
	assert_int_equal(*(volatile uint64_t *)mem_page_host(&gm, 6), 1006); /* present: no fault */
	assert_int_equal(pthread_create(&th, NULL, touch, &t), 0);
	assert_int_equal(mem_uffd_next_fault(u, &idx, 5000), 1);
	assert_int_equal(idx, 7);
	memset(page, 0, sizeof(page));
	*(uint64_t *)page = 4242;
	*(uint64_t *)(page + 4096) = 4343;
	assert_int_equal(mem_uffd_copy(u, 7, page, 1), 0);
	pthread_join(th, NULL);
	assert_int_equal(t.seen, 4242);
	assert_int_equal(mem_uffd_copy(u, 7, page, 2), 0); /* 7 present: skipped, 8 installed */
	assert_int_equal(*(uint64_t *)mem_page_host(&gm, 7), 4242);
	assert_int_equal(*(uint64_t *)mem_page_host(&gm, 8), 4343);
	assert_int_equal(mem_uffd_next_fault(u, &idx, 10), 0); /* nothing pending */
	assert_int_equal(mem_discard(&gm, 20, 1), 0);
	assert_int_equal(mem_uffd_zero(u, 20, 1), 0);
	assert_int_equal(*(uint64_t *)mem_page_host(&gm, 20), 0);
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
	assert_int_equal(mem_uffd_open(&gm, &u, err, sizeof(err)), -EINVAL);
	assert_null(u);
	assert_string_equal(err, "post-copy needs memfd-backed RAM");
	mem_destroy(&gm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fault_and_install),
		cmocka_unit_test(test_needs_memfd),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
