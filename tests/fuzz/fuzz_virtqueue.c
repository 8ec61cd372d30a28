/* fuzz_virtqueue.c — libFuzzer: drive virtio-mmio/virtio-net registers, guest RAM writes, RX/TX, raw vq pop/push and state restore. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hv/mem.h"
#include "hv/dev/virtio_net.h"
#include "hv/dev/virtqueue.h"

#define RAM_SIZE (64u << 10)

struct in {
	const uint8_t *p;
	size_t n;
};

static unsigned take(struct in *in, unsigned bytes)
{
	unsigned v = 0;

	for (unsigned i = 0; i < bytes; i++) {
		v <<= 8;
		if (in->n) {
			v |= *in->p++;
			in->n--;
		}
	}
	return v;
}

static int tx_sink(void *opaque, const void *frame, size_t len)
{
	(void)opaque;
	/* touch every byte so ASan sees any bad gather */
	volatile uint8_t x = 0;
	for (size_t i = 0; i < len; i++)
		x ^= ((const uint8_t *)frame)[i];
	(void)x;
	return 0;
}

static void irq_sink(void *opaque, int level)
{
	(void)opaque, (void)level;
}

static void reg(struct virtio_net *d, uint32_t off, uint32_t v)
{
	virtio_net_io(d, off, &v, 4, true);
}

static void bring_up(struct virtio_net *d, struct in *in)
{
	reg(d, VMMIO_STATUS, 0);
	reg(d, VMMIO_STATUS, 3);
	reg(d, VMMIO_DRV_FEATURES_SEL, 0);
	reg(d, VMMIO_DRV_FEATURES, take(in, 4) & ((1u << VIRTIO_NET_F_MAC) | (1u << VIRTIO_F_INDIRECT_DESC)));
	reg(d, VMMIO_DRV_FEATURES_SEL, 1);
	reg(d, VMMIO_DRV_FEATURES, 1);
	reg(d, VMMIO_STATUS, 0xb);
	for (unsigned q = 0; q < 2; q++) {
		reg(d, VMMIO_QUEUE_SEL, q);
		reg(d, VMMIO_QUEUE_NUM, 1u << (take(in, 1) % 9));
		reg(d, VMMIO_QUEUE_DESC_LO, take(in, 2) & ~15u);
		reg(d, VMMIO_QUEUE_DRIVER_LO, take(in, 2) & ~1u);
		reg(d, VMMIO_QUEUE_DEVICE_LO, take(in, 2) & ~3u);
		reg(d, VMMIO_QUEUE_READY, 1);
	}
	reg(d, VMMIO_STATUS, 0xf);
}

static void raw_vq(struct guest_mem *gm, struct in *in)
{
	struct vq_elem e;
	struct vq vq;
	uint8_t junk[64];

	vq_reset(&vq);
	vq.num = (uint16_t)take(in, 2);
	vq.desc_gpa = take(in, 2);
	vq.avail_gpa = take(in, 2);
	vq.used_gpa = take(in, 2);
	vq.indirect = take(in, 1) & 1;
	vq.last_avail_idx = (uint16_t)take(in, 2);
	if (vq_enable(&vq, gm, VQ_MAX_SIZE))
		return;
	for (int i = 0; i < 8; i++) {
		int rc = vq_pop(&vq, gm, &e);

		if (rc <= 0)
			break;
		vq_elem_read(&e, take(in, 1), junk, sizeof(junk));
		vq_elem_write(gm, &e, take(in, 1), junk, sizeof(junk));
		vq_push(&vq, gm, e.head, (uint32_t)e.in_bytes);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t mac[6] = {0x52, 0x54, 0, 1, 2, 3};
	struct in in = {data, size};
	struct guest_mem gm;
	struct virtio_net *d;
	uint8_t *ram, frame[2048], state[512];
	int rc;

	ram = aligned_alloc(4096, RAM_SIZE);
	if (!ram)
		return 0;
	memset(ram, 0, RAM_SIZE);
	if (mem_init_buffer(&gm, ram, RAM_SIZE)) {
		free(ram);
		return 0;
	}
	if (virtio_net_create(&gm, mac, tx_sink, NULL, &d)) {
		mem_destroy(&gm);
		free(ram);
		return 0;
	}
	virtio_net_set_irq(d, irq_sink, NULL);
	for (int steps = 0; in.n && steps < 512; steps++) {
		unsigned op = take(&in, 1) % 10, off, len;
		uint32_t v = 0;
		uint64_t wide = 0;

		switch (op) {
		case 0: /* register write */
			off = (take(&in, 1) * 4) & 0xfc;
			reg(d, off, take(&in, 4));
			break;
		case 1: /* register read */
			virtio_net_io(d, (take(&in, 1) * 4) & 0xfc, &v, 4, false);
			break;
		case 2: /* the guest writes RAM */
			off = take(&in, 2);
			len = take(&in, 1);
			if (len > in.n)
				len = (unsigned)in.n;
			if (off + len <= RAM_SIZE)
				memcpy(ram + off, in.p, len);
			in.p += len;
			in.n -= len;
			break;
		case 3:
		case 4: /* a frame from the backend */
			len = take(&in, 2) % sizeof(frame);
			memset(frame, (int)len, len);
			if (op == 3)
				virtio_net_rx(d, frame, len);
			else
				virtio_net_rx_queue(d, frame, len);
			break;
		case 5:
			virtio_net_poll(d);
			break;
		case 6: /* any offset / width in the window, including config space */
			off = take(&in, 2) % 0x240;
			len = 1u << (take(&in, 1) % 4);
			if (take(&in, 1) & 1)
				virtio_net_io(d, off, &wide, len, true);
			else
				virtio_net_io(d, off, &wide, len, false);
			break;
		case 7: /* save, mutate, restore */
			if (virtio_net_state_size(d) <= sizeof(state) &&
			    (rc = virtio_net_save(d, state, sizeof(state))) > 0) {
				off = take(&in, 2) % (unsigned)rc;
				state[off] ^= (uint8_t)take(&in, 1);
				virtio_net_restore(d, state, (size_t)rc);
			}
			break;
		case 8:
			bring_up(d, &in);
			break;
		case 9:
			raw_vq(&gm, &in);
			break;
		}
	}
	virtio_net_destroy(d);
	mem_destroy(&gm);
	free(ram);
	return 0;
}
