/* resp.c — Redis protocol (RESP2) on TCP 6379 over the guest's one key-value store. */
#include "store.h"
#include "tcp.h"

/*
 * Requests are RESP arrays of bulk strings (what redis-cli and redis-benchmark send) or inline
 * commands (words up to CRLF). Pipelining: every complete request in the receive buffer is
 * answered in order, as long as the send buffer has room for the worst-case reply; the rest waits
 * for the peer's ACKs. A malformed request gets `-ERR Protocol error` and the connection closes.
 */

#define RESP_ARGS 64

struct req {
	unsigned argc;
	const char *argv[RESP_ARGS];
	size_t argl[RESP_ARGS];
};

/* "<digits>\r\n" at p (n bytes available) as a number; 1 ok (*used set), 0 incomplete, -1 bad. */
static int parse_num_line(const char *p, size_t n, int64_t *out, size_t *used)
{
	size_t i = 0;

	while (i < n && p[i] != '\r')
		if (++i > 20)
			return -1;
	if (i + 1 >= n)
		return 0;
	if (p[i + 1] != '\n' || dec_i64(p, i, out))
		return -1;
	*used = i + 2;
	return 1;
}

static int parse_inline(const char *b, size_t n, struct req *r, size_t *used)
{
	size_t i = 0, end;

	while (i < n && b[i] != '\n')
		i++;
	if (i == n)
		return 0;
	end = i && b[i - 1] == '\r' ? i - 1 : i;
	*used = i + 1;
	r->argc = 0;
	for (size_t s = 0; s < end;) {
		size_t e = s;

		while (e < end && b[e] != ' ')
			e++;
		if (e > s) {
			if (r->argc == RESP_ARGS)
				return -1;
			r->argv[r->argc] = b + s;
			r->argl[r->argc++] = e - s;
		}
		s = e + 1;
	}
	return 1;
}

/* One request from b[0..n): 1 (r filled, *used bytes), 0 incomplete, -1 protocol error. */
static int parse_req(const char *b, size_t n, struct req *r, size_t *used)
{
	size_t off, u;
	int64_t cnt, len;
	int rc;

	if (n == 0)
		return 0;
	if (b[0] != '*')
		return parse_inline(b, n, r, used);
	if ((rc = parse_num_line(b + 1, n - 1, &cnt, &u)) <= 0)
		return rc;
	if (cnt < 1 || cnt > RESP_ARGS)
		return -1;
	off = 1 + u;
	r->argc = 0;
	for (int64_t k = 0; k < cnt; k++) {
		if (off >= n)
			return 0;
		if (b[off] != '$')
			return -1;
		if ((rc = parse_num_line(b + off + 1, n - off - 1, &len, &u)) <= 0)
			return rc;
		if (len < 0 || len > TCP_RXBUF)
			return -1;
		off += 1 + u;
		if (n - off < (size_t)len + 2)
			return 0;
		if (b[off + len] != '\r' || b[off + len + 1] != '\n')
			return -1;
		r->argv[r->argc] = b + off;
		r->argl[r->argc++] = (size_t)len;
		off += (size_t)len + 2;
	}
	*used = off;
	return 1;
}

static bool is(const struct req *r, unsigned i, const char *w)
{
	size_t n = strlen(w);

	if (i >= r->argc || r->argl[i] != n)
		return false;
	for (size_t k = 0; k < n; k++) {
		char c = r->argv[i][k];

		if (c >= 'a' && c <= 'z')
			c = (char)(c - 32);
		if (c != w[k])
			return false;
	}
	return true;
}

/* ---- replies (the caller checked the space) ---------------------------------------------------- */

static void out(struct tcp_conn *c, const char *s)
{
	size_t n = strlen(s);

	if (s[0] == '+' && n > 2 && kv_nondet()) { /* "+OK ~TSC": nondet=N (docs/guest.md) */
		char b[32];
		size_t k = 2;
		b[0] = ' ', b[1] = '~';
		k += fmt_u64(b + k, rdtsc());
		tcp_write(c, s, n - 2);
		tcp_write(c, b, k);
		tcp_write(c, "\r\n", 2);
		return;
	}
	tcp_write(c, s, n);
}

