/* test_kvm_state.c — round trip and bad-input tests of KVM vCPU/VM state capture and restore. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <linux/kvm.h>
#include <cmocka.h>

#include "hv/kvm/kvm_state.h"

#define TMEM (64u << 10)
#define CODE_GPA 0x1000

struct tvm {
	int vm, vcpu;
	struct kvm_run *run;
	size_t run_sz;
	uint8_t *mem;
};

struct fix {
	int kvm;
	struct kvm_state_ctx ctx;
	uint32_t xcr0_want;
	char why[320]; /* set-up failure: every test needing KVM fails with it */
};

static int tvm_create(int kvm, struct tvm *t, bool devices)
{
	struct kvm_userspace_memory_region r = {0};
	struct kvm_pit_config pit = {0};
	struct kvm_cpuid2 *cpuid;
	int n;

	memset(t, 0, sizeof(*t));
	t->vm = t->vcpu = -1;
	t->vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (t->vm < 0)
		return -errno;
	ioctl(t->vm, KVM_SET_TSS_ADDR, 0xfffbd000ul);
	if (devices) {
		if (ioctl(t->vm, KVM_CREATE_IRQCHIP, 0) < 0 || ioctl(t->vm, KVM_CREATE_PIT2, &pit) < 0)
			return -errno;
	}
	t->mem = mmap(NULL, TMEM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (t->mem == MAP_FAILED)
		return -errno;
	r.memory_size = TMEM;
	r.userspace_addr = (uintptr_t)t->mem;
	if (ioctl(t->vm, KVM_SET_USER_MEMORY_REGION, &r) < 0)
		return -errno;
	t->vcpu = ioctl(t->vm, KVM_CREATE_VCPU, 0);
	if (t->vcpu < 0)
		return -errno;
	cpuid = calloc(1, sizeof(*cpuid) + 256 * sizeof(cpuid->entries[0]));
	if (!cpuid)
		return -ENOMEM;
	cpuid->nent = 256;
	if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, cpuid) < 0 || ioctl(t->vcpu, KVM_SET_CPUID2, cpuid) < 0) {
		free(cpuid);
		return -errno;
	}
	free(cpuid);
	n = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (n <= 0)
		return -EINVAL;
	t->run_sz = n;
	t->run = mmap(NULL, t->run_sz, PROT_READ | PROT_WRITE, MAP_SHARED, t->vcpu, 0);
	if (t->run == MAP_FAILED) {
		t->run = NULL;
		return -errno;
	}
	return 0;
}

static void tvm_destroy(struct tvm *t)
{
	if (t->run)
		munmap(t->run, t->run_sz);
	if (t->mem && t->mem != MAP_FAILED)
		munmap(t->mem, TMEM);
	if (t->vcpu >= 0)
		close(t->vcpu);
	if (t->vm >= 0)
		close(t->vm);
}

static int setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));
	struct kvm_cpuid2 *cpuid;
	char err[256];
	struct tvm t;
	uint32_t i;

	if (!f)
		return -1;
	f->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	*state = f;
	if (f->kvm < 0) {
		snprintf(f->why, sizeof(f->why), "open /dev/kvm: %s", strerror(errno));
		return 0;
	}
	err[0] = 0;
	if ((i = (uint32_t)-tvm_create(f->kvm, &t, true)) != 0) {
		snprintf(f->why, sizeof(f->why), "test VM creation: %s", strerror((int)i));
		tvm_destroy(&t);
		close(f->kvm);
		f->kvm = -1;
		return 0;
	}
	if (kvm_state_ctx_init(&f->ctx, f->kvm, t.vm, err, sizeof(err)) == 0) {
		printf("# kvm_state: %u MSRs, xsave %u bytes (xsave2 %d), sregs2 %d, xcrs %d, events %d, "
		       "debugregs %d, mp %d, clock %d, pit2 %d\n#  msrs:",
		       f->ctx.nr_msrs, f->ctx.xsave_size, f->ctx.xsave2, f->ctx.sregs2, f->ctx.xcrs,
		       f->ctx.events, f->ctx.debugregs, f->ctx.mp_state, f->ctx.clock, f->ctx.pit2);
		for (i = 0; i < f->ctx.nr_msrs; i++)
			printf(" %x", f->ctx.msrs[i]);
		printf("\n");
	} else {
		snprintf(f->why, sizeof(f->why), "kvm_state_ctx_init: %s", err);
		close(f->kvm);
		f->kvm = -1;
	}
	tvm_destroy(&t);
	/* XCR0 to set: x87|SSE, plus AVX when KVM supports it. */
	f->xcr0_want = 3;
	cpuid = calloc(1, sizeof(*cpuid) + 256 * sizeof(cpuid->entries[0]));
	if (cpuid && f->kvm >= 0) {
		cpuid->nent = 256;
		if (ioctl(f->kvm, KVM_GET_SUPPORTED_CPUID, cpuid) == 0) {
			for (i = 0; i < cpuid->nent; i++) {
				if (cpuid->entries[i].function == 0xd && cpuid->entries[i].index == 0 &&
				    (cpuid->entries[i].eax & 4))
					f->xcr0_want = 7;
			}
		}
	}
	free(cpuid);
	return 0;
}

static int teardown(void **state)
{
	struct fix *f = *state;

	if (f->kvm >= 0)
		close(f->kvm);
	free(f);
	return 0;
}

/* These tests need KVM and a working kvm_state context: a set-up failure fails them (never skips).
 */
#define NEED_KVM(f)                                                                                          \
	do {                                                                                                 \
		if ((f)->kvm < 0)                                                                            \
			fail_msg("set-up failed: %s", (f)->why);                                             \
	} while (0)

