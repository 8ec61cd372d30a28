/* witness.h — etcd v3 witness: one lease-held key per protected VM; its revision is the fencing token. */
#ifndef DOPPEL_REPLICATION_WITNESS_H
#define DOPPEL_REPLICATION_WITNESS_H

#include <stddef.h>
#include <stdint.h>

// clang-format off
/*
 * The witness is an etcd v3 cluster (a real, replicated arbiter) spoken to over its gRPC-gateway
 * JSON API (POST /v3/lease/grant, /v3/lease/keepalive, /v3/lease/revoke, /v3/kv/txn, /v3/kv/range)
 * with libcurl + json-c. The active copy of VM <name> holds the key
 *     /doppel/vm/<name>/active      value = holder id (e.g. "hostA:1234"), lease = the holder's lease
 * Only one lease can own the key: it is created with a txn "create_revision == 0" and disappears
 * when the lease expires or is revoked. The revision at which the key was created is the FENCING
 * TOKEN: it grows strictly from one holder to the next.
 *
 * Validity, by the holder's own CLOCK_MONOTONIC (now_ns()):
 *     valid_until = t_send(last successful grant/renewal) + min(ttl_ms, TTL granted) - margin
 * A renewal is a txn rewriting the key under our lease (its mod_revision is the heartbeat a successor
 * watches, see witness_takeover) followed by a lease keepalive; t_send is taken before both.
 * t_send is read BEFORE the request is sent (network delay only shortens the window), so while
 * now < valid_until the server cannot yet have expired the lease and no other holder can have
 * acquired the key (clock rates assumed equal within `margin`). A keepalive answered with TTL <= 0
 * means the lease is gone: valid_until drops to 0 at once and witness_lost() becomes 1.
 *
 * Transport: `urls` is a comma-separated list of etcd client URLs ("http://10.0.0.21:2379,...").
 * Each request tries them in order, starting with the last one that worked, and moves on after a
 * connect error, a timeout or an HTTP 5xx; every attempt is bounded by a timeout (libcurl
 * CURLOPT_TIMEOUT_MS / CONNECTTIMEOUT_MS), so no call blocks longer than n_urls * that timeout
 * (keepalives: the request timeout; acquire/release/holder: the op timeout; see the setters).
 * Proxies from the environment are ignored. Use numeric addresses (libcurl's synchronous resolver
 * cannot time out without signals).
 *
 * Threads: witness_new/acquire/release/holder/free and the setters on ONE caller thread; the
 * keepalive thread is internal (own curl handle); witness_valid_until_ns, witness_lease_valid,
 * witness_token, witness_lost are lock-free atomics callable from any thread (e.g. the epoch
 * path). No globals: any number of witnesses per process.
 *
 * Errors: functions return 0 or -errno and write one line into err (when given):
 *     -EBUSY      another holder has the key (acquire)
 *     -ENOENT     nobody holds the key (holder)
 *     -ETIMEDOUT / -ECONNREFUSED / -EHOSTUNREACH   no endpoint answered in time / at all
 *     -EPROTO     an endpoint answered with something that is not the expected JSON
 *     -EINVAL     bad arguments (URL list, name, ttl)
 */
// clang-format on

struct witness;

/* Create a witness client for VM `vm_name` (key /doppel/vm/<vm_name>/active) with lease TTL
 * `ttl_ms` (>= 100; etcd grants whole seconds, rounded up — the local window uses the smaller of
 * ttl_ms and the granted TTL). No network traffic yet. Defaults: margin = ttl/10 + 50 ms, renew
 * every ttl/3, keepalive request timeout = clamp(ttl/4, 50, 2000) ms, connect timeout =
 * min(request timeout, 200 ms), other requests' timeout = clamp(ttl, 1000, 5000) ms.
 * Returns 0 or -EINVAL/-ENOMEM with one line in err. */
int witness_new(struct witness **out, const char *urls, const char *vm_name, uint32_t ttl_ms, char *err,
		size_t errlen) __attribute__((warn_unused_result));

/* Stop the keepalive thread, free everything. Does NOT release the key (call witness_release
 * first for a clean hand-over; otherwise the lease simply expires). NULL is fine. */
void witness_free(struct witness *w);

/* Tuning (before acquire / start_keepalive). Returns 0 or -EINVAL.
 * margin: subtracted from every validity window (< ttl).
 * renew: keepalive interval (default ttl/3; 10 ms .. < ttl). An etcd leader election stalls
 *   renewals for ~1-2 election timeouts: renewing more often keeps the lease provable across it.
 * timeouts: connect timeout (all requests) and whole-request timeout of one keepalive attempt at
 *   one endpoint (connect <= request; keepalives must hop past a dead member quickly).
 * op timeout: whole-request timeout of one attempt of acquire/release/holder/witness_renew (grant
 *   and txn are Raft writes with an fsync: slow disks need more; default clamp(ttl, 1 s, 5 s);
 *   >= connect). */
