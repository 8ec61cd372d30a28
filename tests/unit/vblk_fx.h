/* vblk_fx.h — the virtio-blk unit tests' harness: a device over buffer RAM and a temp image, crafted
 * rings, requests (tests/unit/test_virtio_blk.c, test_disk_repl.c). */
#ifndef DOPPEL_TESTS_VBLK_FX_H
#define DOPPEL_TESTS_VBLK_FX_H

#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hv/dev/virtio_blk.h"
#include "hv/mem.h"

#define RAM_SIZE (4u << 20)
#define QN 32
#define DESC 0x1000u
#define AVAIL 0x1400u
#define USED 0x1800u
#define HDR(i) (0x10000u + 0x100u * (i))
#define STATUS(i) (0x20000u + (i))
#define DATA(i) (0x100000u + 0x10000u * (i))
#define DISK_SECTORS 2048u /* 1 MiB */

struct fx {
	void *ram;
	struct guest_mem gm;
	struct virtio_blk *d;
	char path[64];
	int fd; /* the test's own view of the image */
	uint16_t avail_idx;
	bool closed; /* DMA gate */
	int irqs;
};

static inline uint8_t *gp(struct fx *f, uint64_t gpa)
{
	return (uint8_t *)f->ram + gpa;
}

static inline bool gate_begin(void *o)
{
	return !((struct fx *)o)->closed;
}

static inline void gate_end(void *o)
{
	(void)o;
}

static inline void irq_cb(void *o, int level)
{
	if (level == VIRTIO_IRQ_WAKE) /* a wake for a polling driver, not an interrupt */
		return;
	if (level)
		((struct fx *)o)->irqs++;
}

static inline uint32_t rd(struct virtio_blk *d, uint64_t off)
{
	uint32_t v = 0;

	assert_int_equal(virtio_blk_io(d, off, &v, 4, false), 0);
	return v;
}

static inline void wr(struct virtio_blk *d, uint64_t off, uint32_t v)
{
	assert_int_equal(virtio_blk_io(d, off, &v, 4, true), 0);
}

static inline void bring_up(struct virtio_blk *d)
{
	wr(d, VMMIO_STATUS, 0);
	wr(d, VMMIO_STATUS, 3);
	wr(d, VMMIO_DRV_FEATURES_SEL, 0);
	wr(d, VMMIO_DRV_FEATURES,
	   (1u << VIRTIO_BLK_F_FLUSH) | (1u << VIRTIO_BLK_F_DISCARD) | (1u << VIRTIO_BLK_F_WRITE_ZEROES));
	wr(d, VMMIO_DRV_FEATURES_SEL, 1);
	wr(d, VMMIO_DRV_FEATURES, 1);
	wr(d, VMMIO_STATUS, 0xb);
	assert_int_equal(rd(d, VMMIO_STATUS), 0xb);
	wr(d, VMMIO_QUEUE_SEL, 0);
	assert_int_equal(rd(d, VMMIO_QUEUE_NUM_MAX), VBLK_QUEUE_SIZE);
	wr(d, VMMIO_QUEUE_NUM, QN);
	wr(d, VMMIO_QUEUE_DESC_LO, DESC);
	wr(d, VMMIO_QUEUE_DRIVER_LO, AVAIL);
	wr(d, VMMIO_QUEUE_DEVICE_LO, USED);
	wr(d, VMMIO_QUEUE_READY, 1);
	wr(d, VMMIO_STATUS, 0xf);
	assert_int_equal(rd(d, VMMIO_STATUS), 0xf);
}

static inline struct virtio_blk *make_dev(struct fx *f, int fd, uint64_t cap, bool ro, const char *id)
{
	struct virtio_blk *d;

	assert_int_equal(virtio_blk_create(&f->gm, fd, cap, ro, id, 2, &d), 0);
	virtio_blk_set_gate(d, gate_begin, gate_end, f);
	virtio_blk_set_irq(d, irq_cb, f);
	return d;
}

