/* dirty.h — dirty-page tracking of a VM for snapshots, Remus epochs and migration. */
#ifndef DOPPEL_HV_DIRTY_H
#define DOPPEL_HV_DIRTY_H

#include <stddef.h>
#include <stdint.h>

#include "hv/mem.h"

/*
 * Model (KVM backend, hv/kvm/kvm_dirty.c). The VMM registered KVM memory slot i for gm->r[i]
 * (guest_phys_addr = r[i].gpa, memory_size = r[i].size, userspace_addr = r[i].host, flags 0).
 * dirty_log_start re-registers the same slots with KVM_MEM_LOG_DIRTY_PAGES; dirty_log_stop registers
 * them again with flags 0.
 *
 * Each dirty_log_sync reports, in one bitmap indexed by RAM page index (hv/mem.h), every page
 * written since the previous sync (or since start) by the guest (KVM log) or by the VMM
 * (gm->dev_dirty, which sync consumes). It re-protects exactly the pages it reports
 * (KVM_CLEAR_DIRTY_LOG when KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 is available; otherwise the legacy
 * KVM_GET_DIRTY_LOG, which clears and protects as it reads).
 *
 * Running vCPUs: sync is safe while vCPUs run (migration pre-copy). A page written after sync
 * re-protected it is reported by the next sync; a page written during the sync is reported now or
 * next time. So: copy the contents of the reported pages AFTER dirty_log_sync returns, never before.
 * For exact epoch semantics (Remus/COLO checkpoint) the caller pauses the vCPUs around sync + copy.
 *
 * One dirty_log per VM at a time (KVM tracks one log per slot). Not thread-safe: one caller thread
 * drives start/sync/stop. Several VMs in one process are fine (no globals).
 */

struct dirty_log;

/* Start flags. */
enum {
	/* Default (0): the first sync reports every RAM page — what a first full copy wants
	 * (uses KVM_DIRTY_LOG_INITIALLY_SET when the kernel has it: no up-front write-protect pass). */
	DIRTY_START_ALL = 0,
	/* The first sync reports only pages written after start (the caller copies everything itself
	 * after start, or only cares about changes). KVM write-protects all of RAM at start. */
	DIRTY_START_CLEAN = 1u << 0,
	/* Testing/bench: do not use KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 even when available. */
	DIRTY_FORCE_LEGACY = 1u << 1,
	/* This log is opportunistic (e.g. the baseline of the next incremental snapshot): a later
	 * start by another job takes it over, after which its syncs return -ECANCELED. */
	DIRTY_YIELD = 1u << 2,
};

/* Start logging on every RAM region of vm (hv/mem.h layout: page-aligned, pfn_base a multiple of 64)
 * with `flags` (DIRTY_START_ALL = 0 for the usual first full copy). A VM has one log owner at a time
 * (vm_mem(vm)->dirty_owner): starting while another log owns it fails with -EBUSY unless that one was
 * started with DIRTY_YIELD, which it then loses. VMM writes made before start (bits already in
 * gm->dev_dirty) are kept and reported by the first sync.
 * Returns 0 and *out, or -errno with a one-line reason in err (errlen may be 0); on error the VM is
 * left without logging and nothing leaks. (hv/kvm/kvm_dirty.h has the same on a raw KVM VM fd.) */
struct vm;
int dirty_log_start(struct dirty_log **out, struct vm *vm, unsigned flags, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Sync-and-clear. Overwrites `bitmap` ((gm->nr_pages + 63) / 64 words; bits past nr_pages are
 * zeroed) with the pages dirtied since the last sync (see the model above), and re-protects them in
 * 64-page-aligned chunks. Returns the number of dirty pages (>= 0) or -errno (on error the bitmap
 * content is unspecified and the pages not yet re-protected stay dirty in KVM: the caller should
 * treat the whole RAM as dirty, e.g. via dirty_bitmap_fill, or stop). */
int64_t dirty_log_sync(struct dirty_log *d, uint64_t *bitmap);

/* Sync-and-clear that leaves the dirty pages also set in `keep` (same layout as bitmap) writable:
 * they are not re-protected, so the guest rewrites them without a write fault, and every later sync
 * reports them again whether or not they were written (their KVM dirty bit stays set) until a sync
 * whose `keep` omits them. For a replication epoch this trades copying a hot page every epoch for the
 * ~3-10 us fault the guest would take on its first write to it after every re-protect. Honoured in
 * manual-protect mode only (legacy mode re-protects everything). keep NULL = dirty_log_sync. */
int64_t dirty_log_sync_keep(struct dirty_log *d, uint64_t *bitmap, const uint64_t *keep);

/* Stop logging (slots back to flags 0). Returns 0 or -errno (logging may then still be on for some
 * slots; dirty_log_free is still required). Idempotent. */
int dirty_log_stop(struct dirty_log *d);

/* Stop (if still running, ignoring errors) and free. NULL-safe. */
void dirty_log_free(struct dirty_log *d);

/* Which mechanism is in use: "manual-protect" or "legacy". */
const char *dirty_log_mode(const struct dirty_log *d);

/* Cumulative counters, for status and benches. */
struct dirty_log_stats {
	uint64_t syncs; /* successful syncs */
	uint64_t pages; /* total pages reported */
	uint64_t clear_calls; /* KVM_CLEAR_DIRTY_LOG ioctls */
	uint64_t last_ns; /* duration of the last sync */
	uint64_t max_ns;
	uint64_t total_ns;
};
void dirty_log_get_stats(const struct dirty_log *d, struct dirty_log_stats *out);

/* ---- bitmap helpers (nr bits; a bitmap has (nr + 63) / 64 words) ---- */

static inline size_t dirty_bitmap_words(uint64_t nr)
{
	return (size_t)((nr + 63) / 64);
}

/* Number of set bits among the first nr. */
uint64_t dirty_bitmap_count(const uint64_t *bm, uint64_t nr);

/* Set bits [0, nr), clear the tail of the last word. */
void dirty_bitmap_fill(uint64_t *bm, uint64_t nr);

/* Call cb(page, opaque) for every set bit < nr, ascending (ctz over words; zero words cost one load).
 * A non-zero return from cb stops the walk and is returned; otherwise returns 0. */
typedef int (*dirty_page_fn)(uint64_t page, void *opaque);
int dirty_for_each(const uint64_t *bm, uint64_t nr, dirty_page_fn cb, void *opaque);

/* Iterator form: *pos is the next index to examine (start at 0). Returns the next set bit >= *pos
 * and sets *pos past it, or UINT64_MAX when none remain.
 *   for (uint64_t pos = 0, p; (p = dirty_next(bm, nr, &pos)) != UINT64_MAX;) ... */
uint64_t dirty_next(const uint64_t *bm, uint64_t nr, uint64_t *pos);

#endif
