/* colo_frames.h — frame builders for the COLO comparator tests and fuzz seeds (Ethernet/VLAN/IPv4/IPv6/TCP/UDP/ICMP/ARP/ND with real checksums). */
#ifndef DOPPEL_TESTS_COLO_FRAMES_H
#define DOPPEL_TESTS_COLO_FRAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* One direction of a flow as the builders see it: src is the sender. */
struct fdef {
	int family; /* 4 or 6 */
	uint8_t src[16], dst[16];
	uint16_t sport, dport;
	int nvlan; /* 0, 1 (802.1Q) or 2 (802.1ad outer + 802.1Q inner) */
	uint16_t vlan[2];
	bool ext6; /* IPv6: a hop-by-hop and a destination-options header before L4 */
	uint8_t ttl; /* 0 -> 64 */
	uint16_t ipid;
	uint32_t flowlabel;
};

static inline void fb_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static inline void fb_put32(uint8_t *p, uint32_t v)
{
	fb_put16(p, (uint16_t)(v >> 16));
	fb_put16(p + 2, (uint16_t)v);
}
static inline uint32_t fb_get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint32_t fb_sum(uint32_t s, const uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i + 1 < n; i += 2)
		s += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (n & 1)
		s += (uint32_t)p[n - 1] << 8;
	return s;
}
static inline uint16_t fb_fold(uint32_t s)
{
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

/* Ethernet (+ tags) header; returns its length. */
static inline size_t fb_eth(uint8_t *b, const struct fdef *d, uint16_t et)
{
	static const uint8_t mac_a[6] = {0x52, 0x54, 0, 0, 0, 1}, mac_b[6] = {0x52, 0x54, 0, 0, 0, 2};
	size_t o = 12;
	int i;

	memcpy(b, mac_b, 6);
	memcpy(b + 6, mac_a, 6);
	for (i = 0; i < d->nvlan; i++) {
		fb_put16(b + o, (d->nvlan == 2 && i == 0) ? 0x88a8 : 0x8100);
		fb_put16(b + o + 2, d->vlan[i]);
		o += 4;
	}
	fb_put16(b + o, et);
	return o + 2;
}

/* Eth + IP + the L4 bytes given; the L4 checksum (at l4[csum_off], -1: none) is computed. */
static inline size_t fb_ip(uint8_t *b, const struct fdef *d, uint8_t proto, const uint8_t *l4, size_t l4len,
			   int csum_off)
{
	size_t o = fb_eth(b, d, d->family == 6 ? 0x86dd : 0x0800), l3 = o, ext = 0;
	uint32_t s = 0;
	uint8_t *p;

	if (d->family == 4) {
		memset(b + o, 0, 20);
		b[o] = 0x45;
		fb_put16(b + o + 2, (uint16_t)(20 + l4len));
		fb_put16(b + o + 4, d->ipid);
		b[o + 8] = d->ttl ? d->ttl : 64;
		b[o + 9] = proto;
		memcpy(b + o + 12, d->src, 4);
		memcpy(b + o + 16, d->dst, 4);
		fb_put16(b + o + 10, fb_fold(fb_sum(0, b + o, 20)));
		o += 20;
		s = fb_sum(fb_sum(0, d->src, 4), d->dst, 4) + proto + (uint32_t)l4len;
	} else {
		ext = d->ext6 ? 16 : 0;
		fb_put32(b + o, 6u << 28 | (d->flowlabel & 0xfffff));
		fb_put16(b + o + 4, (uint16_t)(ext + l4len));
		b[o + 6] = d->ext6 ? 0 : proto;
		b[o + 7] = d->ttl ? d->ttl : 64;
		memcpy(b + o + 8, d->src, 16);
		memcpy(b + o + 24, d->dst, 16);
		o += 40;
		if (d->ext6) { /* hop-by-hop (PadN) then destination options (PadN) */
			memset(b + o, 0, 16);
			b[o] = 60;
			b[o + 2] = 1;
			b[o + 3] = 4;
			b[o + 8] = proto;
			b[o + 10] = 1;
			b[o + 11] = 4;
			o += 16;
		}
		s = fb_sum(fb_sum(0, d->src, 16), d->dst, 16) + proto + (uint32_t)l4len;
	}
	(void)l3;
	p = b + o;
	memcpy(p, l4, l4len);
	if (csum_off >= 0) {
		p[csum_off] = p[csum_off + 1] = 0;
		fb_put16(p + csum_off, fb_fold(fb_sum(s, p, l4len)));
	}
	return o + l4len;
}

static inline size_t fb_tcp_opts(uint8_t *b, const struct fdef *d, uint32_t seq, uint32_t ack, uint8_t flags,
				 const void *pay, size_t plen, const uint8_t *opt, size_t olen)
{
	uint8_t l4[2048];
	size_t hl = 20 + olen;

	memset(l4, 0, 20);
	fb_put16(l4, d->sport);
	fb_put16(l4 + 2, d->dport);
	fb_put32(l4 + 4, seq);
	fb_put32(l4 + 8, ack);
	l4[12] = (uint8_t)((hl / 4) << 4);
	l4[13] = flags;
	fb_put16(l4 + 14, 8192);
	if (olen)
		memcpy(l4 + 20, opt, olen);
	if (plen)
		memcpy(l4 + hl, pay, plen);
	return fb_ip(b, d, 6, l4, hl + plen, 16);
}

static inline size_t fb_tcp(uint8_t *b, const struct fdef *d, uint32_t seq, uint32_t ack, uint8_t flags,
			    const void *pay, size_t plen)
{
	return fb_tcp_opts(b, d, seq, ack, flags, pay, plen, NULL, 0);
}

static inline size_t fb_udp(uint8_t *b, const struct fdef *d, const void *pay, size_t plen)
{
	uint8_t l4[2048];

	fb_put16(l4, d->sport);
	fb_put16(l4 + 2, d->dport);
	fb_put16(l4 + 4, (uint16_t)(8 + plen));
	memcpy(l4 + 8, pay, plen);
	return fb_ip(b, d, 17, l4, 8 + plen, 6);
}

/* ICMP (v4) or ICMPv6 (v6) message: type, code, id, seq, payload */
static inline size_t fb_icmp(uint8_t *b, const struct fdef *d, uint8_t type, uint16_t id, const void *pay,
			     size_t plen)
{
	uint8_t l4[2048];

	memset(l4, 0, 8);
	l4[0] = type;
	fb_put16(l4 + 4, id);
	fb_put16(l4 + 6, 1);
	memcpy(l4 + 8, pay, plen);
	return fb_ip(b, d, d->family == 6 ? 58 : 1, l4, 8 + plen, 2);
}

/* ARP (Ethernet/IPv4): op 1 request, 2 reply */
static inline size_t fb_arp(uint8_t *b, const struct fdef *d, uint16_t op)
{
	size_t o = fb_eth(b, d, 0x0806);

	fb_put16(b + o, 1);
	fb_put16(b + o + 2, 0x0800);
	b[o + 4] = 6;
	b[o + 5] = 4;
	fb_put16(b + o + 6, op);
	memcpy(b + o + 8, b + 6, 6);
	memcpy(b + o + 14, d->src, 4);
	memset(b + o + 18, 0, 6);
	memcpy(b + o + 24, d->dst, 4);
	return o + 28;
}

/* ICMPv6 neighbour advertisement for `target` */
static inline size_t fb_na(uint8_t *b, const struct fdef *d, const uint8_t *target)
{
	uint8_t l4[32];

	memset(l4, 0, sizeof(l4));
	l4[0] = 136;
	l4[4] = 0x60;
	memcpy(l4 + 8, target, 16);
	l4[24] = 2; /* target link-layer address option, 8 bytes */
	l4[25] = 1;
	l4[26] = 0x52;
	l4[27] = 0x54;
	l4[31] = 1;
	return fb_ip(b, d, 58, l4, 32, 2);
}

/* Offset of the L4 header of a frame built by these builders. */
static inline size_t fb_l4off(const struct fdef *d)
{
	return 14 + 4 * (size_t)d->nvlan + (d->family == 6 ? 40 + (d->ext6 ? 16 : 0) : 20);
}

/* Recompute a built frame's L4 checksum and compare with the one in it. */
static inline bool fb_l4_csum_ok(const uint8_t *f, size_t len, const struct fdef *d, uint8_t proto)
{
	size_t l4 = fb_l4off(d), n = len - l4;
	uint32_t s;

	if (d->family == 4)
		s = fb_sum(fb_sum(0, d->src, 4), d->dst, 4);
	else
		s = fb_sum(fb_sum(0, d->src, 16), d->dst, 16);
	s += proto + (uint32_t)n;
	return fb_fold(fb_sum(s, f + l4, n)) == 0;
}

/* the reverse direction of d */
static inline struct fdef fb_rev(const struct fdef *d)
{
	struct fdef r = *d;

	memcpy(r.src, d->dst, 16);
	memcpy(r.dst, d->src, 16);
	r.sport = d->dport;
	r.dport = d->sport;
	return r;
}

#endif
