/* remus_end.c — how a primary's protection ends: ABANDON on purpose, standby lost (release/hold/fence), stop. */
#include <errno.h>
#include <json-c/json.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "replication/remus_priv.h"
#include "vmm/vmm.h"
#include "common/clock.h"
#include "common/log.h"

static const char *const pstate_names[] = {
	[PS_RUNNING] = "running",	[PS_SYNCING] = "syncing", [PS_PROTECTED] = "protected",
	[PS_ABANDONING] = "abandoning", [PS_HOLDING] = "holding", [PS_FENCED] = "fenced",
};
static const char *const lost_names[] = {
	[LOST_RELEASE] = "release", [LOST_HOLD] = "hold", [LOST_FENCE] = "fence"};

const char *remus_pstate_name(enum remus_pstate s)
{
	return pstate_names[s];
}

const char *remus_lost_policy_name(enum remus_lost_policy p)
{
	return lost_names[p];
}

int remus_lost_policy_parse(const char *s, enum remus_lost_policy *out)
{
	for (int i = 0; i < 3; i++)
		if (!strcmp(s, lost_names[i])) {
			*out = (enum remus_lost_policy)i;
			return 0;
		}
	return -EINVAL;
}

/* How long the standby has to confirm an ABANDON: the epoch in flight, END and its answer. */
static uint32_t abandon_timeout_ms(const struct remus *r)
{
	return r->hb_timeout_ms * 4 > 2000 ? r->hb_timeout_ms * 4 : 2000;
}

static void stop_watchers(struct remus *r)
{
	ev_timer_stop(r->loop, &r->epoch_w);
	ev_timer_stop(r->loop, &r->live_w);
	ev_timer_stop(r->loop, &r->abandon_w);
	ev_io_stop(r->loop, &r->rx_w);
	if (r->colo_on)
		colo_primary_stop(r, false);
}

/* End the sender thread and close the connection. cut: shut the socket first (the sender may be
 * blocked in a write to a standby that is gone); otherwise the sender ends on its own (after END). */
static void end_sender(struct remus *r, bool cut)
{
	pthread_mutex_lock(&r->lock);
	r->stop_sender = true;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->lock);
	if (cut && r->fd >= 0)
		shutdown(r->fd, SHUT_RDWR);
	if (r->sender_running) {
		pthread_join(r->sender, NULL); /* bounded: its writes time out (SEND_TIMEOUT_MS) */
		r->sender_running = false;
	}
	if (r->fd >= 0)
		close(r->fd);
	r->fd = -1;
	ckpt_engine_stop(&r->eng);
	ckpt_state_free(&r->eng.stage.st);
	ckpt_state_free(&r->tx.st);
}

/* The only copy: output flows again (with a witness: only under a provable lease, else fenced). */
static void run_unprotected(struct remus *r)
{
	if (!remus_witness_may_release(r))
		return;
	if (r->nb)
		netbuf_release_all(r->nb);
	if (r->colo_on)
		colo_primary_stop(r, true); /* the comparator releases what it holds */
	vmm_set_tx_hook(r->v, NULL, NULL); /* a vCPU inside the old hook still finds r->nb: kept */
	r->role = REMUS_UNPROTECTED;
	r->pstate = PS_RUNNING;
}

static void hold_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct remus *r = w->data;

	(void)loop, (void)revents;
	if (r->pstate != PS_HOLDING)
		return;
	run_unprotected(r);
	remus_record_event(r, "unprotected", r->acked_epoch,
			   "held output released after %u ms (hold timeout)", r->hold_timeout_ms);
	log_warn("remus", vmm_name(r->v), "hold timeout: held output released, running unprotected");
}

static void fence_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct remus *r = w->data;

	(void)loop, (void)revents;
	log_error("remus", vmm_name(r->v), "fenced for %u ms: exiting", r->fence_grace_ms);
	vmm_stop(r->v, 3);
}

