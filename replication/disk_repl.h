/* disk_repl.h — disks in the checkpoint stream: the primary's write log, the initial sync by block
 * checksums, the receiver's staged writes (docs/disk.md, docs/stream.md DISK_WRITE / DISK_INFO). */
#ifndef DOPPEL_REPLICATION_DISK_REPL_H
#define DOPPEL_REPLICATION_DISK_REPL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hv/dev/virtio_blk.h"
#include "replication/stream.h"

/*
 * Primary (struct disk_repl, one per VM, driven by the checkpoint engine):
 *
 *   start  -> mode SYNC: completed writes only mark 64 KiB blocks dirty (a bitmap per disk)
 *   sync   -> the sender compares every block's xxh64 with the standby's and sends the differing
 *             ones (DISK_WRITE, all-zero blocks as write-zeroes), in epochs of <= 32 MiB
 *   final  -> mode LOG, then the blocks dirtied during the sync are read and sent
 *   epochs -> every completed write (inside the DMA-gate bracket) is appended to the active log
 *             with its data; the epoch's pause freezes it (a pointer swap, no allocation) and its
 *             DISK_WRITE records go out before that epoch's CHECKPOINT_END
 *   stop   -> the log is removed from the devices and writes it held are re-run
 *
 * The log is bounded (DISK_LOG_MAX bytes of data per epoch): past 3/4 it asks for an early epoch
 * (the pressure callback, as netbuf does), when full it refuses, and the device holds that
 * completion until the next epoch's resume re-runs it, so the guest waits instead of the log
 * growing.
 */

#define DISK_BLOCK (64u << 10) /* checksum and sync granularity */
#define DISK_LOG_MAX (32u << 20) /* bytes of write data per epoch (all disks of a VM) */
#define DISK_SYNC_EPOCH (32u << 20) /* initial sync: bytes per epoch */
#define DISK_STAGE_MAX (256u << 20) /* receiver: bytes of write data staged per epoch */
#define DISK_LOG_OPS_MAX (1u << 18) /* operations per epoch in the log (discards carry no data) */
#define DISK_STAGE_OPS_MAX (1u << 20) /* receiver: operations staged per epoch */
#define DISK_MAX 8 /* disks per VM */

/* One logged or staged operation; data (OP_WRITE) at buf->data + off. */
struct disk_op {
	uint32_t disk, op; /* enum sr_disk_op */
	uint64_t sector, nr_sectors;
	size_t off;
};

struct disk_buf {
	struct disk_op *ops;
	size_t nops, opcap;
	uint8_t *data;
	size_t len, cap;
};

/* Write every op of b as DISK_WRITE records. 0 or the stream's -errno. NULL b: nothing. */
int disk_buf_write(struct sr_ctx *w, const struct disk_buf *b);
void disk_buf_free(struct disk_buf *b);

enum disk_mode { DISK_OFF, DISK_SYNC, DISK_LOG };

struct disk_repl_stats {
	uint64_t logged_writes, logged_bytes, refused; /* LOG mode */
	uint64_t sync_blocks, sync_done, sync_sent; /* blocks to compare, compared, sent */
	uint64_t final_sent; /* blocks re-sent after the sync */
	uint64_t log_bytes; /* in the active log now */
	uint64_t sent_bytes; /* bytes of blocks sent by the sync, rounds and epochs (all-zero ones too) */
	uint64_t round_blocks; /* blocks sent by disk_repl_round (migration's pre-copy rounds) */
	int mode;
};

struct disk_repl;
struct disk_repl_port { /* the write log's opaque for one device */
	struct disk_repl *dr;
	int disk;
};

/* Write-log buffers: the one filling, the one frozen at the last pause and waiting for the sender
 * (Remus's pipeline captures epoch k+1 while it sends k), the one being sent. */
#define DISK_NBUF 3

struct disk_repl {
	int nr;
	struct virtio_blk *dev[DISK_MAX];
	struct disk_repl_port port[DISK_MAX];
	uint64_t nblocks[DISK_MAX];
	pthread_mutex_t lock; /* mode, the logs, the bitmaps, stats; taken under a device lock */
	int mode;
	struct disk_buf buf[DISK_NBUF];
	int active;
	uint64_t *dirty[DISK_MAX]; /* SYNC mode: blocks written */
	void (*pressure)(void *opaque);
	void *opaque;
	bool pressured;
	/* the standby's checksums (sums_add, loop thread), read by the sender after sums_ready */
	uint64_t *sums[DISK_MAX];
	uint64_t nsums[DISK_MAX], sum_fill[DISK_MAX];
	int sum_disk;
	/* the sync keeps a live connection alive: an optional record (type hb_rec, body u64 now_ns())
	 * whenever nothing was written for hb_ns (0: never) */
	uint64_t hb_ns;
	uint32_t hb_rec;
	struct disk_repl_stats st;
};

/* Set up for devs[0..n) (n <= DISK_MAX). pressure(opaque) may be called from any thread, with a
 * device lock held: only signal. 0 or -ENOMEM / -EINVAL. */
int disk_repl_init(struct disk_repl *dr, struct virtio_blk *const *devs, int n, void (*pressure)(void *),
		   void *opaque);
