/* dirty_sync.c — bench: dirty-log start/sync cost vs RAM size and dirty count, guest write-fault cost. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <linux/kvm.h>

#include "hv/dirty.h"
#include "hv/kvm/kvm_dirty.h"
#include "hv/mem.h"

#define CODE_GPA 0x1000ull
#define EXIT_PORT 0x501
#define DATA_GPA 0x100000u

/* 32-bit flat, paging off: 1: mov [edi], eax; add edi, esi; dec ecx; jnz 1b; out dx, al; hlt */
static const uint8_t store_loop[] = {0x89, 0x07, 0x01, 0xf7, 0x49, 0x75, 0xf9, 0xee, 0xf4};
/* 64-bit, CPL3, identity-mapped 1 GiB: 1: mov [rdi], eax; add rdi, rsi; dec ecx; jnz 1b; out dx, al */
static const uint8_t store_loop64[] = {0x89, 0x07, 0x48, 0x01, 0xf7, 0xff, 0xc9, 0x75, 0xf7, 0xee, 0xf4};
#define CODE64_GPA 0x1800ull
#define PML4_GPA 0x2000ull
#define PDPT_GPA 0x3000ull
#define PD_GPA 0x4000ull

struct bvm {
	bool user;
	int kvm, vm, vcpu;
	struct kvm_run *run;
	size_t run_sz;
	struct guest_mem gm;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void bvm_destroy(struct bvm *t)
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
				  .db = 1,
				  .s = 1,
				  .g = 1};
}

/* Long mode, CPL3, 2 MiB pages identity-mapping [0, 1 GiB), user + writable: guest stores then run
 * natively (not emulated) and hit KVM's write protection like real guest code. */
static int setup_user64(struct bvm *t, struct kvm_sregs *sr)
{
	struct {
		struct kvm_cpuid2 c;
		struct kvm_cpuid_entry2 e[256];
	} cpuid = {.c.nent = 256};
	uint64_t *pml4 = gpa_ptr(&t->gm, PML4_GPA, 4096), *pdpt = gpa_ptr(&t->gm, PDPT_GPA, 4096);
	uint64_t *pd = gpa_ptr(&t->gm, PD_GPA, 4096);

	if (ioctl(t->kvm, KVM_GET_SUPPORTED_CPUID, &cpuid) < 0 || ioctl(t->vcpu, KVM_SET_CPUID2, &cpuid) < 0)
		return -1;
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
	return 0;
}

static int bvm_create(struct bvm *t, uint64_t size, bool user)
{
	struct kvm_sregs sr;
	int sz;

	memset(t, 0, sizeof(*t));
	t->user = user;
	t->vm = t->vcpu = -1;
	t->gm.memfd = -1;
	if ((t->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC)) < 0)
		return -errno;
	if ((t->vm = ioctl(t->kvm, KVM_CREATE_VM, 0)) < 0)
		goto err;
	if (mem_create(&t->gm, size))
		goto err;
	for (int i = 0; i < t->gm.nr; i++) {
		struct kvm_userspace_memory_region r = {
			.slot = (uint32_t)i,
			.guest_phys_addr = t->gm.r[i].gpa,
			.memory_size = t->gm.r[i].size,
			.userspace_addr = (uint64_t)(uintptr_t)t->gm.r[i].host,
		};
		if (ioctl(t->vm, KVM_SET_USER_MEMORY_REGION, &r) < 0)
			goto err;
	}
	memcpy(gpa_ptr(&t->gm, CODE_GPA, sizeof(store_loop)), store_loop, sizeof(store_loop));
	if ((t->vcpu = ioctl(t->vm, KVM_CREATE_VCPU, 0)) < 0)
		goto err;
	if ((sz = ioctl(t->kvm, KVM_GET_VCPU_MMAP_SIZE, 0)) <= 0)
		goto err;
	t->run_sz = (size_t)sz;
	t->run = mmap(NULL, t->run_sz, PROT_READ | PROT_WRITE, MAP_SHARED, t->vcpu, 0);
	if (t->run == MAP_FAILED || ioctl(t->vcpu, KVM_GET_SREGS, &sr) < 0)
		goto err;
	seg(&sr.cs, 0x08, 0xb);
	seg(&sr.ds, 0x10, 0x3);
	sr.es = sr.fs = sr.gs = sr.ss = sr.ds;
	sr.cr0 = (sr.cr0 | 1) & ~(1ull << 31);
	if (user && setup_user64(t, &sr))
		goto err;
	if (ioctl(t->vcpu, KVM_SET_SREGS, &sr) < 0)
		goto err;
	return 0;
