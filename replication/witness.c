/* witness.c — etcd v3 witness client: lease, create-if-absent key, fencing token, keepalive thread. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/errf.h"
#include "common/log.h"
#include "replication/witness_priv.h"

#define WIT "witness"
#define MS 1000000ull

/* ---- lease ----------------------------------------------------------------------------------- */

static void lease_to(struct json_object *o, const char *k, int64_t id)
{
	char s[24];

	snprintf(s, sizeof(s), "%" PRId64, id);
	json_object_object_add(o, k, json_object_new_string(s));
}

static void set_valid(struct witness *w, uint64_t t_send, int64_t ttl_s)
{
	uint64_t ttl = (uint64_t)ttl_s * 1000;

	if (ttl > w->ttl_ms)
		ttl = w->ttl_ms;
	atomic_store(&w->valid_until, ttl > w->margin_ms ? t_send + (ttl - w->margin_ms) * MS : 0);
	atomic_store(&w->last_renew, t_send);
	atomic_store(&w->last_rtt, now_ns() - t_send);
}

static int lease_grant(struct witness *w, uint64_t *t_send, char *err, size_t errlen)
{
	struct json_object *b = json_object_new_object(), *r = NULL;
	int64_t id = 0, ttl = 0;
	int rc;

	if (!b)
		return errf(err, errlen, -ENOMEM, "witness: out of memory");
	json_object_object_add(b, "TTL", json_object_new_int64((w->ttl_ms + 999) / 1000));
	*t_send = now_ns();
	rc = wit_post(w, &w->api, "/v3/lease/grant", b, &r, err, errlen);
	json_object_put(b);
	if (rc)
		return rc;
	if (wit_jget_i64(r, "ID", &id) || wit_jget_i64(r, "TTL", &ttl) || id == 0 || ttl <= 0)
		rc = errf(err, errlen, -EPROTO, "etcd lease grant: bad reply %.120s",
			  json_object_to_json_string_ext(r, JSON_C_TO_STRING_PLAIN));
	json_object_put(r);
	if (rc)
		return rc;
	w->lease = id;
	w->granted_ms = (uint32_t)(ttl > 4000000 ? 4000000000u : ttl * 1000);
	return (int)ttl;
}

static int lease_revoke(struct witness *w, int64_t id, char *err, size_t errlen)
{
	struct json_object *b = json_object_new_object(), *r = NULL;
	int rc;

	if (!b)
		return errf(err, errlen, -ENOMEM, "witness: out of memory");
	lease_to(b, "ID", id);
	rc = wit_post(w, &w->api, "/v3/lease/revoke", b, &r, err, errlen);
	json_object_put(b);
	json_object_put(r);
	return rc == -ENOENT ? 0 : rc; /* already expired: fine */
}

static int txn_touch(struct witness *w, struct wconn *c, char *err, size_t errlen);

/* One renewal on connection c: rewrite the key under our lease (its new mod_revision is the
 * heartbeat a successor watches: witness_takeover), then keep the lease alive. The validity window
 * runs from before both requests were sent. See witness_renew. */
