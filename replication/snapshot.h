/* snapshot.h — full and incremental snapshots of a VM to a file, and restore into a fresh VM. */
#ifndef DOPPEL_REPLICATION_SNAPSHOT_H
#define DOPPEL_REPLICATION_SNAPSHOT_H

#include <stdbool.h>
#include <stdint.h>

#include "hv/hv.h"
#include "replication/checkpoint.h"
#include "replication/ckpt_engine.h"
#include "replication/disk_repl.h"
#include "replication/stream.h"

struct vmm;

/* Per-VM snapshot state: the id of the last snapshot and the dirty log that makes the next
 * incremental one possible. No globals: one per VM. */
struct snap {
	struct ckpt_engine eng; /* its dirty log runs since the last snapshot, or is NULL */
	/* the VM's disks (snap_set_disks): each snapshot records their identity (DISK_INFO) and either
	 * carries their blocks (with_disks: all, or for an incremental snapshot those written since its
	 * base) or clones every image next to it, "<path>.diskN" (FICLONE, else a copy), at the paused
	 * point */
	struct disk_repl disks;
	bool disks_ready;
	bool with_disks; /* set before snap_take */
	bool last_with_disks;
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
/* The disks snapshots carry (once, before the first snap_take). 0 or -errno. */
int snap_set_disks(struct snap *s, struct virtio_blk *const *devs, int n);

/* Read the header of a snapshot file (for --restore without --mem/--vcpus). */
int snap_read_header(const char *path, struct sr_header *h, char *err, size_t errlen);

/* Restore `path` (and, for an incremental snapshot, its chain of bases, found by the path recorded
 * in each and checked by id) into `vm`, which has not run. Everything is validated; on error the VM
 * must be discarded. Returns 0 or -errno with err. */
int snap_restore(struct vm *vm, const char *path, char *err, size_t errlen);
/* The same for a VM with disks: each disk must match the snapshot's (size, id, read-only); a
 * snapshot that cloned its disks needs the clone (same content, by hash), one that carries them has
 * its blocks written into the disks. A disk on one side only is refused. */
int snap_restore_disks(struct vm *vm, struct virtio_blk *const *disks, int nr_disk, const char *path,
		       char *err, size_t errlen);
/* vmm_opts.restore_fn of doppel run: snap_restore_disks with the VM's --disk devices. */
int snapshot_restore(struct vmm *v, const char *path, char *err, size_t errlen);

/* Plug the "snapshot" control command (worker thread, deferred reply, progress in status, --stop)
 * into a VM process (replication/snapshot_cmd.c). Before vmm_run. 0 or -errno. */
struct vmm;
int snapshot_setup(struct vmm *v);

#endif
