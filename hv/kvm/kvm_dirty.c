/* kvm_dirty.c — KVM dirty logging: per-slot bitmaps with manual re-protect (CLEAR_DIRTY_LOG). */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <linux/kvm.h>

#include "common/errf.h"
#include "hv/dirty.h"
#include "hv/kvm/kvm_dirty.h"
#include "hv/kvm/vm_priv.h"
#include "common/clock.h"

/* Re-protect at most this many pages per KVM_CLEAR_DIRTY_LOG (1 GiB of 4 KiB pages): KVM holds the
 * MMU lock for the whole ioctl, so bounded chunks keep running vCPUs' fault latency bounded. */
#define CLEAR_CHUNK_WORDS 4096
/* Zero words inside a chunk cost KVM one load each; an ioctl costs microseconds. Merge dirty runs
 * separated by fewer than this many clean words (32768 pages) into one ioctl. */
#define CLEAR_GAP_WORDS 512

struct dirty_slot {
	uint32_t slot;
	uint64_t gpa, size, npages, pfn_base;
	void *host;
	uint64_t *kbm; /* KVM's bitmap for this slot, dirty_bitmap_words(npages) words */
	bool logging;
};

struct dirty_log {
	int vm_fd;
	struct guest_mem *gm;
	int nr;
	struct dirty_slot s[MEM_MAX_REGIONS];
	bool manual; /* mode: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 + KVM_CLEAR_DIRTY_LOG */
	bool cap_on; /* we enabled that cap and have not disabled it yet */
	bool first_all; /* the next sync reports every page (DIRTY_START_ALL without INITIALLY_SET) */
	bool yield; /* DIRTY_YIELD: another start may take the log over */
	bool revoked; /* taken over (gm->dirty_lock): syncs fail with -ECANCELED, KVM untouched */
	struct dirty_log_stats st;
};

