/* kv.c — work=kv: the key-value service of tools/kv (UDP port 7777) with its whole state in guest RAM. */
#include "net.h"

/*
 * Protocol (see tools/kv/kv_proto.h): request "ID CMD KEY [VALUE]", CMD SET|GET|INCR, reply
 * "ID OK VALUE" | "ID ERR REASON". Retries: (client ip, port, ID) -> reply is remembered for the
 * last KV_CACHE requests and a retried ID gets the stored reply without being applied again.
 * Datagrams whose ID cannot be parsed (or longer than KV_DGRAM_MAX) are dropped.
 */

#define KV_PORT 7777
#define KV_KEY_MAX 32
#define KV_VAL_MAX 64
#define KV_DGRAM_MAX 256
#define KV_SLOTS 4096 /* store: open addressing, linear probing, no deletion */
#define KV_CACHE 1024 /* retry cache ring */
#define KV_CBUCKETS 2048
#define KV_NIL 0xffff
#define KV_REPLY_MAX (20 + 5 + KV_VAL_MAX + 2)

struct kv_ent {
	uint8_t klen, vlen;
	char key[KV_KEY_MAX];
	char val[KV_VAL_MAX];
};

struct kv_cent {
	uint32_t ip;
	uint16_t port;
	uint16_t next; /* bucket chain, KV_NIL ends */
	uint64_t id;
	uint8_t len;
	bool used;
	char reply[KV_REPLY_MAX];
};

static struct {
	uint64_t ops, retries, errs, drops;
	uint32_t nkeys;
	uint16_t chead;
	struct kv_ent store[KV_SLOTS];
	uint16_t buckets[KV_CBUCKETS];
	struct kv_cent cache[KV_CACHE];
} kv;

static uint32_t hash_bytes(const char *s, size_t len)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < len; i++)
		h = (h ^ (uint8_t)s[i]) * 16777619u;
	return h;
}

static uint32_t hash_client(uint32_t ip, uint16_t port, uint64_t id)
{
	uint64_t x = id ^ ((uint64_t)ip << 16) ^ port;

	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return (uint32_t)x;
}

/* ---- parsing (mirrors tools/kv/kv_proto.c) --------------------------------------------------- */

static int dec_u64(const char *s, size_t len, uint64_t *out)
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

static int dec_i64(const char *s, size_t len, int64_t *out)
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

static bool key_valid(const char *s, size_t len)
{
	if (len < 1 || len > KV_KEY_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == '-'))
			return false;
	}
	return true;
}

static bool value_valid(const char *s, size_t len)
{
	if (len < 1 || len > KV_VAL_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (s[i] <= ' ' || s[i] > '~')
			return false;
	return true;
}

/* Split into at most 4 space-separated non-empty fields (one optional trailing \n or \r\n).
 * Returns the count or -1. */
static int split_fields(const char *buf, size_t len, const char **f, size_t *fl)
{
	int n = 0;
	size_t start = 0;

	if (len && buf[len - 1] == '\n')
		len--;
	if (len && buf[len - 1] == '\r')
		len--;
	if (len == 0)
		return -1;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && buf[i] != ' ')
			continue;
		if (i == start || n == 4)
			return -1;
		f[n] = buf + start;
		fl[n] = i - start;
		n++;
		start = i + 1;
	}
	return n;
}

/* ---- formatting ------------------------------------------------------------------------------ */

static size_t fmt_u64(char *o, uint64_t v)
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

static size_t fmt_i64(char *o, int64_t v)
{
	if (v < 0) {
		o[0] = '-';
		return 1 + fmt_u64(o + 1, (uint64_t)0 - (uint64_t)v);
	}
	return fmt_u64(o, (uint64_t)v);
}

/* "ID OK text" / "ID ERR text" into o (KV_REPLY_MAX bytes); returns the length. */
static size_t fmt_reply(char *o, uint64_t id, bool ok, const char *text, size_t tlen)
{
	size_t n = fmt_u64(o, id);

	if (tlen > KV_VAL_MAX)
		tlen = KV_VAL_MAX;
	memcpy(o + n, ok ? " OK " : " ERR ", ok ? 4 : 5);
	n += ok ? 4 : 5;
	memcpy(o + n, text, tlen);
	return n + tlen;
}

/* ---- store ----------------------------------------------------------------------------------- */

/* Find key; with create, insert it (empty value) if missing. NULL if missing/full. */
static struct kv_ent *store_find(const char *key, size_t klen, bool create)
{
	uint32_t h = hash_bytes(key, klen) & (KV_SLOTS - 1);

	for (uint32_t i = 0; i < KV_SLOTS; i++) {
		struct kv_ent *e = &kv.store[(h + i) & (KV_SLOTS - 1)];

		if (e->klen == 0) {
			if (!create || kv.nkeys >= KV_SLOTS - 1)
				return NULL;
			e->klen = (uint8_t)klen;
			memcpy(e->key, key, klen);
			e->vlen = 0;
			kv.nkeys++;
			return e;
		}
		if (e->klen == klen && !memcmp(e->key, key, klen))
			return e;
	}
	return NULL;
}

