/* virtio_net.c — virtio-net device core: TX to a callback, RX from the backend, state save/restore. */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hv/dev/state.h"
#include "hv/dev/virtio_net.h"

struct rx_frame {
	uint8_t *data;
	size_t len;
};

struct virtio_net {
	struct virtio_mmio t; /* t.lock is the device lock */
	uint8_t mac[6];
	virtio_net_tx_fn tx;
	void *tx_opaque;
	void *backend;
	struct virtio_net_stats st;
	struct rx_frame rxq[VNET_RXQ_LEN];
	unsigned rxq_head, rxq_count;
	struct vq_elem elem;
	uint8_t txbuf[VNET_HDR_LEN + VNET_MAX_FRAME];
};

#define FEATURES                                                                                             \
	((1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_NET_F_MAC) | (1ull << VIRTIO_F_INDIRECT_DESC))

static void rxq_clear(struct virtio_net *d)
{
	while (d->rxq_count) {
		free(d->rxq[d->rxq_head].data);
		d->rxq[d->rxq_head].data = NULL;
		d->rxq_head = (d->rxq_head + 1) % VNET_RXQ_LEN;
		d->rxq_count--;
	}
	d->rxq_head = 0;
}

/* ---- TX ---- */

static void process_tx(struct virtio_net *d)
{
	struct vq *vq = &d->t.vq[VNET_TXQ];
	struct guest_mem *gm = d->t.gm;
	bool pushed = false;

	/* Bounded: a guest refilling the ring as fast as we drain it cannot pin us here. */
	for (unsigned budget = 4u * VNET_QUEUE_SIZE; budget && virtio_mmio_queue_live(&d->t, VNET_TXQ);
	     budget--) {
		struct vq_elem *e = &d->elem;
		int rc = vq_pop(vq, gm, e);

		if (rc == 0)
			break;
		if (rc < 0) {
			virtio_mmio_set_broken(&d->t, vq->err);
			break;
		}
		if (e->n_in) {
			vq_unpop(vq);
			virtio_mmio_set_broken(&d->t, "device-writable descriptor in a TX chain");
			break;
		}
		if (e->out_bytes < VNET_HDR_LEN || e->out_bytes - VNET_HDR_LEN > VNET_MAX_FRAME ||
		    e->out_bytes == VNET_HDR_LEN) {
			d->st.tx_dropped++;
		} else {
			size_t flen = e->out_bytes - VNET_HDR_LEN;

			vq_elem_read(e, VNET_HDR_LEN, d->txbuf, flen);
			if (d->tx && d->tx(d->tx_opaque, d->txbuf, flen) == 0)
				d->st.tx_frames++;
			else
				d->st.tx_dropped++;
		}
		vq_push(vq, gm, e->head, 0);
		pushed = true;
	}
	if (pushed && vq_want_interrupt(vq))
		virtio_mmio_interrupt(&d->t, VIRTIO_INT_USED);
}

/* ---- RX ---- */

static int rx_locked(struct virtio_net *d, const void *frame, size_t len)
{
	struct vq *vq = &d->t.vq[VNET_RXQ];
	struct guest_mem *gm = d->t.gm;
	struct vq_elem *e = &d->elem;
	struct virtio_net_hdr_v1 h;
	int rc;

	if (len == 0 || len > VNET_MAX_FRAME)
		return -EMSGSIZE;
	if (!virtio_mmio_queue_live(&d->t, VNET_RXQ))
		return -ENETDOWN;
	rc = vq_pop(vq, gm, e);
	if (rc == 0)
		return -EAGAIN;
	if (rc < 0) {
		virtio_mmio_set_broken(&d->t, vq->err);
		return -EIO;
	}
	if (e->n_out) {
		vq_unpop(vq);
		virtio_mmio_set_broken(&d->t, "device-readable descriptor in an RX chain");
		return -EIO;
	}
	if (e->in_bytes < VNET_HDR_LEN + len) {
		vq_unpop(vq);
		return -EMSGSIZE;
	}
	memset(&h, 0, sizeof(h));
	h.num_buffers = htole16(1);
	vq_elem_write(gm, e, 0, &h, sizeof(h));
	vq_elem_write(gm, e, VNET_HDR_LEN, frame, len);
	vq_push(vq, gm, e->head, (uint32_t)(VNET_HDR_LEN + len));
	virtio_mmio_used(&d->t, vq);
	return 0;
}

