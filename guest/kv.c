/* kv.c — work=kv: the key-value service of tools/kv (UDP port 7777) with its whole state in guest RAM. */
#include "blk.h"
#include "store.h"
#include "tcp.h"

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
#define KV_CACHE 1024 /* retry cache ring */
#define KV_CBUCKETS 2048
#define KV_NIL 0xffff
#define KV_REPLY_MAX (20 + 5 + KV_VAL_MAX + 2 + 24) /* + " ~TSC" (nondet) */

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
	uint64_t nondet, replies; /* nondet=N: every Nth reply carries the TSC */
	uint16_t chead;
	uint16_t buckets[KV_CBUCKETS];
	struct kv_cent cache[KV_CACHE];
} kv;

static uint32_t hash_client(uint32_t ip, uint16_t port, uint64_t id)
{
	uint64_t x = id ^ ((uint64_t)ip << 16) ^ port;

	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return (uint32_t)x;
}

/* ---- parsing (mirrors tools/kv/kv_proto.c) --------------------------------------------------- */

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

bool kv_nondet(void)
{
	return kv.nondet && ++kv.replies % kv.nondet == 0;
}

/* ---- store ----------------------------------------------------------------------------------- */

/* Apply a parsed request; writes the reply text to text (KV_VAL_MAX) and returns its length. */
static size_t apply(unsigned cmd, const char *key, size_t klen, const char *val, size_t vlen, bool *ok,
		    char *text)
{
	const struct kvs_ent *e;
	int64_t v;
	int rc;

	*ok = false;
	switch (cmd) {
	case 0: /* SET */
		rc = kvs_set(key, klen, val, vlen);
		if (rc == KVS_OK) {
			*ok = true;
			memcpy(text, val, vlen);
			return vlen;
		}
		break;
	case 1: /* GET */
		if (!(e = kvs_get(key, klen))) {
			memcpy(text, "nokey", 5);
			return 5;
		}
		*ok = true;
		memcpy(text, e->val, e->vlen);
		return e->vlen;
	default: /* INCR */
		rc = kvs_incr(key, klen, 1, &v);
		if (rc == KVS_OK) {
			*ok = true;
			return fmt_i64(text, v);
		}
		break;
	}
	if (rc == KVS_NOTINT) {
		memcpy(text, "notint", 6);
		return 6;
	}
	if (rc == KVS_OVERFLOW) {
		memcpy(text, "overflow", 8);
		return 8;
	}
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
	if (kv_nondet()) { /* "ID OK VALUE ~TSC": a value the other copy of the VM never has */
		memcpy(reply + len, " ~", 2);
		len += 2 + fmt_u64(reply + len + 2, rdtsc());
	}
	cache_insert(d->src_ip, d->src_port, id, reply, len);
	net_udp_reply(d, reply, len);
}

/* work=kv, and work=kv,disk: the disk oracle (work_disk.c) steps between network polls. */
static int kv_main(bool disk)
{
	const uint8_t *m;
	uint64_t next, ip;
	bool print = cmdline_get("pi") != NULL;
	unsigned iter = 0;

	for (unsigned b = 0; b < KV_CBUCKETS; b++)
		kv.buckets[b] = KV_NIL;
	if (cmdline_get("nondet") && (parse_u64(cmdline_get("nondet"), &kv.nondet) || kv.nondet > 1000000)) {
		printf("kv: bad nondet=%s (a reply count, 0..1000000)\n", cmdline_get("nondet"));
		return GUEST_EXIT_USAGE;
	}
	if (disk) {
		int rc = disk_init();
		if (rc)
			return rc;
	}
	tcp_init();
	tcp_listen(6379, resp_serve);
	tcp_listen(80, http_serve);
	if (net_init(KV_PORT, kv_handle))
		return GUEST_EXIT_USAGE;
	m = net_mac();
	ip = net_ip();
	printf("kv: serving on %lu.%lu.%lu.%lu:%u mac=%02x:%02x:%02x:%02x:%02x:%02x\n", ip >> 24,
	       (ip >> 16) & 255, (ip >> 8) & 255, ip & 255, KV_PORT, m[0], m[1], m[2], m[3], m[4], m[5]);
	if (kv.nondet)
		printf("kv: nondet=%lu: every %luth reply carries the TSC\n", kv.nondet, kv.nondet);
	printf("kv: tcp resp=6379 http=80 isn=%s ip6=%s\n",
	       cmdline_get("isn") && !strcmp(cmdline_get("isn"), "fixed") ? "fixed" : "random",
	       net6_enabled() ? cmdline_get("ip6") : "off");
	next = now_ns() + guest_pi_ns;
	for (;;) {
		uint64_t t, at;
		bool busy = net_poll(64) != 0;

		if (disk) { /* one batch of records (+ a verify chunk) per poll: never idle */
			disk_step();
			busy = true;
		} else if (busy && (++iter & 63)) { /* busy: the clock every 64 polls, a short hot loop */
			continue;
		}
		t = now_ns();
		if (disk && t >= disk_next_print())
			disk_print(t);
		if (busy)
			idle_busy(t);
		tcp_timers(t);
		if (print && t >= next) {
			struct tcp_stats ts;

			tcp_get_stats(&ts);
			printf("kv: ops=%lu keys=%u tcp=%lu/%lu bad=%lu ooo=%lu rexmit=%lu\n", kv.ops,
			       kvs_count(), ts.active, ts.conns, ts.rx_bad, ts.rx_ooo, ts.retrans);
			next += guest_pi_ns;
			if (next <= t)
				next = t + guest_pi_ns;
		}
		if (time_up(t)) {
			if (disk)
				disk_final();
			return GUEST_EXIT_OK;
		}
		if (busy)
			continue;
		/* nothing arrived: sleep until a frame, the next TCP timer, print or secs= */
		at = tcp_next_timer();
		if (print && next < at)
			at = next;
		if (time_limit_ns() < at)
			at = time_limit_ns();
		idle_until(t, at);
	}
}

int work_kv(void)
{
	return kv_main(false);
}

int work_kv_disk(void)
{
	return kv_main(true);
}
