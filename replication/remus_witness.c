/* remus_witness.c — Remus and the etcd witness: the active copy holds the key; output only under a provable lease. */
#include <errno.h>
#include <json-c/json.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "replication/remus_priv.h"
#include "replication/witness.h"
#include "vmm/vmm.h"
#include "common/clock.h"
#include "common/errf.h"
#include "common/log.h"

#define CHECK_MS 10 /* lease check period: well inside the witness margin (>= 50 ms) */

/* The lease can no longer be proven: this copy must not release anything again. */
static void lease_unproven(struct remus *r)
{
	if (r->pstate == PS_FENCED || r->role == REMUS_STANDBY)
		return;
	ev_timer_stop(r->loop, &r->wit_w);
	remus_record_event(r, "witness-lost", r->acked_epoch, "%s",
			   witness_lost(r->wit) ? "our lease is gone (another copy may hold the key)"
						: "the lease cannot be proven valid any more");
	remus_fence(r, witness_lost(r->wit) ? "witness: our lease is gone (another copy may hold the key)"
					    : "witness: the lease cannot be proven valid any more");
}

static void check_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct remus *r = w->data;

	(void)loop, (void)revents;
	atomic_store(&r->wit_loop_ns, now_ns());
	if (!witness_lease_valid(r->wit))
		lease_unproven(r);
}

/* The keepalive thread renews only while this copy's loop runs its lease checks (every CHECK_MS):
 * a copy whose loop is wedged (e.g. vm_pause stuck on a vCPU blocked in a UART write) lets its
 * window run out, so the standby can take over. */
static int loop_alive(void *opaque)
{
	struct remus *r = opaque;

	return now_ns() - atomic_load(&r->wit_loop_ns) < (uint64_t)witness_ttl_ms(r->wit) * 1000000ull / 2;
}

bool remus_witness_may_release(struct remus *r)
{
	if (!r->wit)
		return true;
	if (witness_lease_valid(r->wit))
		return true;
	lease_unproven(r);
	return false;
}

static void holder_id(struct remus *r, const char *role, char *buf, size_t len)
{
	char host[64] = "?";

	gethostname(host, sizeof(host) - 1);
	snprintf(buf, len, "%s:%d:%s:%s", host, (int)getpid(), vmm_name(r->v), role);
}

int remus_witness_config(struct remus *r, const char *urls, const char *name, uint32_t ttl_ms, char *err,
			 size_t errlen)
{
	int rc;

	if (r->wit)
		return errf(err, errlen, -EALREADY, "a witness is already configured");
	rc = witness_new(&r->wit, urls, name && *name ? name : vmm_name(r->v), ttl_ms, err, errlen);
	if (rc)
		return rc;
	/* Renew at TTL/6 (not the default TTL/3): an etcd leader election stalls renewals for one or
	 * two election timeouts, and the lease must stay provable across it. */
	if (ttl_ms / 6 >= 10)
		(void)witness_set_renew_ms(r->wit, ttl_ms / 6);
	ev_init(&r->wit_w, check_cb);
	r->wit_w.data = r;
	return 0;
}

/* The witness side of holding the key: acquire (a primary: a free key) or take it over (a standby:
 * from a holder that stopped renewing, witness_takeover), then keep it alive. No loop state is
 * touched: a standby's takeover job calls it on its own thread (the loop calls no witness function
 * meanwhile). 0: acquired (then remus_witness_held on the loop), 1: held already, or -errno
 * (-EBUSY: another copy holds it); the holder id into id. */
int remus_witness_try_hold(struct remus *r, bool standby, char *id, size_t idlen, char *err, size_t errlen)
{
	int rc;

	holder_id(r, standby ? "standby" : "primary", id, idlen);
	if (witness_lease_valid(r->wit) && witness_token(r->wit))
		return 1; /* ours already (an unprotected copy protecting again) */
	rc = standby ? witness_takeover(r->wit, id, err, errlen) : witness_acquire(r->wit, id, err, errlen);
	atomic_store(&r->wit_loop_ns, now_ns());
	witness_set_liveness(r->wit, loop_alive, r);
	if (!rc)
		rc = witness_start_keepalive(r->wit, err, errlen);
	return rc;
}

