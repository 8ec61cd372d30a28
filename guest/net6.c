/* net6.c — the test guest's IPv6: ip6=ADDR/PREFIX, neighbour discovery, ICMPv6 echo, UDP and TCP. */
#include "tcp.h"

/*
 * One global address (ip6=) plus the EUI-64 link-local one (answered for NS and echo only). No
 * extension headers (dropped), no fragments, no router discovery: replies go to the request's
 * source MAC, as with IPv4. Checksums are verified on everything (UDP's is mandatory in IPv6).
 */

#define NH_TCP 6
#define NH_UDP 17
#define NH_ICMP6 58

static struct {
	bool on;
	unsigned prefix;
	uint8_t addr[16], ll[16];
} n6;

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Text IPv6 (hex groups, one "::"; no dotted IPv4 tail) into out[16]; 0 or -1. */
static int parse_ipv6(const char *s, size_t len, uint8_t out[16])
{
	uint16_t g[8];
	int n = 0, gap = -1;
	size_t i = 0;

	if (len >= 2 && s[0] == ':' && s[1] == ':') {
		gap = 0;
		i = 2;
	}
	while (i < len) {
		unsigned v = 0, d = 0;

		while (i < len && hexval(s[i]) >= 0 && d < 5)
			v = v << 4 | (unsigned)hexval(s[i++]), d++;
		if (d == 0 || d > 4 || n == 8)
			return -1;
		g[n++] = (uint16_t)v;
		if (i == len)
			break;
		if (s[i] != ':' || i + 1 == len)
			return -1;
		i++;
		if (s[i] == ':') {
			if (gap >= 0)
				return -1;
			gap = n;
			i++;
		}
	}
	if ((gap < 0 && n != 8) || (gap >= 0 && n > 7))
		return -1;
	memset(out, 0, 16);
	for (int k = 0; k < n; k++) {
		int pos = (gap >= 0 && k >= gap) ? 8 - (n - k) : k;

		put16(out + 2 * pos, g[k]);
	}
	return 0;
}

bool net6_enabled(void)
{
	return n6.on;
}

int net6_init(void)
{
	const char *v = cmdline_get("ip6");
	size_t slash = 0, n;
	uint64_t plen;
	const uint8_t *m;

	if (!v)
		return 0;
	n = strlen(v);
	while (slash < n && v[slash] != '/')
		slash++;
	if (parse_ipv6(v, slash, n6.addr) || slash + 1 >= n || parse_u64(v + slash + 1, &plen) || plen < 1 ||
	    plen > 128 || n6.addr[0] == 0xff) {
		printf("net: error: bad ip6=%s (want ADDR/PREFIX, PREFIX 1..128)\n", v);
		return -1;
	}
	n6.prefix = (unsigned)plen;
	n6.on = true;
	(void)m;
	return 0;
}

/* Called once the MAC is known (net_init): the EUI-64 link-local address. */
static void ll_init(void)
{
	const uint8_t *m = net_mac();

	if (n6.ll[0] == 0xfe)
		return;
	n6.ll[0] = 0xfe;
	n6.ll[1] = 0x80;
	n6.ll[8] = m[0] ^ 2;
	n6.ll[9] = m[1];
	n6.ll[10] = m[2];
	n6.ll[11] = 0xff;
	n6.ll[12] = 0xfe;
	n6.ll[13] = m[3];
	n6.ll[14] = m[4];
	n6.ll[15] = m[5];
}

static void hdr6(uint8_t *ip, const uint8_t src[16], const uint8_t dst[16], uint8_t nh, size_t plen,
		 uint8_t hop)
{
	put32(ip, 0x60000000u);
	put16(ip + 4, (uint16_t)plen);
	ip[6] = nh;
	ip[7] = hop;
	memcpy(ip + 8, src, 16);
	memcpy(ip + 24, dst, 16);
}

void net6_header(uint8_t *ip, const uint8_t dst[16], uint8_t nh, size_t plen)
{
	hdr6(ip, n6.addr, dst, nh, plen, 64);
}

static uint32_t pseudo(const uint8_t a[16], const uint8_t b[16], uint8_t nh, size_t len)
{
	uint32_t s = csum_add(csum_add(0, a, 16), b, 16);

	return s + (uint32_t)(len >> 16) + (uint32_t)(len & 0xffff) + nh;
}

uint32_t net6_pseudo(const uint8_t peer[16], uint8_t nh, size_t len)
{
	return pseudo(n6.addr, peer, nh, len);
}

/* Is a one of our unicast addresses (global, link-local)? Returns it, or NULL. */
static const uint8_t *ours(const uint8_t *a)
{
	if (!memcmp(a, n6.addr, 16))
		return n6.addr;
	if (!memcmp(a, n6.ll, 16))
		return n6.ll;
	return NULL;
}

/* Solicited-node multicast ff02::1:ffXX:XXXX of one of ours, or ff02::1. */
static bool our_mcast(const uint8_t *a)
{
	static const uint8_t sn[13] = {0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff};
	static const uint8_t all[16] = {0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};

	if (!memcmp(a, all, 16))
		return true;
	return !memcmp(a, sn, 13) && (!memcmp(a + 13, n6.addr + 13, 3) || !memcmp(a + 13, n6.ll + 13, 3));
}

