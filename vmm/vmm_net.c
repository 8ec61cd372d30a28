/* vmm_net.c — a VM's network devices: attach, the output hook for netbuf, and announcements. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/errf.h"
#include "hv/dev/state.h"
#include "hv/dev/virtio_net.h"
#include "vmm/netopt.h"
#include "vmm/vmm_priv.h"

#define ETH_P_IP4 0x0800
#define ETH_P_ARP4 0x0806
#define ETH_P_RARP4 0x8035
#define ETH_P_IP6 0x86dd

/* Learn the guest's addresses from what it sends (the source of its ARP and IP packets). */
static void learn(struct vmm_net *n, const uint8_t *f, size_t len)
{
	uint16_t type;

	if (len < 14 || memcmp(f + 6, n->mac, 6))
		return;
	type = (uint16_t)(f[12] << 8 | f[13]);
	if (type == ETH_P_ARP4 && len >= 42 && f[20] == 0 && (f[21] == 1 || f[21] == 2)) {
		uint32_t ip;
		memcpy(&ip, f + 28, 4);
		if (ip)
			__atomic_store_n(&n->ip4, ip, __ATOMIC_RELAXED);
	} else if (type == ETH_P_IP4 && len >= 34 && (f[14] >> 4) == 4) {
		uint32_t ip;
		memcpy(&ip, f + 26, 4);
		if (ip)
			__atomic_store_n(&n->ip4, ip, __ATOMIC_RELAXED);
	} else if (type == ETH_P_IP6 && len >= 54 && (f[14] >> 4) == 6 && !n->have_ip6) {
		static const uint8_t unspec[16];
		if (memcmp(f + 22, unspec, 16) && !(f[22] == 0xfe && (f[23] & 0xc0) == 0x80)) {
			memcpy(n->ip6, f + 22, 16);
			n->have_ip6 = true;
		}
	}
}

static int tx(void *opaque, const void *frame, size_t len)
{
	struct vmm_net *n = opaque;

	learn(n, frame, len);
	if (vmm_tx_slot_call(&n->v->tx, n->idx, frame, len))
		return 0;
	return virtio_net_tap_output(n->dev, frame, len);
}

void vmm_set_tx_hook(struct vmm *v, vmm_tx_hook fn, void *opaque)
{
	vmm_tx_slot_set(&v->tx, fn, opaque);
}

int vmm_net_output(struct vmm *v, int netidx, const void *frame, size_t len)
{
	if (netidx < 0 || netidx >= v->nr_net)
		return -EINVAL;
	return virtio_net_tap_output(v->net[netidx].dev, frame, len);
}

static void rx_hook(void *opaque, const void *frame, size_t len)
{
	struct vmm_net *n = opaque;

	if (n->v->rx_hook)
		n->v->rx_hook(n->v->rx_hook_opaque, n->idx, frame, len);
}

void vmm_set_rx_hook(struct vmm *v, vmm_rx_hook fn, void *opaque)
{
	v->rx_hook = fn;
	v->rx_hook_opaque = opaque;
	for (int i = 0; i < v->nr_net; i++)
		virtio_net_set_rx_hook(v->net[i].dev, fn ? rx_hook : NULL, &v->net[i]);
}

int vmm_net_inject(struct vmm *v, int netidx, const void *frame, size_t len)
{
	if (netidx < 0 || netidx >= v->nr_net)
		return -EINVAL;
	return virtio_net_inject(v->net[netidx].dev, frame, len);
}

void vmm_net_rx_tap(struct vmm *v, bool on)
{
	vmm_net_rx_enable_all(v, on);
}

int vmm_net_count(const struct vmm *v)
{
	return v->nr_net;
}

/* "netN-host": what the host learned, so a standby or migration target can announce the guest.
 * Record (version 1, 32 bytes): u32 version, u8 ip4[4] (network order), u8 ip6[16], u32 have_ip6,
 * u32 0. A device of its own (hv_dev_ops with state only) so it travels with the VM's devices. */