static void out_int(struct tcp_conn *c, char type, int64_t v)
{
	char b[32];
	size_t n = 1;

	b[0] = type;
	n += fmt_i64(b + 1, v);
	b[n++] = '\r';
	b[n++] = '\n';
	tcp_write(c, b, n);
}

static void out_bulk(struct tcp_conn *c, const char *p, size_t len)
{
	out_int(c, '$', (int64_t)len);
	tcp_write(c, p, len);
	tcp_write(c, "\r\n", 2);
}

static void out_get(struct tcp_conn *c, const char *k, size_t kl)
{
	const struct kvs_ent *e = kvs_get(k, kl);

	if (e)
		out_bulk(c, e->val, e->vlen);
	else
		out(c, "$-1\r\n");
}

static void out_rc(struct tcp_conn *c, int rc)
{
	switch (rc) {
	case KVS_FULL:
		out(c, "-ERR store full\r\n");
		break;
	case KVS_TOOLONG:
		out(c, "-ERR value too long (max 64 bytes)\r\n");
		break;
	case KVS_NOTINT:
		out(c, "-ERR value is not an integer or out of range\r\n");
		break;
	case KVS_OVERFLOW:
		out(c, "-ERR increment or decrement would overflow\r\n");
		break;
	case KVS_BADKEY:
		out(c, "-ERR key length must be 1..32 bytes\r\n");
		break;
	default:
		out(c, "+OK\r\n");
	}
}

static void cmd_set(struct tcp_conn *c, const struct req *r)
{
	int64_t t;

	for (unsigned i = 3; i < r->argc; i += 2) { /* EX/PX accepted (no expiry here) */
		if ((!is(r, i, "EX") && !is(r, i, "PX")) || i + 1 >= r->argc ||
		    dec_i64(r->argv[i + 1], r->argl[i + 1], &t) || t <= 0) {
			out(c, "-ERR syntax error\r\n");
			return;
		}
	}
	out_rc(c, kvs_set(r->argv[1], r->argl[1], r->argv[2], r->argl[2]));
}

static void cmd_incr(struct tcp_conn *c, const struct req *r, int64_t sign, bool by)
{
	int64_t v, d = 1;
	int rc;

	if (by && (dec_i64(r->argv[2], r->argl[2], &d) || d == INT64_MIN)) {
		out(c, "-ERR value is not an integer or out of range\r\n");
		return;
	}
	rc = kvs_incr(r->argv[1], r->argl[1], sign * d, &v);
	if (rc == KVS_OK)
		out_int(c, ':', v);
	else
		out_rc(c, rc);
}

static void cmd_keys(struct tcp_conn *c, const struct req *r, bool del)
{
	int64_t n = 0;

	for (unsigned i = 1; i < r->argc; i++)
		n += del ? kvs_del(r->argv[i], r->argl[i]) : kvs_get(r->argv[i], r->argl[i]) != NULL;
	out_int(c, ':', n);
}

static void cmd_mset(struct tcp_conn *c, const struct req *r)
{
	for (unsigned i = 1; i + 1 < r->argc; i += 2) {
		int rc = kvs_set(r->argv[i], r->argl[i], r->argv[i + 1], r->argl[i + 1]);

		if (rc != KVS_OK) {
			out_rc(c, rc);
			return;
		}
	}
	out(c, "+OK\r\n");
}

/* Minimum argc per command (0: any), checked before dispatch. */
static bool arity(struct tcp_conn *c, const struct req *r, unsigned min, unsigned max)
{
	if (r->argc >= min && (!max || r->argc <= max))
		return true;
	out(c, "-ERR wrong number of arguments\r\n");
	return false;
}

