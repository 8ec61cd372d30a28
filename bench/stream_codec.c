/* stream_codec.c — throughput of the checkpoint stream codec (write+read 200 MiB of pages) vs memcpy.
 *
 * Not built by the Makefile. Build and run:
 *   gcc -std=gnu11 -O2 -D_GNU_SOURCE -I. bench/stream_codec.c replication/rw.c replication/stream.c \
 *       replication/stream_read.c replication/stream_mt.c hv/mem.c -lzstd -lxxhash -lpthread \
 *       -o /tmp/stream_codec && /tmp/stream_codec [MiB]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "replication/stream.h"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint32_t rnd(uint64_t *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return (uint32_t)(*s >> 33);
}

/* 50% zero pages, 50% "text": random words from a small vocabulary (compresses ~3-4x). */
static void make_pages(uint8_t *mem, size_t np)
{
	static const char *words[] = {"replication", "checkpoint", "the",	"of",	 "kvm",
				      "page",	     "dirty",	   "epoch",	"guest", "memory",
				      "virtio",	     "buffer",	   "and",	"to",	 "a",
				      "stream",	     "primary",	   "secondary", "42",	 "0x7f3a"};
	uint64_t s = 12345;

	for (size_t p = 0; p < np; p++) {
		uint8_t *d = mem + p * SR_PAGE_SIZE;
		size_t o = 0;

		if (rnd(&s) & 1) {
			memset(d, 0, SR_PAGE_SIZE);
			continue;
		}
		while (o < SR_PAGE_SIZE) {
			const char *w = words[rnd(&s) % 20];
			size_t l = strlen(w);

			for (size_t i = 0; i < l && o < SR_PAGE_SIZE; i++)
				d[o++] = (uint8_t)w[i];
			if (o < SR_PAGE_SIZE)
				d[o++] = (rnd(&s) % 9) ? ' ' : '\n';
		}
	}
}

static int put_page(void *opaque, uint64_t idx, const void *page)
{
	memcpy((uint8_t *)opaque + idx * SR_PAGE_SIZE, page, SR_PAGE_SIZE);
	return 0;
}

static int put_zero(void *opaque, uint64_t first, uint64_t count)
{
	memset((uint8_t *)opaque + first * SR_PAGE_SIZE, 0, count * SR_PAGE_SIZE);
	return 0;
}

static void run1(double *wt, double *rt, size_t *slen, uint8_t *mem, uint8_t *dst, size_t np, bool compress,
		 int level, int threads)
{
	uint64_t *idx = malloc(np * sizeof(*idx));
	const void **ptr = malloc(np * sizeof(*ptr));
	double t0, t1, t2;
	struct sr_header h = {.nr_vcpus = 1, .mem_size = np * SR_PAGE_SIZE, .nr_regions = 1};
	struct sr_out o;
	struct sr_in in;
	struct sr_ctx *w, *r;
	struct sr_record rec;
	int rc;

	h.regions[0].size = h.mem_size;
	for (size_t i = 0; i < np; i++) {
		idx[i] = i;
		ptr[i] = mem + i * SR_PAGE_SIZE;
	}
	memset(dst, 0xaa, np * SR_PAGE_SIZE);
	sr_out_mem(&o, 0);
	sr_writer_new(&w, &o, compress, level);
	t0 = now();
	rc = sr_write_header(w, &h);
	if (!rc)
		rc = threads > 1 ? sr_write_pages_mt(w, idx, ptr, np, threads)
				 : sr_write_pages(w, idx, ptr, np);
	if (!rc)
		rc = sr_write_checkpoint_end(w, 1);
	if (!rc)
		rc = sr_write_end(w);
	t1 = now();
	if (rc) {
		fprintf(stderr, "write: %s\n", sr_error(w));
		exit(1);
	}
	sr_in_mem(&in, o.buf, o.len);
	sr_reader_new(&r, &in);
	rc = sr_read_header(r, &h);
	while (!rc) {
		rc = sr_read_record(r, &rec);
		if (rc || rec.type == SR_REC_END)
			break;
		if (rec.type == SR_REC_PAGE_DATA)
			rc = sr_decode_pages(r, &rec, put_page, dst);
		else if (rec.type == SR_REC_ZERO_PAGES)
			rc = sr_decode_zero_pages(r, &rec, put_zero, dst);
	}
	t2 = now();
	if (rc || memcmp(mem, dst, np * SR_PAGE_SIZE)) {
		fprintf(stderr, "read: %s (rc %d)\n", sr_error(r), rc);
		exit(1);
	}
	*wt = t1 - t0;
	*rt = t2 - t1;
	*slen = o.len;
	sr_ctx_free(w);
	sr_ctx_free(r);
	sr_out_free(&o);
	free(idx);
	free(ptr);
}

/* Best of three (the machine is shared). */
static void run(const char *name, uint8_t *mem, uint8_t *dst, size_t np, bool compress, int level,
		int threads)
{
	double bytes = (double)np * SR_PAGE_SIZE, bw = 1e9, br = 1e9, wt, rt;
	size_t slen = 0;

	for (int i = 0; i < 3; i++) {
		run1(&wt, &rt, &slen, mem, dst, np, compress, level, threads);
		bw = wt < bw ? wt : bw;
		br = rt < br ? rt : br;
	}
	printf("%-22s write %6.2f GB/s  read %6.2f GB/s  stream %7.1f MiB (%.2fx)\n", name, bytes / bw / 1e9,
	       bytes / br / 1e9, (double)slen / (1 << 20), bytes / (double)slen);
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 0) : 200;
	size_t np = mib * 256;
	uint8_t *mem = malloc(np * SR_PAGE_SIZE), *dst = malloc(np * SR_PAGE_SIZE);
	double t0, t1;

	if (!mem || !dst)
		return 1;
	make_pages(mem, np);
	memset(dst, 1, np * SR_PAGE_SIZE);
	t1 = 1e9;
	for (int i = 0; i < 3; i++) {
		t0 = now();
		memcpy(dst, mem, np * SR_PAGE_SIZE);
		t0 = now() - t0;
		t1 = t0 < t1 ? t0 : t1;
	}
	printf("%zu MiB, 50%% zero pages, 50%% text (best of 3)\n", mib);
	printf("%-22s %6.2f GB/s\n", "memcpy", (double)np * SR_PAGE_SIZE / t1 / 1e9);
	run("compress none", mem, dst, np, false, 0, 1);
	run("zstd level 1", mem, dst, np, true, 1, 1);
	run("zstd level -3", mem, dst, np, true, -3, 1);
	run("zstd level 1, 2 thr", mem, dst, np, true, 1, 2);
	run("zstd level -3, 2 thr", mem, dst, np, true, -3, 2);
	free(mem);
	free(dst);
	return 0;
}