#define HOSTINFO_VERSION 1
#define HOSTINFO_LEN 32

static size_t hostinfo_size(void *opaque)
{
	(void)opaque;
	return HOSTINFO_LEN;
}

static int hostinfo_save(void *opaque, void *buf, size_t len)
{
	struct vmm_net *n = opaque;
	uint32_t ip4 = __atomic_load_n(&n->ip4, __ATOMIC_RELAXED);
	struct st_enc e;

	st_enc_init(&e, buf, len);
	st_put32(&e, HOSTINFO_VERSION);
	st_put_bytes(&e, &ip4, 4);
	st_put_bytes(&e, n->ip6, 16);
	st_put32(&e, n->have_ip6);
	st_put32(&e, 0);
	return st_enc_done(&e);
}

static int hostinfo_restore(void *opaque, const void *buf, size_t len)
{
	struct vmm_net *n = opaque;
	uint32_t version, ip4, have_ip6;
	uint8_t ip6[16];
	struct st_dec d;

	st_dec_init(&d, buf, len);
	version = st_get32(&d);
	st_get_bytes(&d, &ip4, 4);
	st_get_bytes(&d, ip6, 16);
	have_ip6 = st_get32(&d);
	(void)st_get32(&d);
	if (st_dec_done(&d, true) || version != HOSTINFO_VERSION || have_ip6 > 1)
		return -EINVAL;
	n->ip4 = ip4;
	memcpy(n->ip6, ip6, 16);
	n->have_ip6 = have_ip6;
	return 0;
}

static const struct hv_dev_ops hostinfo_ops = {
	.kind = "net-host",
	.state_size = hostinfo_size,
	.save = hostinfo_save,
	.restore = hostinfo_restore,
};

static int attach_one(struct vmm *v, int i, char *err, size_t errlen)
{
	struct vmm_net *n = &v->net[i];
	struct net_opts no;
	struct virtio_net_cfg c;
	char name[HV_DEV_NAME_MAX];
	int rc;

	rc = net_opts_parse(v->o.net[i], &no, err, errlen);
	if (rc)
		return rc;
	c = (struct virtio_net_cfg){.ifname = no.ifname, .bridge = no.bridge};
	memcpy(c.mac, no.mac, 6);
	snprintf(name, sizeof(name), "net%d", i);
	rc = virtio_net_attach(v->vm, name, &c, v->loop, &n->dev, err, errlen);
	if (rc)
		return rc;
	v->nr_net = i + 1;
	n->v = v;
	n->idx = i;
	virtio_net_get_mac(n->dev, n->mac);
	virtio_net_set_tx(n->dev, tx, n);
	virtio_net_rx_enable(n->dev, !v->held);
	snprintf(name, sizeof(name), "net%d-host", i);
	return vm_dev_attach(v->vm, name, &hostinfo_ops, n, err, errlen);
}

int vmm_net_attach_all(struct vmm *v, char *cmdline, size_t cmdlen, char *err, size_t errlen)
{
	const char *frags;

	for (int i = 0; i < v->o.nr_net; i++) {
		int rc = attach_one(v, i, err, errlen);
		if (rc)
			return rc;
	}
	frags = vm_dev_cmdline(v->vm);
	if (!*frags)
		return 0;
	if (strlen(cmdline) + 1 + strlen(frags) + 1 > cmdlen)
		return errf(err, errlen, -E2BIG, "guest command line too long with the network devices");
	if (*cmdline)
		strcat(cmdline, " ");
	strcat(cmdline, frags);
	return 0;
}

void vmm_net_rx_enable_all(struct vmm *v, bool on)
{
	for (int i = 0; i < v->nr_net; i++)
		virtio_net_rx_enable(v->net[i].dev, on);
}

/* ---- announcements ---------------------------------------------------------------------------- */

