/* fuzz_virtio_blk.c — libFuzzer: virtio-blk requests from hostile guest RAM (chains, headers, lengths, segments), registers, state restore. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hv/dev/virtio_blk.h"
#include "hv/mem.h"

#define RAM_SIZE (64u << 10)
#define DISK_SIZE (64u << 10)
#define QN 16
#define DESC 0x1000u
#define AVAIL 0x1200u
#define USED 0x1400u

static void reg(struct virtio_blk *d, uint32_t off, uint32_t v)
{
	virtio_blk_io(d, off, &v, 4, true);
}

static int fuzz_one(const uint8_t *data, size_t size)
{
	static uint8_t ram[RAM_SIZE] __attribute__((aligned(4096)));
	struct guest_mem gm;
	struct virtio_blk *d = NULL;
	uint8_t *state = NULL;
	int fd;

	if (size < 4)
		return 0;
	memset(ram, 0, sizeof(ram));
	/* The first bytes steer; the rest is guest RAM from the descriptor table on (rings, headers, data). */
	uint8_t feat = data[0], ro = data[1] & 1, restore = data[1] & 2, nreq = data[2] % (QN + 1);
	size_t n = size - 4 < RAM_SIZE - DESC ? size - 4 : RAM_SIZE - DESC;
	memcpy(ram + DESC, data + 4, n);
	if (mem_init_buffer(&gm, ram, RAM_SIZE))
		return 0;
	fd = memfd_create("fuzzdisk", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, DISK_SIZE) || virtio_blk_create(&gm, fd, DISK_SIZE, ro, "fz", 1, &d)) {
		if (fd >= 0)
			close(fd);
		mem_destroy(&gm);
		return 0;
	}
	reg(d, VMMIO_STATUS, 0);
	reg(d, VMMIO_STATUS, 3);
	reg(d, VMMIO_DRV_FEATURES_SEL, 0);
	reg(d, VMMIO_DRV_FEATURES, (feat & 1) ? 1u << VIRTIO_F_INDIRECT_DESC : 0);
	reg(d, VMMIO_DRV_FEATURES_SEL, 1);
	reg(d, VMMIO_DRV_FEATURES, 1);
	reg(d, VMMIO_STATUS, 0xb);
	reg(d, VMMIO_QUEUE_SEL, 0);
	reg(d, VMMIO_QUEUE_NUM, QN);
	reg(d, VMMIO_QUEUE_DESC_LO, DESC);
	reg(d, VMMIO_QUEUE_DRIVER_LO, AVAIL);
	reg(d, VMMIO_QUEUE_DEVICE_LO, USED);
	reg(d, VMMIO_QUEUE_READY, 1);
	reg(d, VMMIO_STATUS, 0xf);
	memcpy(ram + AVAIL + 2, &(uint16_t){nreq}, 2); /* avail idx: the heads come from the input */
	reg(d, VMMIO_QUEUE_NOTIFY, data[3] & 1);
	virtio_blk_drain(d);
	if (restore) {
		size_t sz = virtio_blk_state_size(d);

		state = malloc(sz);
		if (state && virtio_blk_save(d, state, sz) > 0) {
			/* flip one byte chosen by the input, restore, run what was re-queued */
			state[(data[3] * 131u) % sz] ^= data[2];
			(void)virtio_blk_restore(d, state, sz);
			virtio_blk_kick(d);
			virtio_blk_drain(d);
		}
		free(state);
	}
	virtio_blk_destroy(d); /* closes fd */
	mem_destroy(&gm);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_one(data, size);
}
