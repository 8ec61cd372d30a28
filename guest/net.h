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

/* ---- byte order and checksums (shared by net.c, net6.c, tcp.c) ------------------------------- */
static inline uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)(v >> 16));
	put16(p + 2, (uint16_t)v);
}

/* One's-complement sum of len bytes, added to sum (not folded). */
uint32_t csum_add(uint32_t sum, const uint8_t *p, size_t len);

static inline uint16_t csum_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

/* ---- net.c: Ethernet / ARP / IPv4 / ICMP / UDP --------------------------------------------- */
/* Addresses are kept in network byte order as uint8_t[4] in the stack; the API uses host-order u32. */

#define ETH_HLEN 14
#define IP_HLEN 20
#define IP6_HLEN 40
#define PROTO_TCP 6
#define PROTO_UDP 17

/* The other end of a datagram or connection: replies go to its MAC, from our address. */
struct net_peer {
	bool v6;
	uint8_t mac[6];
	uint32_t ip4; /* host order (IPv4) */
	uint8_t ip6[16]; /* IPv6 */
};

/*
 * Start a frame to peer carrying plen bytes of protocol proto: Ethernet and IP headers are filled,
 * the payload pointer is returned (NULL: too big or no TX buffer). Fill the payload, then call
 * net_tx_end() before the next net_tx_begin.
 */
uint8_t *net_tx_begin(const struct net_peer *p, uint8_t proto, size_t plen);
void net_tx_end(void);
/* Pseudo-header sum (unfolded) for a len-byte proto payload between us and peer. */
uint32_t net_pseudo(const struct net_peer *p, uint8_t proto, size_t len);

/* A received UDP datagram, as passed to the UDP handler. */
struct udp_rx {
	struct net_peer peer;
	uint8_t src_mac[6];
	uint32_t src_ip; /* host order; IPv6: a hash of the address (retry cache key) */
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
	uint64_t rx_frames, rx_drop, arp_replies, icmp_replies, udp_rx, udp_tx, nd_replies, icmp6_replies;
};
void net_get_stats(struct net_stats *st);

/* ---- net6.c: IPv6, neighbour discovery, ICMPv6 echo, UDP and TCP over IPv6 -------------------- */
/* Parse ip6=ADDR/PREFIX if given: 0 (also when absent), -1 after printing an error line. */
int net6_init(void);
bool net6_enabled(void);
/* An IPv6 frame (EtherType 0x86dd) for us. */
void net6_input(const uint8_t *f, size_t len);
/* Fill the IPv6 header at ip for plen payload bytes to dst. */
void net6_header(uint8_t *ip, const uint8_t dst[16], uint8_t nh, size_t plen);
uint32_t net6_pseudo(const uint8_t peer[16], uint8_t nh, size_t len);
/* UDP to our port over IPv6 is handed to the same handler as IPv4 (net.c). */
void net_udp_deliver(const struct net_peer *p, const uint8_t *u, size_t ulen);
void net_count(int which); /* 0 rx_drop, 1 nd_replies, 2 icmp6_replies */
/* "a.b.c.d" into host order; 0 or -1. */
int parse_ipv4(const char *s, size_t len, uint32_t *out);

#endif