/* Another copy may be live: never let this one's output out again. */
void remus_fence(struct remus *r, const char *why)
{
	if (r->pstate == PS_FENCED)
		return;
	if (r->role == REMUS_PRIMARY) {
		stop_watchers(r);
		end_sender(r, true);
		remus_finish_reply(&r->reply_conn, ctl_error("protect failed: fenced: %s", why));
		remus_finish_reply(&r->unprotect_conn, ctl_error("fenced: %s", why));
	}
	int rc = vm_pause(r->vm); /* an operator-like hold: nothing resumes it */

	r->fence_paused = rc == 0;
	int dropped = r->nb ? netbuf_drop_all(r->nb) : 0;
	r->role = REMUS_UNPROTECTED;
	r->pstate = PS_FENCED;
	r->nr_fenced++;
	struct json_object *f = json_object_new_object();
	json_object_object_add(f, "dropped_frames", json_object_new_int(dropped));
	json_object_object_add(f, "guest_paused", json_object_new_boolean(rc == 0));
	json_object_object_add(f, "exit_in_ms", json_object_new_int((int)r->fence_grace_ms));
	remus_event_fields(r, "fenced", r->acked_epoch, f, "%s", why);
	log_error("remus", vmm_name(r->v), "fenced (guest %s, %d held frames dropped): %s; exiting in %u ms",
		  rc ? "NOT paused" : "paused", dropped, why, r->fence_grace_ms);
	ev_timer_init(&r->fence_w, fence_cb, (double)r->fence_grace_ms / 1e3, 0);
	r->fence_w.data = r;
	ev_timer_start(r->loop, &r->fence_w);
	remus_switch_fenced(r); /* protect --rejoin: a standby instead of an exit */
}

void remus_primary_lost(struct remus *r, const char *fmt, ...)
{
	char why[200];
	va_list ap;

	if (r->role != REMUS_PRIMARY)
		return;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	stop_watchers(r);
	end_sender(r, true);
	snprintf(r->last_error, sizeof(r->last_error), "%s", why);
	if (r->standby_rejected) {
		/* It said it will not take over: this is the only copy. */
		run_unprotected(r);
		remus_record_event(r, "rejected", r->acked_epoch, "the standby refused this VM: %s", why);
		snprintf(r->last_error, sizeof(r->last_error),
			 "the standby refused this VM (%s): see its status",
			 r->reject_reason == REMUS_REJECT_STATE ? "its devices or vCPUs differ"
								: "the stream was corrupt");
		log_warn("remus", vmm_name(r->v), "%s; running unprotected", r->last_error);
		remus_finish_reply(&r->reply_conn, ctl_error("protect failed: %s", r->last_error));
		remus_finish_reply(&r->unprotect_conn, ctl_ok());
		return;
	}
	remus_record_event(r, "standby-lost", r->acked_epoch, "%s", why);
	/* With a witness our valid lease keeps the standby from taking over: releasing is safe while
	 * it can be proven (run_unprotected fences otherwise). */
	switch (r->wit ? LOST_RELEASE : r->lost_policy) {
	case LOST_RELEASE:
		run_unprotected(r);
		log_warn("remus", vmm_name(r->v), "replication to %s stopped, running unprotected: %s",
			 r->peer, why);
		break;
	case LOST_HOLD:
		r->role = REMUS_UNPROTECTED;
		r->pstate = PS_HOLDING; /* tx hook and netbuf keep holding */
		if (r->hold_timeout_ms) {
			ev_timer_init(&r->hold_w, hold_cb, (double)r->hold_timeout_ms / 1e3, 0);
			r->hold_w.data = r;
			ev_timer_start(r->loop, &r->hold_w);
		}
		log_warn("remus", vmm_name(r->v),
			 "replication to %s stopped, output held until `unprotect` (policy hold): %s",
			 r->peer, why);
		break;
	case LOST_FENCE:
		remus_fence(r, why);
		break;
	}
	remus_finish_reply(&r->reply_conn, ctl_error("protect failed: %s", why));
	remus_finish_reply(&r->unprotect_conn, ctl_error("the standby did not confirm the end (%s): %s", why,
							 remus_pstate_name(r->pstate)));
	if (r->sw != SW_NONE)
		remus_switch_lost(r, why); /* before the commit: this copy resumes */
}

static void abandon_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct remus *r = w->data;

	(void)loop, (void)revents;
	remus_primary_lost(r, "the standby did not confirm the end of replication within %u ms",
			   abandon_timeout_ms(r));
}

void remus_primary_abandon(struct remus *r, const char *fmt, ...)
{
	char why[200];
	va_list ap;

	if (r->role != REMUS_PRIMARY || r->pstate == PS_ABANDONING)
		return;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	snprintf(r->last_error, sizeof(r->last_error), "%s", why);
	pthread_mutex_lock(&r->lock);
	bool copying = !r->precopy_done;
	pthread_mutex_unlock(&r->lock);
	if (copying) {
		/* No replica of this session yet: the standby cannot take over on a cut. */
		stop_watchers(r);
		end_sender(r, true);
		run_unprotected(r);
		remus_record_event(r, "unprotected", 0, "%s (during the live copy)", why);
		log_info("remus", vmm_name(r->v), "replication to %s ended during the live copy: %s", r->peer,
			 why);
		return;
	}
	/* The sender finishes the epoch in flight and writes END; output stays held until the
	 * standby answers ABANDONED (then it cannot take over), or the timeout makes it "lost". */
	r->pstate = PS_ABANDONING;
	ev_timer_stop(r->loop, &r->epoch_w);
	pthread_mutex_lock(&r->lock);
	r->stop_sender = true;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->lock);
	ev_timer_init(&r->abandon_w, abandon_cb, (double)abandon_timeout_ms(r) / 1e3, 0);
	r->abandon_w.data = r;
	ev_timer_start(r->loop, &r->abandon_w);
	log_info("remus", vmm_name(r->v), "ending replication to %s: %s", r->peer, why);
}

