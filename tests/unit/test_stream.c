/* test_stream.c — checkpoint stream codec: round trips, hostile input, truncation, integrity. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include <cmocka.h>

#include "replication/stream.h"

#define NP 64 /* pages of the fake VM */
#define PG SR_PAGE_SIZE

struct vmimg {
	uint8_t mem[NP * PG];
	uint8_t vcpu[2][300];
	uint32_t vcpu_len[2];
	char dev_name[SR_DEV_NAME_LEN];
	uint32_t dev_kind;
	uint8_t dev[100];
	uint32_t dev_len;
	uint64_t epochs;
};

static void hdr_init(struct sr_header *h)
{
	memset(h, 0, sizeof(*h));
	h->nr_vcpus = 2;
	h->mem_size = NP * PG;
	h->nr_regions = 2;
	h->regions[0] = (struct sr_region){0, 32 * PG};
	h->regions[1] = (struct sr_region){0x100000000ull, 32 * PG};
}

/* Page contents: kind 0 zero, 1 random, 2 compressible text. */
static void fill_page(uint8_t *p, int kind, unsigned seed)
{
	if (kind == 0) {
		memset(p, 0, PG);
	} else if (kind == 1) {
		for (unsigned i = 0; i < PG; i++) {
			seed = seed * 1103515245u + 12345u;
			p[i] = (uint8_t)(seed >> 16);
		}
	} else {
		for (unsigned i = 0; i < PG; i++)
			p[i] = (uint8_t) "the quick brown fox jumps over the lazy dog "[(i + seed) % 44];
	}
}

/* Write a two-epoch stream describing `src` to o. Extra hook writes extra records in epoch 1. */
static void write_stream(struct sr_out *o, bool compress, const struct vmimg *src, bool optional, bool mt)
{
	struct sr_ctx *w;
	struct sr_header h;
	uint64_t idx[NP];
	const void *ptr[NP];
	struct sr_stats st;

	hdr_init(&h);
	assert_int_equal(sr_writer_new(&w, o, compress, 1), 0);
	assert_int_equal(sr_write_header(w, &h), 0);
	for (int i = 0; i < NP / 2; i++) {
		idx[i] = (uint64_t)i;
		ptr[i] = src->mem + (size_t)i * PG;
	}
	assert_int_equal(sr_write_pages(w, idx, ptr, NP / 2), 0);
	if (optional)
		assert_int_equal(sr_write_record(w, SR_REC_OPTIONAL | 0x42, "future!", 7), 0);
	assert_int_equal(sr_write_vcpu(w, 0, src->vcpu[0], src->vcpu_len[0]), 0);
	assert_int_equal(sr_write_checkpoint_end(w, 1), 0);
	for (int i = 0; i < NP / 2; i++) {
		idx[i] = (uint64_t)(NP / 2 + i);
		ptr[i] = src->mem + (size_t)idx[i] * PG;
	}
	if (mt)
		assert_int_equal(sr_write_pages_mt(w, idx, ptr, NP / 2, 2), 0);
	else
		assert_int_equal(sr_write_pages(w, idx, ptr, NP / 2), 0);
	assert_int_equal(sr_write_vcpu(w, 1, src->vcpu[1], src->vcpu_len[1]), 0);
	assert_int_equal(sr_write_device(w, src->dev_kind, src->dev_name, src->dev, src->dev_len), 0);
	assert_int_equal(sr_write_checkpoint_end(w, 2), 0);
	assert_int_equal(sr_write_end(w), 0);
	sr_stats(w, &st);
	assert_int_equal(st.zero_pages, NP / 3 + 1); /* every third page is zero */
	assert_int_equal(st.data_pages, NP - (NP / 3 + 1));
	assert_true(compress ? st.zstd_batches > 0 : st.zstd_batches == 0);
	sr_ctx_free(w);
}

static void make_src(struct vmimg *s)
{
	memset(s, 0, sizeof(*s));
	for (int i = 0; i < NP; i++)
		fill_page(s->mem + (size_t)i * PG, i % 3, (unsigned)i);
	s->vcpu_len[0] = 300;
	s->vcpu_len[1] = 17;
	for (int i = 0; i < 300; i++)
		s->vcpu[0][i] = (uint8_t)i, s->vcpu[1][i % 17] = (uint8_t)(i * 7);
	strcpy(s->dev_name, "virtio-net0");
	s->dev_kind = 7;
	s->dev_len = 100;
	memset(s->dev, 0xab, 100);
}

