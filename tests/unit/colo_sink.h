/* colo_sink.h — COLO comparator test harness: records released frames and divergence callbacks. */
#ifndef DOPPEL_TESTS_COLO_SINK_H
#define DOPPEL_TESTS_COLO_SINK_H

#include <stdlib.h>

#include "netbuf/colo_compare.h"
#include "tests/unit/colo_frames.h"

#define SINK_MAX 512

struct sink {
	int n; /* frames released */
	int kept; /* of which the first SINK_MAX are kept */
	uint8_t *f[SINK_MAX];
	size_t len[SINK_MAX];
	int netidx[SINK_MAX];
	int ndiv;
	enum colo_cmp_reason why[16];
};

static void sink_release(void *opaque, int netidx, const void *frame, size_t len)
{
	struct sink *s = opaque;

	if (s->kept < SINK_MAX) {
		s->f[s->kept] = malloc(len);
		memcpy(s->f[s->kept], frame, len);
		s->len[s->kept] = len;
		s->netidx[s->kept] = netidx;
		s->kept++;
	}
	s->n++;
}

static void sink_diverged(void *opaque, enum colo_cmp_reason why)
{
	struct sink *s = opaque;

	if (s->ndiv < 16)
		s->why[s->ndiv] = why;
	s->ndiv++;
}

static void sink_free(struct sink *s)
{
	for (int i = 0; i < s->kept; i++)
		free(s->f[i]);
	memset(s, 0, sizeof(*s));
}

static struct colo_cmp *cmp_new(struct sink *s, uint32_t timeout_ms, size_t max_bytes, size_t max_frames)
{
	struct colo_cmp_cfg cfg = {
		.timeout_ms = timeout_ms,
		.max_bytes = max_bytes,
		.max_frames = max_frames,
		.release = sink_release,
		.diverged = sink_diverged,
		.opaque = s,
	};
	struct colo_cmp *c = NULL;

	memset(s, 0, sizeof(*s));
	assert_int_equal(colo_cmp_new(&c, &cfg), 0);
	assert_non_null(c);
	return c;
}

#define MS(x) ((uint64_t)(x)*1000000ull)

static void pvm(struct colo_cmp *c, const uint8_t *f, size_t n, uint64_t t)
{
	assert_int_equal(colo_cmp_primary(c, 0, f, n, t), 0);
}

static void svm(struct colo_cmp *c, const uint8_t *f, size_t n, uint64_t t)
{
	assert_int_equal(colo_cmp_secondary(c, 0, f, n, t), 0);
}

/* the i-th released frame is exactly f[0..n) */
static void assert_released(const struct sink *s, int i, const uint8_t *f, size_t n)
{
	assert_true(i < s->kept);
	assert_int_equal(s->len[i], n);
	assert_memory_equal(s->f[i], f, n);
}

static struct colo_cmp_stats stats(struct colo_cmp *c)
{
	struct colo_cmp_stats st;

	colo_cmp_get_stats(c, &st);
	return st;
}

/* VM 10.0.0.2:port -> client 10.0.0.1:cport (IPv4) or fd00::2 -> fd00::1 (IPv6) */
static struct fdef flow_vm(int family, uint16_t port, uint16_t cport)
{
	struct fdef d;

	memset(&d, 0, sizeof(d));
	d.family = family;
	if (family == 4) {
		d.src[0] = d.dst[0] = 10;
		d.src[3] = 2;
		d.dst[3] = 1;
	} else {
		d.src[0] = d.dst[0] = 0xfd;
		d.src[15] = 2;
		d.dst[15] = 1;
	}
	d.sport = port;
	d.dport = cport;
	return d;
}

#endif
