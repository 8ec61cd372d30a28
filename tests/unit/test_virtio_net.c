/* test_virtio_net.c — virtio-mmio registers, virtio-net TX/RX, dirty marking, state, --net parsing, tap. */
#include <errno.h>
#include <pthread.h>
#include <net/if.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <netlink/route/link/bridge.h>

#include "hv/mem.h"
#include "vmm/netopt.h"
#include "hv/dev/tap.h"
#include "hv/dev/virtio_net.h"

#define RAM_SIZE (1u << 20)
#define QN 16
/* queue q rings at RING(q) + {0, 0x400, 0x800} */
#define RING(q) (0x1000u + 0x1000u * (q))
#define RXBUF 0x20000u
#define TXBUF 0x30000u

struct fx {
	void *ram;
	struct guest_mem gm;
	struct virtio_net *d;
	int irq_level, irq_raises;
	unsigned char last_frame[2048];
	size_t last_len;
	int tx_count;
	uint16_t avail_idx[2];
};

static const uint8_t MAC[6] = {0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc};

static int tx_cb(void *opaque, const void *frame, size_t len)
{
	struct fx *f = opaque;

	f->tx_count++;
	f->last_len = len;
	memcpy(f->last_frame, frame, len < sizeof(f->last_frame) ? len : sizeof(f->last_frame));
	return 0;
}

static void irq_cb(void *opaque, int level)
{
	struct fx *f = opaque;

	if (level == VIRTIO_IRQ_WAKE) /* a wake for a polling driver, not an interrupt */
		return;
	if (level && !f->irq_level)
		f->irq_raises++;
	f->irq_level = level;
}

static uint32_t rd(struct fx *f, uint64_t off)
{
	uint32_t v = 0;

	assert_int_equal(virtio_net_io(f->d, off, &v, 4, false), 0);
	return v;
}

static void wr(struct fx *f, uint64_t off, uint32_t v)
{
	assert_int_equal(virtio_net_io(f->d, off, &v, 4, true), 0);
}

/* Register access to any device (the fixture's or a restored one). */
static uint32_t rd_dev(struct virtio_net *d, uint64_t off)
{
	uint32_t v = 0;

	assert_int_equal(virtio_net_io(d, off, &v, 4, false), 0);
	return v;
}

static void wr_dev(struct virtio_net *d, uint64_t off, uint32_t v)
{
	assert_int_equal(virtio_net_io(d, off, &v, 4, true), 0);
}

