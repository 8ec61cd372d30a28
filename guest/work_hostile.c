/* work_hostile.c — hostile-guest behaviours for VMM tests: unclaimed MMIO and port I/O, triple fault. */
#include "guest.h"

/* An address in the uncached 3..4 GiB hole (mapped by boot.S) where no device lives. */
#define HOSTILE_MMIO UINT64_C(0xfe000000)

int hostile_mmio(void)
{
	volatile uint32_t *p = (volatile uint32_t *)(uintptr_t)HOSTILE_MMIO;
	uint32_t v = p[0];

	p[1] = 0xdeadbeef;
	printf("fault: mmio read 0x%lx -> 0x%x and write survived\n", HOSTILE_MMIO, v);
	return GUEST_EXIT_OK;
}

/* Port 0x80 (POST codes) has no device under doppel. The TSS and its I/O bitmap live in guest
 * memory, so ring 3 can open the port for itself (bit clear = allowed), then write and read it. */
#define HOSTILE_PORT 0x80

int hostile_port(void)
{
	extern uint8_t tss[];
	uint8_t *iobmp = tss + 104, v;

	iobmp[HOSTILE_PORT / 8] &= (uint8_t) ~(1u << (HOSTILE_PORT % 8));
	outb(0x5a, HOSTILE_PORT);
	v = inb(HOSTILE_PORT);
	printf("fault: port 0x%x write and read -> 0x%x survived\n", HOSTILE_PORT, v);
	return GUEST_EXIT_OK;
}

/*
 * Triple fault from ring 3: the TSS (in user-writable guest memory) gets an rsp0 that is canonical
 * but unmapped, then ud2. Delivering #UD switches to rsp0 and faults (#PF), delivering that #PF
 * faults the same way (#DF), and delivering #DF faults too: shutdown. Never returns normally; if the
 * CPU somehow delivers the exception, the CPL0 handler cannot run either.
 */
int hostile_triple(void)
{
	extern uint8_t tss[];
	uint64_t bad = UINT64_C(0x7ff000000000);

	printf("fault: triple fault next\n");
	memcpy(tss + 4, &bad, 8); /* rsp0 */
	__asm__ volatile("ud2" ::: "memory");
	printf("guest: error: survived a triple fault\n");
	return GUEST_EXIT_USAGE;
}
