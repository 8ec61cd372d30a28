/* remus_takeover.c — a standby's takeover: witness key and --fence-cmd on a job thread, the loop runs on. */
#include <errno.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "replication/remus_priv.h"
#include "replication/witness.h"
#include "common/spawner.h"
#include "vmm/vmm.h"
#include "common/clock.h"
#include "common/errf.h"
#include "common/log.h"

#define POLL_MS 10 /* the job looks at its cancel flag (and the fence command) this often */

static const char *const step_names[] = {
	[TK_IDLE] = NULL,
	[TK_ACQUIRING] = "acquiring-witness",
	[TK_FENCING] = "fencing",
	[TK_REFUSED] = "refused",
};

static void nap_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* Job: take the key over from the lost primary, retrying every TTL/20 (>= 20 ms) until it is ours
 * (or once, for `doppel failover`). A job cancelled after it got the key hands it back. */
static int job_acquire(struct remus *r, char *err, size_t errlen)
{
	unsigned every = witness_ttl_ms(r->wit) / 20 < 20 ? 20 : witness_ttl_ms(r->wit) / 20;
	char e[256];
	int rc;

	for (;;) {
		if (atomic_load(&r->tk_cancel))
			return errf(err, errlen, -ECANCELED, "cancelled");
		rc = remus_witness_try_hold(r, true, r->tk_id, sizeof(r->tk_id), e, sizeof(e));
		if (rc >= 0)
			break;
		if (r->tk_once)
			return errf(err, errlen, rc, "witness: %s", e);
		pthread_mutex_lock(&r->lock);
		snprintf(r->wit_wait_reason, sizeof(r->wit_wait_reason), "%s%.200s",
			 rc == -EBUSY ? "" : "witness unreachable: ", e);
		pthread_mutex_unlock(&r->lock);
		for (unsigned t = 0; t < every && !atomic_load(&r->tk_cancel); t += POLL_MS)
			nap_ms(POLL_MS);
	}
	if (atomic_load(&r->tk_cancel) && rc == 0) {
		if (witness_release(r->wit, e, sizeof(e)))
			log_warn("remus", vmm_name(r->v), "witness: release after a cancelled takeover: %s",
				 e);
		return errf(err, errlen, -ECANCELED, "cancelled");
	}
	return rc; /* 0: acquired now, 1: ours already */
}

/* Job: the site's STONITH, `sh -c CMD` run by the fence helper (common/spawner.c: forked before the
 * sandbox, so the command has the host's full system-call set); 0 only if it exits 0 within the
 * timeout. A cancel (the process exits) or the timeout kills it: no takeover. */
static int job_fence(struct remus *r, char *err, size_t errlen)
{
	uint64_t t0 = now_ns(), deadline = t0 + REMUS_FENCE_TIMEOUT_MS * 1000000ull;
	int st = 0, rc;

	if (!r->fence)
		return errf(err, errlen, -EINVAL, "no fence helper: no takeover");
	rc = spawner_run(r->fence, deadline, &r->tk_cancel, &r->tk_child, &st, err, errlen);
	if (rc == -ETIMEDOUT || rc == -ECANCELED)
		return errf(err, errlen, -ETIMEDOUT,
			    "the fence command %s after %.1f s (killed): no takeover",
			    rc == -ETIMEDOUT ? "timed out" : "was cancelled", (double)(now_ns() - t0) / 1e9);
	if (rc) {
		char why[256];

		snprintf(why, sizeof(why), "%s", err);
		return errf(err, errlen, rc, "the fence command could not run (%s): no takeover", why);
	}
	if (WIFSIGNALED(st))
		return errf(err, errlen, -EPERM, "the fence command was killed by signal %d: no takeover",
			    WTERMSIG(st));
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		return errf(err, errlen, -EPERM, "the fence command failed (status %d): no takeover",
			    WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	return 0;
}

static void *job_main(void *arg)
{
	struct remus *r = arg;

	r->tk_err[0] = 0;
	r->tk_rc = r->tk_step == TK_ACQUIRING ? job_acquire(r, r->tk_err, sizeof(r->tk_err))
					      : job_fence(r, r->tk_err, sizeof(r->tk_err));
	remus_notify(r, RA_TAKEOVER);
	return NULL;
}

static int job_start(struct remus *r, int step, char *err, size_t errlen)
{
	int rc;

	atomic_store(&r->tk_cancel, false);
	r->tk_step = step;
	if (step == TK_ACQUIRING) {
		pthread_mutex_lock(&r->lock);
		r->wit_waiting = true;
		snprintf(r->wit_wait_reason, sizeof(r->wit_wait_reason), "acquiring the witness key");
		pthread_mutex_unlock(&r->lock);
	}
	rc = pthread_create(&r->tk_thread, NULL, job_main, r);
	if (rc) {
		r->tk_step = TK_IDLE;
		return errf(err, errlen, -rc, "cannot start the takeover thread: %s", strerror(rc));
	}
	r->tk_running = true;
	return 0;
}

/* No takeover: the replica stays (a later `doppel failover` may try again). */
static void refuse(struct remus *r, int rc, const char *err)
{
	const char *why = r->takeover_why;

	pthread_mutex_lock(&r->lock);
	r->failed_over = false;
	r->wit_waiting = false;
	pthread_mutex_unlock(&r->lock);
	r->tk_step = TK_REFUSED;
	snprintf(r->last_error, sizeof(r->last_error), "%.120s; %.120s", why, err);
	if (strstr(err, "fence command"))
		remus_record_event(r, "fence-failed", r->committed_epoch, "%s", err);
	remus_record_event(r, "no-takeover", 0, "%s; %s", why, err);
	log_warn("remus", vmm_name(r->v), "standby: %s; %s", why, err);
	if (r->tk_reply)
		remus_finish_reply(&r->tk_reply, rc == -EAGAIN || !strncmp(err, "witness:", 8)
							 ? ctl_refused("failover refused: %s", err)
							 : ctl_error("failover failed: %s", err));
}

/* The last step: apply the state and run. */
static void finish(struct remus *r)
{
	char err[256] = "", why[260];
	int rc;

	if (r->wit)
		snprintf(why, sizeof(why), "%.190s; witness token %llu", r->takeover_why,
			 (unsigned long long)witness_token(r->wit));
	else
		snprintf(why, sizeof(why), "%.200s", r->takeover_why);
	rc = remus_standby_failover(r, why, false, err, sizeof(err));
	if (rc) {
		refuse(r, rc, err);
		return;
	}
	r->tk_step = TK_IDLE;
	if (r->tk_reply) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "role", json_object_new_string("unprotected"));
		json_object_object_add(o, "epoch", json_object_new_int64((int64_t)r->committed_epoch));
		remus_finish_reply(&r->tk_reply, o);
	}
}

