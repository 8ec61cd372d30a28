/* virtio_blk.h — virtio-blk over virtio-mmio: one request queue, raw image/block device, worker-pool I/O. */
#ifndef DOPPEL_HV_VIRTIO_BLK_H
#define DOPPEL_HV_VIRTIO_BLK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hv/hv.h"
#include "hv/mem.h"
#include "hv/dev/virtio_mmio.h"

#define VIRTIO_ID_BLOCK 2

/* Feature bits (virtio 1.x §5.2.3) */
#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_DISCARD 13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

/* Request types and status values (§5.2.6) */
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2

#define VIRTIO_BLK_ID_BYTES 20
#define VBLK_SECTOR 512u
#define VBLK_HDR_LEN 16 /* struct virtio_blk_outhdr: le32 type, le32 reserved, le64 sector */
#define VBLK_QUEUE_SIZE 128
#define VBLK_SEG_MAX 126 /* data segments per request (queue size minus header and status) */
#define VBLK_SIZE_MAX (32u << 10) /* bytes per segment */
#define VBLK_MAX_DATA ((uint64_t)VBLK_SEG_MAX * VBLK_SIZE_MAX) /* largest read/write: ~4 MiB */
#define VBLK_MAX_DISCARD_SECTORS (1u << 22) /* 2 GiB per segment */
#define VBLK_MAX_DISCARD_SEG 32
#define VBLK_DISCARD_SEG_LEN 16 /* le64 sector, le32 num_sectors, le32 flags (bit 0: unmap) */
#define VBLK_WORKERS 4

struct virtio_blk;

/* The DMA gate (hv.h vm_dma_begin/vm_dma_end) as callbacks, so the core runs without a struct vm in
 * unit tests. begin returns false while the VM is paused: the completion is then held and delivered by
 * virtio_blk_resumed(). NULL begin: always open. */
typedef bool (*virtio_blk_gate_begin_fn)(void *opaque);
typedef void (*virtio_blk_gate_end_fn)(void *opaque);

struct virtio_blk_stats {
	uint64_t reads, writes, flushes, discards, write_zeroes, get_ids;
	uint64_t bytes_read, bytes_written;
	uint64_t ioerr, unsupp, bad_requests; /* completions with IOERR / UNSUPP; malformed requests */
	uint64_t held; /* completions deferred by a closed DMA gate */
	uint64_t wlog_held; /* completions deferred because the write log refused them (full) */
	uint64_t ov_held; /* writes deferred because the COLO overlay was full */
	uint64_t ov_resets; /* overlays discarded (COLO checkpoints) */
};

/* ---- the write log (Remus disk replication, docs/disk.md) ---- */

#include <sys/uio.h>

/* One completed write-type request, as the write log sees it. */
struct virtio_blk_wreq {
	uint32_t type; /* VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES or VIRTIO_BLK_T_DISCARD */
	uint64_t sector, nr_sectors; /* OUT: the range written */
	const struct iovec *iov; /* OUT: the data, in guest RAM (nr_sectors * 512 bytes in all) */
	unsigned niov;
	unsigned nr_ranges; /* WRITE_ZEROES / DISCARD: the segments */
	struct {
		uint64_t sector, nr_sectors;
	} range[VBLK_MAX_DISCARD_SEG];
};
/* Called for every write-type request that completed OK, inside the completion: the DMA gate bracket
 * is open (so the set of writes logged before a pause is exactly the set the guest's memory has seen
 * complete) and the device lock is held (do not call back into the device). Return 0 to let the
 * completion be published, non-zero to hold it: the request is re-executed when the device is next
 * kicked (virtio_blk_kick: every vm_resume), as for a closed gate. */
typedef int (*virtio_blk_wlog_fn)(void *opaque, const struct virtio_blk_wreq *w);
/* Install (fn non-NULL) or remove the write log. Returns when no call of the old one is running.
 * Removing it does not re-run held requests: call virtio_blk_kick. */
