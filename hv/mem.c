/* mem.c — guest RAM in a memfd, the bounds-checked accessor, and the device-dirty bitmap. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hv/mem.h"

static void layout(struct guest_mem *gm, uint64_t size)
{
	uint64_t low = size < MEM_LOW_LIMIT ? size : MEM_LOW_LIMIT;

	gm->nr = 0;
	gm->r[gm->nr++] = (struct mem_region){.gpa = 0, .size = low, .fd_off = 0, .pfn_base = 0};
	if (size > low)
		gm->r[gm->nr++] = (struct mem_region){.gpa = MEM_HIGH_BASE,
						      .size = size - low,
						      .fd_off = low,
						      .pfn_base = low >> GUEST_PAGE_SHIFT};
	gm->size = size;
	gm->nr_pages = size >> GUEST_PAGE_SHIFT;
}

static int alloc_bitmap(struct guest_mem *gm)
{
	gm->dev_dirty = calloc((gm->nr_pages + 63) / 64, sizeof(uint64_t));
	return gm->dev_dirty ? 0 : -ENOMEM;
}

int mem_create(struct guest_mem *gm, uint64_t size)
{
	int rc;

	memset(gm, 0, sizeof(*gm));
	gm->memfd = -1;
	pthread_mutex_init(&gm->dirty_lock, NULL);
	if (size == 0 || size % GUEST_PAGE_SIZE)
		return -EINVAL;
	layout(gm, size);
	gm->memfd = memfd_create("doppel-ram", MFD_CLOEXEC);
	if (gm->memfd < 0) {
		rc = -errno;
		goto err;
	}
	if (ftruncate(gm->memfd, (off_t)size) < 0) {
		rc = -errno;
		goto err;
	}
	for (int i = 0; i < gm->nr; i++) {
		void *p = mmap(NULL, gm->r[i].size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
			       gm->memfd, (off_t)gm->r[i].fd_off);
		if (p == MAP_FAILED) {
			rc = -errno;
			goto err;
		}
		gm->r[i].host = p;
		madvise(p, gm->r[i].size, MADV_HUGEPAGE);
	}
	rc = alloc_bitmap(gm);
	if (rc)
		goto err;
	return 0;
err:
	mem_destroy(gm);
	return rc;
}

int mem_init_buffer(struct guest_mem *gm, void *buf, uint64_t size)
{
	memset(gm, 0, sizeof(*gm));
	gm->memfd = -1;
	pthread_mutex_init(&gm->dirty_lock, NULL);
	if (size == 0 || size % GUEST_PAGE_SIZE || !buf)
		return -EINVAL;
	layout(gm, size);
	for (int i = 0; i < gm->nr; i++)
		gm->r[i].host = (uint8_t *)buf + gm->r[i].fd_off;
	if (alloc_bitmap(gm)) {
		memset(gm, 0, sizeof(*gm));
		gm->memfd = -1;
		pthread_mutex_init(&gm->dirty_lock, NULL);
		return -ENOMEM;
	}
	return 0;
}

void mem_destroy(struct guest_mem *gm)
{
	if (gm->memfd >= 0 && gm->nr > 0) {
		for (int i = 0; i < gm->nr; i++)
			if (gm->r[i].host)
				munmap(gm->r[i].host, gm->r[i].size);
		close(gm->memfd);
	}
	free(gm->dev_dirty);
	pthread_mutex_destroy(&gm->dirty_lock);
	memset(gm, 0, sizeof(*gm));
	gm->memfd = -1;
	pthread_mutex_init(&gm->dirty_lock, NULL);
}

static const struct mem_region *find(const struct guest_mem *gm, uint64_t gpa, uint64_t len)
{
	for (int i = 0; i < gm->nr; i++) {
		const struct mem_region *r = &gm->r[i];
		if (gpa >= r->gpa && gpa - r->gpa <= r->size && len <= r->size - (gpa - r->gpa))
			return r;
	}
	return NULL;
}

void *gpa_ptr(const struct guest_mem *gm, uint64_t gpa, uint64_t len)
{
	const struct mem_region *r = find(gm, gpa, len);

	/* gpa == end with len 0 is "inside"; callers never dereference a zero-length pointer. */
	return r ? r->host + (gpa - r->gpa) : NULL;
}

