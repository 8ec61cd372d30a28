/* witness_http.c — witness transport: POSTs to etcd's JSON gateway with endpoint fail-over; base64, JSON. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/errf.h"
#include "replication/witness_priv.h"

/* ---- base64 (RFC 4648, padded) ------------------------------------------------------------- */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void wit_b64_encode(const char *in, size_t n, char *out)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t i, o = 0;

	for (i = 0; i + 2 < n; i += 3) {
		out[o++] = B64[s[i] >> 2];
		out[o++] = B64[((s[i] & 3) << 4) | (s[i + 1] >> 4)];
		out[o++] = B64[((s[i + 1] & 15) << 2) | (s[i + 2] >> 6)];
		out[o++] = B64[s[i + 2] & 63];
	}
	if (i < n) {
		out[o++] = B64[s[i] >> 2];
		if (i + 1 < n) {
			out[o++] = B64[((s[i] & 3) << 4) | (s[i + 1] >> 4)];
			out[o++] = B64[(s[i + 1] & 15) << 2];
		} else {
			out[o++] = B64[(s[i] & 3) << 4];
			out[o++] = '=';
		}
		out[o++] = '=';
	}
	out[o] = 0;
}

static int b64_val(char c)
{
	const char *p = c ? strchr(B64, c) : NULL;

	return p ? (int)(p - B64) : -1;
}

/* Decode into out (len bytes incl. NUL; truncates). 0 or -EPROTO on a bad character. */
int wit_b64_decode(const char *in, char *out, size_t len)
{
	uint32_t acc = 0;
	int bits = 0;
	size_t o = 0;

	for (; *in && *in != '='; in++) {
		int v = b64_val(*in);

		if (v < 0)
			return -EPROTO;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o + 1 < len)
				out[o++] = (char)((acc >> bits) & 0xff);
		}
	}
	if (len)
		out[o] = 0;
	return 0;
}

/* ---- JSON helpers ---------------------------------------------------------------------------- */

/* An int64 field as etcd's gateway writes it: a string of digits (or a number); absent = 0
 * (protobuf omits defaults). 0, or -EPROTO when present but not an integer. */
int wit_jget_i64(struct json_object *o, const char *k, int64_t *out)
{
	struct json_object *v;
	const char *s;
	char *end;

	*out = 0;
	if (!o || !json_object_object_get_ex(o, k, &v) || !v)
		return 0;
	if (json_object_is_type(v, json_type_int)) {
		*out = json_object_get_int64(v);
		return 0;
	}
	if (!json_object_is_type(v, json_type_string))
		return -EPROTO;
	s = json_object_get_string(v);
	errno = 0;
	*out = strtoll(s, &end, 10);
	return (!*s || *end || errno) ? -EPROTO : 0;
}

struct json_object *wit_jget(struct json_object *o, const char *k, enum json_type t)
{
	struct json_object *v;

	if (!o || !json_object_object_get_ex(o, k, &v) || !json_object_is_type(v, t))
		return NULL;
	return v;
}

/* ---- HTTP ------------------------------------------------------------------------------------ */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static size_t on_data(char *p, size_t sz, size_t n, void *opaque)
{
	struct wconn *c = opaque;
	size_t add = sz * n;

	if (c->len + add + 1 > MAX_REPLY) {
		c->too_big = 1;
		return 0; /* aborts the transfer */
	}
	if (c->len + add + 1 > c->cap) {
		size_t cap = c->cap ? c->cap : 1024;
		char *nb;

		while (cap < c->len + add + 1)
			cap *= 2;
		nb = realloc(c->buf, cap);
		if (!nb)
			return 0;
		c->buf = nb;
		c->cap = cap;
	}
	memcpy(c->buf + c->len, p, add);
	c->len += add;
	c->buf[c->len] = 0;
	return add;
}

int wit_conn_init(struct wconn *c)
{
	c->c = curl_easy_init();
	c->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
	if (c->hdrs) {
		struct curl_slist *h = curl_slist_append(c->hdrs, "Expect:");

		if (h)
			c->hdrs = h;
	}
	return c->c && c->hdrs ? 0 : -ENOMEM;
}

void wit_conn_fini(struct wconn *c)
{
	if (c->c)
		curl_easy_cleanup(c->c);
	curl_slist_free_all(c->hdrs);
	free(c->buf);
	memset(c, 0, sizeof(*c));
}

static int curl_errno(CURLcode cc)
{
	switch (cc) {
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL:
		return -EINVAL;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_COULDNT_RESOLVE_HOST:
		return -EHOSTUNREACH;
	default:
		return -EIO;
	}
}

