/* idle.c — nothing to do: sleep in the VMM's idle doorbell (port 0x504) until an event or a deadline. */
#include "guest.h"

#define IDLE_PORT 0x504
#define IDLE_MAGIC 0x454c4449u /* "IDLE": what doppel returns on a 4-byte read */
#define IDLE_MAX_NS 10000000000ull /* 10 s: an idle fleet wakes rarely (the clock allows the step) */

static struct {
	bool checked, doorbell; /* the VMM has the doorbell and idle=poll was not asked */
	uint64_t spin_ns; /* idlespin=: keep polling this long after the last activity */
	uint64_t last_busy; /* now_ns() of the last activity */
} idle;

static void idle_setup(void)
{
	const char *v = cmdline_get("idle");
	uint64_t us;

	idle.checked = true;
	idle.doorbell = (!v || strcmp(v, "poll")) && inl(IDLE_PORT) == IDLE_MAGIC;
	idle.spin_ns = 50000;
	v = cmdline_get("idlespin");
	if (v && !parse_u64(v, &us) && us <= 1000000)
		idle.spin_ns = us * 1000;
}

bool idle_doorbell(void)
{
	if (!idle.checked)
		idle_setup();
	return idle.doorbell;
}

void idle_busy(uint64_t now)
{
	idle.last_busy = now;
}

void idle_until(uint64_t now, uint64_t deadline)
{
	uint64_t ns;

	if (!idle_doorbell() || now - idle.last_busy < idle.spin_ns) {
		cpu_relax();
		return;
	}
	ns = deadline > now ? deadline - now : 0;
	if (ns > IDLE_MAX_NS)
		ns = IDLE_MAX_NS;
	time_allow_step(ns); /* the clock accepts the sleep as time that passed */
	outl((uint32_t)(ns / 1000 ? ns / 1000 : 1), IDLE_PORT);
}
