/* main.c — ring-3 entry: read start_info and cmdline, print the boot line, dispatch the work. */
#include "guest.h"

/* The works: one X(name) per `int work_<name>(void)`. Adding a work is a one-line change here. */
#define WORKS(X)                                                                                             \
	X(idle)                                                                                              \
	X(dirty)                                                                                             \
	X(exit)                                                                                              \
	X(fault)                                                                                             \
	X(kv)                                                                                                \
	X(disk) /* work_disk.c */

#define WORK_DECL(n) int work_##n(void);
#define WORK_ENTRY(n) {#n, work_##n},
WORKS(WORK_DECL)
int work_kv_disk(void); /* kv.c: work=kv,disk, the disk oracle between the KV service's polls */

static const struct {
	const char *name;
	work_fn fn;
} works[] = {WORKS(WORK_ENTRY){"kv,disk", work_kv_disk}};

uint64_t guest_pi_ns = 1000000000ull;

void guest_main(void);

void guest_main(void)
{
	const struct hvm_start_info *si = (const struct hvm_start_info *)(uintptr_t)boot_start_info;
	const char *work, *v;
	uint64_t n;

	cmdline_init(si);
	ram_init(si);
	printf("guest: booted cmdline=\"%s\" mem=%luM\n", cmdline_raw(), ram_total() >> 20);
	if (si->magic != HVM_START_MAGIC)
		printf("guest: warning: bad start_info magic 0x%x at 0x%lx\n", si->magic, boot_start_info);

	if ((v = cmdline_get("pi"))) {
		if (parse_u64(v, &n) || n == 0 || n > 3600000) {
			printf("guest: error: bad pi=%s (want 1..3600000 ms)\n", v);
			guest_exit(GUEST_EXIT_USAGE);
		}
		guest_pi_ns = n * 1000000ull;
	}
	if ((v = cmdline_get("secs"))) {
		if (parse_u64(v, &n)) {
			printf("guest: error: bad secs=%s\n", v);
			guest_exit(GUEST_EXIT_USAGE);
		}
		time_set_limit(n);
	}

	work = cmdline_get("work");
	if (!work || !*work)
		work = "idle";
	for (size_t i = 0; i < sizeof(works) / sizeof(works[0]); i++) {
		if (strcmp(work, works[i].name))
			continue;
		if (strcmp(work, "exit") && strcmp(work, "fault")) /* no need to wait for the TSC */
			time_init();
		guest_exit((uint8_t)works[i].fn());
	}
	printf("guest: error: unknown work=%s\n", work);
	guest_exit(GUEST_EXIT_USAGE);
}
