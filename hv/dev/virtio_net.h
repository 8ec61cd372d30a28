/* virtio_net.h — virtio-net device (one RX/TX queue pair) over virtio-mmio, backend-agnostic core + tap wiring. */
#ifndef DOPPEL_HV_VIRTIO_NET_H
#define DOPPEL_HV_VIRTIO_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hv/hv.h"
#include "hv/mem.h"
#include "hv/dev/virtio_mmio.h"

#define VIRTIO_ID_NET 1
#define VIRTIO_NET_F_MAC 5
#define VNET_HDR_LEN 12 /* struct virtio_net_hdr_v1 (with num_buffers) */
#define VNET_MAX_FRAME 65535 /* largest Ethernet frame carried (no GSO offered) */
#define VNET_RXQ_LEN 64 /* frames held while the guest has no RX buffer posted */
#define VNET_QUEUE_SIZE 256
#define VNET_RXQ 0
#define VNET_TXQ 1

struct virtio_net_hdr_v1 {
	uint8_t flags;
	uint8_t gso_type;
	uint16_t hdr_len;
	uint16_t gso_size;
	uint16_t csum_start;
	uint16_t csum_offset;
	uint16_t num_buffers;
} __attribute__((packed));

/* Where guest frames go. Called on the vCPU thread with the device lock held (do not call back
 * into the device). Return 0, or -errno if the frame was dropped (counted, never fatal).
 * The netbuf layer interposes here to hold frames until output commit. */
typedef int (*virtio_net_tx_fn)(void *opaque, const void *frame, size_t len);

struct virtio_net;

struct virtio_net_stats {
	uint64_t tx_frames, tx_dropped, rx_frames, rx_dropped, rx_queued;
};

/* ---- core (no struct vm: unit tests drive it over mem_init_buffer RAM) ---- */

/* Create a device with MAC `mac` over guest RAM gm. tx may be NULL (frames dropped) and set later.
 * Offers VERSION_1 | MAC | INDIRECT_DESC. Returns 0 or -errno. */
int virtio_net_create(struct guest_mem *gm, const uint8_t mac[6], virtio_net_tx_fn tx, void *tx_opaque,
		      struct virtio_net **out);
/* Free the device. The caller guarantees no io_fn / rx call can still run (VM stopped, watcher
 * stopped). NULL-safe. Does not free a tap backend (an attached device is freed by vm_destroy). */
void virtio_net_destroy(struct virtio_net *dev);

/* The io_fn to register for the device's 0x200-byte MMIO window (opaque = dev). */
int virtio_net_io(void *dev, uint64_t off, void *data, uint32_t len, bool is_write);

/* Replace the TX sink / interrupt line callback. Thread-safe (takes the device lock). */
void virtio_net_set_tx(struct virtio_net *dev, virtio_net_tx_fn tx, void *opaque);
void virtio_net_set_irq(struct virtio_net *dev, virtio_irq_fn fn, void *opaque);

/* Deliver one frame into the next posted RX chain (header with num_buffers = 1, then the frame),
 * marking exactly the written bytes device-dirty, pushing used and raising the interrupt. Takes the lock.
 * Returns 0; -EAGAIN when no RX buffer is posted (frame not taken); -ENETDOWN when the driver is not
 * ready or the device needs reset; -EMSGSIZE when the frame is empty, larger than VNET_MAX_FRAME or
 * larger than the posted chain (frame dropped, chain left posted); -EIO when the RX ring is broken
 * (device set NEEDS_RESET). */
int virtio_net_rx(struct virtio_net *dev, const void *frame, size_t len);

/* As virtio_net_rx, but on -EAGAIN the frame is copied into a bounded internal queue (VNET_RXQ_LEN),
 * flushed when the guest posts RX buffers or on virtio_net_poll. Keeps frame order. Returns 0 when
 * delivered or queued, -ENOBUFS when the queue is full (dropped), other errors as virtio_net_rx. */
int virtio_net_rx_queue(struct virtio_net *dev, const void *frame, size_t len);

/* Queue one frame behind any already queued without touching guest RAM (the VM is paused: see
 * vm_dma_begin); 0, or -ENOBUFS / -EMSGSIZE / -ENOMEM (dropped, counted). virtio_net_rx_flush
 * delivers the queue while the guest has RX buffers posted. Both take the lock. */