static int renew_on(struct witness *w, struct wconn *c, char *err, size_t errlen)
{
	struct json_object *b, *r = NULL;
	int64_t id = 0, ttl = 0;
	uint64_t t0;
	int rc;

	if (!w->lease)
		return errf(err, errlen, -ENOLCK, "witness %s: no lease held", w->key);
	b = json_object_new_object();
	if (!b)
		return errf(err, errlen, -ENOMEM, "witness: out of memory");
	lease_to(b, "ID", w->lease);
	t0 = now_ns();
	rc = txn_touch(w, c, err, errlen);
	if (rc && rc != -ENOENT) {
		json_object_put(b);
		return rc;
	}
	if (!rc)
		rc = wit_post(w, c, "/v3/lease/keepalive", b, &r, err, errlen);
	json_object_put(b);
	if (rc == -ENOENT)
		ttl = 0;
	else if (rc)
		return rc;
	else if (!wit_jget(r, "header", json_type_object) || wit_jget_i64(r, "ID", &id) ||
		 wit_jget_i64(r, "TTL", &ttl) || (id && id != w->lease))
		rc = errf(err, errlen, -EPROTO, "etcd keepalive: bad reply %.120s",
			  json_object_to_json_string_ext(r, JSON_C_TO_STRING_PLAIN));
	json_object_put(r);
	if (rc && rc != -ENOENT)
		return rc;
	if (ttl <= 0) {
		atomic_store(&w->valid_until, 0);
		if (!atomic_exchange(&w->lost, 1))
			log_warn(WIT, w->name,
				 "lease %" PRIx64 " or key %s is gone (expired, revoked or taken over)",
				 (uint64_t)w->lease, w->key);
		return errf(err, errlen, -ENOENT, "witness %s: lease expired or key taken", w->key);
	}
	set_valid(w, t0, ttl);
	return 0;
}

/* ---- key ------------------------------------------------------------------------------------- */

/* The first kv of a range reply (r: a RangeResponse). The value is "holder\nttl_ms=N" (the holder's
 * validity window, which a successor waits out: witness_takeover); ttl_ms is 0 when absent. */
struct wkv {
	char holder[128];
	uint64_t crev, mrev;
	int64_t lease;
	uint32_t ttl_ms;
};

static int kv_parse(struct json_object *r, struct wkv *out)
{
	struct json_object *kvs = wit_jget(r, "kvs", json_type_array), *kv, *v;
	int64_t crev = 0, mrev = 0;
	char val[256], *nl;

	memset(out, 0, sizeof(*out));
	if (!kvs || json_object_array_length(kvs) == 0)
		return -ENOENT;
	kv = json_object_array_get_idx(kvs, 0);
	if (!json_object_is_type(kv, json_type_object) || wit_jget_i64(kv, "create_revision", &crev) ||
	    wit_jget_i64(kv, "mod_revision", &mrev) || wit_jget_i64(kv, "lease", &out->lease) || crev <= 0)
		return -EPROTO;
	v = wit_jget(kv, "value", json_type_string);
	if (wit_b64_decode(v ? json_object_get_string(v) : "", val, sizeof(val)))
		return -EPROTO;
	nl = strchr(val, '\n');
	if (nl) {
		unsigned long t = 0;

		*nl = 0;
		if (sscanf(nl + 1, "ttl_ms=%lu", &t) == 1 && t <= 3600000)
			out->ttl_ms = (uint32_t)t;
	}
	snprintf(out->holder, sizeof(out->holder), "%.127s", val);
	out->crev = (uint64_t)crev;
	out->mrev = (uint64_t)(mrev > crev ? mrev : crev);
	return 0;
}

static struct json_object *op(const char *kind, struct json_object *args)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, kind, args);
	return o;
}

static struct json_object *keyobj(struct witness *w)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "key", json_object_new_string(w->key_b64));
	return o;
}

/* txn: if the key does not exist, put it with our lease; else read it. 0 with the token, -EBUSY
 * with the holder in err, or -errno. */
