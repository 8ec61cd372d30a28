/* virtio.c — polling virtio-mmio (modern v2 or legacy v1) network driver of the test guest: RX queue 0, TX queue 1. */
#include "net.h"
#include "virtio_mmio.h"

#define F_NET_MAC 5

#define HDR_LEN_MODERN 12 /* virtio_net_hdr_v1: VERSION_1 always has num_buffers */
#define HDR_LEN_LEGACY 10 /* virtio_net_hdr without MRG_RXBUF */

#define RXQ 0
#define TXQ 1

struct vq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct vq_avail {
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[VNET_QMAX];
	uint16_t used_event;
};

struct vq_used_elem {
	uint32_t id;
	uint32_t len;
};

struct vq_used {
	uint16_t flags;
	uint16_t idx;
	struct vq_used_elem ring[VNET_QMAX];
	uint16_t avail_event;
};

/*
 * One page-aligned ring area per queue, laid out the legacy way for num entries (virtio 1.x
 * §2.7.2 / §4.2.4): descriptors (16*num), available ring (6 + 2*num) right after them, the used
 * ring (6 + 8*num) at the next VQ_PAGE boundary. The modern transport gets the same three
 * addresses, so both paths share one layout.
 */
#define VQ_AREA_SIZE (VQ_USED_OFF(VNET_QMAX) + ((6u + 8u * VNET_QMAX + VQ_PAGE - 1) & ~(VQ_PAGE - 1u)))

struct vq {
	uint8_t area[VQ_AREA_SIZE] __attribute__((aligned(VQ_PAGE)));
	uint8_t buf[VNET_QMAX][VNET_BUF_SIZE] __attribute__((aligned(4096)));
	struct vq_desc *desc; /* into area */
	struct vq_avail *avail;
	struct vq_used *used;
	uint16_t num; /* entries in use (power of two) */
	uint16_t avail_idx; /* our shadow of avail.idx */
	uint16_t used_seen; /* used entries consumed */
	uint16_t nfree; /* TX: free descriptor stack */
	uint16_t free[VNET_QMAX];
};

static struct {
	uint64_t base; /* MMIO base (in the uncached 3..4 GiB mapping) */
	bool up;
	bool legacy; /* virtio-mmio version 1 */
	uint16_t hdr_len; /* virtio_net_hdr bytes before each frame: 12 (modern) or 10 (legacy) */
	uint16_t tx_pending; /* committed since the last flush */
	bool rx_kick; /* RX buffers re-posted after the device ran dry */
	bool tx_held; /* tx_cur was handed out by vnet_tx_alloc and not committed */
	uint16_t tx_cur;
	struct vnet_stats st;
	struct vq rx, tx;
} vn; /* zero-initialised: .bss */

#define barrier() __asm__ volatile("" ::: "memory")

static inline uint32_t rd(uint32_t off)
{
	return *(volatile uint32_t *)(uintptr_t)(vn.base + off);
}

static inline void wr(uint32_t off, uint32_t v)
{
	*(volatile uint32_t *)(uintptr_t)(vn.base + off) = v;
}

