/* test_virtqueue.c — split virtqueue validation over crafted rings, and NEEDS_RESET through the device. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hv/mem.h"
#include "hv/dev/virtio_net.h"
#include "hv/dev/virtqueue.h"

#define RAM_SIZE (1u << 20)
#define DESC 0x1000
#define AVAIL 0x2000
#define USED 0x3000
#define BUF 0x10000
#define QN 8

struct fx {
	void *ram;
	struct guest_mem gm;
	struct vq vq;
	struct vq_elem e;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	f->ram = aligned_alloc(4096, RAM_SIZE);
	memset(f->ram, 0, RAM_SIZE);
	assert_int_equal(mem_init_buffer(&f->gm, f->ram, RAM_SIZE), 0);
	f->vq.num = QN;
	f->vq.desc_gpa = DESC;
	f->vq.avail_gpa = AVAIL;
	f->vq.used_gpa = USED;
	assert_int_equal(vq_enable(&f->vq, &f->gm, 256), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	mem_destroy(&f->gm);
	free(f->ram);
	free(f);
	return 0;
}

static struct vring_desc *desc(struct fx *f, uint64_t table, unsigned i)
{
	return (struct vring_desc *)((uint8_t *)f->ram + table) + i;
}

static void set_desc(struct fx *f, uint64_t table, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	*desc(f, table, i) = (struct vring_desc){.addr = addr, .len = len, .flags = flags, .next = next};
}

static uint16_t *avail(struct fx *f)
{
	return (uint16_t *)((uint8_t *)f->ram + AVAIL);
}

/* Make `head` available as the next ring entry. */
static void offer(struct fx *f, uint16_t head)
{
	uint16_t idx = avail(f)[1];

	avail(f)[2 + idx % QN] = head;
	avail(f)[1] = idx + 1;
}

static void expect_broken(struct fx *f)
{
	uint16_t before = f->vq.last_avail_idx;

	assert_int_equal(vq_pop(&f->vq, &f->gm, &f->e), -EINVAL);
	assert_non_null(f->vq.err);
	assert_int_equal(f->vq.last_avail_idx, before);
}

static void test_good_chain(void **state)
{
	struct fx *f = *state;
	uint8_t *used = (uint8_t *)f->ram + USED;
	uint32_t id, len;

	assert_int_equal(vq_pop(&f->vq, &f->gm, &f->e), 0); /* empty */
	set_desc(f, DESC, 3, BUF, 100, VRING_DESC_F_NEXT, 5);
	set_desc(f, DESC, 5, BUF + 0x1000, 50, VRING_DESC_F_NEXT, 6);
	set_desc(f, DESC, 6, BUF + 0x2000, 200, VRING_DESC_F_WRITE, 0);
	offer(f, 3);
	assert_int_equal(vq_pop(&f->vq, &f->gm, &f->e), 1);
	assert_int_equal(f->e.head, 3);
	assert_int_equal(f->e.n_out, 2);
	assert_int_equal(f->e.n_in, 1);
	assert_int_equal(f->e.out_bytes, 150);
	assert_int_equal(f->e.in_bytes, 200);
	assert_ptr_equal(f->e.iov[0].base, (uint8_t *)f->ram + BUF);
	assert_ptr_equal(f->e.iov[2].base, (uint8_t *)f->ram + BUF + 0x2000);
	assert_int_equal(vq_pop(&f->vq, &f->gm, &f->e), 0);
	vq_push(&f->vq, &f->gm, 3, 77);
	assert_int_equal(*(uint16_t *)(used + 2), 1);
	memcpy(&id, used + 4, 4);
	memcpy(&len, used + 8, 4);
	assert_int_equal(id, 3);
	assert_int_equal(len, 77);
	/* unpop gives the same chain again */
	offer(f, 6);
	assert_int_equal(vq_pop(&f->vq, &f->gm, &f->e), 1);
	vq_unpop(&f->vq);
	assert_int_equal(vq_pop(&f->vq, &f->gm, &f->e), 1);
	assert_int_equal(f->e.head, 6);
	assert_int_equal(f->e.n_in, 1);
}