static int txn_create(struct witness *w, char *err, size_t errlen)
{
	struct json_object *b = json_object_new_object(), *cmp = keyobj(w), *put = keyobj(w), *r = NULL, *s;
	struct json_object *ca = json_object_new_array(), *sa = json_object_new_array(),
			   *fa = json_object_new_array();
	int64_t rev = 0;
	char who[128] = "";
	uint64_t tok = 0;
	int rc;

	json_object_object_add(cmp, "target", json_object_new_string("CREATE"));
	json_object_object_add(cmp, "result", json_object_new_string("EQUAL"));
	json_object_object_add(cmp, "create_revision", json_object_new_string("0"));
	json_object_array_add(ca, cmp);
	json_object_object_add(put, "value", json_object_new_string(w->holder_b64));
	lease_to(put, "lease", w->lease);
	json_object_array_add(sa, op("request_put", put));
	json_object_array_add(fa, op("request_range", keyobj(w)));
	json_object_object_add(b, "compare", ca);
	json_object_object_add(b, "success", sa);
	json_object_object_add(b, "failure", fa);
	rc = wit_post(w, &w->api, "/v3/kv/txn", b, &r, err, errlen);
	json_object_put(b);
	if (rc)
		return rc;
	s = wit_jget(r, "succeeded", json_type_boolean);
	if (!wit_jget(r, "header", json_type_object)) {
		rc = errf(err, errlen, -EPROTO, "etcd txn: reply without a header");
	} else if (s && json_object_get_boolean(s)) {
		if (wit_jget_i64(wit_jget(r, "header", json_type_object), "revision", &rev) || rev <= 0)
			rc = errf(err, errlen, -EPROTO, "etcd txn: reply without a revision");
		else
			atomic_store(&w->token, (uint64_t)rev);
	} else {
		struct json_object *rs = wit_jget(r, "responses", json_type_array), *rr;

		rr = rs && json_object_array_length(rs) ? json_object_array_get_idx(rs, 0) : NULL;
		rr = wit_jget(rr, "response_range", json_type_object);
		struct wkv kv;

		rc = rr ? kv_parse(rr, &kv) : -EPROTO;
		snprintf(who, sizeof(who), "%s", kv.holder);
		tok = kv.crev;
		if (rc == 0 || rc == -ENOENT) /* ENOENT: it expired between compare and range */
			rc = errf(err, errlen, -EBUSY, "witness %s: held by \"%s\" (token %" PRIu64 ")",
				  w->key, who, tok);
		else
			rc = errf(err, errlen, -EPROTO, "etcd txn: bad reply %.120s",
				  json_object_to_json_string_ext(r, JSON_C_TO_STRING_PLAIN));
	}
	json_object_put(r);
	return rc;
}

/* A compare of the key (target LEASE with our lease, or MOD with a revision). */
static struct json_object *cmp_key(struct witness *w, const char *target, const char *field, const char *v)
{
	struct json_object *cmp = keyobj(w);

	json_object_object_add(cmp, "target", json_object_new_string(target));
	json_object_object_add(cmp, "result", json_object_new_string("EQUAL"));
	json_object_object_add(cmp, field, json_object_new_string(v));
	return cmp;
}

/* txn {compare: [cmp], success: [success]} on connection c (ownership of both taken). 0 when it
 * succeeded; when the compare failed: 0 if fail_rc is 0, else fail_rc with "witness KEY: fail_what";
 * -errno on transport or protocol errors. */
static int txn_if(struct witness *w, struct wconn *c, struct json_object *cmp, struct json_object *success,
		  int fail_rc, const char *fail_what, char *err, size_t errlen)
{
	struct json_object *b = json_object_new_object(), *ca = json_object_new_array(),
			   *sa = json_object_new_array(), *r = NULL, *s;
	int rc;

	json_object_array_add(ca, cmp);
	json_object_array_add(sa, success);
	json_object_object_add(b, "compare", ca);
	json_object_object_add(b, "success", sa);
	rc = wit_post(w, c, "/v3/kv/txn", b, &r, err, errlen);
	json_object_put(b);
	if (rc)
		return rc;
	s = wit_jget(r, "succeeded", json_type_boolean);
	if (!wit_jget(r, "header", json_type_object))
		rc = errf(err, errlen, -EPROTO, "etcd txn: reply without a header");
	else if (fail_rc && (!s || !json_object_get_boolean(s)))
		rc = errf(err, errlen, fail_rc, "witness %s: %s", w->key, fail_what);
	json_object_put(r);
	return rc;
}

static struct json_object *cmp_our_lease(struct witness *w)
{
	char id[24];

	snprintf(id, sizeof(id), "%" PRId64, w->lease);
	return cmp_key(w, "LEASE", "lease", id);
}