static int put_page(void *opaque, uint64_t idx, const void *page)
{
	struct vmimg *d = opaque;

	if (idx >= NP)
		return -ERANGE;
	memcpy(d->mem + idx * PG, page, PG);
	return 0;
}

static int put_zero(void *opaque, uint64_t first, uint64_t count)
{
	struct vmimg *d = opaque;

	if (first >= NP || count > NP - first)
		return -ERANGE;
	memset(d->mem + first * PG, 0, count * PG);
	return 0;
}

/* Read a whole stream into d. Returns 0 or the first error; err gets sr_error. */
static int read_stream(struct sr_in *in, struct vmimg *d, bool decode, char *err, size_t errlen)
{
	struct sr_ctx *r;
	struct sr_header h;
	struct sr_record rec;
	int rc;

	assert_int_equal(sr_reader_new(&r, in), 0);
	rc = sr_read_header(r, &h);
	while (!rc) {
		rc = sr_read_record(r, &rec);
		if (rc)
			break;
		if (rec.type == SR_REC_END)
			break;
		if (rec.type == SR_REC_PAGE_DATA && decode)
			rc = sr_decode_pages(r, &rec, put_page, d);
		else if (rec.type == SR_REC_ZERO_PAGES && decode)
			rc = sr_decode_zero_pages(r, &rec, put_zero, d);
		else if (rec.type == SR_REC_VCPU_STATE) {
			assert_true(rec.vcpu.blob_len <= 300);
			memcpy(d->vcpu[rec.vcpu.vcpu], rec.vcpu.blob, rec.vcpu.blob_len);
			d->vcpu_len[rec.vcpu.vcpu] = rec.vcpu.blob_len;
		} else if (rec.type == SR_REC_DEVICE_STATE) {
			assert_true(rec.dev.blob_len <= 100);
			memcpy(d->dev, rec.dev.blob, rec.dev.blob_len);
			d->dev_len = rec.dev.blob_len;
			d->dev_kind = rec.dev.kind;
			memcpy(d->dev_name, rec.dev.name, SR_DEV_NAME_LEN);
		} else if (rec.type == SR_REC_CHECKPOINT_END) {
			d->epochs++;
		}
	}
	if (err)
		snprintf(err, errlen, "%s", sr_error(r));
	sr_ctx_free(r);
	return rc;
}

static void check_same(const struct vmimg *a, const struct vmimg *b)
{
	assert_memory_equal(a->mem, b->mem, sizeof(a->mem));
	assert_int_equal(b->vcpu_len[0], 300);
	assert_int_equal(b->vcpu_len[1], 17);
	assert_memory_equal(a->vcpu[0], b->vcpu[0], 300);
	assert_memory_equal(a->vcpu[1], b->vcpu[1], 17);
	assert_string_equal(b->dev_name, "virtio-net0");
	assert_int_equal(b->dev_kind, 7);
	assert_int_equal(b->dev_len, 100);
	assert_memory_equal(a->dev, b->dev, 100);
	assert_int_equal(b->epochs, 2);
}

static struct vmimg src, dst;

static void roundtrip_mem(bool compress, bool mt)
{
	struct sr_out o;
	struct sr_in in;
	char err[256];

	make_src(&src);
	memset(&dst, 0x55, sizeof(dst)); /* zero pages must really be zeroed */
	dst.epochs = 0;
	sr_out_mem(&o, 0);
	write_stream(&o, compress, &src, true, mt);
	sr_in_mem(&in, o.buf, o.len);
	assert_int_equal(read_stream(&in, &dst, true, err, sizeof(err)), 0);
	check_same(&src, &dst);
	assert_int_equal(in.bytes, o.len);
	sr_out_free(&o);
}

static void test_roundtrip_zstd(void **s)
{
	(void)s;
	roundtrip_mem(true, false);
}

static void test_roundtrip_raw(void **s)
{
	(void)s;
	roundtrip_mem(false, false);
}

static void test_roundtrip_mt(void **s)
{
	(void)s;
	roundtrip_mem(true, true);
	roundtrip_mem(false, true);
}

