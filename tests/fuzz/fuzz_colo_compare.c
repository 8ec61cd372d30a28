/* fuzz_colo_compare.c — libFuzzer target: the real COLO comparator driven by a decoded sequence of PVM/SVM frames, ticks, checkpoints and inbound rewrites. */
/*
 * The input is a list of operations; each starts with one byte (op & 7 below), then its operands:
 *   0 PVM raw frame / 1 SVM raw frame: netidx byte, 16-bit length, that many bytes
 *   2 tick: advance the clock by the next byte in ms, then colo_cmp_tick
 *   3 checkpoint_done
 *   4 rewrite_inbound of a raw frame (netidx, 16-bit length, bytes) — or, with op bit 3, of a
 *     crafted TCP segment from the peer (same operands as 6)
 *   5 passthrough (only with op bits 3..7 all set, so it is rare), else get_stats + checks
 *   6 crafted frame (checksummed, headers consistent, so that matching is reached): side, flow
 *     (family, VLANs, ports), flags, 32-bit sequence, payload length and pattern
 *   7 the same crafted frame sent to both sides
 *
 * Invariants checked (a violation aborts with a message):
 *   - nothing the PVM sent is ever dropped: accepted = released + held, and every released frame
 *     is one the PVM sent and had not been released yet (a multiset of outstanding frames);
 *   - after checkpoint_done and passthrough nothing is held and nothing of the SVM queued;
 *   - diverged() fires at most once per episode, with a valid reason;
 *   - compared == matched + mismatched, per protocol too; the per-protocol sums equal the totals;
 *   - rewrite_inbound changes at most the ack, SACK and checksum bytes of a TCP frame.
 *
 * FUZZ_COLO_VERBOSE=1 prints the comparator's stats at the end of each input (replaying one).
 * Seeds: FUZZ_COLO_SEEDS=DIR build-fuzz/fuzz/fuzz_colo_compare -runs=0 writes a few seed
 * inputs (a TCP exchange with different ISNs and segmentation, UDP/ICMP/ARP over VLANs, IPv6)
 * into DIR; tests/fuzz/corpus/fuzz_colo_compare/ was made that way.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "netbuf/colo_compare.h"
#include "tests/unit/colo_frames.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_OUT 1024

static struct {
	uint64_t out_hash[MAX_OUT];
	uint32_t out_len[MAX_OUT];
	int nout; /* outstanding PVM frames: sent, not released */
	uint64_t accepted, released;
	int ndiv;
	bool overflow; /* more than MAX_OUT outstanding: stop tracking identities */
} fz;

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "fuzz_colo_compare: invariant: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	abort();
}

static void on_release(void *opaque, int netidx, const void *frame, size_t len)
{
	uint64_t h = XXH3_64bits(frame, len);
	int i;

	(void)opaque;
	(void)netidx;
	fz.released++;
	if (fz.overflow)
		return;
	for (i = 0; i < fz.nout; i++)
		if (fz.out_hash[i] == h && fz.out_len[i] == len) {
			fz.out_hash[i] = fz.out_hash[fz.nout - 1];
			fz.out_len[i] = fz.out_len[fz.nout - 1];
			fz.nout--;
			return;
		}
	die("released a frame (len %zu) the PVM did not send or that was already released", len);
}

static void on_diverged(void *opaque, enum colo_cmp_reason why)
{
	(void)opaque;
	if (why != COLO_CMP_MISMATCH && why != COLO_CMP_TIMEOUT && why != COLO_CMP_QUEUE)
		die("diverged with reason %d", why);
	if (++fz.ndiv > 1)
		die("diverged twice in one episode");
}