/* ---- blob walking ------------------------------------------------------------------------------ */

static uint8_t *find_sec(uint8_t *blob, size_t used, uint32_t tag, uint32_t *len)
{
	size_t off = KVM_STATE_HDR_SIZE;
	uint32_t t, l;

	while (off + 8 <= used) {
		memcpy(&t, blob + off, 4);
		memcpy(&l, blob + off + 4, 4);
		if (t == tag) {
			if (len)
				*len = l;
			return blob + off;
		}
		off += 8 + ((l + 7) & ~7u);
	}
	return NULL;
}

static uint32_t msr_set(int vcpu, uint32_t idx, uint64_t val)
{
	uint64_t raw[(sizeof(struct kvm_msrs) + sizeof(struct kvm_msr_entry)) / 8 + 1] = {0};
	struct kvm_msrs *m = (struct kvm_msrs *)raw;

	m->nmsrs = 1;
	m->entries[0].index = idx;
	m->entries[0].data = val;
	return ioctl(vcpu, KVM_SET_MSRS, m);
}

static bool ctx_has(const struct kvm_state_ctx *c, uint32_t idx)
{
	for (uint32_t i = 0; i < c->nr_msrs; i++) {
		if (c->msrs[i] == idx)
			return true;
	}
	return false;
}

static const struct {
	uint32_t idx;
	uint64_t val;
} test_msrs[] = {
	{0x174, 0x10},
	{0x175, 0xffffc90000001000ull},
	{0x176, 0xffffffff81000200ull},
	{0xc0000081, 0x0023001000000000ull},
	{0xc0000082, 0xffffffff81000000ull},
	{0xc0000083, 0xffffffff81000100ull},
	{0xc0000084, 0x47700},
	{0xc0000102, 0xffff888000001000ull},
	{0x277, 0x0007010600070106ull},
	{0xc0000103, 0x2a}, /* IA32_TSC_AUX */
	{0x10, 0x123456789ull},
};

/* Give VM t distinctive vCPU and device state. */
static void set_distinctive(struct fix *f, struct tvm *t)
{
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_lapic_state lapic;
	struct kvm_debugregs dbg;
	struct kvm_xcrs xcrs;
	struct kvm_irqchip chip;
	struct kvm_pit_state2 pit;
	uint8_t *xs;
	uint64_t bv;
	unsigned i;

	memset(&regs, 0, sizeof(regs));
	regs.rax = 0x1111111111111111ull;
	regs.rbx = 0x2222222222222222ull;
	regs.rcx = 0x3333333333333333ull;
	regs.rdx = 0x4444444444444444ull;
	regs.rsi = 0x5555555555555555ull;
	regs.rdi = 0x6666666666666666ull;
	regs.rsp = 0x7ff0;
	regs.rbp = 0x7777777777777777ull;
	regs.r8 = 8, regs.r9 = 9, regs.r10 = 10, regs.r11 = 11, regs.r12 = 12;
	regs.r13 = 13, regs.r14 = 14, regs.r15 = 0xf15f15f15ull;
	regs.rip = CODE_GPA;
	regs.rflags = 0x246;
	assert_int_equal(ioctl(t->vcpu, KVM_SET_REGS, &regs), 0);

	assert_int_equal(ioctl(t->vcpu, KVM_GET_SREGS, &sregs), 0);
	sregs.cs = (struct kvm_segment){.base = 0,
					.limit = 0xffffffff,
					.selector = 8,
					.type = 0xb,
					.present = 1,
					.db = 1,
					.s = 1,
					.g = 1};
	sregs.ds = (struct kvm_segment){.base = 0,
					.limit = 0xffffffff,
					.selector = 0x10,
					.type = 3,
					.present = 1,
					.db = 1,
					.s = 1,
					.g = 1};
	sregs.es = sregs.ss = sregs.ds;
	sregs.fs = sregs.ds;
	sregs.fs.base = 0x12345000;
	sregs.gs = sregs.ds;
	sregs.gs.base = 0x6789a000;
	sregs.gdt.base = 0x2000;
	sregs.gdt.limit = 0x27;
	sregs.idt.base = 0x3000;
	sregs.idt.limit = 0x7ff;
	sregs.cr0 = 0x31; /* PE | ET | NE */
	sregs.cr2 = 0xdead000;
	sregs.cr3 = 0x5000;
	sregs.cr4 = 0x600 | (f->xcr0_want ? 0x40000 : 0); /* OSFXSR | OSXMMEXCPT | OSXSAVE */
	sregs.efer = 1; /* SCE */
	assert_int_equal(ioctl(t->vcpu, KVM_SET_SREGS, &sregs), 0);

	for (i = 0; i < sizeof(test_msrs) / sizeof(test_msrs[0]); i++) {
		if (ctx_has(&f->ctx, test_msrs[i].idx))
			assert_int_equal(msr_set(t->vcpu, test_msrs[i].idx, test_msrs[i].val), 1);
	}

	if (f->ctx.xcrs) {
		memset(&xcrs, 0, sizeof(xcrs));
		xcrs.nr_xcrs = 1;
		xcrs.xcrs[0].xcr = 0;
		xcrs.xcrs[0].value = f->xcr0_want;
		assert_int_equal(ioctl(t->vcpu, KVM_SET_XCRS, &xcrs), 0);
	}
	if (f->ctx.xsave_size) {
		xs = calloc(1, f->ctx.xsave_size);
		assert_non_null(xs);
		assert_int_equal(ioctl(t->vcpu, f->ctx.xsave2 ? KVM_GET_XSAVE2 : KVM_GET_XSAVE, xs), 0);
		for (i = 0; i < 16; i++)
			xs[160 + i] = 0xa0 + i; /* XMM0 */
		memcpy(&bv, xs + 512, 8);
		bv |= 2; /* SSE state present */
		memcpy(xs + 512, &bv, 8);
		assert_int_equal(ioctl(t->vcpu, KVM_SET_XSAVE, xs), 0);
		free(xs);
	}

	memset(&dbg, 0, sizeof(dbg));
	dbg.db[0] = 0x1000, dbg.db[1] = 0x2000, dbg.db[2] = 0x3000, dbg.db[3] = 0x4000;
	dbg.dr6 = 0xffff0ff0;
	dbg.dr7 = 0x455;
	assert_int_equal(ioctl(t->vcpu, KVM_SET_DEBUGREGS, &dbg), 0);

	if (ioctl(t->vcpu, KVM_GET_LAPIC, &lapic) == 0) { /* only VMs made with an irqchip have one */
		lapic.regs[0x80] = 0x30; /* TPR */
		lapic.regs[0xf0] = 0xff; /* SVR: vector 0xff */
		lapic.regs[0xf1] |= 0x01; /* SVR: APIC enabled */
		lapic.regs[0x320] = 0xec; /* LVTT: vector 0xec, TSC-deadline mode */
		lapic.regs[0x322] = 0x04;
		assert_int_equal(ioctl(t->vcpu, KVM_SET_LAPIC, &lapic), 0);
		/* A deadline far away: restored only if written after the LAPIC (see kvm_state.h). */
		if (ctx_has(&f->ctx, 0x6e0))
			assert_int_equal(msr_set(t->vcpu, 0x6e0, 0x7000000000000000ull), 1);

		memset(&chip, 0, sizeof(chip));
		chip.chip_id = KVM_IRQCHIP_PIC_MASTER;
		assert_int_equal(ioctl(t->vm, KVM_GET_IRQCHIP, &chip), 0);
		chip.chip.pic.imr = 0xfb;
		chip.chip.pic.irq_base = 0x20;
		assert_int_equal(ioctl(t->vm, KVM_SET_IRQCHIP, &chip), 0);
		memset(&chip, 0, sizeof(chip));
		chip.chip_id = KVM_IRQCHIP_IOAPIC;
		assert_int_equal(ioctl(t->vm, KVM_GET_IRQCHIP, &chip), 0);
		chip.chip.ioapic.redirtbl[3].bits = 0x10033; /* masked, vector 0x33 */
		assert_int_equal(ioctl(t->vm, KVM_SET_IRQCHIP, &chip), 0);
		assert_int_equal(ioctl(t->vm, KVM_GET_PIT2, &pit), 0);
		pit.channels[2].mode = 3;
		pit.channels[2].count = 0x1234;
		assert_int_equal(ioctl(t->vm, KVM_SET_PIT2, &pit), 0);
	}
}