static int set_slot_flags(struct dirty_log *d, struct dirty_slot *s, uint32_t flags)
{
	struct kvm_userspace_memory_region r = {
		.slot = s->slot,
		.flags = flags,
		.guest_phys_addr = s->gpa,
		.memory_size = s->size,
		.userspace_addr = (uint64_t)(uintptr_t)s->host,
	};

	if (ioctl(d->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
		return -errno;
	s->logging = flags & KVM_MEM_LOG_DIRTY_PAGES;
	return 0;
}

static int enable_manual(int vm_fd, uint64_t args0)
{
	struct kvm_enable_cap cap = {.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, .args = {args0}};

	return ioctl(vm_fd, KVM_ENABLE_CAP, &cap) < 0 ? -errno : 0;
}

/* Slots back to flags 0; the first error is returned, later slots are still tried. */
static int stop_slots(struct dirty_log *d)
{
	int rc = 0, r;

	for (int i = 0; i < d->nr; i++) {
		if (!d->s[i].logging)
			continue;
		r = set_slot_flags(d, &d->s[i], 0);
		if (r && !rc)
			rc = r;
	}
	return rc;
}

static void free_slots(struct dirty_log *d)
{
	for (int i = 0; i < d->nr; i++)
		free(d->s[i].kbm);
}

int kvm_dirty_log_start(struct dirty_log **out, int vm_fd, struct guest_mem *gm, unsigned flags, char *err,
			size_t errlen)
{
	bool want_all = !(flags & DIRTY_START_CLEAN);
	struct dirty_log *d;
	int rc, caps = 0;

	if (!out || vm_fd < 0 || !gm) {
		errf(err, errlen, 0, "dirty_log_start: invalid argument (out/vm_fd/gm)");
		return -EINVAL;
	}
	*out = NULL;
	if (flags & ~(unsigned)(DIRTY_START_CLEAN | DIRTY_FORCE_LEGACY | DIRTY_YIELD)) {
		errf(err, errlen, 0, "dirty_log_start: unknown flags %#x", flags);
		return -EINVAL;
	}
	if (gm->nr < 1 || gm->nr > MEM_MAX_REGIONS || !gm->dev_dirty || !gm->nr_pages) {
		errf(err, errlen, 0, "dirty_log_start: guest memory not initialised");
		return -EINVAL;
	}
	for (int i = 0; i < gm->nr; i++) {
		const struct mem_region *r = &gm->r[i];
		if (!r->size || (r->size | r->gpa) % GUEST_PAGE_SIZE || r->pfn_base % 64 ||
		    r->pfn_base + (r->size >> GUEST_PAGE_SHIFT) > gm->nr_pages || !r->host) {
			errf(err, errlen, 0,
			     "dirty_log_start: region %d (gpa %#llx size %#llx) not 64-page aligned", i,
			     (unsigned long long)r->gpa, (unsigned long long)r->size);
			return -EINVAL;
		}
	}
	pthread_mutex_lock(&gm->dirty_lock);
	struct dirty_log *cur = gm->dirty_owner;
	if (cur && !cur->yield) {
		pthread_mutex_unlock(&gm->dirty_lock);
		errf(err, errlen, 0,
		     "dirty logging of this VM is in use by another job (replication or migration)");
		return -EBUSY;
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		pthread_mutex_unlock(&gm->dirty_lock);
		errf(err, errlen, 0, "dirty_log_start: out of memory");
		return -ENOMEM;
	}
	if (cur) {
		/* Take the log over: stop it for real (so this start's initial state — every page
		 * dirty for DIRTY_START_ALL — applies), then the previous owner's syncs fail and it
		 * leaves KVM alone. */
		stop_slots(cur);
		if (cur->cap_on)
			enable_manual(cur->vm_fd, 0);
		cur->revoked = true;
		cur->cap_on = false;
		for (int i = 0; i < cur->nr; i++)
			cur->s[i].logging = false;
		gm->dirty_owner = NULL;
	}
	d->yield = flags & DIRTY_YIELD;
	d->vm_fd = vm_fd;
	d->gm = gm;
	d->nr = gm->nr;
	for (int i = 0; i < gm->nr; i++) {
		struct dirty_slot *s = &d->s[i];
		s->slot = (uint32_t)i;
		s->gpa = gm->r[i].gpa;
		s->size = gm->r[i].size;
		s->npages = s->size >> GUEST_PAGE_SHIFT;
		s->pfn_base = gm->r[i].pfn_base;
		s->host = gm->r[i].host;
		s->kbm = calloc(dirty_bitmap_words(s->npages), sizeof(uint64_t));
		if (!s->kbm) {
			errf(err, errlen, 0, "dirty_log_start: out of memory");
			rc = -ENOMEM;
			goto err;
		}
	}

	if (!(flags & DIRTY_FORCE_LEGACY))
		caps = ioctl(vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
	if (caps > 0 && (caps & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE)) {
		uint64_t a = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE;
		if (want_all && (caps & KVM_DIRTY_LOG_INITIALLY_SET))
			a |= KVM_DIRTY_LOG_INITIALLY_SET;
		rc = enable_manual(vm_fd, a);
		if (rc) {
			errf(err, errlen, 0, "dirty_log_start: KVM_ENABLE_CAP(MANUAL_DIRTY_LOG_PROTECT2): %s",
			     strerror(-rc));
			goto err;
		}
		d->manual = d->cap_on = true;
		d->first_all = want_all && !(a & KVM_DIRTY_LOG_INITIALLY_SET);
	} else {
		d->first_all = want_all;
	}

	for (int i = 0; i < d->nr; i++) {
		rc = set_slot_flags(d, &d->s[i], KVM_MEM_LOG_DIRTY_PAGES);
		if (rc) {
			errf(err, errlen, 0,
			     "dirty_log_start: KVM_SET_USER_MEMORY_REGION(slot %d, LOG_DIRTY_PAGES): %s", i,
			     strerror(-rc));
			goto err;
		}
	}
	gm->dirty_owner = d;
	pthread_mutex_unlock(&gm->dirty_lock);
	*out = d;
	return 0;
err:
	stop_slots(d);
	if (d->cap_on)
		enable_manual(vm_fd, 0);
	free_slots(d);
	free(d);
	pthread_mutex_unlock(&gm->dirty_lock);
	return rc;
}

int dirty_log_start(struct dirty_log **out, struct vm *vm, unsigned flags, char *err, size_t errlen)
{
	if (!vm) {
		if (out)
			*out = NULL;
		return errf(err, errlen, -EINVAL, "dirty_log_start: no VM");
	}
	return kvm_dirty_log_start(out, vm->vm_fd, &vm->mem, flags, err, errlen);
}

/* Re-protect the pages set in s->kbm, in 64-page-aligned chunks of at most CLEAR_CHUNK_WORDS words.
 * KVM rules: first_page % 64 == 0, and num_pages % 64 == 0 unless the range ends at the slot end. */
static int clear_slot(struct dirty_log *d, struct dirty_slot *s)
{
	size_t words = dirty_bitmap_words(s->npages);
	size_t w = 0;

	while (w < words) {
		size_t start, last, end;
		struct kvm_clear_dirty_log c;
		uint64_t first_page, end_page;

		while (w < words && !s->kbm[w])
			w++;
		if (w == words)
			break;
		start = last = w;
		for (end = w + 1; end < words && end - start < CLEAR_CHUNK_WORDS; end++) {
			if (s->kbm[end])
				last = end;
			else if (end - last >= CLEAR_GAP_WORDS)
				break;
		}
		first_page = (uint64_t)start * 64;
		end_page = (uint64_t)(last + 1) * 64;
		if (end_page > s->npages)
			end_page = s->npages;
		memset(&c, 0, sizeof(c));
		c.slot = s->slot;
		c.first_page = first_page;
		c.num_pages = (uint32_t)(end_page - first_page);
		c.dirty_bitmap = &s->kbm[start];
		if (ioctl(d->vm_fd, KVM_CLEAR_DIRTY_LOG, &c) < 0)
			return -errno;
		d->st.clear_calls++;
		w = last + 1;
	}
	return 0;
}

int64_t dirty_log_sync(struct dirty_log *d, uint64_t *bitmap)
{
	return dirty_log_sync_keep(d, bitmap, NULL);
}

static int64_t sync_locked(struct dirty_log *d, uint64_t *bitmap, const uint64_t *keep);

int64_t dirty_log_sync_keep(struct dirty_log *d, uint64_t *bitmap, const uint64_t *keep)
{
	int64_t n;

	if (!d || !bitmap)
		return -EINVAL;
	pthread_mutex_lock(&d->gm->dirty_lock);
	n = d->revoked ? -ECANCELED : sync_locked(d, bitmap, keep);
	pthread_mutex_unlock(&d->gm->dirty_lock);
	return n;
}

static int64_t sync_locked(struct dirty_log *d, uint64_t *bitmap, const uint64_t *keep)
{
	uint64_t t0 = now_ns(), n, dt;
	size_t words;

	for (int i = 0; i < d->nr; i++)
		if (!d->s[i].logging)
			return -ENOENT;
	words = dirty_bitmap_words(d->gm->nr_pages);
	memset(bitmap, 0, words * sizeof(uint64_t));
	for (int i = 0; i < d->nr; i++) {
		struct dirty_slot *s = &d->s[i];
		struct kvm_dirty_log log;
		size_t sw = dirty_bitmap_words(s->npages);
		uint64_t *dst = bitmap + s->pfn_base / 64;
		int rc;

		memset(&log, 0, sizeof(log));
		log.slot = s->slot;
		log.dirty_bitmap = s->kbm;
		if (ioctl(d->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0)
			return -errno;
		for (size_t w = 0; w < sw; w++)
			dst[w] |= s->kbm[w];
		if (d->manual) {
			/* Pages the caller keeps stay writable and keep their dirty bit: reported again
			 * by every sync, with no write fault in between. */
			if (keep)
				for (size_t w = 0; w < sw; w++)
					s->kbm[w] &= ~keep[s->pfn_base / 64 + w];
			rc = clear_slot(d, s);
			if (rc)
				return rc;
		}
	}
	if (d->first_all) {
		dirty_bitmap_fill(bitmap, d->gm->nr_pages);
		d->first_all = false;
	}
	mem_dev_dirty_take(d->gm, bitmap);
	if (d->gm->nr_pages % 64)
		bitmap[words - 1] &= (1ull << (d->gm->nr_pages % 64)) - 1;
	n = dirty_bitmap_count(bitmap, d->gm->nr_pages);
	dt = now_ns() - t0;
	d->st.syncs++;
	d->st.pages += n;
	d->st.last_ns = dt;
	d->st.total_ns += dt;
	if (dt > d->st.max_ns)
		d->st.max_ns = dt;
	return (int64_t)n;
}

int dirty_log_stop(struct dirty_log *d)
{
	int rc = 0;

	if (!d)
		return -EINVAL;
	pthread_mutex_lock(&d->gm->dirty_lock);
	if (!d->revoked) {
		rc = stop_slots(d);
		if (!rc && d->cap_on) {
			/* Leave the VM as we found it; harmless if it fails (no slot logs any more). */
			enable_manual(d->vm_fd, 0);
			d->cap_on = false;
		}
		if (!rc && d->gm->dirty_owner == d)
			d->gm->dirty_owner = NULL;
	}
	pthread_mutex_unlock(&d->gm->dirty_lock);
	return rc;
}

void dirty_log_free(struct dirty_log *d)
{
	if (!d)
		return;
	dirty_log_stop(d);
	pthread_mutex_lock(&d->gm->dirty_lock);
	if (d->gm->dirty_owner == d) /* a stop that failed: nobody may use this log any more */
		d->gm->dirty_owner = NULL;
	pthread_mutex_unlock(&d->gm->dirty_lock);
	free_slots(d);
	free(d);
}

const char *dirty_log_mode(const struct dirty_log *d)
{
	return d && d->manual ? "manual-protect" : "legacy";
}

void dirty_log_get_stats(const struct dirty_log *d, struct dirty_log_stats *out)
{
	if (!out)
		return;
	if (!d) {
		memset(out, 0, sizeof(*out));
		return;
	}
	*out = d->st;
}
