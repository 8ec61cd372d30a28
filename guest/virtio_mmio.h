/* virtio_mmio.h — the virtio-mmio register layout and virtqueue flags shared by the guest's drivers. */
#ifndef GUEST_VIRTIO_MMIO_H
#define GUEST_VIRTIO_MMIO_H

/* virtio-mmio registers (virtio 1.x §4.2.2; the L_* ones only in the legacy layout, §4.2.4) */
#define R_MAGIC 0x000
#define R_VERSION 0x004
#define R_DEVICE_ID 0x008
#define R_DEV_FEAT 0x010
#define R_DEV_FEAT_SEL 0x014
#define R_DRV_FEAT 0x020
#define R_DRV_FEAT_SEL 0x024
#define L_GUEST_PAGE_SZ 0x028
#define R_QUEUE_SEL 0x030
#define R_QUEUE_NUM_MAX 0x034
#define R_QUEUE_NUM 0x038
#define L_QUEUE_ALIGN 0x03c
#define L_QUEUE_PFN 0x040
#define R_QUEUE_READY 0x044
#define R_QUEUE_NOTIFY 0x050
#define R_STATUS 0x070
#define R_QUEUE_DESC_LO 0x080
#define R_QUEUE_DESC_HI 0x084
#define R_QUEUE_AVAIL_LO 0x090
#define R_QUEUE_AVAIL_HI 0x094
#define R_QUEUE_USED_LO 0x0a0
#define R_QUEUE_USED_HI 0x0a4
#define R_CONFIG_GEN 0x0fc
#define R_CONFIG 0x100

#define MMIO_MAGIC 0x74726976u
#define ST_ACK 0x01
#define ST_DRIVER 0x02
#define ST_DRIVER_OK 0x04
#define ST_FEATURES_OK 0x08
#define ST_FAILED 0x80

#define F_VERSION_1 32

#define DESC_F_NEXT 1
#define DESC_F_WRITE 2
#define AVAIL_F_NO_INTERRUPT 1
#define USED_F_NO_NOTIFY 1

#define VQ_PAGE 4096 /* legacy GuestPageSize and QueueAlign */
/* Offset of the used ring in a legacy queue area of `num` entries (desc + avail, page-aligned). */
#define VQ_USED_OFF(num) (((16u * (num) + 6u + 2u * (num)) + VQ_PAGE - 1) & ~(VQ_PAGE - 1u))

#define mfence() __asm__ volatile("mfence" ::: "memory")

#include <stdbool.h>
#include <stdint.h>

/* Call probe(base) for every virtio_mmio.device=<size>@<base>[:<irq>] entry on the guest command line
 * (base must lie in the uncached MMIO hole, 4-byte aligned), in order, until one returns <= 0 (its
 * value is returned: 0 took the device, < 0 an error). Returns 1 when none did; *seen counts the
 * entries, *bad those that did not parse (skipped). */
int vmmio_for_each_dev(int (*probe)(uint64_t base, void *opaque), void *opaque, unsigned *seen,
		       unsigned *bad);
/* Hand queue idx (num entries; rings at desc/avail/used) to the device at base: the legacy PFN layout
 * (used ring at the next VQ_PAGE boundary) or the modern split addresses + QueueReady. */
void vmmio_queue_give(uint64_t base, bool legacy, unsigned idx, uint16_t num, const void *desc,
		      const void *avail, const void *used);

#endif