static uint64_t msr_get(int vcpu, uint32_t idx)
{
	uint64_t raw[(sizeof(struct kvm_msrs) + sizeof(struct kvm_msr_entry)) / 8 + 1] = {0};
	struct kvm_msrs *m = (struct kvm_msrs *)raw;

	m->nmsrs = 1;
	m->entries[0].index = idx;
	if (ioctl(vcpu, KVM_GET_MSRS, m) != 1)
		fail_msg("KVM_GET_MSRS 0x%x: %s", idx, strerror(errno));
	return m->entries[0].data;
}

static void check_seg(const char *what, const struct kvm_segment *s, uint64_t base, uint16_t sel,
		      uint8_t type)
{
	if (s->base != base || s->selector != sel || s->type != type || s->limit != 0xffffffff ||
	    !s->present || !s->s || !s->db || !s->g)
		fail_msg("%s: base 0x%llx sel 0x%x type %u limit 0x%x p%u s%u db%u g%u", what,
			 (unsigned long long)s->base, s->selector, s->type, s->limit, s->present, s->s, s->db,
			 s->g);
}

/* The TSC of `vcpu` (read with KVM_GET_MSRS) is at or after src_tsc, by less than 2 s at khz. */
static void check_tsc(int vcpu, uint64_t src_tsc, uint32_t khz)
{
	uint64_t v = msr_get(vcpu, 0x10);

	if (v < src_tsc || v - src_tsc >= (uint64_t)khz * 2000)
		fail_msg("TSC 0x%llx, source had 0x%llx before save (%u kHz)", (unsigned long long)v,
			 (unsigned long long)src_tsc, khz);
}

/*
 * Read t's state field by field with KVM ioctls (not through kvm_state) and check it holds exactly
 * what set_distinctive() wrote on the source: a restore that round-trips a wrong blob faithfully
 * would pass a blob-vs-blob comparison, not this.
 */