/* Apply a parsed request; writes the reply text to text (KV_VAL_MAX) and returns its length. */
static size_t apply(unsigned cmd, const char *key, size_t klen, const char *val, size_t vlen, bool *ok,
		    char *text)
{
	struct kv_ent *e;
	int64_t v = 0;

	*ok = false;
	switch (cmd) {
	case 0: /* SET */
		if (!(e = store_find(key, klen, true)))
			goto full;
		memcpy(e->val, val, vlen);
		e->vlen = (uint8_t)vlen;
		break;
	case 1: /* GET */
		if (!(e = store_find(key, klen, false))) {
			memcpy(text, "nokey", 5);
			return 5;
		}
		break;
	default: /* INCR */
		e = store_find(key, klen, false);
		if (e && dec_i64(e->val, e->vlen, &v)) {
			memcpy(text, "notint", 6);
			return 6;
		}
		if (v == INT64_MAX) {
			memcpy(text, "overflow", 8);
			return 8;
		}
		if (!e && !(e = store_find(key, klen, true)))
			goto full;
		e->vlen = (uint8_t)fmt_i64(e->val, v + 1);
		break;
	}
	*ok = true;
	memcpy(text, e->val, e->vlen);
	return e->vlen;
full:
	memcpy(text, "full", 4);
	return 4;
}

/* ---- retry cache ----------------------------------------------------------------------------- */

static struct kv_cent *cache_lookup(uint32_t ip, uint16_t port, uint64_t id)
{
	uint16_t i = kv.buckets[hash_client(ip, port, id) & (KV_CBUCKETS - 1)];

	for (unsigned hops = 0; i != KV_NIL && hops < KV_CACHE; hops++) {
		struct kv_cent *c = &kv.cache[i];

		if (c->id == id && c->ip == ip && c->port == port)
			return c;
		i = c->next;
	}
	return NULL;
}

static void cache_insert(uint32_t ip, uint16_t port, uint64_t id, const char *reply, size_t len)
{
	uint16_t idx = kv.chead;
	struct kv_cent *c = &kv.cache[idx];
	uint16_t *b;

	kv.chead = (uint16_t)((idx + 1) % KV_CACHE);
	if (c->used) { /* evict the oldest: unlink it from its chain */
		uint16_t *pp = &kv.buckets[hash_client(c->ip, c->port, c->id) & (KV_CBUCKETS - 1)];

		for (unsigned hops = 0; *pp != KV_NIL && hops < KV_CACHE; hops++) {
			if (*pp == idx) {
				*pp = c->next;
				break;
			}
			pp = &kv.cache[*pp].next;
		}
	}
	c->ip = ip;
	c->port = port;
	c->id = id;
	c->len = (uint8_t)len;
	c->used = true;
	memcpy(c->reply, reply, len);
	b = &kv.buckets[hash_client(ip, port, id) & (KV_CBUCKETS - 1)];
	c->next = *b;
	*b = idx;
}

/* ---- the service ------------------------------------------------------------------------------- */

static void kv_handle(const struct udp_rx *d)
{
	static const char *const cmds[3] = {"SET", "GET", "INCR"};
	const char *buf = (const char *)d->data, *f[4], *reason = NULL;
	char reply[KV_REPLY_MAX], text[KV_VAL_MAX];
	size_t fl[4], i = 0, tlen, len = d->len;
	unsigned cmd = 3;
	struct kv_cent *c;
	uint64_t id;
	bool ok = false;
	int n;

	if (len > KV_DGRAM_MAX) {
		kv.drops++;
		return;
	}
	while (i < len && buf[i] != ' ')
		i++;
	if (i >= len || dec_u64(buf, i, &id)) {
		kv.drops++;
		return;
	}
	if ((c = cache_lookup(d->src_ip, d->src_port, id))) {
		kv.retries++;
		net_udp_reply(d, c->reply, c->len);
		return;
	}
	n = split_fields(buf, len, f, fl);
	if (n < 3) {
		reason = "args";
	} else {
		for (unsigned k = 0; k < 3; k++)
			if (strlen(cmds[k]) == fl[1] && !memcmp(cmds[k], f[1], fl[1]))
				cmd = k;
		if (cmd == 3)
			reason = "badcmd";
		else if (!key_valid(f[2], fl[2]))
			reason = "badkey";
		else if ((cmd == 0) != (n == 4))
			reason = "args";
		else if (n == 4 && !value_valid(f[3], fl[3]))
			reason = "badvalue";
	}
	if (reason) {
		tlen = strlen(reason);
		memcpy(text, reason, tlen);
		kv.errs++;
	} else {
		tlen = apply(cmd, f[2], fl[2], n == 4 ? f[3] : NULL, n == 4 ? fl[3] : 0, &ok, text);
		if (!ok)
			kv.errs++;
	}
	kv.ops++;
	len = fmt_reply(reply, id, ok, text, tlen);
	cache_insert(d->src_ip, d->src_port, id, reply, len);
	net_udp_reply(d, reply, len);
}

int work_kv(void)
{
	const uint8_t *m;
	uint64_t next, ip;
	bool print = cmdline_get("pi") != NULL;
	unsigned iter = 0;

	for (unsigned b = 0; b < KV_CBUCKETS; b++)
		kv.buckets[b] = KV_NIL;
	if (net_init(KV_PORT, kv_handle))
		return GUEST_EXIT_USAGE;
	m = net_mac();
	ip = net_ip();
	printf("kv: serving on %lu.%lu.%lu.%lu:%u mac=%02x:%02x:%02x:%02x:%02x:%02x\n", ip >> 24,
	       (ip >> 16) & 255, (ip >> 8) & 255, ip & 255, KV_PORT, m[0], m[1], m[2], m[3], m[4], m[5]);
	next = now_ns() + guest_pi_ns;
	for (;;) {
		uint64_t t;

		if (!net_poll(64))
			cpu_relax();
		if (++iter & 63) /* the clock only every 64 polls: keep the hot loop short */
			continue;
		t = now_ns();
		if (print && t >= next) {
			printf("kv: ops=%lu keys=%u\n", kv.ops, kv.nkeys);
			next += guest_pi_ns;
			if (next <= t)
				next = t + guest_pi_ns;
		}
		if (time_up(t))
			return GUEST_EXIT_OK;
	}
}
