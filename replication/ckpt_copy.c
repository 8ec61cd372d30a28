/* ckpt_copy.c — the staging copy of an epoch's dirty pages on two cores (see ckpt_copy.h). */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "replication/ckpt_copy.h"

struct ckpt_copier {
	pthread_t th;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool quit; /* under lock */
	uint32_t armed; /* under lock: the generation to serve (the job is published before) */
	uint32_t gen; /* the driving thread's last generation */
	/* The job (seq_cst atomics). cursor = generation << 32 | next page to claim: a claim is a CAS
	 * that keeps the generation, so a helper late from an earlier epoch can never claim pages of
	 * a later one. stg and n are written before the cursor is published. */
	struct ckpt_stage *stg;
	size_t n;
	uint64_t cursor;
	uint64_t copied; /* pages of the current job copied, by both threads */
	uint64_t helped;
};

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_SEQ_CST)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_SEQ_CST)

/* Claim and copy chunks of generation gen until none is left. Returns the pages copied. */
static uint64_t copy_chunks(struct ckpt_copier *c, uint32_t gen, bool helper)
{
	uint64_t done = 0, cur = LOAD(c->cursor);

	for (;;) {
		if ((uint32_t)(cur >> 32) != gen)
			return done;
		size_t i = (uint32_t)cur, n = LOAD(c->n);
		if (i >= n)
			return done;
		size_t end = i + CKPT_COPY_CHUNK < n ? i + CKPT_COPY_CHUNK : n;
		if (!__atomic_compare_exchange_n(&c->cursor, &cur, (uint64_t)gen << 32 | end, false,
						 __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
			continue; /* cur now holds the current value */
		struct ckpt_stage *stg = LOAD(c->stg);
		for (size_t k = i; k < end; k++) {
			uint8_t *dst = stg->data + k * GUEST_PAGE_SIZE;

			__builtin_memcpy(dst, stg->ptrs[k], GUEST_PAGE_SIZE);
			stg->ptrs[k] = dst;
		}
		done += end - i;
		if (helper) /* counted before the chunk is: the driver's sum is then exact */
			__atomic_fetch_add(&c->helped, end - i, __ATOMIC_SEQ_CST);
		__atomic_fetch_add(&c->copied, end - i, __ATOMIC_SEQ_CST);
		cur = LOAD(c->cursor);
	}
}

static void *helper_main(void *arg)
{
	struct ckpt_copier *c = arg;
	uint32_t seen = 0;

	pthread_setname_np(pthread_self(), "ckpt-copy");
	pthread_mutex_lock(&c->lock);
	for (;;) {
		while (!c->quit && c->armed == seen)
			pthread_cond_wait(&c->cond, &c->lock);
		if (c->quit)
			break;
		seen = c->armed;
		pthread_mutex_unlock(&c->lock);
		(void)copy_chunks(c, seen, true); /* nothing left (a late wake-up): returns at once */
		pthread_mutex_lock(&c->lock);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

int ckpt_copier_new(struct ckpt_copier **out)
{
	struct ckpt_copier *c = calloc(1, sizeof(*c));
	int rc;

	*out = NULL;
	if (!c)
		return -ENOMEM;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	/* SCHED_FIFO or nothing: a helper the host's other work can preempt while it holds a chunk
	 * would stretch the pause by a time slice (the loop waits for that chunk), and it spins. */
	pthread_attr_t a;
	pthread_attr_init(&a);
	pthread_attr_setinheritsched(&a, PTHREAD_EXPLICIT_SCHED);
	pthread_attr_setschedpolicy(&a, SCHED_FIFO);
	pthread_attr_setschedparam(&a, &(struct sched_param){.sched_priority = 1});
	rc = -pthread_create(&c->th, &a, helper_main, c); /* EPERM without CAP_SYS_NICE */
	pthread_attr_destroy(&a);
	if (rc) {
		pthread_cond_destroy(&c->cond);
		pthread_mutex_destroy(&c->lock);
		free(c);
		return rc;
	}
	*out = c;
	return 0;
}

void ckpt_copier_free(struct ckpt_copier *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->quit = true;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->lock);
	pthread_join(c->th, NULL);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

uint64_t ckpt_copier_copy(struct ckpt_copier *c, struct ckpt_stage *stg)
{
	if (!c || stg->n < CKPT_COPY_MIN) { /* alone: plain copies, no helper */
		for (size_t k = 0; k < stg->n; k++) {
			uint8_t *dst = stg->data + k * GUEST_PAGE_SIZE;

			__builtin_memcpy(dst, stg->ptrs[k], GUEST_PAGE_SIZE);
			stg->ptrs[k] = dst;
		}
		return 0;
	}
	uint32_t gen = ++c->gen;
	uint64_t before = LOAD(c->helped);
	STORE(c->stg, stg);
	STORE(c->n, stg->n);
	STORE(c->copied, 0);
	STORE(c->cursor, (uint64_t)gen << 32); /* published: claims of this generation may start */
	pthread_mutex_lock(&c->lock); /* the helper holds it only between its waits */
	c->armed = gen;
	pthread_cond_signal(&c->cond); /* the one futex wake of the pause */
	pthread_mutex_unlock(&c->lock);
	copy_chunks(c, gen, false);
	while (LOAD(c->copied) < stg->n) /* at most the chunk the helper holds: it runs at SCHED_FIFO */
		__builtin_ia32_pause();
	return LOAD(c->helped) - before;
}

uint64_t ckpt_copier_helped(const struct ckpt_copier *c)
{
	return c ? __atomic_load_n(&c->helped, __ATOMIC_RELAXED) : 0;
}

int ckpt_stage_prepare(struct ckpt_stage *stg, size_t cap)
{
	size_t old = stg->cap;
	int rc = ckpt_stage_reserve(stg, cap);

	if (!rc && stg->cap > old)
		memset(stg->data + old * GUEST_PAGE_SIZE, 0, (stg->cap - old) * GUEST_PAGE_SIZE);
	return rc;
}