static void test_addr_beyond_ram(void **state)
{
	struct fx *f = *state;

	set_desc(f, DESC, 0, RAM_SIZE - 10, 100, 0, 0);
	offer(f, 0);
	expect_broken(f);
}

static void test_len_wraps(void **state)
{
	struct fx *f = *state;

	set_desc(f, DESC, 0, 0xfffffffffffff000ull, 0x2000, 0, 0);
	offer(f, 0);
	expect_broken(f);
}

static void test_loop(void **state)
{
	struct fx *f = *state;

	set_desc(f, DESC, 0, BUF, 10, VRING_DESC_F_NEXT, 1);
	set_desc(f, DESC, 1, BUF, 10, VRING_DESC_F_NEXT, 0);
	offer(f, 0);
	expect_broken(f);
}

static void test_chain_longer_than_queue(void **state)
{
	struct fx *f = *state;

	for (unsigned i = 0; i < QN; i++)
		set_desc(f, DESC, i, BUF, 1, VRING_DESC_F_NEXT, (uint16_t)((i + 1) % QN));
	offer(f, 0);
	expect_broken(f);
}

static void test_next_out_of_range(void **state)
{
	struct fx *f = *state;

	set_desc(f, DESC, 0, BUF, 10, VRING_DESC_F_NEXT, QN);
	offer(f, 0);
	expect_broken(f);
}

static void test_head_out_of_range(void **state)
{
	struct fx *f = *state;

	offer(f, 200);
	expect_broken(f);
}

static void test_avail_idx_jump(void **state)
{
	struct fx *f = *state;

	set_desc(f, DESC, 0, BUF, 10, 0, 0);
	avail(f)[1] = QN + 1;
	expect_broken(f);
	avail(f)[1] = QN; /* exactly a full ring is fine */
	assert_int_equal(vq_pop(&f->vq, &f->gm, &f->e), 1);
}

static void test_write_then_read(void **state)
{
	struct fx *f = *state;

	set_desc(f, DESC, 0, BUF, 10, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1);
	set_desc(f, DESC, 1, BUF, 10, 0, 0);
	offer(f, 0);
	expect_broken(f);
}

static void test_indirect(void **state)
{
	struct fx *f = *state;
	const uint64_t tbl = 0x5000;

	set_desc(f, tbl, 0, BUF, 12, VRING_DESC_F_NEXT, 1);
	set_desc(f, tbl, 1, BUF + 100, 60, VRING_DESC_F_NEXT, 2);
	set_desc(f, tbl, 2, BUF + 0x1000, 1500, VRING_DESC_F_WRITE, 0);
	set_desc(f, DESC, 0, tbl, 3 * 16, VRING_DESC_F_INDIRECT, 0);
	offer(f, 0);
	expect_broken(f); /* feature not negotiated */
	f->vq.indirect = true;
	assert_int_equal(vq_pop(&f->vq, &f->gm, &f->e), 1);
	assert_int_equal(f->e.n_out, 2);
	assert_int_equal(f->e.n_in, 1);
	assert_int_equal(f->e.in_bytes, 1500);

	/* table out of bounds */
	set_desc(f, DESC, 1, RAM_SIZE - 16, 32, VRING_DESC_F_INDIRECT, 0);
	offer(f, 1);
	expect_broken(f);
	/* bad length */
	set_desc(f, DESC, 1, tbl, 20, VRING_DESC_F_INDIRECT, 0);
	expect_broken(f);
	/* nested */
	set_desc(f, tbl, 3, tbl, 16, VRING_DESC_F_INDIRECT, 0);
	set_desc(f, DESC, 1, tbl + 48, 16, VRING_DESC_F_INDIRECT, 0);
	expect_broken(f);
	/* loop inside the table */
	set_desc(f, tbl, 3, BUF, 1, VRING_DESC_F_NEXT, 4);
	set_desc(f, tbl, 4, BUF, 1, VRING_DESC_F_NEXT, 3);
	set_desc(f, DESC, 1, tbl + 48, 32, VRING_DESC_F_INDIRECT, 0);
	expect_broken(f);
	/* indirect + next */
	set_desc(f, DESC, 1, tbl, 48, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT, 2);
	expect_broken(f);
}