/* Deliver queued frames while the guest has buffers. Frames that cannot ever be delivered are dropped. */
static void rxq_flush(struct virtio_net *d)
{
	while (d->rxq_count) {
		struct rx_frame *f = &d->rxq[d->rxq_head];
		int rc = rx_locked(d, f->data, f->len);

		if (rc == -EAGAIN)
			break;
		if (rc == 0)
			d->st.rx_frames++;
		else
			d->st.rx_dropped++;
		free(f->data);
		f->data = NULL;
		d->rxq_head = (d->rxq_head + 1) % VNET_RXQ_LEN;
		d->rxq_count--;
	}
}

int virtio_net_rx(struct virtio_net *d, const void *frame, size_t len)
{
	int rc;

	pthread_mutex_lock(&d->t.lock);
	rc = rx_locked(d, frame, len);
	if (rc == 0)
		d->st.rx_frames++;
	pthread_mutex_unlock(&d->t.lock);
	return rc;
}

/* Append a frame to the holding queue (lock held): 0 or -ENOBUFS / -ENOMEM / -EMSGSIZE (counted). */
static int rxq_append(struct virtio_net *d, const void *frame, size_t len)
{
	struct rx_frame *f = &d->rxq[(d->rxq_head + d->rxq_count) % VNET_RXQ_LEN];
	int rc = 0;

	if (d->rxq_count == VNET_RXQ_LEN || len == 0 || len > VNET_MAX_FRAME || !(f->data = malloc(len))) {
		rc = d->rxq_count == VNET_RXQ_LEN ? -ENOBUFS : len ? -ENOMEM : -EMSGSIZE;
		d->st.rx_dropped++;
		return rc;
	}
	memcpy(f->data, frame, len);
	f->len = len;
	d->rxq_count++;
	d->st.rx_queued++;
	return 0;
}

int virtio_net_rx_hold(struct virtio_net *d, const void *frame, size_t len)
{
	int rc;

	pthread_mutex_lock(&d->t.lock);
	rc = rxq_append(d, frame, len);
	pthread_mutex_unlock(&d->t.lock);
	return rc;
}

void virtio_net_rx_flush(struct virtio_net *d)
{
	pthread_mutex_lock(&d->t.lock);
	rxq_flush(d);
	pthread_mutex_unlock(&d->t.lock);
}

int virtio_net_rx_queue(struct virtio_net *d, const void *frame, size_t len)
{
	int rc = -EAGAIN;

	pthread_mutex_lock(&d->t.lock);
	rxq_flush(d);
	if (!d->rxq_count) {
		rc = rx_locked(d, frame, len);
		if (rc == 0)
			d->st.rx_frames++;
		else if (rc != -EAGAIN)
			d->st.rx_dropped++;
	}
	if (rc == -EAGAIN)
		rc = rxq_append(d, frame, len);
	pthread_mutex_unlock(&d->t.lock);
	return rc;
}

void virtio_net_poll(struct virtio_net *d)
{
	pthread_mutex_lock(&d->t.lock);
	process_tx(d);
	rxq_flush(d);
	pthread_mutex_unlock(&d->t.lock);
}

/* ---- transport callbacks (lock held) ---- */

static void net_notify(void *opaque, unsigned q)
{
	struct virtio_net *d = opaque;

	if (q == VNET_TXQ)
		process_tx(d);
	else if (q == VNET_RXQ)
		rxq_flush(d);
}

static void net_cfg_read(void *opaque, uint32_t off, void *data, uint32_t len)
{
	struct virtio_net *d = opaque;
	uint8_t cfg[8] = {0}; /* mac[6], status (not offered: reads 0) */

	memcpy(cfg, d->mac, 6);
	if (off < sizeof(cfg))
		memcpy(data, cfg + off, len < sizeof(cfg) - off ? len : sizeof(cfg) - off);
}

static void net_cfg_write(void *opaque, uint32_t off, const void *data, uint32_t len)
{
	(void)opaque, (void)off, (void)data, (void)len; /* MAC is read-only for VERSION_1 drivers */
}

static void net_reset(void *opaque)
{
	rxq_clear(opaque);
}

static const struct virtio_dev_ops net_ops = {
	.notify = net_notify,
	.cfg_read = net_cfg_read,
	.cfg_write = net_cfg_write,
	.reset = net_reset,
};

/* ---- lifecycle and accessors ---- */

int virtio_net_create(struct guest_mem *gm, const uint8_t mac[6], virtio_net_tx_fn tx, void *tx_opaque,
		      struct virtio_net **out)
{
	struct virtio_net *d;
	int rc;

	*out = NULL;
	if (!gm || !mac)
		return -EINVAL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	rc = virtio_mmio_init(&d->t, gm, VIRTIO_ID_NET, FEATURES, 2, VNET_QUEUE_SIZE, &net_ops, d);
	if (rc) {
		free(d);
		return rc;
	}
	memcpy(d->mac, mac, 6);
	d->tx = tx;
	d->tx_opaque = tx_opaque;
	*out = d;
	return 0;
}

