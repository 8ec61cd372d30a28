/* hist.h — a lock-free latency histogram (fixed buckets, atomic counters) and its Prometheus text form. */
#ifndef DOPPEL_COMMON_HIST_H
#define DOPPEL_COMMON_HIST_H

#include <stdint.h>
#include <stdio.h>

/*
 * Recording is one relaxed atomic add on a bucket and one on the sum: cheap enough for the code that
 * produces the numbers (an epoch's end, an ACK), from any thread, with no lock. Readers (metrics,
 * status) take a snapshot from any thread; _count is the sum of the buckets of that snapshot, so the
 * exposition is always self-consistent (the +Inf bucket equals _count).
 */
#define HIST_MAX_BUCKETS 24

struct hist {
	int nb; /* finite buckets */
	uint64_t le_ns[HIST_MAX_BUCKETS]; /* upper bounds, ascending, in ns */
	uint64_t n[HIST_MAX_BUCKETS + 1]; /* atomic: per-bucket (not cumulative); last is +Inf */
	uint64_t sum_ns; /* atomic */
};

/* Buckets with upper bounds le_ns[0..nb) (strictly ascending, 1..HIST_MAX_BUCKETS of them).
 * Returns 0 or -EINVAL (nothing set up). */
int hist_init(struct hist *h, const uint64_t *le_ns, int nb) __attribute__((warn_unused_result));

/* Count one observation of ns nanoseconds. Any thread, lock-free. */
void hist_record(struct hist *h, uint64_t ns);

struct hist_snap {
	int nb;
	uint64_t le_ns[HIST_MAX_BUCKETS];
	uint64_t cum[HIST_MAX_BUCKETS + 1]; /* cumulative counts; cum[nb] = count (+Inf) */
	uint64_t count, sum_ns;
};
void hist_snapshot(const struct hist *h, struct hist_snap *out);

/* Write `name` as a Prometheus histogram (# HELP, # TYPE, _bucket{le="..."} in seconds, _sum in
 * seconds, _count). labels: NULL or extra labels without braces, e.g. "dev=\"net0\"". */
void hist_prom(FILE *f, const struct hist *h, const char *name, const char *help, const char *labels);

#endif
