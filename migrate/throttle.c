/* throttle.c — auto-converge: pause the vCPUs for a growing fraction of every 10 ms slice. */
#include <errno.h>
#include <time.h>

#include "hv/hv.h"
#include "migrate/migrate_priv.h"
#include "common/clock.h"

static void deadline(struct timespec *ts, uint64_t ns)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ns += (uint64_t)ts->tv_nsec;
	ts->tv_sec += (time_t)(ns / 1000000000ull);
	ts->tv_nsec = (long)(ns % 1000000000ull);
}

/* Wait up to ns or until stopped/changed; lock held. */
static void wait_ns(struct throttle *t, uint64_t ns)
{
	struct timespec ts;

	deadline(&ts, ns);
	while (!t->stop) {
		if (pthread_cond_timedwait(&t->cond, &t->lock, &ts) == ETIMEDOUT)
			break;
	}
}

static void *throttle_main(void *arg)
{
	struct throttle *t = arg;

	pthread_mutex_lock(&t->lock);
	while (!t->stop) {
		double f = t->frac;
		if (f <= 0) {
			wait_ns(t, THROTTLE_SLICE_NS);
			continue;
		}
		uint64_t off = (uint64_t)(f * (double)THROTTLE_SLICE_NS);
		uint64_t t0 = now_ns();
		if (vm_pause(t->vm) == 0) {
			wait_ns(t, off);
			vm_resume(t->vm);
			t->paused_ns += now_ns() - t0;
		}
		if (!t->stop)
			wait_ns(t, THROTTLE_SLICE_NS - off);
	}
	pthread_mutex_unlock(&t->lock);
	return NULL;
}

int throttle_start(struct throttle *t, struct vm *vm)
{
	pthread_condattr_t ca;
	int rc;

	*t = (struct throttle){.vm = vm};
	pthread_mutex_init(&t->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&t->cond, &ca);
	pthread_condattr_destroy(&ca);
	rc = pthread_create(&t->th, NULL, throttle_main, t);
	if (rc)
		return -rc;
	t->started = true;
	return 0;
}

void throttle_set(struct throttle *t, double frac)
{
	if (!t->started)
		return;
	pthread_mutex_lock(&t->lock);
	t->frac = frac;
	pthread_mutex_unlock(&t->lock);
}

void throttle_stop(struct throttle *t)
{
	if (!t->started)
		return;
	pthread_mutex_lock(&t->lock);
	t->stop = true;
	pthread_cond_broadcast(&t->cond);
	pthread_mutex_unlock(&t->lock);
	pthread_join(t->th, NULL);
	t->started = false;
	pthread_cond_destroy(&t->cond);
	pthread_mutex_destroy(&t->lock);
}