err:
	bvm_destroy(t);
	return -EIO;
}

/* Guest stores one dword in each of n consecutive pages from DATA_GPA; returns wall ns or 0 on error. */
static uint64_t bvm_store(struct bvm *t, uint32_t n)
{
	struct kvm_regs regs = {.rip = t->user ? CODE64_GPA : CODE_GPA,
				.rflags = t->user ? 0x3002 : 2,
				.rax = 1,
				.rcx = n,
				.rdi = DATA_GPA,
				.rsi = 4096,
				.rdx = EXIT_PORT};
	uint64_t t0 = now_ns();

	if (ioctl(t->vcpu, KVM_SET_REGS, &regs) < 0)
		return 0;
	for (;;) {
		if (ioctl(t->vcpu, KVM_RUN, 0) < 0) {
			if (errno == EINTR)
				continue;
			return 0;
		}
		if (t->run->exit_reason == KVM_EXIT_IO && t->run->io.port == EXIT_PORT)
			return now_ns() - t0;
		fprintf(stderr, "dirty_sync: unexpected exit %u\n", t->run->exit_reason);
		return 0;
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double median_us(uint64_t *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_u64);
	return v[n / 2] / 1000.0;
}

static const char *sep(bool *first)
{
	if (*first) {
		*first = false;
		return "";
	}
	return ",";
}

/* Idle sync cost (0 dirty pages) and start / first-sync costs for one RAM size and mode. */
static int bench_idle(uint64_t size, unsigned flags, bool *first)
{
	struct bvm t;
	struct dirty_log *d;
	char err[256];
	uint64_t *bm, v[41], t0, t_start, t_first, t_stop;
	int64_t n0;
	int reps = 41;

	if (bvm_create(&t, size, false))
		return -1;
	bm = calloc(dirty_bitmap_words(t.gm.nr_pages), sizeof(uint64_t));
	t0 = now_ns();
	if (!bm || kvm_dirty_log_start(&d, t.vm, &t.gm, flags, err, sizeof(err))) {
		fprintf(stderr, "dirty_sync: %s\n", err);
		free(bm);
		bvm_destroy(&t);
		return -1;
	}
	t_start = now_ns() - t0;
	t0 = now_ns();
	n0 = dirty_log_sync(d, bm);
	t_first = now_ns() - t0;
	for (int i = 0; i < reps; i++) {
		t0 = now_ns();
		if (dirty_log_sync(d, bm) != 0)
			fprintf(stderr, "dirty_sync: idle sync not empty\n");
		v[i] = now_ns() - t0;
	}
	t0 = now_ns();
	dirty_log_stop(d);
	t_stop = now_ns() - t0;
	printf("%s\n    {\"mem_mib\": %llu, \"mode\": \"%s\", \"start\": \"%s\", \"start_us\": %.1f, "
	       "\"first_sync_us\": %.1f, \"first_sync_pages\": %lld, \"idle_sync_us\": %.1f, \"stop_us\": "
	       "%.1f}",
	       sep(first), (unsigned long long)(size >> 20), dirty_log_mode(d),
	       flags & DIRTY_START_CLEAN ? "clean" : "all", t_start / 1000.0, t_first / 1000.0, (long long)n0,
	       median_us(v, reps), t_stop / 1000.0);
	fflush(stdout);
	dirty_log_free(d);
	free(bm);
	bvm_destroy(&t);
	return 0;
}

/* Sync cost with n guest-dirtied pages, and the guest's write-fault cost after re-protect. */
static int bench_dirty(uint64_t size, uint32_t n, unsigned flags, bool user, bool *first)
{
	struct bvm t;
	struct dirty_log *d;
	char err[256];
	uint64_t *bm, vs[5], vw[5], vp[5], t0;
	int64_t got = 0;
	int reps = 5;

	if (bvm_create(&t, size, user))
		return -1;
	bm = calloc(dirty_bitmap_words(t.gm.nr_pages), sizeof(uint64_t));
	if (!bm || kvm_dirty_log_start(&d, t.vm, &t.gm, flags | DIRTY_START_CLEAN, err, sizeof(err))) {
		fprintf(stderr, "dirty_sync: %s\n", err);
		free(bm);
		bvm_destroy(&t);
		return -1;
	}
	bvm_store(&t, n); /* populate the mappings */
	dirty_log_sync(d, bm);
	for (int i = 0; i < reps; i++) {
		vp[i] = bvm_store(&t, n); /* pages protected: every first write faults */
		vw[i] = bvm_store(&t, n); /* same pages, already writable: the loop alone */
		t0 = now_ns();
		got = dirty_log_sync(d, bm);
		vs[i] = now_ns() - t0;
		if (got < (int64_t)n)
			fprintf(stderr, "dirty_sync: expected >= %u dirty, got %lld\n", n, (long long)got);
	}
	{
		double sync = median_us(vs, reps), prot = median_us(vp, reps), warm = median_us(vw, reps);
		printf("%s\n    {\"mem_mib\": %llu, \"mode\": \"%s\", \"guest\": \"%s\", \"dirty_pages\": "
		       "%u, \"reported\": %lld, "
		       "\"sync_us\": %.1f, \"sync_ns_per_page\": %.0f, \"guest_loop_protected_us\": %.1f, "
		       "\"guest_loop_writable_us\": %.1f, \"write_fault_us_per_page\": %.2f}",
		       sep(first), (unsigned long long)(size >> 20), dirty_log_mode(d),
		       user ? "cpl3-native" : "cpl0-emulated", n, (long long)got, sync, sync * 1000.0 / n,
		       prot, warm, (prot - warm) / n);
	}
	fflush(stdout);
	dirty_log_free(d);
	free(bm);
	bvm_destroy(&t);
	return 0;
}

int main(int argc, char **argv)
{
	static const uint64_t sizes[] = {256ull << 20, 1ull << 30, 4ull << 30};
	static const uint32_t counts[] = {100, 1000, 10000, 50000};
	static const unsigned modes[] = {0, DIRTY_FORCE_LEGACY};
	bool quick = argc > 1 && !strcmp(argv[1], "--quick"), first = true;
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	int rc = 0;

	if (fd < 0) {
		printf("{\"bench\": \"dirty_sync\", \"skipped\": \"no /dev/kvm\"}\n");
		return 0;
	}
	close(fd);
	printf("{\"bench\": \"dirty_sync\", \"idle\": [");
	for (size_t m = 0; m < 2; m++)
		for (size_t s = 0; s < 3; s++)
			for (unsigned st = 0; st < 2; st++)
				rc |= bench_idle(sizes[s], modes[m] | (st ? DIRTY_START_CLEAN : 0), &first);
	printf("\n  ], \"dirty\": [");
	first = true;
	for (int u = 1; u >= 0; u--)
		for (size_t m = 0; m < 2; m++)
			for (size_t c = 0; c < (quick ? 2 : 4); c++)
				rc |= bench_dirty(1ull << 30, counts[c], modes[m], u, &first);
	printf("\n  ]}\n");
	return rc ? 1 : 0;
}
