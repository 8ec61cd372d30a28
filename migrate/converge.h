/* converge.h — the pre-copy convergence estimator: bandwidth, dirty rate, downtime, throttle (pure logic). */
#ifndef DOPPEL_MIGRATE_CONVERGE_H
#define DOPPEL_MIGRATE_CONVERGE_H

#include <stdbool.h>
#include <stdint.h>

/*
 * Fed once per pre-copy round with what the round did; answers "can we stop and copy now?" and
 * "how hard should the vCPUs be throttled?". No I/O, no clocks: the caller passes durations, so the
 * unit test drives it with made-up numbers.
 *
 * Model: the stop-and-copy phase has to send the pages dirty at the final sync at the measured
 * page rate (pages/s the sender achieved, compression and link included), plus a fixed overhead
 * (state capture + the destination's apply/start + the ack hop), measured or defaulted.
 * Estimated downtime(n) = overhead + n / page_rate.
 * Throttle: when the dirty rate is not at most half the page rate (rounds do not shrink fast enough),
 * raise the fraction of each 10 ms slice the vCPUs spend paused: 50 %, then +15 % per round, up to 99 %.
 */
struct converge {
	double page_rate; /* pages/s, EWMA over rounds (0 = unknown) */
	double dirty_rate; /* pages/s dirtied by the guest while a round was sent (EWMA) */
	double overhead_ms; /* fixed stop-and-copy cost */
	double target_ms; /* downtime target */
	double throttle; /* 0 .. CONV_THROTTLE_MAX */
	uint64_t rounds;
	uint64_t last_dirty; /* pages found dirty at the last sync */
	int stalls; /* consecutive rounds without enough progress */
};

#define CONV_THROTTLE_FIRST 0.50
#define CONV_THROTTLE_STEP 0.15
#define CONV_THROTTLE_MAX 0.99
#define CONV_DEFAULT_OVERHEAD_MS 1.5
#define CONV_TARGET_MARGIN 0.7 /* conv_fits aims at this fraction of the target */

/* target_ms > 0. */
void conv_init(struct converge *c, double target_ms);

/* A round sent `pages` pages in `send_s` seconds (send_s > 0; rounds with fewer than 64 pages do not
 * update the rate: too noisy). */
void conv_round_sent(struct converge *c, uint64_t pages, double send_s);

/* The sync after a round found `dirty` pages dirtied during `elapsed_s` seconds (the round). Updates
 * the dirty rate and the throttle. Returns the new throttle fraction. */
double conv_round_synced(struct converge *c, uint64_t dirty, double elapsed_s);

/* Estimated downtime (ms) for sending n pages in the pause. Unknown rate -> a large number. */
double conv_estimate_ms(const struct converge *c, uint64_t n);

/* True when n remaining pages fit CONV_TARGET_MARGIN of the target. */
bool conv_fits(const struct converge *c, uint64_t n);

/*
 * Which disrupts the guest less, for the n pages still dirty: converging them with the throttle, or
 * post-copy? Both in ms of guest work lost (guest time at zero progress), from the measured rates
 * (page rate P, dirty rate D); unknown rates -> a large number.
 *   throttle: to shrink rounds the throttle must bring the dirty rate to half the page rate:
 *             f = max(the current throttle, CONV_THROTTLE_FIRST, 1 - P / (2 D)); the rounds then
 *             shrink by r = D (1 - f) / P each and take n / P / (1 - r) in all, with the guest
 *             stopped for f of it: lost = f n / (P (1 - r)).
 *   post-copy: worst case, a guest that needs its whole dirty set waits until it has arrived:
 *             lost = n / P (pages it does not touch cost it nothing; the switch's own pause is the
 *             same few ms as stop-and-copy's and left out of both).
 * With n on both sides the choice is the ratio: post-copy when D > P at the first throttle step.
 */
double conv_throttle_cost_ms(const struct converge *c, uint64_t n);
double conv_postcopy_cost_ms(const struct converge *c, uint64_t n);

#endif
