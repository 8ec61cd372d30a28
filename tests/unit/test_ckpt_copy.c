/* test_ckpt_copy.c — the two-core staging copy: every page copied exactly, armed or not, epoch after epoch. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "replication/checkpoint.h"
#include "replication/ckpt_copy.h"

#define NP 3000 /* not a multiple of CKPT_COPY_CHUNK: a short last chunk */
#define PG 4096

static uint8_t *ram;

static void fill(uint8_t tag)
{
	for (size_t i = 0; i < NP; i++)
		memset(ram + i * PG, (int)(uint8_t)(tag + i), PG);
}

/* Stage pages idx[0..n) of ram (filled with tag; ptrs = their RAM, as the engine lists them), copy,
 * check. */
static uint64_t stage_and_check(struct ckpt_copier *c, struct ckpt_stage *stg, const uint64_t *idx, size_t n,
				uint8_t tag)
{
	stg->n = 0;
	for (size_t i = 0; i < n; i++) {
		stg->idx[stg->n] = idx[i];
		stg->ptrs[stg->n++] = ram + idx[i] * PG;
	}
	uint64_t helped = ckpt_copier_copy(c, stg);
	for (size_t i = 0; i < n; i++) {
		const uint8_t *p = stg->ptrs[i];
		assert_ptr_equal(p, stg->data + i * PG); /* points at its copy, in order */
		assert_int_equal(stg->idx[i], idx[i]);
		assert_int_equal(p[0], (uint8_t)(tag + idx[i]));
		assert_memory_equal(p, ram + idx[i] * PG, PG);
	}
	return helped;
}

static void test_copy_alone_and_helped(void **state)
{
	struct ckpt_copier *c;
	struct ckpt_stage stg = {0};
	static uint64_t idx[NP];
	uint64_t helped = 0;

	(void)state;
	ram = malloc((size_t)NP * PG);
	assert_non_null(ram);
	for (size_t i = 0; i < NP; i++)
		idx[i] = (i * 7) % NP; /* a permutation: sources out of order */
	assert_int_equal(ckpt_stage_prepare(&stg, NP), 0);
	assert_true(stg.cap >= NP);
	assert_int_equal(ckpt_copier_new(&c), 0);
	/* unarmed and without a copier: the caller copies alone */
	fill(1);
	assert_int_equal(stage_and_check(NULL, &stg, idx, NP, 1), 0);
	fill(2);
	helped += stage_and_check(c, &stg, idx, NP, 2);
	/* many epochs (generations) in a row, some below CKPT_COPY_MIN or empty: the helper wakes
	 * for the large ones and claims chunks while the caller copies */
	for (int e = 0; e < 200; e++) {
		size_t n = e % 10 == 3 ? 0 : e % 10 == 4 ? CKPT_COPY_MIN - 1 : NP - (size_t)e;
		fill((uint8_t)(e + 3));
		helped += stage_and_check(c, &stg, idx, n, (uint8_t)(e + 3));
	}
	print_message("helper copied %llu pages\n", (unsigned long long)helped);
	/* the helper took part: 180 epochs of ~3000 pages, each taking it a wake-up */
	assert_true(helped > 0);
	assert_int_equal(ckpt_copier_helped(c), helped);
	ckpt_copier_free(c);
	ckpt_copier_free(NULL);
	ckpt_stage_free(&stg);
	free(ram);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_copy_alone_and_helped),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
