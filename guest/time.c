/* time.c — TSC frequency discovery (cmdline, CPUID 0x40000010, kvmclock, PIT) and a jump-proof clock. */
#include "guest.h"

#define PIT_HZ 1193182u
#define PIT_CAL_MS 10u /* per round; the median of 3 rounds is used */
#define KHZ_MIN 10000ull /* 10 MHz */
#define KHZ_MAX 100000000ull /* 100 GHz */
#define KHZ_DEFAULT 2000000ull
#define MAX_STEP_MS 2000ull /* TSC steps above this (or backwards) are clock jumps */

/* All clock state is guest memory, so it survives snapshot/restore with the rest of the guest. */
static uint64_t clk_khz;
static uint64_t clk_ns_mult; /* ns per tick, 32.32 fixed point */
static uint64_t clk_max_step; /* ticks */
static uint64_t clk_last_tsc;
static uint64_t clk_acc_ticks; /* ticks counted since time_init, jumps excluded */
static uint64_t clk_limit_ns; /* secs= as ns */
static bool clk_limited; /* secs= given */

static bool khz_ok(uint64_t khz)
{
	return khz >= KHZ_MIN && khz <= KHZ_MAX;
}

static uint64_t khz_from_cpuid(void)
{
	uint32_t a, b, c, d;

	cpuid(0x40000000, &a, &b, &c, &d);
	if (a < 0x40000010 || a > 0x400000ff)
		return 0;
	cpuid(0x40000010, &a, &b, &c, &d);
	return a;
}

static uint64_t khz_from_kvmclock(void)
{
	const volatile uint8_t *p = boot_pvclock;

	if (!boot_kvmclock)
		return 0;
	for (int tries = 0; tries < 1000000; tries++) {
		uint32_t v1 = *(const volatile uint32_t *)p;
		uint32_t mul = *(const volatile uint32_t *)(p + 24);
		int8_t shift = *(const volatile int8_t *)(p + 28);
		uint32_t v2 = *(const volatile uint32_t *)p;
		uint64_t khz;

		if (v1 == 0 || (v1 & 1) || v1 != v2) {
			cpu_relax();
			continue;
		}
		if (!mul || shift < -31 || shift > 31)
			return 0;
		/* ns = ticks * 2^shift * mul / 2^32, so kHz = 10^6 * 2^32 / (mul * 2^shift) */
		khz = (1000000ull << 32) / mul;
		if (shift > 0)
			khz >>= shift;
		else if (khz > (UINT64_MAX >> -shift))
			return 0;
		else
			khz <<= -shift;
		return khz;
	}
	return 0;
}

/* PIT channel 2 gated through port 0x61 (mode 0, wait for OUT2): the classic method. Returns 0
 * when port 0x61 is absent (reads 0xff, as on QEMU microvm) or OUT2 never rises. */
static uint64_t khz_from_pit_ch2(void)
{
	const unsigned latch = PIT_HZ * PIT_CAL_MS / 1000;
	uint8_t old = inb(0x61);
	uint64_t t0, t1;
	unsigned n;

	if (old == 0xff)
		return 0;
	outb((uint8_t)((old & ~0x02) | 0x01), 0x61); /* gate ch2 on, speaker off */
	outb(0xb0, 0x43); /* ch2, lo/hi byte, mode 0 */
	outb(latch & 0xff, 0x42);
	outb(latch >> 8, 0x42);
	t0 = rdtsc();
	for (n = 0; n < 1000000; n++) {
		if (inb(0x61) & 0x20)
			break;
		if (rdtsc() - t0 > (1ull << 33))
			break;
	}
	t1 = rdtsc();
	outb(old, 0x61);
	if (n == 0 || n >= 1000000) /* OUT2 high at once or never */
		return 0;
	return (t1 - t0) / PIT_CAL_MS;
}

/* Latch and read PIT channel 0; *tsc is the TSC at the latch command (midpoint of the write). */
static unsigned pit_ch0_read(uint64_t *tsc)
{
	uint64_t a = rdtsc(), b;
	unsigned lo, hi;

	outb(0x00, 0x43); /* latch ch0 */
	b = rdtsc();
	lo = inb(0x40);
	hi = inb(0x40);
	*tsc = a + (b - a) / 2;
	return lo | hi << 8;
}

/* PIT channel 0 counting down from 0xffff in mode 0 (one-shot: no periodic IRQ 0 is left
 * running), read back with latch commands. This is the primary method: channel 2's OUT2 via
 * port 0x61 proved erratic under KVM's in-kernel PIT here, and QEMU microvm has no port 0x61. */