void virtio_blk_set_wlog(struct virtio_blk *d, virtio_blk_wlog_fn fn, void *opaque);
/* Remove the write log only if it is still the one installed with `opaque` (another user, e.g.
 * replication after a snapshot, may have replaced it). */
void virtio_blk_clear_wlog(struct virtio_blk *d, void *opaque);

/* Host I/O on the backing file for replication (not through the queue; any thread, the device may
 * be running): apply a replicated write (type OUT with nr_sectors * 512 bytes of data, WRITE_ZEROES
 * or DISCARD), read bytes, flush. 0 or -errno (-EINVAL out of range, -EROFS read-only, -ENOLCK without
 * the image's lock). */
int virtio_blk_host_apply(struct virtio_blk *d, uint32_t type, uint64_t sector, uint64_t nr_sectors,
			  const void *data);
int virtio_blk_host_read(struct virtio_blk *d, uint64_t off, void *buf, size_t len);
int virtio_blk_host_flush(struct virtio_blk *d);
bool virtio_blk_readonly(struct virtio_blk *d);
int virtio_blk_backend_fd(struct virtio_blk *d); /* the image's fd (the device owns it): e.g. FICLONE */
/* The GET_ID serial as a NUL-terminated string (out: VIRTIO_BLK_ID_BYTES + 1 bytes). */
const char *virtio_blk_id(struct virtio_blk *d, char *out);

/* ---- core (no struct vm: unit tests drive it over mem_init_buffer RAM) ---- */

/* A device over guest RAM gm backed by `fd` (regular file or block device; the device takes
 * ownership of fd and closes it on destroy) of `capacity` bytes (floored to 512). id: GET_ID string
 * (NULL: empty; at most 20 bytes used). Starts `workers` threads (0: VBLK_WORKERS). Returns 0 or
 * -errno. */
int virtio_blk_create(struct guest_mem *gm, int fd, uint64_t capacity, bool readonly, const char *id,
		      unsigned workers, struct virtio_blk **out);
/* Stop the workers (waiting for the host I/O they run), close fd, free. The caller guarantees no
 * io_fn can still run. NULL-safe. */
void virtio_blk_destroy(struct virtio_blk *d);

/* The io_fn for the device's 0x200-byte MMIO window (opaque = dev). */
int virtio_blk_io(void *dev, uint64_t off, void *data, uint32_t len, bool is_write);

void virtio_blk_set_irq(struct virtio_blk *d, virtio_irq_fn fn, void *opaque);
void virtio_blk_set_gate(struct virtio_blk *d, virtio_blk_gate_begin_fn begin, virtio_blk_gate_end_fn end,
			 void *opaque);

/* The gate opened again (hv_dev_ops.resumed): hand held and restored in-flight requests back to the
 * workers (they are re-executed from the descriptors in guest RAM), and pick up new avail entries. */
void virtio_blk_kick(struct virtio_blk *d);

/* Wait until no request is queued for or running in a worker (held ones do not count). Tests, and
 * restore. Must not be called with the transport lock held. */
void virtio_blk_drain(struct virtio_blk *d);

/* Requests popped from the avail ring and not yet published in the used ring (running, queued, held
 * or restored-pending). */
unsigned virtio_blk_inflight(struct virtio_blk *d);

void virtio_blk_get_stats(struct virtio_blk *d, struct virtio_blk_stats *st);
uint64_t virtio_blk_capacity(struct virtio_blk *d); /* bytes, multiple of 512 */
uint32_t virtio_blk_status(struct virtio_blk *d); /* the Status register */
const char *virtio_blk_broken(struct virtio_blk *d); /* why NEEDS_RESET, or NULL */
struct virtio_mmio *virtio_blk_transport(struct virtio_blk *d);

/* Guest-visible state: the transport (registers, queue config and indices), the capacity and
 * read-only flag (restore refuses a different disk), and the heads of the requests in flight. In-flight
 * requests are re-queued on restore: they are re-read from the descriptor table and executed again
 * once virtio_blk_kick runs (a write repeated with the same data is harmless; a read is re-done).
 * save: bytes or -ENOSPC. restore: -EINVAL with the device unchanged when the record is malformed or
 * describes another disk; waits for running host I/O first (VM paused). */