/* What the guest can read back through the registers of a brought-up device (after bring_up). */
static void check_regs(struct virtio_net *d, uint32_t isr, uint32_t gen)
{
	uint8_t mac[6];

	assert_int_equal(rd_dev(d, VMMIO_STATUS), 0xf);
	assert_int_equal(rd_dev(d, VMMIO_INTERRUPT_STATUS), isr);
	assert_int_equal(rd_dev(d, VMMIO_CONFIG_GENERATION), gen);
	for (unsigned q = 0; q < 2; q++) {
		wr_dev(d, VMMIO_QUEUE_SEL, q);
		assert_int_equal(rd_dev(d, VMMIO_QUEUE_NUM), QN);
		assert_int_equal(rd_dev(d, VMMIO_QUEUE_READY), 1);
	}
	for (int i = 0; i < 6; i++)
		assert_int_equal(virtio_net_io(d, VMMIO_CONFIG + i, &mac[i], 1, false), 0);
	assert_memory_equal(mac, MAC, 6);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	f->ram = aligned_alloc(4096, RAM_SIZE);
	memset(f->ram, 0, RAM_SIZE);
	assert_int_equal(mem_init_buffer(&f->gm, f->ram, RAM_SIZE), 0);
	assert_int_equal(virtio_net_create(&f->gm, MAC, tx_cb, f, &f->d), 0);
	virtio_net_set_irq(f->d, irq_cb, f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	virtio_net_destroy(f->d);
	mem_destroy(&f->gm);
	free(f->ram);
	free(f);
	return 0;
}

static void setup_queue(struct fx *f, unsigned q)
{
	wr(f, VMMIO_QUEUE_SEL, q);
	assert_int_equal(rd(f, VMMIO_QUEUE_NUM_MAX), VNET_QUEUE_SIZE);
	assert_int_equal(rd(f, VMMIO_QUEUE_READY), 0);
	wr(f, VMMIO_QUEUE_NUM, QN);
	wr(f, VMMIO_QUEUE_DESC_LO, RING(q));
	wr(f, VMMIO_QUEUE_DESC_HI, 0);
	wr(f, VMMIO_QUEUE_DRIVER_LO, RING(q) + 0x400);
	wr(f, VMMIO_QUEUE_DRIVER_HI, 0);
	wr(f, VMMIO_QUEUE_DEVICE_LO, RING(q) + 0x800);
	wr(f, VMMIO_QUEUE_DEVICE_HI, 0);
	wr(f, VMMIO_QUEUE_READY, 1);
	assert_int_equal(rd(f, VMMIO_QUEUE_READY), 1);
}

/* The Linux driver sequence (virtio spec §3.1.1). */
static void bring_up(struct fx *f)
{
	wr(f, VMMIO_STATUS, 0);
	wr(f, VMMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
	wr(f, VMMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	wr(f, VMMIO_DRV_FEATURES_SEL, 0);
	wr(f, VMMIO_DRV_FEATURES, 1u << VIRTIO_NET_F_MAC);
	wr(f, VMMIO_DRV_FEATURES_SEL, 1);
	wr(f, VMMIO_DRV_FEATURES, 1); /* VERSION_1 */
	wr(f, VMMIO_STATUS, 0xb);
	assert_int_equal(rd(f, VMMIO_STATUS), 0xb);
	setup_queue(f, VNET_RXQ);
	setup_queue(f, VNET_TXQ);
	wr(f, VMMIO_STATUS, 0xf);
	assert_int_equal(rd(f, VMMIO_STATUS), 0xf);
	f->avail_idx[0] = f->avail_idx[1] = 0;
}

static void set_desc(struct fx *f, unsigned q, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	struct vring_desc *t = (struct vring_desc *)((uint8_t *)f->ram + RING(q));

	t[i] = (struct vring_desc){.addr = addr, .len = len, .flags = flags, .next = next};
}

static void offer(struct fx *f, unsigned q, uint16_t head)
{
	uint16_t *av = (uint16_t *)((uint8_t *)f->ram + RING(q) + 0x400);

	av[2 + f->avail_idx[q] % QN] = head;
	av[1] = ++f->avail_idx[q];
}

static uint16_t used_idx(struct fx *f, unsigned q)
{
	return *(uint16_t *)((uint8_t *)f->ram + RING(q) + 0x800 + 2);
}

static uint32_t used_len(struct fx *f, unsigned q, unsigned slot)
{
	uint32_t v;

	memcpy(&v, (uint8_t *)f->ram + RING(q) + 0x800 + 4 + 8 * slot + 4, 4);
	return v;
}

static void test_registers(void **state)
{
	struct fx *f = *state;
	uint8_t mac[8] = {0};

	assert_int_equal(rd(f, VMMIO_MAGIC), 0x74726976);
	assert_int_equal(rd(f, VMMIO_VERSION), 2);
	assert_int_equal(rd(f, VMMIO_DEVICE_ID), VIRTIO_ID_NET);
	assert_int_not_equal(rd(f, VMMIO_VENDOR_ID), 0);
	wr(f, VMMIO_DEV_FEATURES_SEL, 0);
	assert_int_equal(rd(f, VMMIO_DEV_FEATURES),
			 (1u << VIRTIO_NET_F_MAC) | (1u << VIRTIO_F_INDIRECT_DESC));
	wr(f, VMMIO_DEV_FEATURES_SEL, 1);
	assert_int_equal(rd(f, VMMIO_DEV_FEATURES), 1);
	wr(f, VMMIO_DEV_FEATURES_SEL, 2);
	assert_int_equal(rd(f, VMMIO_DEV_FEATURES), 0);
	/* config space: byte-wise and wider reads of the MAC */
	for (int i = 0; i < 6; i++)
		assert_int_equal(virtio_net_io(f->d, VMMIO_CONFIG + i, &mac[i], 1, false), 0);
	assert_memory_equal(mac, MAC, 6);
	uint32_t w = 0;
	virtio_net_io(f->d, VMMIO_CONFIG + 4, &w, 4, false);
	assert_int_equal(w, 0xccbb);
	/* a queue that does not exist */
	wr(f, VMMIO_QUEUE_SEL, 5);
	assert_int_equal(rd(f, VMMIO_QUEUE_NUM_MAX), 0);
	/* odd widths and offsets are harmless */
	uint64_t q = 0;
	assert_int_equal(virtio_net_io(f->d, VMMIO_MAGIC, &q, 8, false), 0);
	assert_int_equal(virtio_net_io(f->d, 0x1ff, &q, 1, true), 0);
	assert_int_equal(virtio_net_io(f->d, 0x200, &q, 4, false), 0);
}

static void test_negotiation(void **state)
{
	struct fx *f = *state;

	/* no VERSION_1: FEATURES_OK refused */
	wr(f, VMMIO_STATUS, 3);
	wr(f, VMMIO_DRV_FEATURES_SEL, 0);
	wr(f, VMMIO_DRV_FEATURES, 1u << VIRTIO_NET_F_MAC);
	wr(f, VMMIO_STATUS, 0xb);
	assert_int_equal(rd(f, VMMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK, 0);
	/* a feature we never offered */
	wr(f, VMMIO_STATUS, 0);
	wr(f, VMMIO_STATUS, 3);
	wr(f, VMMIO_DRV_FEATURES, 1u << 29);
	wr(f, VMMIO_DRV_FEATURES_SEL, 1);
	wr(f, VMMIO_DRV_FEATURES, 1);
	wr(f, VMMIO_STATUS, 0xb);
	assert_int_equal(rd(f, VMMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK, 0);
	/* DRIVER_OK without FEATURES_OK is garbage */
	wr(f, VMMIO_STATUS, 0x7);
	assert_true(rd(f, VMMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET);
	/* reset then the proper sequence */
	wr(f, VMMIO_STATUS, 0);
	assert_int_equal(rd(f, VMMIO_STATUS), 0);
	bring_up(f);
	/* features frozen after FEATURES_OK */
	wr(f, VMMIO_DRV_FEATURES_SEL, 0);
	wr(f, VMMIO_DRV_FEATURES, 0);
	assert_int_equal(virtio_net_transport(f->d)->driver_features,
			 (1ull << 32) | (1u << VIRTIO_NET_F_MAC));
	/* reset forgets queues */
	wr(f, VMMIO_STATUS, 0);
	wr(f, VMMIO_QUEUE_SEL, 0);
	assert_int_equal(rd(f, VMMIO_QUEUE_READY), 0);
	assert_int_equal(virtio_net_transport(f->d)->driver_features, 0);
}

static void test_tx(void **state)
{
	struct fx *f = *state;
	uint8_t *ram = f->ram;

	bring_up(f);
	memset(ram + TXBUF, 0, VNET_HDR_LEN);
	for (int i = 0; i < 100; i++)
		ram[TXBUF + VNET_HDR_LEN + i] = (uint8_t)i;
	/* header and frame split over three descriptors */
	set_desc(f, VNET_TXQ, 0, TXBUF, 10, VRING_DESC_F_NEXT, 1);
	set_desc(f, VNET_TXQ, 1, TXBUF + 10, 40, VRING_DESC_F_NEXT, 2);
	set_desc(f, VNET_TXQ, 2, TXBUF + 50, 62, 0, 0);
	offer(f, VNET_TXQ, 0);
	wr(f, VMMIO_QUEUE_NOTIFY, VNET_TXQ);
	assert_int_equal(f->tx_count, 1);
	assert_int_equal(f->last_len, 100);
	for (int i = 0; i < 100; i++)
		assert_int_equal(f->last_frame[i], i);
	assert_int_equal(used_idx(f, VNET_TXQ), 1);
	assert_int_equal(f->irq_level, 1);
	assert_int_equal(rd(f, VMMIO_INTERRUPT_STATUS), VIRTIO_INT_USED);
	wr(f, VMMIO_INTERRUPT_ACK, VIRTIO_INT_USED);
	assert_int_equal(f->irq_level, 0);
	assert_int_equal(rd(f, VMMIO_INTERRUPT_STATUS), 0);
	/* header-only chain: dropped, not broken; poll picks up without a notify */
	set_desc(f, VNET_TXQ, 3, TXBUF, 12, 0, 0);
	offer(f, VNET_TXQ, 3);
	virtio_net_poll(f->d);
	assert_int_equal(f->tx_count, 1);
	assert_int_equal(used_idx(f, VNET_TXQ), 2);
	struct virtio_net_stats st;
	virtio_net_get_stats(f->d, &st);
	assert_int_equal(st.tx_frames, 1);
	assert_int_equal(st.tx_dropped, 1);
	assert_int_equal(rd(f, VMMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET, 0);
	/* VIRTQ_AVAIL_F_NO_INTERRUPT: used is published, no interrupt */
	wr(f, VMMIO_INTERRUPT_ACK, rd(f, VMMIO_INTERRUPT_STATUS));
	*(uint16_t *)(ram + RING(VNET_TXQ) + 0x400) = 1;
	offer(f, VNET_TXQ, 0);
	wr(f, VMMIO_QUEUE_NOTIFY, VNET_TXQ);
	assert_int_equal(f->tx_count, 2);
	assert_int_equal(used_idx(f, VNET_TXQ), 3);
	assert_int_equal(rd(f, VMMIO_INTERRUPT_STATUS), 0);
	assert_int_equal(f->irq_level, 0);
}

static void test_rx_dirty(void **state)
{
	struct fx *f = *state;
	uint8_t *ram = f->ram;
	uint8_t frame[3000];
	uint64_t bm[(RAM_SIZE / 4096 + 63) / 64];
	struct virtio_net_hdr_v1 h;

	bring_up(f);
	for (size_t i = 0; i < sizeof(frame); i++)
		frame[i] = (uint8_t)(i * 7);
	assert_int_equal(virtio_net_rx(f->d, frame, 100), -EAGAIN);
	/* a 2-descriptor buffer: 0x800 bytes ending one page in, then 8 KiB spanning two pages */
	set_desc(f, VNET_RXQ, 4, RXBUF + 0x800, 0x800, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 9);
	set_desc(f, VNET_RXQ, 9, RXBUF + 0x3000, 0x2000, VRING_DESC_F_WRITE, 0);
	offer(f, VNET_RXQ, 4);
	memset(bm, 0, sizeof(bm));
	mem_dev_dirty_take(&f->gm, bm); /* start clean */
	memset(bm, 0, sizeof(bm));
	assert_int_equal(virtio_net_rx(f->d, frame, sizeof(frame)), 0);
	memcpy(&h, ram + RXBUF + 0x800, sizeof(h));
	assert_int_equal(h.num_buffers, 1);
	assert_int_equal(h.flags, 0);
	assert_memory_equal(ram + RXBUF + 0x800 + 12, frame, 0x800 - 12);
	assert_memory_equal(ram + RXBUF + 0x3000, frame + 0x800 - 12, sizeof(frame) - (0x800 - 12));
	assert_int_equal(used_idx(f, VNET_RXQ), 1);
	assert_int_equal(used_len(f, VNET_RXQ, 0), 12 + sizeof(frame));
	assert_int_equal(f->irq_level, 1);
	/* Exactly: page 0x20 (first descriptor), page 0x23 (12+3000-0x800 = 964 bytes into the second),
	 * and the used ring page (RING(0) + 0x800 -> page 1). Not page 0x24 (unwritten tail of the buffer). */
	mem_dev_dirty_take(&f->gm, bm);
	for (uint64_t p = 0; p < RAM_SIZE / 4096; p++) {
		bool want = p == 0x20 || p == 0x23 || p == RING(0) / 4096;
		bool got = bm[p / 64] >> (p % 64) & 1;

		if (want != got)
			fail_msg("page 0x%llx dirty=%d want %d", (unsigned long long)p, got, want);
	}
	/* a second take is empty */
	memset(bm, 0, sizeof(bm));
	mem_dev_dirty_take(&f->gm, bm);
	for (size_t i = 0; i < sizeof(bm) / 8; i++)
		assert_int_equal(bm[i], 0);
}

static void test_rx_queue_and_small(void **state)
{
	struct fx *f = *state;
	uint8_t *ram = f->ram;
	uint8_t frame[200];
	struct virtio_net_stats st;

	memset(frame, 0x5a, sizeof(frame));
	/* driver not ready: dropped */
	assert_int_equal(virtio_net_rx(f->d, frame, 60), -ENETDOWN);
	bring_up(f);
	/* no buffers: queued in order */
	frame[0] = 1;
	assert_int_equal(virtio_net_rx_queue(f->d, frame, 60), 0);
	frame[0] = 2;
	assert_int_equal(virtio_net_rx_queue(f->d, frame, 61), 0);
	/* a too-small buffer: frame dropped, buffer stays posted */
	set_desc(f, VNET_RXQ, 0, RXBUF, 40, VRING_DESC_F_WRITE, 0);
	offer(f, VNET_RXQ, 0);
	assert_int_equal(virtio_net_rx(f->d, frame, 100), -EMSGSIZE);
	assert_int_equal(used_idx(f, VNET_RXQ), 0);
	/* rewrite it larger, post a second; the notify flushes both queued frames in order */
	set_desc(f, VNET_RXQ, 0, RXBUF, 1526, VRING_DESC_F_WRITE, 0);
	set_desc(f, VNET_RXQ, 1, RXBUF + 0x1000, 1526, VRING_DESC_F_WRITE, 0);
	offer(f, VNET_RXQ, 1);
	wr(f, VMMIO_QUEUE_NOTIFY, VNET_RXQ);
	assert_int_equal(used_idx(f, VNET_RXQ), 2);
	assert_int_equal(ram[RXBUF + 12], 1);
	assert_int_equal(ram[RXBUF + 0x1000 + 12], 2);
	assert_int_equal(used_len(f, VNET_RXQ, 1), 12 + 61);
	/* the holding queue is bounded */
	for (int i = 0; i < VNET_RXQ_LEN; i++)
		assert_int_equal(virtio_net_rx_queue(f->d, frame, 60), 0);
	assert_int_equal(virtio_net_rx_queue(f->d, frame, 60), -ENOBUFS);
	virtio_net_get_stats(f->d, &st);
	assert_int_equal(st.rx_frames, 2);
	assert_int_equal(st.rx_dropped, 1);
	/* a readable descriptor in an RX chain breaks the device */
	set_desc(f, VNET_RXQ, 2, RXBUF, 1526, 0, 0);
	offer(f, VNET_RXQ, 2);
	wr(f, VMMIO_QUEUE_NOTIFY, VNET_RXQ);
	assert_true(rd(f, VMMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET);
	assert_int_equal(virtio_net_rx(f->d, frame, 60), -ENETDOWN);
}

static void test_save_restore(void **state)
{
	struct fx *f = *state;
	size_t n = virtio_net_state_size(f->d);
	uint8_t *a = malloc(n), *b = malloc(n), *bad = malloc(n);
	struct virtio_net *d2;
	static const uint8_t mac2[6] = {0x52, 0x54, 0, 0, 0, 1};
	uint8_t frame[64] = {0xee};
	uint8_t m[6];
	uint32_t isr, gen;

	bring_up(f);
	set_desc(f, VNET_TXQ, 0, TXBUF, 80, 0, 0);
	offer(f, VNET_TXQ, 0);
	wr(f, VMMIO_QUEUE_NOTIFY, VNET_TXQ); /* leaves isr = 1, indices at 1 */
	set_desc(f, VNET_RXQ, 0, RXBUF, 1526, VRING_DESC_F_WRITE, 0);
	set_desc(f, VNET_RXQ, 1, RXBUF + 0x1000, 1526, VRING_DESC_F_WRITE, 0);
	offer(f, VNET_RXQ, 0);
	offer(f, VNET_RXQ, 1);
	assert_int_equal(virtio_net_rx(f->d, frame, sizeof(frame)), 0);
	isr = rd(f, VMMIO_INTERRUPT_STATUS);
	gen = rd(f, VMMIO_CONFIG_GENERATION);
	assert_int_equal(isr, 1); /* used-buffer notification pending */
	check_regs(f->d, isr, gen);
	assert_int_equal(virtio_net_save(f->d, a, n), (int)n);
	assert_int_equal(virtio_net_save(f->d, a, n - 1), -ENOSPC);

	assert_int_equal(virtio_net_create(&f->gm, mac2, NULL, NULL, &d2), 0);
	/* corruptions are refused and leave the device untouched */
	memcpy(bad, a, n);
	bad[0] ^= 1;
	assert_int_equal(virtio_net_restore(d2, bad, n), -EINVAL);
	assert_int_equal(virtio_net_restore(d2, a, n - 1), -EINVAL);
	memcpy(bad, a, n);
	bad[24 + 64] = 3; /* queue 0 num */
	assert_int_equal(virtio_net_restore(d2, bad, n), -EINVAL);
	memcpy(bad, a, n);
	uint64_t hole = 0xfeb00000;
	memcpy(bad + 24 + 64 + 8, &hole, 8); /* queue 0 desc in the MMIO hole */
	assert_int_equal(virtio_net_restore(d2, bad, n), -EINVAL);
	memcpy(bad, a, n);
	bad[24 + 44] |= 0x20; /* unknown status bit */
	assert_int_equal(virtio_net_restore(d2, bad, n), -EINVAL);
	assert_int_equal(virtio_net_status(d2), 0);

	assert_int_equal(virtio_net_restore(d2, a, n), 0);
	/* field by field through the register interface, not only blob against blob (d2 was made
	 * with another MAC: the restored config space is the source's) */
	check_regs(d2, isr, gen);
	assert_int_equal(virtio_net_save(d2, b, n), (int)n);
	assert_memory_equal(a, b, n);
	virtio_net_get_mac(d2, m);
	assert_memory_equal(m, MAC, 6);
	/* the restored device continues where the first left off: next RX goes to descriptor 1 */
	assert_int_equal(virtio_net_rx(d2, frame, sizeof(frame)), 0);
	assert_int_equal(used_idx(f, VNET_RXQ), 2);
	assert_int_equal(*(uint32_t *)((uint8_t *)f->ram + RING(0) + 0x800 + 4 + 8), 1);
	virtio_net_destroy(d2);
	free(a);
	free(b);
	free(bad);
}

/* The guest driver runs concurrently on another thread: recycle RX buffers while the host delivers. */
#define STRESS_N 20000

struct stress {
	struct fx *f;
	unsigned got, bad;
};

static void *guest_rx_driver(void *arg)
{
	struct stress *s = arg;
	struct fx *f = s->f;
	uint8_t *ram = f->ram;
	uint16_t *av = (uint16_t *)(ram + RING(0) + 0x400);
	uint16_t *uidx = (uint16_t *)(ram + RING(0) + 0x800 + 2);
	uint16_t seen = 0, aidx = QN;

	while (s->got < STRESS_N) {
		uint16_t u = __atomic_load_n(uidx, __ATOMIC_ACQUIRE);

		for (; seen != u; seen++) {
			uint32_t id, len, seq;
			uint8_t *elem = ram + RING(0) + 0x800 + 4 + 8 * (seen % QN);

			memcpy(&id, elem, 4);
			memcpy(&len, elem + 4, 4);
			memcpy(&seq, ram + RXBUF + id * 0x800 + 12, 4);
			if (id >= QN || seq != s->got || len != 12 + 64 + seq % 512)
				s->bad++;
			s->got++;
			av[2 + aidx % QN] = (uint16_t)id;
			__atomic_store_n(&av[1], ++aidx, __ATOMIC_RELEASE);
		}
		sched_yield();
	}
	return NULL;
}

static void test_rx_concurrent(void **state)
{
	struct fx *f = *state;
	struct stress s = {.f = f};
	uint8_t frame[64 + 512];
	pthread_t th;

	bring_up(f);
	for (unsigned i = 0; i < QN; i++) {
		set_desc(f, VNET_RXQ, i, RXBUF + i * 0x800, 0x800, VRING_DESC_F_WRITE, 0);
		offer(f, VNET_RXQ, (uint16_t)i);
	}
	assert_int_equal(pthread_create(&th, NULL, guest_rx_driver, &s), 0);
	for (uint32_t seq = 0; seq < STRESS_N; seq++) {
		int rc;

		memcpy(frame, &seq, 4);
		while ((rc = virtio_net_rx(f->d, frame, 64 + seq % 512)) == -EAGAIN)
			sched_yield();
		assert_int_equal(rc, 0);
	}
	pthread_join(th, NULL);
	assert_int_equal(s.got, STRESS_N);
	assert_int_equal(s.bad, 0);
	assert_int_equal(rd(f, VMMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET, 0);
}

static void test_netopt(void **state)
{
	struct net_opts o;
	char err[128];
	uint8_t m1[6], m2[6];

	(void)state;
	assert_int_equal(net_opts_parse("tap=dtap0", &o, err, sizeof(err)), 0);
	assert_string_equal(o.ifname, "dtap0");
	assert_string_equal(o.bridge, "");
	assert_false(o.mac_given);
	net_default_mac("dtap0", m1);
	assert_memory_equal(o.mac, m1, 6);
	assert_int_equal(m1[0], 0x52);
	assert_int_equal(m1[1], 0x54);
	assert_int_equal(m1[2], 0x00);
	net_default_mac("dtap1", m2);
	assert_memory_not_equal(m1, m2, 6);
	assert_int_equal(net_opts_parse("mac=52:54:00:AB:cd:01,bridge=br0,tap=t1", &o, err, sizeof(err)), 0);
	assert_string_equal(o.bridge, "br0");
	assert_true(o.mac_given);
	assert_int_equal(o.mac[3], 0xab);
	assert_int_equal(o.mac[5], 0x01);
	static const char *bad[] = {
		"",
		"tap",
		"tap=",
		"bridge=br0",
		"tap=a,tap=b",
		"tap=a,mac=52:54:00:00:00",
		"tap=a,mac=53:54:00:00:00:01",
		"tap=a,mac=00:00:00:00:00:00",
		"tap=a,mac=52-54-00-00-00-01",
		"tap=0123456789abcdef",
		"tap=a/b",
		"tap=..",
		"tap=a,foo=1",
		"tap=a,bridge=a",
		"tap=a b",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		if (net_opts_parse(bad[i], &o, err, sizeof(err)) != -EINVAL)
			fail_msg("accepted '%s'", bad[i]);
		assert_true(strlen(err) > 0);
		assert_null(strchr(err, '\n'));
	}
}

/* In a private network namespace: create a tap, bring it up, enslave it to a fresh bridge. */
static int tap_child(void)
{
	char err[160], name[IFNAMSIZ];
	struct nl_sock *sk;
	struct rtnl_link *l = NULL;
	struct ifreq ifr;
	int fd, s;

	if (unshare(CLONE_NEWNET)) {
		fprintf(stderr, "unshare(CLONE_NEWNET): %s\n", strerror(errno));
		return 77;
	}
	fd = tap_open("dtest0", name, 0, err, sizeof(err));
	if (fd < 0) {
		fprintf(stderr, "%s\n", err);
		return fd == -ENOENT || fd == -EPERM ? 77 : 1;
	}
	if (strcmp(name, "dtest0"))
		return 2;
	if (tap_set_up("dtest0", NULL, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		return 3;
	}
	s = socket(AF_INET, SOCK_DGRAM, 0);
	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, "dtest0");
	if (ioctl(s, SIOCGIFFLAGS, &ifr) || !(ifr.ifr_flags & IFF_UP))
		return 4;
	close(s);
	if (tap_set_up("nosuch0", NULL, err, sizeof(err)) != -ENODEV)
		return 5;
	if (tap_set_up("dtest0", "nobr0", err, sizeof(err)) != -ENODEV)
		return 6;
	sk = nl_socket_alloc();
	if (nl_connect(sk, NETLINK_ROUTE) || rtnl_link_bridge_add(sk, "dbr0"))
		return 7;
	if (tap_set_up("dtest0", "dbr0", err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		return 8;
	}
	if (rtnl_link_get_kernel(sk, 0, "dtest0", &l) || rtnl_link_get_master(l) <= 0)
		return 9;
	rtnl_link_put(l);
	nl_socket_free(sk);
	/* reopening the existing tap from a second fd fails (single-queue tap busy) or succeeds cleanly */
	close(fd);
	fd = tap_open("dtest0", NULL, 0, err, sizeof(err));
	if (fd < 0)
		return 10;
	close(fd);
	return 0;
}

static void test_tap_netns(void **state)
{
	int st;
	pid_t pid;

	(void)state;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(tap_child());
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	if (WEXITSTATUS(st) == 77) /* root on our KVM hosts: a set-up failure fails, never skips */
		fail_msg("set-up: no network namespace or /dev/net/tun (see stderr above)");
	assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_registers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_negotiation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tx, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_dirty, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_queue_and_small, setup, teardown),
		cmocka_unit_test_setup_teardown(test_save_restore, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_concurrent, setup, teardown),
		cmocka_unit_test(test_netopt),
		cmocka_unit_test(test_tap_netns),
	};

	return cmocka_run_group_tests_name("virtio_net", tests, NULL, NULL);
}
