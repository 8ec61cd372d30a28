/* colo_parse.c — COLO comparator frame parsing (Ethernet, 802.1Q/802.1ad, IPv4, IPv6, TCP, UDP, ICMP, ARP) and normalised comparison. */
#include <string.h>

#include "netbuf/colo_int.h"

#define ETH_HLEN 14
#define ET_IP4 0x0800
#define ET_ARP 0x0806
#define ET_IP6 0x86dd
#define ET_8021Q 0x8100
#define ET_8021AD 0x88a8
#define ET_QINQ_OLD 0x9100

#define P_ICMP 1
#define P_TCP 6
#define P_UDP 17
#define P_ICMP6 58

static void ign(struct colo_pkt *p, size_t off, uint8_t len)
{
	if (p->nign < COLO_MAX_IGN) {
		p->ign_off[p->nign] = (uint16_t)off;
		p->ign_len[p->nign] = len;
		p->nign++;
	}
}

static void bad(struct colo_pkt *p, size_t len)
{
	/* keep netidx, VLANs and ethertype: the frame is compared whole, in order, on that flow */
	memset(p->key.src, 0, sizeof(p->key.src));
	memset(p->key.dst, 0, sizeof(p->key.dst));
	p->key.family = 0;
	p->key.proto = 0;
	p->key.sport = p->key.dport = 0;
	p->key.frag = 0;
	p->kind = CK_OTHER;
	p->malformed = true;
	p->tcp = false;
	p->nign = 0;
	p->cmp_end = (uint32_t)len;
}

/* L4 at f[l4 .. end): TCP, UDP, ICMP/ICMPv6 or another protocol (compared as bytes). */
static void parse_l4(const uint8_t *f, size_t l4, size_t end, size_t len, uint8_t proto, struct colo_pkt *p)
{
	size_t n = end - l4;

	p->key.proto = proto;
	p->cmp_end = (uint32_t)end;
	if (proto == P_TCP) {
		size_t doff;

		if (n < 20 || (doff = (size_t)(f[l4 + 12] >> 4) * 4) < 20 || doff > n)
			return bad(p, len);
		p->kind = CK_TCP;
		p->tcp = true;
		p->key.sport = get16(f + l4);
		p->key.dport = get16(f + l4 + 2);
		p->seq = get32(f + l4 + 4);
		p->ack = get32(f + l4 + 8);
		p->tflags = f[l4 + 13];
		p->l4off = (uint32_t)l4;
		p->optoff = (uint32_t)(l4 + 20);
		p->optlen = (uint32_t)(doff - 20);
		p->payoff = (uint32_t)(l4 + doff);
		p->paylen = (uint32_t)(n - doff);
	} else if (proto == P_UDP) {
		if (n < 8 || get16(f + l4 + 4) < 8 || get16(f + l4 + 4) > n)
			return bad(p, len);
		p->kind = CK_UDP;
		p->key.sport = get16(f + l4);
		p->key.dport = get16(f + l4 + 2);
		p->cmp_end = (uint32_t)(l4 + get16(f + l4 + 4));
		ign(p, l4 + 6, 2);
	} else if (proto == P_ICMP || proto == P_ICMP6) {
		uint8_t t;

		if (n < 4)
			return bad(p, len);
		t = f[l4];
		p->kind = (proto == P_ICMP6 && t >= 133 && t <= 137) ? CK_ARP : CK_ICMP;
		/* echo request/reply: one flow per identifier */
		if (n >= 8 &&
		    ((proto == P_ICMP && (t == 0 || t == 8)) || (proto == P_ICMP6 && (t == 128 || t == 129))))
			p->key.sport = get16(f + l4 + 4);
		ign(p, l4 + 2, 2);
	} else {
		p->kind = CK_OTHER;
	}
}

static void parse_ip4(const uint8_t *f, size_t l3, size_t len, struct colo_pkt *p)
{
	size_t ihl, tot;

	if (len - l3 < 20 || f[l3] >> 4 != 4 || (ihl = (size_t)(f[l3] & 15) * 4) < 20)
		return bad(p, len);
	tot = get16(f + l3 + 2);
	if (tot < ihl || tot > len - l3)
		return bad(p, len);
	p->key.family = 4;
	memcpy(p->key.src, f + l3 + 12, 4);
	memcpy(p->key.dst, f + l3 + 16, 4);
	ign(p, l3 + 4, 2); /* id */
	ign(p, l3 + 8, 1); /* TTL */
	ign(p, l3 + 10, 2); /* header checksum */
	if (get16(f + l3 + 6) & 0x3fff) { /* a fragment: compared as bytes on its own flow */
		p->key.proto = f[l3 + 9];
		p->key.frag = 1;
		p->kind = CK_OTHER;
		p->cmp_end = (uint32_t)(l3 + tot);
		return;
	}
	parse_l4(f, l3 + ihl, l3 + tot, len, f[l3 + 9], p);
}

