/* trap.c — CPL0 exception handler: print the fault on the UART and exit with status 3. */
#include "guest.h"

/* Pushed by the stubs in boot.S, then by the CPU. */
struct trap_frame {
	uint64_t vec;
	uint64_t err;
	uint64_t rip;
	uint64_t cs;
	uint64_t rflags;
	uint64_t rsp;
	uint64_t ss;
};

__attribute__((noreturn)) void trap_handler(struct trap_frame *f);

__attribute__((noreturn)) void trap_handler(struct trap_frame *f)
{
	printf("\nguest: exception %lu err=0x%lx rip=0x%lx\n", f->vec, f->err, f->rip);
	if (f->vec == 14) {
		uint64_t cr2;
		__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
		printf("guest: cr2=0x%lx rsp=0x%lx cs=0x%lx\n", cr2, f->rsp, f->cs);
	}
	outb(GUEST_EXIT_FAULT, GUEST_EXITPORT);
	for (;;)
		__asm__ volatile("cli; hlt");
}
