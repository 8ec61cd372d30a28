/* virtqueue.c — split virtqueue: validated chain popping and used-ring publishing over guest RAM. */
#include <errno.h>
#include <string.h>

#include "hv/dev/virtqueue.h"

/* Ring layout (virtio 1.x §2.7): avail = {le16 flags, le16 idx, le16 ring[num], le16 used_event},
 * used = {le16 flags, le16 idx, {le32 id, le32 len} ring[num], le16 avail_event}. */
#define AVAIL_BYTES(n) (4ull + 2ull * (n) + 2ull)
#define USED_BYTES(n) (4ull + 8ull * (n) + 2ull)

void vq_reset(struct vq *vq)
{
	memset(vq, 0, sizeof(*vq));
}

static int fail(struct vq *vq, const char *why)
{
	vq->err = why;
	return -EINVAL;
}

int vq_enable(struct vq *vq, struct guest_mem *gm, uint16_t max)
{
	uint16_t n = vq->num;

	vq->ready = false;
	vq->desc = NULL;
	vq->avail = NULL;
	vq->used = NULL;
	if (n == 0 || n > max || n > VQ_MAX_SIZE || (n & (n - 1)))
		return fail(vq, "queue size is not a power of two within QueueNumMax");
	if (vq->desc_gpa % 16 || vq->avail_gpa % 2 || vq->used_gpa % 4)
		return fail(vq, "queue ring address misaligned");
	vq->desc = gpa_ptr(gm, vq->desc_gpa, 16ull * n);
	vq->avail = gpa_ptr(gm, vq->avail_gpa, AVAIL_BYTES(n));
	vq->used = gpa_ptr(gm, vq->used_gpa, USED_BYTES(n));
	if (!vq->desc || !vq->avail || !vq->used) {
		vq->desc = NULL;
		vq->avail = NULL;
		vq->used = NULL;
		return fail(vq, "queue ring outside guest RAM");
	}
	vq->err = NULL;
	vq->ready = true;
	return 0;
}

/* Read a descriptor once (the guest may rewrite it concurrently: use only the local copy). */
static void read_desc(const struct vring_desc *table, unsigned i, struct vring_desc *d)
{
	memcpy(d, &table[i], sizeof(*d));
}

/* Walk one chain in `table` (entries `n`) starting at `i`. Appends to e. */
static int walk(struct vq *vq, struct guest_mem *gm, const struct vring_desc *table, unsigned n, unsigned i,
		bool in_indirect, struct vq_elem *e, unsigned *seen)
{
	struct vring_desc d;

	for (;;) {
		if (i >= n)
			return fail(vq, "descriptor next index out of range");
		if (++*seen > n)
			return fail(vq, "descriptor chain longer than its table (loop?)");
		read_desc(table, i, &d);
		if (d.flags & VRING_DESC_F_INDIRECT) {
			const struct vring_desc *ind;
			unsigned iseen = 0;

			if (in_indirect)
				return fail(vq, "nested indirect descriptor");
			if (!vq->indirect)
				return fail(vq, "indirect descriptor without VIRTIO_F_INDIRECT_DESC");
			if (d.flags & VRING_DESC_F_NEXT)
				return fail(vq, "indirect descriptor with NEXT flag");
			if (e->n_out + e->n_in)
				return fail(vq, "indirect descriptor not at the chain head");
			if (d.len == 0 || d.len % 16 || d.len / 16 > VQ_MAX_IOV)
				return fail(vq, "indirect table length invalid");
			if (!(ind = gpa_ptr(gm, d.addr, d.len)))
				return fail(vq, "indirect table outside guest RAM");
			return walk(vq, gm, ind, d.len / 16, 0, true, e, &iseen);
		}
		if (d.len) {
			void *p = gpa_ptr(gm, d.addr, d.len);
			struct vq_iov *v;

			if (!p)
				return fail(vq, "descriptor buffer outside guest RAM");
			if (e->n_out + e->n_in >= VQ_MAX_IOV)
				return fail(vq, "descriptor chain too long");
			v = &e->iov[e->n_out + e->n_in];
			v->base = p;
			v->gpa = d.addr;
			v->len = d.len;
			if (d.flags & VRING_DESC_F_WRITE) {
				e->n_in++;
				e->in_bytes += d.len;
			} else {
				if (e->n_in)
					return fail(vq, "device-readable descriptor after a writable one");
				e->n_out++;
				e->out_bytes += d.len;
			}
		}
		if (!(d.flags & VRING_DESC_F_NEXT))
			return 0;
		i = d.next;
	}
}

