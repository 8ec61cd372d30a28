/* remus_protect.c — `protect`: validate the request, take the witness key, connect (TLS), start the session. */
#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "replication/remus_priv.h"
#include "replication/sock.h"
#include "vmm/vmm.h"
#include "common/clock.h"
#include "common/errf.h"
#include "common/log.h"

static int get_ms(struct json_object *req, const char *key, uint32_t def, uint32_t lo, uint32_t hi,
		  uint32_t *out)
{
	struct json_object *j;

	*out = def;
	if (!json_object_object_get_ex(req, key, &j))
		return 0;
	if (!json_object_is_type(j, json_type_int))
		return -EINVAL;
	int64_t x = json_object_get_int64(j);
	if (x < lo || x > hi)
		return -EINVAL;
	*out = (uint32_t)x;
	return 0;
}

/* protect's COLO arguments: "mode", "checkpoint_interval_ms", "compare_timeout_ms". NULL when
 * fine, else the error reply. */
static struct json_object *colo_args(struct remus *r, struct json_object *req, bool *colo, uint32_t *civ,
				     uint32_t *cto)
{
	struct json_object *j;

	if (json_object_object_get_ex(req, "mode", &j)) {
		const char *m = json_object_is_type(j, json_type_string) ? json_object_get_string(j) : "";
		if (strcmp(m, "remus") && strcmp(m, "colo"))
			return ctl_error("bad mode (remus or colo)");
		*colo = !strcmp(m, "colo");
	}
	if (!*colo)
		return NULL;
	if (get_ms(req, "checkpoint_interval_ms", COLO_DEFAULT_INTERVAL_MS, REMUS_MIN_INTERVAL_MS,
		   REMUS_MAX_INTERVAL_MS, civ))
		return ctl_error("bad checkpoint_interval_ms (%u..%u)", REMUS_MIN_INTERVAL_MS,
				 REMUS_MAX_INTERVAL_MS);
	if (get_ms(req, "compare_timeout_ms", 100, 1, 60000, cto))
		return ctl_error("bad compare_timeout_ms (1..60000)");
	if (!vmm_net_count(r->v))
		return ctl_error("--mode colo needs a network device (--net): it compares output");
	return NULL;
}

static void protect_start_event(struct remus *r)
{
	struct json_object *f = json_object_new_object();

	json_object_object_add(f, "peer", json_object_new_string(r->peer));
	json_object_object_add(f, "interval_ms", json_object_new_int((int)r->interval_ms));
	json_object_object_add(f, "heartbeat_timeout_ms", json_object_new_int((int)r->hb_timeout_ms));
	json_object_object_add(f, "standby_lost",
			       json_object_new_string(remus_lost_policy_name(r->lost_policy)));
	remus_event_fields(r, "protect-start", r->next_epoch - 1, f, "protecting to %s", r->peer);
}

/* Optional string field of a request: 0 (absent: *out NULL, or a string), -EINVAL (not a string). */
static int get_str(struct json_object *req, const char *key, const char **out)
{
	struct json_object *j;

	*out = NULL;
	if (!json_object_object_get_ex(req, key, &j))
		return 0;
	if (!json_object_is_type(j, json_type_string))
		return -EINVAL;
	*out = json_object_get_string(j);
	return 0;
}

/* Connect to the standby within timeout_ms; with "tls_dir" in the request, TLS 1.3 with mutual
 * authentication within the same bound (the handshake runs here, on the loop, like the connect).
 * Returns the descriptor the engine uses (the TLS relay's end with TLS) or -errno with err. */
static int protect_connect(struct remus *r, struct json_object *req, const char *peer, int timeout_ms,
			   char *err, size_t errlen)
{
	const char *dir, *name;
	struct tls_cfg *tc = NULL;
	char e2[256], id[TLS_ID_MAX];
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ull;
	int fd, rc;

	if (get_str(req, "tls_dir", &dir) || get_str(req, "tls_peer_name", &name))
		return errf(err, errlen, -EINVAL, "tls_dir and tls_peer_name must be strings");
	if (name && !dir)
		return errf(err, errlen, -EINVAL, "--tls-peer-name needs --tls-dir");
	if (dir && (rc = tls_cfg_load(&tc, dir, name, err, errlen)))
		return rc;
	fd = sock_connect(peer, timeout_ms, err, errlen);
	if (fd < 0) {
		tls_cfg_free(tc);
		return fd;
	}
	if (tc) {
		rc = tls_wrap(tc, false, &fd, deadline, id, sizeof(id), e2, sizeof(e2));
		if (rc) {
			if (fd >= 0)
				close(fd);
			tls_cfg_free(tc);
			return errf(err, errlen, rc, "standby %s: %s", peer, e2);
		}
		log_info("remus", vmm_name(r->v), "replication to %s over TLS 1.3 (peer certificate %s)",
			 peer, id);
	} else {
		log_warn("remus", vmm_name(r->v),
			 "replication to %s is plaintext and unauthenticated (no --tls-dir)", peer);
	}
	tls_cfg_free(r->tls);
	r->tls = tc;
	return fd;
}

