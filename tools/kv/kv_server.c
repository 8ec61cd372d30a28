/* kv_server.c — the reference key-value server (doppel-kv --serve): store + idempotent retry cache. */
#include "tools/kv/kv.h"
#include "common/errf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define STORE_SLOTS 16384 /* open addressing, power of two */
#define STORE_MAX (STORE_SLOTS * 3 / 4)
#define CACHE_CAP 8192 /* remembered replies, FIFO eviction */
#define CACHE_BUCKETS 16384

struct store_ent {
	bool used;
	char key[KV_KEY_MAX + 1];
	char val[KV_VAL_MAX + 1];
};

/* A client address reduced to comparable bytes (IPv4 kept as v4-mapped IPv6). */
struct client_key {
	uint8_t addr[16];
	uint16_t port;
	uint64_t id;
};

struct cache_ent {
	bool used;
	struct client_key k;
	int32_t next; /* bucket chain, -1 = end */
	uint8_t len;
	char reply[KV_DGRAM_MAX];
};

struct kv_server {
	int fd;
	char addr[INET6_ADDRSTRLEN + 10];
	unsigned nkeys;
	struct store_ent *store; /* STORE_SLOTS */
	struct cache_ent *cache; /* CACHE_CAP */
	int32_t *buckets; /* CACHE_BUCKETS */
	uint32_t cache_head; /* next ring slot to (re)use */
	uint64_t nreq, nretry, ndrop;
};

static uint64_t hash_bytes(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 1099511628211ull;
	}
	return h;
}

static struct store_ent *store_find(struct kv_server *s, const char *key, bool create)
{
	uint64_t h = hash_bytes(key, strlen(key));

	for (unsigned i = 0; i < STORE_SLOTS; i++) {
		struct store_ent *e = &s->store[(h + i) & (STORE_SLOTS - 1)];

		if (e->used && !strcmp(e->key, key))
			return e;
		if (!e->used) {
			if (!create || s->nkeys >= STORE_MAX)
				return NULL;
			e->used = true;
			strcpy(e->key, key); /* validated: <= KV_KEY_MAX */
			e->val[0] = '\0';
			s->nkeys++;
			return e;
		}
	}
	return NULL;
}

static bool client_key_of(const struct sockaddr *sa, socklen_t len, uint64_t id, struct client_key *k)
{
	memset(k, 0, sizeof(*k));
	k->id = id;
	if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *in = (const void *)sa;

		k->addr[10] = k->addr[11] = 0xff;
		memcpy(k->addr + 12, &in->sin_addr, 4);
		k->port = in->sin_port;
		return true;
	}
	if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *in6 = (const void *)sa;

		memcpy(k->addr, &in6->sin6_addr, 16);
		k->port = in6->sin6_port;
		return true;
	}
	return false;
}

static uint32_t bucket_of(const struct client_key *k)
{
	uint64_t h = hash_bytes(k->addr, 16) ^ (k->port * 0x9e3779b97f4a7c15ull);

	h ^= k->id * 0xc2b2ae3d27d4eb4full;
	h ^= h >> 29;
	return (uint32_t)(h & (CACHE_BUCKETS - 1));
}

static bool key_eq(const struct client_key *a, const struct client_key *b)
{
	return a->id == b->id && a->port == b->port && !memcmp(a->addr, b->addr, 16);
}

static struct cache_ent *cache_lookup(struct kv_server *s, const struct client_key *k)
{
	for (int32_t i = s->buckets[bucket_of(k)]; i >= 0; i = s->cache[i].next)
		if (key_eq(&s->cache[i].k, k))
			return &s->cache[i];
	return NULL;
}

static void cache_insert(struct kv_server *s, const struct client_key *k, const char *reply, size_t len)
{
	int32_t idx = (int32_t)s->cache_head;
	struct cache_ent *e = &s->cache[idx];
	uint32_t b;

	s->cache_head = (s->cache_head + 1) % CACHE_CAP;
	if (e->used) { /* evict the oldest entry: unlink it from its chain */
		int32_t *pp = &s->buckets[bucket_of(&e->k)];

		while (*pp >= 0 && *pp != idx)
			pp = &s->cache[*pp].next;
		if (*pp == idx)
			*pp = e->next;
	}
	b = bucket_of(k);
	e->used = true;
	e->k = *k;
	e->len = (uint8_t)len;
	memcpy(e->reply, reply, len);
	e->next = s->buckets[b];
	s->buckets[b] = idx;
}

