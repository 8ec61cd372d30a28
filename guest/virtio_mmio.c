/* virtio_mmio.c — what the guest's virtio-mmio drivers share: finding devices, handing queues over. */
#include "guest.h"
#include "virtio_mmio.h"

static inline void wr(uint64_t base, uint32_t off, uint32_t v)
{
	*(volatile uint32_t *)(uintptr_t)(base + off) = v;
}

/* A hex (0x...) or decimal number of len chars. */
static uint64_t hexnum(const char *s, size_t len, bool *ok)
{
	uint64_t v = 0;
	size_t i = 0;
	bool hex = len > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X');

	*ok = len > 0;
	if (hex)
		i = 2;
	for (; i < len; i++) {
		char c = s[i];
		unsigned d;

		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (hex && c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (hex && c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			d = 99;
		if (d == 99 || v >> 59) {
			*ok = false;
			return 0;
		}
		v = v * (hex ? 16 : 10) + d;
	}
	return v;
}

/* Parse "<size>[K|M]@<base>[:<irq>]" (len chars). Returns 0 and the base, or -1. */
static int parse_mmio_dev(const char *s, size_t len, uint64_t *base)
{
	size_t at = 0, colon;
	bool ok;

	while (at < len && s[at] != '@')
		at++;
	if (at == 0 || at >= len)
		return -1;
	colon = at + 1;
	while (colon < len && s[colon] != ':')
		colon++;
	*base = hexnum(s + at + 1, colon - at - 1, &ok);
	/* The device must sit in the uncached MMIO hole that boot.S maps (3..4 GiB), 4-byte aligned. */
	if (!ok || *base < 0xc0000000ull || *base > 0xffffffffull - 0x200 || (*base & 3))
		return -1;
	return 0;
}

int vmmio_for_each_dev(int (*probe)(uint64_t base, void *opaque), void *opaque, unsigned *seen, unsigned *bad)
{
	static const char key[] = "virtio_mmio.device=";
	const size_t klen = sizeof(key) - 1;

	*seen = *bad = 0;
	for (const char *p = cmdline_raw(); *p;) {
		const char *e;
		uint64_t base;
		int rc;

		while (*p == ' ')
			p++;
		for (e = p; *e && *e != ' '; e++)
			;
		if ((size_t)(e - p) > klen && !memcmp(p, key, klen)) {
			(*seen)++;
			if (parse_mmio_dev(p + klen, (size_t)(e - p) - klen, &base))
				(*bad)++;
			else if ((rc = probe(base, opaque)) <= 0)
				return rc;
		}
		p = e;
	}
	return 1;
}

void vmmio_queue_give(uint64_t base, bool legacy, unsigned idx, uint16_t num, const void *desc,
		      const void *avail, const void *used)
{
	uint64_t d = (uintptr_t)desc, a = (uintptr_t)avail, u = (uintptr_t)used;

	wr(base, R_QUEUE_SEL, idx);
	wr(base, R_QUEUE_NUM, num);
	if (legacy) {
		/* the legacy used ring sits at the next QueueAlign boundary after the avail ring */
		wr(base, L_QUEUE_ALIGN, VQ_PAGE);
		wr(base, L_QUEUE_PFN, (uint32_t)(d / VQ_PAGE)); /* the image is below 16 MiB: fits */
		return;
	}
	wr(base, R_QUEUE_DESC_LO, (uint32_t)d);
	wr(base, R_QUEUE_DESC_HI, (uint32_t)(d >> 32));
	wr(base, R_QUEUE_AVAIL_LO, (uint32_t)a);
	wr(base, R_QUEUE_AVAIL_HI, (uint32_t)(a >> 32));
	wr(base, R_QUEUE_USED_LO, (uint32_t)u);
	wr(base, R_QUEUE_USED_HI, (uint32_t)(u >> 32));
	wr(base, R_QUEUE_READY, 1);
}
