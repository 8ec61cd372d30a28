/* test_virtio_blk.c — virtio-blk over crafted rings: validation, I/O, errors, GET_ID, discard, state, pause/resume, --disk. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "hv/dev/virtio_blk.h"
#include "hv/mem.h"
#include "replication/disk_repl.h"
#include "replication/rw.h"
#include "replication/stream.h"
#include "vmm/diskopt.h"

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

static uint8_t *gp(struct fx *f, uint64_t gpa)
{
	return (uint8_t *)f->ram + gpa;
}

static bool gate_begin(void *o)
{
	return !((struct fx *)o)->closed;
}

static void gate_end(void *o)
{
	(void)o;
}

static void irq_cb(void *o, int level)
{
	if (level)
		((struct fx *)o)->irqs++;
}

static uint32_t rd(struct virtio_blk *d, uint64_t off)
{
	uint32_t v = 0;

	assert_int_equal(virtio_blk_io(d, off, &v, 4, false), 0);
	return v;
}

static void wr(struct virtio_blk *d, uint64_t off, uint32_t v)
{
	assert_int_equal(virtio_blk_io(d, off, &v, 4, true), 0);
}

static void bring_up(struct virtio_blk *d)
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

static struct virtio_blk *make_dev(struct fx *f, int fd, uint64_t cap, bool ro, const char *id)
{
	struct virtio_blk *d;

	assert_int_equal(virtio_blk_create(&f->gm, fd, cap, ro, id, 2, &d), 0);
	virtio_blk_set_gate(d, gate_begin, gate_end, f);
	virtio_blk_set_irq(d, irq_cb, f);
	return d;
}

static int setup_ro(void **state, bool ro)
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

static int setup(void **state)
{
	return setup_ro(state, false);
}

static int setup_readonly(void **state)
{
	return setup_ro(state, true);
}

static int teardown(void **state)
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

static void set_desc(struct fx *f, unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	struct vring_desc *t = (struct vring_desc *)gp(f, DESC);

	t[i] = (struct vring_desc){.addr = addr, .len = len, .flags = flags, .next = next};
}

/* Build request `slot` (descriptors 3*slot..): header, optional data, status; offer it. */
static void req(struct fx *f, unsigned slot, uint32_t type, uint64_t sector, uint32_t len,
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

static uint16_t used_idx(struct fx *f)
{
	return *(uint16_t *)gp(f, USED + 2);
}

static uint32_t used_len_of(struct fx *f, uint16_t head)
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

static uint32_t used_len_at(struct fx *f, unsigned pos)
{
	uint32_t len;

	memcpy(&len, gp(f, USED + 4 + 8 * (pos % QN) + 4), 4);
	return len;
}

/* Notify and wait until every request handed to the workers has completed. */
static void run(struct fx *f)
{
	wr(f->d, VMMIO_QUEUE_NOTIFY, 0);
	virtio_blk_drain(f->d);
}

static void test_read_write_flush(void **state)
{
	struct fx *f = *state;
	uint8_t back[4096];

	for (unsigned i = 0; i < 4096; i++)
		gp(f, DATA(0))[i] = (uint8_t)(i * 7 + 1);
	req(f, 0, VIRTIO_BLK_T_OUT, 8, 4096, false);
	run(f);
	assert_int_equal(used_idx(f), 1);
	assert_int_equal(*gp(f, STATUS(0)), VIRTIO_BLK_S_OK);
	assert_int_equal(pread(f->fd, back, 4096, 8 * 512), 4096);
	assert_memory_equal(back, gp(f, DATA(0)), 4096);

	uint64_t *dirty = calloc(RAM_SIZE / 4096 / 64 + 1, 8);
	mem_dev_dirty_take(&f->gm, dirty); /* clear */
	memset(dirty, 0, RAM_SIZE / 4096 / 8 + 8);
	req(f, 1, VIRTIO_BLK_T_IN, 8, 4096, true);
	req(f, 2, VIRTIO_BLK_T_FLUSH, 0, 0, false);
	run(f);
	assert_int_equal(used_idx(f), 3);
	assert_int_equal(*gp(f, STATUS(1)), VIRTIO_BLK_S_OK);
	assert_int_equal(*gp(f, STATUS(2)), VIRTIO_BLK_S_OK);
	assert_memory_equal(gp(f, DATA(1)), back, 4096);
	assert_int_equal(used_len_of(f, 3), 4097);
	assert_int_equal(used_len_of(f, 6), 1);
	/* the read data, the status byte and the used ring were marked device-dirty */
	mem_dev_dirty_take(&f->gm, dirty);
	assert_true(dirty[(DATA(1) / 4096) / 64] & (1ull << ((DATA(1) / 4096) % 64)));
	assert_true(dirty[(STATUS(1) / 4096) / 64] & (1ull << ((STATUS(1) / 4096) % 64)));
	assert_true(dirty[(USED / 4096) / 64] & (1ull << ((USED / 4096) % 64)));
	free(dirty);
	assert_true(f->irqs > 0); /* NO_INTERRUPT not set: interrupts raised */
}

static void test_bad_requests(void **state)
{
	struct fx *f = *state;
	struct virtio_blk_stats st;

	req(f, 0, VIRTIO_BLK_T_IN, DISK_SECTORS, 512, true); /* one past the end */
	req(f, 1, VIRTIO_BLK_T_IN, DISK_SECTORS - 1, 512, true); /* the last sector: fine */
	req(f, 2, VIRTIO_BLK_T_OUT, UINT64_MAX, 512, false); /* overflowing sector */
	req(f, 3, VIRTIO_BLK_T_OUT, 0, 100, false); /* not a multiple of 512 */
	req(f, 4, 77, 0, 0, false); /* unknown type */
	req(f, 5, VIRTIO_BLK_T_IN, 0, 512, false); /* read into a device-readable buffer */
	run(f);
	assert_int_equal(used_idx(f), 6);
	assert_int_equal(*gp(f, STATUS(0)), VIRTIO_BLK_S_IOERR);
	assert_int_equal(*gp(f, STATUS(1)), VIRTIO_BLK_S_OK);
	assert_int_equal(*gp(f, STATUS(2)), VIRTIO_BLK_S_IOERR);
	assert_int_equal(*gp(f, STATUS(3)), VIRTIO_BLK_S_IOERR);
	assert_int_equal(*gp(f, STATUS(4)), VIRTIO_BLK_S_UNSUPP);
	assert_int_equal(*gp(f, STATUS(5)), VIRTIO_BLK_S_IOERR);

	/* short header (8 bytes) */
	req(f, 0, VIRTIO_BLK_T_IN, 0, 512, true);
	set_desc(f, 0, HDR(0), 8, VRING_DESC_F_NEXT, 1);
	/* no writable status byte: the status descriptor is device-readable */
	req(f, 1, VIRTIO_BLK_T_FLUSH, 0, 0, false);
	set_desc(f, 5, STATUS(1), 1, 0, 0);
	run(f);
	assert_int_equal(used_idx(f), 8);
	assert_int_equal(*gp(f, STATUS(0)), VIRTIO_BLK_S_IOERR);
	assert_int_equal(*gp(f, STATUS(1)), 0xee); /* untouched */
	assert_int_equal(used_len_at(f, 7), 0);
	virtio_blk_get_stats(f->d, &st);
	assert_true(st.bad_requests >= 6);
	assert_null(virtio_blk_broken(f->d));

	/* a descriptor outside guest RAM breaks the device, never the host */
	req(f, 2, VIRTIO_BLK_T_IN, 0, 512, true);
	set_desc(f, 7, RAM_SIZE - 256, 512, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 8);
	run(f);
	assert_non_null(virtio_blk_broken(f->d));
	assert_true(rd(f->d, VMMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET);
}

static void test_readonly(void **state)
{
	struct fx *f = *state;
	uint8_t back[512], zero[512] = {0};

	wr(f->d, VMMIO_DEV_FEATURES_SEL, 0);
	assert_true(rd(f->d, VMMIO_DEV_FEATURES) & (1u << VIRTIO_BLK_F_RO));
	memset(gp(f, DATA(0)), 0xab, 512);
	req(f, 0, VIRTIO_BLK_T_OUT, 0, 512, false);
	req(f, 1, VIRTIO_BLK_T_FLUSH, 0, 0, false);
	req(f, 2, VIRTIO_BLK_T_IN, 0, 512, true);
	run(f);
	assert_int_equal(*gp(f, STATUS(0)), VIRTIO_BLK_S_IOERR);
	assert_int_equal(*gp(f, STATUS(1)), VIRTIO_BLK_S_OK);
	assert_int_equal(*gp(f, STATUS(2)), VIRTIO_BLK_S_OK);
	assert_int_equal(pread(f->fd, back, 512, 0), 512);
	assert_memory_equal(back, zero, 512);
}

static void test_get_id(void **state)
{
	struct fx *f = *state;
	char want[VIRTIO_BLK_ID_BYTES] = "serial-1";

	memset(gp(f, DATA(0)), 0x55, 64);
	req(f, 0, VIRTIO_BLK_T_GET_ID, 0, VIRTIO_BLK_ID_BYTES, true);
	req(f, 1, VIRTIO_BLK_T_GET_ID, 0, 4, true); /* short buffer: truncated */
	run(f);
	assert_int_equal(*gp(f, STATUS(0)), VIRTIO_BLK_S_OK);
	assert_memory_equal(gp(f, DATA(0)), want, VIRTIO_BLK_ID_BYTES);
	assert_int_equal(*gp(f, STATUS(1)), VIRTIO_BLK_S_OK);
	assert_memory_equal(gp(f, DATA(1)), "seri", 4);
}

static void put_seg(struct fx *f, unsigned slot, uint64_t sector, uint32_t num, uint32_t flags)
{
	uint8_t *p = gp(f, DATA(slot));

	memcpy(p, &sector, 8);
	memcpy(p + 8, &num, 4);
	memcpy(p + 12, &flags, 4);
}

static void test_discard_write_zeroes(void **state)
{
	struct fx *f = *state;
	uint8_t buf[8192], zero[8192] = {0};

	memset(buf, 0x77, sizeof(buf));
	assert_int_equal(pwrite(f->fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	put_seg(f, 0, 0, 8, 0);
	req(f, 0, VIRTIO_BLK_T_WRITE_ZEROES, 0, 16, false);
	put_seg(f, 1, 8, 8, 1); /* unmap allowed */
	req(f, 1, VIRTIO_BLK_T_WRITE_ZEROES, 0, 16, false);
	put_seg(f, 2, 0, 8, 0);
	req(f, 2, VIRTIO_BLK_T_DISCARD, 0, 16, false);
	put_seg(f, 3, 0, 8, 1); /* discard with a flag: unsupported */
	req(f, 3, VIRTIO_BLK_T_DISCARD, 0, 16, false);
	put_seg(f, 4, DISK_SECTORS - 4, 8, 0); /* past the end */
	req(f, 4, VIRTIO_BLK_T_WRITE_ZEROES, 0, 16, false);
	req(f, 5, VIRTIO_BLK_T_DISCARD, 0, 20, false); /* not a whole segment */
	run(f);
	assert_int_equal(*gp(f, STATUS(0)), VIRTIO_BLK_S_OK);
	assert_int_equal(*gp(f, STATUS(1)), VIRTIO_BLK_S_OK);
	assert_int_equal(*gp(f, STATUS(2)), VIRTIO_BLK_S_OK);
	assert_int_equal(*gp(f, STATUS(3)), VIRTIO_BLK_S_UNSUPP);
	assert_int_equal(*gp(f, STATUS(4)), VIRTIO_BLK_S_IOERR);
	assert_int_equal(*gp(f, STATUS(5)), VIRTIO_BLK_S_IOERR);
	assert_int_equal(pread(f->fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	assert_memory_equal(buf, zero, sizeof(buf));
}

static void test_many_in_flight(void **state)
{
	struct fx *f = *state;

	for (unsigned i = 0; i < 5; i++) {
		memset(gp(f, DATA(i)), (int)(0x10 + i), 65536);
		req(f, i, VIRTIO_BLK_T_OUT, 128ull * i, 65536, false);
	}
	run(f);
	assert_int_equal(used_idx(f), 5);
	for (unsigned i = 0; i < 5; i++) {
		assert_int_equal(*gp(f, STATUS(i)), VIRTIO_BLK_S_OK);
		memset(gp(f, DATA(i)), 0, 65536);
		req(f, i, VIRTIO_BLK_T_IN, 128ull * i, 65536, true);
	}
	run(f);
	assert_int_equal(used_idx(f), 10);
	for (unsigned i = 0; i < 5; i++) {
		assert_int_equal(*gp(f, STATUS(i)), VIRTIO_BLK_S_OK);
		assert_int_equal(gp(f, DATA(i))[i * 1000], 0x10 + i);
	}
	assert_int_equal(virtio_blk_inflight(f->d), 0);
}

/* A failing host write (/dev/full: ENOSPC) reaches the guest as IOERR; the device keeps working. */
static void test_host_io_error(void **state)
{
	struct fx *f = *state;
	int fd = open("/dev/full", O_RDWR);
	struct virtio_blk *d;

	assert_true(fd >= 0);
	virtio_blk_destroy(f->d);
	f->d = d = make_dev(f, fd, 1 << 20, false, NULL);
	bring_up(d);
	f->avail_idx = 0;
	memset(gp(f, USED), 0, 0x100);
	req(f, 0, VIRTIO_BLK_T_OUT, 0, 4096, false);
	req(f, 1, VIRTIO_BLK_T_IN, 0, 4096, true);
	run(f);
	assert_int_equal(used_idx(f), 2);
	assert_int_equal(*gp(f, STATUS(0)), VIRTIO_BLK_S_IOERR);
	assert_int_equal(*gp(f, STATUS(1)), VIRTIO_BLK_S_OK); /* /dev/full reads zeros */
	assert_null(virtio_blk_broken(d));
}

static void test_state_round_trip(void **state)
{
	struct fx *f = *state;
	size_t n = virtio_blk_state_size(f->d);
	uint8_t *a = malloc(n), *b = malloc(n);
	struct virtio_blk *d2;
	int fd2;

	req(f, 0, VIRTIO_BLK_T_FLUSH, 0, 0, false);
	run(f);
	assert_int_equal(virtio_blk_save(f->d, a, n), (int)n);
	assert_int_equal(virtio_blk_save(f->d, a, n - 1), -ENOSPC);
	fd2 = open(f->path, O_RDWR);
	d2 = make_dev(f, fd2, DISK_SECTORS * 512ull, false, NULL);
	assert_int_equal(virtio_blk_restore(d2, a, n), 0);
	assert_int_equal(virtio_blk_save(d2, b, n), (int)n);
	assert_memory_equal(a, b, n);
	assert_int_equal(rd(d2, VMMIO_STATUS), 0xf);
	wr(d2, VMMIO_QUEUE_SEL, 0);
	assert_int_equal(rd(d2, VMMIO_QUEUE_NUM), QN);
	assert_int_equal(rd(d2, VMMIO_QUEUE_READY), 1);
	virtio_blk_destroy(d2);

	/* another disk (size) or a corrupt record is refused, the device unchanged */
	fd2 = open(f->path, O_RDWR);
	d2 = make_dev(f, fd2, 512 * 1024, false, NULL);
	assert_int_equal(virtio_blk_restore(d2, a, n), -EINVAL);
	assert_int_equal(rd(d2, VMMIO_STATUS), 0);
	memcpy(b, a, n);
	b[n - 2 * VBLK_QUEUE_SIZE - 24] ^= 1; /* the VBLK magic */
	assert_int_equal(virtio_blk_restore(f->d, b, n), -EINVAL);
	assert_int_equal(virtio_blk_restore(f->d, a, n - 1), -EINVAL);
	virtio_blk_destroy(d2);
	free(a);
	free(b);
}

/* While the gate is closed (VM paused) nothing reaches guest RAM; resume delivers. */
static void test_pause_resume(void **state)
{
	struct fx *f = *state;
	struct virtio_blk_stats st;
	uint8_t pat[4096];

	memset(pat, 0x3c, sizeof(pat));
	assert_int_equal(pwrite(f->fd, pat, sizeof(pat), 0), (ssize_t)sizeof(pat));
	f->closed = true;
	memset(gp(f, DATA(1)), 0, 4096);
	memset(gp(f, DATA(0)), 0x11, 4096);
	req(f, 0, VIRTIO_BLK_T_OUT, 64, 4096, false);
	req(f, 1, VIRTIO_BLK_T_IN, 0, 4096, true);
	run(f);
	assert_int_equal(used_idx(f), 0);
	assert_int_equal(*gp(f, STATUS(0)), 0xee);
	assert_int_equal(gp(f, DATA(1))[0], 0);
	assert_int_equal(virtio_blk_inflight(f->d), 2);
	virtio_blk_get_stats(f->d, &st);
	assert_int_equal(st.held, 2);
	virtio_blk_kick(f->d); /* still closed: nothing happens */
	virtio_blk_drain(f->d);
	assert_int_equal(used_idx(f), 0);
	f->closed = false;
	virtio_blk_kick(f->d);
	virtio_blk_drain(f->d);
	assert_int_equal(used_idx(f), 2);
	assert_int_equal(*gp(f, STATUS(0)), VIRTIO_BLK_S_OK);
	assert_int_equal(*gp(f, STATUS(1)), VIRTIO_BLK_S_OK);
	assert_memory_equal(gp(f, DATA(1)), pat, 4096);
	assert_int_equal(virtio_blk_inflight(f->d), 0);
}

/* Requests in flight at save time are re-queued on restore and run on the next kick. */
static void test_inflight_across_restore(void **state)
{
	struct fx *f = *state;
	size_t n = virtio_blk_state_size(f->d);
	uint8_t *a = malloc(n), pat[4096];
	struct virtio_blk *d2;
	int fd2;

	memset(pat, 0x5a, sizeof(pat));
	assert_int_equal(pwrite(f->fd, pat, sizeof(pat), 4096), (ssize_t)sizeof(pat));
	f->closed = true; /* a checkpoint pause */
	memset(gp(f, DATA(0)), 0x22, 4096);
	req(f, 0, VIRTIO_BLK_T_OUT, 16, 4096, false);
	req(f, 1, VIRTIO_BLK_T_IN, 8, 4096, true);
	run(f);
	assert_int_equal(virtio_blk_save(f->d, a, n), (int)n);
	virtio_blk_destroy(f->d); /* the source goes away with both requests unanswered */
	f->d = NULL;
	memset(gp(f, DATA(1)), 0, 4096);
	fd2 = open(f->path, O_RDWR);
	f->closed = false;
	d2 = f->d = make_dev(f, fd2, DISK_SECTORS * 512ull, false, NULL);
	assert_int_equal(virtio_blk_restore(d2, a, n), 0);
	assert_int_equal(virtio_blk_inflight(d2), 2);
	assert_int_equal(used_idx(f), 0);
	virtio_blk_kick(d2);
	virtio_blk_drain(d2);
	assert_int_equal(used_idx(f), 2);
	assert_int_equal(*gp(f, STATUS(0)), VIRTIO_BLK_S_OK);
	assert_int_equal(*gp(f, STATUS(1)), VIRTIO_BLK_S_OK);
	assert_memory_equal(gp(f, DATA(1)), pat, 4096);
	assert_int_equal(pread(f->fd, pat, 4096, 16 * 512), 4096);
	assert_int_equal(pat[100], 0x22);
	/* a new request after the restored ones */
	req(f, 2, VIRTIO_BLK_T_FLUSH, 0, 0, false);
	run(f);
	assert_int_equal(used_idx(f), 3);
	free(a);
}

static void test_reset_drops_inflight(void **state)
{
	struct fx *f = *state;

	f->closed = true;
	req(f, 0, VIRTIO_BLK_T_IN, 0, 4096, true);
	run(f);
	assert_int_equal(virtio_blk_inflight(f->d), 1);
	wr(f->d, VMMIO_STATUS, 0);
	assert_int_equal(virtio_blk_inflight(f->d), 0);
	f->closed = false;
	virtio_blk_kick(f->d);
	virtio_blk_drain(f->d);
	assert_int_equal(used_idx(f), 0);
}

static void test_diskopt(void **state)
{
	struct disk_opts o;
	char err[256];

	(void)state;
	assert_int_equal(disk_opts_parse("path=/tmp/a.img", &o, err, sizeof(err)), 0);
	assert_string_equal(o.path, "/tmp/a.img");
	assert_false(o.readonly);
	assert_string_equal(o.id, "");
	assert_int_equal(disk_opts_parse("id=d0,readonly,path=/dev/vdb", &o, err, sizeof(err)), 0);
	assert_string_equal(o.path, "/dev/vdb");
	assert_true(o.readonly);
	assert_string_equal(o.id, "d0");
	const char *bad[] = {"",
			     "readonly",
			     "path=",
			     "path=a,path=b",
			     "path=a,readonly,readonly",
			     "path=a,id=",
			     "path=a,id=123456789012345678901",
			     "path=a,id=x y",
			     "path=a,size=1G",
			     "path=a,ro=1",
			     "/tmp/a.img"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		assert_int_equal(disk_opts_parse(bad[i], &o, err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "--disk"));
		assert_null(strchr(err, '\n'));
	}
}

static void test_open_backend(void **state)
{
	char err[256], path[] = "/tmp/test_vblk_ob.XXXXXX";
	uint64_t cap = 0;
	int fd = mkstemp(path), a, b;

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(virtio_blk_open_backend(path, false, &cap, err, sizeof(err)), -EINVAL); /* empty */
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	a = virtio_blk_open_backend(path, false, &cap, err, sizeof(err));
	assert_true(a >= 0);
	assert_int_equal(cap, 1 << 20);
	b = virtio_blk_open_backend(path, false, &cap, err, sizeof(err)); /* locked by a */
	assert_int_equal(b, -EBUSY);
	assert_non_null(strstr(err, "in use"));
	close(a);
	assert_true(virtio_blk_open_backend("/nonexistent/x.img", false, &cap, err, sizeof(err)) < 0);
	assert_int_equal(virtio_blk_open_backend("/dev/null", false, &cap, err, sizeof(err)), -EINVAL);
	close(fd);
	unlink(path);
}

/* ---- the write log (Remus disk replication) ---- */

struct refuser {
	int calls, refuse; /* refuse the first `refuse` calls */
	struct virtio_blk_wreq last;
};

static int refuse_cb(void *opaque, const struct virtio_blk_wreq *w)
{
	struct refuser *r = opaque;

	r->last = *w;
	return r->calls++ < r->refuse ? -ENOSPC : 0;
}

/* A write the log refuses is held (not published, data already on the host) and re-run on kick; reads
 * and failed writes never reach the log. */
static void test_wlog_refusal_holds(void **state)
{
	struct fx *f = *state;
	struct virtio_blk_stats st;
	struct refuser r = {.refuse = 1};

	virtio_blk_set_wlog(f->d, refuse_cb, &r);
	memset(gp(f, DATA(0)), 0x77, 4096);
	req(f, 0, VIRTIO_BLK_T_OUT, 16, 4096, false);
	run(f);
	assert_int_equal(used_idx(f), 0);
	assert_int_equal(*gp(f, STATUS(0)), 0xee);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.last.type, VIRTIO_BLK_T_OUT);
	assert_true(r.last.sector == 16 && r.last.nr_sectors == 8 && r.last.niov == 1);
	virtio_blk_get_stats(f->d, &st);
	assert_int_equal(st.wlog_held, 1);
	virtio_blk_kick(f->d); /* the next epoch's resume */
	virtio_blk_drain(f->d);
	assert_int_equal(used_idx(f), 1);
	assert_int_equal(*gp(f, STATUS(0)), VIRTIO_BLK_S_OK);
	assert_int_equal(r.calls, 2);
	req(f, 1, VIRTIO_BLK_T_IN, 16, 4096, true);
	run(f);
	assert_int_equal(used_idx(f), 2);
	assert_int_equal(r.calls, 2); /* reads are not logged */
	put_seg(f, 2, 100, 8, 1);
	req(f, 2, VIRTIO_BLK_T_WRITE_ZEROES, 0, 16, false);
	run(f);
	assert_int_equal(r.calls, 3);
	assert_true(r.last.type == VIRTIO_BLK_T_WRITE_ZEROES && r.last.nr_ranges == 1 &&
		    r.last.range[0].sector == 100 && r.last.range[0].nr_sectors == 8);
	virtio_blk_set_wlog(f->d, NULL, NULL);
}

static int pressures;
static void pressure_cb(void *o)
{
	(void)o;
	pressures++;
}

/* The whole path on one device: sync mode marks blocks, the final pass sends them, log mode captures
 * every completed write with its data, the frozen log goes out as DISK_WRITE records that a reader
 * stages and applies to a second disk, which then equals the first. */
static void test_disk_repl_round_trip(void **state)
{
	struct fx *f = *state;
	struct disk_repl dr;
	struct disk_stage ds = {0};
	struct sr_header h = {.nr_vcpus = 1, .mem_size = RAM_SIZE, .nr_regions = 1};
	struct sr_ctx *w, *rd;
	struct sr_out o;
	struct sr_in in;
	struct sr_record rec;
	uint64_t epoch = 1;
	uint8_t a[8192], b[8192];
	char err[256];
	uint32_t verified = 0;
	struct virtio_blk *d2;
	char p2[] = "/tmp/test_vblk2.XXXXXX";
	int fd2 = mkstemp(p2);

	h.regions[0].size = RAM_SIZE;
	assert_true(fd2 >= 0);
	assert_int_equal(ftruncate(fd2, DISK_SECTORS * 512ull), 0);
	d2 = make_dev(f, fd2, DISK_SECTORS * 512ull, false, "serial-1");
	assert_int_equal(disk_repl_init(&dr, &f->d, 1, pressure_cb, NULL), 0);
	assert_int_equal(disk_repl_start(&dr), 0);
	memset(gp(f, DATA(0)), 0x41, 4096);
	req(f, 0, VIRTIO_BLK_T_OUT, 200, 4096, false); /* sync mode: block 1 (64 KiB) marked */
	run(f);
	assert_null(disk_repl_freeze(&dr)); /* nothing to send per epoch before the log */
	sr_out_mem(&o, 0);
	assert_int_equal(sr_writer_new(&w, &o, false, 1), 0);
	assert_int_equal(sr_write_header(w, &h), 0);
	assert_int_equal(disk_repl_sync(&dr, w, &epoch, err, sizeof(err)), 0); /* no sums: every block */
	assert_int_equal(disk_repl_sync_final(&dr, w, &epoch, err, sizeof(err)), 0);
	struct disk_repl_stats st;
	disk_repl_get_stats(&dr, &st);
	assert_true(st.sync_blocks == 16 && st.sync_done == 16 && st.sync_sent == 16 && st.final_sent == 1);
	assert_int_equal(st.mode, DISK_LOG);
	memset(gp(f, DATA(1)), 0x52, 4096);
	req(f, 1, VIRTIO_BLK_T_OUT, 1000, 4096, false);
	run(f);
	put_seg(f, 2, 1500, 16, 0);
	req(f, 2, VIRTIO_BLK_T_DISCARD, 0, 16, false);
	run(f);
	const struct disk_buf *fb = disk_repl_freeze(&dr);
	assert_non_null(fb);
	assert_int_equal(fb->nops, 2);
	assert_true(fb->ops[0].op == SR_DISK_OP_WRITE && fb->ops[0].sector == 1000 &&
		    fb->ops[0].nr_sectors == 8);
	assert_true(fb->ops[1].op == SR_DISK_OP_DISCARD && fb->ops[1].sector == 1500);
	assert_memory_equal(fb->data, gp(f, DATA(1)), 4096);
	assert_int_equal(disk_buf_write(w, fb), 0);
	assert_int_equal(sr_write_checkpoint_end(w, epoch), 0);
	assert_int_equal(sr_write_end(w), 0);
	assert_int_equal(disk_repl_freeze(&dr)->nops, 0); /* the other buffer, empty */
	disk_repl_free(&dr);
	/* read: stage every epoch, check identity, apply */
	sr_in_mem(&in, o.buf, o.len);
	assert_int_equal(sr_reader_new(&rd, &in), 0);
	assert_int_equal(sr_read_header(rd, &h), 0);
	for (;;) {
		assert_int_equal(sr_read_record(rd, &rec), 0);
		if (rec.type == SR_REC_END)
			break;
		if (rec.type == SR_REC_CHECKPOINT_END) {
			assert_int_equal(
				disk_stage_check(&ds, &d2, 1, &verified, &disk_names_remus, err, sizeof(err)),
				0);
			assert_int_equal(disk_stage_apply(&ds, &d2, 1, err, sizeof(err)), 0);
			disk_stage_reset(&ds);
			continue;
		}
		assert_int_equal(disk_stage_add(&ds, &rec, err, sizeof(err)), 0);
	}
	assert_int_equal(verified, 1);
	for (uint64_t off = 0; off < DISK_SECTORS * 512ull; off += sizeof(a)) {
		assert_int_equal(pread(f->fd, a, sizeof(a), (off_t)off), (ssize_t)sizeof(a));
		assert_int_equal(pread(fd2, b, sizeof(b), (off_t)off), (ssize_t)sizeof(b));
		assert_memory_equal(a, b, sizeof(a));
	}
	/* a disk of another size or id is refused with one line */
	ds.info[0] = (struct disk_info){.seen = true, .size = 512 * 4096, .id = "serial-1"};
	ds.nr_info = 1;
	assert_int_equal(disk_stage_check(&ds, &d2, 1, &verified, &disk_names_remus, err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(err, "disk0 is 2097152 bytes on the primary, 1048576 here");
	ds.info[0] = (struct disk_info){.seen = true, .size = DISK_SECTORS * 512ull, .id = "other"};
	assert_int_equal(disk_stage_check(&ds, &d2, 1, &verified, &disk_names_remus, err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(err, "disk0 has id 'other' on the primary, 'serial-1' here");
	assert_int_equal(disk_stage_check(&ds, &d2, 0, &verified, &disk_names_remus, err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(err, "the primary has disk0, this standby not");
	disk_stage_free(&ds);
	sr_ctx_free(rd);
	sr_out_free(&o);
	virtio_blk_destroy(d2);
	unlink(p2);
}

/* DISK_WRITE / DISK_INFO the reader refuses: bad op, zero sectors, length not matching, padding. */
static void test_disk_records_rejected(void **state)
{
	struct sr_header h = {.nr_vcpus = 1, .mem_size = 1 << 20, .nr_regions = 1};
	uint8_t body[24 + 512];
	struct sr_ctx *w, *rd;
	struct sr_out o;
	struct sr_in in;
	struct sr_record rec;
	static const struct {
		uint32_t disk, op;
		uint64_t sector, n;
		size_t len;
		const char *err;
	} bad[] = {
		{0, 3, 0, 1, 24, "op 3"},
		{0, 0, 0, 0, 24, "sectors 0+0 invalid"},
		{64, 1, 0, 1, 24, "disk 64"},
		{0, 0, 0, 1, 24, "does not match"},
		{0, 1, 0, 1, 24 + 512, "does not match"},
		{0, 1, ~0ull, 2, 24, "invalid"},
	};

	(void)state;
	h.regions[0].size = 1 << 20;
	memset(body, 0, sizeof(body));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memcpy(body, &bad[i].disk, 4);
		memcpy(body + 4, &bad[i].op, 4);
		memcpy(body + 8, &bad[i].sector, 8);
		memcpy(body + 16, &bad[i].n, 8);
		sr_out_mem(&o, 0);
		assert_int_equal(sr_writer_new(&w, &o, false, 1), 0);
		assert_int_equal(sr_write_header(w, &h), 0);
		assert_int_equal(sr_write_record(w, SR_REC_DISK_WRITE, body, bad[i].len), 0);
		sr_in_mem(&in, o.buf, o.len);
		assert_int_equal(sr_reader_new(&rd, &in), 0);
		assert_int_equal(sr_read_header(rd, &h), 0);
		assert_int_equal(sr_read_record(rd, &rec), -EBADMSG);
		assert_non_null(strstr(sr_error(rd), bad[i].err));
		/* the writer refuses the same values */
		if (bad[i].len == 24 && bad[i].op != 0)
			assert_int_equal(
				sr_write_disk_write(w, bad[i].disk, bad[i].op, bad[i].sector, bad[i].n, NULL),
				-EINVAL);
		sr_ctx_free(rd);
		sr_ctx_free(w);
		sr_out_free(&o);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_read_write_flush, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readonly, setup_readonly, teardown),
		cmocka_unit_test_setup_teardown(test_get_id, setup, teardown),
		cmocka_unit_test_setup_teardown(test_discard_write_zeroes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_in_flight, setup, teardown),
		cmocka_unit_test_setup_teardown(test_host_io_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_state_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pause_resume, setup, teardown),
		cmocka_unit_test_setup_teardown(test_inflight_across_restore, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reset_drops_inflight, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wlog_refusal_holds, setup, teardown),
		cmocka_unit_test_setup_teardown(test_disk_repl_round_trip, setup, teardown),
		cmocka_unit_test(test_disk_records_rejected),
		cmocka_unit_test(test_diskopt),
		cmocka_unit_test(test_open_backend),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
