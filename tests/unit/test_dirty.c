/* test_dirty.c — KVM dirty-page tracking: a tiny guest writes known pages, sync must report exactly them. */
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
#include <unistd.h>
#include <linux/kvm.h>
#include <cmocka.h>

#include "hv/dirty.h"
#include "hv/kvm/kvm_dirty.h"
#include "hv/mem.h"

#define CODE_GPA 0x1000ull
#define EXIT_PORT 0x501

/* 32-bit flat protected mode, paging off. eax = value, ecx = count (> 0), edi = first address,
 * esi = stride, edx = exit port:
 *   1: mov [edi], eax; add edi, esi; dec ecx; jnz 1b; out dx, al; hlt */
static const uint8_t store_loop[] = {0x89, 0x07, 0x01, 0xf7, 0x49, 0x75, 0xf9, 0xee, 0xf4};
/* The same loop for 64-bit CPL3 (runs natively, so KVM's write protection is what catches the stores):
 *   1: mov [rdi], eax; add rdi, rsi; dec ecx; jnz 1b; out dx, al   (IOPL 3) */
static const uint8_t store_loop64[] = {0x89, 0x07, 0x48, 0x01, 0xf7, 0xff, 0xc9, 0x75, 0xf7, 0xee, 0xf4};
#define CODE64_GPA 0x1800ull
#define PML4_GPA 0x2000ull
#define PDPT_GPA 0x3000ull
#define PD_GPA 0x4000ull

struct tvm {
	bool user;
	int kvm, vm, vcpu;
	struct kvm_run *run;
	size_t run_sz;
	struct guest_mem gm;
};

static void tvm_destroy(struct tvm *t)
{
	if (t->run && t->run != MAP_FAILED)
		munmap(t->run, t->run_sz);
	if (t->vcpu >= 0)
		close(t->vcpu);
	if (t->vm >= 0)
		close(t->vm);
	if (t->kvm >= 0)
		close(t->kvm);
	mem_destroy(&t->gm);
}

static void seg(struct kvm_segment *s, uint16_t sel, uint8_t type)
{
	*s = (struct kvm_segment){.base = 0,
				  .limit = 0xffffffff,
				  .selector = sel,
				  .type = type,
				  .present = 1,
				  .dpl = 0,
				  .db = 1,
				  .s = 1,
				  .l = 0,
				  .g = 1};
}

/* Long mode, CPL3, 2 MiB pages identity-mapping [0, 1 GiB) user-writable. */
static void setup_user64(struct tvm *t, struct kvm_sregs *sr)
{
	struct {
		struct kvm_cpuid2 c;
		struct kvm_cpuid_entry2 e[256];
	} cpuid = {.c.nent = 256};
	uint64_t *pml4 = gpa_ptr(&t->gm, PML4_GPA, 4096), *pdpt = gpa_ptr(&t->gm, PDPT_GPA, 4096);
	uint64_t *pd = gpa_ptr(&t->gm, PD_GPA, 4096);

	assert_int_equal(ioctl(t->kvm, KVM_GET_SUPPORTED_CPUID, &cpuid), 0);
	assert_int_equal(ioctl(t->vcpu, KVM_SET_CPUID2, &cpuid), 0);
	pml4[0] = PDPT_GPA | 7;
	pdpt[0] = PD_GPA | 7;
	for (uint64_t i = 0; i < 512; i++)
		pd[i] = (i << 21) | 0x87;
	memcpy(gpa_ptr(&t->gm, CODE64_GPA, sizeof(store_loop64)), store_loop64, sizeof(store_loop64));
	seg(&sr->cs, 0x33, 0xb);
	sr->cs.db = 0;
	sr->cs.l = 1;
	sr->cs.dpl = 3;
	seg(&sr->ds, 0x2b, 0x3);
	sr->ds.dpl = 3;
	sr->es = sr->fs = sr->gs = sr->ss = sr->ds;
	sr->cr3 = PML4_GPA;
	sr->cr4 |= 1u << 5; /* PAE */
	sr->efer |= (1u << 8) | (1u << 10); /* LME, LMA */
	sr->cr0 |= 0x80000001u;
}