int vq_pop(struct vq *vq, struct guest_mem *gm, struct vq_elem *e)
{
	uint16_t avail_idx, head;
	unsigned seen = 0;
	int rc;

	if (!vq->ready || !vq->avail)
		return fail(vq, "queue not ready");
	avail_idx = __atomic_load_n(&vq->avail[1], __ATOMIC_ACQUIRE);
	if ((uint16_t)(avail_idx - vq->last_avail_idx) > vq->num)
		return fail(vq, "avail idx moved by more than the queue size");
	if (avail_idx == vq->last_avail_idx)
		return 0;
	head = __atomic_load_n(&vq->avail[2 + vq->last_avail_idx % vq->num], __ATOMIC_RELAXED);
	if (head >= vq->num)
		return fail(vq, "avail ring head index out of range");
	e->head = head;
	e->n_out = e->n_in = 0;
	e->out_bytes = e->in_bytes = 0;
	rc = walk(vq, gm, vq->desc, vq->num, head, false, e, &seen);
	if (rc)
		return rc;
	vq->last_avail_idx++;
	return 1;
}

int vq_chain(struct vq *vq, struct guest_mem *gm, uint16_t head, struct vq_elem *e)
{
	unsigned seen = 0;

	if (!vq->ready || !vq->desc)
		return fail(vq, "queue not ready");
	if (head >= vq->num)
		return fail(vq, "chain head index out of range");
	e->head = head;
	e->n_out = e->n_in = 0;
	e->out_bytes = e->in_bytes = 0;
	return walk(vq, gm, vq->desc, vq->num, head, false, e, &seen);
}

void vq_unpop(struct vq *vq)
{
	vq->last_avail_idx--;
}

void vq_push(struct vq *vq, struct guest_mem *gm, uint16_t head, uint32_t len)
{
	uint16_t slot;
	uint8_t *elem;
	uint32_t id = head;

	if (!vq->ready || !vq->used || !vq->num)
		return;
	slot = vq->used_idx % vq->num;
	elem = vq->used + 4 + 8ull * slot;
	memcpy(elem, &id, 4);
	memcpy(elem + 4, &len, 4);
	mem_mark_dirty(gm, vq->used_gpa + 4 + 8ull * slot, 8);
	vq->used_idx++;
	__atomic_store_n((uint16_t *)(vq->used + 2), vq->used_idx, __ATOMIC_RELEASE);
	mem_mark_dirty(gm, vq->used_gpa + 2, 2);
}

bool vq_want_interrupt(const struct vq *vq)
{
	if (!vq->ready || !vq->avail)
		return false;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return !(__atomic_load_n(&vq->avail[0], __ATOMIC_RELAXED) & 1);
}

size_t vq_elem_write(struct guest_mem *gm, const struct vq_elem *e, size_t off, const void *src, size_t len)
{
	const uint8_t *s = src;
	size_t done = 0;

	for (unsigned k = e->n_out; k < e->n_out + e->n_in && done < len; k++) {
		const struct vq_iov *v = &e->iov[k];
		size_t n;

		if (off >= v->len) {
			off -= v->len;
			continue;
		}
		n = v->len - off;
		if (n > len - done)
			n = len - done;
		memcpy((uint8_t *)v->base + off, s + done, n);
		mem_mark_dirty(gm, v->gpa + off, n);
		done += n;
		off = 0;
	}
	return done;
}

size_t vq_elem_read(const struct vq_elem *e, size_t off, void *dst, size_t len)
{
	uint8_t *d = dst;
	size_t done = 0;

	for (unsigned k = 0; k < e->n_out && done < len; k++) {
		const struct vq_iov *v = &e->iov[k];
		size_t n;

		if (off >= v->len) {
			off -= v->len;
			continue;
		}
		n = v->len - off;
		if (n > len - done)
			n = len - done;
		memcpy(d + done, (const uint8_t *)v->base + off, n);
		done += n;
		off = 0;
	}
	return done;
}