/* Many batches: the threaded writer must produce exactly the single-threaded bytes. */
static void test_mt_identical(void **s)
{
	enum { N = 3000 };
	uint8_t *mem = malloc((size_t)N * PG);
	uint64_t *idx = malloc(N * sizeof(*idx));
	const void **ptr = malloc(N * sizeof(*ptr));
	struct sr_out o[2];
	struct sr_header h;

	(void)s;
	for (int i = 0; i < N; i++) {
		fill_page(mem + (size_t)i * PG, (i / 7) % 3, (unsigned)i);
		idx[i] = (uint64_t)(N - 1 - i); /* any order */
		ptr[i] = mem + (size_t)i * PG;
	}
	hdr_init(&h);
	h.mem_size = (uint64_t)N * PG;
	h.nr_regions = 1;
	h.regions[0].size = (uint64_t)N * PG;
	for (int t = 0; t < 2; t++) {
		struct sr_ctx *w;

		sr_out_mem(&o[t], 0);
		assert_int_equal(sr_writer_new(&w, &o[t], true, 1), 0);
		assert_int_equal(sr_write_header(w, &h), 0);
		if (t)
			assert_int_equal(sr_write_pages_mt(w, idx, ptr, N, 2), 0);
		else
			assert_int_equal(sr_write_pages(w, idx, ptr, N), 0);
		assert_int_equal(sr_write_checkpoint_end(w, 1), 0);
		assert_int_equal(sr_write_end(w), 0);
		sr_ctx_free(w);
	}
	assert_int_equal(o[0].len, o[1].len);
	assert_memory_equal(o[0].buf, o[1].buf, o[0].len);
	sr_out_free(&o[0]);
	sr_out_free(&o[1]);
	free(mem);
	free(idx);
	free(ptr);
}

static void test_roundtrip_file(void **s)
{
	struct sr_out o;
	struct sr_in in;
	FILE *f = tmpfile();
	char err[256];

	(void)s;
	assert_non_null(f);
	make_src(&src);
	memset(&dst, 0, sizeof(dst));
	sr_out_fd(&o, fileno(f), -1);
	write_stream(&o, true, &src, false, false);
	assert_int_equal(lseek(fileno(f), 0, SEEK_SET), 0);
	sr_in_fd(&in, fileno(f), -1);
	assert_int_equal(read_stream(&in, &dst, true, err, sizeof(err)), 0);
	check_same(&src, &dst);
	assert_int_equal(in.bytes, o.bytes);
	fclose(f);
}

struct pipe_writer {
	int fd;
	bool stall;
};

static void *pipe_writer_main(void *arg)
{
	struct pipe_writer *pw = arg;
	struct sr_out o;

	sr_out_fd(&o, pw->fd, 2000);
	if (!pw->stall)
		write_stream(&o, true, &src, true, false);
	else
		usleep(300 * 1000); /* say nothing: the reader must time out */
	close(pw->fd);
	return NULL;
}

/* Through a socket with a concurrent writer (the live-connection case), and a silent peer. */
static void test_roundtrip_socket_and_timeout(void **s)
{
	int sv[2];
	pthread_t t;
	struct pipe_writer pw;
	struct sr_in in;
	char err[256];

	(void)s;
	make_src(&src);
	memset(&dst, 0, sizeof(dst));
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	pw = (struct pipe_writer){.fd = sv[0]};
	assert_int_equal(pthread_create(&t, NULL, pipe_writer_main, &pw), 0);
	sr_in_fd(&in, sv[1], 2000);
	assert_int_equal(read_stream(&in, &dst, true, err, sizeof(err)), 0);
	check_same(&src, &dst);
	pthread_join(t, NULL);
	close(sv[1]);

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	pw = (struct pipe_writer){.fd = sv[0], .stall = true};
	assert_int_equal(pthread_create(&t, NULL, pipe_writer_main, &pw), 0);
	sr_in_fd(&in, sv[1], 50);
	assert_int_equal(read_stream(&in, &dst, true, err, sizeof(err)), -ETIMEDOUT);
	assert_non_null(strstr(err, "timed out"));
	pthread_join(t, NULL);
	close(sv[1]);
}

/* ---- hostile input ---- */

static uint8_t *good_stream(bool compress, size_t *len)
{
	struct sr_out o;

	make_src(&src);
	sr_out_mem(&o, 0);
	write_stream(&o, compress, &src, true, false);
	*len = o.len;
	return o.buf; /* caller frees */
}