int mem_read(const struct guest_mem *gm, uint64_t gpa, void *dst, uint64_t len)
{
	void *p = gpa_ptr(gm, gpa, len);

	if (!p)
		return -EFAULT;
	if (len)
		memcpy(dst, p, len);
	return 0;
}

int mem_write(struct guest_mem *gm, uint64_t gpa, const void *src, uint64_t len)
{
	void *p = gpa_ptr(gm, gpa, len);

	if (!p)
		return -EFAULT;
	if (len)
		memcpy(p, src, len);
	mem_mark_dirty(gm, gpa, len);
	return 0;
}

void mem_mark_dirty(struct guest_mem *gm, uint64_t gpa, uint64_t len)
{
	const struct mem_region *r;
	uint64_t first, last;

	if (len == 0 || !gm->dev_dirty || !(r = find(gm, gpa, len)))
		return;
	first = r->pfn_base + ((gpa - r->gpa) >> GUEST_PAGE_SHIFT);
	last = r->pfn_base + ((gpa - r->gpa + len - 1) >> GUEST_PAGE_SHIFT);
	for (uint64_t i = first; i <= last; i++)
		__atomic_fetch_or(&gm->dev_dirty[i / 64], 1ull << (i % 64), __ATOMIC_RELAXED);
}

uint64_t mem_page_index(const struct guest_mem *gm, uint64_t gpa)
{
	for (int i = 0; i < gm->nr; i++) {
		const struct mem_region *r = &gm->r[i];
		if (gpa >= r->gpa && gpa - r->gpa < r->size)
			return r->pfn_base + ((gpa - r->gpa) >> GUEST_PAGE_SHIFT);
	}
	return UINT64_MAX;
}

uint64_t mem_page_gpa(const struct guest_mem *gm, uint64_t idx)
{
	for (int i = 0; i < gm->nr; i++) {
		const struct mem_region *r = &gm->r[i];
		uint64_t n = r->size >> GUEST_PAGE_SHIFT;
		if (idx >= r->pfn_base && idx < r->pfn_base + n)
			return r->gpa + ((idx - r->pfn_base) << GUEST_PAGE_SHIFT);
	}
	return UINT64_MAX;
}

void *mem_page_host(const struct guest_mem *gm, uint64_t idx)
{
	uint64_t gpa = mem_page_gpa(gm, idx);

	return gpa == UINT64_MAX ? NULL : gpa_ptr(gm, gpa, GUEST_PAGE_SIZE);
}

void mem_dev_dirty_take(struct guest_mem *gm, uint64_t *out)
{
	uint64_t words = (gm->nr_pages + 63) / 64;

	for (uint64_t w = 0; w < words; w++) {
		if (!__atomic_load_n(&gm->dev_dirty[w], __ATOMIC_RELAXED))
			continue;
		out[w] |= __atomic_exchange_n(&gm->dev_dirty[w], 0, __ATOMIC_ACQ_REL);
	}
}