/* 0; fails the test on any error (a missing /dev/kvm too: these tests need KVM). */
static int tvm_create(struct tvm *t, uint64_t size, bool with_vcpu, bool user)
{
	struct kvm_sregs sr;
	int sz;

	memset(t, 0, sizeof(*t));
	t->user = user;
	t->vm = t->vcpu = -1;
	t->gm.memfd = -1;
	t->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (t->kvm < 0)
		fail_msg("set-up: open /dev/kvm: %s (this test needs KVM)", strerror(errno));
	t->vm = ioctl(t->kvm, KVM_CREATE_VM, 0);
	assert_true(t->vm >= 0);
	assert_int_equal(mem_create(&t->gm, size), 0);
	for (int i = 0; i < t->gm.nr; i++) {
		struct kvm_userspace_memory_region r = {
			.slot = (uint32_t)i,
			.guest_phys_addr = t->gm.r[i].gpa,
			.memory_size = t->gm.r[i].size,
			.userspace_addr = (uint64_t)(uintptr_t)t->gm.r[i].host,
		};
		assert_int_equal(ioctl(t->vm, KVM_SET_USER_MEMORY_REGION, &r), 0);
	}
	memcpy(gpa_ptr(&t->gm, CODE_GPA, sizeof(store_loop)), store_loop, sizeof(store_loop));
	if (!with_vcpu)
		return 0;
	t->vcpu = ioctl(t->vm, KVM_CREATE_VCPU, 0);
	assert_true(t->vcpu >= 0);
	sz = ioctl(t->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	assert_true(sz > 0);
	t->run_sz = (size_t)sz;
	t->run = mmap(NULL, t->run_sz, PROT_READ | PROT_WRITE, MAP_SHARED, t->vcpu, 0);
	assert_true(t->run != MAP_FAILED);
	assert_int_equal(ioctl(t->vcpu, KVM_GET_SREGS, &sr), 0);
	seg(&sr.cs, 0x08, 0xb);
	seg(&sr.ds, 0x10, 0x3);
	sr.es = sr.fs = sr.gs = sr.ss = sr.ds;
	sr.cr0 = (sr.cr0 | 1) & ~(1ull << 31);
	if (user)
		setup_user64(t, &sr);
	assert_int_equal(ioctl(t->vcpu, KVM_SET_SREGS, &sr), 0);
	return 0;
}

/* Run the guest store loop: n dword stores at base, base + stride, ... */
static void tvm_store(struct tvm *t, uint32_t base, uint32_t stride, uint32_t n)
{
	struct kvm_regs regs = {.rip = t->user ? CODE64_GPA : CODE_GPA,
				.rflags = t->user ? 0x3002 : 2,
				.rax = 0x5a5a5a5a,
				.rcx = n,
				.rdi = base,
				.rsi = stride,
				.rdx = EXIT_PORT};

	assert_int_equal(ioctl(t->vcpu, KVM_SET_REGS, &regs), 0);
	for (;;) {
		if (ioctl(t->vcpu, KVM_RUN, 0) < 0) {
			assert_int_equal(errno, EINTR);
			continue;
		}
		if (t->run->exit_reason == KVM_EXIT_IO && t->run->io.port == EXIT_PORT)
			return;
		fail_msg("unexpected exit reason %u", t->run->exit_reason);
	}
}

static uint64_t *bm_alloc(const struct guest_mem *gm)
{
	uint64_t *bm = calloc(dirty_bitmap_words(gm->nr_pages), sizeof(uint64_t));

	assert_non_null(bm);
	return bm;
}

static bool bit(const uint64_t *bm, uint64_t i)
{
	return bm[i / 64] >> (i % 64) & 1;
}

/* Expected pages set; every page outside [0, 16) (code area) and outside the expected set clear. */
static void check_exact(const uint64_t *bm, uint64_t nr, const uint64_t *pages, int n)
{
	for (int i = 0; i < n; i++)
		if (!bit(bm, pages[i]))
			fail_msg("page %#llx not reported", (unsigned long long)pages[i]);
	for (uint64_t p = 16; p < nr; p++) {
		bool exp = false;
		for (int i = 0; i < n; i++)
			exp |= pages[i] == p;
		if (!exp && bit(bm, p))
			fail_msg("page %#llx reported but never written", (unsigned long long)p);
	}
}

static void test_bitmap_helpers(void **state)
{
	uint64_t bm[3] = {0}, pos = 0, p, got[8];
	int n = 0;

	(void)state;
	dirty_bitmap_fill(bm, 130);
	assert_int_equal(dirty_bitmap_count(bm, 130), 130);
	assert_int_equal(bm[2], 3);
	memset(bm, 0, sizeof(bm));
	bm[0] = 1ull | 1ull << 63;
	bm[2] = 1ull << 1 | 1ull << 5; /* bit 133 is past nr = 132 */
	assert_int_equal(dirty_bitmap_count(bm, 132), 3);
	while ((p = dirty_next(bm, 132, &pos)) != UINT64_MAX)
		got[n++] = p;
	assert_int_equal(n, 3);
	assert_int_equal(got[0], 0);
	assert_int_equal(got[1], 63);
	assert_int_equal(got[2], 129);
	pos = 200;
	assert_true(dirty_next(bm, 132, &pos) == UINT64_MAX);
}

static int collect(uint64_t page, void *opaque)
{
	uint64_t *v = opaque;

	v[++v[0]] = page;
	return v[0] == 2 ? 7 : 0;
}

static void test_for_each(void **state)
{
	uint64_t bm[2] = {1ull << 3 | 1ull << 40, 1ull << 0}, v[4] = {0};

	(void)state;
	assert_int_equal(dirty_for_each(bm, 128, collect, v), 7); /* stops at the 2nd page */
	assert_int_equal(v[0], 2);
	assert_int_equal(v[1], 3);
	assert_int_equal(v[2], 40);
	v[0] = 0;
	bm[0] = 0;
	assert_int_equal(dirty_for_each(bm, 65, collect, v), 0);
	assert_int_equal(v[0], 1);
	assert_int_equal(v[1], 64);
	assert_int_equal(dirty_for_each(bm, 64, collect, v), 0); /* page 64 is past nr */
}

/* The core scenario; `flags` selects manual-protect or legacy. */
static void guest_scenario(unsigned flags, bool user)
{
	struct tvm t;
	struct dirty_log *d = NULL;
	char err[256] = "";
	uint64_t *bm, a[8], b[2], c[1];
	int64_t n;

	assert_int_equal(tvm_create(&t, 8ull << 20, true, user), 0);
	bm = bm_alloc(&t.gm);
	assert_int_equal(kvm_dirty_log_start(&d, t.vm, &t.gm, flags | DIRTY_START_CLEAN, err, sizeof(err)),
			 0);
	if (!(flags & DIRTY_FORCE_LEGACY))
		assert_string_equal(dirty_log_mode(d), "manual-protect");

	/* Guest writes 8 pages: 0x100000, 0x103000, ... */
	for (int i = 0; i < 8; i++)
		a[i] = (0x100000 + i * 0x3000) >> 12;
	tvm_store(&t, 0x100000, 0x3000, 8);
	assert_int_equal(*GPA_PTR(&t.gm, 0x115000, uint32_t), 0x5a5a5a5a);
	n = dirty_log_sync(d, bm);
	assert_true(n >= 8);
	check_exact(bm, t.gm.nr_pages, a, 8);

	/* Nothing ran: empty. */
	assert_int_equal(dirty_log_sync(d, bm), 0);
	assert_int_equal(dirty_bitmap_count(bm, t.gm.nr_pages), 0);

	/* VMM write spanning two pages. */
	b[0] = 0x300;
	b[1] = 0x301;
	assert_int_equal(mem_write(&t.gm, 0x300ffe, "abcd", 4), 0);
	assert_int_equal(dirty_log_sync(d, bm), 2);
	check_exact(bm, t.gm.nr_pages, b, 2);

	/* Guest writes again to already-reported pages: re-protect worked, they come back. */
	tvm_store(&t, 0x103000, 0x3000, 2);
	c[0] = 0x7ff;
	tvm_store(&t, 0x7ff000, 0x1000, 1);
	n = dirty_log_sync(d, bm);
	assert_true(n >= 3);
	check_exact(bm, t.gm.nr_pages, (uint64_t[]){a[1], a[2], c[0]}, 3);
	assert_int_equal(dirty_log_sync(d, bm), 0);

	/* Same page written 5 times in one epoch: reported once (plus, for the paging guest, the page
	 * table page whose accessed/dirty bits the walk sets, inside the excluded low pages). */
	tvm_store(&t, 0x200000, 0, 5);
	n = dirty_log_sync(d, bm);
	assert_true(n >= 1 && n <= 2);
	c[0] = 0x200;
	check_exact(bm, t.gm.nr_pages, c, 1);

	assert_int_equal(dirty_log_stop(d), 0);
	assert_int_equal(dirty_log_sync(d, bm), -ENOENT);
	dirty_log_free(d);
	free(bm);
	tvm_destroy(&t);
}

/* dirty_log_sync_keep: a kept dirty page is not re-protected, so it is reported again by the next
 * sync without a write; a page dropped from `keep` is re-protected and goes quiet. */
static void test_keep_hot_pages(void **state)
{
	struct tvm t;
	struct dirty_log *d = NULL;
	char err[256] = "";
	uint64_t *bm, *keep;
	uint64_t hot = 0x100, cold = 0x103;

	(void)state;
	assert_int_equal(tvm_create(&t, 8ull << 20, true, true), 0);
	bm = bm_alloc(&t.gm);
	keep = bm_alloc(&t.gm);
	assert_int_equal(kvm_dirty_log_start(&d, t.vm, &t.gm, DIRTY_START_CLEAN, err, sizeof(err)), 0);
	tvm_store(&t, 0x100000, 0x3000, 2); /* pages 0x100 and 0x103 */
	keep[hot / 64] |= 1ull << (hot % 64);
	assert_true(dirty_log_sync_keep(d, bm, keep) >= 2);
	check_exact(bm, t.gm.nr_pages, (uint64_t[]){hot, cold}, 2);
	/* Nothing ran: the kept page is still reported (its dirty bit stays), the other is not. */
	assert_true(dirty_log_sync_keep(d, bm, keep) >= 1);
	check_exact(bm, t.gm.nr_pages, (uint64_t[]){hot}, 1);
	/* Dropped from keep: re-protected now, quiet afterwards, and caught again when written. */
	memset(keep, 0, dirty_bitmap_words(t.gm.nr_pages) * sizeof(uint64_t));
	assert_true(dirty_log_sync_keep(d, bm, keep) >= 1);
	check_exact(bm, t.gm.nr_pages, (uint64_t[]){hot}, 1);
	assert_int_equal(dirty_log_sync_keep(d, bm, keep), 0);
	tvm_store(&t, 0x100000, 0, 1);
	assert_true(dirty_log_sync(d, bm) >= 1);
	check_exact(bm, t.gm.nr_pages, (uint64_t[]){hot}, 1);
	dirty_log_free(d);
	free(bm);
	free(keep);
	tvm_destroy(&t);
}

/* One owner of a VM's log at a time: a DIRTY_YIELD log is taken over (its syncs then fail with
 * -ECANCELED and the new owner starts from "every page dirty"), any other refuses (-EBUSY). */
static void test_ownership(void **state)
{
	struct tvm t;
	struct dirty_log *a = NULL, *b = NULL, *c = NULL;
	char err[256] = "";
	uint64_t *bm;

	(void)state;
	assert_int_equal(tvm_create(&t, 8ull << 20, true, true), 0);
	bm = bm_alloc(&t.gm);
	assert_int_equal(
		kvm_dirty_log_start(&a, t.vm, &t.gm, DIRTY_START_CLEAN | DIRTY_YIELD, err, sizeof(err)), 0);
	assert_int_equal(dirty_log_sync(a, bm), 0);
	assert_int_equal(kvm_dirty_log_start(&b, t.vm, &t.gm, 0, err, sizeof(err)), 0); /* takes a's log */
	assert_int_equal(dirty_log_sync(a, bm), -ECANCELED);
	assert_int_equal((uint64_t)dirty_log_sync(b, bm), t.gm.nr_pages); /* START_ALL despite the takeover */
	assert_int_equal(kvm_dirty_log_start(&c, t.vm, &t.gm, 0, err, sizeof(err)), -EBUSY);
	assert_null(c);
	assert_non_null(strstr(err, "in use"));
	dirty_log_free(a); /* the revoked log leaves b's logging alone */
	tvm_store(&t, 0x100000, 0, 1);
	assert_true(dirty_log_sync(b, bm) >= 1);
	check_exact(bm, t.gm.nr_pages, (uint64_t[]){0x100}, 1);
	dirty_log_free(b);
	assert_int_equal(kvm_dirty_log_start(&c, t.vm, &t.gm, 0, err, sizeof(err)), 0); /* free again */
	dirty_log_free(c);
	free(bm);
	tvm_destroy(&t);
}

static void test_guest_manual(void **state)
{
	(void)state;
	guest_scenario(0, false);
}

static void test_guest_manual_user(void **state)
{
	(void)state;
	guest_scenario(0, true);
}

static void test_guest_legacy_user(void **state)
{
	(void)state;
	guest_scenario(DIRTY_FORCE_LEGACY, true);
}

static void test_guest_legacy(void **state)
{
	(void)state;
	guest_scenario(DIRTY_FORCE_LEGACY, false);
}

/* DIRTY_START_ALL: first sync reports all RAM (INITIALLY_SET), then only new writes. */
static void start_all(unsigned flags)
{
	struct tvm t;
	struct dirty_log *d = NULL;
	char err[256] = "";
	uint64_t *bm, pg = 0x123;

	assert_int_equal(tvm_create(&t, 4ull << 20, true, true), 0);
	bm = bm_alloc(&t.gm);
	assert_int_equal(kvm_dirty_log_start(&d, t.vm, &t.gm, flags, err, sizeof(err)), 0);
	assert_int_equal(dirty_log_sync(d, bm), (int64_t)t.gm.nr_pages);
	assert_int_equal(dirty_log_sync(d, bm), 0);
	tvm_store(&t, 0x123000, 0x1000, 1);
	assert_true(dirty_log_sync(d, bm) >= 1);
	check_exact(bm, t.gm.nr_pages, &pg, 1);
	dirty_log_free(d);
	free(bm);
	tvm_destroy(&t);
}

static void test_start_all(void **state)
{
	(void)state;
	start_all(DIRTY_START_ALL);
}

static void test_start_all_legacy(void **state)
{
	(void)state;
	start_all(DIRTY_FORCE_LEGACY);
}

/* Two slots (RAM above the 3 GiB hole): indexes map through pfn_base; no guest code needed. */
static void test_two_regions(void **state)
{
	struct tvm t;
	struct dirty_log *d = NULL;
	char err[256] = "";
	uint64_t *bm, exp[2];

	(void)state;
	assert_int_equal(tvm_create(&t, MEM_LOW_LIMIT + (2ull << 20), false, false), 0);
	assert_int_equal(t.gm.nr, 2);
	bm = bm_alloc(&t.gm);
	assert_int_equal(kvm_dirty_log_start(&d, t.vm, &t.gm, DIRTY_START_CLEAN, err, sizeof(err)), 0);
	assert_int_equal(dirty_log_sync(d, bm), 0);
	assert_int_equal(mem_write(&t.gm, MEM_HIGH_BASE + 0x1000, "x", 1), 0);
	assert_int_equal(mem_write(&t.gm, 0x5000, "y", 1), 0);
	exp[0] = (MEM_LOW_LIMIT >> 12) + 1;
	exp[1] = 5;
	assert_int_equal(dirty_log_sync(d, bm), 2);
	check_exact(bm, t.gm.nr_pages, exp, 2);
	dirty_log_free(d);
	free(bm);
	tvm_destroy(&t);
}

static void test_bad_args(void **state)
{
	struct guest_mem empty;
	struct dirty_log *d = (void *)1;
	char err[128] = "";
	uint64_t bm[1];

	(void)state;
	memset(&empty, 0, sizeof(empty));
	assert_int_equal(kvm_dirty_log_start(NULL, 3, &empty, 0, err, sizeof(err)), -EINVAL);
	assert_int_equal(kvm_dirty_log_start(&d, -1, &empty, 0, err, sizeof(err)), -EINVAL);
	assert_int_equal(kvm_dirty_log_start(&d, 3, &empty, 0, err, sizeof(err)), -EINVAL);
	assert_null(d);
	assert_true(strlen(err) > 0);
	assert_int_equal(kvm_dirty_log_start(&d, 3, &empty, 0x80, NULL, 0), -EINVAL);
	assert_int_equal(dirty_log_sync(NULL, bm), -EINVAL);
	assert_int_equal(dirty_log_stop(NULL), -EINVAL);
	dirty_log_free(NULL);
}

/* A vm fd that is not a VM: start fails cleanly with a message. */
static void test_not_a_vm(void **state)
{
	struct guest_mem gm;
	struct dirty_log *d = NULL;
	char err[256] = "";
	int fd = open("/dev/null", O_RDWR);

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(mem_create(&gm, 2ull << 20), 0);
	assert_true(kvm_dirty_log_start(&d, fd, &gm, 0, err, sizeof(err)) < 0);
	assert_null(d);
	assert_non_null(strstr(err, "KVM_SET_USER_MEMORY_REGION"));
	mem_destroy(&gm);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bitmap_helpers),	  cmocka_unit_test(test_for_each),
		cmocka_unit_test(test_bad_args),	  cmocka_unit_test(test_not_a_vm),
		cmocka_unit_test(test_guest_manual),	  cmocka_unit_test(test_guest_legacy),
		cmocka_unit_test(test_guest_manual_user), cmocka_unit_test(test_guest_legacy_user),
		cmocka_unit_test(test_start_all),	  cmocka_unit_test(test_start_all_legacy),
		cmocka_unit_test(test_two_regions),	  cmocka_unit_test(test_keep_hot_pages),
		cmocka_unit_test(test_ownership),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
