/* blk.c — polling virtio-mmio (modern v2 or legacy v1) block driver of the test guest: one request queue. */
#include "blk.h"
#include "virtio_mmio.h"

#define F_RO 5
#define F_FLUSH 9

#define QMAX 64 /* entries we use at most: BLK_MAX_BATCH * 3 fit */
#define USED_OFF VQ_USED_OFF(QMAX)

struct desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct req_hdr {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};

static struct {
	uint8_t area[USED_OFF + VQ_PAGE] __attribute__((aligned(VQ_PAGE))); /* rings laid out for QMAX */
	struct req_hdr hdr[BLK_MAX_BATCH];
	uint8_t status[BLK_MAX_BATCH];
	uint64_t base;
	bool up, legacy, ro, flush;
	uint16_t num, avail_idx, used_seen;
	uint64_t sectors;
	struct desc *desc;
	uint16_t *avail; /* flags, idx, ring[num] */
	volatile uint8_t *used; /* flags, idx, {u32 id, u32 len}[num] */
} bk;

static inline uint32_t rd(uint32_t off)
{
	return *(volatile uint32_t *)(uintptr_t)(bk.base + off);
}

static inline void wr(uint32_t off, uint32_t v)
{
	*(volatile uint32_t *)(uintptr_t)(bk.base + off) = v;
}

static void queue_setup(void)
{
	bk.desc = (struct desc *)bk.area;
	bk.avail = (uint16_t *)(bk.area + 16u * bk.num);
	bk.used = bk.area + USED_OFF;
	memset(bk.area, 0, sizeof(bk.area));
	bk.avail[0] = AVAIL_F_NO_INTERRUPT; /* we poll */
	bk.avail_idx = bk.used_seen = 0;
	vmmio_queue_give(bk.base, bk.legacy, 0, bk.num, bk.desc, bk.avail, (const void *)bk.used);
}

/* 0 up, 1 not a block device, -1 error (printed). */
static int probe(uint64_t base)
{
	uint32_t v, f0, f1, st = ST_ACK | ST_DRIVER, want, max;

	bk.base = base;
	if (rd(R_MAGIC) != MMIO_MAGIC || rd(R_DEVICE_ID) != 2)
		return 1;
	v = rd(R_VERSION);
	if (v != 1 && v != 2)
		return 1;
	bk.legacy = v == 1;
	wr(R_STATUS, 0);
	wr(R_STATUS, ST_ACK);
	wr(R_STATUS, st);
	wr(R_DEV_FEAT_SEL, 0);
	f0 = rd(R_DEV_FEAT);
	want = f0 & ((1u << F_RO) | (1u << F_FLUSH));
	wr(R_DRV_FEAT_SEL, 0);
	wr(R_DRV_FEAT, want);
	if (bk.legacy) {
		wr(L_GUEST_PAGE_SZ, VQ_PAGE);
	} else {
		wr(R_DEV_FEAT_SEL, 1);
		f1 = rd(R_DEV_FEAT);
		if (!(f1 & (1u << (F_VERSION_1 - 32)))) {
			printf("virtio: error: blk at 0x%lx does not offer VERSION_1\n", base);
			goto fail;
		}
		wr(R_DRV_FEAT_SEL, 1);
		wr(R_DRV_FEAT, 1u << (F_VERSION_1 - 32));
		st |= ST_FEATURES_OK;
		wr(R_STATUS, st);
		if (!(rd(R_STATUS) & ST_FEATURES_OK)) {
			printf("virtio: error: blk at 0x%lx refused our features\n", base);
			goto fail;
		}
	}
	bk.ro = want & (1u << F_RO);
	bk.flush = want & (1u << F_FLUSH);
	wr(R_QUEUE_SEL, 0);
	max = rd(R_QUEUE_NUM_MAX);
	for (bk.num = QMAX; bk.num > max; bk.num >>= 1)
		;
	if (bk.num < 4) {
		printf("virtio: error: blk at 0x%lx offers a queue of %u entries\n", base, max);
		goto fail;
	}
	queue_setup();
	bk.sectors = (uint64_t) * (volatile uint32_t *)(uintptr_t)(base + R_CONFIG) |
		     (uint64_t) * (volatile uint32_t *)(uintptr_t)(base + R_CONFIG + 4) << 32;
	wr(R_STATUS, st | ST_DRIVER_OK);
	bk.up = true;
	printf("virtio: blk at 0x%lx %s sectors=%lu ro=%d flush=%d queue=%u\n", base,
	       bk.legacy ? "legacy v1" : "v2", bk.sectors, bk.ro, bk.flush, bk.num);
	return 0;
fail:
	wr(R_STATUS, ST_FAILED);
	return -1;
}