static inline uint16_t ld16(const uint16_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline void st16(uint16_t *p, uint16_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/* Lay out queue idx for num entries in q->area and hand it to the device (either transport). */
static void vq_setup(struct vq *q, unsigned idx, uint16_t num)
{
	q->desc = (struct vq_desc *)q->area;
	q->avail = (struct vq_avail *)(q->area + 16u * num);
	q->used = (struct vq_used *)(q->area + VQ_USED_OFF(num));
	q->num = num;
	q->avail_idx = 0;
	q->used_seen = 0;
	memset(q->area, 0, sizeof(q->area));
	q->avail->flags = AVAIL_F_NO_INTERRUPT; /* we poll */
	for (uint16_t i = 0; i < num; i++) {
		q->desc[i].addr = (uintptr_t)q->buf[i];
		q->desc[i].len = VNET_BUF_SIZE;
		q->desc[i].flags = idx == RXQ ? DESC_F_WRITE : 0;
	}
	vmmio_queue_give(vn.base, vn.legacy, idx, num, q->desc, q->avail, q->used);
}

/* Largest power of two <= min(max, VNET_QMAX), 0 if max is 0. */
static uint16_t qsize(uint32_t max)
{
	uint16_t n = VNET_QMAX;

	while (n && n > max)
		n >>= 1;
	return n;
}

/*
 * Probe the device at base; bring it up if it is a virtio-mmio (v1 legacy or v2 modern) net device.
 * Returns 0 (up), 1 (not a net device: try the next one) or -1 (error printed).
 */
static int probe(uint64_t base, uint8_t mac[6])
{
	uint32_t v, f0, f1, st;
	uint16_t nrx, ntx;

	vn.base = base;
	if (rd(R_MAGIC) != MMIO_MAGIC)
		return 1; /* nothing here: try the next one */
	v = rd(R_VERSION);
	if (rd(R_DEVICE_ID) != 1)
		return 1; /* not net (0 = placeholder slot) */
	if (v != 1 && v != 2) {
		printf("virtio: net at 0x%lx has unknown virtio-mmio version %u, skipped\n", base, v);
		return 1;
	}
	vn.legacy = v == 1;
	vn.hdr_len = vn.legacy ? HDR_LEN_LEGACY : HDR_LEN_MODERN;
	wr(R_STATUS, 0);
	if (rd(R_STATUS) != 0) {
		printf("virtio: error: device at 0x%lx did not reset\n", base);
		return -1;
	}
	wr(R_STATUS, ST_ACK);
	wr(R_STATUS, ST_ACK | ST_DRIVER);
	st = ST_ACK | ST_DRIVER;
	wr(R_DEV_FEAT_SEL, 0);
	f0 = rd(R_DEV_FEAT);
	if (vn.legacy) {
		/* 32 feature bits, no VERSION_1, no FEATURES_OK step (§4.2.4) */
		wr(R_DRV_FEAT_SEL, 0);
		wr(R_DRV_FEAT, f0 & (1u << F_NET_MAC));
		wr(L_GUEST_PAGE_SZ, VQ_PAGE);
	} else {
		wr(R_DEV_FEAT_SEL, 1);
		f1 = rd(R_DEV_FEAT);
		if (!(f1 & (1u << (F_VERSION_1 - 32)))) {
			printf("virtio: error: device at 0x%lx does not offer VERSION_1\n", base);
			goto fail;
		}
		wr(R_DRV_FEAT_SEL, 0);
		wr(R_DRV_FEAT, f0 & (1u << F_NET_MAC));
		wr(R_DRV_FEAT_SEL, 1);
		wr(R_DRV_FEAT, 1u << (F_VERSION_1 - 32));
		st |= ST_FEATURES_OK;
		wr(R_STATUS, st);
		if (!(rd(R_STATUS) & ST_FEATURES_OK)) {
			printf("virtio: error: device at 0x%lx refused our features\n", base);
			goto fail;
		}
	}
	wr(R_QUEUE_SEL, RXQ);
	nrx = qsize(rd(R_QUEUE_NUM_MAX));
	wr(R_QUEUE_SEL, TXQ);
	ntx = qsize(rd(R_QUEUE_NUM_MAX));
	if (nrx < 2 || ntx < 2) {
		printf("virtio: error: device at 0x%lx offers queues of %u/%u entries\n", base, nrx, ntx);
		goto fail;
	}
	if (vn.legacy) {
		/* legacy: a queue already in use has a non-zero PFN (the reset should have cleared it) */
		for (unsigned q = RXQ; q <= TXQ; q++) {
			wr(R_QUEUE_SEL, q);
			if (rd(L_QUEUE_PFN) != 0) {
				printf("virtio: error: device at 0x%lx queue %u already in use\n", base, q);
				goto fail;
			}
		}
	}
	vq_setup(&vn.rx, RXQ, nrx);
	vq_setup(&vn.tx, TXQ, ntx);
	vn.tx.nfree = ntx;
	for (uint16_t i = 0; i < ntx; i++)
		vn.tx.free[i] = (uint16_t)(ntx - 1 - i);

	if (f0 & (1u << F_NET_MAC)) {
		uint32_t gen = 0;
		do {
			if (!vn.legacy)
				gen = rd(R_CONFIG_GEN); /* no generation counter in the legacy layout */
			for (int i = 0; i < 6; i++)
				mac[i] = *(volatile uint8_t *)(uintptr_t)(base + R_CONFIG + (uint32_t)i);
		} while (!vn.legacy && gen != rd(R_CONFIG_GEN));
	} else {
		static const uint8_t def[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
		memcpy(mac, def, 6);
	}
	wr(R_STATUS, st | ST_DRIVER_OK);

	/* post every RX buffer */
	for (uint16_t i = 0; i < nrx; i++)
		vn.rx.avail->ring[i] = i;
	vn.rx.avail_idx = nrx;
	st16(&vn.rx.avail->idx, nrx);
	mfence();
	wr(R_QUEUE_NOTIFY, RXQ);
	vn.up = true;
	printf("virtio: net at 0x%lx %s mac=%02x:%02x:%02x:%02x:%02x:%02x rx=%u tx=%u\n", base,
	       vn.legacy ? "legacy v1" : "v2", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], nrx, ntx);
	return 0;
fail:
	wr(R_STATUS, ST_FAILED);
	return -1;
}

static int probe_cb(uint64_t base, void *mac)
{
	return probe(base, mac);
}

int vnet_init(uint8_t mac[6])
{
	unsigned seen, bad;
	int rc = vmmio_for_each_dev(probe_cb, mac, &seen, &bad);

	for (unsigned i = 0; i < bad; i++)
		printf("virtio: warning: bad virtio_mmio.device= entry, skipped\n");
	if (rc <= 0)
		return rc;
	printf("virtio: error: %s\n",
	       seen ? "no usable virtio-mmio network device" : "no virtio_mmio.device= on the cmdline");
	return -1;
}

unsigned vnet_poll(vnet_rx_fn fn, unsigned budget)
{
	struct vq *q = &vn.rx;
	uint16_t used, n = 0;
	bool dry;

	if (!vn.up)
		return 0;
	used = ld16(&q->used->idx);
	if (used == q->used_seen)
		return 0;
	/* every posted buffer consumed: the device may be holding frames until we notify */
	dry = used == q->avail_idx;
	while (q->used_seen != used && n < budget) {
		struct vq_used_elem *e = &q->used->ring[q->used_seen & (q->num - 1)];
		uint32_t id = e->id, len = e->len;

		if (id < q->num && len > vn.hdr_len && len <= VNET_BUF_SIZE)
			fn(q->buf[id] + vn.hdr_len, len - vn.hdr_len);
		if (id < q->num) {
			q->avail->ring[q->avail_idx & (q->num - 1)] = (uint16_t)id;
			q->avail_idx++;
		}
		q->used_seen++;
		n++;
	}
	st16(&q->avail->idx, q->avail_idx);
	if (dry)
		vn.rx_kick = true;
	vn.st.rx += n;
	return n;
}

static void tx_reclaim(void)
{
	struct vq *q = &vn.tx;
	uint16_t used = ld16(&q->used->idx);

	while (q->used_seen != used) {
		uint32_t id = q->used->ring[q->used_seen & (q->num - 1)].id;

		if (id < q->num && q->nfree < q->num)
			q->free[q->nfree++] = (uint16_t)id;
		q->used_seen++;
	}
}

uint8_t *vnet_tx_alloc(void)
{
	struct vq *q = &vn.tx;

	if (!vn.up)
		return NULL;
	if (!vn.tx_held) {
		if (!q->nfree)
			tx_reclaim();
		if (!q->nfree) {
			vn.st.tx_full++;
			return NULL;
		}
		vn.tx_cur = q->free[--q->nfree];
		vn.tx_held = true;
	}
	return q->buf[vn.tx_cur] + vn.hdr_len;
}

void vnet_tx_commit(size_t len)
{
	struct vq *q = &vn.tx;
	uint16_t id;

	if (!vn.tx_held)
		return;
	if (len < 14 || len > VNET_FRAME_MAX)
		return; /* keep the buffer for the next alloc */
	id = vn.tx_cur;
	vn.tx_held = false;
	memset(q->buf[id], 0, vn.hdr_len);
	q->desc[id].len = (uint32_t)(len + vn.hdr_len);
	q->desc[id].flags = 0;
	q->avail->ring[q->avail_idx & (q->num - 1)] = id;
	q->avail_idx++;
	st16(&q->avail->idx, q->avail_idx); /* release: descriptor and buffer are visible first */
	vn.tx_pending++;
	vn.st.tx++;
}

void vnet_flush(void)
{
	if (vn.tx_pending) {
		vn.tx_pending = 0;
		mfence(); /* avail.idx store before the used.flags load */
		if (!(ld16(&vn.tx.used->flags) & USED_F_NO_NOTIFY)) {
			wr(R_QUEUE_NOTIFY, TXQ);
			vn.st.kicks++;
		}
		tx_reclaim();
	}
	if (vn.rx_kick) {
		vn.rx_kick = false;
		mfence();
		wr(R_QUEUE_NOTIFY, RXQ);
		vn.st.kicks++;
	}
}

void vnet_get_stats(struct vnet_stats *st)
{
	*st = vn.st;
}
