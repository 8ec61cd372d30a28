/* converge.c — the pre-copy convergence estimator (see converge.h). */
#include "migrate/converge.h"

#define EWMA_NEW 0.5 /* weight of the newest sample */

void conv_init(struct converge *c, double target_ms)
{
	*c = (struct converge){.overhead_ms = CONV_DEFAULT_OVERHEAD_MS, .target_ms = target_ms};
}

static double ewma(double old, double sample)
{
	return old > 0 ? old * (1 - EWMA_NEW) + sample * EWMA_NEW : sample;
}

void conv_round_sent(struct converge *c, uint64_t pages, double send_s)
{
	c->rounds++;
	if (pages < 64 || send_s <= 0)
		return;
	c->page_rate = ewma(c->page_rate, (double)pages / send_s);
}

double conv_round_synced(struct converge *c, uint64_t dirty, double elapsed_s)
{
	if (elapsed_s > 0)
		c->dirty_rate = ewma(c->dirty_rate, (double)dirty / elapsed_s);
	/* Progress: the dirty rate must stay well under what we send, else rounds never shrink. */
	if (c->page_rate > 0 && c->dirty_rate > 0.5 * c->page_rate && !conv_fits(c, dirty))
		c->stalls++;
	else if (c->last_dirty && dirty > c->last_dirty * 9 / 10 && !conv_fits(c, dirty))
		c->stalls++;
	else
		c->stalls = 0;
	if (c->stalls > 0) {
		c->throttle = c->throttle <= 0 ? CONV_THROTTLE_FIRST : c->throttle + CONV_THROTTLE_STEP;
		if (c->throttle > CONV_THROTTLE_MAX)
			c->throttle = CONV_THROTTLE_MAX;
	}
	c->last_dirty = dirty;
	return c->throttle;
}

double conv_estimate_ms(const struct converge *c, uint64_t n)
{
	if (c->page_rate <= 0)
		return n ? 1e9 : c->overhead_ms;
	return c->overhead_ms + (double)n / c->page_rate * 1e3;
}

bool conv_fits(const struct converge *c, uint64_t n)
{
	/* Margin: the rate of the last rounds over-predicts the final pass now and then (measured: a
	 * 200 MiB run estimated 9 ms and took 14), so aim at 70 % of the target. */
	return conv_estimate_ms(c, n) <= CONV_TARGET_MARGIN * c->target_ms;
}

double conv_throttle_cost_ms(const struct converge *c, uint64_t n)
{
	if (c->page_rate <= 0)
		return 1e9;
	double d = c->dirty_rate, p = c->page_rate,
	       f = c->throttle > CONV_THROTTLE_FIRST ? c->throttle : CONV_THROTTLE_FIRST;
	if (d > 0 && 1 - p / (2 * d) > f)
		f = 1 - p / (2 * d);
	if (f > CONV_THROTTLE_MAX)
		f = CONV_THROTTLE_MAX;
	double r = d * (1 - f) / p;
	if (r >= 0.99)
		r = 0.99;
	return f * (double)n / (p * (1 - r)) * 1e3;
}

double conv_postcopy_cost_ms(const struct converge *c, uint64_t n)
{
	return c->page_rate > 0 ? (double)n / c->page_rate * 1e3 : 1e9;
}
