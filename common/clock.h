/* clock.h — the one monotonic clock of doppel's host code (CLOCK_MONOTONIC, nanoseconds). */
#ifndef DOPPEL_COMMON_CLOCK_H
#define DOPPEL_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#endif