#define HDR_LEN (48 + 16 * 2)

/* Offset of the n-th (0-based) record of `type` in a stream buffer, or 0. */
static size_t find_rec(const uint8_t *b, size_t len, uint32_t type, int n)
{
	size_t off = HDR_LEN;

	while (off + 8 <= len) {
		uint32_t t, l;

		memcpy(&t, b + off, 4);
		memcpy(&l, b + off + 4, 4);
		if (t == type && n-- == 0)
			return off;
		off += 8 + l + (8 - l % 8) % 8;
	}
	return 0;
}

static int read_buf(const uint8_t *b, size_t len, bool decode, char *err)
{
	struct sr_in in;

	memset(&dst, 0, sizeof(dst));
	sr_in_mem(&in, b, len);
	return read_stream(&in, &dst, decode, err, 256);
}

static void expect_err(const uint8_t *b, size_t len, bool decode, int want, const char *msg)
{
	char err[256];
	int rc = read_buf(b, len, decode, err);

	if (rc != want || !strstr(err, msg))
		fail_msg("want rc %d \"%s\", got %d \"%s\"", want, msg, rc, err);
}

static void test_truncated_everywhere(void **s)
{
	size_t len;
	uint8_t *b = good_stream(true, &len);

	(void)s;
	assert_int_equal(read_buf(b, len, true, NULL), 0);
	for (size_t cut = 0; cut < len; cut++) {
		char err[256];
		int rc = read_buf(b, cut, true, err);

		if (rc != -EPIPE || strncmp(err, "truncated stream: ", 18))
			fail_msg("cut at %zu/%zu: rc %d \"%s\"", cut, len, rc, err);
	}
	free(b);
}

static void test_bad_header(void **s)
{
	size_t len;
	uint8_t *b = good_stream(false, &len);
	uint8_t *c = malloc(len);

	(void)s;
	memcpy(c, b, len);
	memcpy(c, "NOTADOPP", 8);
	expect_err(c, len, true, -EBADMSG, "bad magic \"NOTADOPP\"");
	memcpy(c, b, len);
	c[8] = 2;
	expect_err(c, len, true, -EPROTONOSUPPORT, "unsupported format version 2");
	memcpy(c, b, len);
	c[17] = 0x20; /* 8192 */
	expect_err(c, len, true, -EBADMSG, "page size 8192");
	memcpy(c, b, len);
	c[12] = 1; /* byte-order marker */
	expect_err(c, len, true, -EBADMSG, "byte-order marker");
	memcpy(c, b, len);
	c[20] = 3; /* nr_vcpus: caught by the header checksum */
	expect_err(c, len, true, -EBADMSG, "header checksum mismatch");
	free(c);
	free(b);
}

static void test_unknown_mandatory(void **s)
{
	size_t len;
	uint8_t *b = good_stream(false, &len);
	size_t off = find_rec(b, len, SR_REC_OPTIONAL | 0x42, 0);

	(void)s;
	assert_true(off > 0);
	b[off + 3] = 0; /* clear the OPTIONAL bit */
	expect_err(b, len, true, -EBADMSG, "unknown mandatory record type 0x42");
	free(b);
}

static void test_flipped_payload(void **s)
{
	size_t len;
	uint8_t *b = good_stream(false, &len);
	size_t off = find_rec(b, len, SR_REC_PAGE_DATA, 0);

	(void)s;
	uint32_t count;

	assert_true(off > 0);
	memcpy(&count, b + off + 8, 4);
	b[off + 16 + 8 * count + 100] ^= 1; /* inside the raw payload */
	expect_err(b, len, false, -EBADMSG, "epoch 1 checksum mismatch");
	free(b);
}

static void test_absurd_length_and_padding(void **s)
{
	size_t len;
	uint8_t *b = good_stream(false, &len);
	size_t off = find_rec(b, len, SR_REC_VCPU_STATE, 1); /* 17-byte blob: length 25, pad 7 */

	(void)s;
	assert_true(off > 0);
	b[off + 8 + 25 + 3] = 1;
	expect_err(b, len, true, -EBADMSG, "nonzero padding");
	b[off + 8 + 25 + 3] = 0;
	memset(b + off + 4, 0xff, 4);
	expect_err(b, len, true, -EBADMSG, "record VCPU_STATE length 4294967295 exceeds maximum 67108864");
	free(b);
}