/* After the key (or without a witness): the fence command on the job thread, else run now. */
static void fence_step(struct remus *r)
{
	char err[256] = "";
	int rc;

	if (!r->fence_cmd[0]) {
		finish(r);
		return;
	}
	rc = remus_standby_halt_reader(r, err, sizeof(err));
	if (!rc)
		rc = job_start(r, TK_FENCING, err, sizeof(err));
	if (rc)
		refuse(r, rc, err);
}

static void begin(struct remus *r, const char *why, bool once)
{
	char err[256] = "";
	int rc = 0;

	snprintf(r->takeover_why, sizeof(r->takeover_why), "%.190s", why);
	r->tk_once = once;
	pthread_mutex_lock(&r->lock);
	bool have = r->have_committed;
	pthread_mutex_unlock(&r->lock);
	if (!have) /* nothing to run: neither take the key nor fence the primary */
		rc = errf(err, sizeof(err), -EAGAIN, "no complete checkpoint received yet: cannot take over");
	else if (r->wit)
		rc = job_start(r, TK_ACQUIRING, err, sizeof(err));
	else
		fence_step(r);
	if (rc)
		refuse(r, rc, err);
}

void remus_takeover_auto(struct remus *r, const char *why)
{
	if (r->tk_running)
		return; /* a `doppel failover` in flight takes over (or says why not) */
	begin(r, why, false);
}

struct json_object *remus_takeover_manual(struct remus *r, bool force)
{
	struct ctl_conn *c = vmm_ctl_current(r->v);

	if (r->tk_running)
		return ctl_refused("a takeover is already in progress (%s)", step_names[r->tk_step]);
	r->tk_reply = c; /* answered by finish or refuse: now, or when the job ends */
	begin(r, force ? "manual failover (forced)" : "manual failover", true);
	return c ? CTL_DEFER : json_object_new_object();
}

void remus_takeover_async(struct remus *r)
{
	if (!r->tk_running)
		return;
	pthread_join(r->tk_thread, NULL);
	r->tk_running = false;
	int step = r->tk_step, rc = r->tk_rc;
	if (step == TK_ACQUIRING) {
		pthread_mutex_lock(&r->lock);
		r->wit_waiting = false;
		pthread_mutex_unlock(&r->lock);
		if (rc == -ECANCELED) {
			r->tk_step = TK_IDLE;
			return; /* a primary connected again */
		}
		if (rc < 0) {
			refuse(r, rc, r->tk_err);
			return;
		}
		if (rc == 0)
			remus_witness_held(r, r->tk_id, "standby");
		fence_step(r);
		return;
	}
	if (rc) {
		refuse(r, rc, r->tk_err);
		return;
	}
	finish(r);
}

void remus_takeover_cancel(struct remus *r)
{
	if (r->tk_running && r->tk_step == TK_ACQUIRING)
		atomic_store(&r->tk_cancel, true); /* RA_TAKEOVER follows */
	if (!r->tk_running && r->tk_step == TK_REFUSED)
		r->tk_step = TK_IDLE; /* a new primary: the old refusal is history */
}

void remus_takeover_stop(struct remus *r)
{
	if (!r->tk_running)
		return;
	atomic_store(&r->tk_cancel, true); /* the fence job kills its child within POLL_MS */
	pthread_join(r->tk_thread, NULL);
	r->tk_running = false;
	if (r->tk_reply)
		remus_finish_reply(&r->tk_reply, ctl_error("failover failed: the VM is stopping"));
}

bool remus_takeover_fencing(const struct remus *r)
{
	return r->tk_running && r->tk_step == TK_FENCING;
}

void remus_takeover_status(struct remus *r, struct json_object *o)
{
	if (r->tk_step != TK_IDLE && step_names[r->tk_step])
		json_object_object_add(o, "takeover", json_object_new_string(step_names[r->tk_step]));
}
