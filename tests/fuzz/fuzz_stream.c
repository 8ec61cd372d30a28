/* fuzz_stream.c — libFuzzer target: hostile bytes through the real receive → stage → apply path. */
/*
 * Each input is one checkpoint stream, read the way the Remus standby reads it (remus_standby.c):
 * sr_reader_new over the bytes, sr_read_header + sr_header_check_mem against the RAM, then epoch
 * after epoch ckpt_read_epoch into a struct ckpt_stage (staged mode), ckpt_stage_apply_pages into a
 * real guest_mem, and, when the epoch carries state, ckpt_state_apply into a real VM (1 vCPU, 2
 * MiB, created once in LLVMFuzzerInitialize and never started). The same bytes are then read once
 * more in direct mode (pages straight into a second guest_mem), as migrate_recv and snapshot
 * restore do.
 *
 * Invariants checked after every epoch (a violation traps with a message):
 *   - no write outside RAM: both RAMs sit between PROT_NONE guard pages (ASan does not see mmap);
 *   - a refused epoch (and the END that closes the stream) changed nothing in RAM (xxh3
 * before/after);
 *   - every refusal is negative with a one-line reason;
 *   - ckpt_stage_reset leaves nothing staged (pages, zero ranges, state, info, counters);
 *   - the stage never exceeds the image's page count plus one batch;
 *   - an applied epoch left exactly its pages in RAM (the last copy of a page wins; pages only
 * named in zero ranges are zero);
 *   - direct mode stages nothing.
 *
 * Seeds: FUZZ_STREAM_SEEDS=DIR build-fuzz/fuzz/fuzz_stream -runs=0 writes real streams made by the
 * writer side (ckpt_write_all_pages / ckpt_write_dirty_pages / ckpt_state_capture of this very VM)
 * into DIR; tests/fuzz/corpus/fuzz_stream/ckpt_* were made that way.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <xxhash.h>

#include <unistd.h>

#include "hv/dev/virtio_blk.h"
#include "hv/hv.h"
#include "hv/mem.h"
#include "replication/disk_repl.h"
#include "replication/checkpoint.h"
#include "replication/rw.h"
#include "replication/stream.h"

#define RAM_SIZE HV_MEM_MIN /* the smallest VM: 512 pages */
#define NR_PAGES (RAM_SIZE / GUEST_PAGE_SIZE)
#define MAX_EPOCHS 64

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Fuzzer-process state (libFuzzer runs inputs one at a time): made once, reused for every input. */
static struct {
	struct vm *vm; /* target of state; never started */
	uint8_t *ram[2]; /* [0] staged mode, [1] direct mode; each between guard pages */
	struct guest_mem gm[2];
	struct ckpt_stage stg;
	struct disk_stage dstg; /* stg.disk: DISK_WRITE / DISK_INFO records */
	struct virtio_blk *disk; /* disk0: 1 MiB on a memfd, id "fuzzdisk" */
	uint32_t verified;
	uint64_t seen[NR_PAGES / 64];
	bool verbose; /* FUZZ_STREAM_VERBOSE=1: one line per epoch on stderr (replaying a crash) */
} fz;

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "fuzz_stream: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	abort();
}

static void check(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_stream: invariant broken: %s\n", what);
		__builtin_trap();
	}
}

static void check_err(int rc, const char *err, const char *what)
{
	if (rc >= 0 || !err[0] || strchr(err, '\n')) {
		fprintf(stderr, "fuzz_stream: %s: rc %d, err \"%s\"\n", what, rc, err);
		__builtin_trap();
	}
}

