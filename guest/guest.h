/* guest.h — runtime of the bundled test guest: port I/O, UART, printf-lite, time, cmdline, exit. */
#ifndef DOPPEL_GUEST_H
#define DOPPEL_GUEST_H

/*
 * Everything here runs at ring 3 with interrupts off (the CPL0 set-up in boot.S only builds page
 * tables, GDT/TSS/IDT and irets). All state lives in guest memory (.data/.bss), so a snapshot or
 * migration taken at any instruction continues correctly. Single vCPU: nothing here is reentrant.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- layout (see docs/guest.md) -------------------------------------------------------------- */
#define GUEST_LOAD_ADDR UINT64_C(0x100000) /* ELF linked and loaded at 1 MiB */
#define GUEST_WS_BASE (UINT64_C(16) << 20) /* work areas (work=dirty) start at 16 MiB */
#define GUEST_PAGE UINT64_C(4096)

/* Exit statuses written to the exit port (QEMU isa-debug-exit turns s into (s << 1) | 1). */
#define GUEST_EXIT_OK 0 /* secs= elapsed */
#define GUEST_EXIT_USAGE 2 /* bad cmdline / working set does not fit */
#define GUEST_EXIT_FAULT 3 /* CPU exception (printed by the CPL0 handler) */

#define GUEST_UART 0x3f8
#define GUEST_EXITPORT 0x501

/* ---- PVH start info (Xen public/arch-x86/hvm/start_info.h) ----------------------------------- */
#define HVM_START_MAGIC 0x336ec578u
struct hvm_start_info {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;
	uint32_t nr_modules;
	uint64_t modlist_paddr;
	uint64_t cmdline_paddr;
	uint64_t rsdp_paddr;
	uint64_t memmap_paddr; /* version >= 1 */
	uint32_t memmap_entries; /* version >= 1 */
	uint32_t reserved;
};

struct hvm_memmap_table_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type; /* 1 = RAM (E820) */
	uint32_t reserved;
};

/* Set by boot.S before dropping to ring 3. */
extern uint64_t boot_start_info; /* gpa of struct hvm_start_info (as passed in ebx) */
extern uint8_t boot_kvmclock; /* 1 if CPL0 enabled kvmclock on boot_pvclock */
extern volatile uint8_t boot_pvclock[32]; /* struct pvclock_vcpu_time_info */

/* ---- port I/O, TSC, CPUID ------------------------------------------------------------------- */
static inline void outb(uint8_t v, uint16_t port)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline void outl(uint32_t v, uint16_t port)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint32_t inl(uint16_t port)
{
	uint32_t v;
	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

static inline void cpuid(uint32_t leaf, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d)
{
	__asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}

static inline void cpu_relax(void)
{
	__asm__ volatile("pause" ::: "memory");
}

/* ---- lib.c: memory and strings -------------------------------------------------------------- */
void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
void *memmove(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);

/* ---- lib.c: UART output (polled; THR written directly, no LSR poll) -------------------------- */
void putc(char c);
void puts(const char *s); /* no newline appended */
/* printf-lite: %d %i %u %x %s %c %p %%, modifiers l/ll/z, optional '0' flag and width
 * (e.g. %08lx). Unknown conversions print verbatim. */
void printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Write `status` to the exit port; never returns (spins if the VMM does not stop us). */
__attribute__((noreturn)) void guest_exit(uint8_t status);

/* ---- lib.c: cmdline and RAM map ------------------------------------------------------------- */
/* Copy the cmdline out of start_info (truncated to 1023 bytes). Called once by main. */
void cmdline_init(const struct hvm_start_info *si);
/* The whole cmdline as passed (never NULL). */
const char *cmdline_raw(void);
/* Value of `key=value` (last occurrence wins), "" for a bare `key`, NULL if absent. The
 * returned string is NUL-terminated and stays valid for the guest's life. */
const char *cmdline_get(const char *key);
/* Parse "<digits>[K|M|G|T]" (also lower case, optional trailing "B"/"iB") into bytes.
 * Returns 0 and sets *out, or -1 on syntax error or overflow. */
int parse_size(const char *s, uint64_t *out);
/* Parse a decimal u64. Returns 0, or -1 on syntax error/overflow. */
int parse_u64(const char *s, uint64_t *out);

/* RAM map from start_info (type-1 E820 entries). Without a memmap (version 0) the guest assumes
 * [0, 128 MiB), matching what boot.S maps. */
void ram_init(const struct hvm_start_info *si);
uint64_t ram_total(void); /* bytes of RAM */
/* True if [gpa, gpa + len) lies within one RAM entry. */
bool ram_contains(uint64_t gpa, uint64_t len);

/* ---- time.c --------------------------------------------------------------------------------- */
/* Find the TSC frequency (cmdline tsc_khz=, CPUID 0x40000010, kvmclock, PIT calibration, in that
 * order; `clocksrc=pit|kvmclock|cpuid` skips the earlier ones) and print which was used. */
void time_init(void);
uint64_t tsc_khz(void);
/* Guest-monotonic nanoseconds since time_init. TSC steps that go backwards or jump forward by more
 * than 2 s between two calls (restore on another host) count as zero, so call it at least every
 * second or so while running; it never goes backwards. */
uint64_t now_ns(void);
/* secs=<n> support: true once `now` (a now_ns() value) has reached n seconds; always false if
 * secs= was not given. Works check it with the same `now` they print with, so the last line due
 * before the limit always comes out. */
bool time_up(uint64_t now);
void time_set_limit(uint64_t secs);
/* The next now_ns() call also accepts a step of up to `ns` more than usual (the guest slept that long
 * on purpose in the idle doorbell); steps beyond still count as zero. */
void time_allow_step(uint64_t ns);
/* The secs= limit as a now_ns() value (UINT64_MAX without secs=): a deadline for idle_until. */
uint64_t time_limit_ns(void);

/* ---- idle.c: the VMM's idle doorbell (docs/guest.md) ---------------------------------------- */
/* True when the VMM implements the doorbell (port 0x504 reads "IDLE") and idle=poll was not given. */
bool idle_doorbell(void);
/* Something was done at `now`: keep polling for idlespin= µs (default 50) before sleeping. */
void idle_busy(uint64_t now);
/* Nothing to do at `now` until `deadline` (now_ns() values): sleep in the VMM until an event (a
 * device used a buffer or raised an interrupt), the deadline, or at most 10 s; without the doorbell,
 * or within the spin time after the last activity, one cpu_relax(). Callers loop. */
void idle_until(uint64_t now, uint64_t deadline);

/* ---- works (one file each; registered in main.c's WORKS list) ------------------------------- */
/* A work is `int work_<name>(void)`: it runs until it returns an exit status (or forever).
 * main.c declares and dispatches them from its WORKS() list. */
typedef int (*work_fn)(void);

/* work_hostile.c, reached through work=fault: fault=mmio reads and writes an MMIO address with no
 * device behind it, prints one line and returns 0; fault=triple triple-faults the vCPU (returns 2
 * only if the CPU survived). */
int hostile_mmio(void);
int hostile_port(void); /* fault=port: port 0x80, no device; prints one line, returns 0 */
int hostile_triple(void);

/* work_kv (kv.c, network stack in net.h): UDP key-value service, see docs/guest.md. */

/* print interval (pi=, ms, default 1000) in ns, parsed by main */
extern uint64_t guest_pi_ns;

#endif
