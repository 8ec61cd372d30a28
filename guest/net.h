/* net.h — the test guest's polling virtio-net driver (virtio.c) and IPv4/UDP stack (net.c). */
#ifndef DOPPEL_GUEST_NET_H
#define DOPPEL_GUEST_NET_H

#include "guest.h"

/*
 * Everything polls at ring 3 with interrupts off; all state (rings, buffers, ARP cache) is static
 * guest memory inside the ELF image (below 16 MiB), so snapshots and migration carry it.
 * Single-threaded: none of this is reentrant.
 */

#define VNET_HDR_LEN 12 /* largest virtio_net_hdr: 12 (v1, modern) or 10 (legacy, no MRG_RXBUF) */
#define VNET_BUF_SIZE 2048 /* each RX/TX buffer: header + frame */
#define VNET_FRAME_MAX (VNET_BUF_SIZE - VNET_HDR_LEN)
#define VNET_QMAX 256 /* entries per queue at most */

/* ---- virtio.c: the device -------------------------------------------------------------------- */
/*
 * Find the first `virtio_mmio.device=<size>@<base>[:<irq>]` on the cmdline whose device is a
 * virtio-mmio network device, version 2 (modern: negotiate VERSION_1 + MAC, FEATURES_OK) or
 * version 1 (legacy: MAC only, GuestPageSize/QueueAlign 4096, QueuePFN), set up RX queue 0 and
 * TX queue 1, post every RX buffer and set DRIVER_OK. Fills mac[6] from the config space (a
 * locally administered default if the device offers no MAC). Returns 0, or -1 after printing one
 * line `virtio: error: ...` naming what was wrong.
 */
int vnet_init(uint8_t mac[6]);

/* Frame handler for vnet_poll: frame points into the RX buffer (valid only during the call). */
typedef void (*vnet_rx_fn)(const uint8_t *frame, size_t len);

/*
 * Hand up to `budget` received frames to fn, re-post their buffers, and notify the RX queue only
 * if the device had run out of buffers. Returns the number of frames handled.
 */
unsigned vnet_poll(vnet_rx_fn fn, unsigned budget);

/*
 * TX in two steps: vnet_tx_alloc returns a buffer for one frame of up to VNET_FRAME_MAX bytes
 * (NULL if all TX descriptors are in flight: drop the frame), vnet_tx_commit(len) queues it
 * (len 14..VNET_FRAME_MAX, else the buffer is returned unsent). Nothing is sent to the device
 * until vnet_flush, which notifies the TX queue once for everything committed since the last flush.
 */
uint8_t *vnet_tx_alloc(void);
void vnet_tx_commit(size_t len);
void vnet_flush(void);

struct vnet_stats {
	uint64_t rx, tx, tx_full, kicks;
};
void vnet_get_stats(struct vnet_stats *st);

/* ---- net.c: Ethernet / ARP / IPv4 / ICMP / UDP --------------------------------------------- */
/* Addresses are kept in network byte order as uint8_t[4] in the stack; the API uses host-order u32. */

/* A received UDP datagram, as passed to the UDP handler. */
struct udp_rx {
	uint8_t src_mac[6];
	uint32_t src_ip; /* host order */
	uint16_t src_port; /* host order */
	uint16_t dst_port;
	const uint8_t *data;
	size_t len;
};

typedef void (*udp_rx_fn)(const struct udp_rx *d);

/*
 * Parse `ip=A.B.C.D/N` (required) and `gw=A.B.C.D` (optional) from the cmdline, bring up the device
 * (vnet_init), send a gratuitous ARP and register `fn` for datagrams to UDP port `port`.
 * Returns 0, or -1 after printing one error line.
 */
int net_init(uint16_t port, udp_rx_fn fn);

/* Poll the device: handle up to `budget` frames (ARP, ICMP echo, UDP to our port), then flush TX. */
unsigned net_poll(unsigned budget);

/* Reply to d (to its source MAC, IP and port) from our port with len payload bytes. Returns 0, or
 * -1 if the payload is too big or no TX buffer is free (the reply is dropped). */
int net_udp_reply(const struct udp_rx *d, const void *data, size_t len);

/* Send a datagram to ip:port (resolving ip or the gateway by ARP). Returns 0, -1 (too big, no
 * route, no TX buffer) or -2 (ARP request sent, not resolved yet: retry later). */
int net_udp_send(uint32_t ip, uint16_t sport, uint16_t dport, const void *data, size_t len);

uint32_t net_ip(void); /* our address, host order */
const uint8_t *net_mac(void);

struct net_stats {
	uint64_t rx_frames, rx_drop, arp_replies, icmp_replies, udp_rx, udp_tx;
};
void net_get_stats(struct net_stats *st);

/* "a.b.c.d" into host order; 0 or -1. */
int parse_ipv4(const char *s, size_t len, uint32_t *out);

#endif