static void check_stats(struct colo_cmp *c, bool flushed)
{
	struct colo_cmp_stats st;
	const struct colo_cmp_proto_stats *p[5];
	uint64_t cmp = 0, m = 0, mm = 0;
	int i;

	colo_cmp_get_stats(c, &st);
	p[0] = &st.tcp;
	p[1] = &st.udp;
	p[2] = &st.icmp;
	p[3] = &st.arp;
	p[4] = &st.other;
	if (st.compared != st.matched + st.mismatched)
		die("compared %lu != matched %lu + mismatched %lu", st.compared, st.matched, st.mismatched);
	for (i = 0; i < 5; i++) {
		if (p[i]->compared != p[i]->matched + p[i]->mismatched)
			die("protocol %d: compared != matched + mismatched", i);
		cmp += p[i]->compared;
		m += p[i]->matched;
		mm += p[i]->mismatched;
	}
	if (cmp != st.compared || m != st.matched || mm != st.mismatched)
		die("per-protocol sums differ from the totals");
	if (st.released != fz.released)
		die("stats released %lu, callback saw %lu", st.released, fz.released);
	if (fz.accepted != fz.released + st.held_frames)
		die("PVM frame lost: accepted %lu, released %lu, held %lu", fz.accepted, fz.released,
		    st.held_frames);
	if (!fz.overflow && (uint64_t)fz.nout != st.held_frames)
		die("outstanding %d != held %lu", fz.nout, st.held_frames);
	if (flushed && (st.held_frames || st.held_bytes || st.svm_frames || st.svm_bytes))
		die("something left after a checkpoint");
	if ((st.held_frames || st.svm_frames) != (st.divergence_since_ns != 0))
		die("divergence_since_ns %lu with %lu/%lu queued", st.divergence_since_ns, st.held_frames,
		    st.svm_frames);
}

static void send(struct colo_cmp *c, int side, int netidx, const uint8_t *f, size_t len, uint64_t now)
{
	int rc;

	if (side == 0) {
		if (!fz.overflow && len && len <= COLO_CMP_MAX_FRAME) {
			if (fz.nout == MAX_OUT)
				fz.overflow = true;
			else {
				fz.out_hash[fz.nout] = XXH3_64bits(f, len);
				fz.out_len[fz.nout++] = (uint32_t)len;
			}
		}
		rc = colo_cmp_primary(c, netidx, f, len, now);
	} else {
		rc = colo_cmp_secondary(c, netidx, f, len, now);
	}
	if (rc != 0 && rc != -EINVAL && rc != -ENOMEM)
		die("frame returned %d", rc);
	if ((rc == -EINVAL) != (!len || len > COLO_CMP_MAX_FRAME))
		die("-EINVAL for a frame of %zu bytes (rc %d)", len, rc);
	if (side == 0 && rc == 0)
		fz.accepted++;
	if (side == 0 && rc != 0 && !fz.overflow && len && len <= COLO_CMP_MAX_FRAME)
		fz.nout--; /* not taken */
}

/* a crafted frame from 11 operand bytes */
static size_t craft(const uint8_t *o, uint8_t *f, bool reverse)
{
	static uint8_t pay[1500];
	struct fdef d;
	uint8_t kind = o[1] & 3, flags = o[2], plen = o[7];
	uint32_t seq = (uint32_t)o[3] << 24 | (uint32_t)o[4] << 16 | (uint32_t)o[5] << 8 | o[6];

	memset(&d, 0, sizeof(d));
	d.family = o[1] & 4 ? 6 : 4;
	d.src[0] = d.dst[0] = 10;
	d.src[15] = d.src[3] = 2;
	d.dst[15] = d.dst[3] = 1;
	d.nvlan = (o[1] >> 3) % 3;
	d.vlan[0] = 10;
	d.vlan[1] = 20;
	d.ext6 = o[1] & 0x20;
	d.ttl = o[9];
	d.sport = 80;
	d.dport = (uint16_t)(40000 + (o[1] >> 6));
	if (reverse)
		d = fb_rev(&d);
	memset(pay, o[8], plen);
	if (o[10] & 1 && plen)
		pay[plen / 2] ^= o[10];
	switch (kind) {
	case 0:
	case 1:
		if (flags & 0x02) { /* SYN: with an MSS option and a timestamp */
			uint8_t opt[16] = {2, 4, 5, 0xb4, 1, 1, 8, 10, o[8], o[9], 0, 0, 0, 0, 0, 0};

			return fb_tcp_opts(f, &d, seq, 0x50000001u, flags, pay, plen, opt, 16);
		}
		return fb_tcp(f, &d, seq, 0x50000001u, flags, pay, plen);
	case 2:
		return fb_udp(f, &d, pay, plen);
	default:
		return flags & 1 ? fb_icmp(f, &d, d.family == 6 ? 129 : 0, 1, pay, plen) : fb_arp(f, &d, 2);
	}
}