static void test_enable_checks(void **state)
{
	struct fx *f = *state;
	struct vq v = f->vq;

	v.num = 6;
	assert_int_equal(vq_enable(&v, &f->gm, 256), -EINVAL);
	assert_false(v.ready);
	v.num = 512;
	assert_int_equal(vq_enable(&v, &f->gm, 256), -EINVAL);
	v.num = 16;
	assert_int_equal(vq_enable(&v, &f->gm, 8), -EINVAL);
	v.num = 8;
	v.desc_gpa = 0xfeb00000; /* MMIO hole */
	assert_int_equal(vq_enable(&v, &f->gm, 256), -EINVAL);
	v.desc_gpa = RAM_SIZE - 64; /* straddles the end of RAM */
	assert_int_equal(vq_enable(&v, &f->gm, 256), -EINVAL);
	v.desc_gpa = DESC + 8; /* misaligned */
	assert_int_equal(vq_enable(&v, &f->gm, 256), -EINVAL);
	v.desc_gpa = DESC;
	v.used_gpa = RAM_SIZE - 8;
	assert_int_equal(vq_enable(&v, &f->gm, 256), -EINVAL);
	v.used_gpa = USED;
	assert_int_equal(vq_enable(&v, &f->gm, 256), 0);
	assert_true(v.ready);
}

/* ---- the same corruptions through the device: each sets NEEDS_RESET and stops processing ---- */

static int frames_seen;

static int count_tx(void *opaque, const void *frame, size_t len)
{
	(void)opaque, (void)frame, (void)len;
	frames_seen++;
	return 0;
}

static uint32_t rd(struct virtio_net *d, uint64_t off)
{
	uint32_t v = 0;

	virtio_net_io(d, off, &v, 4, false);
	return v;
}

static void wr(struct virtio_net *d, uint64_t off, uint32_t v)
{
	virtio_net_io(d, off, &v, 4, true);
}

/* Bring the device to DRIVER_OK with the TX queue (1) at DESC/AVAIL/USED of size QN. */
static struct virtio_net *bring_up(struct fx *f)
{
	static const uint8_t mac[6] = {0x52, 0x54, 0, 1, 2, 3};
	struct virtio_net *d;

