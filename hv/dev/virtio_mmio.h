/* virtio_mmio.h — virtio-mmio transport (virtio 1.x §4.2, Version 2 register layout only). */
#ifndef DOPPEL_HV_VIRTIO_MMIO_H
#define DOPPEL_HV_VIRTIO_MMIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hv/mem.h"
#include "hv/dev/virtqueue.h"

/* One device's register window. Windows and interrupt lines come from the VM's slot allocator
 * (vm_mmio_slot_claim in hv/hv.h), which also writes the guest's virtio_mmio.device= fragment. */
#define VIRTIO_MMIO_SIZE 0x200ull
#define VIRTIO_MMIO_MAX_QUEUES 4
#define VIRTIO_MMIO_MAGIC 0x74726976u

/* Registers (§4.2.2). */
enum {
	VMMIO_MAGIC = 0x000,
	VMMIO_VERSION = 0x004,
	VMMIO_DEVICE_ID = 0x008,
	VMMIO_VENDOR_ID = 0x00c,
	VMMIO_DEV_FEATURES = 0x010,
	VMMIO_DEV_FEATURES_SEL = 0x014,
	VMMIO_DRV_FEATURES = 0x020,
	VMMIO_DRV_FEATURES_SEL = 0x024,
	VMMIO_QUEUE_SEL = 0x030,
	VMMIO_QUEUE_NUM_MAX = 0x034,
	VMMIO_QUEUE_NUM = 0x038,
	VMMIO_QUEUE_READY = 0x044,
	VMMIO_QUEUE_NOTIFY = 0x050,
	VMMIO_INTERRUPT_STATUS = 0x060,
	VMMIO_INTERRUPT_ACK = 0x064,
	VMMIO_STATUS = 0x070,
	VMMIO_QUEUE_DESC_LO = 0x080,
	VMMIO_QUEUE_DESC_HI = 0x084,
	VMMIO_QUEUE_DRIVER_LO = 0x090,
	VMMIO_QUEUE_DRIVER_HI = 0x094,
	VMMIO_QUEUE_DEVICE_LO = 0x0a0,
	VMMIO_QUEUE_DEVICE_HI = 0x0a4,
	VMMIO_CONFIG_GENERATION = 0x0fc,
	VMMIO_CONFIG = 0x100,
};

/* Device status bits (§2.1). */
#define VIRTIO_STATUS_ACKNOWLEDGE 0x01
#define VIRTIO_STATUS_DRIVER 0x02
#define VIRTIO_STATUS_DRIVER_OK 0x04
#define VIRTIO_STATUS_FEATURES_OK 0x08
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED 0x80

#define VIRTIO_INT_USED 0x1
#define VIRTIO_INT_CONFIG 0x2

#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_VERSION_1 32

/* Device model callbacks. All are called with the transport lock held. */
struct virtio_dev_ops {
	void (*notify)(void *opaque, unsigned queue); /* QueueNotify on a live queue */
	void (*cfg_read)(void *opaque, uint32_t off, void *data, uint32_t len); /* data pre-zeroed */
	void (*cfg_write)(void *opaque, uint32_t off, const void *data, uint32_t len);
	void (*reset)(void *opaque); /* after the transport has reset itself (Status = 0) */
};

/* Interrupt line callback: level 1 = assert, 0 = deassert. Called with the lock held. The line is
 * level-style (asserted while InterruptStatus != 0); a new event while it is already asserted
 * pulses it 0 -> 1 so an edge-triggered pin also sees it. Level VIRTIO_IRQ_WAKE: buffers were used
 * while the driver suppresses interrupts (a polling guest): wake it from the idle doorbell (vm_wake). */
#define VIRTIO_IRQ_WAKE (-1)
typedef void (*virtio_irq_fn)(void *opaque, int level);

struct virtio_mmio {
	pthread_mutex_t lock;
	struct guest_mem *gm;
	uint32_t device_id, vendor_id;
	uint64_t device_features, driver_features;
	uint32_t dev_feat_sel, drv_feat_sel, queue_sel;
	uint32_t status, isr, config_gen;
	unsigned nr_queues;
	uint16_t queue_max;
	struct vq vq[VIRTIO_MMIO_MAX_QUEUES];
	const struct virtio_dev_ops *ops;
	void *opaque;
	virtio_irq_fn irq;
	void *irq_opaque;
	int irq_level;
	const char *broken; /* reason NEEDS_RESET was set (static string) or NULL */
};

/* Initialise a transport. features must include VIRTIO_F_VERSION_1; nr_queues 1..VIRTIO_MMIO_MAX_QUEUES,
 * queue_max a power of two <= VQ_MAX_SIZE. Returns 0 or -EINVAL. */
int virtio_mmio_init(struct virtio_mmio *t, struct guest_mem *gm, uint32_t device_id, uint64_t features,
		     unsigned nr_queues, uint16_t queue_max, const struct virtio_dev_ops *ops, void *opaque);
void virtio_mmio_destroy(struct virtio_mmio *t);

/* Set the interrupt callback (may be NULL: interrupts only latch InterruptStatus). Takes the lock. */
void virtio_mmio_set_irq(struct virtio_mmio *t, virtio_irq_fn fn, void *opaque);

/* The io_fn for vm_io_register(IO_MMIO, base, VIRTIO_MMIO_SIZE, virtio_mmio_io, t). Takes the lock.
 * Never fails: malformed accesses (bad width/offset) read as 0 and are ignored on write. */
int virtio_mmio_io(void *opaque, uint64_t off, void *data, uint32_t len, bool is_write);

/* --- for device models, lock held --- */

/* Queue q can be processed: DRIVER_OK, not NEEDS_RESET, queue ready. */
bool virtio_mmio_queue_live(const struct virtio_mmio *t, unsigned q);

/* Latch interrupt bits (VIRTIO_INT_*) and assert the line. */
void virtio_mmio_interrupt(struct virtio_mmio *t, uint32_t bits);
/* After vq_push on vq: interrupt if the driver wants one, else only a VIRTIO_IRQ_WAKE. */
void virtio_mmio_used(struct virtio_mmio *t, struct vq *vq);

/* The driver broke the device: set NEEDS_RESET, raise a config interrupt, stop processing until reset. */
void virtio_mmio_set_broken(struct virtio_mmio *t, const char *why);

/* Serialised transport state (little endian, fixed size). restore validates everything (status bits,
 * features a subset of the device's, queue sizes, ring addresses in RAM) before changing anything.
 * Both take the lock. save returns bytes written or -ENOSPC; restore returns bytes consumed or -EINVAL. */
size_t virtio_mmio_state_size(const struct virtio_mmio *t);
int virtio_mmio_save(struct virtio_mmio *t, void *buf, size_t len);
int virtio_mmio_restore(struct virtio_mmio *t, const void *buf, size_t len);

#endif