static int probe_cb(uint64_t base, void *opaque)
{
	(void)opaque;
	return probe(base);
}

int blk_init(void)
{
	unsigned seen, bad;
	int rc = vmmio_for_each_dev(probe_cb, NULL, &seen, &bad);

	if (rc <= 0)
		return rc;
	printf("virtio: error: no virtio-mmio block device\n");
	return -1;
}

uint64_t blk_sectors(void)
{
	return bk.sectors;
}

bool blk_readonly(void)
{
	return bk.ro;
}

bool blk_has_flush(void)
{
	return bk.flush;
}

void blk_run(struct blk_op *ops, unsigned n)
{
	uint16_t target;
	uint64_t t0 = now_ns();
	bool warned = false;

	if (n > BLK_MAX_BATCH || 3 * n > bk.num)
		n = bk.num / 3 < BLK_MAX_BATCH ? bk.num / 3 : BLK_MAX_BATCH;
	for (unsigned i = 0; i < n; i++) {
		struct desc *d = &bk.desc[3 * i];
		unsigned k = 0;

		ops[i].status = BLK_S_NONE;
		bk.status[i] = BLK_S_NONE;
		bk.hdr[i] = (struct req_hdr){.type = ops[i].type, .sector = ops[i].sector};
		d[k] = (struct desc){(uintptr_t)&bk.hdr[i], sizeof(bk.hdr[i]), DESC_F_NEXT,
				     (uint16_t)(3 * i + 1)};
		k++;
		if (ops[i].len) {
			uint16_t fl = DESC_F_NEXT | (ops[i].type == BLK_T_OUT ? 0 : DESC_F_WRITE);

			d[k] = (struct desc){(uintptr_t)ops[i].buf, ops[i].len, fl, (uint16_t)(3 * i + 2)};
			k++;
		} else {
			d[0].next = (uint16_t)(3 * i + 2);
			d[1] = (struct desc){0, 0, 0, 0};
		}
		bk.desc[3 * i + 2] = (struct desc){(uintptr_t)&bk.status[i], 1, DESC_F_WRITE, 0};
		bk.avail[2 + (bk.avail_idx & (bk.num - 1))] = (uint16_t)(3 * i);
		bk.avail_idx++;
	}
	__atomic_store_n(&bk.avail[1], bk.avail_idx, __ATOMIC_RELEASE);
	mfence();
	wr(R_QUEUE_NOTIFY, 0);
	target = (uint16_t)(bk.used_seen + n);
	for (;;) {
		uint16_t used = __atomic_load_n((volatile uint16_t *)(bk.used + 2), __ATOMIC_ACQUIRE);

		while (bk.used_seen != used) {
			uint32_t id = *(volatile uint32_t *)(bk.used + 4 + 8 * (bk.used_seen & (bk.num - 1)));

			if (id % 3 == 0 && id / 3 < n)
				ops[id / 3].status = bk.status[id / 3];
			bk.used_seen++;
		}
		if (bk.used_seen == target)
			break;
		cpu_relax();
		if (!warned && now_ns() - t0 > 10000000000ull) {
			printf("disk: warning: %u requests pending for 10 s\n", n);
			warned = true;
		}
	}
}
