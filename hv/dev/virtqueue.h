/* virtqueue.h — split virtqueue (virtio 1.x §2.7): pop available chains as validated host iovecs, push used. */
#ifndef DOPPEL_HV_VIRTQUEUE_H
#define DOPPEL_HV_VIRTQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hv/mem.h"

#define VQ_MAX_SIZE 256 /* largest queue size we offer (QueueNumMax) */
#define VQ_MAX_IOV 256 /* most descriptors in one chain (direct or indirect) */

#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2
#define VRING_DESC_F_INDIRECT 4

struct vring_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

/* One validated descriptor: host pointer to [gpa, gpa+len) (all guest RAM, one region). */
struct vq_iov {
	void *base;
	uint64_t gpa;
	uint32_t len;
};

/* A popped chain: iov[0..n_out) are device-readable, iov[n_out..n_out+n_in) device-writable. */
struct vq_elem {
	uint16_t head;
	unsigned n_out, n_in;
	uint64_t out_bytes, in_bytes;
	struct vq_iov iov[VQ_MAX_IOV];
};

/* Queue configuration (as written by the driver) plus device-side indices. The host pointers are
 * filled by vq_enable() and valid for the lifetime of the guest_mem. */
struct vq {
	uint16_t num; /* queue size; 0 = not configured */
	bool ready;
	bool indirect; /* VIRTIO_F_INDIRECT_DESC negotiated */
	uint64_t desc_gpa, avail_gpa, used_gpa;
	uint16_t last_avail_idx; /* next avail ring slot the device will consume */
	uint16_t used_idx; /* device's copy of used->idx */
	struct vring_desc *desc;
	uint16_t *avail; /* flags, idx, ring[num] */
	uint8_t *used; /* flags, idx, ring[num] of {u32 id, u32 len} */
	const char *err; /* why the queue is broken (static string), NULL when fine */
};

/* Reset everything to "not configured". */
void vq_reset(struct vq *vq);

/* Validate the configuration (num a power of two 1..max, rings aligned and entirely inside guest RAM)
 * and cache host pointers. Does not touch last_avail_idx/used_idx. Returns 0, or -EINVAL with
 * vq->err set (the queue stays not ready). */
int vq_enable(struct vq *vq, struct guest_mem *gm, uint16_t max);

/* Pop the next available chain into *e. Returns 1 when one was popped, 0 when none is available,
 * -EINVAL when the driver broke the ring (vq->err says how; the caller should set NEEDS_RESET and
 * stop using the queue). On error the queue's indices are unchanged. Precondition: vq->ready. */
int vq_pop(struct vq *vq, struct guest_mem *gm, struct vq_elem *e);

/* Walk the chain starting at descriptor `head` into *e without touching the avail ring (a device
 * re-queueing a request that was in flight when its state was saved). 0, or -EINVAL (vq->err). */
int vq_chain(struct vq *vq, struct guest_mem *gm, uint16_t head, struct vq_elem *e);

/* Give back the last popped chain without using it (it will be popped again). */
void vq_unpop(struct vq *vq);

/* Publish a used element {head, len} and bump used->idx (release ordering). Marks the written used
 * ring bytes device-dirty. Precondition: vq->ready. */
void vq_push(struct vq *vq, struct guest_mem *gm, uint16_t head, uint32_t len);

/* After vq_push: does the driver want an interrupt for this queue (VIRTQ_AVAIL_F_NO_INTERRUPT clear)?
 * Issues a full fence first so the flag read is ordered after the used->idx store. */
bool vq_want_interrupt(const struct vq *vq);

/* Copy `len` bytes from `src` into the device-writable part of e (starting `off` bytes in), marking
 * exactly the written bytes device-dirty. Returns bytes copied (less than len if the chain is short). */
size_t vq_elem_write(struct guest_mem *gm, const struct vq_elem *e, size_t off, const void *src, size_t len);

/* Copy up to `len` bytes of the device-readable part of e (from `off`) into dst. Returns bytes copied. */
size_t vq_elem_read(const struct vq_elem *e, size_t off, void *dst, size_t len);

#endif
