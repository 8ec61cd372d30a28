/* test_tx_hook.c — the output hook holder under a race: clearing it while a vCPU thread transmits. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "common/clock.h"
#include "vmm/tx_hook.h"

/* What the hook's owner is to the real hook (struct remus: it holds frames in r->nb). A NULL
 * opaque is what made remus's hook dereference NULL; here it is counted instead of crashing. */
struct owner {
	atomic_ulong frames;
};

static atomic_ulong null_opaque;

static void hook(void *opaque, int netidx, const void *frame, size_t len)
{
	struct owner *o = opaque;

	(void)netidx, (void)frame, (void)len;
	if (!o) {
		atomic_fetch_add(&null_opaque, 1);
		return;
	}
	atomic_fetch_add(&o->frames, 1);
}

struct vcpu {
	struct vmm_tx_slot *slot;
	atomic_bool stop;
	unsigned long hooked, direct;
};

/* A vCPU transmitting as fast as it can: each frame goes to the hook or (no hook) to the tap. */
static void *vcpu_main(void *arg)
{
	struct vcpu *c = arg;
	uint8_t frame[64] = {0};

	while (!atomic_load_explicit(&c->stop, memory_order_relaxed)) {
		if (vmm_tx_slot_call(c->slot, 0, frame, sizeof(frame)))
			c->hooked++;
		else
			c->direct++;
	}
	return NULL;
}

/* Protect / standby lost / unprotect, over and over (the loop thread's vmm_set_tx_hook calls), while
 * a vCPU transmits: no call may ever reach the hook with a NULL opaque. Before the fix clearing
 * stored opaque = NULL before fn = NULL, and a vCPU between its two loads got NULL. */
static void test_clear_while_transmitting(void **state)
{
	struct vmm_tx_slot slot = {0};
	struct owner owners[2] = {0};
	struct vcpu c[2] = {{.slot = &slot}, {.slot = &slot}};
	pthread_t th[2];
	uint64_t t0 = now_ns(), cycles = 0;

	(void)state;
	atomic_store(&null_opaque, 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, vcpu_main, &c[i]), 0);
	/* 3 s, or until the race is seen (before the fix: mostly within a second here) */
	while (now_ns() - t0 < 3000000000ull && !atomic_load(&null_opaque)) {
		vmm_tx_slot_set(&slot, hook, &owners[cycles & 1]); /* protect (a new owner each time) */
		vmm_tx_slot_set(&slot, NULL, NULL); /* standby lost / unprotect */
		cycles++;
	}
	unsigned long hooked = 0, direct = 0;
	for (int i = 0; i < 2; i++) {
		atomic_store(&c[i].stop, true);
		pthread_join(th[i], NULL);
		hooked += c[i].hooked;
		direct += c[i].direct;
	}
	printf("tx hook: %llu set/clear cycles in %.2f s, %lu frames hooked, %lu direct, %lu with a NULL "
	       "owner\n",
	       (unsigned long long)cycles, (double)(now_ns() - t0) / 1e9, hooked, direct,
	       (unsigned long)atomic_load(&null_opaque));
	assert_int_equal(atomic_load(&null_opaque), 0);
	/* the race was exercised: frames went both ways while the hook came and went */
	assert_true(hooked > 0 && direct > 0);
	assert_int_equal(atomic_load(&owners[0].frames) + atomic_load(&owners[1].frames), hooked);
}

/* Plain behaviour: no hook = the frame goes on; a hook gets the frame and its opaque; clearing
 * restores direct output. */
static void test_set_and_clear(void **state)
{
	struct vmm_tx_slot slot = {0};
	struct owner o = {0};
	uint8_t f[14] = {0};

	(void)state;
	atomic_store(&null_opaque, 0);
	assert_false(vmm_tx_slot_call(&slot, 0, f, sizeof(f)));
	vmm_tx_slot_set(&slot, hook, &o);
	assert_true(vmm_tx_slot_call(&slot, 1, f, sizeof(f)));
	assert_int_equal(atomic_load(&o.frames), 1);
	vmm_tx_slot_set(&slot, NULL, NULL);
	assert_false(vmm_tx_slot_call(&slot, 0, f, sizeof(f)));
	assert_int_equal(atomic_load(&o.frames), 1);
	assert_ptr_equal(slot.opaque, &o); /* kept for a vCPU that loaded the old hook */
	assert_int_equal(atomic_load(&null_opaque), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_set_and_clear),
		cmocka_unit_test(test_clear_while_transmitting),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