/* What a protect request asks for, validated before anything changes. */
struct protect_args {
	const char *peer;
	enum remus_lost_policy lp;
	uint32_t grace, wttl, hold, iv, to, civ, cto;
	uint64_t dcache;
	bool colo;
};

/* Refusals: the copy's role and state must allow a protect. NULL when it may. */
static struct json_object *protect_refusal(struct remus *r)
{
	if (r->role == REMUS_STANDBY)
		return ctl_refused("%s is a standby; protect its primary instead", vmm_name(r->v));
	if (r->role == REMUS_PRIMARY)
		return ctl_refused("%s is already protected (peer %s)", vmm_name(r->v), r->peer);
	if (r->pstate == PS_FENCED)
		return ctl_refused("%s is fenced (another copy may be live): stop it", vmm_name(r->v));
	if (vmm_held(r->v) || vm_get_state(r->vm) != VM_RUNNING)
		return ctl_refused("%s is not running (%s)", vmm_name(r->v),
				   vm_state_name(vm_get_state(r->vm)));
	return NULL;
}

/* Every field of the request (the witness is configured here, not yet taken). NULL or the error. */
static struct json_object *protect_parse(struct remus *r, struct json_object *req, struct protect_args *a)
{
	struct json_object *j;
	char err[256];

	*a = (struct protect_args){
		.lp = LOST_RELEASE, .dcache = SR_DELTA_DEFAULT, .civ = COLO_DEFAULT_INTERVAL_MS};
	if (!json_object_object_get_ex(req, "peer", &j) || !json_object_is_type(j, json_type_string))
		return ctl_error("protect needs a \"peer\" string (ADDR:PORT)");
	a->peer = json_object_get_string(j);
	if (strlen(a->peer) >= sizeof(r->peer))
		return ctl_error("peer address too long");
	if (json_object_object_get_ex(req, "standby_lost", &j)) {
		const char *x = json_object_is_type(j, json_type_string) ? json_object_get_string(j) : "";
		if (remus_lost_policy_parse(x, &a->lp))
			return ctl_error("bad standby_lost (release, hold or fence)");
	}
	if (get_ms(req, "fence_grace_ms", 5000, 0, 3600000, &a->grace))
		return ctl_error("bad fence_grace_ms (0..3600000)");
	if (remus_switch_protect_opts(r, req, err, sizeof(err)))
		return ctl_error("%s", err);
	if (get_ms(req, "hold_timeout_ms", 0, 0, 86400000, &a->hold))
		return ctl_error("bad hold_timeout_ms (0..86400000)");
	if (get_ms(req, "witness_ttl_ms", 1000, 100, 600000, &a->wttl))
		return ctl_error("bad witness_ttl_ms (100..600000)");
	if (json_object_object_get_ex(req, "witness", &j) && !r->wit) {
		struct json_object *wn = NULL;
		json_object_object_get_ex(req, "witness_name", &wn);
		if (!json_object_is_type(j, json_type_string) ||
		    remus_witness_config(r, json_object_get_string(j), wn ? json_object_get_string(wn) : NULL,
					 a->wttl, err, sizeof(err)))
			return ctl_error("bad witness: %s",
					 json_object_is_type(j, json_type_string) ? err : "not a string");
	}
	if (json_object_object_get_ex(req, "delta_cache", &j)) {
		if (!json_object_is_type(j, json_type_int) || json_object_get_int64(j) < 0 ||
		    (uint64_t)json_object_get_int64(j) > SR_DELTA_MAX)
			return ctl_error("bad delta_cache (bytes, 0..%llu; 0 = no delta encoding)",
					 (unsigned long long)SR_DELTA_MAX);
		a->dcache = (uint64_t)json_object_get_int64(j);
	}
	if (get_ms(req, "interval_ms", 25, REMUS_MIN_INTERVAL_MS, REMUS_MAX_INTERVAL_MS, &a->iv))
		return ctl_error("bad interval_ms (%u..%u)", REMUS_MIN_INTERVAL_MS, REMUS_MAX_INTERVAL_MS);
	if (get_ms(req, "heartbeat_timeout_ms", 200, REMUS_MIN_TIMEOUT_MS, REMUS_MAX_TIMEOUT_MS, &a->to))
		return ctl_error("bad heartbeat_timeout_ms (%u..%u)", REMUS_MIN_TIMEOUT_MS,
				 REMUS_MAX_TIMEOUT_MS);
	return colo_args(r, req, &a->colo, &a->civ, &a->cto);
}

