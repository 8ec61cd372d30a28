/* net.c — the test guest's network stack: Ethernet, ARP, IPv4 (no fragments), ICMP echo, UDP. */
#include "net.h"

/* Every length read from a frame is checked against what the frame holds before use: the network
 * is hostile. Malformed frames are dropped silently (counted in rx_drop). */

#include "tcp.h"

#define ETH_P_IP 0x0800
#define ETH_P_ARP 0x0806
#define ETH_P_IPV6 0x86dd
#define UDP_HLEN 8
#define PROTO_ICMP 1
#define ARP_LEN 28
#define ARP_SLOTS 16

struct arp_ent {
	uint32_t ip; /* host order, 0 = empty */
	uint8_t mac[6];
	uint64_t stamp;
};

static struct {
	uint8_t mac[6];
	uint32_t ip, mask, gw; /* host order; gw 0 = none */
	uint16_t port;
	udp_rx_fn udp_fn;
	uint16_t ip_id;
	uint64_t arp_clock;
	struct arp_ent arp[ARP_SLOTS];
	struct net_stats st;
	uint8_t *tx_frame; /* net_tx_begin .. net_tx_end */
	size_t tx_len;
} ns;

static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

/* One's-complement sum of len bytes, added to sum (not folded). */
uint32_t csum_add(uint32_t sum, const uint8_t *p, size_t len)
{
	size_t i;

	for (i = 0; i + 1 < len; i += 2)
		sum += get16(p + i);
	if (len & 1)
		sum += (uint32_t)p[len - 1] << 8;
	return sum;
}