/* txn: if the key is still under our lease, put it again (same value, same lease). 0, -ENOENT when
 * the key is gone or someone else's (a successor took over), or -errno. */
static int txn_touch(struct witness *w, struct wconn *c, char *err, size_t errlen)
{
	struct json_object *put = keyobj(w);

	json_object_object_add(put, "value", json_object_new_string(w->holder_b64));
	lease_to(put, "lease", w->lease);
	return txn_if(w, c, cmp_our_lease(w), op("request_put", put), -ENOENT, "the key is no longer ours",
		      err, errlen);
}

int witness_acquire(struct witness *w, const char *holder_id, char *err, size_t errlen)
{
	uint64_t t0 = 0;
	int64_t ttl;
	int rc;

	if (!holder_id || !*holder_id || strlen(holder_id) >= sizeof(w->holder))
		return errf(err, errlen, -EINVAL, "witness: bad holder id");
	if (w->lease && witness_lease_valid(w) && !strcmp(holder_id, w->holder))
		return 0;
	if (w->lease) { /* a lease we can no longer prove (or another holder id): start afresh */
		witness_stop_keepalive(w);
		(void)lease_revoke(w, w->lease, NULL, 0);
		w->lease = 0;
	}
	snprintf(w->holder, sizeof(w->holder), "%s", holder_id);
	{
		char val[160];
		int n = snprintf(val, sizeof(val), "%s\nttl_ms=%u", w->holder, w->ttl_ms);

		wit_b64_encode(val, (size_t)n, w->holder_b64);
	}
	atomic_store(&w->lost, 0);
	atomic_store(&w->token, 0);
	atomic_store(&w->valid_until, 0);
	rc = lease_grant(w, &t0, err, errlen);
	if (rc < 0)
		goto err;
	ttl = rc;
	rc = txn_create(w, err, errlen);
	if (rc)
		goto err;
	set_valid(w, t0, ttl);
	log_info(WIT, w->name, "acquired %s as \"%s\": token %" PRIu64 ", lease %" PRIx64 " ttl %u ms",
		 w->key, w->holder, atomic_load(&w->token), (uint64_t)w->lease, w->ttl_ms);
	return 0;
err:
	if (w->lease) {
		(void)lease_revoke(w, w->lease, NULL, 0);
		w->lease = 0;
	}
	atomic_store(&w->token, 0);
	return rc;
}

/* txn: delete the key if its mod_revision is still `mrev` (its holder has not renewed since). 0 when
 * deleted, -EBUSY when it changed, or -errno. */
static int txn_delete_if(struct witness *w, uint64_t mrev, char *err, size_t errlen)
{
	char rev[24];

	snprintf(rev, sizeof(rev), "%" PRIu64, mrev);
	return txn_if(w, &w->api, cmp_key(w, "MOD", "mod_revision", rev),
		      op("request_delete_range", keyobj(w)), -EBUSY, "its holder renewed meanwhile", err,
		      errlen);
}

