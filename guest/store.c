/* store.c — the key-value store behind every guest service: a hash table in guest RAM. */
#include "store.h"

/*
 * Keys and values live in .bss (inside the snapshot and every checkpoint), so a replica or
 * migrated guest that missed a page answers with a wrong value.
 */
static struct {
	uint32_t nkeys;
	struct kvs_ent slot[KVS_SLOTS];
} st;

static uint32_t hash_bytes(const char *s, size_t len)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < len; i++)
		h = (h ^ (uint8_t)s[i]) * 16777619u;
	return h;
}

int dec_u64(const char *s, size_t len, uint64_t *out)
{
	uint64_t v = 0;

	if (len == 0 || len > 20)
		return -1;
	for (size_t i = 0; i < len; i++) {
		unsigned d;

		if (s[i] < '0' || s[i] > '9')
			return -1;
		d = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

int dec_i64(const char *s, size_t len, int64_t *out)
{
	bool neg = len > 0 && s[0] == '-';
	uint64_t mag;

	if (dec_u64(s + neg, len - neg, &mag))
		return -1;
	if (neg) {
		if (mag > (uint64_t)INT64_MAX + 1)
			return -1;
		*out = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
	} else {
		if (mag > (uint64_t)INT64_MAX)
			return -1;
		*out = (int64_t)mag;
	}
	return 0;
}

size_t fmt_u64(char *o, uint64_t v)
{
	char t[20];
	size_t n = 0, i;

	do {
		t[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (i = 0; i < n; i++)
		o[i] = t[n - 1 - i];
	return n;
}

size_t fmt_i64(char *o, int64_t v)
{
	if (v < 0) {
		o[0] = '-';
		return 1 + fmt_u64(o + 1, (uint64_t)0 - (uint64_t)v);
	}
	return fmt_u64(o, (uint64_t)v);
}

/* The slot holding key, or with create the empty slot where it goes; NULL if missing / full. */
static struct kvs_ent *find(const char *key, size_t klen, bool create)
{
	uint32_t h = hash_bytes(key, klen) & (KVS_SLOTS - 1);

	for (uint32_t i = 0; i < KVS_SLOTS; i++) {
		struct kvs_ent *e = &st.slot[(h + i) & (KVS_SLOTS - 1)];

		if (e->klen == 0) {
			if (!create || st.nkeys >= KVS_SLOTS - 1)
				return NULL;
			e->klen = (uint8_t)klen;
			memcpy(e->key, key, klen);
			e->vlen = 0;
			st.nkeys++;
			return e;
		}
		if (e->klen == klen && !memcmp(e->key, key, klen))
			return e;
	}
	return NULL;
}

const struct kvs_ent *kvs_get(const char *key, size_t klen)
{
	if (klen < 1 || klen > KVS_KEY_MAX)
		return NULL;
	return find(key, klen, false);
}

int kvs_set(const char *key, size_t klen, const char *val, size_t vlen)
{
	struct kvs_ent *e;

	if (klen < 1 || klen > KVS_KEY_MAX)
		return KVS_BADKEY;
	if (vlen > KVS_VAL_MAX)
		return KVS_TOOLONG;
	if (!(e = find(key, klen, true)))
		return KVS_FULL;
	memcpy(e->val, val, vlen);
	e->vlen = (uint8_t)vlen;
	return KVS_OK;
}

int kvs_incr(const char *key, size_t klen, int64_t by, int64_t *out)
{
	struct kvs_ent *e;
	int64_t v = 0;

	if (klen < 1 || klen > KVS_KEY_MAX)
		return KVS_BADKEY;
	e = find(key, klen, false);
	if (e && dec_i64(e->val, e->vlen, &v))
		return KVS_NOTINT;
	if ((by > 0 && v > INT64_MAX - by) || (by < 0 && v < INT64_MIN - by))
		return KVS_OVERFLOW;
	if (!e && !(e = find(key, klen, true)))
		return KVS_FULL;
	v += by;
	e->vlen = (uint8_t)fmt_i64(e->val, v);
	*out = v;
	return KVS_OK;
}

bool kvs_del(const char *key, size_t klen)
{
	struct kvs_ent *e;
	uint32_t i, j;

	if (klen < 1 || klen > KVS_KEY_MAX || !(e = find(key, klen, false)))
		return false;
	i = (uint32_t)(e - st.slot);
	for (j = (i + 1) & (KVS_SLOTS - 1); st.slot[j].klen; j = (j + 1) & (KVS_SLOTS - 1)) {
		uint32_t k = hash_bytes(st.slot[j].key, st.slot[j].klen) & (KVS_SLOTS - 1);

		/* move j back into the hole at i unless its home k lies cyclically in (i, j] */
		if (i <= j ? (k <= i || k > j) : (k <= i && k > j)) {
			st.slot[i] = st.slot[j];
			i = j;
		}
	}
	st.slot[i].klen = 0;
	st.nkeys--;
	return true;
}

uint32_t kvs_count(void)
{
	return st.nkeys;
}

void kvs_flush(void)
{
	for (uint32_t i = 0; i < KVS_SLOTS; i++)
		st.slot[i].klen = 0;
	st.nkeys = 0;
}
