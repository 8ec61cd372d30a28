/* remus_epoch_cost.c — CPU cost of one Remus epoch's stages for a hot set, with the real code.
 *
 * Not built by the Makefile. Build (after make binaries) and run:
 *   gcc -std=gnu11 -O2 -D_GNU_SOURCE -I. bench/remus_epoch_cost.c build/libdoppel.a \
 *       -lzstd -lxxhash -ljson-c -lsystemd -lpthread -o /tmp/remus_epoch_cost && /tmp/remus_epoch_cost [MiB] [epochs]
 *
 * Per epoch, the test guest's work=dirty pattern (two words of every page rewritten; the rest zero,
 * or random once with fill=random) over MiB of hot set, then:
 *   copy1 / copy2   the pause's copy of every page into the stage (ckpt_stage_push), 1 or 2 threads
 *   cmp             checking each page against its previous staged copy (memcmp) instead
 *   encode          the sender: sr_write_pages with the delta cache (zero scan, XOR, zstd) into a
 *                   socketpair, plus CHECKPOINT_END; write() to the socket included
 *   apply           the standby: ckpt_read_epoch (staged, keep_bodies, delta base = its RAM: the read
 *                   from the socket, checks, xxh64) + ckpt_stage_apply_pages (decode into RAM)
 * Figures are CPU time of the thread doing the stage (CLOCK_THREAD_CPUTIME_ID), median over the
 * epochs, so other load on the machine stretches them less than wall-clock times would.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "replication/checkpoint.h"
#include "replication/stream.h"

#define WORDS (4096 / 8)
#define MAXE 64

static double tcpu(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmpd(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(double), cmpd);
	return v[n / 2];
}

struct copy_job {
	struct ckpt_stage *stg;
	uint64_t *ram;
	size_t from, to;
	double ms;
};

static void *copy_part(void *arg)
{
	struct copy_job *j = arg;
	double t = tcpu();

	for (size_t p = j->from; p < j->to; p++) {
		uint8_t *dst = j->stg->data + p * 4096;
		__builtin_memcpy(dst, (uint8_t *)j->ram + p * 4096, 4096);
		j->stg->idx[p] = p;
		j->stg->ptrs[p] = dst;
	}
	j->ms = tcpu() - t;
	return NULL;
}

struct reader {
	int fd;
	struct guest_mem *gm;
	int epochs;
	double ms[MAXE];
	int rc;
};

static void *reader_main(void *arg)
{
	struct reader *rd = arg;
	struct sr_in in;
	struct sr_ctx *r = NULL;
	struct sr_header h;
	struct ckpt_stage stg = {0};
	char err[256];

	pthread_setname_np(pthread_self(), "reader");
	sr_in_fd(&in, rd->fd, -1);
	if (sr_reader_new(&r, &in) || sr_read_header(r, &h)) {
		rd->rc = -1;
		return NULL;
	}
	stg.base = rd->gm;
	stg.keep_bodies = true;
	for (int e = 0; e < rd->epochs; e++) {
		double t = tcpu();
		int rc = ckpt_read_epoch(r, &stg, NULL, err, sizeof(err));
		if (rc != 1 || ckpt_stage_apply_pages(&stg, rd->gm, err, sizeof(err))) {
			fprintf(stderr, "reader: %s\n", err);
			rd->rc = -1;
			break;
		}
		rd->ms[e] = tcpu() - t;
		ckpt_stage_reset(&stg);
	}
	ckpt_stage_free(&stg);
	sr_ctx_free(r);
	return NULL;
}

static void guest_pass(uint64_t *ram, size_t np, uint64_t pass)
{
	for (size_t i = 0; i < np; i++) {
		ram[i * WORDS] = pass << 32 | i;
		ram[i * WORDS + WORDS - 1] = ~(pass << 32 | i);
	}
}

static int run(size_t mib, int epochs, bool random)
{
	size_t np = mib << 8;
	struct guest_mem ga, gb;
	uint64_t *ram = aligned_alloc(4096, np * 4096), *rb = aligned_alloc(4096, np * 4096);
	struct ckpt_stage stg = {0}, prev = {0};
	struct sr_delta *d;
	struct sr_ctx *w;
	struct sr_out out;
	struct sr_header h;
	double c1[MAXE], c2[MAXE], cm[MAXE], enc[MAXE];
	int sv[2];
	pthread_t th;

	memset(ram, 0, np * 4096);
	memset(rb, 0, np * 4096);
	if (random) {
		uint64_t x = 0x9e3779b97f4a7c15ull;
		for (size_t i = 0; i < np * WORDS; i++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			if (i % WORDS && i % WORDS != WORDS - 1)
				ram[i] = x;
		}
	}
	mem_init_buffer(&ga, ram, np * 4096);
	mem_init_buffer(&gb, rb, np * 4096);
	if (ckpt_stage_reserve(&stg, np) || ckpt_stage_reserve(&prev, np) || sr_delta_new(&d, 64ull << 20) ||
	    socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		return 1;
	memset(stg.data, 0, np * 4096);
	memset(prev.data, 1, np * 4096);
	struct reader rd = {.fd = sv[1], .gm = &gb, .epochs = epochs};
	pthread_create(&th, NULL, reader_main, &rd);
	sr_out_fd(&out, sv[0], -1);
	if (sr_writer_new(&w, &out, true, 1) || sr_set_delta(w, d))
		return 1;
	sr_set_pages_stable(w, !getenv("LIVE")); /* a stage, as the Remus sender's */
	sr_header_from_mem(&h, &ga, 1);
	if (sr_write_header(w, &h))
		return 1;
	for (int e = 0; e < epochs; e++) {
		guest_pass(ram, np, (uint64_t)e + 1);
		/* 1 thread */
		struct copy_job j = {.stg = &stg, .ram = ram, .from = 0, .to = np};
		copy_part(&j);
		c1[e] = j.ms;
		/* 2 threads (the second runs on the other core) */
		struct copy_job a = {.stg = &stg, .ram = ram, .from = 0, .to = np / 2},
				b = {.stg = &stg, .ram = ram, .from = np / 2, .to = np};
		pthread_t t2;
		pthread_create(&t2, NULL, copy_part, &b);
		copy_part(&a);
		pthread_join(t2, NULL);
		c2[e] = a.ms > b.ms ? a.ms : b.ms;
		/* compare against the previous copy instead of copying */
		double t = tcpu();
		size_t same = 0;
		for (size_t p = 0; p < np; p++)
			same += !memcmp(prev.data + p * 4096, (uint8_t *)ram + p * 4096, 4096);
		cm[e] = tcpu() - t;
		memcpy(prev.data, stg.data, np * 4096);
		(void)same;
		stg.n = np;
		t = tcpu();
		if (sr_write_pages(w, stg.idx, stg.ptrs, np) || sr_write_checkpoint_end(w, (uint64_t)e + 1)) {
			fprintf(stderr, "writer: %s\n", sr_error(w));
			return 1;
		}
		enc[e] = tcpu() - t;
	}
	pthread_join(th, NULL);
	struct sr_stats s;
	sr_stats(w, &s);
	printf("%4zu MiB %-6s copy1 %6.2f  copy2 %6.2f  cmp %6.2f  encode %6.2f  apply %6.2f ms/epoch"
	       "  (wire %.1f MB/epoch)%s\n",
	       mib, random ? "random" : "zero", median(c1, epochs), median(c2, epochs), median(cm, epochs),
	       median(enc + 1, epochs - 1), median(rd.ms + 1, epochs - 1), (double)out.bytes / epochs / 1e6,
	       rd.rc ? " READER FAILED" : "");
	sr_ctx_free(w);
	sr_delta_free(d);
	close(sv[0]);
	close(sv[1]);
	ckpt_stage_free(&stg);
	ckpt_stage_free(&prev);
	free(ram);
	free(rb);
	return rd.rc ? 1 : 0;
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? (size_t)atoi(argv[1]) : 64;
	int epochs = argc > 2 ? atoi(argv[2]) : 12;

	if (epochs < 3 || epochs > MAXE)
		epochs = 12;
	return run(mib, epochs, false) | run(mib, epochs, true);
}