int witness_takeover(struct witness *w, const char *holder_id, char *err, size_t errlen)
{
	struct json_object *r = NULL, *b = keyobj(w);
	struct wkv kv;
	uint64_t now;
	int rc;

	rc = wit_post(w, &w->api, "/v3/kv/range", b, &r, err, errlen);
	json_object_put(b);
	if (rc)
		return rc;
	rc = wit_jget(r, "header", json_type_object) ? kv_parse(r, &kv) : -EPROTO;
	json_object_put(r);
	now = now_ns();
	if (rc == -ENOENT || (!rc && !strcmp(kv.holder, holder_id)))
		return witness_acquire(w, holder_id, err, errlen);
	if (rc)
		return errf(err, errlen, rc, "etcd range: bad reply for %s", w->key);
	if ((uint64_t)w->obs_mrev != kv.mrev) { /* a renewal we had not seen: it was sent before now */
		w->obs_mrev = (int64_t)kv.mrev;
		w->obs_ns = now;
	}
	if (!kv.ttl_ms)
		return errf(err, errlen, -EBUSY,
			    "witness %s: held by \"%s\" (token %" PRIu64 "), which declares "
			    "no validity window: waiting for its lease to expire",
			    w->key, kv.holder, kv.crev);
	if (now < w->obs_ns + (uint64_t)kv.ttl_ms * MS)
		return errf(err, errlen, -EBUSY,
			    "witness %s: held by \"%s\" (token %" PRIu64 "), renewed %" PRIu64
			    " ms ago; it is provably invalid %" PRIu64 " ms after that unless it renews",
			    w->key, kv.holder, kv.crev, (uint64_t)((now - w->obs_ns) / MS),
			    (uint64_t)kv.ttl_ms);
	rc = txn_delete_if(w, kv.mrev, err, errlen);
	if (rc)
		return rc;
	log_info(WIT, w->name,
		 "%s: \"%s\" (token %" PRIu64 ") silent for %" PRIu64 " ms >= its window %u ms: key "
		 "deleted",
		 w->key, kv.holder, kv.crev, (uint64_t)((now - w->obs_ns) / MS), kv.ttl_ms);
	if (kv.lease)
		(void)lease_revoke(w, kv.lease, NULL, 0);
	return witness_acquire(w, holder_id, err, errlen);
}

int witness_renew(struct witness *w, char *err, size_t errlen)
{
	return renew_on(w, &w->api, err, errlen);
}

int witness_holder(struct witness *w, char *buf, size_t len, uint64_t *token, char *err, size_t errlen)
{
	struct json_object *r = NULL;
	struct json_object *b = keyobj(w);
	struct wkv kv;
	int rc;

	if (buf && len)
		buf[0] = 0;
	if (token)
		*token = 0;
	rc = wit_post(w, &w->api, "/v3/kv/range", b, &r, err, errlen);
	json_object_put(b);
	if (rc)
		return rc;
	rc = wit_jget(r, "header", json_type_object) ? kv_parse(r, &kv) : -EPROTO;
	if (!rc && buf && len)
		snprintf(buf, len, "%s", kv.holder);
	if (!rc && token)
		*token = kv.crev;
	if (rc == -ENOENT)
		rc = errf(err, errlen, -ENOENT, "witness %s: nobody holds it", w->key);
	else if (rc)
		rc = errf(err, errlen, rc, "etcd range: bad reply %.120s",
			  json_object_to_json_string_ext(r, JSON_C_TO_STRING_PLAIN));
	json_object_put(r);
	return rc;
}

int witness_release(struct witness *w, char *err, size_t errlen)
{
	int rc, rc2;

	witness_stop_keepalive(w);
	atomic_store(&w->valid_until, 0);
	if (!w->lease)
		return 0;
	rc = txn_if(w, &w->api, cmp_our_lease(w), op("request_delete_range", keyobj(w)), 0, NULL, err,
		    errlen);
	rc2 = lease_revoke(w, w->lease, rc ? NULL : err, errlen);
	log_info(WIT, w->name, "released %s (token %" PRIu64 ")%s", w->key, atomic_load(&w->token),
		 rc || rc2 ? ": etcd unreachable, the lease will expire on its own" : "");
	w->lease = 0;
	atomic_store(&w->token, 0);
	return rc ? rc : rc2;
}

/* ---- keepalive thread ------------------------------------------------------------------------ */

static void add_ns(struct timespec *ts, uint64_t at_ns)
{
	ts->tv_sec = (time_t)(at_ns / 1000000000ull);
	ts->tv_nsec = (long)(at_ns % 1000000000ull);
}

