/* work_disk.c — work=disk: checksummed, sequence-numbered records in a ring on the disk, re-verified against guest memory. */
#include "blk.h"

/*
 * Record (REC bytes = 8 sectors) n lives at slot n % nslots of the ring [0, dws) on the disk:
 *   u64 magic DISK_MAGIC, u64 run (this boot's random id), u64 seq (= n), u64 check, then 508 u64
 *   payload words pay(run, seq, i); check = hash of all 512 words with check taken as 0.
 * The guest's memory holds `seq`: records 0..seq-1 are durable (written, and flushed with dflush=1).
 * A verify pass reads the whole ring, a chunk per step; slot s must hold the newest record n < seq with
 * n % nslots == s (missing, torn or stale otherwise), and never one of this run with n >= seq (from the
 * future). Slots whose last write failed are `unknown` until rewritten. Layout in docs/disk.md.
 */
#define REC 4096u
#define REC_WORDS (REC / 8)
#define REC_SECT (REC / BLK_SECTOR)
#define BATCH 16 /* records written per step, all in flight together */
#define VCHUNK 128 /* records verified per step */
#define VREQ 16 /* records per verify read request */
#define MAX_SLOTS (1u << 19) /* 2 GiB ring */
#define DISK_MAGIC 0x315244534b4c5044ull /* "DPLKSDR1" */

static uint64_t wbuf[BATCH][REC_WORDS] __attribute__((aligned(4096)));
static uint64_t rbuf[VCHUNK][REC_WORDS] __attribute__((aligned(4096)));
static uint8_t unknown[MAX_SLOTS / 8];

static struct {
	uint64_t run, seq, nslots, vcur, pass, bad, ioerr, written, last_ns, next_ns;
	bool flush;
	unsigned err_lines;
} dk;

static uint64_t mix(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static uint64_t rec_hash(const uint64_t *w)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (unsigned i = 0; i < REC_WORDS; i++)
		h = (h ^ (i == 3 ? 0 : w[i])) * 0x100000001b3ull;
	return h;
}

static void rec_fill(uint64_t *w, uint64_t seq)
{
	w[0] = DISK_MAGIC;
	w[1] = dk.run;
	w[2] = seq;
	w[3] = 0;
	for (unsigned i = 4; i < REC_WORDS; i++)
		w[i] = mix(dk.run ^ (seq * 0x9e3779b97f4a7c15ull) ^ i);
	w[3] = rec_hash(w);
}

static void set_unknown(uint64_t slot, bool on)
{
	if (on)
		unknown[slot / 8] |= (uint8_t)(1u << (slot % 8));
	else
		unknown[slot / 8] &= (uint8_t) ~(1u << (slot % 8));
}

static void io_error(const char *what, uint64_t seq_or_slot, uint8_t status)
{
	dk.ioerr++;
	if (dk.err_lines < 5) {
		dk.err_lines++;
		printf("disk: error: %s %lu status=%s\n", what, seq_or_slot,
		       status == BLK_S_IOERR	? "IOERR"
		       : status == BLK_S_UNSUPP ? "UNSUPP"
						: "?");
	}
}

int disk_init(void)
{
	const char *v;
	uint64_t dws = 16ull << 20, n;

	if ((v = cmdline_get("dws")) && (parse_size(v, &dws) || dws % REC || dws < BATCH * REC)) {
		printf("disk: error: bad dws=%s (a multiple of 4K, at least 64K)\n", v);
		return GUEST_EXIT_USAGE;
	}
	if ((v = cmdline_get("dflush")) && (parse_u64(v, &n) || n > 1)) {
		printf("disk: error: bad dflush=%s (0 or 1)\n", v);
		return GUEST_EXIT_USAGE;
	}
	dk.flush = v && n == 1;
	if (blk_init())
		return GUEST_EXIT_USAGE;
	if (dws / REC > MAX_SLOTS || dws / BLK_SECTOR > blk_sectors()) {
		printf("disk: error: dws=%lu does not fit the disk (%lu bytes, ring at most 2G)\n", dws,
		       blk_sectors() * BLK_SECTOR);
		return GUEST_EXIT_USAGE;
	}
	if (blk_readonly()) {
		printf("disk: error: the disk is read-only\n");
		return GUEST_EXIT_USAGE;
	}
	if (dk.flush && !blk_has_flush()) {
		printf("disk: error: dflush=1 but the device offers no FLUSH\n");
		return GUEST_EXIT_USAGE;
	}
	dk.nslots = dws / REC;
	dk.run = mix(rdtsc() ^ 0x5eed) | 1;
	dk.last_ns = now_ns();
	dk.next_ns = dk.last_ns + guest_pi_ns;
	printf("disk: ring=%luK slots=%lu run=%lx flush=%d\n", dws >> 10, dk.nslots, dk.run, dk.flush);
	return 0;
}

