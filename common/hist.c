/* hist.c — lock-free fixed-bucket histograms and their Prometheus exposition. */
#include <errno.h>
#include <string.h>

#include "common/hist.h"

int hist_init(struct hist *h, const uint64_t *le_ns, int nb)
{
	if (!h || !le_ns || nb < 1 || nb > HIST_MAX_BUCKETS)
		return -EINVAL;
	for (int i = 1; i < nb; i++)
		if (le_ns[i] <= le_ns[i - 1])
			return -EINVAL;
	memset(h, 0, sizeof(*h));
	h->nb = nb;
	memcpy(h->le_ns, le_ns, (size_t)nb * sizeof(le_ns[0]));
	return 0;
}

void hist_record(struct hist *h, uint64_t ns)
{
	int lo = 0, hi = h->nb; /* first bucket with ns <= le, or nb (+Inf) */

	while (lo < hi) {
		int mid = (lo + hi) / 2;

		if (ns <= h->le_ns[mid])
			hi = mid;
		else
			lo = mid + 1;
	}
	__atomic_fetch_add(&h->n[lo], 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&h->sum_ns, ns, __ATOMIC_RELAXED);
}

void hist_snapshot(const struct hist *h, struct hist_snap *out)
{
	uint64_t c = 0;

	memset(out, 0, sizeof(*out));
	out->nb = h->nb;
	memcpy(out->le_ns, h->le_ns, sizeof(out->le_ns));
	out->sum_ns = __atomic_load_n(&h->sum_ns, __ATOMIC_RELAXED);
	for (int i = 0; i <= h->nb; i++) {
		c += __atomic_load_n(&h->n[i], __ATOMIC_RELAXED);
		out->cum[i] = c;
	}
	out->count = c;
}

/* Seconds from ns, shortest exact-enough decimal ("0.00025", "1", "2.5"). */
static void fmt_seconds(char *buf, size_t len, uint64_t ns)
{
	snprintf(buf, len, "%.9g", (double)ns / 1e9);
}

void hist_prom(FILE *f, const struct hist *h, const char *name, const char *help, const char *labels)
{
	struct hist_snap s;
	const char *sep = labels && *labels ? "," : "";
	char le[32];

	hist_snapshot(h, &s);
	labels = labels ? labels : "";
	fprintf(f, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
	for (int i = 0; i < s.nb; i++) {
		fmt_seconds(le, sizeof(le), s.le_ns[i]);
		fprintf(f, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, labels, sep, le,
			(unsigned long long)s.cum[i]);
	}
	fprintf(f, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long)s.count);
	fmt_seconds(le, sizeof(le), s.sum_ns);
	if (*labels) {
		fprintf(f, "%s_sum{%s} %s\n", name, labels, le);
		fprintf(f, "%s_count{%s} %llu\n", name, labels, (unsigned long long)s.count);
	} else {
		fprintf(f, "%s_sum %s\n%s_count %llu\n", name, le, name, (unsigned long long)s.count);
	}
}