int mem_extent_next(const struct guest_mem *gm, uint64_t *pos, uint64_t *first, uint64_t *count,
		    bool *is_data)
{
	const struct mem_region *r = NULL;

	for (int i = 0; i < gm->nr; i++)
		if (*pos >= gm->r[i].pfn_base &&
		    *pos < gm->r[i].pfn_base + (gm->r[i].size >> GUEST_PAGE_SHIFT))
			r = &gm->r[i];
	if (!r)
		return 0;
	uint64_t np = r->size >> GUEST_PAGE_SHIFT, p = *pos - r->pfn_base, d = p, h = np;
	if (gm->memfd >= 0) {
		/* Data extent [d, h) of the memfd; everything in [p, d) is a hole. */
		off_t o = lseek(gm->memfd, (off_t)(r->fd_off + (p << GUEST_PAGE_SHIFT)), SEEK_DATA);
		if (o < 0 && errno != ENXIO)
			d = p; /* cannot tell: treat as data */
		else if (o < 0 || (uint64_t)o >= r->fd_off + r->size)
			d = np;
		else
			d = ((uint64_t)o - r->fd_off) >> GUEST_PAGE_SHIFT;
		if (d < np) {
			o = lseek(gm->memfd, (off_t)(r->fd_off + (d << GUEST_PAGE_SHIFT)), SEEK_HOLE);
			h = (o < 0 || (uint64_t)o >= r->fd_off + r->size)
				    ? np
				    : ((uint64_t)o - r->fd_off + GUEST_PAGE_SIZE - 1) >> GUEST_PAGE_SHIFT;
			if (h <= d)
				h = d + 1;
		}
	}
	if (d > p) {
		*first = r->pfn_base + p;
		*count = d - p;
		*is_data = false;
	} else {
		*first = r->pfn_base + d;
		*count = h - d;
		*is_data = true;
	}
	*pos = *first + *count;
	return 1;
}

/* The part of pages [first, first + count) inside region r, as a byte offset and length into it;
 * false when they do not meet. */
static bool region_part(const struct mem_region *r, uint64_t first, uint64_t count, uint64_t *off,
			uint64_t *len)
{
	uint64_t np = r->size >> GUEST_PAGE_SHIFT, a = first, b = first + count;

	if (a < r->pfn_base)
		a = r->pfn_base;
	if (b > r->pfn_base + np)
		b = r->pfn_base + np;
	if (a >= b)
		return false;
	*off = (a - r->pfn_base) << GUEST_PAGE_SHIFT;
	*len = (b - a) << GUEST_PAGE_SHIFT;
	return true;
}

int mem_discard(struct guest_mem *gm, uint64_t first, uint64_t count)
{
	for (int i = 0; i < gm->nr && count; i++) {
		const struct mem_region *r = &gm->r[i];
		uint64_t off, len;
		if (!region_part(r, first, count, &off, &len))
			continue;
		if (gm->memfd >= 0) {
			if (fallocate(gm->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				      (off_t)(r->fd_off + off), (off_t)len) < 0)
				return -errno;
		} else {
			memset(r->host + off, 0, len);
		}
	}
	return 0;
}

int mem_zap(struct guest_mem *gm, uint64_t first, uint64_t count)
{
	if (gm->memfd < 0)
		return -EOPNOTSUPP;
	for (int i = 0; i < gm->nr && count; i++) {
		const struct mem_region *r = &gm->r[i];
		uint64_t off, len;
		if (region_part(r, first, count, &off, &len) &&
		    madvise(r->host + off, len, MADV_DONTNEED) < 0)
			return -errno;
	}
	return 0;
}

void mem_zero(struct guest_mem *gm, uint64_t gpa, uint64_t len)
{
	uint8_t *p = gpa_ptr(gm, gpa, len);
	uint64_t a = (gpa + GUEST_PAGE_SIZE - 1) & ~(GUEST_PAGE_SIZE - 1),
		 b = (gpa + len) & ~(GUEST_PAGE_SIZE - 1);
	uint64_t idx = mem_page_index(gm, a);
	off_t off;

	if (!p || !len)
		return;
	if (gm->memfd >= 0 && a < b && idx != UINT64_MAX) {
		off = (off_t)(idx << GUEST_PAGE_SHIFT);
		if (fallocate(gm->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, (off_t)(b - a)) ==
		    0) {
			memset(p, 0, a - gpa);
			memset(p + (b - gpa), 0, gpa + len - b);
			mem_mark_dirty(gm, gpa, len);
			return;
		}
	}
	memset(p, 0, len);
	mem_mark_dirty(gm, gpa, len);
}