/* size bytes of RW memory with a PROT_NONE page on either side. */
static uint8_t *guarded(size_t size)
{
	uint8_t *p = mmap(NULL, size + 2 * GUEST_PAGE_SIZE, PROT_NONE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	if (mprotect(p + GUEST_PAGE_SIZE, size, PROT_READ | PROT_WRITE))
		die("mprotect: %s", strerror(errno));
	return p + GUEST_PAGE_SIZE;
}

static uint64_t ram_sum(int i)
{
	return XXH3_64bits(fz.ram[i], RAM_SIZE);
}

static void check_empty(const struct ckpt_stage *s)
{
	check(s->n == 0 && s->nzero == 0 && s->pages == 0 && s->zero_pages == 0, "reset stage holds pages");
	check(!s->have_state && !s->have_info && s->epoch == 0, "reset stage holds state or info");
	check(s->st.nr_vcpus == 0 && s->st.nr_dev == 0, "reset stage counts state blobs");
	for (int i = 0; i < HV_MAX_VCPUS; i++)
		check(!s->st.vcpu[i].data, "reset stage keeps a vCPU blob");
	check(!s->disk || (!s->disk->b.nops && !s->disk->b.len && !s->disk->nr_info),
	      "reset stage holds disk records");
}

/* The epoch's disk records as the standby takes them: identity against disk0, then every write
 * applied in order; a refusal is one line; the last data write of the epoch reads back. */
static void apply_disk(void)
{
	struct disk_stage *d = &fz.dstg;
	char err[256] = "";
	int rc;

	check(d->b.len <= DISK_STAGE_MAX, "disk stage beyond its bound");
	for (size_t i = 0; i < d->b.nops; i++)
		check(d->b.ops[i].disk < SR_MAX_DISKS && d->b.ops[i].op <= SR_DISK_OP_DISCARD &&
			      d->b.ops[i].nr_sectors &&
			      d->b.ops[i].sector <= SR_DISK_MAX_SECTORS - d->b.ops[i].nr_sectors,
		      "a staged disk op out of range");
	rc = disk_stage_check(d, &fz.disk, 1, &fz.verified, &disk_names_remus, err, sizeof(err));
	if (rc) {
		check_err(rc, err, "refused disk identity");
		return;
	}
	rc = disk_stage_apply(d, &fz.disk, 1, err, sizeof(err));
	if (rc) {
		check_err(rc, err, "refused disk write");
		return;
	}
	for (size_t i = d->b.nops; i-- > 0;) {
		const struct disk_op *o = &d->b.ops[i];
		static uint8_t back[64 << 10];
		size_t len = o->nr_sectors * SR_DISK_SECTOR < sizeof(back) ? o->nr_sectors * SR_DISK_SECTOR
									   : sizeof(back);
		if (o->op != SR_DISK_OP_WRITE)
			continue;
		check(!virtio_blk_host_read(fz.disk, o->sector * SR_DISK_SECTOR, back, len),
		      "an applied write does not read back");
		check(!memcmp(back, d->b.data + o->off, len), "an applied write reads back different");
		break;
	}
}

static bool seen(uint64_t p)
{
	return fz.seen[p / 64] >> (p % 64) & 1;
}

/* After ckpt_stage_apply_pages: the last staged copy of each page is in RAM, and pages only named
 * by a zero range read as zero. */
static void check_applied(const struct ckpt_stage *s, struct guest_mem *gm)
{
	static const uint8_t zero[GUEST_PAGE_SIZE];

	memset(fz.seen, 0, sizeof(fz.seen));
	for (size_t i = s->n; i-- > 0;) {
		uint64_t p = s->idx[i];
		const uint8_t *host = mem_page_host(gm, p);

		check(p < NR_PAGES && host, "a staged page lies outside the image");
		if (seen(p))
			continue;
		fz.seen[p / 64] |= 1ull << (p % 64);
		check(!memcmp(host, s->data + i * GUEST_PAGE_SIZE, GUEST_PAGE_SIZE), "applied page differs");
	}
	for (size_t z = 0; z < s->nzero; z++) {
		uint64_t first = s->zero[z][0], count = s->zero[z][1];

		check(count && first < NR_PAGES && count <= NR_PAGES - first,
		      "a zero range outside the image");

		for (uint64_t p = first; p < NR_PAGES && p - first < count; p++) {
			if (!seen(p))
				check(!memcmp(mem_page_host(gm, p), zero, GUEST_PAGE_SIZE),
				      "zero range not zero");
		}
	}
}

/* 0 with *r ready at the first record, -1 when the stream is refused at its header (r freed). */
static int open_stream(const uint8_t *data, size_t size, struct sr_in *in, struct sr_ctx **r,
		       struct guest_mem *gm)
{
	struct sr_header h;
	char err[256] = "";
	int rc;

	sr_in_mem(in, data, size);
	if (sr_reader_new(r, in))
		die("sr_reader_new: out of memory");
	rc = sr_read_header(*r, &h);
	if (rc) {
		snprintf(err, sizeof(err), "%s", sr_error(*r));
		check_err(rc, err, "refused header");
	} else {
		rc = sr_header_check_mem(&h, gm, err, sizeof(err));
		if (rc)
			check_err(rc, err, "header for other RAM");
	}
	if (rc) {
		sr_ctx_free(*r);
		return -1;
	}
	return 0;
}

static void run_staged(const uint8_t *data, size_t size)
{
	struct sr_ctx *r;
	struct sr_in in;
	char err[256];
	uint64_t sum;
	int rc;

	if (open_stream(data, size, &in, &r, &fz.gm[0]))
		return;
	fz.stg.base = &fz.gm[0]; /* PAGE_DELTA decodes against the applied RAM, as on a standby */
	for (int e = 0; e < MAX_EPOCHS; e++) {
		sum = ram_sum(0);
		err[0] = 0;
		rc = ckpt_read_epoch(r, &fz.stg, NULL, err, sizeof(err));
		if (rc < 0)
			check_err(rc, err, "refused epoch");
		if (rc <= 0) {
			if (fz.verbose)
				fprintf(stderr, "read: %d %s\n", rc, err);
			check(ram_sum(0) == sum, "a refused epoch (or END) changed RAM");
			break;
		}
		check(rc == 1, "ckpt_read_epoch returned > 1");
		if (fz.verbose)
			fprintf(stderr, "epoch %llu: %zu pages, %zu zero ranges, state %d, info %d\n",
				(unsigned long long)fz.stg.epoch, fz.stg.n, fz.stg.nzero, fz.stg.have_state,
				fz.stg.have_info);
		check(fz.stg.n <= NR_PAGES + SR_BATCH_PAGES && fz.stg.nzero <= NR_PAGES + SR_BATCH_PAGES,
		      "stage beyond the image's page count");
		ckpt_stage_apply_pages(&fz.stg, &fz.gm[0]);
		check_applied(&fz.stg, &fz.gm[0]);
		apply_disk();
		if (fz.stg.have_state) {
			err[0] = 0;
			rc = ckpt_state_apply(&fz.stg.st, fz.vm, err, sizeof(err));
			if (rc)
				check_err(rc, err, "refused state");
			if (fz.verbose)
				fprintf(stderr, "  state apply: %d %s\n", rc, err);
		}
	}
	ckpt_stage_reset(&fz.stg);
	check_empty(&fz.stg);
	sr_ctx_free(r);
}

static void run_direct(const uint8_t *data, size_t size)
{
	struct sr_ctx *r;
	struct sr_in in;
	char err[256];
	int rc;

	if (open_stream(data, size, &in, &r, &fz.gm[1]))
		return;
	for (int e = 0; e < MAX_EPOCHS; e++) {
		err[0] = 0;
		rc = ckpt_read_epoch(r, &fz.stg, &fz.gm[1], err, sizeof(err));
		if (rc < 0)
			check_err(rc, err, "refused epoch (direct)");
		check(fz.stg.n == 0 && fz.stg.nzero == 0, "direct mode staged pages");
		if (rc <= 0)
			break;
	}
	ckpt_stage_reset(&fz.stg);
	check_empty(&fz.stg);
	sr_ctx_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	run_staged(data, size);
	run_direct(data, size);
	return 0;
}

/* ---- seeds: real streams of this VM -------------------------------------------------------------
 */

static void put_file(const char *dir, const char *name, const struct sr_out *o)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f || fwrite(o->buf, 1, o->len, f) != o->len || fclose(f))
		die("write %s: %s", path, strerror(errno));
	printf("fuzz_stream: wrote %s (%zu bytes)\n", path, o->len);
}