size_t virtio_blk_state_size(struct virtio_blk *d);
int virtio_blk_save(struct virtio_blk *d, void *buf, size_t len);
int virtio_blk_restore(struct virtio_blk *d, const void *buf, size_t len);

/* ---- the overlay (a COLO secondary, hv/dev/virtio_blk_overlay.c, docs/colo.md "Disks") ---- */

/* From now on the device's writes go to an in-memory sparse overlay (at most max_bytes of written
 * data; a write that does not fit is held until a reset or commit and a kick), its reads see
 * overlay-over-image, FLUSH does nothing; the image is written only by virtio_blk_host_apply. The
 * device must be quiesced (VM paused or not yet run). Read-only disks: nothing to do. 0 or -errno. */
int virtio_blk_overlay_start(struct virtio_blk *d, uint64_t max_bytes);
/* Quiesced: forget everything the overlay holds (a checkpoint replaced the secondary's state). */
int virtio_blk_overlay_reset(struct virtio_blk *d);
/* Quiesced: write the overlay into the image, fdatasync, end the overlay (*written bytes). On an error
 * the overlay stays (image + overlay is still the disk). */
int virtio_blk_overlay_commit(struct virtio_blk *d, uint64_t *written);
void virtio_blk_overlay_drop(struct virtio_blk *d); /* end it without writing (destroy) */
uint64_t virtio_blk_overlay_bytes(struct virtio_blk *d); /* written data it holds now */

/* ---- wiring (hv/dev/virtio_blk_attach.c) ---- */

struct virtio_blk_cfg {
	const char *path; /* raw image file or block device */
	bool readonly;
	const char *id; /* GET_ID string or NULL */
	/* A migration destination: when another process holds the image's lock (the source, over shared
	 * storage), open it without the lock; virtio_blk_lock takes it at the switchover. */
	bool lock_later;
};

/* Open c->path (O_RDWR, or O_RDONLY when readonly; an advisory lock, exclusive for read-write, so two
 * VMs cannot write one image), size it (file size / BLKGETSIZE64), create the device and attach it to
 * vm under `name` ("disk0") through hv_dev_ops: a virtio-mmio slot (vm_dev_cmdline gets the fragment),
 * the DMA gate, save/restore, reset, resumed, detach. Returns 0 or -errno with one line in err; on
 * error nothing is left behind. */
int virtio_blk_attach(struct vm *vm, const char *name, const struct virtio_blk_cfg *c,
		      struct virtio_blk **out, char *err, size_t errlen);

/* Open and size a backing file (used by attach; exposed for tests). Returns the fd or -errno + err. */
int virtio_blk_open_backend(const char *path, bool readonly, uint64_t *capacity, char *err, size_t errlen);
/* The same; with lock_later a lock held by another process is not an error: *locked says whether this
 * open holds it (otherwise always true). */
int virtio_blk_open_image(const char *path, bool readonly, bool lock_later, uint64_t *capacity, bool *locked,
			  char *err, size_t errlen);

/* ---- the image lock (shared-storage migration, docs/migration.md) ---- */

/* Whether this device holds its image's advisory lock (exclusive read-write, shared read-only). */
bool virtio_blk_locked(struct virtio_blk *d);
/* Take the lock (non-blocking; retried every millisecond for up to wait_ms): 0, -EBUSY while another
 * process holds it, or -errno. Release it (0 or -errno); the device must not write the image while
 * it does not hold the lock (the caller's duty: the VM is paused or has not run). */
int virtio_blk_lock(struct virtio_blk *d, int wait_ms);
int virtio_blk_unlock(struct virtio_blk *d);
void virtio_blk_set_locked(struct virtio_blk *d, bool locked); /* attach: what the open left */

#endif
