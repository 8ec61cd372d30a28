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

static uint64_t hexnum(const char *s, size_t len, bool *ok)
{
	uint64_t v = 0;
	size_t i = 0;

	*ok = len > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
	for (i = 2; *ok && i < len; i++) {
		char c = s[i];
		unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
			     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
			     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
						    : 99;
		if (d == 99 || v >> 59)
			*ok = false;
		v = v * 16 + d;
	}
	return v;
}

/* "<size>@0x<base>[:<irq>]" -> base in the uncached MMIO hole, or -1. */
static int parse_mmio_dev(const char *s, size_t len, uint64_t *base)
{
	size_t at = 0, colon;
	bool ok;

	while (at < len && s[at] != '@')
		at++;
	if (at == 0 || at >= len)
		return -1;
	for (colon = at + 1; colon < len && s[colon] != ':'; colon++)
		;
	*base = hexnum(s + at + 1, colon - at - 1, &ok);
	if (!ok || *base < 0xc0000000ull || *base > 0xffffffffull - 0x200 || (*base & 3))
		return -1;
	return 0;
}

static void queue_setup(void)
{
	uint64_t d, a, u;

	bk.desc = (struct desc *)bk.area;
	bk.avail = (uint16_t *)(bk.area + 16u * bk.num);
	bk.used = bk.area + USED_OFF;
	memset(bk.area, 0, sizeof(bk.area));
	bk.avail[0] = AVAIL_F_NO_INTERRUPT; /* we poll */
	bk.avail_idx = bk.used_seen = 0;
	d = (uintptr_t)bk.desc;
	a = (uintptr_t)bk.avail;
	u = (uintptr_t)bk.used;
	wr(R_QUEUE_SEL, 0);
	wr(R_QUEUE_NUM, bk.num);
	if (bk.legacy) {
		/* the legacy used ring sits at the next QueueAlign boundary after the avail ring */
		wr(L_QUEUE_ALIGN, VQ_PAGE);
		wr(L_QUEUE_PFN, (uint32_t)(d / VQ_PAGE));
		return;
	}
	wr(R_QUEUE_DESC_LO, (uint32_t)d);
	wr(R_QUEUE_DESC_HI, (uint32_t)(d >> 32));
	wr(R_QUEUE_AVAIL_LO, (uint32_t)a);
	wr(R_QUEUE_AVAIL_HI, (uint32_t)(a >> 32));
	wr(R_QUEUE_USED_LO, (uint32_t)u);
	wr(R_QUEUE_USED_HI, (uint32_t)(u >> 32));
	wr(R_QUEUE_READY, 1);
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

int blk_init(void)
{
	static const char key[] = "virtio_mmio.device=";
	const size_t klen = sizeof(key) - 1;

	for (const char *p = cmdline_raw(); *p;) {
		const char *e;
		uint64_t base;
		int rc;

		while (*p == ' ')
			p++;
		for (e = p; *e && *e != ' '; e++)
			;
		if ((size_t)(e - p) > klen && !memcmp(p, key, klen) &&
		    !parse_mmio_dev(p + klen, (size_t)(e - p) - klen, &base) && (rc = probe(base)) <= 0)
			return rc;
		p = e;
	}
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