void virtio_net_destroy(struct virtio_net *d)
{
	if (!d)
		return;
	rxq_clear(d);
	virtio_mmio_destroy(&d->t);
	free(d);
}

int virtio_net_io(void *dev, uint64_t off, void *data, uint32_t len, bool is_write)
{
	return virtio_mmio_io(&((struct virtio_net *)dev)->t, off, data, len, is_write);
}

void virtio_net_set_tx(struct virtio_net *d, virtio_net_tx_fn tx, void *opaque)
{
	pthread_mutex_lock(&d->t.lock);
	d->tx = tx;
	d->tx_opaque = opaque;
	pthread_mutex_unlock(&d->t.lock);
}

void virtio_net_set_irq(struct virtio_net *d, virtio_irq_fn fn, void *opaque)
{
	virtio_mmio_set_irq(&d->t, fn, opaque);
}

void virtio_net_get_stats(struct virtio_net *d, struct virtio_net_stats *st)
{
	pthread_mutex_lock(&d->t.lock);
	*st = d->st;
	pthread_mutex_unlock(&d->t.lock);
}

uint32_t virtio_net_status(struct virtio_net *d)
{
	uint32_t s;

	pthread_mutex_lock(&d->t.lock);
	s = d->t.status;
	pthread_mutex_unlock(&d->t.lock);
	return s;
}

const char *virtio_net_broken(struct virtio_net *d)
{
	const char *s;

	pthread_mutex_lock(&d->t.lock);
	s = d->t.broken;
	pthread_mutex_unlock(&d->t.lock);
	return s;
}

void virtio_net_get_mac(struct virtio_net *d, uint8_t mac[6])
{
	pthread_mutex_lock(&d->t.lock);
	memcpy(mac, d->mac, 6);
	pthread_mutex_unlock(&d->t.lock);
}

struct virtio_mmio *virtio_net_transport(struct virtio_net *d)
{
	return &d->t;
}

void virtio_net_set_backend(struct virtio_net *d, void *backend)
{
	d->backend = backend;
}

void *virtio_net_backend(struct virtio_net *d)
{
	return d->backend;
}

/* ---- state: {u32 magic "VNET", u32 version, u8 mac[6], u16 0, u32 transport_len, u32 0} + transport ---- */

#define NET_MAGIC 0x54454e56u
#define NET_VERSION 1
#define NET_HDR 24

size_t virtio_net_state_size(struct virtio_net *d)
{
	return NET_HDR + virtio_mmio_state_size(&d->t);
}

int virtio_net_save(struct virtio_net *d, void *buf, size_t len)
{
	size_t tl = virtio_mmio_state_size(&d->t);
	uint8_t mac[6];
	struct st_enc e;
	int rc;

	if (!buf || len < NET_HDR + tl)
		return -ENOSPC;
	virtio_net_get_mac(d, mac);
	st_enc_init(&e, buf, NET_HDR);
	st_put32(&e, NET_MAGIC);
	st_put32(&e, NET_VERSION);
	st_put_bytes(&e, mac, 6);
	st_pad_to(&e, 16);
	st_put32(&e, (uint32_t)tl);
	st_pad_to(&e, NET_HDR);
	rc = st_enc_done(&e);
	if (rc < 0)
		return rc;
	rc = virtio_mmio_save(&d->t, (uint8_t *)buf + NET_HDR, len - NET_HDR);
	if (rc < 0)
		return rc;
	return (int)(NET_HDR + tl);
}

int virtio_net_restore(struct virtio_net *d, const void *buf, size_t len)
{
	size_t tl = virtio_mmio_state_size(&d->t);
	uint32_t magic, ver, slen;
	uint8_t mac[6];
	struct st_dec c;

	if (!buf || len != NET_HDR + tl)
		return -EINVAL;
	st_dec_init(&c, buf, NET_HDR);
	magic = st_get32(&c);
	ver = st_get32(&c);
	st_get_bytes(&c, mac, 6);
	st_skip_to(&c, 16);
	slen = st_get32(&c);
	st_skip_to(&c, NET_HDR);
	if (st_dec_done(&c, true) || magic != NET_MAGIC || ver != NET_VERSION || slen != tl)
		return -EINVAL;
	if ((mac[0] & 1) || !(mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5]))
		return -EINVAL;
	if (virtio_mmio_restore(&d->t, (const uint8_t *)buf + NET_HDR, tl) < 0)
		return -EINVAL;
	pthread_mutex_lock(&d->t.lock);
	memcpy(d->mac, mac, 6);
	rxq_clear(d);
	pthread_mutex_unlock(&d->t.lock);
	return 0;
}
