/* boot.S — PVH entry: page tables, long mode, GDT/TSS/IDT, kvmclock, then iretq to ring 3. */

/*
 * CPL0 instructions are expensive under the target hypervisor (~1 µs each), so this file does the
 * minimum: one pass over the memmap, a few PDPT writes (the page directories for [0, 4 GiB)
 * are static data built by the assembler; only RAM above 4 GiB costs a loop), static
 * GDT/TSS/IDT (their split base addresses come from absolute symbols in guest.ld), and no
 * C code at CPL0 except the exception handler.
 */

#define PTE_P   0x001
#define PTE_RW  0x002
#define PTE_US  0x004
#define PTE_PWT 0x008
#define PTE_PCD 0x010
#define PTE_PS  0x080
#define PDE_RAM  (PTE_P | PTE_RW | PTE_US | PTE_PS)
#define PDE_MMIO (PDE_RAM | PTE_PWT | PTE_PCD)
#define PTR_FLAGS (PTE_P | PTE_RW | PTE_US)

#define MAX_GIB    64  /* page tables cover guest-physical [0, 64 GiB) at most */
#define MAX_UNITS  (MAX_GIB * 512)
#define DEF_UNITS  64  /* 128 MiB when start_info has no memmap (must match ram_init) */
#define HOLE_FIRST 1536 /* 2 MiB unit of 3 GiB */
#define HOLE_END   2048 /* 2 MiB unit of 4 GiB */
#define MAX_E820   128

#define SEL_KCODE 0x08
#define SEL_KDATA 0x10
#define SEL_UDATA 0x18
#define SEL_UCODE 0x20
#define SEL_TSS   0x28

#define CR0_BOOT 0x80010033 /* PG | WP | NE | ET | MP | PE */
#define CR4_BOOT 0x00000620 /* OSXMMEXCPT | OSFXSR | PAE */
#define MSR_EFER 0xc0000080
#define EFER_LME 0x100
#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01

/* ---- PVH ELF note (Linux layout: 4-byte aligned, 8-byte descriptor) ---------------------------- */
	.pushsection .note.Xen, "a", @note
	.balign 4
	.long	2f - 1f		/* namesz */
	.long	4f - 3f		/* descsz */
	.long	18		/* XEN_ELFNOTE_PHYS32_ENTRY */
1:	.asciz	"Xen"
2:	.balign 4
3:	.quad	pvh_entry
4:	.balign 4
	.popsection

/* ---- 32-bit entry: flat protected mode, paging off, ebx = start_info ------------------------ */
	.section .text.boot, "ax"
	.code32
	.globl	pvh_entry
pvh_entry:
	cli
	cld
	lgdt	gdt_ptr32
	movl	$SEL_KDATA, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	movl	%ebx, boot_start_info

	/* edi = end of the highest RAM entry, in 2 MiB units (rounded up) */
	movl	$DEF_UNITS, %edi
	cmpl	$0x336ec578, (%ebx)
	jne	.Lmap
	cmpl	$1, 4(%ebx)
	jb	.Lmap
	cmpl	$0, 44(%ebx)		/* memmap above 4 GiB: unreachable, use the default */
	jne	.Lmap
	movl	48(%ebx), %ecx
	testl	%ecx, %ecx
	jz	.Lmap
	cmpl	$MAX_E820, %ecx
	jbe	1f
	movl	$MAX_E820, %ecx
1:	movl	40(%ebx), %esi
	xorl	%edi, %edi
.Le820:
	cmpl	$1, 16(%esi)
	jne	.Le820_next
	movl	0(%esi), %eax
	movl	4(%esi), %edx
	addl	8(%esi), %eax
	adcl	12(%esi), %edx
	jc	.Le820_huge
	addl	$0x1fffff, %eax
	adcl	$0, %edx
	jc	.Le820_huge
	shrdl	$21, %edx, %eax
	shrl	$21, %edx
	jz	1f
.Le820_huge:
	movl	$MAX_UNITS, %eax
1:	cmpl	%edi, %eax
	cmova	%eax, %edi