static void *keepalive_main(void *opaque)
{
	struct witness *w = opaque;
	uint64_t next = now_ns() + w->renew_ms * MS;
	int fails = 0, was_valid = 1;

	pthread_mutex_lock(&w->mu);
	while (!w->stop) {
		struct timespec ts;
		char err[256];
		int rc;

		add_ns(&ts, next);
		if (now_ns() < next) {
			pthread_cond_timedwait(&w->cv, &w->mu, &ts);
			continue;
		}
		pthread_mutex_unlock(&w->mu);
		if (w->alive && !w->alive(w->alive_opaque))
			rc = errf(err, sizeof(err), -EDEADLK, "the holder made no progress: not renewing");
		else
			rc = renew_on(w, &w->ka, err, sizeof(err));
		pthread_mutex_lock(&w->mu);
		if (rc == -ENOENT)
			break;
		if (rc == 0) {
			if (fails)
				log_info(WIT, w->name, "renewals of %s resumed after %d failure(s)", w->key,
					 fails);
			fails = 0;
			was_valid = 1;
			next = now_ns() + w->renew_ms * MS;
		} else {
			int64_t left = ((int64_t)witness_valid_until_ns(w) - (int64_t)now_ns()) / (int64_t)MS;

			/* the first failure, the moment validity runs out, then every ~50 attempts */
			if (!fails || (left <= 0 && (was_valid || fails % 50 == 0)))
				log_warn(WIT, w->name,
					 "renewal failed (%s); lease provably valid for %" PRId64 " ms more",
					 err, left > 0 ? left : 0);
			was_valid = left > 0;
			fails++;
			next = now_ns() + (w->ttl_ms / 10 < 100 ? w->ttl_ms / 10 : 100) * MS;
		}
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

int witness_start_keepalive(struct witness *w, char *err, size_t errlen)
{
	int rc;

	if (w->thr_running)
		return 0;
	if (!w->lease || atomic_load(&w->lost))
		return errf(err, errlen, -ENOLCK, "witness %s: no lease held", w->key);
	w->stop = 0;
	rc = pthread_create(&w->thr, NULL, keepalive_main, w);
	if (rc)
		return errf(err, errlen, -rc, "witness: keepalive thread: %s", strerror(rc));
	w->thr_running = 1;
	return 0;
}

void witness_set_liveness(struct witness *w, int (*alive)(void *opaque), void *opaque)
{
	w->alive = alive;
	w->alive_opaque = opaque;
}

void witness_stop_keepalive(struct witness *w)
{
	if (!w || !w->thr_running)
		return;
	pthread_mutex_lock(&w->mu);
	w->stop = 1;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->thr, NULL);
	w->thr_running = 0;
}

/* ---- life cycle and accessors ---------------------------------------------------------------- */

static int parse_urls(struct witness *w, const char *urls, char *err, size_t errlen)
{
	char *dup = strdup(urls), *save = NULL, *tok;

	if (!dup)
		return errf(err, errlen, -ENOMEM, "witness: out of memory");
	for (tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		size_t n = strlen(tok);

		while (n && tok[n - 1] == '/')
			tok[--n] = 0;
		if (strncmp(tok, "http://", 7) && strncmp(tok, "https://", 8)) {
			errf(err, errlen, -EINVAL, "witness: \"%s\" is not an http:// or https:// URL", tok);
			goto bad;
		}
		if (w->n_urls == MAX_URLS || n > 400) {
			errf(err, errlen, -EINVAL, "witness: too many or too long URLs");
			goto bad;
		}
		w->urls[w->n_urls] = strdup(tok);
		if (!w->urls[w->n_urls++]) {
			errf(err, errlen, -ENOMEM, "witness: out of memory");
			goto bad;
		}
	}
	free(dup);
	return w->n_urls ? 0 : errf(err, errlen, -EINVAL, "witness: empty URL list");
bad:
	free(dup);
	return -EINVAL;
}

int witness_new(struct witness **out, const char *urls, const char *vm_name, uint32_t ttl_ms, char *err,
		size_t errlen)
{
	struct witness *w;
	pthread_condattr_t ca;
	int rc;

	*out = NULL;
	if (!urls || !vm_name || !*vm_name || strlen(vm_name) > 200 || strchr(vm_name, '/'))
		return errf(err, errlen, -EINVAL, "witness: bad VM name");
	if (ttl_ms < 100 || ttl_ms > 3600000)
		return errf(err, errlen, -EINVAL, "witness: ttl %u ms out of range (100..3600000)", ttl_ms);
	if (wit_curl_global())
		return errf(err, errlen, -EIO, "witness: curl_global_init failed");
	w = calloc(1, sizeof(*w));
	if (!w)
		return errf(err, errlen, -ENOMEM, "witness: out of memory");
	pthread_mutex_init(&w->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->cv, &ca);
	pthread_condattr_destroy(&ca);
	w->ttl_ms = ttl_ms;
	w->margin_ms = ttl_ms / 10 + 50;
	w->renew_ms = ttl_ms / 3;
	w->request_ms = ttl_ms / 4 < 50 ? 50 : ttl_ms / 4 > 2000 ? 2000 : ttl_ms / 4;
	w->connect_ms = w->request_ms < 200 ? w->request_ms : 200;
	w->op_ms = ttl_ms < 1000 ? 1000 : ttl_ms > 5000 ? 5000 : ttl_ms;
	snprintf(w->key, sizeof(w->key), "/doppel/vm/%s/active", vm_name);
	wit_b64_encode(w->key, strlen(w->key), w->key_b64);
	w->name = strdup(vm_name);
	rc = w->name ? parse_urls(w, urls, err, errlen)
		     : errf(err, errlen, -ENOMEM, "witness: out of memory");
	if (!rc && (wit_conn_init(&w->api) || wit_conn_init(&w->ka)))
		rc = errf(err, errlen, -ENOMEM, "witness: curl handle: out of memory");
	if (rc) {
		witness_free(w);
		return rc;
	}
	*out = w;
	return 0;
}

void witness_free(struct witness *w)
{
	if (!w)
		return;
	witness_stop_keepalive(w);
	wit_conn_fini(&w->api);
	wit_conn_fini(&w->ka);
	for (int i = 0; i < w->n_urls; i++)
		free(w->urls[i]);
	free(w->name);
	pthread_cond_destroy(&w->cv);
	pthread_mutex_destroy(&w->mu);
	free(w);
}

int witness_set_margin_ms(struct witness *w, uint32_t margin_ms)
{
	if (margin_ms >= w->ttl_ms)
		return -EINVAL;
	w->margin_ms = margin_ms;
	return 0;
}

int witness_set_renew_ms(struct witness *w, uint32_t interval_ms)
{
	if (interval_ms < 10 || interval_ms >= w->ttl_ms)
		return -EINVAL;
	w->renew_ms = interval_ms;
	return 0;
}

int witness_set_timeouts_ms(struct witness *w, uint32_t connect_ms, uint32_t request_ms)
{
	if (!connect_ms || !request_ms || connect_ms > request_ms)
		return -EINVAL;
	w->connect_ms = connect_ms;
	w->request_ms = request_ms;
	return 0;
}

int witness_set_op_timeout_ms(struct witness *w, uint32_t op_ms)
{
	if (op_ms < w->connect_ms)
		return -EINVAL;
	w->op_ms = op_ms;
	return 0;
}

uint64_t witness_valid_until_ns(const struct witness *w)
{
	return atomic_load(&((struct witness *)w)->valid_until);
}

int witness_lease_valid(const struct witness *w)
{
	return now_ns() < witness_valid_until_ns(w);
}

uint64_t witness_token(const struct witness *w)
{
	return atomic_load(&((struct witness *)w)->token);
}

int witness_lost(const struct witness *w)
{
	return atomic_load(&((struct witness *)w)->lost);
}

uint64_t witness_last_renew_ns(const struct witness *w)
{
	return atomic_load(&((struct witness *)w)->last_renew);
}

uint64_t witness_last_rtt_ns(const struct witness *w)
{
	return atomic_load(&((struct witness *)w)->last_rtt);
}

const char *witness_key(const struct witness *w)
{
	return w->key;
}

uint32_t witness_ttl_ms(const struct witness *w)
{
	return w->ttl_ms;
}