/* rewrite_inbound changed at most the ack, the SACK blocks and the checksum: at most 4 + 32 + 2
 * bytes of a raw frame; of a crafted segment (no SACK), only those of its ack and checksum, and
 * its checksum is still right. */
static void check_inbound(const uint8_t *before, const uint8_t *after, size_t len, const uint8_t *o)
{
	size_t i, ndiff = 0, l4;
	struct fdef d;

	for (i = 0; i < len; i++)
		ndiff += before[i] != after[i];
	if (ndiff > 38)
		die("rewrite_inbound changed %zu bytes", ndiff);
	if (!o || (o[1] & 3) > 1)
		return;
	memset(&d, 0, sizeof(d));
	d.family = o[1] & 4 ? 6 : 4;
	d.nvlan = (o[1] >> 3) % 3;
	d.ext6 = o[1] & 0x20;
	l4 = fb_l4off(&d);
	for (i = 0; i < len; i++)
		if (before[i] != after[i] && !(i >= l4 + 8 && i < l4 + 12) && !(i >= l4 + 16 && i < l4 + 18))
			die("rewrite_inbound changed byte %zu of a crafted segment (L4 at %zu)", i, l4);
	d.src[0] = d.dst[0] = 10;
	d.src[15] = d.src[3] = 2;
	d.dst[15] = d.dst[3] = 1;
	{
		struct fdef r = fb_rev(&d);

		if (fb_l4_csum_ok(before, len, &r, 6) && !fb_l4_csum_ok(after, len, &r, 6))
			die("rewrite_inbound broke the TCP checksum");
	}
}

static void run(const uint8_t *data, size_t size)
{
	static uint8_t frame[COLO_CMP_MAX_FRAME + 2], copy[COLO_CMP_MAX_FRAME + 2];
	struct colo_cmp_cfg cfg = {
		.timeout_ms = 50,
		.max_frames = 64,
		.max_bytes = 32768,
		.idle_ms = 300, /* small bounds, so that expiry and eviction run */
		.max_flows = 16,
		.release = on_release,
		.diverged = on_diverged,
	};
	struct colo_cmp *c;
	uint64_t now = 1000000000ull;
	size_t i = 0;

	memset(&fz, 0, sizeof(fz));
	if (colo_cmp_new(&c, &cfg))
		die("colo_cmp_new failed");
	while (i < size) {
		uint8_t op = data[i++];

		switch (op & 7) {
		case 0:
		case 1:
		case 4: {
			size_t len;
			int netidx;

			if ((op & 7) == 4 && (op & 8)) {
				if (size - i < 11)
					goto out;
				len = craft(data + i, frame, true);
				i += 11;
				netidx = 0;
			} else {
				if (size - i < 3)
					goto out;
				netidx = data[i] & 3;
				len = (size_t)data[i + 1] << 8 | data[i + 2];
				i += 3;
				if (len > size - i)
					len = size - i;
				memcpy(frame, data + i, len);
				i += len;
			}
			if ((op & 7) == 4) {
				int rc;

				memcpy(copy, frame, len);
				rc = colo_cmp_rewrite_inbound(c, netidx, frame, len);
				if (rc != (len ? 0 : -EINVAL))
					die("rewrite_inbound returned %d for %zu bytes", rc, len);
				check_inbound(copy, frame, len, (op & 8) ? data + i - 11 : NULL);
			} else {
				send(c, op & 1, netidx, frame, len, now);
			}
			break;
		}
		case 2:
			if (i < size)
				now += (uint64_t)data[i++] * 1000000ull;
			colo_cmp_tick(c, now);
			break;
		case 3:
			colo_cmp_checkpoint_done(c);
			fz.ndiv = 0;
			check_stats(c, true);
			break;
		case 5:
			if ((op & 0xf8) == 0xf8) {
				colo_cmp_passthrough(c);
				check_stats(c, true);
			} else {
				check_stats(c, false);
			}
			break;
		default: {
			size_t len;

			if (size - i < 11)
				goto out;
			len = craft(data + i, frame, false);
			if ((op & 7) == 7) {
				send(c, 0, 0, frame, len, now);
				send(c, 1, 0, frame, len, now);
			} else {
				send(c, data[i] & 1, 0, frame, len, now);
			}
			i += 11;
			break;
		}
		}
	}
out:
	if (getenv("FUZZ_COLO_VERBOSE")) {
		struct colo_cmp_stats st;

		colo_cmp_get_stats(c, &st);
		fprintf(stderr,
			"compared %lu matched %lu mismatched %lu (tcp %lu/%lu) released %lu held %lu svm %lu "
			"flows %lu malformed %lu divergences %lu\n",
			st.compared, st.matched, st.mismatched, st.tcp.compared, st.tcp.matched, st.released,
			st.held_frames, st.svm_frames, st.flows, st.malformed, st.divergences);
	}
	check_stats(c, false);
	colo_cmp_checkpoint_done(c);
	check_stats(c, true);
	colo_cmp_free(c);
}

