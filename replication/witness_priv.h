/* witness_priv.h — internals shared by witness.c (lease/key logic) and witness_http.c (transport, JSON). */
#ifndef DOPPEL_REPLICATION_WITNESS_PRIV_H
#define DOPPEL_REPLICATION_WITNESS_PRIV_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "replication/witness.h"

#define MAX_REPLY (1u << 20) /* an etcd reply of ours is < 1 KiB; cap what a wrong server can send */
#define MAX_URLS 16

struct wconn {
	CURL *c;
	struct curl_slist *hdrs;
	char *buf;
	size_t len, cap;
	int too_big;
};

struct witness {
	char *urls[MAX_URLS];
	int n_urls;
	atomic_int cur; /* endpoint that answered last; both threads start there */
	char *name, key[320], key_b64[440];
	uint32_t ttl_ms, margin_ms, renew_ms, connect_ms, request_ms, op_ms; /* see witness.h */
	char holder[128], holder_b64[240]; /* holder_b64: the key's value, "holder\nttl_ms=N" */
	int64_t obs_mrev; /* takeover (caller thread): the holder's last renewal seen, and when */
	uint64_t obs_ns;
	int64_t lease; /* set by acquire/release (caller thread) while no keepalive thread runs */
	uint32_t granted_ms;
	_Atomic uint64_t valid_until, token, last_renew, last_rtt;
	atomic_int lost;
	struct wconn api, ka;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t thr;
	int thr_running, stop;
	int (*alive)(void *opaque); /* see witness_set_liveness */
	void *alive_opaque;
};

/* base64 (RFC 4648, padded): out needs 4 * ceil(n / 3) + 1 bytes. decode truncates to len (incl.
 * NUL); 0 or -EPROTO on a bad character. */
void wit_b64_encode(const char *in, size_t n, char *out);
int wit_b64_decode(const char *in, char *out, size_t len);
/* An int64 field as the gateway writes it (a string of digits or a number; absent = 0): 0 or -EPROTO. */
int wit_jget_i64(struct json_object *o, const char *k, int64_t *out);
/* Field k of o if it has type t, else NULL (o may be NULL). */
struct json_object *wit_jget(struct json_object *o, const char *k, enum json_type t);
/* curl_global_init once per process: 0 or -EIO. */
int wit_curl_global(void);
int wit_conn_init(struct wconn *c);
void wit_conn_fini(struct wconn *c);
/* POST body to path on w's endpoints in order (from the last good one) until one answers with a
 * JSON object; *out = the reply ("result" of a stream reply unwrapped), caller puts it. 0 or
 * -errno with one line in err; -ENOENT: etcd said NotFound. */
int wit_post(struct witness *w, struct wconn *c, const char *path, struct json_object *body,
	     struct json_object **out, char *err, size_t errlen);

#endif