static void check_fields(struct fix *f, struct tvm *t, bool devices)
{
	struct kvm_regs r;
	struct kvm_sregs sr;
	struct kvm_debugregs d;
	struct kvm_lapic_state la;
	struct kvm_irqchip chip;
	struct kvm_pit_state2 pit;
	uint64_t v;
	unsigned i;

	assert_int_equal(ioctl(t->vcpu, KVM_GET_REGS, &r), 0);
	assert_int_equal(r.rax, 0x1111111111111111ull);
	assert_int_equal(r.rbx, 0x2222222222222222ull);
	assert_int_equal(r.rcx, 0x3333333333333333ull);
	assert_int_equal(r.rdx, 0x4444444444444444ull);
	assert_int_equal(r.rsi, 0x5555555555555555ull);
	assert_int_equal(r.rdi, 0x6666666666666666ull);
	assert_int_equal(r.rsp, 0x7ff0);
	assert_int_equal(r.rbp, 0x7777777777777777ull);
	assert_int_equal(r.r8, 8);
	assert_int_equal(r.r12, 12);
	assert_int_equal(r.r15, 0xf15f15f15ull);
	assert_int_equal(r.rip, CODE_GPA);
	assert_int_equal(r.rflags, 0x246);

	assert_int_equal(ioctl(t->vcpu, KVM_GET_SREGS, &sr), 0);
	check_seg("cs", &sr.cs, 0, 8, 0xb);
	check_seg("ds", &sr.ds, 0, 0x10, 3);
	check_seg("ss", &sr.ss, 0, 0x10, 3);
	check_seg("fs", &sr.fs, 0x12345000, 0x10, 3);
	check_seg("gs", &sr.gs, 0x6789a000, 0x10, 3);
	assert_int_equal(sr.gdt.base, 0x2000);
	assert_int_equal(sr.gdt.limit, 0x27);
	assert_int_equal(sr.idt.base, 0x3000);
	assert_int_equal(sr.idt.limit, 0x7ff);
	assert_int_equal(sr.cr0, 0x31);
	assert_int_equal(sr.cr2, 0xdead000);
	assert_int_equal(sr.cr3, 0x5000);
	assert_int_equal(sr.cr4, 0x600 | (f->xcr0_want ? 0x40000 : 0));
	assert_int_equal(sr.efer, 1);

	for (i = 0; i < sizeof(test_msrs) / sizeof(test_msrs[0]); i++) {
		if (!ctx_has(&f->ctx, test_msrs[i].idx))
			continue;
		if (test_msrs[i].idx == 0x10)
			continue; /* the TSC runs on (and KVM may resynchronise a write): see
			             check_tsc() */
		v = msr_get(t->vcpu, test_msrs[i].idx);
		if (v != test_msrs[i].val) {
			fail_msg("MSR 0x%x reads 0x%llx, set 0x%llx", test_msrs[i].idx, (unsigned long long)v,
				 (unsigned long long)test_msrs[i].val);
		}
	}
	/* The ones the issue names must be there to be checked (STAR, LSTAR; TSC_AUX if KVM has
	 * it). */
	assert_true(ctx_has(&f->ctx, 0xc0000081) && ctx_has(&f->ctx, 0xc0000082));

	if (f->ctx.xcrs) {
		struct kvm_xcrs x;

		assert_int_equal(ioctl(t->vcpu, KVM_GET_XCRS, &x), 0);
		assert_true(x.nr_xcrs >= 1);
		assert_int_equal(x.xcrs[0].xcr, 0);
		assert_int_equal(x.xcrs[0].value, f->xcr0_want);
	}
	if (f->ctx.xsave_size) {
		uint8_t *xs = calloc(1, f->ctx.xsave_size);

		assert_non_null(xs);
		assert_int_equal(ioctl(t->vcpu, f->ctx.xsave2 ? KVM_GET_XSAVE2 : KVM_GET_XSAVE, xs), 0);
		for (i = 0; i < 16; i++)
			assert_int_equal(xs[160 + i], 0xa0 + i); /* XMM0 */
		free(xs);
	}
	if (f->ctx.debugregs) {
		assert_int_equal(ioctl(t->vcpu, KVM_GET_DEBUGREGS, &d), 0);
		assert_int_equal(d.db[0], 0x1000);
		assert_int_equal(d.db[1], 0x2000);
		assert_int_equal(d.db[2], 0x3000);
		assert_int_equal(d.db[3], 0x4000);
		assert_int_equal(d.dr6, 0xffff0ff0);
		assert_int_equal(d.dr7, 0x455);
	}
	if (!devices)
		return;

	assert_int_equal(ioctl(t->vcpu, KVM_GET_LAPIC, &la), 0);
	assert_int_equal((uint8_t)la.regs[0x80], 0x30); /* TPR */
	assert_int_equal((uint8_t)la.regs[0xf0], 0xff); /* SVR vector */
	assert_int_equal(la.regs[0xf1] & 1, 1); /* SVR: APIC software-enabled */
	assert_int_equal((uint8_t)la.regs[0x320], 0xec); /* LVTT vector */
	assert_int_equal((la.regs[0x322] >> 1) & 3, 2); /* LVTT mode: TSC deadline */
	if (ctx_has(&f->ctx, 0x6e0))
		assert_int_equal(msr_get(t->vcpu, 0x6e0), 0x7000000000000000ull);

	memset(&chip, 0, sizeof(chip));
	chip.chip_id = KVM_IRQCHIP_PIC_MASTER;
	assert_int_equal(ioctl(t->vm, KVM_GET_IRQCHIP, &chip), 0);
	assert_int_equal(chip.chip.pic.imr, 0xfb);
	assert_int_equal(chip.chip.pic.irq_base, 0x20);
	memset(&chip, 0, sizeof(chip));
	chip.chip_id = KVM_IRQCHIP_IOAPIC;
	assert_int_equal(ioctl(t->vm, KVM_GET_IRQCHIP, &chip), 0);
	assert_int_equal(chip.chip.ioapic.redirtbl[3].bits, 0x10033);
	assert_int_equal(ioctl(t->vm, KVM_GET_PIT2, &pit), 0);
	assert_int_equal(pit.channels[2].mode, 3);
	assert_int_equal(pit.channels[2].count, 0x1234);
}