/* The delta cache the request asks for (kept across protects when its size is unchanged). */
static struct json_object *protect_delta(struct remus *r, uint64_t dcache)
{
	if (dcache == r->delta_bytes && (!dcache || r->delta))
		return NULL;
	sr_delta_free(r->delta); /* the sender is not running: nobody else holds it */
	r->delta = NULL;
	r->delta_bytes = 0;
	if (dcache && sr_delta_new(&r->delta, dcache))
		return ctl_error("out of memory for a %llu-byte delta cache", (unsigned long long)dcache);
	r->delta_bytes = dcache;
	return NULL;
}

/* A new session's counters and settings (the loop is the only writer of most of them). */
static void protect_reset(struct remus *r, const struct protect_args *a, int fd)
{
	r->colo_on = a->colo;
	snprintf(r->peer, sizeof(r->peer), "%s", a->peer);
	pthread_mutex_lock(&r->lock); /* metrics count bytes across sessions */
	r->raw_base += r->bytes_raw;
	r->wire_base += r->bytes_wire;
	r->bytes_raw = r->bytes_wire = 0;
	pthread_mutex_unlock(&r->lock);
	r->interval_ms = a->colo ? a->civ : a->iv;
	r->hb_timeout_ms = a->to;
	r->lost_policy = a->lp;
	r->fence_grace_ms = a->grace;
	r->hold_timeout_ms = a->hold;
	ev_timer_stop(r->loop, &r->hold_w);
	r->standby_rejected = false;
	r->reject_reason = 0;
	r->pstate = PS_SYNCING;
	r->fd = fd;
	r->mb.n = 0;
	r->stop_sender = r->job_pending = r->precopy_done = false;
	r->sender_err[0] = 0;
	r->first_ckpt = 0;
	r->acked_epoch = r->last_sent_epoch = 0;
	r->last_error[0] = 0;
	r->last_rx_ns = r->protect_start_ns = now_ns();
	r->role = REMUS_PRIMARY;
}

/* May the loop thread go SCHED_FIFO around epochs (remus_checkpoint)? Probe once, then back. */
static void probe_fifo(struct remus *r)
{
	struct sched_param sp;
	int pol;

	if (!pthread_getschedparam(pthread_self(), &pol, &sp) && pol == SCHED_OTHER)
		r->fifo_ok = !pthread_setschedparam(pthread_self(), SCHED_FIFO,
						    &(struct sched_param){.sched_priority = 1}) &&
			     !pthread_setschedparam(pthread_self(), SCHED_OTHER, &sp);
}

struct json_object *remus_cmd_protect(struct remus *r, struct json_object *req)
{
	struct json_object *bad = protect_refusal(r);
	struct protect_args a;
	char err[256];
	int fd;

	if (!bad)
		bad = protect_parse(r, req, &a);
	/* The key first: refuse to protect a copy that is not (or no longer) the active one. */
	if (!bad && remus_witness_primary_start(r, err, sizeof(err)))
		bad = ctl_error("%s", err);
	if (!bad)
		bad = protect_delta(r, a.dcache);
	if (bad)
		return bad;
	fd = protect_connect(r, req, a.peer, a.to > 2000 ? (int)a.to : 2000, err, sizeof(err));
	if (fd < 0)
		return ctl_error("%s", err);
	if (remus_primary_prepare(r, remus_switch_resume(req), err, sizeof(err))) {
		close(fd);
		return ctl_error("%s", err);
	}
	if (a.colo && colo_primary_start(r, a.civ, a.cto, err, sizeof(err))) {
		ckpt_engine_stop(&r->eng);
		close(fd);
		return ctl_error("%s", err);
	}
	protect_reset(r, &a, fd);
	if (remus_primary_arm(r, fd))
		return ctl_error("cannot start the sender thread");
	protect_start_event(r);
	probe_fifo(r);
	r->reply_conn = vmm_ctl_current(r->v);
	return r->reply_conn ? CTL_DEFER : json_object_new_object();
}
