/* http.c — HTTP/1.1 with keep-alive on TCP 80: a page, the key-value store, and a byte source. */
#include "store.h"
#include "tcp.h"

/*
 *   GET /              a small HTML page
 *   GET /kv/KEY        the value (200) or 404
 *   POST /kv/KEY/incr  add 1, the new value (200); 400 if the value is not an integer
 *   GET /bytes/N       N bytes of 'x' (N <= 1 GiB), streamed as the window allows
 * Other paths 404, other methods on these paths 405, malformed requests 400 (and close).
 * HTTP/1.1 keeps the connection unless "Connection: close"; HTTP/1.0 closes unless keep-alive.
 * Request bodies (Content-Length) are read and ignored; chunked bodies are refused (400).
 */

#define HTTP_HDR_ROOM 512 /* send space needed before a request is handled */
#define BYTES_MAX (1ull << 30)

static const char page[] = "<!doctype html><html><head><title>doppel guest</title></head>"
			   "<body><h1>doppel test guest</h1><p>GET /kv/KEY, POST /kv/KEY/incr, "
			   "GET /bytes/N</p></body></html>\n";

static const char fill[1024] = {[0 ... 1023] = 'x'};

static bool ieq(const char *a, size_t n, const char *lit)
{
	if (strlen(lit) != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = a[i];

		if (c >= 'A' && c <= 'Z')
			c = (char)(c + 32);
		if (c != lit[i])
			return false;
	}
	return true;
}

static bool has_token(const char *v, size_t n, const char *tok)
{
	size_t tl = strlen(tok);

	for (size_t i = 0; i + tl <= n; i++)
		if (ieq(v + i, tl, tok))
			return true;
	return false;
}

static void respond(struct tcp_conn *c, int status, const char *body, size_t blen, uint64_t stream,
		    bool close)
{
	char h[320];
	size_t n = 0;
	const char *reason = status == 200   ? "OK"
			     : status == 400 ? "Bad Request"
			     : status == 404 ? "Not Found"
			     : status == 405 ? "Method Not Allowed"
					     : "Error";

#define PUT(s)                                                                                               \
	do {                                                                                                 \
		size_t l_ = strlen(s);                                                                       \
		memcpy(h + n, s, l_);                                                                        \
		n += l_;                                                                                     \
	} while (0)
	PUT("HTTP/1.1 ");
	n += fmt_u64(h + n, (uint64_t)status);
	PUT(" ");
	PUT(reason);
	PUT("\r\nServer: doppel-guest\r\nContent-Type: ");
	PUT(status == 200 && !stream && body == page ? "text/html"
	    : stream				     ? "application/octet-stream"
						     : "text/plain");
	PUT("\r\nContent-Length: ");
	n += fmt_u64(h + n, stream ? stream : blen);
	if (status == 405)
		PUT("\r\nAllow: GET, POST");
	if (kv_nondet()) { /* nondet=N (docs/guest.md): a header the other copy never has */
		PUT("\r\nX-Nondet: ");
		n += fmt_u64(h + n, rdtsc());
	}
	PUT(close ? "\r\nConnection: close\r\n\r\n" : "\r\nConnection: keep-alive\r\n\r\n");
#undef PUT
	tcp_write(c, h, n);
	tcp_write(c, body, blen);
	c->app_left = stream;
	c->app_close = close;
	if (close && !stream)
		tcp_close(c);
}

static void route(struct tcp_conn *c, const char *m, size_t ml, const char *p, size_t pl, bool close)
{
	bool get = ieq(m, ml, "get"), post = ieq(m, ml, "post");
	char b[KVS_VAL_MAX + 2];
	uint64_t n;
	int64_t v;

	if (pl == 1 && p[0] == '/') {
		if (!get)
			return respond(c, 405, "method not allowed\n", 19, 0, close);
		return respond(c, 200, page, sizeof(page) - 1, 0, close);
	}
	if (pl > 7 && !memcmp(p, "/bytes/", 7)) {
		if (!get)
			return respond(c, 405, "method not allowed\n", 19, 0, close);
		if (dec_u64(p + 7, pl - 7, &n) || n > BYTES_MAX)
			return respond(c, 400, "bad size\n", 9, 0, close);
		if (n == 0)
			return respond(c, 200, "", 0, 0, close);
		return respond(c, 200, "", 0, n, close);
	}
	if (pl > 4 && !memcmp(p, "/kv/", 4)) {
		const char *k = p + 4;
		size_t kl = pl - 4;
		bool incr = kl > 5 && !memcmp(k + kl - 5, "/incr", 5);
		const struct kvs_ent *e;

		if (incr)
			kl -= 5;
		if (kl < 1 || kl > KVS_KEY_MAX)
			return respond(c, 400, "bad key\n", 8, 0, close);
		if (incr != post || (!get && !post))
			return respond(c, 405, "method not allowed\n", 19, 0, close);
		if (incr) {
			int rc = kvs_incr(k, kl, 1, &v);

			if (rc != KVS_OK)
				return respond(c, 400, "not an integer\n", 15, 0, close);
			n = fmt_i64(b, v);
			b[n++] = '\n';
			return respond(c, 200, b, n, 0, close);
		}
		if (!(e = kvs_get(k, kl)))
			return respond(c, 404, "no such key\n", 12, 0, close);
		memcpy(b, e->val, e->vlen);
		b[e->vlen] = '\n';
		return respond(c, 200, b, e->vlen + 1u, 0, close);
	}
	respond(c, 404, "not found\n", 10, 0, close);
}

