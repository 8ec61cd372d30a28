/* virtio_blk_priv.h — the inside of struct virtio_blk, shared by virtio_blk.c (queue, state) and virtio_blk_io.c (workers). */
#ifndef DOPPEL_HV_VIRTIO_BLK_PRIV_H
#define DOPPEL_HV_VIRTIO_BLK_PRIV_H

#include <pthread.h>

#include "hv/dev/virtio_blk.h"

enum { DIRECT_NOWAIT, DIRECT_ALWAYS, DIRECT_NEVER };

struct blk_seg {
	uint64_t sector;
	uint32_t num;
	uint32_t flags;
};

/* One request, from vq_pop to vq_push. Lives in the device's pool; owned by the transport lock while
 * queued or held, by one worker while it runs. */
struct blk_req {
	struct blk_req *next;
	uint32_t gen; /* device generation at pop: a reset in between drops the completion */
	uint32_t type;
	uint64_t sector;
	uint64_t data_len; /* IN/OUT: bytes of data */
	unsigned nr_segs; /* DISCARD/WRITE_ZEROES */
	struct blk_seg segs[VBLK_MAX_DISCARD_SEG];
	uint8_t status;
	bool direct; /* IN data already read straight into the chain (inside the gate) */
	bool ov_full; /* OUT refused by a full overlay: held, re-run on kick */
	struct vq_elem e;
};

struct virtio_blk {
	struct virtio_mmio t; /* its lock guards everything below marked (t) */
	struct guest_mem *gm;
	int fd;
	bool readonly, blkdev;
	bool locked; /* holds the image's flock (virtio_blk_lock); atomic */
	struct blk_overlay *ov; /* COLO secondary: writes go here (virtio_blk_overlay.c); set while idle */
	int direct_mode; /* reads into guest RAM inside the gate: DIRECT_NOWAIT, DIRECT_ALWAYS, DIRECT_NEVER */
	uint64_t capacity; /* bytes, multiple of 512 */
	char id[VIRTIO_BLK_ID_BYTES];

	struct blk_req *pool; /* 2 * VBLK_QUEUE_SIZE */
	struct blk_req *free; /* (t) */
	bool busy[VBLK_QUEUE_SIZE]; /* (t) head popped, not yet pushed */
	unsigned inflight; /* (t) */
	uint32_t gen; /* (t) */
	struct blk_req *held, *held_tail; /* (t) completed while the gate was closed: re-run on kick */
	uint16_t redo[VBLK_QUEUE_SIZE]; /* (t) in flight at save time, restored: re-run on kick */
	unsigned nr_redo; /* (t) */
	bool want_pop; /* (t) the pool ran dry: pop again when a request completes */
	struct blk_req *sub_head, *sub_tail; /* (t) parsed, to go to the workers at the end of this notify */
	unsigned sub_n; /* (t) */
	struct virtio_blk_stats st; /* (t) */

	virtio_blk_gate_begin_fn gate_begin;
	virtio_blk_gate_end_fn gate_end;
	void *gate_opaque;
	virtio_irq_fn irq;
	void *irq_opaque;
	virtio_blk_wlog_fn wlog; /* (t) */
	void *wlog_opaque; /* (t) */

	pthread_mutex_t qlock; /* guards the job queue; taken inside (t) or alone, never the reverse */
	pthread_cond_t qcond, idle;
	struct blk_req *q_head, *q_tail;
	unsigned pending; /* queued + running */
	bool stop;
	pthread_t th[VBLK_WORKERS];
	unsigned nr_th;
};

/* virtio_blk_io.c */
int blk_workers_start(struct virtio_blk *d, unsigned n);
void blk_workers_stop(struct virtio_blk *d);
/* Stage a parsed request for the workers; blk_submit_flush hands every staged one over with one queue
 * lock and as few wake-ups as the batch needs. Both with (t) held. */
void blk_submit(struct virtio_blk *d, struct blk_req *r);
void blk_submit_flush(struct virtio_blk *d);
/* Drop queued (not yet running) requests of an old generation. Called with (t) held. */
void blk_queue_purge(struct virtio_blk *d);

/* The data part of an OUT chain (after the 16-byte header) as an iovec; returns the count. */
unsigned blk_data_iov(const struct blk_req *r, struct iovec *iov);

/* virtio_blk_overlay.c, for the workers (only while blk_ov_active): 0, -1 (I/O error); blk_ov_write
 * returns 1 when the overlay is full (nothing written: hold the request) */
struct blk_overlay;
bool blk_ov_active(struct virtio_blk *d);
int blk_ov_read(struct virtio_blk *d, struct blk_req *r, uint8_t *bounce);
int blk_ov_write(struct virtio_blk *d, struct blk_req *r, struct iovec *iov, unsigned n);
int blk_ov_zero(struct virtio_blk *d, uint64_t sector, uint64_t nsec);
void blk_ov_destroy(struct virtio_blk *d); /* the workers are stopped */

/* virtio_blk.c, for the workers */
/* Deliver n finished requests through one DMA gate bracket (request i's IN data at bounce + i * stride). */
void blk_complete(struct virtio_blk *d, struct blk_req **r, unsigned n, const uint8_t *bounce, size_t stride);
/* The same inside a bracket the caller holds (open = what its gate_begin returned). */
void blk_complete_in(struct virtio_blk *d, struct blk_req **r, unsigned n, const uint8_t *bounce,
		     size_t stride, bool open);

#endif