static void dispatch(struct tcp_conn *c, const struct req *r)
{
	if (is(r, 0, "PING")) {
		if (arity(c, r, 1, 2))
			r->argc == 2 ? out_bulk(c, r->argv[1], r->argl[1]) : out(c, "+PONG\r\n");
	} else if (is(r, 0, "ECHO")) {
		if (arity(c, r, 2, 2))
			out_bulk(c, r->argv[1], r->argl[1]);
	} else if (is(r, 0, "GET")) {
		if (arity(c, r, 2, 2))
			out_get(c, r->argv[1], r->argl[1]);
	} else if (is(r, 0, "SET")) {
		if (arity(c, r, 3, 0))
			cmd_set(c, r);
	} else if (is(r, 0, "INCR") || is(r, 0, "DECR")) {
		if (arity(c, r, 2, 2))
			cmd_incr(c, r, is(r, 0, "INCR") ? 1 : -1, false);
	} else if (is(r, 0, "INCRBY") || is(r, 0, "DECRBY")) {
		if (arity(c, r, 3, 3))
			cmd_incr(c, r, is(r, 0, "INCRBY") ? 1 : -1, true);
	} else if (is(r, 0, "DEL") || is(r, 0, "EXISTS")) {
		if (arity(c, r, 2, 0))
			cmd_keys(c, r, is(r, 0, "DEL"));
	} else if (is(r, 0, "MGET")) {
		if (arity(c, r, 2, 0)) {
			out_int(c, '*', r->argc - 1);
			for (unsigned i = 1; i < r->argc; i++)
				out_get(c, r->argv[i], r->argl[i]);
		}
	} else if (is(r, 0, "MSET")) {
		if (arity(c, r, 3, 0) && (r->argc % 2 || (out(c, "-ERR wrong number of arguments\r\n"), 0)))
			cmd_mset(c, r);
	} else if (is(r, 0, "DBSIZE")) {
		out_int(c, ':', kvs_count());
	} else if (is(r, 0, "FLUSHALL") || is(r, 0, "FLUSHDB")) {
		kvs_flush();
		out(c, "+OK\r\n");
	} else if (is(r, 0, "CONFIG") && is(r, 1, "GET") && r->argc == 3 && is(r, 2, "SAVE")) {
		out(c, "*2\r\n$4\r\nsave\r\n$0\r\n\r\n"); /* what redis-benchmark reads at start */
	} else if (is(r, 0, "CONFIG") && is(r, 1, "GET") && r->argc == 3 && is(r, 2, "APPENDONLY")) {
		out(c, "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n");
	} else if (is(r, 0, "CONFIG") || is(r, 0, "COMMAND")) {
		out(c, "*0\r\n"); /* any other CONFIG GET, COMMAND DOCS: empty */
	} else if (is(r, 0, "SELECT") || is(r, 0, "QUIT")) {
		out(c, "+OK\r\n");
		if (is(r, 0, "QUIT"))
			tcp_close(c);
	} else {
		out(c, "-ERR unknown command\r\n");
	}
}

/* Worst-case reply size of r (MGET and ECHO/PING grow with their arguments). */
static size_t reply_bound(const struct req *r)
{
	size_t n = 96;

	if (is(r, 0, "MGET"))
		n += (size_t)r->argc * (KVS_VAL_MAX + 16);
	for (unsigned i = 1; i < r->argc && (is(r, 0, "ECHO") || is(r, 0, "PING")); i++)
		n += r->argl[i];
	return n;
}

void resp_serve(struct tcp_conn *c)
{
	struct req r;
	size_t used = 0, off = 0;

	for (;;) {
		int rc = parse_req((const char *)c->rx + off, c->rx_len - off, &r, &used);

		if (rc == 0) {
			if (c->rx_len == TCP_RXBUF && off == 0)
				rc = -1; /* a request that cannot fit the buffer */
			else
				break;
		}
		if (rc < 0) {
			if (tcp_space(c) >= 32) {
				out(c, "-ERR Protocol error\r\n");
				tcp_close(c);
				off = c->rx_len;
			}
			break;
		}
		if (r.argc && reply_bound(&r) > tcp_space(c)) {
			if (reply_bound(&r) <= TCP_TXBUF)
				break; /* wait for the peer to ACK some replies */
			out(c, "-ERR reply too large\r\n");
		} else if (r.argc) {
			dispatch(c, &r);
		}
		off += used;
	}
	tcp_consume(c, off);
}