/* A stream with one hand-made record in epoch 1. */
static uint8_t *craft(uint32_t type, const void *body, size_t blen, size_t *len)
{
	struct sr_out o;
	struct sr_ctx *w;
	struct sr_header h;

	hdr_init(&h);
	sr_out_mem(&o, 0);
	assert_int_equal(sr_writer_new(&w, &o, true, 1), 0);
	assert_int_equal(sr_write_header(w, &h), 0);
	assert_int_equal(sr_write_record(w, type, body, blen), 0);
	assert_int_equal(sr_write_checkpoint_end(w, 9), 0);
	assert_int_equal(sr_write_end(w), 0);
	sr_ctx_free(w);
	*len = o.len;
	return o.buf;
}

static void test_page_index_and_size(void **s)
{
	static uint8_t body[16 + 2 * PG + ZSTD_COMPRESSBOUND(PG)];
	uint8_t page[PG];
	uint64_t v;
	uint32_t u;
	size_t len, z;
	uint8_t *b;

	(void)s;
	/* raw page beyond nr_pages */
	u = 1, memcpy(body, &u, 4);
	u = SR_ENC_RAW, memcpy(body + 4, &u, 4);
	v = NP, memcpy(body + 8, &v, 8);
	memset(body + 16, 1, PG);
	b = craft(SR_REC_PAGE_DATA, body, 16 + PG, &len);
	expect_err(b, len, true, -EBADMSG, "page index 64 beyond 64 pages");
	free(b);
	/* zstd claims 2 pages, decompresses to 1 */
	fill_page(page, 2, 3);
	u = 2, memcpy(body, &u, 4);
	u = SR_ENC_ZSTD, memcpy(body + 4, &u, 4);
	v = 1, memcpy(body + 8, &v, 8);
	v = 2, memcpy(body + 16, &v, 8);
	z = ZSTD_compress(body + 24, ZSTD_COMPRESSBOUND(PG), page, PG, 1);
	assert_false(ZSTD_isError(z));
	b = craft(SR_REC_PAGE_DATA, body, 24 + z, &len);
	expect_err(b, len, false, 0, "");
	expect_err(b, len, true, -EBADMSG, "decompressed size 4096, want 8192");
	/* garbage payload */
	b[HDR_LEN + 8 + 24 + 2] ^= 0xff;
	expect_err(b, len, false, -EBADMSG, "checksum mismatch");
	free(b);
	/* zero range beyond the end, bad encoding */
	u = 1, memcpy(body, &u, 4);
	u = 0, memcpy(body + 4, &u, 4);
	v = 60, memcpy(body + 8, &v, 8);
	v = 5, memcpy(body + 16, &v, 8);
	b = craft(SR_REC_ZERO_PAGES, body, 24, &len);
	expect_err(b, len, true, -EBADMSG, "range 60+5 outside 64 pages");
	free(b);
	u = 1, memcpy(body, &u, 4);
	u = 7, memcpy(body + 4, &u, 4);
	b = craft(SR_REC_PAGE_DATA, body, 16 + PG, &len);
	expect_err(b, len, true, -EBADMSG, "encoding 7 unknown");
	free(b);
}

static void test_epoch_rules(void **s)
{
	struct sr_out o;
	struct sr_ctx *w;
	struct sr_header h;
	uint8_t page[PG];
	uint64_t idx = 3;
	const void *p = page;
	size_t len;
	uint8_t *b;

	(void)s;
	hdr_init(&h);
	fill_page(page, 1, 1);
	sr_out_mem(&o, 0);
	assert_int_equal(sr_writer_new(&w, &o, false, 0), 0);
	assert_int_equal(sr_write_end(w), -EINVAL); /* before header */
	assert_int_equal(sr_write_header(w, &h), 0);
	idx = NP;
	assert_int_equal(sr_write_pages(w, &idx, &p, 1), -EINVAL);
	idx = 3;
	assert_int_equal(sr_write_pages(w, &idx, &p, 1), 0);
	assert_int_equal(sr_write_end(w), -EINVAL); /* uncommitted records */
	assert_int_equal(sr_write_checkpoint_end(w, 5), 0);
	assert_int_equal(sr_write_checkpoint_end(w, 5), -EINVAL);
	assert_int_equal(sr_write_device(w, 1, "bad name", NULL, 0), -EINVAL);
	assert_int_equal(sr_write_vcpu(w, 2, page, 10), -EINVAL);
	/* A stream cut after the committed epoch (primary died): EOF before END. */
	sr_ctx_free(w);
	expect_err(o.buf, o.len, true, -EPIPE, "EOF before END");
	/* Same epoch number twice on the wire is rejected by the reader. */
	len = o.len;
	b = malloc(len * 2);
	memcpy(b, o.buf, len);
	memcpy(b + len, o.buf + HDR_LEN, len - HDR_LEN);
	expect_err(b, 2 * len - HDR_LEN, true, -EBADMSG, "epoch 5 not after previous epoch 5");
	free(b);
	sr_out_free(&o);
}