/* Send an ICMPv6 message (body already at the returned pointer's +0) from src to dst/dmac. */
static uint8_t *icmp6_begin(uint8_t **frame, const uint8_t *dmac)
{
	uint8_t *f = vnet_tx_alloc();

	if (!f)
		return NULL;
	memcpy(f, dmac, 6);
	memcpy(f + 6, net_mac(), 6);
	put16(f + 12, 0x86dd);
	*frame = f;
	return f + ETH_HLEN + IP6_HLEN;
}

static void icmp6_end(uint8_t *f, const uint8_t *src, const uint8_t *dst, size_t plen, uint8_t hop)
{
	uint8_t *p = f + ETH_HLEN + IP6_HLEN;

	hdr6(f + ETH_HLEN, src, dst, NH_ICMP6, plen, hop);
	put16(p + 2, 0);
	put16(p + 2, csum_fold(csum_add(pseudo(src, dst, NH_ICMP6, plen), p, plen)));
	vnet_tx_commit(ETH_HLEN + IP6_HLEN + plen);
}

static void nd_solicit(const uint8_t *f, const uint8_t *ip, const uint8_t *p, size_t plen)
{
	static const uint8_t all_nodes[16] = {0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
	static const uint8_t all_mac[6] = {0x33, 0x33, 0, 0, 0, 1};
	static const uint8_t unspec[16];
	const uint8_t *tgt, *src = ip + 8;
	bool dad = !memcmp(src, unspec, 16);
	uint8_t *fr, *o;

	if (ip[7] != 255 || p[1] != 0 || plen < 24 || !(tgt = ours(p + 8))) {
		net_count(0);
		return;
	}
	for (size_t i = 24; i < plen;) { /* options: each at least 8 bytes, none of length 0 */
		if (i + 2 > plen || p[i + 1] == 0 || i + p[i + 1] * 8u > plen) {
			net_count(0);
			return;
		}
		i += p[i + 1] * 8u;
	}
	if (!(o = icmp6_begin(&fr, dad ? all_mac : f + 6)))
		return;
	o[0] = 136;
	o[1] = 0;
	put32(o + 4, dad ? 0x20000000u : 0x60000000u); /* (S)olicited | (O)verride */
	memcpy(o + 8, tgt, 16);
	o[24] = 2; /* target link-layer address */
	o[25] = 1;
	memcpy(o + 26, net_mac(), 6);
	icmp6_end(fr, tgt, dad ? all_nodes : src, 32, 255);
	net_count(1);
}

static void echo6(const uint8_t *f, const uint8_t *ip, const uint8_t *p, size_t plen)
{
	const uint8_t *me = ours(ip + 24);
	uint8_t *fr, *o;

	if (!me || ETH_HLEN + IP6_HLEN + plen > 1514 || !(o = icmp6_begin(&fr, f + 6)))
		return;
	memcpy(o, p, plen);
	o[0] = 129;
	icmp6_end(fr, me, ip + 8, plen, 64);
	net_count(2);
}

void net6_input(const uint8_t *f, size_t len)
{
	const uint8_t *ip = f + ETH_HLEN, *p;
	struct net_peer peer;
	size_t plen;

	if (!n6.on)
		return;
	ll_init();
	if (len < ETH_HLEN + IP6_HLEN || (ip[0] >> 4) != 6)
		goto drop;
	plen = get16(ip + 4);
	if (plen > len - ETH_HLEN - IP6_HLEN)
		goto drop;
	if (!ours(ip + 24) && !our_mcast(ip + 24))
		return;
	if (ip[8] == 0xff || (f[6] & 1))
		goto drop; /* multicast source */
	p = ip + IP6_HLEN;
	switch (ip[6]) {
	case NH_ICMP6:
		if (plen < 8 || csum_fold(csum_add(pseudo(ip + 8, ip + 24, NH_ICMP6, plen), p, plen)) != 0)
			goto drop;
		if (p[0] == 135)
			nd_solicit(f, ip, p, plen);
		else if (p[0] == 128 && p[1] == 0)
			echo6(f, ip, p, plen);
		return;
	case NH_UDP:
	case NH_TCP:
		if (memcmp(ip + 24, n6.addr, 16))
			return; /* services answer on the global address only */
		peer.v6 = true;
		peer.ip4 = 0;
		memcpy(peer.mac, f + 6, 6);
		memcpy(peer.ip6, ip + 8, 16);
		if (ip[6] == NH_TCP) {
			tcp_input(&peer, p, plen);
			return;
		}
		if (plen < 8 || get16(p + 4) < 8 || get16(p + 4) > plen || get16(p + 6) == 0 ||
		    csum_fold(csum_add(pseudo(ip + 8, ip + 24, NH_UDP, get16(p + 4)), p, get16(p + 4))) != 0)
			goto drop;
		net_udp_deliver(&peer, p, get16(p + 4));
		return;
	default: /* extension headers, fragments: not supported */
		goto drop;
	}
drop:
	net_count(0);
}
