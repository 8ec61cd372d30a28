/* kv_client.c — doppel-kv client: one request with retries, and the paced load generator. */
#include "tools/kv/kv.h"
#include "common/clock.h"
#include "common/errf.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * Load mode pacing: request i (0-based) becomes due at start + i/rate. A due request is sent when
 * fewer than `window` requests are in flight (closed loop with at most W outstanding; when the
 * window is full, due requests wait and are sent back to back as acks free slots, so a stall does
 * not pile up more than W requests on the server). Every in-flight request is re-sent with the SAME
 * ID every timeout_ms until it is acknowledged or the run's deadline passes, so with an idempotent
 * server each acknowledged INCR was applied exactly once and unacknowledged ones at most once.
 *
 * An "ack" is any reply "ID OK VALUE", and also "ID ERR nokey" to a GET (a legitimate answer,
 * logged with value null). Other ERR replies are counted as errors (not acked, not retried).
 * Times in the log are CLOCK_MONOTONIC ns (comparable across processes and namespaces).
 * The longest stall is the longest interval without any ack while at least one request was in
 * flight (measured from the previous ack, or from the send that made the flight non-empty).
 */

enum op_state { OP_PENDING, OP_INFLIGHT, OP_ACKED, OP_ERROR };

struct op {
	uint64_t first_ns, last_ns, ack_ns;
	uint32_t tries;
	uint8_t state;
};

struct load {
	const struct kv_client_opts *o;
	int fd;
	uint64_t base, n;
	struct op *ops;
	uint64_t *slots; /* in-flight op indices, `window` entries, UINT64_MAX = free */
	unsigned inflight;
	uint64_t next; /* next op to send */
	uint64_t acked, errors;
	uint64_t start_ns, end_ns, progress_ns, max_stall_ns;
	bool have_last, last_is_int;
	int64_t last_int;
	char last_str[KV_VAL_MAX + 1];
	FILE *log;
};

int kv_connect(const char *target, char *err, size_t errlen)
{
	char host[256], port[16];
	struct addrinfo hints = {.ai_socktype = SOCK_DGRAM};
	struct addrinfo *res = NULL, *ai;
	int rc, fd = -1;

	if (kv_split_hostport(target, host, sizeof(host), port, sizeof(port)))
		return errf(err, errlen, -EINVAL, "bad target '%s' (want HOST[:PORT], [IPv6]:PORT)", target);
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc)
		return errf(err, errlen, -EINVAL, "resolve '%s': %s", host, gai_strerror(rc));
	rc = -EHOSTUNREACH;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0) {
			rc = -errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		rc = -errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return errf(err, errlen, rc, "connect %s: %s", target, strerror(-rc));
	return fd;
}

uint64_t kv_id_base(void)
{
	uint64_t x = now_ns() ^ ((uint64_t)getpid() << 40) ^ ((uint64_t)getpid() * 0x9e3779b97f4a7c15ull);

	x ^= x >> 31;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 29;
	return x >> 8; /* room for 2^56 IDs without wrapping */
}

/* Send a datagram; transient errors (server gone: ECONNREFUSED, buffers full) are ignored since
 * the request is retried anyway. */
static void send_req(int fd, const char *buf, size_t len)
{
	if (send(fd, buf, len, MSG_DONTWAIT) < 0 && errno != ECONNREFUSED && errno != EAGAIN &&
	    errno != ENOBUFS && errno != EHOSTUNREACH && errno != ENETUNREACH)
		fprintf(stderr, "doppel-kv: send: %s\n", strerror(errno));
}

/* Receive one reply; returns 1 with rep filled, 0 if none pending / garbage, -errno on hard error. */
static int recv_reply(int fd, struct kv_reply *rep)
{
	char buf[KV_DGRAM_MAX + 1];
	ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR || errno == ECONNREFUSED)
			return 0;
		return -errno;
	}
	if ((size_t)n > KV_DGRAM_MAX || kv_parse_reply(buf, (size_t)n, rep))
		return 0; /* malformed reply: ignored */
	return 1;
}