/* Apply a valid request; fill ok/text. */
static void apply(struct kv_server *s, const struct kv_req *req, bool *ok, char *text, size_t cap)
{
	struct store_ent *e;
	int64_t v = 0;

	*ok = false;
	switch (req->cmd) {
	case KV_GET:
		e = store_find(s, req->key, false);
		if (!e) {
			snprintf(text, cap, "nokey");
			return;
		}
		snprintf(text, cap, "%s", e->val);
		break;
	case KV_SET:
		e = store_find(s, req->key, true);
		if (!e) {
			snprintf(text, cap, "full");
			return;
		}
		snprintf(e->val, sizeof(e->val), "%s", req->val);
		snprintf(text, cap, "%s", e->val);
		break;
	case KV_INCR:
		e = store_find(s, req->key, false);
		if (e && kv_parse_i64(e->val, strlen(e->val), &v)) {
			snprintf(text, cap, "notint");
			return;
		}
		if (v == INT64_MAX) {
			snprintf(text, cap, "overflow");
			return;
		}
		if (!e)
			e = store_find(s, req->key, true);
		if (!e) {
			snprintf(text, cap, "full");
			return;
		}
		snprintf(e->val, sizeof(e->val), "%lld", (long long)(v + 1));
		snprintf(text, cap, "%s", e->val);
		break;
	}
	*ok = true;
}

size_t kv_server_handle(struct kv_server *s, const struct sockaddr *from, socklen_t fromlen, const char *buf,
			size_t len, char *out, size_t cap)
{
	struct kv_req req;
	struct client_key k;
	struct cache_ent *c;
	const char *reason = NULL;
	bool id_valid, ok;
	char text[KV_VAL_MAX + 1];
	int n;

	s->nreq++;
	if (kv_parse_request(buf, len, &req, &id_valid, &reason) && !id_valid) {
		s->ndrop++;
		return 0;
	}
	if (!client_key_of(from, fromlen, req.id, &k)) {
		s->ndrop++;
		return 0;
	}
	c = cache_lookup(s, &k);
	if (c) {
		s->nretry++;
		if (c->len > cap)
			return 0;
		memcpy(out, c->reply, c->len);
		return c->len;
	}
	if (reason) {
		ok = false;
		snprintf(text, sizeof(text), "%s", reason);
	} else {
		apply(s, &req, &ok, text, sizeof(text));
	}
	n = kv_format_reply(out, cap, req.id, ok, text);
	if (n <= 0 || n > KV_DGRAM_MAX)
		return 0;
	cache_insert(s, &k, out, (size_t)n);
	return (size_t)n;
}

static int bind_socket(struct kv_server *s, const char *addrport, char *err, size_t errlen)
{
	char host[256], port[16];
	struct addrinfo hints = {.ai_socktype = SOCK_DGRAM, .ai_flags = AI_PASSIVE | AI_NUMERICHOST};
	struct addrinfo *res = NULL, *ai;
	bool port_only = addrport[0] != '\0' && strspn(addrport, "0123456789") == strlen(addrport);
	int rc, fd = -1, zero = 0, one = 1;

	if (port_only) {
		uint64_t pv;

		if (kv_parse_u64(addrport, strlen(addrport), &pv) || pv == 0 || pv > 65535)
			return errf(err, errlen, -EINVAL, "bad port '%s'", addrport);
		snprintf(port, sizeof(port), "%u", (unsigned)pv);
	} else if (kv_split_hostport(addrport, host, sizeof(host), port, sizeof(port))) {
		return errf(err, errlen, -EINVAL, "bad listen address '%s' (want [ADDR:]PORT)", addrport);
	}
	if (port_only) {
		/* [::] dual-stack, falling back to 0.0.0.0 */
		struct sockaddr_in6 a6 = {.sin6_family = AF_INET6,
					  .sin6_addr = in6addr_any,
					  .sin6_port = htons((uint16_t)atoi(port))};
		struct sockaddr_in a4 = {.sin_family = AF_INET,
					 .sin_addr.s_addr = htonl(INADDR_ANY),
					 .sin_port = a6.sin6_port};

		fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (fd >= 0) {
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
			if (bind(fd, (struct sockaddr *)&a6, sizeof(a6)) == 0)
				goto bound;
			close(fd);
		}
		fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (fd < 0 || bind(fd, (struct sockaddr *)&a4, sizeof(a4))) {
			rc = errf(err, errlen, -errno, "bind port %s: %s", port, strerror(errno));
			goto err;
		}
		goto bound;
	}
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc)
		return errf(err, errlen, -EINVAL, "listen address '%s': %s", host, gai_strerror(rc));
	rc = -EADDRNOTAVAIL;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		rc = -errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return errf(err, errlen, rc, "bind %s: %s", addrport, strerror(-rc));