static size_t eth_hdr(uint8_t *f, const uint8_t *dst, const uint8_t *src, uint16_t type)
{
	memcpy(f, dst, 6);
	memcpy(f + 6, src, 6);
	f[12] = (uint8_t)(type >> 8);
	f[13] = (uint8_t)type;
	return 14;
}

/* ARP (or RARP) request/announce: sender = target = ip. */
static size_t arp_frame(uint8_t *f, const uint8_t *mac, uint32_t ip, uint16_t type, uint16_t op)
{
	static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	size_t o = eth_hdr(f, bcast, mac, type);
	uint8_t *a = f + o;

	a[0] = 0, a[1] = 1; /* Ethernet */
	a[2] = 0x08, a[3] = 0x00; /* IPv4 */
	a[4] = 6, a[5] = 4;
	a[6] = (uint8_t)(op >> 8), a[7] = (uint8_t)op;
	memcpy(a + 8, mac, 6);
	memcpy(a + 14, &ip, 4);
	memcpy(a + 18, type == ETH_P_RARP4 ? mac : (const uint8_t[6]){0}, 6);
	memcpy(a + 24, &ip, 4);
	memset(f + o + 28, 0, 60 - (o + 28)); /* pad to the Ethernet minimum */
	return 60;
}

static uint16_t csum_fold(uint32_t s)
{
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

/* Unsolicited neighbour advertisement for ip6 to all-nodes (RFC 4861 7.2.6). */
static size_t na_frame(uint8_t *f, const uint8_t *mac, const uint8_t *ip6)
{
	static const uint8_t allnodes_mac[6] = {0x33, 0x33, 0, 0, 0, 1};
	static const uint8_t allnodes[16] = {0xff, 2, [15] = 1};
	size_t o = eth_hdr(f, allnodes_mac, mac, ETH_P_IP6);
	uint8_t *ip = f + o, *icmp = ip + 40;
	uint32_t sum = 0;
	const uint16_t plen = 32;

	memset(ip, 0, 40 + plen);
	ip[0] = 0x60;
	ip[4] = 0, ip[5] = plen;
	ip[6] = 58; /* ICMPv6 */
	ip[7] = 255; /* hop limit */
	memcpy(ip + 8, ip6, 16);
	memcpy(ip + 24, allnodes, 16);
	icmp[0] = 136; /* neighbour advertisement */
	icmp[4] = 0x20; /* override */
	memcpy(icmp + 8, ip6, 16);
	icmp[24] = 2; /* target link-layer address option */
	icmp[25] = 1;
	memcpy(icmp + 26, mac, 6);
	for (int i = 8; i < 40; i += 2) /* pseudo-header: addresses */
		sum += (uint32_t)(ip[i] << 8 | ip[i + 1]);
	sum += plen + 58;
	for (int i = 0; i < plen; i += 2)
		sum += (uint32_t)(icmp[i] << 8 | icmp[i + 1]);
	uint16_t c = csum_fold(sum);
	icmp[2] = (uint8_t)(c >> 8), icmp[3] = (uint8_t)c;
	return o + 40 + plen;
}

int vmm_net_announce(struct vmm *v)
{
	uint8_t f[128];
	int sent = 0;

	for (int i = 0; i < v->nr_net; i++) {
		struct vmm_net *n = &v->net[i];
		uint32_t ip4 = __atomic_load_n(&n->ip4, __ATOMIC_RELAXED);
		if (ip4 && virtio_net_tap_output(n->dev, f, arp_frame(f, n->mac, ip4, ETH_P_ARP4, 1)) == 0)
			sent++;
		if (n->have_ip6 && virtio_net_tap_output(n->dev, f, na_frame(f, n->mac, n->ip6)) == 0)
			sent++;
		if (virtio_net_tap_output(n->dev, f, arp_frame(f, n->mac, 0, ETH_P_RARP4, 3)) == 0)
			sent++;
	}
	return sent;
}