static inline int setup_ro(void **state, bool ro)
{
	struct fx *f = calloc(1, sizeof(*f));
	int fd;

	f->ram = aligned_alloc(4096, RAM_SIZE);
	memset(f->ram, 0, RAM_SIZE);
	assert_int_equal(mem_init_buffer(&f->gm, f->ram, RAM_SIZE), 0);
	snprintf(f->path, sizeof(f->path), "/tmp/test_vblk.XXXXXX");
	f->fd = mkstemp(f->path);
	assert_true(f->fd >= 0);
	assert_int_equal(ftruncate(f->fd, DISK_SECTORS * 512ull), 0);
	fd = open(f->path, ro ? O_RDONLY : O_RDWR);
	assert_true(fd >= 0);
	f->d = make_dev(f, fd, DISK_SECTORS * 512ull, ro, "serial-1");
	bring_up(f->d);
	*state = f;
	return 0;
}

static inline int setup(void **state)
{
	return setup_ro(state, false);
}

static inline int setup_readonly(void **state)
{
	return setup_ro(state, true);
}

static inline int teardown(void **state)
{
	struct fx *f = *state;

	virtio_blk_destroy(f->d);
	close(f->fd);
	unlink(f->path);
	mem_destroy(&f->gm);
	free(f->ram);
	free(f);
	return 0;
}

static inline void set_desc(struct fx *f, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
			    uint16_t next)
{
	struct vring_desc *t = (struct vring_desc *)gp(f, DESC);

	t[i] = (struct vring_desc){.addr = addr, .len = len, .flags = flags, .next = next};
}

/* Build request `slot` (descriptors 3*slot..): header, optional data, status; offer it. */
static inline void req(struct fx *f, unsigned slot, uint32_t type, uint64_t sector, uint32_t len,
		       bool dev_writes_data)
{
	uint8_t *h = gp(f, HDR(slot));
	unsigned d0 = 3 * slot;

	memcpy(h, &type, 4);
	memset(h + 4, 0, 4);
	memcpy(h + 8, &sector, 8);
	*gp(f, STATUS(slot)) = 0xee;
	if (len) {
		set_desc(f, d0, HDR(slot), VBLK_HDR_LEN, VRING_DESC_F_NEXT, (uint16_t)(d0 + 1));
		set_desc(f, d0 + 1, DATA(slot), len,
			 VRING_DESC_F_NEXT | (dev_writes_data ? VRING_DESC_F_WRITE : 0), (uint16_t)(d0 + 2));
	} else {
		set_desc(f, d0, HDR(slot), VBLK_HDR_LEN, VRING_DESC_F_NEXT, (uint16_t)(d0 + 2));
	}
	set_desc(f, d0 + 2, STATUS(slot), 1, VRING_DESC_F_WRITE, 0);
	((uint16_t *)gp(f, AVAIL))[2 + f->avail_idx % QN] = (uint16_t)d0;
	((uint16_t *)gp(f, AVAIL))[1] = ++f->avail_idx;
}

static inline uint16_t used_idx(struct fx *f)
{
	return *(uint16_t *)gp(f, USED + 2);
}

static inline uint32_t used_len_of(struct fx *f, uint16_t head)
{
	for (unsigned s = 0; s < QN; s++) {
		uint32_t id, len;

		memcpy(&id, gp(f, USED + 4 + 8 * s), 4);
		memcpy(&len, gp(f, USED + 4 + 8 * s + 4), 4);
		if (id == head)
			return len;
	}
	return ~0u;
}

static inline uint32_t used_len_at(struct fx *f, unsigned pos)
{
	uint32_t len;

	memcpy(&len, gp(f, USED + 4 + 8 * (pos % QN) + 4), 4);
	return len;
}

/* Notify and wait until every request handed to the workers has completed. */
static inline void run(struct fx *f)
{
	wr(f->d, VMMIO_QUEUE_NOTIFY, 0);
	virtio_blk_drain(f->d);
}

static inline void put_seg(struct fx *f, unsigned slot, uint64_t sector, uint32_t num, uint32_t flags)
{
	uint8_t *p = gp(f, DATA(slot));

	memcpy(p, &sector, 8);
	memcpy(p + 8, &num, 4);
	memcpy(p + 12, &flags, 4);
}

#endif
