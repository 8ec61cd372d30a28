/* virtio_mmio.c — virtio-mmio transport: registers, feature negotiation, queue setup, interrupts, state. */
#include <endian.h>
#include <errno.h>
#include <string.h>

#include "hv/dev/state.h"
#include "hv/dev/virtio_mmio.h"

#define VENDOR_ID 0x4c505044u /* "DPPL" */
#define STATUS_KNOWN                                                                                         \
	(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_DRIVER_OK |                        \
	 VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_NEEDS_RESET | VIRTIO_STATUS_FAILED)

int virtio_mmio_init(struct virtio_mmio *t, struct guest_mem *gm, uint32_t device_id, uint64_t features,
		     unsigned nr_queues, uint16_t queue_max, const struct virtio_dev_ops *ops, void *opaque)
{
	memset(t, 0, sizeof(*t));
	if (!gm || !ops || !(features & (1ull << VIRTIO_F_VERSION_1)) || nr_queues == 0 ||
	    nr_queues > VIRTIO_MMIO_MAX_QUEUES || queue_max == 0 || queue_max > VQ_MAX_SIZE ||
	    (queue_max & (queue_max - 1)))
		return -EINVAL;
	if (pthread_mutex_init(&t->lock, NULL))
		return -ENOMEM;
	t->gm = gm;
	t->device_id = device_id;
	t->vendor_id = VENDOR_ID;
	t->device_features = features;
	t->nr_queues = nr_queues;
	t->queue_max = queue_max;
	t->ops = ops;
	t->opaque = opaque;
	return 0;
}

void virtio_mmio_destroy(struct virtio_mmio *t)
{
	if (t->gm)
		pthread_mutex_destroy(&t->lock);
	t->gm = NULL;
}

void virtio_mmio_set_irq(struct virtio_mmio *t, virtio_irq_fn fn, void *opaque)
{
	pthread_mutex_lock(&t->lock);
	t->irq = fn;
	t->irq_opaque = opaque;
	t->irq_level = 0;
	pthread_mutex_unlock(&t->lock);
}

static void set_line(struct virtio_mmio *t, int level)
{
	if (t->irq)
		t->irq(t->irq_opaque, level);
	t->irq_level = level;
}

void virtio_mmio_interrupt(struct virtio_mmio *t, uint32_t bits)
{
	t->isr |= bits;
	if (t->irq_level)
		set_line(t, 0); /* pulse: a fresh edge for edge-triggered pins */
	set_line(t, 1);
}

void virtio_mmio_used(struct virtio_mmio *t, struct vq *vq)
{
	if (vq_want_interrupt(vq))
		virtio_mmio_interrupt(t, VIRTIO_INT_USED);
	else if (t->irq)
		t->irq(t->irq_opaque, VIRTIO_IRQ_WAKE);
}

void virtio_mmio_set_broken(struct virtio_mmio *t, const char *why)
{
	if (t->status & VIRTIO_STATUS_NEEDS_RESET)
		return;
	t->status |= VIRTIO_STATUS_NEEDS_RESET;
	t->broken = why ? why : "device broken";
	if (t->status & VIRTIO_STATUS_DRIVER_OK)
		virtio_mmio_interrupt(t, VIRTIO_INT_CONFIG);
}

bool virtio_mmio_queue_live(const struct virtio_mmio *t, unsigned q)
{
	return q < t->nr_queues && (t->status & VIRTIO_STATUS_DRIVER_OK) &&
	       !(t->status & VIRTIO_STATUS_NEEDS_RESET) && t->vq[q].ready;
}

static void reset(struct virtio_mmio *t)
{
	t->driver_features = 0;
	t->dev_feat_sel = t->drv_feat_sel = t->queue_sel = 0;
	t->status = 0;
	t->isr = 0;
	t->broken = NULL;
	for (unsigned i = 0; i < VIRTIO_MMIO_MAX_QUEUES; i++)
		vq_reset(&t->vq[i]);
	if (t->irq_level)
		set_line(t, 0);
	t->ops->reset(t->opaque);
}