int kv_client_single(const struct kv_client_opts *o, enum kv_cmd cmd, const char *key, const char *value)
{
	struct kv_req req = {.id = kv_id_base(), .cmd = cmd};
	char err[300], buf[KV_DGRAM_MAX + 1];
	int fd, len, rc = 3;

	snprintf(req.key, sizeof(req.key), "%s", key);
	snprintf(req.val, sizeof(req.val), "%s", value ? value : "");
	len = kv_format_request(buf, sizeof(buf), &req);
	if (len < 0) {
		fprintf(stderr, "doppel-kv: invalid request (key 1..32 of [A-Za-z0-9_.-]; value 1..64 "
				"printable, no spaces, only with SET)\n");
		return 2;
	}
	fd = kv_connect(o->target, err, sizeof(err));
	if (fd < 0) {
		fprintf(stderr, "doppel-kv: %s\n", err);
		return 2;
	}
	for (unsigned t = 0; t <= o->retries && rc == 3; t++) {
		uint64_t until = now_ns() + (uint64_t)o->timeout_ms * 1000000ull;

		send_req(fd, buf, (size_t)len);
		for (;;) {
			struct pollfd p = {.fd = fd, .events = POLLIN};
			struct kv_reply rep;
			uint64_t now = now_ns();
			int r;

			if (now >= until)
				break;
			if (poll(&p, 1, (int)((until - now + 999999) / 1000000)) < 0 && errno != EINTR)
				break;
			r = recv_reply(fd, &rep);
			if (r < 0) {
				fprintf(stderr, "doppel-kv: recv: %s\n", strerror(-r));
				close(fd);
				return 2;
			}
			if (r == 0 || rep.id != req.id)
				continue;
			if (rep.ok) {
				printf("%s\n", rep.text);
				rc = 0;
			} else {
				fprintf(stderr, "%" PRIu64 " ERR %s\n", rep.id, rep.text);
				rc = 1;
			}
			break;
		}
	}
	if (rc == 3)
		fprintf(stderr, "doppel-kv: no reply from %s after %u tries of %u ms\n", o->target,
			o->retries + 1, o->timeout_ms);
	close(fd);
	return rc;
}

/* Build request i into buf. */
static int build_req(const struct load *l, uint64_t i, char *buf, size_t cap, struct kv_req *req)
{
	const struct kv_client_opts *o = l->o;

	memset(req, 0, sizeof(*req));
	req->id = l->base + i;
	req->cmd = o->cmd == KV_LOAD_MIX ? (enum kv_cmd)(i % 3) : (enum kv_cmd)o->cmd;
	if (o->keys > 1)
		snprintf(req->key, sizeof(req->key), "%s%" PRIu64, o->key, i % o->keys);
	else
		snprintf(req->key, sizeof(req->key), "%s", o->key);
	if (req->cmd == KV_SET)
		snprintf(req->val, sizeof(req->val), "%" PRIu64, i);
	return kv_format_request(buf, cap, req);
}

static void send_op(struct load *l, uint64_t i, uint64_t now)
{
	char buf[KV_DGRAM_MAX + 1];
	struct kv_req req;
	int len = build_req(l, i, buf, sizeof(buf), &req);

	if (len > 0)
		send_req(l->fd, buf, (size_t)len);
	l->ops[i].last_ns = now;
	l->ops[i].tries++;
}