/* Loop thread, once the key is held: the lease check, the log line and the event. */
void remus_witness_held(struct remus *r, const char *id, const char *role)
{
	snprintf(r->wit_holder, sizeof(r->wit_holder), "%s", id);
	ev_timer_set(&r->wit_w, CHECK_MS / 1e3, CHECK_MS / 1e3);
	ev_timer_again(r->loop, &r->wit_w);
	log_info("remus", vmm_name(r->v), "witness: holding %s, token %llu", witness_key(r->wit),
		 (unsigned long long)witness_token(r->wit));
	struct json_object *f = json_object_new_object();
	json_object_object_add(f, "key", json_object_new_string(witness_key(r->wit)));
	json_object_object_add(f, "token", json_object_new_int64((int64_t)witness_token(r->wit)));
	json_object_object_add(f, "holder", json_object_new_string(id));
	json_object_object_add(f, "role", json_object_new_string(role));
	remus_event_fields(r, "witness-acquired",
			   r->role == REMUS_STANDBY ? r->committed_epoch : r->acked_epoch, f,
			   "holding the witness key as %s", role);
}

/* Acquire (or keep) the key and keep it alive, on the loop thread; 0 or -errno. */
static int hold_key(struct remus *r, const char *role, char *err, size_t errlen)
{
	char id[160];
	int rc = remus_witness_try_hold(r, r->role == REMUS_STANDBY, id, sizeof(id), err, errlen);

	if (!rc)
		remus_witness_held(r, id, role);
	return rc > 0 ? 0 : rc;
}

int remus_witness_primary_start(struct remus *r, char *err, size_t errlen)
{
	char e[256];
	int rc;

	if (!r->wit)
		return 0;
	rc = hold_key(r, "primary", e, sizeof(e));
	if (rc == -EBUSY)
		return errf(err, errlen, rc, "witness: another copy is active (%s)", e);
	if (rc)
		return errf(err, errlen, rc, "witness: %s", e);
	return 0;
}

/* ---- standby: the takeover's witness step runs in remus_takeover.c ---------------------------- */

/* A planned takeover (switchover GO) on the loop: one attempt. */
int remus_witness_acquire_now(struct remus *r, char *err, size_t errlen)
{
	char e[256];
	int rc;

	if (!r->wit)
		return 0;
	if (r->tk_running) /* a takeover job owns the witness client now */
		return errf(err, errlen, -EBUSY, "witness: a takeover is in progress");
	rc = hold_key(r, "standby", e, sizeof(e));
	if (rc)
		return errf(err, errlen, rc, "witness: %s", e);
	return 0;
}

void remus_witness_status(struct remus *r, struct json_object *o)
{
	struct json_object *w;
	uint64_t until, now = now_ns();

	if (!r->wit)
		return;
	w = json_object_new_object();
	until = witness_valid_until_ns(r->wit);
	json_object_object_add(w, "key", json_object_new_string(witness_key(r->wit)));
	json_object_object_add(w, "token", json_object_new_int64((int64_t)witness_token(r->wit)));
	json_object_object_add(w, "lease_valid_ms",
			       json_object_new_double(until > now ? (double)(until - now) / 1e6 : 0));
	json_object_object_add(w, "ttl_ms", json_object_new_int((int)witness_ttl_ms(r->wit)));
	json_object_object_add(w, "holder", until > now ? json_object_new_string(r->wit_holder) : NULL);
	json_object_object_add(w, "lost", json_object_new_boolean(witness_lost(r->wit)));
	pthread_mutex_lock(&r->lock); /* the takeover job writes the reason */
	if (r->wit_waiting)
		json_object_object_add(w, "waiting", json_object_new_string(r->wit_wait_reason));
	pthread_mutex_unlock(&r->lock);
	json_object_object_add(o, "witness", w);
}

bool remus_witness_unproven(struct remus *r)
{
	return r->wit && r->role != REMUS_STANDBY && !witness_lease_valid(r->wit);
}

void remus_witness_free(struct remus *r)
{
	char e[256];

	if (!r->wit)
		return;
	/* An orderly exit hands the key over at once (a fenced copy's lease is gone anyway). */
	if (r->pstate != PS_FENCED && witness_lease_valid(r->wit) && witness_release(r->wit, e, sizeof(e)))
		log_warn("remus", vmm_name(r->v), "witness: release: %s", e);
	witness_free(r->wit);
	r->wit = NULL;
}