/* Write records seq.. seq+BATCH-1; advance seq over the leading ones that succeeded (and were flushed). */
static void write_batch(void)
{
	struct blk_op ops[BATCH + 1];
	unsigned ok = 0;

	for (unsigned i = 0; i < BATCH; i++) {
		uint64_t s = dk.seq + i;

		rec_fill(wbuf[i], s);
		ops[i] = (struct blk_op){
			.type = BLK_T_OUT, .sector = (s % dk.nslots) * REC_SECT, .buf = wbuf[i], .len = REC};
	}
	blk_run(ops, BATCH);
	while (ok < BATCH && ops[ok].status == BLK_S_OK)
		ok++;
	for (unsigned i = 0; i < BATCH; i++)
		set_unknown((dk.seq + i) % dk.nslots, i >= ok); /* a failed write may have torn its slot */
	if (ok < BATCH)
		io_error("write seq", dk.seq + ok, ops[ok].status);
	if (dk.flush && ok) {
		ops[0] = (struct blk_op){.type = BLK_T_FLUSH};
		blk_run(ops, 1);
		if (ops[0].status != BLK_S_OK) {
			io_error("flush after seq", dk.seq + ok, ops[0].status);
			for (unsigned i = 0; i < ok; i++)
				set_unknown((dk.seq + i) % dk.nslots, true);
			ok = 0;
		}
	}
	dk.seq += ok;
	dk.written += ok;
}

/* Check one record read from `slot` against what memory says was written there. */
static void check(const uint64_t *w, uint64_t slot)
{
	bool valid = w[0] == DISK_MAGIC && w[3] == rec_hash(w);
	bool ours = valid && w[1] == dk.run;
	bool expected = slot < dk.seq;
	uint64_t last;

	if (unknown[slot / 8] & (1u << (slot % 8)))
		return;
	if (!expected) {
		if (ours && w[2] % dk.nslots == slot && w[2] >= dk.seq)
			dk.bad++; /* from the future */
		return;
	}
	last = slot + (dk.seq - 1 - slot) / dk.nslots * dk.nslots;
	if (!ours || w[2] != last)
		dk.bad++; /* missing, torn, stale, or from the future */
}

static void verify_chunk(void)
{
	struct blk_op ops[VCHUNK / VREQ];
	unsigned nreq = 0;
	uint64_t first = dk.vcur, n = dk.nslots - dk.vcur;

	if (n > VCHUNK)
		n = VCHUNK;
	for (uint64_t i = 0; i < n; i += VREQ) {
		uint64_t k = n - i < VREQ ? n - i : VREQ;

		ops[nreq++] = (struct blk_op){.type = BLK_T_IN,
					      .sector = (first + i) * REC_SECT,
					      .buf = rbuf[i],
					      .len = (uint32_t)(k * REC)};
	}
	blk_run(ops, nreq);
	for (unsigned r = 0; r < nreq; r++) {
		uint64_t i0 = (uint64_t)r * VREQ, k = n - i0 < VREQ ? n - i0 : VREQ;

		if (ops[r].status != BLK_S_OK) {
			io_error("read slot", first + i0, ops[r].status);
			continue;
		}
		for (uint64_t i = i0; i < i0 + k; i++)
			check(rbuf[i], first + i);
	}
	dk.vcur += n;
	if (dk.vcur == dk.nslots) {
		dk.vcur = 0;
		dk.pass++;
	}
}

void disk_step(void)
{
	write_batch();
	verify_chunk();
}