bound:
	s->fd = fd;
	{
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		char a[INET6_ADDRSTRLEN] = "?";

		if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
			if (ss.ss_family == AF_INET6) {
				struct sockaddr_in6 *p = (void *)&ss;

				inet_ntop(AF_INET6, &p->sin6_addr, a, sizeof(a));
				snprintf(s->addr, sizeof(s->addr), "[%s]:%u", a, ntohs(p->sin6_port));
			} else {
				struct sockaddr_in *p = (void *)&ss;

				inet_ntop(AF_INET, &p->sin_addr, a, sizeof(a));
				snprintf(s->addr, sizeof(s->addr), "%s:%u", a, ntohs(p->sin_port));
			}
		}
	}
	return 0;
err:
	if (fd >= 0)
		close(fd);
	return rc;
}

int kv_server_open(const char *addrport, struct kv_server **out, char *err, size_t errlen)
{
	struct kv_server *s;
	int rc;

	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (!s)
		goto enomem;
	s->fd = -1;
	s->store = calloc(STORE_SLOTS, sizeof(*s->store));
	s->cache = calloc(CACHE_CAP, sizeof(*s->cache));
	s->buckets = malloc(CACHE_BUCKETS * sizeof(*s->buckets));
	if (!s->store || !s->cache || !s->buckets)
		goto enomem;
	for (unsigned i = 0; i < CACHE_BUCKETS; i++)
		s->buckets[i] = -1;
	snprintf(s->addr, sizeof(s->addr), "(none)");
	if (addrport) {
		rc = bind_socket(s, addrport, err, errlen);
		if (rc)
			goto err;
	}
	*out = s;
	return 0;
enomem:
	rc = errf(err, errlen, -ENOMEM, "out of memory");
err:
	kv_server_close(s);
	return rc;
}

void kv_server_close(struct kv_server *s)
{
	if (!s)
		return;
	if (s->fd >= 0)
		close(s->fd);
	free(s->store);
	free(s->cache);
	free(s->buckets);
	free(s);
}

const char *kv_server_addr(const struct kv_server *s)
{
	return s->addr;
}

int kv_server_run(struct kv_server *s, bool verbose)
{
	sigset_t mask;
	int sfd, rc = 0;

	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	if (sigprocmask(SIG_BLOCK, &mask, NULL))
		return -errno;
	sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		return -errno;
	for (;;) {
		struct pollfd p[2] = {{.fd = s->fd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
		struct sockaddr_storage from;
		socklen_t fl = sizeof(from);
		char buf[KV_DGRAM_MAX + 2], out[KV_DGRAM_MAX];
		ssize_t n;
		size_t rl;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			break;
		}
		if (p[1].revents)
			break;
		/* one byte more than allowed so over-long datagrams are seen as such */
		n = recvfrom(s->fd, buf, sizeof(buf) - 1, MSG_DONTWAIT | MSG_TRUNC, (struct sockaddr *)&from,
			     &fl);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR || errno == ECONNREFUSED)
				continue;
			rc = -errno;
			break;
		}
		if ((size_t)n > sizeof(buf) - 1)
			n = sizeof(buf) - 1; /* truncated: still over KV_DGRAM_MAX -> "toolong" */
		rl = kv_server_handle(s, (struct sockaddr *)&from, fl, buf, (size_t)n, out, sizeof(out));
		if (verbose) {
			buf[n] = '\0';
			fprintf(stderr, "doppel-kv: <- %.*s -> %.*s\n", (int)n, buf, (int)rl, out);
		}
		if (rl)
			sendto(s->fd, out, rl, MSG_DONTWAIT, (struct sockaddr *)&from, fl);
	}
	fprintf(stderr,
		"doppel-kv: server stopping: %llu requests, %llu retries answered from cache, "
		"%llu dropped\n",
		(unsigned long long)s->nreq, (unsigned long long)s->nretry, (unsigned long long)s->ndrop);
	close(sfd);
	return rc;
}