/* An error reply of the gateway: {"error":"...","code":N} or, on streams, {"error":{"grpc_code":N,
 * "message":"..."}}. Fills msg, returns -ENOENT for gRPC NotFound, -EAGAIN for codes worth another
 * endpoint (Unavailable, DeadlineExceeded, Unknown, Internal), else -EPROTO. */
static int gw_error(struct json_object *j, char *msg, size_t len)
{
	struct json_object *e = NULL;
	int64_t code = 0;

	snprintf(msg, len, "unexpected reply");
	if (!j || !json_object_object_get_ex(j, "error", &e) || !e)
		return -EPROTO;
	if (json_object_is_type(e, json_type_object)) {
		(void)wit_jget_i64(e, "grpc_code", &code);
		e = wit_jget(e, "message", json_type_string);
	} else {
		(void)wit_jget_i64(j, "code", &code);
	}
	if (e && json_object_is_type(e, json_type_string))
		snprintf(msg, len, "%s", json_object_get_string(e));
	if (code == 5)
		return -ENOENT;
	if (code == 14 || code == 4 || code == 2 || code == 13)
		return -EAGAIN;
	return -EPROTO;
}

/* POST body to path on the endpoints in order (starting with the last good one) until one answers
 * with a JSON object. *out is the parsed reply (the "result" of a stream reply unwrapped); caller
 * puts it. 0 or -errno with one line in err. -ENOENT: etcd said NotFound. */
int wit_post(struct witness *w, struct wconn *c, const char *path, struct json_object *body,
	     struct json_object **out, char *err, size_t errlen)
{
	const char *txt = json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN);
	int start = atomic_load(&w->cur), rc = -EIO;
	char msg[800] = "no endpoint";

	*out = NULL;
	for (int i = 0; i < w->n_urls; i++) {
		int idx = (start + i) % w->n_urls;
		char url[512];
		long status = 0;
		CURLcode cc;
		struct json_object *j, *res;

		snprintf(url, sizeof(url), "%s%s", w->urls[idx], path);
		c->len = 0;
		c->too_big = 0;
		curl_easy_setopt(c->c, CURLOPT_URL, url);
		curl_easy_setopt(c->c, CURLOPT_POSTFIELDS, txt);
		curl_easy_setopt(c->c, CURLOPT_HTTPHEADER, c->hdrs);
		curl_easy_setopt(c->c, CURLOPT_WRITEFUNCTION, on_data);
		curl_easy_setopt(c->c, CURLOPT_WRITEDATA, c);
		curl_easy_setopt(c->c, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(c->c, CURLOPT_NOPROXY, "*");
		curl_easy_setopt(c->c, CURLOPT_TIMEOUT_MS, (long)(c == &w->ka ? w->request_ms : w->op_ms));
		curl_easy_setopt(c->c, CURLOPT_CONNECTTIMEOUT_MS, (long)w->connect_ms);
		curl_easy_setopt(c->c, CURLOPT_PROTOCOLS_STR, "http,https");
		cc = curl_easy_perform(c->c);
		if (cc != CURLE_OK) {
			rc = c->too_big ? -EPROTO : curl_errno(cc);
			snprintf(msg, sizeof(msg), "%s: %s", url,
				 c->too_big ? "reply too long" : curl_easy_strerror(cc));
			continue;
		}
		curl_easy_getinfo(c->c, CURLINFO_RESPONSE_CODE, &status);
		j = c->len ? json_tokener_parse(c->buf) : NULL;
		if (!j || !json_object_is_type(j, json_type_object)) {
			json_object_put(j);
			rc = status >= 500 ? -EAGAIN : -EPROTO;
			snprintf(msg, sizeof(msg), "%s: HTTP %ld, not a JSON object", url, status);
			continue;
		}
		res = wit_jget(j, "result", json_type_object);
		if (status != 200 || json_object_object_get_ex(j, "error", NULL)) {
			char e[160];

			rc = gw_error(j, e, sizeof(e));
			json_object_put(j);
			snprintf(msg, sizeof(msg), "%s: HTTP %ld: %s", url, status, e);
			if (rc == -EAGAIN || status >= 500)
				continue;
			return errf(err, errlen, rc, "etcd %s", msg);
		}
		if (res) {
			json_object_get(res);
			json_object_put(j);
			j = res;
		}
		atomic_store(&w->cur, idx);
		*out = j;
		return 0;
	}
	if (rc == -EAGAIN)
		rc = -ETIMEDOUT; /* every member busy/leaderless: to callers that is "no answer in time" */
	return errf(err, errlen, rc, "etcd %s", msg);
}

int wit_curl_global(void)
{
	pthread_once(&curl_once, curl_init);
	return curl_init_rc == CURLE_OK ? 0 : -EIO;
}