/* Streams with disks as Remus writes them: a sync epoch (DISK_INFO, a data block, a zero block), a
 * full epoch with state and a write-zeroes / discard / write, then an incremental epoch with writes.
 * Variant "disk_other" describes disk0 with another size and id (refused). */
static void write_disk_seeds(const char *dir, const struct ckpt_state *st)
{
	static uint8_t blk[8192];
	struct guest_mem *gm = vm_mem(fz.vm);
	struct sr_header h;
	struct sr_ctx *w;
	struct sr_out o;
	int rc;

	for (size_t i = 0; i < sizeof(blk); i++)
		blk[i] = (uint8_t)(i * 13 + 1);
	for (int v = 0; v < 2; v++) {
		sr_out_mem(&o, 0);
		rc = sr_writer_new(&w, &o, true, 1);
		sr_header_from_mem(&h, gm, (uint32_t)vm_nr_vcpus(fz.vm));
		rc = rc ?: sr_write_header(w, &h);
		rc = rc ?: sr_write_disk_info(w, 0, 0, v ? 2 << 20 : 1 << 20, v ? "other" : "fuzzdisk", 0);
		rc = rc ?: sr_write_disk_write(w, 0, SR_DISK_OP_WRITE, 0, 16, blk);
		rc = rc ?: sr_write_disk_write(w, 0, SR_DISK_OP_ZEROES, 128, 128, NULL);
		rc = rc ?: sr_write_checkpoint_end(w, 1);
		rc = rc ?: ckpt_write_all_pages(w, gm, 1);
		rc = rc ?: ckpt_state_write(w, st);
		rc = rc ?: sr_write_disk_write(w, 0, SR_DISK_OP_ZEROES, 8, 8, NULL);
		rc = rc ?: sr_write_disk_write(w, 0, SR_DISK_OP_DISCARD, 512, 64, NULL);
		rc = rc ?: sr_write_disk_write(w, 0, SR_DISK_OP_WRITE, 2040, 8, blk + 4096);
		rc = rc ?: sr_write_checkpoint_end(w, 2);
		rc = rc ?: sr_write_disk_write(w, 0, SR_DISK_OP_WRITE, 4, 2, blk + 100 * 8);
		rc = rc ?: ckpt_state_write(w, st);
		rc = rc ?: sr_write_checkpoint_end(w, 3);
		rc = rc ?: sr_write_end(w);
		if (rc)
			die("writing disk seed %d: %s", v, strerror(-rc));
		sr_ctx_free(w);
		put_file(dir, v ? "ckpt_disk_other" : "ckpt_disk", &o);
		sr_out_free(&o);
	}
}

