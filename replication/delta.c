/* delta.c — the sender's cache of last-sent pages for PAGE_DELTA (see delta.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <xxhash.h>

#include "replication/delta.h"

#define PAGE 4096u
#define WORDS (PAGE / 8)

struct sr_delta {
	uint64_t nslots;
	uint64_t *tag; /* page index + 1; 0 = empty */
	uint8_t *data; /* nslots pages, mapped lazily */
	struct sr_delta_stats st;
};

int sr_delta_new(struct sr_delta **out, uint64_t bytes)
{
	struct sr_delta *d;

	*out = NULL;
	if (bytes > SR_DELTA_MAX)
		bytes = SR_DELTA_MAX;
	if (bytes < PAGE)
		bytes = PAGE;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->nslots = bytes / PAGE;
	d->tag = calloc(d->nslots, sizeof(*d->tag));
	d->data = mmap(NULL, d->nslots * PAGE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (!d->tag || d->data == MAP_FAILED) {
		if (d->data == MAP_FAILED)
			d->data = NULL;
		sr_delta_free(d);
		return -ENOMEM;
	}
	d->st.slots = d->nslots;
	d->st.bytes = d->nslots * PAGE;
	*out = d;
	return 0;
}

void sr_delta_free(struct sr_delta *d)
{
	if (!d)
		return;
	if (d->data)
		munmap(d->data, d->nslots * PAGE);
	free(d->tag);
	free(d);
}

void sr_delta_reset(struct sr_delta *d)
{
	memset(d->tag, 0, d->nslots * sizeof(*d->tag));
}

void sr_delta_get_stats(const struct sr_delta *d, struct sr_delta_stats *out)
{
	*out = d->st;
}

const void *sr_delta_lookup(const struct sr_delta *d, uint64_t idx)
{
	uint64_t s = idx % d->nslots;

	return d->tag[s] == idx + 1 ? d->data + s * PAGE : NULL;
}

void sr_delta_forget(struct sr_delta *d, uint64_t idx)
{
	uint64_t s = idx % d->nslots;

	if (d->tag[s] == idx + 1)
		d->tag[s] = 0;
}

void sr_delta_forget_range(struct sr_delta *d, uint64_t first, uint64_t count)
{
	if (count >= d->nslots) {
		for (uint64_t s = 0; s < d->nslots; s++)
			if (d->tag[s] && d->tag[s] - 1 >= first && d->tag[s] - 1 - first < count)
				d->tag[s] = 0;
		return;
	}
	for (uint64_t i = 0; i < count; i++)
		sr_delta_forget(d, first + i);
}

void sr_delta_xor(void *dst, const void *src)
{
	uint64_t *a = dst;
	const uint64_t *b = src;

	for (unsigned i = 0; i < WORDS; i++)
		a[i] ^= b[i];
}

enum sr_delta_kind sr_delta_encode(struct sr_delta *d, uint64_t idx, const void *page, void *xor_out,
				   uint64_t *base_hash)
{
	uint64_t s = idx % d->nslots, *base = (uint64_t *)(d->data + s * PAGE), *x = xor_out;
	const uint64_t *p = page;
	unsigned changed = 0, zp = 0;

	if (d->tag[s] != idx + 1) {
		if (d->tag[s])
			d->st.evictions++;
		d->st.misses++;
		d->tag[s] = idx + 1;
		memcpy(base, page, PAGE);
		return SR_DELTA_MISS;
	}
	d->st.hits++;
	for (unsigned i = 0; i < WORDS; i++) {
		x[i] = p[i] ^ base[i];
		changed += x[i] != 0;
		zp += p[i] == 0;
	}
	if (!changed) {
		d->st.unchanged++;
		return SR_DELTA_UNCHANGED;
	}
	/* Pays only when the XOR is sparser than the page itself (a mostly-zero page compresses as well
	 * on its own) and sparse enough to compress well. */
	if (changed > SR_DELTA_DENSE_WORDS || WORDS - changed <= zp) {
		d->st.dense++;
		memcpy(base, page, PAGE);
		return SR_DELTA_DENSE;
	}
	*base_hash = XXH3_64bits(base, PAGE);
	memcpy(base, page, PAGE);
	d->st.delta_pages++;
	return SR_DELTA_XOR;
}

void sr_delta_account(struct sr_delta *d, uint64_t payload_bytes)
{
	d->st.delta_bytes += payload_bytes;
}