static uint32_t ip4_pseudo(uint32_t src, uint32_t dst, uint8_t proto, size_t len)
{
	return (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + proto + (uint32_t)len;
}

int parse_ipv4(const char *s, size_t len, uint32_t *out)
{
	uint32_t v = 0;
	size_t i = 0;

	for (int part = 0; part < 4; part++) {
		uint32_t o = 0;
		size_t start = i;

		while (i < len && s[i] >= '0' && s[i] <= '9' && i - start < 3)
			o = o * 10 + (uint32_t)(s[i++] - '0');
		if (i == start || o > 255)
			return -1;
		v = v << 8 | o;
		if (part < 3) {
			if (i >= len || s[i] != '.')
				return -1;
			i++;
		}
	}
	if (i != len)
		return -1;
	*out = v;
	return 0;
}

uint32_t net_ip(void)
{
	return ns.ip;
}

const uint8_t *net_mac(void)
{
	return ns.mac;
}

void net_get_stats(struct net_stats *st)
{
	*st = ns.st;
}

/* ---- ARP ------------------------------------------------------------------------------------- */

static void arp_learn(uint32_t ip, const uint8_t *mac)
{
	struct arp_ent *victim = &ns.arp[0];

	if (!ip || ip == ns.ip || (mac[0] & 1))
		return;
	for (int i = 0; i < ARP_SLOTS; i++) {
		struct arp_ent *e = &ns.arp[i];

		if (e->ip == ip) {
			victim = e;
			break;
		}
		if (e->stamp < victim->stamp)
			victim = e;
	}
	victim->ip = ip;
	memcpy(victim->mac, mac, 6);
	victim->stamp = ++ns.arp_clock;
}

static const uint8_t *arp_lookup(uint32_t ip)
{
	for (int i = 0; i < ARP_SLOTS; i++)
		if (ns.arp[i].ip == ip && ip)
			return ns.arp[i].mac;
	return NULL;
}

/* op 1 request / 2 reply; tha/dst NULL means broadcast, zero target MAC */
static void arp_send(uint16_t op, const uint8_t *dst, uint32_t tip)
{
	uint8_t *f = vnet_tx_alloc();

	if (!f)
		return;
	memcpy(f, dst ? dst : bcast, 6);
	memcpy(f + 6, ns.mac, 6);
	put16(f + 12, ETH_P_ARP);
	put16(f + 14, 1); /* Ethernet */
	put16(f + 16, ETH_P_IP);
	f[18] = 6;
	f[19] = 4;
	put16(f + 20, op);
	memcpy(f + 22, ns.mac, 6);
	put32(f + 28, ns.ip);
	if (dst)
		memcpy(f + 32, dst, 6);
	else
		memset(f + 32, 0, 6);
	put32(f + 38, tip);
	memset(f + 42, 0, 18); /* pad to the 60-byte minimum */
	vnet_tx_commit(60);
}

static void arp_input(const uint8_t *f, size_t len)
{
	const uint8_t *a = f + ETH_HLEN;
	uint32_t sip, tip;
	uint16_t op;

	if (len < ETH_HLEN + ARP_LEN || get16(a) != 1 || get16(a + 2) != ETH_P_IP || a[4] != 6 || a[5] != 4) {
		ns.st.rx_drop++;
		return;
	}
	op = get16(a + 6);
	sip = get32(a + 14);
	tip = get32(a + 24);
	if (tip != ns.ip)
		return; /* not for us (includes other hosts' gratuitous ARP) */
	arp_learn(sip, a + 8);
	if (op == 1 && sip) {
		arp_send(2, a + 8, sip);
		ns.st.arp_replies++;
	}
}

/* ---- IPv4 ------------------------------------------------------------------------------------ */

/* Fill Ethernet + IPv4 headers at f for a payload of plen bytes; returns the frame length. */
static size_t ip_header(uint8_t *f, const uint8_t *dmac, uint32_t dst, uint8_t proto, size_t plen)
{
	uint8_t *ip = f + ETH_HLEN;

	memcpy(f, dmac, 6);
	memcpy(f + 6, ns.mac, 6);
	put16(f + 12, ETH_P_IP);
	ip[0] = 0x45;
	ip[1] = 0;
	put16(ip + 2, (uint16_t)(IP_HLEN + plen));
	put16(ip + 4, ns.ip_id++);
	put16(ip + 6, 0x4000); /* DF */
	ip[8] = 64;
	ip[9] = proto;
	put16(ip + 10, 0);
	put32(ip + 12, ns.ip);
	put32(ip + 16, dst);
	put16(ip + 10, csum_fold(csum_add(0, ip, IP_HLEN)));
	return ETH_HLEN + IP_HLEN + plen;
}

static void commit_padded(uint8_t *f, size_t len)
{
	if (len < 60) {
		memset(f + len, 0, 60 - len);
		len = 60;
	}
	vnet_tx_commit(len);
}

static void icmp_input(const uint8_t *f, const uint8_t *ip, const uint8_t *p, size_t plen)
{
	uint8_t *o;

	if (plen < 8 || csum_fold(csum_add(0, p, plen)) != 0) {
		ns.st.rx_drop++;
		return;
	}
	if (p[0] != 8 || p[1] != 0)
		return; /* only echo requests are answered */
	if (ETH_HLEN + IP_HLEN + plen > VNET_FRAME_MAX || !(o = vnet_tx_alloc()))
		return;
	memcpy(o + ETH_HLEN + IP_HLEN, p, plen);
	o[ETH_HLEN + IP_HLEN] = 0; /* echo reply */
	put16(o + ETH_HLEN + IP_HLEN + 2, 0);
	put16(o + ETH_HLEN + IP_HLEN + 2, csum_fold(csum_add(0, o + ETH_HLEN + IP_HLEN, plen)));
	commit_padded(o, ip_header(o, f + 6, get32(ip + 12), PROTO_ICMP, plen));
	ns.st.icmp_replies++;
}

static void udp_input(const uint8_t *f, const uint8_t *ip, const uint8_t *p, size_t plen)
{
	size_t ulen;
	uint16_t ck;

	if (plen < UDP_HLEN) {
		ns.st.rx_drop++;
		return;
	}
	ulen = get16(p + 4);
	if (ulen < UDP_HLEN || ulen > plen) {
		ns.st.rx_drop++;
		return;
	}
	ck = get16(p + 6);
	if (ck) {
		uint32_t s = ip4_pseudo(get32(ip + 12), get32(ip + 16), PROTO_UDP, ulen);

		if (csum_fold(csum_add(s, p, ulen)) != 0) {
			ns.st.rx_drop++;
			return;
		}
	}
	if (get32(ip + 16) != ns.ip)
		return;
	{
		struct net_peer peer = {.v6 = false, .ip4 = get32(ip + 12)};

		memcpy(peer.mac, f + 6, 6);
		net_udp_deliver(&peer, p, ulen);
	}
}

void net_udp_deliver(const struct net_peer *p, const uint8_t *u, size_t ulen)
{
	struct udp_rx d;

	if (get16(u + 2) != ns.port || !ns.udp_fn)
		return;
	d.peer = *p;
	memcpy(d.src_mac, p->mac, 6);
	d.src_ip = p->ip4;
	if (p->v6) { /* retry-cache key: FNV of the address */
		d.src_ip = 2166136261u;
		for (int i = 0; i < 16; i++)
			d.src_ip = (d.src_ip ^ p->ip6[i]) * 16777619u;
	}
	d.src_port = get16(u);
	d.dst_port = get16(u + 2);
	d.data = u + UDP_HLEN;
	d.len = ulen - UDP_HLEN;
	ns.st.udp_rx++;
	ns.udp_fn(&d);
}

void net_count(int which)
{
	if (which == 0)
		ns.st.rx_drop++;
	else if (which == 1)
		ns.st.nd_replies++;
	else
		ns.st.icmp6_replies++;
}

static void ip_input(const uint8_t *f, size_t len)
{
	const uint8_t *ip = f + ETH_HLEN;
	size_t avail = len - ETH_HLEN, ihl, tot;
	uint32_t dst, src;

	if (avail < IP_HLEN || (ip[0] >> 4) != 4)
		goto drop;
	ihl = (size_t)(ip[0] & 15) * 4;
	tot = get16(ip + 2);
	if (ihl < IP_HLEN || ihl > avail || tot < ihl || tot > avail)
		goto drop;
	if (csum_fold(csum_add(0, ip, ihl)) != 0)
		goto drop;
	if (get16(ip + 6) & 0x3fff) /* MF or a fragment offset: no reassembly */
		goto drop;
	src = get32(ip + 12);
	dst = get32(ip + 16);
	if (dst != ns.ip)
		return; /* broadcasts and others' traffic: nothing for us */
	if (src == 0 || (src >> 24) == 127 || (src >> 28) >= 14 || (f[6] & 1))
		goto drop; /* martian source or multicast source MAC */
	switch (ip[9]) {
	case PROTO_ICMP:
		icmp_input(f, ip, ip + ihl, tot - ihl);
		return;
	case PROTO_UDP:
		udp_input(f, ip, ip + ihl, tot - ihl);
		return;
	case PROTO_TCP: {
		struct net_peer peer = {.v6 = false, .ip4 = src};

		memcpy(peer.mac, f + 6, 6);
		tcp_input(&peer, ip + ihl, tot - ihl);
		return;
	}
	default:
		return;
	}
drop:
	ns.st.rx_drop++;
}

static void eth_input(const uint8_t *f, size_t len)
{
	ns.st.rx_frames++;
	if (len < ETH_HLEN) {
		ns.st.rx_drop++;
		return;
	}
	if (memcmp(f, ns.mac, 6) && memcmp(f, bcast, 6) && !(f[0] == 0x33 && f[1] == 0x33))
		return; /* not ours (the bridge floods unknown unicast); 33:33:* is IPv6 multicast */
	switch (get16(f + 12)) {
	case ETH_P_ARP:
		arp_input(f, len);
		break;
	case ETH_P_IP:
		if (f[0] != 0x33)
			ip_input(f, len);
		break;
	case ETH_P_IPV6:
		net6_input(f, len);
		break;
	default: /* VLAN tags, LLC, ...: ignored */
		break;
	}
}

unsigned net_poll(unsigned budget)
{
	unsigned n = vnet_poll(eth_input, budget);

	tcp_flush();
	vnet_flush();
	return n;
}

/* ---- UDP out --------------------------------------------------------------------------------- */

uint32_t net_pseudo(const struct net_peer *p, uint8_t proto, size_t len)
{
	if (p->v6)
		return net6_pseudo(p->ip6, proto, len);
	return ip4_pseudo(ns.ip, p->ip4, proto, len);
}

uint8_t *net_tx_begin(const struct net_peer *p, uint8_t proto, size_t plen)
{
	size_t hl = ETH_HLEN + (p->v6 ? IP6_HLEN : IP_HLEN);
	uint8_t *f;

	if (hl + plen > 1514 || !(f = vnet_tx_alloc()))
		return NULL;
	if (p->v6) {
		memcpy(f, p->mac, 6);
		memcpy(f + 6, ns.mac, 6);
		put16(f + 12, ETH_P_IPV6);
		net6_header(f + ETH_HLEN, p->ip6, proto, plen);
		ns.tx_len = hl + plen;
	} else {
		ns.tx_len = ip_header(f, p->mac, p->ip4, proto, plen);
	}
	ns.tx_frame = f;
	return f + hl;
}

void net_tx_end(void)
{
	if (ns.tx_frame)
		commit_padded(ns.tx_frame, ns.tx_len);
	ns.tx_frame = NULL;
}

static int udp_out(const struct net_peer *p, uint16_t sport, uint16_t dport, const void *data, size_t len)
{
	size_t ulen = UDP_HLEN + len;
	uint8_t *u;
	uint16_t ck;

	if (!(u = net_tx_begin(p, PROTO_UDP, ulen)))
		return -1;
	put16(u, sport);
	put16(u + 2, dport);
	put16(u + 4, (uint16_t)ulen);
	put16(u + 6, 0);
	memcpy(u + UDP_HLEN, data, len);
	ck = csum_fold(csum_add(net_pseudo(p, PROTO_UDP, ulen), u, ulen));
	put16(u + 6, ck ? ck : 0xffff);
	net_tx_end();
	ns.st.udp_tx++;
	return 0;
}

int net_udp_reply(const struct udp_rx *d, const void *data, size_t len)
{
	return udp_out(&d->peer, d->dst_port, d->src_port, data, len);
}

int net_udp_send(uint32_t ip, uint16_t sport, uint16_t dport, const void *data, size_t len)
{
	uint32_t hop = ip;
	const uint8_t *mac;

	if ((ip & ns.mask) != (ns.ip & ns.mask)) {
		if (!ns.gw)
			return -1;
		hop = ns.gw;
	}
	if (!(mac = arp_lookup(hop))) {
		arp_send(1, NULL, hop);
		vnet_flush();
		return -2;
	}
	{
		struct net_peer p = {.v6 = false, .ip4 = ip};

		memcpy(p.mac, mac, 6);
		return udp_out(&p, sport, dport, data, len);
	}
}

/* ---- set-up ---------------------------------------------------------------------------------- */

int net_init(uint16_t port, udp_rx_fn fn)
{
	const char *v = cmdline_get("ip");
	size_t slash = 0, n;
	uint64_t plen;

	if (!v) {
		printf("net: error: no ip=A.B.C.D/N on the cmdline\n");
		return -1;
	}
	n = strlen(v);
	while (slash < n && v[slash] != '/')
		slash++;
	if (parse_ipv4(v, slash, &ns.ip) || slash + 1 >= n || parse_u64(v + slash + 1, &plen) || plen < 1 ||
	    plen > 30 || ns.ip == 0) {
		printf("net: error: bad ip=%s (want A.B.C.D/N, N 1..30)\n", v);
		return -1;
	}
	ns.mask = ~0u << (32 - plen);
	if ((v = cmdline_get("gw"))) {
		if (parse_ipv4(v, strlen(v), &ns.gw) || (ns.gw & ns.mask) != (ns.ip & ns.mask)) {
			printf("net: error: bad gw=%s (want an address in the ip= subnet)\n", v);
			return -1;
		}
	}
	ns.port = port;
	ns.udp_fn = fn;
	if (net6_init())
		return -1;
	if (vnet_init(ns.mac))
		return -1;
	arp_send(1, NULL, ns.ip); /* gratuitous ARP: sender = target = our address */
	vnet_flush();
	return 0;
}