int virtio_net_rx_hold(struct virtio_net *dev, const void *frame, size_t len);
void virtio_net_rx_flush(struct virtio_net *dev);
/* Process pending TX chains and flush queued RX frames (e.g. from an event-loop timer). Takes the lock. */
void virtio_net_poll(struct virtio_net *dev);

void virtio_net_get_stats(struct virtio_net *dev, struct virtio_net_stats *st);
uint32_t virtio_net_status(struct virtio_net *dev); /* the Status register */
const char *virtio_net_broken(struct virtio_net *dev); /* why NEEDS_RESET, or NULL */
void virtio_net_get_mac(struct virtio_net *dev, uint8_t mac[6]);
struct virtio_mmio *virtio_net_transport(struct virtio_net *dev);

/* Guest-visible device state (transport registers, queue config and indices, interrupt status,
 * config generation, MAC) with a versioned header. The RX holding queue and the backend are not state.
 * save: returns bytes written or -ENOSPC. restore: validates everything (queue sizes, rings in RAM,
 * features a subset of the device's) before changing anything; returns 0 or -EINVAL. Call with the
 * VM paused. */
size_t virtio_net_state_size(struct virtio_net *dev);
int virtio_net_save(struct virtio_net *dev, void *buf, size_t len);
int virtio_net_restore(struct virtio_net *dev, const void *buf, size_t len);

/* Opaque backend pointer (set by virtio_net_attach). */
void virtio_net_set_backend(struct virtio_net *dev, void *backend);
void *virtio_net_backend(struct virtio_net *dev);

/* ---- wiring (hv/dev/virtio_net_attach.c) ---- */

struct ev_loop;

/* The host side of a virtio-net device, already parsed (the runtime parses --net: vmm/netopt.h). */
struct virtio_net_cfg {
	const char *ifname; /* tap device (created if absent), 1..15 characters */
	const char *bridge; /* NULL or "" = do not enslave */
	uint8_t mac[6]; /* guest MAC, unicast */
};

/* Open/create tap c->ifname, set it up (and enslave it to c->bridge), create the device with c->mac,
 * wire TX to the tap (virtio_net_tap_output), and attach it to vm under `name` (its state record,
 * e.g. "net0") through hv_dev_ops: the next virtio-mmio slot (vm_mmio_slot_claim: window, GSI driven
 * by vm_irq_line, and the guest's virtio_mmio.device= fragment in vm_dev_cmdline), save/restore,
 * reset, detach. Starts an ev_io RX watcher on `loop` (call on the loop's thread, before vm_start).
 * Returns 0 or -errno with one line in err; on error nothing is left behind. The VM owns the device
 * from then on (vm_destroy detaches it on the thread that destroys the VM, which must be the loop's).
 * The tap stays up after detach (it may be persistent or shared with a bridge). */
int virtio_net_attach(struct vm *vm, const char *name, const struct virtio_net_cfg *c, struct ev_loop *loop,
		      struct virtio_net **out, char *err, size_t errlen);

/* The slot the device got at attach (base, GSI, command-line fragment), or NULL when not attached. */
const struct hv_mmio_slot *virtio_net_slot(struct virtio_net *dev);

/* Default TX sink: write one frame to the device's tap (opaque = the struct virtio_net). Non-blocking:
 * returns -EAGAIN (frame dropped) when the tap is full. Does not take the device lock, so the netbuf
 * layer may call it from any thread to release held frames. */
int virtio_net_tap_output(void *dev, const void *frame, size_t len);

/* Deliver tap frames to the guest (on, the default after attach) or drop them (off: a standby
 * replica or an incoming migration, whose memory must only change through the stream). */
void virtio_net_rx_enable(struct virtio_net *dev, bool on);

/* Deliver one frame into the guest as if the tap had received it (any thread): through the DMA gate
 * (virtio_net_rx_queue), or held in the device's queue while the VM is paused (virtio_net_rx_hold).
 * Independent of virtio_net_rx_enable. Returns what those return. */
int virtio_net_inject(struct virtio_net *dev, const void *frame, size_t len);
/* Called on the loop thread with every tap frame about to be delivered to the guest (rx enabled);
 * fn NULL removes it. The frame is only valid during the call. */
typedef void (*virtio_net_rx_hook_fn)(void *opaque, const void *frame, size_t len);
void virtio_net_set_rx_hook(struct virtio_net *dev, virtio_net_rx_hook_fn fn, void *opaque);

/* The tap fd, or -1 when not attached. */
int virtio_net_tap_fd(struct virtio_net *dev);

#endif