.Le820_next:
	addl	$24, %esi
	decl	%ecx
	jnz	.Le820
	testl	%edi, %edi
	jnz	.Lmap
	movl	$DEF_UNITS, %edi

.Lmap:
	cmpl	$MAX_UNITS, %edi
	jbe	1f
	movl	$MAX_UNITS, %edi
	/* [0, 3 GiB) and the hole use the static PDs below: point the PDPT at those covering RAM */
1:	movl	%edi, %ecx
	addl	$511, %ecx
	shrl	$9, %ecx		/* ecx = GiB holding RAM, >= 1 */
	movl	$3, %ebp
	cmpl	%ebp, %ecx
	cmovb	%ecx, %ebp
	movl	$pdpt, %ebx
	movl	$(pd_low + PTR_FLAGS), %eax
2:	movl	%eax, (%ebx)
	addl	$4096, %eax
	addl	$8, %ebx
	decl	%ebp
	jnz	2b
	movl	$(pd_hole + PTR_FLAGS), pdpt + 3 * 8

	/* RAM above 4 GiB: fill PDs for 2 MiB units [2048, edi), then their PDPT entries */
	cmpl	$HOLE_END, %edi
	jbe	.Lpml4
	movl	$HOLE_END, %ecx
	movl	$PDE_RAM, %eax
	movl	$1, %edx
	movl	$pds_high, %ebx
2:	movl	%eax, (%ebx)
	movl	%edx, 4(%ebx)
	addl	$0x200000, %eax
	adcl	$0, %edx
	addl	$8, %ebx
	incl	%ecx
	cmpl	%edi, %ecx
	jb	2b
	movl	%edi, %ecx
	addl	$511, %ecx
	shrl	$9, %ecx
	subl	$4, %ecx		/* GiB above 4 GiB */
	movl	$(pdpt + 4 * 8), %ebx
	movl	$(pds_high + PTR_FLAGS), %eax
2:	movl	%eax, (%ebx)
	addl	$4096, %eax
	addl	$8, %ebx
	decl	%ecx
	jnz	2b
.Lpml4:
	movl	$(pdpt + PTR_FLAGS), pml4

	/* long mode */
	movl	$CR4_BOOT, %eax
	movl	%eax, %cr4
	movl	$pml4, %eax
	movl	%eax, %cr3
	movl	$MSR_EFER, %ecx
	rdmsr
	orl	$EFER_LME, %eax
	wrmsr
	movl	$CR0_BOOT, %eax
	movl	%eax, %cr0
	ljmp	$SEL_KCODE, $long_entry

/* ---- 64-bit, CPL0 ----------------------------------------------------------------------------- */
	.code64
long_entry:
	movq	$kstack_top, %rsp
	lidt	idt_ptr
	movw	$SEL_TSS, %ax
	ltr	%ax

	/* kvmclock, if this is KVM and it offers the new system-time MSR */
	movl	$0x40000000, %eax
	cpuid
	cmpl	$0x4b4d564b, %ebx	/* "KVMK" */
	jne	1f
	cmpl	$0x40000001, %eax
	jb	1f
	movl	$0x40000001, %eax
	cpuid
	testl	$(1 << 3), %eax		/* KVM_FEATURE_CLOCKSOURCE2 */
	jz	1f
	movl	$MSR_KVM_SYSTEM_TIME_NEW, %ecx
	movl	$(boot_pvclock + 1), %eax
	xorl	%edx, %edx
	wrmsr
	movb	$1, boot_kvmclock
1:
	/* to ring 3, IF = 0, IOPL = 0 */
	pushq	$(SEL_UDATA | 3)
	pushq	$ustack_top
	pushq	$0x2
	pushq	$(SEL_UCODE | 3)
	pushq	$ring3_entry
	iretq

ring3_entry:
	call	guest_main
1:	pause
	jmp	1b

/* ---- exception stubs: 16 bytes each, so the IDT can be static (see guest.ld) -------------- */
	.balign 16
	.globl	isr_table