/* Compare two vCPU blobs section by section; TSC may only move forward (by < 2 s). */
static void compare_vcpu(uint8_t *a, size_t alen, uint8_t *b, size_t blen, uint32_t khz)
{
	size_t off = KVM_STATE_HDR_SIZE;

	assert_int_equal(alen, blen);
	while (off < alen) {
		uint32_t tag, len, lb;
		uint8_t *sb;

		memcpy(&tag, a + off, 4);
		memcpy(&len, a + off + 4, 4);
		sb = find_sec(b, blen, tag, &lb);
		assert_non_null(sb);
		assert_int_equal(len, lb);
		if (tag == KST_MSRS) {
			uint32_t n, i;

			memcpy(&n, a + off + 8, 4);
			for (i = 0; i < n; i++) {
				struct kvm_msr_entry ea, eb;

				memcpy(&ea, a + off + 16 + i * sizeof(ea), sizeof(ea));
				memcpy(&eb, sb + 16 + i * sizeof(eb), sizeof(eb));
				assert_int_equal(ea.index, eb.index);
				if (ea.index == 0x10) {
					assert_true(eb.data >= ea.data);
					assert_true(eb.data - ea.data < (uint64_t)khz * 2000);
				} else if (ea.data != eb.data) {
					fail_msg("MSR 0x%x: 0x%llx != 0x%llx", ea.index,
						 (unsigned long long)ea.data, (unsigned long long)eb.data);
				}
			}
		} else if (memcmp(a + off + 8, sb + 8, len) != 0) {
			for (uint32_t i = 0; i < len; i++) {
				if (a[off + 8 + i] != sb[8 + i])
					fail_msg("section 0x%x differs at byte %u: %02x != %02x", tag, i,
						 a[off + 8 + i], sb[8 + i]);
			}
		}
		off += 8 + ((len + 7) & ~7u);
	}
}

