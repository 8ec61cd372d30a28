/* snapshot.h — full and incremental snapshots of a VM to a file, and restore into a fresh VM. */
#ifndef DOPPEL_REPLICATION_SNAPSHOT_H
#define DOPPEL_REPLICATION_SNAPSHOT_H

#include <stdbool.h>
#include <stdint.h>

#include "hv/hv.h"
#include "replication/checkpoint.h"
#include "replication/ckpt_engine.h"
#include "replication/stream.h"

/* Per-VM snapshot state: the id of the last snapshot and the dirty log that makes the next
 * incremental one possible. No globals: one per VM. */
struct snap {
	struct ckpt_engine eng; /* its dirty log runs since the last snapshot, or is NULL */
	bool eng_ready;
	uint64_t last_id;
	uint64_t last_epoch;
	char last_path[256];
	struct ckpt_progress progress; /* of the snapshot being written (pages) */
};

struct snap_result {
	uint64_t id, epoch, pages, zero_pages, bytes, pause_ns, write_ns;
	bool incremental;
};

/*
 * Write a snapshot of `vm` to `path`: pause, write header + one epoch (every page, or with
 * `incremental_from` only pages dirtied since that snapshot — which must be the last one this VM
 * process took) + CHECKPOINT_END + END, fsync, rename into place (a failed write never leaves a
 * partial file at `path`), then release its pause hold unless `stop` (the VM is then left paused
 * for the caller to stop); a VM paused by someone else stays paused (holds nest, see vm_pause).
 * Returns 0 or -errno with one line in err; on error the hold is released.
 */
int snap_take(struct snap *s, struct vm *vm, const char *path, const char *incremental_from, bool stop,
	      int nthreads, struct snap_result *res, char *err, size_t errlen);
void snap_free(struct snap *s);

/* Read the header of a snapshot file (for --restore without --mem/--vcpus). */
int snap_read_header(const char *path, struct sr_header *h, char *err, size_t errlen);

/* Restore `path` (and, for an incremental snapshot, its chain of bases, found by the path recorded
 * in each and checked by id) into `vm`, which has not run. Everything is validated; on error the VM
 * must be discarded. Returns 0 or -errno with err. */
int snap_restore(struct vm *vm, const char *path, char *err, size_t errlen);

/* Plug the "snapshot" control command (worker thread, deferred reply, progress in status, --stop)
 * into a VM process (replication/snapshot_cmd.c). Before vmm_run. 0 or -errno. */
struct vmm;
int snapshot_setup(struct vmm *v);

#endif
