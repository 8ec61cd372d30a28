/* work_dirty.c — work=dirty: rewrite every page of a working set per pass, verifying the previous pass. */
#include "guest.h"

#define DIRTY_CHUNK 64 /* pages between clock checks (fewer with a low rate=) */
#define DIRTY_WORDS (GUEST_PAGE / 8)

/* Progress lives in guest memory (and registers): a snapshot/restore or migration continues it. */
static uint64_t d_pass, d_idx, d_bad, d_stored, d_done, d_last_ns, d_next_ns;

/* Value of page `idx` after pass `pass`: first word; the last word holds its complement. */
static inline uint64_t dirty_val(uint64_t pass, uint64_t idx)
{
	return (pass << 32) | idx;
}

int work_dirty(void)
{
	volatile uint64_t *base;
	const char *v = cmdline_get("ws"), *b = cmdline_get("wsbase"), *r = cmdline_get("rate");
	uint64_t ws = 64ull << 20, wsbase = GUEST_WS_BASE, npages, rate = 0, chunk = DIRTY_CHUNK;

	if (v && parse_size(v, &ws)) {
		printf("dirty: error: bad ws=%s (want <n>[K|M|G])\n", v);
		return GUEST_EXIT_USAGE;
	}
	/* wsbase= moves the working set (e.g. to 4G, to exercise RAM above the hole) */
	if (b && (parse_size(b, &wsbase) || wsbase < GUEST_WS_BASE || wsbase % GUEST_PAGE)) {
		printf("dirty: error: bad wsbase=%s (want a page-aligned address >= 16M)\n", b);
		return GUEST_EXIT_USAGE;
	}
	/* rate= caps the pages stored per second (0 = as fast as possible) */
	if (r && (parse_u64(r, &rate) || rate > 1000000000ull)) {
		printf("dirty: error: bad rate=%s (want 0..1000000000 pages/s)\n", r);
		return GUEST_EXIT_USAGE;
	}
	if (rate && rate / 1000 < chunk)
		chunk = rate / 1000 ? rate / 1000 : 1;
	npages = ws / GUEST_PAGE;
	if (!npages || npages > 0xffffffffull || !ram_contains(wsbase, npages * GUEST_PAGE)) {
		printf("dirty: error: ws=%lu bytes at 0x%lx does not fit in RAM (%luM)\n", ws, wsbase,
		       ram_total() >> 20);
		return GUEST_EXIT_USAGE;
	}
	base = (volatile uint64_t *)(uintptr_t)wsbase;
	/* fill=random: the words between the two checked ones get xorshift output once, so the pages
	 * do not compress (the default pages are two words and zeros: ~750:1) */
	const char *f = cmdline_get("fill"), *mt = cmdline_get("meter");
	bool meter = mt && !strcmp(mt, "1");
	if (f && strcmp(f, "random") && strcmp(f, "zero")) {
		printf("dirty: error: bad fill=%s (want zero or random)\n", f);
		return GUEST_EXIT_USAGE;
	}
	if (f && !strcmp(f, "random")) {
		uint64_t x = 0x9e3779b97f4a7c15ull;
		for (uint64_t i = 0; i < npages; i++)
			for (uint64_t w = 1; w < DIRTY_WORDS - 1; w++) {
				x ^= x << 13;
				x ^= x >> 7;
				x ^= x << 17;
				base[i * DIRTY_WORDS + w] = x;
			}
	}
	printf("guest: dirty ws=%luK pages=%lu base=0x%lx\n", npages * GUEST_PAGE >> 10, npages, wsbase);

	d_pass = d_idx = d_bad = d_stored = d_done = 0;
	d_last_ns = now_ns();
	d_next_ns = d_last_ns + guest_pi_ns;
	for (;;) {
		uint64_t pass = d_pass, i = d_idx, end = i + chunk, bad = 0, t;

		if (end > npages)
			end = npages;
		for (; i < end; i++) {
			volatile uint64_t *p = base + i * DIRTY_WORDS;
			uint64_t val = dirty_val(pass, i);

			if (pass) {
				uint64_t exp = dirty_val(pass - 1, i);

				if (p[0] != exp || p[DIRTY_WORDS - 1] != ~exp)
					bad++;
			}
			p[0] = val;
			p[DIRTY_WORDS - 1] = ~val;
		}
		d_bad += bad;
		d_stored += end - d_idx;
		d_done += end - d_idx;
		d_idx = end;
		if (d_idx == npages) {
			d_idx = 0;
			d_pass++;
		}

		t = now_ns();
		while (rate && d_stored * 1000000ull > rate * ((t - d_last_ns) / 1000)) {
			cpu_relax();
			t = now_ns();
		}
		if (t >= d_next_ns) {
			uint64_t dt_us = (t - d_last_ns) / 1000;

			if (!dt_us)
				dt_us = 1;
			if (meter) /* done=: pages stored in all, for a host-side progress meter */
				printf("dirty: pass=%lu rate=%lu bad=%lu done=%lu\n", d_pass,
				       d_stored * 1000000ul / dt_us, d_bad, d_done);
			else
				printf("dirty: pass=%lu rate=%lu bad=%lu\n", d_pass,
				       d_stored * 1000000ul / dt_us, d_bad);
			d_stored = 0;
			d_last_ns = t;
			d_next_ns += guest_pi_ns;
			if (d_next_ns <= t)
				d_next_ns = t + guest_pi_ns;
		}
		if (time_up(t))
			return GUEST_EXIT_OK;
	}
}