isr_table:
	.irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	.balign 16
	.if ((\n == 8) + (\n == 10) + (\n == 11) + (\n == 12) + (\n == 13) + (\n == 14) + (\n == 17) + (\n == 21) + (\n == 29) + (\n == 30))
	pushq	$\n		/* CPU pushed an error code */
	.else
	pushq	$0
	pushq	$\n
	.endif
	jmp	isr_common
	.endr
	.balign 16
	.globl	isr_table_end
isr_table_end:

isr_common:
	cld
	movq	%rsp, %rdi	/* struct trap_frame: vec, err, rip, cs, rflags, rsp, ss */
	andq	$-16, %rsp
	call	trap_handler
1:	cli
	hlt
	jmp	1b

/* ---- descriptor tables -------------------------------------------------------------------- */
	.section .data
	.balign 16
gdt:
	.quad	0
	.quad	0x00af9a000000ffff	/* 0x08 kernel code, 64-bit */
	.quad	0x00cf92000000ffff	/* 0x10 kernel data */
	.quad	0x00cff2000000ffff	/* 0x18 user data, DPL 3 */
	.quad	0x00affa000000ffff	/* 0x20 user code, 64-bit, DPL 3 */
	.short	tss_end - tss - 1	/* 0x28 64-bit TSS, available */
	.short	tss_lo16
	.byte	tss_b16
	.byte	0x89
	.byte	0x00
	.byte	tss_b24
	.long	tss_hi32
	.long	0
gdt_end:

	.balign 8
gdt_ptr32:
	.short	gdt_end - gdt - 1
	.long	gdt

	.balign 16
idt:
	.irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	.short	isr_lo16 + \n * 16
	.short	SEL_KCODE
	.short	0x8e00			/* present, DPL 0, 64-bit interrupt gate */
	.short	isr_mid16
	.long	isr_hi32
	.long	0
	.endr
idt_end:

	.balign 8
idt_ptr:
	.short	idt_end - idt - 1
	.quad	idt

	.balign 16
	.globl	tss
tss:
	.long	0
	.quad	kstack_top		/* rsp0 */
	.quad	0, 0			/* rsp1, rsp2 */
	.quad	0
	.quad	0, 0, 0, 0, 0, 0, 0	/* ist1..7 */
	.quad	0
	.short	0
	.short	iobmp - tss		/* I/O map base = 104 */
iobmp:	/* 1 = denied; ports beyond the TSS limit are denied too */
	.fill	8, 1, 0xff		/* 0x000-0x03f */
	.byte	0xf0			/* 0x040-0x043 PIT allowed */
	.fill	3, 1, 0xff		/* 0x048-0x05f */
	.byte	0xfd			/* 0x061 allowed */
	.fill	114, 1, 0xff		/* 0x068-0x3f7 */
	.byte	0x00			/* 0x3f8-0x3ff UART allowed */
	.fill	32, 1, 0xff		/* 0x400-0x4ff */
	.byte	0x09			/* 0x501-0x502 exit port, 0x504-0x507 idle doorbell allowed */
	.byte	0xff			/* terminator */
tss_end:

/* Page directories for [0, 3 GiB) (write-back) and the 3..4 GiB MMIO hole (uncached), 2 MiB
 * pages, U/S set: static, so CPL0 only links them into the PDPT. */
	.balign 4096
pd_low:
	.set	pde, PDE_RAM
	.rept	HOLE_FIRST
	.quad	pde
	.set	pde, pde + 0x200000
	.endr
pd_hole:
	.set	pde, 0xc0000000 | PDE_MMIO
	.rept	HOLE_END - HOLE_FIRST
	.quad	pde
	.set	pde, pde + 0x200000
	.endr

/* ---- boot state, page tables, stacks ------------------------------------------------------- */
	.section .bss
	.balign 4096
pml4:	.skip	4096
pdpt:	.skip	4096
pds_high:
	.skip	(MAX_GIB - 4) * 4096
kstack:	.skip	16384
kstack_top:
ustack:	.skip	131072
ustack_top:
	.balign 64
	.globl	boot_pvclock
boot_pvclock:
	.skip	64
	.globl	boot_start_info
boot_start_info:
	.skip	8
	.globl	boot_kvmclock
boot_kvmclock:
	.skip	8

	.section .note.GNU-stack, "", @progbits