static void test_header_matches_mem(void **s)
{
	struct guest_mem gm;
	struct sr_header h;
	void *buf = calloc(1, 4 << 20);
	char err[128];

	(void)s;
	assert_int_equal(mem_init_buffer(&gm, buf, 4 << 20), 0);
	sr_header_from_mem(&h, &gm, 1);
	assert_int_equal(h.nr_pages, 1024);
	assert_int_equal(sr_header_check_mem(&h, &gm, err, sizeof(err)), 0);
	h.regions[0].size -= PG;
	assert_int_equal(sr_header_check_mem(&h, &gm, err, sizeof(err)), -EINVAL);
	mem_destroy(&gm);
	free(buf);
}

/* Seeds for tests/fuzz/corpus/fuzz_stream: `SR_CORPUS_DIR=dir build/tests/test_stream`. */
static void dump_corpus(const char *dir)
{
	for (int v = 0; v < 3; v++) {
		struct sr_out o;
		struct sr_ctx *w;
		struct sr_header h;
		uint64_t idx[4] = {1, 2, 40, 63};
		const void *ptr[4];
		char path[512];
		FILE *f;

		make_src(&src);
		for (int i = 0; i < 4; i++)
			ptr[i] = src.mem + (size_t)(i + 1) * PG; /* zero, random, text, zero... */
		hdr_init(&h);
		sr_out_mem(&o, 0);
		assert_int_equal(sr_writer_new(&w, &o, v != 1, 1), 0);
		assert_int_equal(sr_write_header(w, &h), 0);
		assert_int_equal(sr_write_pages(w, idx, ptr, v == 1 ? 1 : 4), 0);
		if (v == 2)
			assert_int_equal(sr_write_record(w, SR_REC_OPTIONAL | 9, "x", 1), 0);
		assert_int_equal(sr_write_vcpu(w, 1, src.vcpu[1], 17), 0);
		assert_int_equal(sr_write_device(w, 3, "uart0", src.dev, v * 5), 0);
		assert_int_equal(sr_write_checkpoint_end(w, 1), 0);
		assert_int_equal(sr_write_zero_range(w, 5, 7), 0);
		assert_int_equal(sr_write_checkpoint_end(w, 2), 0);
		assert_int_equal(sr_write_end(w), 0);
		sr_ctx_free(w);
		snprintf(path, sizeof(path), "%s/seed%d", dir, v);
		f = fopen(path, "wb");
		assert_non_null(f);
		assert_int_equal(fwrite(o.buf, 1, o.len, f), o.len);
		fclose(f);
		sr_out_free(&o);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip_zstd),
		cmocka_unit_test(test_roundtrip_raw),
		cmocka_unit_test(test_roundtrip_mt),
		cmocka_unit_test(test_mt_identical),
		cmocka_unit_test(test_roundtrip_file),
		cmocka_unit_test(test_roundtrip_socket_and_timeout),
		cmocka_unit_test(test_truncated_everywhere),
		cmocka_unit_test(test_bad_header),
		cmocka_unit_test(test_unknown_mandatory),
		cmocka_unit_test(test_flipped_payload),
		cmocka_unit_test(test_absurd_length_and_padding),
		cmocka_unit_test(test_page_index_and_size),
		cmocka_unit_test(test_epoch_rules),
		cmocka_unit_test(test_header_matches_mem),
	};

	if (getenv("SR_CORPUS_DIR")) {
		dump_corpus(getenv("SR_CORPUS_DIR"));
		return 0;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