/* Streams of the fuzz VM as Remus writes them: a full epoch (every page, vCPU + device state), then
 * an incremental one (two dirty pages + state). Variants: 0 compressed, 1 raw pages (full epoch
 * only), 2 with snapshot info and a memory-only second epoch, 3 cut inside the second
 * CHECKPOINT_END (torn), 4 written with a delta cache: the second epoch's pages, changed in one
 * word each, go out as PAGE_DELTA. */
static void write_seeds(const char *dir)
{
	struct guest_mem *gm = vm_mem(fz.vm);
	struct ckpt_state st = {0};
	struct ckpt_info info = {.id = 0x5eed, .epoch = 1};
	uint64_t bm[NR_PAGES / 64] = {0};
	struct sr_header h;
	struct sr_ctx *w;
	struct sr_out o;
	char err[256], name[32];
	struct sr_delta *cache;
	int rc;

	if (sr_delta_new(&cache, RAM_SIZE))
		die("sr_delta_new: out of memory");
	for (int i = 0; i < 64; i++) { /* a few pages with content; the rest stays a memfd hole (zero) */
		char line[64];

		snprintf(line, sizeof(line), "doppel fuzz seed: page one, text line %02d %24s\n", i, "");
		mem_write(gm, 0x1000 + i * 64, line, 64);
	}
	memset(mem_page_host(gm, 7), 0xa5, GUEST_PAGE_SIZE);
	for (int i = 0; i < GUEST_PAGE_SIZE; i++)
		((uint8_t *)mem_page_host(gm, 300))[i] = (uint8_t)(i * 7 + (i >> 8));
	if (ckpt_state_capture(&st, fz.vm, err, sizeof(err)))
		die("ckpt_state_capture: %s", err);
	for (int v = 0; v < 5; v++) {
		sr_out_mem(&o, 0);
		rc = sr_writer_new(&w, &o, v != 1, 1);
		if (!rc && v == 4)
			rc = sr_set_delta(w, cache);
		sr_header_from_mem(&h, gm, (uint32_t)vm_nr_vcpus(fz.vm));
		rc = rc ?: sr_write_header(w, &h);
		rc = rc ?: ckpt_write_all_pages(w, gm, 1);
		rc = rc ?: ckpt_state_write(w, &st);
		if (v == 2)
			rc = rc ?: ckpt_info_write(w, &info);
		rc = rc ?: sr_write_checkpoint_end(w, 1);
		if (v == 1) /* raw pages are big: one epoch */
			goto end;
		bm[0] = 1ull << 7 | 1ull << 8;
		if (v == 4) { /* one word of pages 7 and 300 changed since epoch 1 */
			((uint64_t *)mem_page_host(gm, 7))[5] ^= 0x1234;
			((uint64_t *)mem_page_host(gm, 300))[9] ^= 0x5678;
			bm[0] = 1ull << 7;
			bm[300 / 64] |= 1ull << (300 % 64);
		}
		rc = rc ?: ckpt_write_dirty_pages(w, gm, bm, 1);
		if (v != 2)
			rc = rc ?: ckpt_state_write(w, &st);
		rc = rc ?: sr_write_checkpoint_end(w, 2);
	end:
		rc = rc ?: sr_write_end(w);
		if (rc)
			die("writing seed %d: %s", v, strerror(-rc));
		sr_ctx_free(w);
		if (v == 3)
			o.len -= 40; /* END and most of the second CHECKPOINT_END */
		snprintf(name, sizeof(name), "ckpt_%s",
			 (const char *[]){"zstd", "raw", "info", "torn", "delta"}[v]);
		put_file(dir, name, &o);
		sr_out_free(&o);
	}
	write_disk_seeds(dir, &st);
	ckpt_state_free(&st);
	sr_delta_free(cache);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct vm_config cfg = {.name = "fuzz", .mem_size = RAM_SIZE, .nr_vcpus = 1};
	char err[256];
	const char *seeds = getenv("FUZZ_STREAM_SEEDS");

	(void)argc, (void)argv;
	fz.verbose = getenv("FUZZ_STREAM_VERBOSE") != NULL;
	if (vm_create(&cfg, &fz.vm, err, sizeof(err)))
		die("vm_create: %s (this target needs /dev/kvm)", err);
	for (int i = 0; i < 2; i++) {
		fz.ram[i] = guarded(RAM_SIZE);
		if (mem_init_buffer(&fz.gm[i], fz.ram[i], RAM_SIZE))
			die("mem_init_buffer failed");
	}
	int fd = memfd_create("fuzzdisk", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, 1 << 20) ||
	    virtio_blk_create(&fz.gm[1], fd, 1 << 20, false, "fuzzdisk", 1, &fz.disk))
		die("cannot create the fuzz disk");
	fz.stg.disk = &fz.dstg;
	if (seeds) {
		write_seeds(seeds);
		exit(0);
	}
	return 0;
}