static struct vq *sel_queue(struct virtio_mmio *t)
{
	return t->queue_sel < t->nr_queues ? &t->vq[t->queue_sel] : NULL;
}

static uint32_t reg_read(struct virtio_mmio *t, uint64_t off)
{
	struct vq *vq = sel_queue(t);

	switch (off) {
	case VMMIO_MAGIC:
		return VIRTIO_MMIO_MAGIC;
	case VMMIO_VERSION:
		return 2;
	case VMMIO_DEVICE_ID:
		return t->device_id;
	case VMMIO_VENDOR_ID:
		return t->vendor_id;
	case VMMIO_DEV_FEATURES:
		return t->dev_feat_sel < 2 ? (uint32_t)(t->device_features >> (32 * t->dev_feat_sel)) : 0;
	case VMMIO_QUEUE_NUM_MAX:
		return vq ? t->queue_max : 0;
	case VMMIO_QUEUE_NUM:
		return vq ? vq->num : 0;
	case VMMIO_QUEUE_READY:
		return vq ? vq->ready : 0;
	case VMMIO_INTERRUPT_STATUS:
		return t->isr;
	case VMMIO_STATUS:
		return t->status;
	case VMMIO_CONFIG_GENERATION:
		return t->config_gen;
	default:
		return 0;
	}
}

static void set_addr(struct vq *vq, uint64_t *field, bool hi, uint32_t val)
{
	if (!vq || vq->ready)
		return;
	if (hi)
		*field = (*field & 0xffffffffull) | ((uint64_t)val << 32);
	else
		*field = (*field & ~0xffffffffull) | val;
}

static void queue_ready(struct virtio_mmio *t, struct vq *vq, uint32_t val)
{
	if (!vq)
		return;
	if (!val) {
		vq->ready = false;
		vq->last_avail_idx = vq->used_idx = 0;
		return;
	}
	if (vq->ready)
		return;
	if (!(t->status & VIRTIO_STATUS_FEATURES_OK)) {
		virtio_mmio_set_broken(t, "QueueReady before FEATURES_OK");
		return;
	}
	vq->indirect = !!(t->driver_features & (1ull << VIRTIO_F_INDIRECT_DESC));
	vq->last_avail_idx = vq->used_idx = 0;
	if (vq_enable(vq, t->gm, t->queue_max))
		virtio_mmio_set_broken(t, vq->err);
}

static void status_write(struct virtio_mmio *t, uint32_t val)
{
	uint32_t old = t->status;

	if (val == 0) {
		reset(t);
		return;
	}
	val &= STATUS_KNOWN & ~VIRTIO_STATUS_NEEDS_RESET;
	val |= old & VIRTIO_STATUS_NEEDS_RESET;
	if ((val & VIRTIO_STATUS_FEATURES_OK) && !(old & VIRTIO_STATUS_FEATURES_OK)) {
		/* Refuse the feature set by leaving FEATURES_OK clear; the driver re-reads and gives up. */
		if ((t->driver_features & ~t->device_features) ||
		    !(t->driver_features & (1ull << VIRTIO_F_VERSION_1)))
			val &= ~VIRTIO_STATUS_FEATURES_OK;
	}
	t->status = val;
	if ((val & VIRTIO_STATUS_DRIVER_OK) && !(val & VIRTIO_STATUS_FEATURES_OK)) {
		virtio_mmio_set_broken(t, "DRIVER_OK without FEATURES_OK");
		return;
	}
	if ((val & VIRTIO_STATUS_DRIVER_OK) && !(old & VIRTIO_STATUS_DRIVER_OK))
		for (unsigned q = 0; q < t->nr_queues; q++)
			if (virtio_mmio_queue_live(t, q))
				t->ops->notify(t->opaque, q);
}