void disk_print(uint64_t now)
{
	uint64_t dt_us = (now - dk.last_ns) / 1000;

	if (!dt_us)
		dt_us = 1;
	printf("disk: seq=%lu rate=%lu bad=%lu ioerr=%lu\n", dk.seq, dk.written * 1000000ul / dt_us, dk.bad,
	       dk.ioerr);
	dk.written = 0;
	dk.last_ns = now;
	dk.next_ns += guest_pi_ns;
	if (dk.next_ns <= now)
		dk.next_ns = now + guest_pi_ns;
}

uint64_t disk_next_print(void)
{
	return dk.next_ns;
}

void disk_final(void)
{
	printf("disk: final seq=%lu run=%lx slots=%lu bad=%lu ioerr=%lu\n", dk.seq, dk.run, dk.nslots, dk.bad,
	       dk.ioerr);
}

/* dbench=write|read: throughput and latency only (no oracle). Batches of dqd requests of dbs bytes
 * over the ring, sequentially; prints `disk: bench=<write|read> bs=<b> qd=<n> iops=<n> mbps=<n>
 * lat_us=<mean batch time>` every pi ms. */
static int bench(const char *what)
{
	const char *v;
	uint64_t bs = 4096, qd = BATCH, off = 0, ops = 0, batches = 0, busy_ns = 0, last, next;
	bool wr = !strcmp(what, "write");
	struct blk_op o[BATCH];

	if (!wr && strcmp(what, "read")) {
		printf("disk: error: bad dbench=%s (write or read)\n", what);
		return GUEST_EXIT_USAGE;
	}
	if ((v = cmdline_get("dbs")) && (parse_size(v, &bs) || bs % BLK_SECTOR || !bs || bs > 64 * 1024)) {
		printf("disk: error: bad dbs=%s (512 .. 64K, a multiple of 512)\n", v);
		return GUEST_EXIT_USAGE;
	}
	if ((v = cmdline_get("dqd")) && (parse_u64(v, &qd) || !qd || qd > BATCH)) {
		printf("disk: error: bad dqd=%s (1..%u)\n", v, BATCH);
		return GUEST_EXIT_USAGE;
	}
	for (unsigned i = 0; i < BATCH; i++)
		rec_fill(wbuf[i], i);
	last = now_ns();
	next = last + guest_pi_ns;
	for (;;) {
		uint64_t t0 = now_ns(), t;

		for (unsigned i = 0; i < qd; i++) {
			if (off + bs > dk.nslots * REC)
				off = 0;
			o[i] = (struct blk_op){.type = wr ? BLK_T_OUT : BLK_T_IN,
					       .sector = off / BLK_SECTOR,
					       .buf = wr ? (void *)wbuf[i % BATCH]
							 : (void *)rbuf[i * 16 % VCHUNK],
					       .len = (uint32_t)bs};
			off += bs;
		}
		blk_run(o, (unsigned)qd);
		for (unsigned i = 0; i < qd; i++)
			if (o[i].status != BLK_S_OK)
				io_error(wr ? "write sector" : "read sector", o[i].sector, o[i].status);
		t = now_ns();
		busy_ns += t - t0;
		ops += qd;
		batches++;
		if (t >= next) {
			uint64_t dt_us = (t - last) / 1000 ? (t - last) / 1000 : 1;

			printf("disk: bench=%s bs=%lu qd=%lu iops=%lu mbps=%lu lat_us=%lu\n", what, bs, qd,
			       ops * 1000000 / dt_us, ops * bs / dt_us, busy_ns / 1000 / batches);
			ops = batches = busy_ns = 0;
			last = t;
			next += guest_pi_ns;
			if (next <= t)
				next = t + guest_pi_ns;
		}
		if (time_up(t))
			return GUEST_EXIT_OK;
	}
}

int work_disk(void);

int work_disk(void)
{
	int rc = disk_init();
	const char *b = cmdline_get("dbench");

	if (rc)
		return rc;
	if (b)
		return bench(b);
	for (;;) {
		uint64_t t;

		disk_step();
		t = now_ns();
		if (t >= dk.next_ns)
			disk_print(t);
		if (time_up(t)) {
			disk_final();
			return GUEST_EXIT_OK;
		}
	}
}
