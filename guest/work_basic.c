/* work_basic.c — work=idle (prints elapsed time), work=exit (exit=<n>), work=fault (tests the IDT). */
#include "guest.h"

int work_idle(void)
{
	uint64_t next = guest_pi_ns;

	for (;;) {
		uint64_t t = now_ns();

		if (t >= next) {
			printf("idle: t=%lu.%03lu\n", t / 1000000000ul, t / 1000000ul % 1000);
			next += guest_pi_ns;
			if (next <= t) /* fell behind (long pause): realign */
				next = t + guest_pi_ns;
		}
		if (time_up(t))
			return GUEST_EXIT_OK;
		idle_until(t, next < time_limit_ns() ? next : time_limit_ns());
	}
}

int work_exit(void)
{
	const char *v = cmdline_get("exit");
	uint64_t n = 0;

	if (v && (parse_u64(v, &n) || n > 255)) {
		printf("guest: error: bad exit=%s (want 0..255)\n", v);
		return GUEST_EXIT_USAGE;
	}
	return (int)n;
}

/* fault=ud|gp|io|pf (default ud): raise that exception at ring 3; the CPL0 handler prints it and
 * exits with status 3. fault=mmio and fault=triple are in work_hostile.c. Returns only for
 * an unknown kind (or from fault=mmio). */
int work_fault(void)
{
	const char *v = cmdline_get("fault");

	if (!v || !strcmp(v, "ud"))
		__asm__ volatile("ud2");
	else if (!strcmp(v, "gp"))
		__asm__ volatile("hlt"); /* privileged */
	else if (!strcmp(v, "io"))
		(void)inb(0x80); /* not in the TSS I/O bitmap */
	else if (!strcmp(v, "pf"))
		*(volatile uint64_t *)(uintptr_t)0x7ff000000000ull = 1; /* canonical, unmapped */
	else if (!strcmp(v, "mmio"))
		return hostile_mmio();
	else if (!strcmp(v, "triple"))
		return hostile_triple();
	else if (!strcmp(v, "port"))
		return hostile_port();
	printf("guest: error: bad fault=%s (want ud|gp|io|pf|mmio|port|triple)\n", v);
	return GUEST_EXIT_USAGE;
}