static void log_ack(struct load *l, uint64_t i, const struct kv_reply *rep)
{
	struct json_object *j;
	struct kv_req req;
	char buf[KV_DGRAM_MAX + 1];
	int64_t v;

	build_req(l, i, buf, sizeof(buf), &req);
	if (rep->ok && req.cmd == KV_INCR && !kv_parse_i64(rep->text, strlen(rep->text), &v)) {
		if (!l->have_last || !l->last_is_int || v > l->last_int)
			l->last_int = v;
		l->last_is_int = true;
	} else if (rep->ok) {
		snprintf(l->last_str, sizeof(l->last_str), "%s", rep->text);
		l->last_is_int = false;
	}
	if (rep->ok)
		l->have_last = true;
	if (!l->log)
		return;
	j = json_object_new_object();
	json_object_object_add(j, "id", json_object_new_uint64(req.id));
	json_object_object_add(j, "cmd", json_object_new_string(kv_cmd_name(req.cmd)));
	json_object_object_add(j, "key", json_object_new_string(req.key));
	if (!rep->ok)
		json_object_object_add(j, "value", NULL);
	else if (req.cmd == KV_INCR && !kv_parse_i64(rep->text, strlen(rep->text), &v))
		json_object_object_add(j, "value", json_object_new_int64(v));
	else
		json_object_object_add(j, "value", json_object_new_string(rep->text));
	json_object_object_add(j, "sent_ns", json_object_new_uint64(l->ops[i].first_ns));
	json_object_object_add(j, "ack_ns", json_object_new_uint64(l->ops[i].ack_ns));
	json_object_object_add(j, "tries", json_object_new_int(l->ops[i].tries));
	fprintf(l->log, "%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
	json_object_put(j);
}

static void handle_reply(struct load *l, const struct kv_reply *rep, uint64_t now)
{
	uint64_t i = rep->id - l->base;
	struct op *op;
	bool nokey_get;

	if (rep->id < l->base || i >= l->next)
		return;
	op = &l->ops[i];
	if (op->state != OP_INFLIGHT)
		return; /* duplicate reply to a retry */
	nokey_get = !rep->ok && !strcmp(rep->text, "nokey") &&
		    (l->o->cmd == KV_LOAD_GET || (l->o->cmd == KV_LOAD_MIX && i % 3 == KV_GET));
	/* any reply to an outstanding request is progress */
	if (now - l->progress_ns > l->max_stall_ns)
		l->max_stall_ns = now - l->progress_ns;
	l->progress_ns = now;
	op->ack_ns = now;
	for (unsigned s = 0; s < l->o->window; s++) {
		if (l->slots[s] == i) {
			l->slots[s] = UINT64_MAX;
			break;
		}
	}
	l->inflight--;
	if (rep->ok || nokey_get) {
		op->state = OP_ACKED;
		l->acked++;
		log_ack(l, i, rep);
	} else {
		op->state = OP_ERROR;
		l->errors++;
		if (l->errors <= 5)
			fprintf(stderr, "doppel-kv: request %" PRIu64 ": ERR %s\n", rep->id, rep->text);
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void summarize(struct load *l)
{
	uint64_t *lat = malloc((l->acked ? l->acked : 1) * sizeof(*lat));
	uint64_t k = 0, p50 = 0, p99 = 0, max = 0, unacked = l->n - l->acked - l->errors;
	double secs = (double)(l->end_ns - l->start_ns) / 1e9;
	double ops = secs > 0 ? (double)l->acked / secs : 0;

	for (uint64_t i = 0; lat && i < l->n; i++)
		if (l->ops[i].state == OP_ACKED)
			lat[k++] = l->ops[i].ack_ns - l->ops[i].first_ns;
	if (k) {
		qsort(lat, k, sizeof(*lat), cmp_u64);
		p50 = lat[(k - 1) * 50 / 100];
		p99 = lat[(k - 1) * 99 / 100];
		max = lat[k - 1];
	}
	free(lat);
	if (l->o->json) {
		struct json_object *j = json_object_new_object();

		json_object_object_add(j, "acked", json_object_new_uint64(l->acked));
		json_object_object_add(j, "unacked", json_object_new_uint64(unacked));
		json_object_object_add(j, "errors", json_object_new_uint64(l->errors));
		json_object_object_add(j, "ops_per_s", json_object_new_double(ops));
		json_object_object_add(j, "p50_us", json_object_new_uint64(p50 / 1000));
		json_object_object_add(j, "p99_us", json_object_new_uint64(p99 / 1000));
		json_object_object_add(j, "max_us", json_object_new_uint64(max / 1000));
		json_object_object_add(j, "longest_stall_ms",
				       json_object_new_double((double)l->max_stall_ns / 1e6));
		json_object_object_add(j, "duration_s", json_object_new_double(secs));
		if (!l->have_last)
			json_object_object_add(j, "last_value", NULL);
		else if (l->last_is_int)
			json_object_object_add(j, "last_value", json_object_new_int64(l->last_int));
		else
			json_object_object_add(j, "last_value", json_object_new_string(l->last_str));
		printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
		json_object_put(j);
		return;
	}
	printf("acked %" PRIu64 "/%" PRIu64 ", unacked %" PRIu64 ", errors %" PRIu64
	       " in %.3f s: %.0f ops/s\n",
	       l->acked, l->n, unacked, l->errors, secs, ops);
	printf("latency p50 %" PRIu64 " us, p99 %" PRIu64 " us, max %" PRIu64
	       " us; longest stall %.1f ms; last value ",
	       p50 / 1000, p99 / 1000, max / 1000, (double)l->max_stall_ns / 1e6);
	if (!l->have_last)
		printf("none\n");
	else if (l->last_is_int)
		printf("%" PRId64 "\n", l->last_int);
	else
		printf("%s\n", l->last_str);
}

/* One pass of the event loop: returns the poll timeout in ms until the next due send or retry. */
static int service(struct load *l, uint64_t now)
{
	const struct kv_client_opts *o = l->o;
	uint64_t tmo = (uint64_t)o->timeout_ms * 1000000ull, wake = UINT64_MAX;

	/* retries */
	for (unsigned s = 0; s < o->window; s++) {
		uint64_t i = l->slots[s];

		if (i == UINT64_MAX)
			continue;
		if (now - l->ops[i].last_ns >= tmo)
			send_op(l, i, now);
		if (l->ops[i].last_ns + tmo < wake)
			wake = l->ops[i].last_ns + tmo;
	}
	/* new sends */
	while (l->next < l->n && l->inflight < o->window) {
		uint64_t due = o->rate > 0 ? l->start_ns + (uint64_t)((double)l->next * 1e9 / o->rate) : now;

		if (due > now) {
			if (due < wake)
				wake = due;
			break;
		}
		for (unsigned s = 0; s < o->window; s++) {
			if (l->slots[s] == UINT64_MAX) {
				l->slots[s] = l->next;
				break;
			}
		}
		if (l->inflight == 0)
			l->progress_ns = now;
		l->inflight++;
		l->ops[l->next].state = OP_INFLIGHT;
		l->ops[l->next].first_ns = now;
		send_op(l, l->next, now);
		if (now + tmo < wake)
			wake = now + tmo;
		l->next++;
	}
	if (wake == UINT64_MAX)
		return 100;
	return wake <= now ? 0 : (int)((wake - now + 999999) / 1000000);
}

int kv_client_load(const struct kv_client_opts *o)
{
	struct load l = {.o = o, .fd = -1, .n = o->load};
	uint64_t deadline_ns;
	char err[300];
	int rc = 2;

	if (o->keys > 1 && strlen(o->key) + 10 > KV_KEY_MAX) {
		fprintf(stderr, "doppel-kv: key prefix '%s' too long for --keys\n", o->key);
		return 2;
	}
	l.ops = calloc(o->load, sizeof(*l.ops));
	l.slots = malloc(o->window * sizeof(*l.slots));
	if (!l.ops || !l.slots) {
		fprintf(stderr, "doppel-kv: out of memory for %" PRIu64 " requests\n", o->load);
		goto out;
	}
	for (unsigned s = 0; s < o->window; s++)
		l.slots[s] = UINT64_MAX;
	if (o->log) {
		l.log = fopen(o->log, "w");
		if (!l.log) {
			fprintf(stderr, "doppel-kv: open log %s: %s\n", o->log, strerror(errno));
			goto out;
		}
	}
	l.fd = kv_connect(o->target, err, sizeof(err));
	if (l.fd < 0) {
		fprintf(stderr, "doppel-kv: %s\n", err);
		goto out;
	}
	l.base = kv_id_base();
	l.start_ns = now_ns();
	deadline_ns = l.start_ns + (uint64_t)(o->deadline_s * 1e9);
	for (;;) {
		uint64_t now = now_ns();
		struct pollfd p = {.fd = l.fd, .events = POLLIN};
		struct kv_reply rep;
		int tmo, r;

		if (l.next == l.n && l.inflight == 0)
			break;
		if (now >= deadline_ns) {
			fprintf(stderr,
				"doppel-kv: deadline of %.1f s reached with %u in flight, "
				"%" PRIu64 " not sent\n",
				o->deadline_s, l.inflight, l.n - l.next);
			break;
		}
		tmo = service(&l, now);
		if ((uint64_t)tmo * 1000000ull > deadline_ns - now)
			tmo = (int)((deadline_ns - now) / 1000000ull) + 1;
		if (poll(&p, 1, tmo) < 0 && errno != EINTR) {
			fprintf(stderr, "doppel-kv: poll: %s\n", strerror(errno));
			goto out;
		}
		now = now_ns();
		while ((r = recv_reply(l.fd, &rep)) != 0) {
			if (r < 0) {
				fprintf(stderr, "doppel-kv: recv: %s\n", strerror(-r));
				goto out;
			}
			handle_reply(&l, &rep, now);
		}
	}
	l.end_ns = now_ns();
	if (l.inflight && l.end_ns - l.progress_ns > l.max_stall_ns)
		l.max_stall_ns = l.end_ns - l.progress_ns;
	summarize(&l);
	rc = l.acked == l.n ? 0 : 1;
out:
	if (l.log && fclose(l.log)) {
		fprintf(stderr, "doppel-kv: write log %s: %s\n", o->log, strerror(errno));
		rc = 2;
	}
	if (l.fd >= 0)
		close(l.fd);
	free(l.ops);
	free(l.slots);
	return rc;
}
