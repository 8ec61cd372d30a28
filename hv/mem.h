/* mem.h — guest-physical memory: the one bounds-checked accessor and the device-dirty bitmap. */
#ifndef DOPPEL_HV_MEM_H
#define DOPPEL_HV_MEM_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GUEST_PAGE_SHIFT 12
#define GUEST_PAGE_SIZE (1ull << GUEST_PAGE_SHIFT)

/* RAM is [0, min(size, MEM_LOW_LIMIT)) and, above that, [4 GiB, 4 GiB + rest): the 3..4 GiB hole
 * holds MMIO (virtio-mmio at 0xfeb00000, as QEMU microvm places it). */
#define MEM_LOW_LIMIT 0xc0000000ull
#define MEM_HIGH_BASE 0x100000000ull
#define MEM_MAX_REGIONS 2

struct mem_region {
	uint64_t gpa; /* first guest-physical address */
	uint64_t size; /* bytes, page multiple */
	uint8_t *host; /* host mapping of the region */
	uint64_t fd_off; /* offset of the region in the memfd */
	uint64_t pfn_base; /* index of the region's first page among all RAM pages */
};

/* All guest RAM, backed by one memfd. Independent of KVM so tests can build one over a plain buffer. */
struct guest_mem {
	struct mem_region r[MEM_MAX_REGIONS];
	int nr;
	uint64_t size; /* total RAM bytes */
	uint64_t nr_pages; /* size / GUEST_PAGE_SIZE */
	int memfd; /* -1 when built over a plain buffer */
	uint64_t *dev_dirty; /* bitmap, one bit per RAM page index, set by VMM writes (atomic) */
	/* KVM keeps one dirty log per memory slot, so one tracker at a time owns it (hv/kvm/kvm_dirty.c). */
	pthread_mutex_t dirty_lock;
	void *dirty_owner; /* the struct dirty_log that owns the log, or NULL */
};

/* Create RAM of `size` bytes (page multiple, > 0) in a fresh memfd and map it.
 * Returns 0 or -errno; on error *gm is left empty and nothing leaks. */
int mem_create(struct guest_mem *gm, uint64_t size);

/* Lay out a guest_mem over a caller-owned buffer of `size` bytes (tests, fuzzers). No memfd. */
int mem_init_buffer(struct guest_mem *gm, void *buf, uint64_t size);

/* Unmap and close; safe on a zeroed or already-destroyed guest_mem. */
void mem_destroy(struct guest_mem *gm);

/* THE bounds check. Host pointer for [gpa, gpa+len) if that whole range is guest RAM inside a single
 * region (len may be 0), else NULL. Overflow-safe. Every guest-physical access goes through this. */
void *gpa_ptr(const struct guest_mem *gm, uint64_t gpa, uint64_t len);

/* Convenience: typed checked pointer, NULL when out of bounds. */
#define GPA_PTR(gm, gpa, type) ((type *)gpa_ptr((gm), (gpa), sizeof(type)))

/* Copy out of / into guest memory. Return 0, or -EFAULT when the range is not RAM (nothing copied).
 * mem_write marks every touched page in the device-dirty bitmap. */
int mem_read(const struct guest_mem *gm, uint64_t gpa, void *dst, uint64_t len);
int mem_write(struct guest_mem *gm, uint64_t gpa, const void *src, uint64_t len);

/* Mark [gpa, gpa+len) device-dirty (for VMM code that writes through a gpa_ptr pointer). Thread-safe.
 * Ranges outside RAM are ignored. */
void mem_mark_dirty(struct guest_mem *gm, uint64_t gpa, uint64_t len);

/* Zero [gpa, gpa+len) (inside one RAM region) and mark it device-dirty. Whole pages of a memfd are
 * punched out rather than written, so zeroing never-touched RAM (an ELF's bss) allocates nothing. */
void mem_zero(struct guest_mem *gm, uint64_t gpa, uint64_t len);

/* RAM page index <-> guest-physical address. page_index returns UINT64_MAX for non-RAM. */
uint64_t mem_page_index(const struct guest_mem *gm, uint64_t gpa);
uint64_t mem_page_gpa(const struct guest_mem *gm, uint64_t page_index);
void *mem_page_host(const struct guest_mem *gm, uint64_t page_index);

/* Walk RAM as extents of page indices, in ascending order, each inside one region: data extents of
 * the memfd (is_data) and holes (never written: they read as zero without being read). Start with
 * *pos = 0; each call returns 1 with the next extent [*first, *first + *count) and moves *pos past
 * it, or 0 when all nr_pages pages were covered. Every page is in exactly one extent. RAM built over
 * a plain buffer (no memfd) is one data extent per region. Uses SEEK_DATA / SEEK_HOLE; an lseek
 * failure reports the rest of the region as data (correct, only slower). */
int mem_extent_next(const struct guest_mem *gm, uint64_t *pos, uint64_t *first, uint64_t *count,
		    bool *is_data);

/* Drop the contents of RAM pages [first, first + count) (clipped to RAM): the memfd gets a hole there
 * (reads as zero; with a userfaultfd registered, the next access is a missing-page fault). Only for
 * a VM that does not run, or whose faults are served (post-copy). 0 or -errno. */
int mem_discard(struct guest_mem *gm, uint64_t first, uint64_t count);

/* Unmap RAM pages [first, first + count) (clipped to RAM) from the VMM's mapping only (MADV_DONTNEED):
 * the memfd keeps their contents, the next access maps them again (or, with a userfaultfd registered
 * in minor mode, faults MINOR). Nothing is freed or allocated: the cheap way to make pages fault.
 * memfd-backed RAM only (-EOPNOTSUPP otherwise). 0 or -errno. */
int mem_zap(struct guest_mem *gm, uint64_t first, uint64_t count);

/* Atomically take the device-dirty bitmap: OR it into `out` (nr_pages bits) and clear it. */
void mem_dev_dirty_take(struct guest_mem *gm, uint64_t *out);

#endif
