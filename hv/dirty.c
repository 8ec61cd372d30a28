/* dirty.c — dirty-page bitmap helpers shared by every dirty-log user (count, fill, iterate). */
#include <stdint.h>
#include <string.h>

#include "hv/dirty.h"

uint64_t dirty_bitmap_count(const uint64_t *bm, uint64_t nr)
{
	uint64_t n = 0, full = nr / 64;

	for (uint64_t w = 0; w < full; w++)
		n += (uint64_t)__builtin_popcountll(bm[w]);
	if (nr % 64)
		n += (uint64_t)__builtin_popcountll(bm[full] & ((1ull << (nr % 64)) - 1));
	return n;
}

void dirty_bitmap_fill(uint64_t *bm, uint64_t nr)
{
	size_t words = dirty_bitmap_words(nr);

	if (!words)
		return;
	memset(bm, 0xff, words * sizeof(uint64_t));
	if (nr % 64)
		bm[words - 1] = (1ull << (nr % 64)) - 1;
}

uint64_t dirty_next(const uint64_t *bm, uint64_t nr, uint64_t *pos)
{
	uint64_t w, word, bit;
	size_t words = dirty_bitmap_words(nr);

	if (*pos >= nr)
		return UINT64_MAX;
	w = *pos / 64;
	word = bm[w] & (~0ull << (*pos % 64));
	while (!word) {
		if (++w >= words) {
			*pos = nr;
			return UINT64_MAX;
		}
		word = bm[w];
	}
	bit = w * 64 + (uint64_t)__builtin_ctzll(word);
	if (bit >= nr) {
		*pos = nr;
		return UINT64_MAX;
	}
	*pos = bit + 1;
	return bit;
}

int dirty_for_each(const uint64_t *bm, uint64_t nr, dirty_page_fn cb, void *opaque)
{
	size_t words = dirty_bitmap_words(nr);

	for (size_t w = 0; w < words; w++) {
		uint64_t word = bm[w];
		if (w == words - 1 && nr % 64)
			word &= (1ull << (nr % 64)) - 1;
		while (word) {
			int rc = cb((uint64_t)w * 64 + (uint64_t)__builtin_ctzll(word), opaque);
			if (rc)
				return rc;
			word &= word - 1;
		}
	}
	return 0;
}