int witness_set_margin_ms(struct witness *w, uint32_t margin_ms);
int witness_set_renew_ms(struct witness *w, uint32_t interval_ms);
int witness_set_timeouts_ms(struct witness *w, uint32_t connect_ms, uint32_t request_ms);
int witness_set_op_timeout_ms(struct witness *w, uint32_t op_ms);

/* Grant a lease and create the key with it (txn: create_revision == 0), value = holder_id.
 * 0: we hold it; witness_token() is the key's create revision, the lease is valid (see above) and
 * witness_lost() is 0. Already holding it with a provably valid lease under the same holder id is 0
 * too; an older lease we can no longer prove is first dropped (keepalive stopped, lease revoked
 * best-effort) and a fresh one acquired (new token). -EBUSY: someone else holds it (its
 * holder id is in err; our fresh lease is revoked). Other -errno: transport/protocol error (our
 * lease, if granted, is revoked best-effort). Does not start the keepalive thread. */
int witness_acquire(struct witness *w, const char *holder_id, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/*
 * Take the key over from a holder that stopped renewing (a successor: the standby at failover).
 * Every renewal of a holder rewrites the key (new mod_revision) and its value declares its validity
 * window ttl_ms. The first time this call sees a mod_revision it notes now_ns(): that renewal was
 * sent before then, so its sender's window ends before now + its ttl_ms - its margin. Once now is
 * past that observation + ttl_ms (margin: clock-rate error), a txn deletes the key if its
 * mod_revision is still the same (a renewal meanwhile fails the txn; any later renewal of the old
 * holder fails, the key being gone, and the old holder learns it is lost), the old lease is revoked
 * and the key acquired as witness_acquire does (new, larger token). So failover takes the holder's
 * ttl_ms after its last renewal, independent of etcd's whole-second lease TTLs and its 500 ms expiry
 * loop. Call it repeatedly (e.g. every 20 ms) until it returns 0: -EBUSY means "not yet" (err says
 * why and for how long), other -errno as witness_acquire. An absent key is acquired at once. */
int witness_takeover(struct witness *w, const char *holder_id, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* One keepalive of the held lease, now, on the calling thread (the keepalive thread uses the same
 * code). 0: renewed, valid_until moved on. -ENOENT: the lease is gone (TTL <= 0; valid_until = 0,
 * witness_lost() = 1). -ENOLCK: nothing held. Other -errno: no endpoint answered (validity unchanged:
 * it runs out on its own). Not to be called while the keepalive thread runs. */
int witness_renew(struct witness *w, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Tie renewals to the holder's progress: before each renewal the keepalive thread calls
 * alive(opaque) and skips the renewal when it returns 0 (the validity window then runs out and a
 * successor can take over), so a holder whose own work is wedged does not keep the key alive from
 * this thread. Set before witness_start_keepalive; alive must be thread-safe and non-blocking. */
void witness_set_liveness(struct witness *w, int (*alive)(void *opaque), void *opaque);

/* Start/stop the internal keepalive thread: one renewal every renew interval (default TTL/3;
 * retries every min(TTL/10, 100 ms) after a failure) until stopped or the lease is lost. Start
 * after a successful acquire. Stop joins the thread (bounded by one request). Returns 0 or -errno.
 * stop on a stopped witness is a no-op. */
int witness_start_keepalive(struct witness *w, char *err, size_t errlen) __attribute__((warn_unused_result));
void witness_stop_keepalive(struct witness *w);

/* Stop keepalives, delete the key if it is still ours (txn: value == holder_id and lease == ours)
 * and revoke the lease. Afterwards valid_until = 0, token 0. 0 also when nothing was held or the
 * lease had already expired; -errno on transport errors (the lease then expires on its own). */
int witness_release(struct witness *w, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Who holds the key now (a linearizable read): holder id into buf (len bytes, truncated,
 * NUL-terminated) and its create revision into *token (either may be NULL). 0, -ENOENT (nobody),
 * or -errno. */
int witness_holder(struct witness *w, char *buf, size_t len, uint64_t *token, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Any thread, lock-free. */
uint64_t witness_valid_until_ns(const struct witness *w); /* 0 when nothing is (provably) held */
int witness_lease_valid(const struct witness *w); /* now_ns() < valid_until */
uint64_t witness_token(const struct witness *w); /* fencing token of our hold, 0 when none */
int witness_lost(const struct witness *w); /* 1 once etcd said our lease is gone */
/* Last successful renewal: request send time (now_ns clock) and round-trip ns; 0 when none. */
uint64_t witness_last_renew_ns(const struct witness *w);
uint64_t witness_last_rtt_ns(const struct witness *w);

/* The key ("/doppel/vm/<name>/active") and the lease TTL in ms; valid for w's life. */
const char *witness_key(const struct witness *w);
uint32_t witness_ttl_ms(const struct witness *w);

#endif