/* A few seeds: op streams built from the same crafted-frame operands. */
static void write_seeds(const char *dir)
{
	static const uint8_t tcp_exchange[] = {
		/* SYN/ACK on both sides, different ISNs (side byte 0 = PVM, 1 = SVM) */
		6,
		0,
		0x00,
		0x12,
		0x10,
		0,
		0,
		0,
		0,
		0,
		64,
		0,
		6,
		1,
		0x00,
		0x12,
		0xff,
		0xff,
		0xff,
		0x00,
		0,
		0,
		64,
		0,
		/* data: PVM 40 + 20, SVM 60 */
		6,
		0,
		0x00,
		0x18,
		0x10,
		0,
		0,
		1,
		40,
		'a',
		64,
		0,
		6,
		0,
		0x00,
		0x18,
		0x10,
		0,
		0,
		41,
		20,
		'a',
		64,
		0,
		6,
		1,
		0x00,
		0x18,
		0xff,
		0xff,
		0xff,
		1,
		60,
		'a',
		9,
		0,
		/* inbound ack from the peer, a tick, a checkpoint */
		12,
		0,
		0x00,
		0x10,
		0x10,
		0,
		0,
		61,
		0,
		0,
		64,
		0,
		2,
		10,
		5,
		3,
	};
	static const uint8_t mixed[] = {
		7, 0,  0x0a, 0, 0,    0, 0, 0, 12, 'u', 64, 0, /* UDP, 802.1Q */
		7, 0,  0x12, 0, 0,    0, 0, 0, 12, 'u', 64, 0, /* UDP, QinQ */
		7, 0,  0x27, 1, 0,    0, 0, 0, 8,  'i', 64, 0, /* ICMPv6 echo reply, ext headers */
		7, 0,  0x03, 0, 0,    0, 0, 0, 0,  0,	64, 0, /* ARP */
		6, 0,  0x02, 0, 0,    0, 0, 0, 5,  'x', 64, 0,
		6, 1,  0x02, 0, 0,    0, 0, 0, 5,  'y', 64, 0, /* UDP mismatch */
		2, 60, 5,    3, 0xfd,
	};
	static const uint8_t raw[] = {
		0, 0, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x08, 0x00, 0x45, 0, 0, 99,	 0, 0,
		1, 0, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x08, 0x00, 0x45, 0, 0, 99,	 0, 0,
		4, 0, 0, 16, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x81, 0x00, 0,    5, 2, 200, 3,
	};
	const struct {
		const char *name;
		const uint8_t *b;
		size_t n;
	} seeds[] = {
		{"tcp_exchange", tcp_exchange, sizeof(tcp_exchange)},
		{"mixed", mixed, sizeof(mixed)},
		{"raw", raw, sizeof(raw)},
	};
	char path[4096];

	for (size_t k = 0; k < sizeof(seeds) / sizeof(seeds[0]); k++) {
		FILE *fp;

		snprintf(path, sizeof(path), "%s/%s", dir, seeds[k].name);
		fp = fopen(path, "wb");
		if (!fp || fwrite(seeds[k].b, 1, seeds[k].n, fp) != seeds[k].n)
			die("cannot write %s", path);
		fclose(fp);
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = getenv("FUZZ_COLO_SEEDS");

	(void)argc;
	(void)argv;
	if (dir)
		write_seeds(dir);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	run(data, size);
	return 0;
}