	assert_int_equal(virtio_net_create(&f->gm, mac, count_tx, NULL, &d), 0);
	wr(d, VMMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	wr(d, VMMIO_DRV_FEATURES, (1u << VIRTIO_F_INDIRECT_DESC) | (1u << VIRTIO_NET_F_MAC));
	wr(d, VMMIO_DRV_FEATURES_SEL, 1);
	wr(d, VMMIO_DRV_FEATURES, 1);
	wr(d, VMMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
	wr(d, VMMIO_QUEUE_SEL, VNET_TXQ);
	wr(d, VMMIO_QUEUE_NUM, QN);
	wr(d, VMMIO_QUEUE_DESC_LO, DESC);
	wr(d, VMMIO_QUEUE_DRIVER_LO, AVAIL);
	wr(d, VMMIO_QUEUE_DEVICE_LO, USED);
	wr(d, VMMIO_QUEUE_READY, 1);
	wr(d, VMMIO_STATUS, 0xf);
	assert_int_equal(rd(d, VMMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET, 0);
	return d;
}

static void device_breaks(struct fx *f, void (*corrupt)(struct fx *))
{
	struct virtio_net *d = bring_up(f);

	corrupt(f);
	frames_seen = 0;
	wr(d, VMMIO_QUEUE_NOTIFY, VNET_TXQ);
	assert_true(rd(d, VMMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET);
	assert_non_null(virtio_net_broken(d));
	assert_true(rd(d, VMMIO_INTERRUPT_STATUS) & VIRTIO_INT_CONFIG);
	assert_int_equal(frames_seen, 0);
	/* now offer a good frame: ignored until reset */
	set_desc(f, DESC, 7, BUF, 100, 0, 0);
	avail(f)[2 + avail(f)[1] % QN] = 7;
	avail(f)[1]++;
	wr(d, VMMIO_QUEUE_NOTIFY, VNET_TXQ);
	assert_int_equal(frames_seen, 0);
	wr(d, VMMIO_STATUS, 0);
	assert_int_equal(rd(d, VMMIO_STATUS), 0);
	assert_null(virtio_net_broken(d));
	assert_int_equal(rd(d, VMMIO_QUEUE_READY), 0);
	virtio_net_destroy(d);
}

static void c_beyond(struct fx *f)
{
	set_desc(f, DESC, 0, RAM_SIZE, 100, 0, 0);
	offer(f, 0);
}
static void c_wrap(struct fx *f)
{
	set_desc(f, DESC, 0, ~0ull - 10, 100, 0, 0);
	offer(f, 0);
}
static void c_loop(struct fx *f)
{
	set_desc(f, DESC, 0, BUF, 20, VRING_DESC_F_NEXT, 0);
	offer(f, 0);
}
static void c_next(struct fx *f)
{
	set_desc(f, DESC, 0, BUF, 20, VRING_DESC_F_NEXT, 0xffff);
	offer(f, 0);
}
static void c_jump(struct fx *f)
{
	avail(f)[1] = 0x8000;
}
static void c_indirect(struct fx *f)
{
	set_desc(f, DESC, 0, 0xfeb00000, 64, VRING_DESC_F_INDIRECT, 0);
	offer(f, 0);
}

static void test_device_needs_reset(void **state)
{
	void (*cases[])(struct fx *) = {c_beyond, c_wrap, c_loop, c_next, c_jump, c_indirect};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fx *f = *state;

		memset(f->ram, 0, RAM_SIZE);
		device_breaks(f, cases[i]);
	}
}

static void test_device_bad_queue_config(void **state)
{
	struct fx *f = *state;
	static const uint8_t mac[6] = {0x52, 0x54, 0, 1, 2, 3};
	struct virtio_net *d;
	const uint32_t ok = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK;

	for (int c = 0; c < 3; c++) {
		assert_int_equal(virtio_net_create(&f->gm, mac, count_tx, NULL, &d), 0);
		wr(d, VMMIO_STATUS, 3);
		wr(d, VMMIO_DRV_FEATURES_SEL, 1);
		wr(d, VMMIO_DRV_FEATURES, 1);
		wr(d, VMMIO_STATUS, ok);
		wr(d, VMMIO_QUEUE_SEL, 0);
		wr(d, VMMIO_QUEUE_NUM, c == 0 ? 7 : QN); /* not a power of two */
		wr(d, VMMIO_QUEUE_DESC_LO, c == 1 ? 0xfeb00000 : DESC); /* MMIO hole */
		wr(d, VMMIO_QUEUE_DRIVER_LO, AVAIL);
		wr(d, VMMIO_QUEUE_DEVICE_LO, c == 2 ? USED + 2 : USED); /* misaligned */
		wr(d, VMMIO_QUEUE_READY, 1);
		assert_int_equal(rd(d, VMMIO_QUEUE_READY), 0);
		assert_true(rd(d, VMMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET);
		virtio_net_destroy(d);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_good_chain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_addr_beyond_ram, setup, teardown),
		cmocka_unit_test_setup_teardown(test_len_wraps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_loop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chain_longer_than_queue, setup, teardown),
		cmocka_unit_test_setup_teardown(test_next_out_of_range, setup, teardown),
		cmocka_unit_test_setup_teardown(test_head_out_of_range, setup, teardown),
		cmocka_unit_test_setup_teardown(test_avail_idx_jump, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_then_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_indirect, setup, teardown),
		cmocka_unit_test_setup_teardown(test_enable_checks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_device_needs_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_device_bad_queue_config, setup, teardown),
	};

	return cmocka_run_group_tests_name("virtqueue", tests, NULL, NULL);
}