/* Parse one request whose header is b[0..len) (up to the blank line), avail bytes being there;
 * *body gets its Content-Length. 1: answered, 0: the body is not all here yet, -1: malformed. */
static int handle(struct tcp_conn *c, const char *b, size_t len, size_t avail, size_t *body)
{
	size_t i = 0, ml, ps, pl, vs;
	bool close, v10;

	while (i < len && b[i] != ' ')
		i++;
	ml = i++;
	ps = i;
	while (i < len && b[i] != ' ' && b[i] != '\r')
		i++;
	pl = i - ps;
	if (ml == 0 || pl == 0 || i >= len || b[i] != ' ' || len - i < 11 || memcmp(b + i + 1, "HTTP/1.", 7))
		return -1;
	vs = i + 8;
	if ((b[vs] != '0' && b[vs] != '1') || b[vs + 1] != '\r')
		return -1;
	v10 = b[vs] == '0';
	close = v10;
	*body = 0;
	for (i = vs + 3; i + 2 < len;) { /* header lines */
		size_t s = i, colon = 0, e;

		while (i < len && b[i] != '\r')
			if (b[i++] == ':' && !colon)
				colon = i - 1;
		e = i;
		i += 2;
		if (e == s)
			break;
		if (!colon)
			return -1;
		{
			const char *v = b + colon + 1;
			size_t vl = e - colon - 1;

			if (ieq(b + s, colon - s, "connection"))
				close = has_token(v, vl, "close") || (v10 && !has_token(v, vl, "keep-alive"));
			else if (ieq(b + s, colon - s, "transfer-encoding"))
				return -1;
			else if (ieq(b + s, colon - s, "content-length")) {
				uint64_t cl;

				while (vl && *v == ' ')
					v++, vl--;
				while (vl && v[vl - 1] == ' ')
					vl--;
				if (dec_u64(v, vl, &cl) || len + cl > TCP_RXBUF)
					return -1;
				*body = (size_t)cl;
			}
		}
	}
	if (len + *body > avail)
		return 0;
	route(c, b, ml, b + ps, pl, close);
	return 1;
}

static void stream(struct tcp_conn *c)
{
	while (c->app_left && tcp_space(c)) {
		size_t n = tcp_space(c);

		if (n > sizeof(fill))
			n = sizeof(fill);
		if (n > c->app_left)
			n = (size_t)c->app_left;
		tcp_write(c, fill, n);
		c->app_left -= n;
	}
	if (!c->app_left && c->app_close)
		tcp_close(c);
}

void http_serve(struct tcp_conn *c)
{
	size_t off = 0;

	for (;;) {
		const char *b = (const char *)c->rx + off;
		size_t n = c->rx_len - off, end = 0, body = 0;
		int rc;

		if (c->app_left) {
			stream(c);
			if (c->app_left)
				break;
		}
		if (tcp_space(c) < HTTP_HDR_ROOM + KVS_VAL_MAX || c->close_req)
			break;
		for (size_t i = 0; i + 3 < n; i++)
			if (b[i] == '\r' && b[i + 1] == '\n' && b[i + 2] == '\r' && b[i + 3] == '\n') {
				end = i + 4;
				break;
			}
		if (!end) {
			if (n == TCP_RXBUF || (n && b[0] != 'G' && b[0] != 'P' && b[0] != 'H' &&
					       b[0] != 'D' && b[0] != 'O' && b[0] != 'C' && b[0] != 'T')) {
				respond(c, 400, "bad request\n", 12, 0, true);
				off = c->rx_len;
			}
			break;
		}
		rc = handle(c, b, end, n, &body);
		if (rc < 0) {
			respond(c, 400, "bad request\n", 12, 0, true);
			off = c->rx_len;
		}
		if (rc <= 0)
			break;
		off += end + body;
	}
	tcp_consume(c, off);
}