static void reg_write(struct virtio_mmio *t, uint64_t off, uint32_t val)
{
	struct vq *vq = sel_queue(t);

	switch (off) {
	case VMMIO_DEV_FEATURES_SEL:
		t->dev_feat_sel = val;
		break;
	case VMMIO_DRV_FEATURES_SEL:
		t->drv_feat_sel = val;
		break;
	case VMMIO_DRV_FEATURES:
		if (t->drv_feat_sel >= 2 || (t->status & VIRTIO_STATUS_FEATURES_OK))
			break;
		if (t->drv_feat_sel)
			t->driver_features = (t->driver_features & 0xffffffffull) | ((uint64_t)val << 32);
		else
			t->driver_features = (t->driver_features & ~0xffffffffull) | val;
		break;
	case VMMIO_QUEUE_SEL:
		t->queue_sel = val;
		break;
	case VMMIO_QUEUE_NUM:
		if (vq && !vq->ready)
			vq->num = val > 0xffff ? 0 : (uint16_t)val; /* validated at QueueReady */
		break;
	case VMMIO_QUEUE_READY:
		queue_ready(t, vq, val);
		break;
	case VMMIO_QUEUE_NOTIFY:
		if (virtio_mmio_queue_live(t, val))
			t->ops->notify(t->opaque, val);
		break;
	case VMMIO_INTERRUPT_ACK:
		t->isr &= ~val;
		if (!t->isr && t->irq_level)
			set_line(t, 0);
		break;
	case VMMIO_STATUS:
		status_write(t, val);
		break;
	case VMMIO_QUEUE_DESC_LO:
	case VMMIO_QUEUE_DESC_HI:
		set_addr(vq, vq ? &vq->desc_gpa : NULL, off & 4, val);
		break;
	case VMMIO_QUEUE_DRIVER_LO:
	case VMMIO_QUEUE_DRIVER_HI:
		set_addr(vq, vq ? &vq->avail_gpa : NULL, off & 4, val);
		break;
	case VMMIO_QUEUE_DEVICE_LO:
	case VMMIO_QUEUE_DEVICE_HI:
		set_addr(vq, vq ? &vq->used_gpa : NULL, off & 4, val);
		break;
	default:
		break; /* read-only or unknown: ignored */
	}
}

int virtio_mmio_io(void *opaque, uint64_t off, void *data, uint32_t len, bool is_write)
{
	struct virtio_mmio *t = opaque;
	uint32_t v = 0;

	if (off >= VIRTIO_MMIO_SIZE || len == 0 || len > 8)
		return 0;
	pthread_mutex_lock(&t->lock);
	if (off >= VMMIO_CONFIG) {
		uint32_t coff = (uint32_t)(off - VMMIO_CONFIG);

		if (len == 1 || len == 2 || len == 4 || len == 8) {
			if (is_write)
				t->ops->cfg_write(t->opaque, coff, data, len);
			else
				t->ops->cfg_read(t->opaque, coff, data, len);
		}
	} else if (len == 4 && off % 4 == 0) {
		if (is_write) {
			memcpy(&v, data, 4);
			reg_write(t, off, le32toh(v));
		} else {
			v = htole32(reg_read(t, off));
			memcpy(data, &v, 4);
		}
	}
	pthread_mutex_unlock(&t->lock);
	return 0;
}

/* ---- state ---------------------------------------------------------------------------------- */

#define STATE_MAGIC 0x4f494d56u /* "VMIO" */
#define STATE_VERSION 1
#define STATE_HDR 64
#define STATE_PER_Q 32

size_t virtio_mmio_state_size(const struct virtio_mmio *t)
{
	return STATE_HDR + STATE_PER_Q * (size_t)t->nr_queues;
}