static uint64_t khz_from_pit_ch0(void)
{
	const unsigned ticks = PIT_HZ * PIT_CAL_MS / 1000;
	uint64_t t0, t1;
	unsigned c0, c, n;

	outb(0x30, 0x43); /* ch0, lo/hi byte, mode 0 */
	outb(0xff, 0x40);
	outb(0xff, 0x40);
	c0 = pit_ch0_read(&t0);
	for (n = 0; n < 1000000; n++) {
		c = pit_ch0_read(&t1);
		if (((c0 - c) & 0xffff) >= ticks)
			break;
		if (t1 - t0 > (1ull << 33) || (n >= 1000 && c == c0)) /* no PIT: stuck counter */
			return 0;
	}
	if (n >= 1000000)
		return 0;
	/* khz = tsc ticks per PIT tick * PIT_HZ / 1000 */
	return (t1 - t0) * PIT_HZ / ((c0 - c) & 0xffff) / 1000;
}

/* Median of three rounds (channel 0, else channel 2), so one preempted port access cannot skew
 * the result. */
static uint64_t khz_from_pit(void)
{
	uint64_t (*round)(void) = khz_from_pit_ch0;
	uint64_t k[3], t;

	k[0] = round();
	if (!k[0]) {
		round = khz_from_pit_ch2;
		k[0] = round();
	}
	for (int i = 0; i < 3; i++)
		if (!(k[i] = i ? round() : k[0]))
			return 0;
	if (k[0] > k[1])
		t = k[0], k[0] = k[1], k[1] = t;
	if (k[1] > k[2])
		t = k[1], k[1] = k[2], k[2] = t;
	if (k[0] > k[1])
		t = k[0], k[0] = k[1], k[1] = t;
	return k[1];
}

void time_init(void)
{
	const char *force = cmdline_get("clocksrc");
	const char *src = "default";
	uint64_t khz = 0, v;
	int from = 0; /* 0 cmdline, 1 cpuid, 2 kvmclock, 3 pit */

	if (force) {
		if (!strcmp(force, "cpuid"))
			from = 1;
		else if (!strcmp(force, "kvmclock"))
			from = 2;
		else if (!strcmp(force, "pit"))
			from = 3;
	}
	if (from <= 0 && !parse_u64(cmdline_get("tsc_khz"), &v) && khz_ok(v)) {
		khz = v;
		src = "cmdline";
	}
	if (!khz && from <= 1 && khz_ok(v = khz_from_cpuid())) {
		khz = v;
		src = "cpuid";
	}
	if (!khz && from <= 2 && khz_ok(v = khz_from_kvmclock())) {
		khz = v;
		src = "kvmclock";
	}
	if (!khz && khz_ok(v = khz_from_pit())) {
		khz = v;
		src = "pit";
	}
	if (!khz)
		khz = KHZ_DEFAULT;

	clk_khz = khz;
	clk_ns_mult = (1000000ull << 32) / khz;
	clk_max_step = MAX_STEP_MS * khz;
	clk_acc_ticks = 0;
	clk_last_tsc = rdtsc();
	printf("guest: tsc %lu kHz (%s)\n", khz, src);
}

uint64_t tsc_khz(void)
{
	return clk_khz;
}

static uint64_t clk_allow_ticks; /* time_allow_step: a longer step accepted once */

void time_allow_step(uint64_t ns)
{
	clk_allow_ticks = clk_khz ? ns / 1000000 * clk_khz + ns % 1000000 * clk_khz / 1000000 : 0;
}

uint64_t now_ns(void)
{
	uint64_t t = rdtsc();
	uint64_t d = t - clk_last_tsc;

	clk_last_tsc = t;
	if ((int64_t)d > 0 && d <= clk_max_step + clk_allow_ticks)
		clk_acc_ticks += d;
	clk_allow_ticks = 0;
	return (uint64_t)(((unsigned __int128)clk_acc_ticks * clk_ns_mult) >> 32);
}

void time_set_limit(uint64_t secs)
{
	clk_limited = true;
	clk_limit_ns = secs > UINT64_MAX / 1000000000ull ? UINT64_MAX : secs * 1000000000ull;
}

uint64_t time_limit_ns(void)
{
	return clk_limited ? clk_limit_ns : UINT64_MAX;
}

bool time_up(uint64_t now)
{
	return clk_limited && now >= clk_limit_ns;
}