static void parse_ip6(const uint8_t *f, size_t l3, size_t len, struct colo_pkt *p)
{
	size_t end, off;
	uint8_t nh;
	int i;

	if (len - l3 < 40 || f[l3] >> 4 != 6)
		return bad(p, len);
	end = l3 + 40 + get16(f + l3 + 4);
	if (end > len || (end == l3 + 40 && f[l3 + 6] == 0))
		return bad(p, len); /* over the frame, or a jumbogram (hop-by-hop with payload length 0) */
	p->key.family = 6;
	memcpy(p->key.src, f + l3 + 8, 16);
	memcpy(p->key.dst, f + l3 + 24, 16);
	ign(p, l3 + 1, 3); /* flow label (and the traffic class's low nibble) */
	ign(p, l3 + 7, 1); /* hop limit */
	nh = f[l3 + 6];
	off = l3 + 40;
	for (i = 0; i < 8; i++) {
		size_t hl;

		if (nh != 0 && nh != 43 && nh != 60 && nh != 44 && nh != 51 && nh != 135)
			break;
		if (end - off < 8)
			return bad(p, len);
		if (nh == 44) {
			hl = 8;
			if (get16(f + off + 2) &
			    0xfff9) { /* offset or more-fragments: bytes on its own flow */
				p->key.proto = 44;
				p->key.frag = 1;
				p->kind = CK_OTHER;
				p->cmp_end = (uint32_t)end;
				return;
			}
		} else if (nh == 51) {
			hl = ((size_t)f[off + 1] + 2) * 4;
		} else {
			hl = ((size_t)f[off + 1] + 1) * 8;
		}
		if (hl > end - off)
			return bad(p, len);
		nh = f[off];
		off += hl;
	}
	if (i == 8)
		return bad(p, len);
	parse_l4(f, off, end, len, nh, p);
}

static void parse_arp(const uint8_t *f, size_t l3, size_t len, struct colo_pkt *p)
{
	size_t hl, pl, n;

	if (len - l3 < 8)
		return bad(p, len);
	hl = f[l3 + 4];
	pl = f[l3 + 5];
	n = 8 + 2 * (hl + pl);
	if (n > len - l3 || pl > 16)
		return bad(p, len);
	p->kind = CK_ARP;
	memcpy(p->key.src, f + l3 + 8 + hl, pl); /* sender protocol address */
	memcpy(p->key.dst, f + l3 + 8 + 2 * hl + pl, pl); /* target protocol address */
	p->cmp_end = (uint32_t)(l3 + n);
}

void colo_parse(const uint8_t *f, size_t len, int netidx, struct colo_pkt *p)
{
	size_t off = 12;
	uint16_t et;

	memset(p, 0, sizeof(*p));
	p->key.netidx = netidx;
	p->kind = CK_OTHER;
	p->cmp_end = (uint32_t)len;
	if (len < ETH_HLEN)
		return bad(p, len);
	et = get16(f + off);
	while ((et == ET_8021Q || et == ET_8021AD || et == ET_QINQ_OLD) && p->key.nvlan < 2) {
		if (len - off < 6)
			return bad(p, len);
		p->key.vlan[p->key.nvlan++] = get16(f + off + 2) & 0xfff;
		off += 4;
		et = get16(f + off);
	}
	p->key.ethertype = et;
	off += 2;
	if (et == ET_IP4)
		parse_ip4(f, off, len, p);
	else if (et == ET_IP6)
		parse_ip6(f, off, len, p);
	else if (et == ET_ARP)
		parse_arp(f, off, len, p);
}

bool colo_ent_equal(const struct colo_ent *a, const struct colo_ent *b)
{
	size_t pos = 0;
	int i;

	if (a->cmp_end != b->cmp_end || a->nign != b->nign)
		return false;
	for (i = 0; i < a->nign; i++) {
		if (a->ign_off[i] != b->ign_off[i] || a->ign_len[i] != b->ign_len[i])
			return false;
		if (memcmp(a->data + pos, b->data + pos, a->ign_off[i] - pos))
			return false;
		pos = (size_t)a->ign_off[i] + a->ign_len[i];
	}
	return !memcmp(a->data + pos, b->data + pos, a->cmp_end - pos);
}

/* RFC 1624 incremental update of a ones'-complement checksum field for a 32-bit word change. */
uint16_t colo_csum_fold_add(uint16_t csum, uint32_t oldv, uint32_t newv)
{
	uint32_t s = (uint16_t)~csum;

	s += (uint16_t) ~(oldv >> 16);
	s += (uint16_t) ~(oldv & 0xffff);
	s += newv >> 16;
	s += newv & 0xffff;
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}