int virtio_mmio_save(struct virtio_mmio *t, void *buf, size_t len)
{
	size_t need = virtio_mmio_state_size(t);
	struct st_enc c;

	if (!buf || len < need)
		return -ENOSPC;
	st_enc_init(&c, buf, need);
	pthread_mutex_lock(&t->lock);
	st_put32(&c, STATE_MAGIC);
	st_put32(&c, STATE_VERSION);
	st_put32(&c, t->device_id);
	st_put32(&c, t->nr_queues);
	st_put64(&c, t->device_features);
	st_put64(&c, t->driver_features);
	st_put32(&c, t->dev_feat_sel);
	st_put32(&c, t->drv_feat_sel);
	st_put32(&c, t->queue_sel);
	st_put32(&c, t->status);
	st_put32(&c, t->isr);
	st_put32(&c, t->config_gen);
	st_pad_to(&c, STATE_HDR);
	for (unsigned i = 0; i < t->nr_queues; i++) {
		const struct vq *vq = &t->vq[i];

		st_put16(&c, vq->num);
		st_put16(&c, (uint16_t)(vq->ready | (vq->indirect << 1)));
		st_put16(&c, vq->last_avail_idx);
		st_put16(&c, vq->used_idx);
		st_put64(&c, vq->desc_gpa);
		st_put64(&c, vq->avail_gpa);
		st_put64(&c, vq->used_gpa);
	}
	pthread_mutex_unlock(&t->lock);
	return st_enc_done(&c);
}

int virtio_mmio_restore(struct virtio_mmio *t, const void *buf, size_t len)
{
	size_t need = virtio_mmio_state_size(t);
	struct st_dec c;
	struct vq vqs[VIRTIO_MMIO_MAX_QUEUES];
	uint64_t drv;
	uint32_t dfs, drfs, qsel, status, isr, gen;

	if (!buf || len < need)
		return -EINVAL;
	st_dec_init(&c, buf, need);
	if (st_get32(&c) != STATE_MAGIC || st_get32(&c) != STATE_VERSION || st_get32(&c) != t->device_id ||
	    st_get32(&c) != t->nr_queues)
		return -EINVAL;
	(void)st_get64(&c); /* device features at save time: informational */
	drv = st_get64(&c);
	dfs = st_get32(&c);
	drfs = st_get32(&c);
	qsel = st_get32(&c);
	status = st_get32(&c);
	isr = st_get32(&c);
	gen = st_get32(&c);
	if ((drv & ~t->device_features) || (status & ~STATUS_KNOWN) || (isr & ~3u))
		return -EINVAL;
	if ((status & VIRTIO_STATUS_FEATURES_OK) && !(drv & (1ull << VIRTIO_F_VERSION_1)))
		return -EINVAL;
	st_skip_to(&c, STATE_HDR);
	memset(vqs, 0, sizeof(vqs));
	for (unsigned i = 0; i < t->nr_queues; i++) {
		struct vq *vq = &vqs[i];
		uint16_t fl;

		vq->num = st_get16(&c);
		fl = st_get16(&c);
		vq->last_avail_idx = st_get16(&c);
		vq->used_idx = st_get16(&c);
		vq->desc_gpa = st_get64(&c);
		vq->avail_gpa = st_get64(&c);
		vq->used_gpa = st_get64(&c);
		vq->indirect = fl & 2;
		if (fl & ~3u)
			return -EINVAL;
		if (vq->num > t->queue_max || (vq->num & (vq->num - 1)))
			return -EINVAL;
		if (fl & 1) {
			if (vq_enable(vq, t->gm, t->queue_max))
				return -EINVAL;
			if ((uint16_t)(vq->last_avail_idx - vq->used_idx) > vq->num)
				return -EINVAL;
		}
	}
	pthread_mutex_lock(&t->lock);
	t->driver_features = drv;
	t->dev_feat_sel = dfs;
	t->drv_feat_sel = drfs;
	t->queue_sel = qsel;
	t->status = status;
	t->isr = isr;
	t->config_gen = gen;
	t->broken = (status & VIRTIO_STATUS_NEEDS_RESET) ? "restored in NEEDS_RESET state" : NULL;
	memcpy(t->vq, vqs, sizeof(vqs));
	set_line(t, isr ? 1 : 0);
	pthread_mutex_unlock(&t->lock);
	return (int)need;
}