void disk_repl_free(struct disk_repl *dr);
/* Mode SYNC: install the write log on every device, forget logs, bitmaps and sums. 0 or -ENOMEM. */
int disk_repl_start(struct disk_repl *dr);
/* Remove the log from the devices, re-run what it held. Mode OFF. Idempotent. */
void disk_repl_stop(struct disk_repl *dr);
/* Inside the epoch's pause: the log of the epoch that ends (NULL in SYNC/OFF mode: nothing to send;
 * the next sync pass carries those blocks). No allocation. The frozen buffer stays valid until the
 * second freeze after this one: the caller writes it before that (Remus's pipeline has at most one
 * epoch being sent and one captured epoch waiting, and captures only when none waits). */
const struct disk_buf *disk_repl_freeze(struct disk_repl *dr);

/* The standby's checksums (Remus messages DISK_SUMS / DISK_SUM / DISK_SUMS_END, in order). Returns
 * 1 when the list is complete, 0 while more is expected, -EBADMSG when out of order. Loop thread. */
int disk_repl_sums_add(struct disk_repl *dr, uint32_t type, uint64_t value);
/* The sync pass (sender thread, SYNC mode): DISK_INFO for every disk, then every block whose xxh64
 * differs from the standby's (or every block, without sums) as DISK_WRITE, closing an epoch (numbered
 * from *epoch, left at the next unused one) every DISK_SYNC_EPOCH bytes and at the end. */
int disk_repl_sync(struct disk_repl *dr, struct sr_ctx *w, uint64_t *epoch, char *err, size_t errlen);
/* Switch to LOG and send the blocks written during the sync (one epoch or more). */
int disk_repl_sync_final(struct disk_repl *dr, struct sr_ctx *w, uint64_t *epoch, char *err, size_t errlen);
void disk_repl_get_stats(struct disk_repl *dr, struct disk_repl_stats *st);
/* Migration's pre-copy rounds (SYNC mode, the VM running): the bytes of the blocks written since the
 * last round or epoch (what a round would send now), and the round itself: take the bitmap (a write
 * completing from then on marks its block again), then read and send every block it marked as
 * DISK_WRITE records of the epoch the caller is writing (no CHECKPOINT_END). 0 or -errno with err. */
uint64_t disk_repl_dirty_bytes(struct disk_repl *dr);
int disk_repl_round(struct disk_repl *dr, struct sr_ctx *w, char *err, size_t errlen);

/* A writing epoch's disks (the engine's write_epoch, paused, before CHECKPOINT_END). LOG mode: the
 * frozen log. Otherwise (snapshots): DISK_INFO for every disk, then with `data` the blocks (every
 * one with `all`, else those written since the last such epoch: the SYNC-mode bitmap), and with
 * `sidecar` a clone of each image to "<sidecar>.disk<N>" (FICLONE, else a copy) whose content hash
 * goes into DISK_INFO. The bitmap restarts here. 0 or -errno with err. NULL dr: nothing. */
int disk_repl_epoch(struct disk_repl *dr, struct sr_ctx *w, bool all, bool data, const char *sidecar,
		    char *err, size_t errlen);
/* The content hash of DISK_INFO: xxh64 over the little-endian xxh64s of every block of dev. */
int disk_content_hash(struct virtio_blk *dev, uint64_t *hash);

/* xxh64 of every DISK_BLOCK of dev (the last one may be short), into sums[nblocks] (allocated).
 * 0 or -errno. */
int disk_block_sums(struct virtio_blk *dev, uint64_t **sums, uint64_t *nblocks);

/* ---- receiving ---------------------------------------------------------------------------------- */

struct disk_info {
	bool seen;
	uint32_t flags;
	uint64_t size;
	uint64_t content; /* 0: not recorded */
	char id[SR_DISK_ID_LEN + 1];
};

struct disk_peer_names {
	const char *peer, *at, *self; /* "the primary", "on the primary", "this standby" */
};
extern const struct disk_peer_names disk_names_remus, disk_names_snapshot;

/* An epoch's disk records, staged until its CHECKPOINT_END has been verified. */
struct disk_stage {
	struct disk_buf b;
	struct disk_info info[SR_MAX_DISKS];
	int nr_info;
	uint64_t ops_applied, bytes_applied; /* totals, for status */
	/* direct mode (a VM that has not run: restore, migration): set direct/ndirect/names and each
	 * DISK_INFO is checked on arrival, each DISK_WRITE applied at once (no staging, no size bound;
	 * on an error the images hold part of the stream and the VM must be discarded) */
	struct virtio_blk *const *direct;
	int ndirect;
	const struct disk_peer_names *names;
	uint64_t direct_ok; /* disks whose DISK_INFO matched */
};

/* Stage a DISK_WRITE or DISK_INFO record. -E2BIG past DISK_STAGE_MAX, -ENOMEM, -EBADMSG with err. */
int disk_stage_add(struct disk_stage *s, const struct sr_record *rec, char *err, size_t errlen);
void disk_stage_reset(struct disk_stage *s); /* empties, keeps buffers */
void disk_stage_free(struct disk_stage *s);
/* The epoch's DISK_INFO records against this VM's disks: 0, or -EINVAL with a line naming the
 * difference (size, id, read-only, a disk missing on either side). *verified |= a bit per disk. */
int disk_stage_check(const struct disk_stage *s, struct virtio_blk *const *devs, int n, uint32_t *verified,
		     const struct disk_peer_names *nm, char *err, size_t errlen);
/* Apply the staged writes in order to devs. 0, or -errno with err (the disks are then partly
 * written: the caller must not use them as a committed image). */
int disk_stage_apply(struct disk_stage *s, struct virtio_blk *const *devs, int n, char *err, size_t errlen);

#endif