static void compare_vm(uint8_t *a, size_t alen, uint8_t *b, size_t blen)
{
	struct kvm_pit_state2 pa, pb;
	struct kvm_clock_data ca, cb;
	uint32_t tags[] = {KST_PIC_MASTER, KST_PIC_SLAVE, KST_IOAPIC};
	uint8_t *sa, *sb;
	uint32_t la, lb;
	int i;

	assert_int_equal(alen, blen);
	for (i = 0; i < 3; i++) {
		sa = find_sec(a, alen, tags[i], &la);
		sb = find_sec(b, blen, tags[i], &lb);
		assert_non_null(sa);
		assert_non_null(sb);
		assert_int_equal(la, lb);
		assert_memory_equal(sa + 8, sb + 8, la);
	}
	sa = find_sec(a, alen, KST_PIT2, &la);
	sb = find_sec(b, blen, KST_PIT2, &lb);
	assert_non_null(sa);
	assert_non_null(sb);
	memcpy(&pa, sa + 8, sizeof(pa));
	memcpy(&pb, sb + 8, sizeof(pb));
	for (i = 0; i < 3; i++) /* KVM_SET_PIT2 reloads counters: load time is "now" */
		pa.channels[i].count_load_time = pb.channels[i].count_load_time = 0;
	assert_memory_equal(&pa, &pb, sizeof(pa));
	assert_int_equal(pb.channels[2].count, 0x1234);
	sa = find_sec(a, alen, KST_CLOCK, &la);
	sb = find_sec(b, blen, KST_CLOCK, &lb);
	assert_non_null(sa);
	assert_non_null(sb);
	memcpy(&ca, sa + 8, sizeof(ca));
	memcpy(&cb, sb + 8, sizeof(cb));
	assert_true(cb.clock >= ca.clock);
	assert_true(cb.clock - ca.clock < 1000000000ull);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void test_roundtrip(void **state)
{
	struct fix *f = *state;
	size_t max, ua, ub, va, vb;
	struct tvm A, B;
	uint8_t *ba, *bb, vma[4096], vmb[4096];
	uint32_t khz = 0, l;
	uint8_t *s;
	char err[256] = "";
	uint64_t t0, tsc_a;
	int i, n = 200;

	NEED_KVM(f);
	assert_int_equal(tvm_create(f->kvm, &A, true), 0);
	assert_int_equal(tvm_create(f->kvm, &B, true), 0);
	assert_true(kvm_vm_state_max() <= sizeof(vma));
	max = kvm_vcpu_state_max(&f->ctx);
	ba = malloc(max);
	bb = malloc(max);
	assert_non_null(ba);
	assert_non_null(bb);
	set_distinctive(f, &A);

	tsc_a = msr_get(A.vcpu, 0x10);
	assert_int_equal(kvm_vcpu_save(&f->ctx, A.vcpu, ba, max, &ua, err, sizeof(err)), 0);
	assert_int_equal(kvm_vm_save(&f->ctx, A.vm, vma, sizeof(vma), &va, err, sizeof(err)), 0);
	s = find_sec(ba, ua, KST_TSC_KHZ, NULL);
	if (s)
		memcpy(&khz, s + 8, 4);
	assert_true(khz > 0);
	assert_non_null(find_sec(ba, ua, KST_LAPIC, NULL));

	if (kvm_vcpu_restore(&f->ctx, B.vcpu, ba, ua, err, sizeof(err)))
		fail_msg("vcpu restore: %s", err);
	if (kvm_vm_restore(&f->ctx, B.vm, vma, va, err, sizeof(err)))
		fail_msg("vm restore: %s", err);
	assert_int_equal(kvm_vcpu_save(&f->ctx, B.vcpu, bb, max, &ub, err, sizeof(err)), 0);
	assert_int_equal(kvm_vm_save(&f->ctx, B.vm, vmb, sizeof(vmb), &vb, err, sizeof(err)), 0);
	compare_vcpu(ba, ua, bb, ub, khz);
	compare_vm(vma, va, vmb, vb);

	/* And independently of the blob format: B really holds the values set on A (read with KVM
	 * ioctls field by field), and so does A itself (the setters took them as written). */
	check_fields(f, &A, true);
	check_fields(f, &B, true);
	check_tsc(B.vcpu, tsc_a, khz);
	s = find_sec(bb, ub, KST_MSRS, &l);
	assert_non_null(s);
	{
		uint32_t nm, k;
		struct kvm_msr_entry e;
		bool seen = !ctx_has(&f->ctx, 0x6e0);

		memcpy(&nm, s + 8, 4);
		printf("# %u of %u MSRs saved\n", nm, f->ctx.nr_msrs);
		for (k = 0; k < nm; k++) {
			memcpy(&e, s + 16 + k * sizeof(e), sizeof(e));
			if (e.index == 0x6e0) {
				assert_int_equal(e.data, 0x7000000000000000ull);
				seen = true;
			}
		}
		assert_true(seen);
	}
	s = find_sec(bb, ub, KST_XSAVE, &l);
	if (s) {
		for (i = 0; i < 16; i++)
			assert_int_equal(s[8 + 160 + i], 0xa0 + i);
	}
	s = find_sec(bb, ub, KST_XCRS, &l);
	if (s) {
		struct kvm_xcrs x;

		memcpy(&x, s + 8, sizeof(x));
		assert_int_equal(x.xcrs[0].value, f->xcr0_want);
	}

	/* Timing. */
	t0 = now_ns();
	for (i = 0; i < n; i++)
		assert_int_equal(kvm_vcpu_save(&f->ctx, A.vcpu, ba, max, &ua, err, sizeof(err)), 0);
	printf("# vcpu save: %.1f us (%zu bytes)\n", (now_ns() - t0) / 1e3 / n, ua);
	t0 = now_ns();
	for (i = 0; i < n; i++)
		assert_int_equal(kvm_vcpu_restore(&f->ctx, B.vcpu, ba, ua, err, sizeof(err)), 0);
	printf("# vcpu restore: %.1f us\n", (now_ns() - t0) / 1e3 / n);
	t0 = now_ns();
	for (i = 0; i < n; i++)
		assert_int_equal(kvm_vm_save(&f->ctx, A.vm, vma, sizeof(vma), &va, err, sizeof(err)), 0);
	printf("# vm save: %.1f us (%zu bytes)\n", (now_ns() - t0) / 1e3 / n, va);
	t0 = now_ns();
	for (i = 0; i < n; i++)
		assert_int_equal(kvm_vm_restore(&f->ctx, B.vm, vma, va, err, sizeof(err)), 0);
	printf("# vm restore: %.1f us\n", (now_ns() - t0) / 1e3 / n);

	free(ba);
	free(bb);
	tvm_destroy(&A);
	tvm_destroy(&B);
}

/* Real-mode guest at CODE_GPA: mov eax, 0x11111111; out 0x10, al; add eax, 1; out 0x11, al; hlt. */
static const uint8_t guest_code[] = {0x66, 0xb8, 0x11, 0x11, 0x11, 0x11, 0xe6, 0x10,
				     0x66, 0x83, 0xc0, 0x01, 0xe6, 0x11, 0xf4};

static void run_to_io(struct tvm *t, uint16_t port, uint8_t val)
{
	int r;

	t->run->immediate_exit = 0;
	r = ioctl(t->vcpu, KVM_RUN, 0);
	if (r < 0)
		fail_msg("KVM_RUN: %s", strerror(errno));
	if (t->run->exit_reason != KVM_EXIT_IO)
		fail_msg("exit reason %u, want IO", t->run->exit_reason);
	assert_int_equal(t->run->io.port, port);
	assert_int_equal(t->run->io.direction, KVM_EXIT_IO_OUT);
	assert_int_equal(((uint8_t *)t->run)[t->run->io.data_offset], val);
	/* Complete the OUT without running guest code (see kvm_state.h). */
	t->run->immediate_exit = 1;
	r = ioctl(t->vcpu, KVM_RUN, 0);
	assert_true(r < 0 && errno == EINTR);
	t->run->immediate_exit = 0;
}

static void test_run_continue(void **state)
{
	struct fix *f = *state;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	uint8_t *blob, vm[4096];
	char err[256] = "";
	size_t used, vused;
	struct tvm A, B;

	NEED_KVM(f);
	assert_int_equal(tvm_create(f->kvm, &A, true), 0);
	assert_int_equal(tvm_create(f->kvm, &B, true), 0);
	memcpy(A.mem + CODE_GPA, guest_code, sizeof(guest_code));
	memcpy(B.mem, A.mem, TMEM); /* what a RAM copy would do */
	assert_int_equal(ioctl(A.vcpu, KVM_GET_SREGS, &sregs), 0);
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	assert_int_equal(ioctl(A.vcpu, KVM_SET_SREGS, &sregs), 0);
	memset(&regs, 0, sizeof(regs));
	regs.rip = CODE_GPA;
	regs.rflags = 2;
	regs.rbx = 0xb0b0;
	assert_int_equal(ioctl(A.vcpu, KVM_SET_REGS, &regs), 0);

	run_to_io(&A, 0x10, 0x11);
	blob = malloc(kvm_vcpu_state_max(&f->ctx));
	assert_non_null(blob);
	if (kvm_vcpu_save(&f->ctx, A.vcpu, blob, kvm_vcpu_state_max(&f->ctx), &used, err, sizeof(err)))
		fail_msg("save: %s", err);
	assert_int_equal(kvm_vm_save(&f->ctx, A.vm, vm, sizeof(vm), &vused, err, sizeof(err)), 0);
	if (kvm_vcpu_restore(&f->ctx, B.vcpu, blob, used, err, sizeof(err)))
		fail_msg("restore: %s", err);
	assert_int_equal(kvm_vm_restore(&f->ctx, B.vm, vm, vused, err, sizeof(err)), 0);
	run_to_io(&B, 0x11, 0x12); /* B continues where A stopped */
	assert_int_equal(ioctl(B.vcpu, KVM_GET_REGS, &regs), 0);
	assert_int_equal(regs.rax & 0xffffffff, 0x11111112);
	assert_int_equal(regs.rbx, 0xb0b0);
	assert_int_equal(regs.rip, CODE_GPA + 14);
	free(blob);
	tvm_destroy(&A);
	tvm_destroy(&B);
}

static void put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static void expect_bad(struct fix *f, int vcpu, const uint8_t *b, size_t len, int rc, const char *needle)
{
	char err[256] = "";
	int r = kvm_vcpu_restore(&f->ctx, vcpu, b, len, err, sizeof(err));

	if (r != rc || (needle && !strstr(err, needle)))
		fail_msg("restore of bad blob: rc %d (want %d), err \"%s\" (want \"%s\")", r, rc, err,
			 needle ? needle : "");
	assert_true(strlen(err) > 0 && !strchr(err, '\n'));
}

static void test_bad_blobs(void **state)
{
	struct fix *f = *state;
	size_t max, used, vused, l;
	uint8_t *blob, *bad, vm[4096], small[64];
	char err[256] = "";
	struct tvm A, C;
	uint32_t n, slen;
	uint8_t *s;
	unsigned i, seed = 12345;

	NEED_KVM(f);
	assert_int_equal(tvm_create(f->kvm, &A, true), 0);
	assert_int_equal(tvm_create(f->kvm, &C, false), 0);
	set_distinctive(f, &A);
	max = kvm_vcpu_state_max(&f->ctx);
	blob = malloc(max);
	bad = malloc(max);
	assert_non_null(blob);
	assert_non_null(bad);
	assert_int_equal(kvm_vcpu_save(&f->ctx, A.vcpu, blob, max, &used, err, sizeof(err)), 0);
	assert_int_equal(kvm_vm_save(&f->ctx, A.vm, vm, sizeof(vm), &vused, err, sizeof(err)), 0);

	/* Buffers too small. */
	assert_int_equal(kvm_vcpu_save(&f->ctx, A.vcpu, small, sizeof(small), &l, err, sizeof(err)), -ENOSPC);
	assert_int_equal(kvm_vcpu_save(&f->ctx, A.vcpu, NULL, 0, &l, err, sizeof(err)), -ENOSPC);
	assert_int_equal(kvm_vm_save(&f->ctx, A.vm, small, 40, &l, err, sizeof(err)), -ENOSPC);

	/* Every truncation, and every truncation the header agrees with. */
	for (l = 0; l < used; l++)
		expect_bad(f, A.vcpu, blob, l, -EINVAL, "truncated");
	expect_bad(f, A.vcpu, NULL, 100, -EINVAL, "truncated");
	for (l = KVM_STATE_HDR_SIZE; l < used; l += 4) {
		memcpy(bad, blob, l);
		put32(bad + 8, l);
		expect_bad(f, A.vcpu, bad, l, -EINVAL, NULL);
	}
	/* Trailing bytes beyond total_len are ignored. */
	memcpy(bad, blob, used);
	assert_int_equal(
		kvm_vcpu_restore(&f->ctx, A.vcpu, bad, used + 8 <= max ? used + 8 : used, err, sizeof(err)),
		0);

	memcpy(bad, blob, used);
	put32(bad + KVM_STATE_HDR_SIZE, 0x77); /* REGS is first: corrupt its tag */
	expect_bad(f, A.vcpu, bad, used, -EINVAL, "unknown mandatory section tag 0x77");
	memcpy(bad, blob, used);
	put32(bad + KVM_STATE_HDR_SIZE, KST_OPTIONAL | 0x77); /* skippable, but then REGS is missing */
	expect_bad(f, A.vcpu, bad, used, -EINVAL, "regs");
	memcpy(bad, blob, used);
	s = find_sec(bad, used, KST_TSC_KHZ, NULL);
	assert_non_null(s);
	put32(s, KST_OPTIONAL | 0x1234); /* unknown optional section: skipped */
	assert_int_equal(kvm_vcpu_restore(&f->ctx, A.vcpu, bad, used, err, sizeof(err)), 0);
	memcpy(bad, blob, used);
	s = find_sec(bad, used, KST_LAPIC, NULL);
	put32(s, KST_REGS); /* duplicate */
	expect_bad(f, A.vcpu, bad, used, -EINVAL, "duplicate");

	memcpy(bad, blob, used);
	bad[4] = 2; /* version */
	expect_bad(f, A.vcpu, bad, used, -EINVAL, "version 2");
	memcpy(bad, blob, used);
	bad[0] ^= 1;
	expect_bad(f, A.vcpu, bad, used, -EINVAL, "magic");
	expect_bad(f, A.vcpu, vm, vused, -EINVAL, "magic"); /* a VM blob is not a vCPU blob */
	memcpy(bad, blob, used);
	put32(bad + 12, 1000); /* more sections than there are */
	expect_bad(f, A.vcpu, bad, used, -EINVAL, "truncated");
	memcpy(bad, blob, used);
	put32(bad + 12, 2); /* fewer sections: bytes left over */
	expect_bad(f, A.vcpu, bad, used, -EINVAL, "after the last");

	memcpy(bad, blob, used);
	s = find_sec(bad, used, KST_MSRS, &slen);
	assert_non_null(s);
	memcpy(&n, s + 8, 4);
	assert_true(n > 0 && n <= f->ctx.nr_msrs);
	put32(s + 8, 0xffffffff);
	expect_bad(f, A.vcpu, bad, used, -EINVAL, "bad MSR section (count 4294967295");
	put32(s + 8, n - 1);
	expect_bad(f, A.vcpu, bad, used, -EINVAL, "bad MSR section");
	put32(s + 8, n);
	put32(s + 16, 0xdeadbeef);
	expect_bad(f, A.vcpu, bad, used, -EINVAL, "MSR 0xdeadbeef");
	memcpy(bad, blob, used);
	s = find_sec(bad, used, KST_REGS, NULL);
	put32(s + 4, 0xfffffff0); /* section length past the end */
	expect_bad(f, A.vcpu, bad, used, -EINVAL, "overruns");

	/* VM blob: irqchip state into a VM that has none, and a bad VM blob. */
	assert_int_equal(kvm_vm_restore(&f->ctx, C.vm, vm, vused, err, sizeof(err)), -ENXIO);
	assert_non_null(strstr(err, "lacks"));
	assert_int_equal(kvm_vm_restore(&f->ctx, A.vm, blob, used, err, sizeof(err)), -EINVAL);
	assert_int_equal(kvm_vm_restore(&f->ctx, A.vm, vm, vused - 8, err, sizeof(err)), -EINVAL);

	/* Random byte flips: never crash (KVM validates what we pass it; C is a scratch VM). */
	for (i = 0; i < 1000; i++) {
		memcpy(bad, blob, used);
		seed = seed * 1103515245u + 12345u;
		bad[(seed >> 8) % used] ^= (uint8_t)(1u << ((seed >> 4) & 7));
		kvm_vcpu_restore(&f->ctx, C.vcpu, bad, used, err, sizeof(err));
	}
	free(blob);
	free(bad);
	tvm_destroy(&A);
	tvm_destroy(&C);
}

static void test_no_irqchip(void **state)
{
	struct fix *f = *state;
	size_t max, used, vused, used2;
	uint8_t *blob, *blob2, *s, vm[4096];
	char err[256] = "";
	struct tvm C, D;
	uint32_t khz = 0;
	uint64_t tsc_c;

	NEED_KVM(f);
	assert_int_equal(tvm_create(f->kvm, &C, false), 0);
	assert_int_equal(tvm_create(f->kvm, &D, false), 0);
	max = kvm_vcpu_state_max(&f->ctx);
	blob = malloc(max);
	blob2 = malloc(max);
	assert_non_null(blob);
	assert_non_null(blob2);
	set_distinctive(f, &C); /* no LAPIC/PIC/IOAPIC/PIT here: vCPU state only */
	tsc_c = msr_get(C.vcpu, 0x10);
	if (kvm_vcpu_save(&f->ctx, C.vcpu, blob, max, &used, err, sizeof(err)))
		fail_msg("save: %s", err);
	assert_null(find_sec(blob, used, KST_LAPIC, NULL));
	s = find_sec(blob, used, KST_TSC_KHZ, NULL);
	assert_non_null(s);
	memcpy(&khz, s + 8, 4);
	assert_int_equal(kvm_vm_save(&f->ctx, C.vm, vm, sizeof(vm), &vused, err, sizeof(err)), 0);
	assert_null(find_sec(vm, vused, KST_PIC_MASTER, NULL));
	assert_null(find_sec(vm, vused, KST_IOAPIC, NULL));
	assert_null(find_sec(vm, vused, KST_PIT2, NULL));
	if (kvm_vcpu_restore(&f->ctx, D.vcpu, blob, used, err, sizeof(err)))
		fail_msg("restore: %s", err);
	assert_int_equal(kvm_vm_restore(&f->ctx, D.vm, vm, vused, err, sizeof(err)), 0);
	check_fields(f, &D, false);
	check_tsc(D.vcpu, tsc_c, khz);
	assert_int_equal(kvm_vcpu_save(&f->ctx, D.vcpu, blob2, max, &used2, err, sizeof(err)), 0);
	assert_int_equal(used, used2);
	free(blob);
	free(blob2);
	tvm_destroy(&C);
	tvm_destroy(&D);
}

static void test_ctx_errors(void **state)
{
	struct fix *f = *state;
	struct kvm_state_ctx c;
	char err[128] = "";

	(void)f;
	assert_int_equal(kvm_state_ctx_init(&c, -1, -1, err, sizeof(err)), -EBADF);
	assert_true(strlen(err) > 0);
	assert_int_equal(kvm_state_ctx_init(NULL, 0, 0, err, sizeof(err)), -EINVAL);
	assert_int_equal(kvm_vcpu_save(NULL, 0, err, sizeof(err), NULL, NULL, 0), -EINVAL);
	assert_int_equal(kvm_vcpu_restore(NULL, 0, err, sizeof(err), NULL, 0), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ctx_errors),   cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_run_continue), cmocka_unit_test(test_bad_blobs),
		cmocka_unit_test(test_no_irqchip),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