void remus_primary_abandoned(struct remus *r, uint64_t epoch)
{
	if (r->role != REMUS_PRIMARY)
		return;
	if (r->pstate != PS_ABANDONING) {
		remus_primary_lost(r, "the standby ended replication unasked");
		return;
	}
	stop_watchers(r);
	end_sender(r, false);
	run_unprotected(r);
	remus_record_event(r, "unprotected", epoch, "%s; the standby stays held at epoch %llu", r->last_error,
			   (unsigned long long)epoch);
	log_info("remus", vmm_name(r->v), "replication ended (%s); the standby stays held", r->last_error);
	remus_finish_reply(&r->reply_conn, ctl_error("protect cancelled: %s", r->last_error));
	remus_finish_reply(&r->unprotect_conn, ctl_ok());
	if (r->sw == SW_ENDING)
		remus_switch_abandoned(r, epoch); /* the standby is READY: commit the switchover */
}

struct json_object *remus_cmd_unprotect(struct remus *r)
{
	if (r->pstate == PS_HOLDING) {
		/* The operator decides the standby is dead or held: this is the only copy. */
		run_unprotected(r);
		remus_record_event(r, "unprotected", r->acked_epoch, "held output released by request");
		return ctl_ok();
	}
	if (r->pstate == PS_FENCED)
		return ctl_refused("%s is fenced: another copy may be live", vmm_name(r->v));
	if (r->role != REMUS_PRIMARY)
		return ctl_refused("%s is not protected", vmm_name(r->v));
	if (r->pstate == PS_ABANDONING)
		return ctl_refused("%s: replication is already ending", vmm_name(r->v));
	remus_primary_abandon(r, "unprotect");
	if (r->role != REMUS_PRIMARY)
		return ctl_ok();
	r->unprotect_conn = vmm_ctl_current(r->v);
	return r->unprotect_conn ? CTL_DEFER : ctl_ok();
}

static void exit_msg(void *opaque, const struct remus_msg *m)
{
	if (m->type == REMUS_MSG_ABANDONED)
		*(bool *)opaque = true;
}

/* Wait (blocking: the loop has ended) for the standby's ABANDONED. */
static bool wait_abandoned(struct remus *r)
{
	uint64_t end = now_ns() + (uint64_t)abandon_timeout_ms(r) * 1000000ull;
	bool got = false;
	uint8_t buf[4096];

	while (!got) {
		uint64_t now = now_ns();
		struct pollfd p = {.fd = r->fd, .events = POLLIN};
		if (now >= end || poll(&p, 1, (int)((end - now) / 1000000 + 1)) <= 0)
			break;
		ssize_t n = recv(r->fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n <= 0 && !(n < 0 && (errno == EAGAIN || errno == EINTR)))
			break;
		if (n > 0 && remus_msgbuf_feed(&r->mb, buf, (size_t)n, exit_msg, &got) < 0)
			break;
	}
	return got;
}

void remus_primary_exit(struct remus *r)
{
	if (r->role != REMUS_PRIMARY || !r->sender_running)
		return;
	/* An orderly exit (doppel stop, SIGTERM, guest exit) is not a failure: the sender finishes the
	 * epoch in flight (staged data only) and writes END (ABANDON), the standby stays held. During
	 * the live full copy there is no replica yet: cut (guest RAM is still mapped meanwhile). */
	pthread_mutex_lock(&r->lock);
	bool copying = !r->precopy_done;
	r->stop_sender = true;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->lock);
	if (copying)
		shutdown(r->fd, SHUT_RDWR);
	pthread_join(r->sender, NULL); /* bounded by the sender's write timeout */
	r->sender_running = false;
	pthread_mutex_lock(&r->lock);
	bool clean = !*r->sender_err;
	pthread_mutex_unlock(&r->lock);
	if (!copying && clean && wait_abandoned(r)) {
		netbuf_release_all(r->nb); /* the standby stays held: this output is the only one */
		if (r->colo_on)
			colo_primary_stop(r, true);
		log_info("remus", vmm_name(r->v), "replication ended by stop; the standby stays held");
	} else if (!copying) {
		log_warn("remus", vmm_name(r->v),
			 "stop: the standby did not confirm the end; held output dropped");
	}
	ckpt_engine_stop(&r->eng);
	r->role = REMUS_UNPROTECTED;
}
