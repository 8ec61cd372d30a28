/* remus_switch.c — planned role swap (switchover, two-phase) and a fenced copy rejoining as standby. */
#include <arpa/inet.h>
#include <errno.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "replication/remus_priv.h"
#include "replication/sock.h"
#include "replication/witness.h"
#include "vmm/vmm.h"
#include "common/clock.h"
#include "common/errf.h"
#include "common/log.h"

/*
 * Switchover, on the primary P (docs/remus.md "Switchover", docs/failure-model.md):
 *   1. park P's vCPUs (vmm_hold_vcpus: also stops network RX), wait for the ACK of an epoch
 *      captured after the park (SW_FINAL): the standby S holds exactly P's state;
 *   2. ABANDON (END) -> S answers ABANDONED(e) and stays held (SW_ENDING) — S is READY;
 *   3. commit: P captures its own state (so it can still be promoted), becomes a standby listening
 *      on --listen, releases the witness key, connects to S and sends GO(e) + BACK(port) (SW_GO);
 *   4. S (remus_switch_go): takes the key, applies e, starts its vCPUs, announces, answers
 *      RUNNING(e), then protects to P (ADDR of the GO connection, port BACK): a full re-sync.
 * With TLS (protect --tls-dir / run --standby --tls-dir) the GO connection is TLS 1.3 with P's
 * protect credentials and pinned name, checked by S like any replication connection (handshake,
 * --tls-peer-name, the bound primary identity): a plaintext or foreign GO is refused there; S protects
 * back with its own --tls-dir and pinned name, which P's standby checks the same way.
 * Before GO leaves P, P wins every failure (it resumes); once GO may have arrived, P never runs on
 * its own again (it stays a held standby with the final state; `doppel failover` can promote it).
 */

#define FINAL_TIMEOUT_MS 5000 /* the final epoch's ACK */
#define GO_TIMEOUT_MS 10000 /* S's RUNNING after GO (its takeover, witness takeover) */
#define SWITCH_TICK_MS 2
#define GO_CONNECT_MS 2000 /* connect + TLS handshake of the GO connection (on the loop thread) */

static const char *const sw_names[] = {
	[SW_NONE] = "none", [SW_FINAL] = "final-epoch", [SW_ENDING] = "ending", [SW_GO] = "go-sent"};

static double ms_since(uint64_t t)
{
	return t ? (double)(now_ns() - t) / 1e6 : 0;
}

static void switch_reset(struct remus *r)
{
	ev_timer_stop(r->loop, &r->sw_w);
	ev_io_stop(r->loop, &r->sw_io);
	if (r->sw_fd >= 0)
		close(r->sw_fd);
	if (r->sw_lfd >= 0)
		close(r->sw_lfd);
	r->sw_fd = r->sw_lfd = -1;
	r->sw = SW_NONE;
}

/* The switchover did not happen and this copy is (again) the only one that may run: resume it.
 * Before the commit P is still unprotected/holding per the lost policy; after a failed GO it is
 * turned back from standby into the active copy (the key re-acquired first). */
static void switch_abort(struct remus *r, const char *why)
{
	char err[256] = "";

	if (r->role == REMUS_STANDBY) {
		ev_io_stop(r->loop, &r->accept_w);
		if (r->lfd >= 0)
			close(r->lfd);
		r->lfd = -1;
		r->role = REMUS_UNPROTECTED;
		snprintf(r->peer, sizeof(r->peer), "%s", r->sw_peer);
		if (remus_witness_primary_start(r, err, sizeof(err))) {
			switch_reset(r);
			remus_fence(r, "switchover aborted and the witness key could not be re-acquired");
			remus_finish_reply(&r->sw_conn,
					   ctl_error("switchover aborted (%s); fenced: %s", why, err));
			return;
		}
	}
	switch_reset(r);
	int rc = r->pstate == PS_FENCED ? -EPERM : vmm_held(r->v) ? vmm_start_vcpus(r->v) : 0;
	remus_record_event(r, "switchover-aborted", r->acked_epoch, "%s; %s", why,
			   rc ? "this copy stays stopped" : "this copy runs on");
	log_warn("remus", vmm_name(r->v), "switchover aborted: %s", why);
	remus_finish_reply(&r->sw_conn, ctl_error("switchover aborted: %s; %s runs here (%s)", why,
						  vmm_name(r->v), remus_pstate_name(r->pstate)));
}

static void switch_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct remus *r = w->data;

	(void)loop, (void)revents;
	if (r->sw == SW_FINAL) {
		if (r->role != REMUS_PRIMARY)
			return; /* remus_switch_lost handles it */
		if (r->acked_epoch >= r->sw_from) {
			r->sw = SW_ENDING;
			ev_timer_stop(r->loop, &r->sw_w);
			remus_primary_abandon(r, "switchover to %s", r->peer);
		} else if (ms_since(r->sw_t0) > FINAL_TIMEOUT_MS) {
			switch_abort(r, "the final epoch was not acknowledged in time");
			/* still protected: the epoch timer runs on */
		}
		return;
	}
	if (r->sw == SW_GO && ms_since(r->sw_t_commit) > GO_TIMEOUT_MS) {
		/* GO may have arrived: S may run. Never resume here on a guess. */
		switch_reset(r);
		remus_record_event(r, "switchover-unknown", r->committed_epoch,
				   "no answer to GO from %s: staying a held standby", r->sw_peer);
		remus_finish_reply(&r->sw_conn,
				   ctl_error("no answer from %s after GO: %s stays a held standby here "
					     "(if the peer does not run, `doppel failover` this copy)",
					     r->sw_peer, vmm_name(r->v)));
	}
}

static void go_msg(void *opaque, const struct remus_msg *m)
{
	struct remus *r = opaque;

	if (r->sw != SW_GO)
		return;
	if (m->type == REMUS_MSG_REJECT) {
		switch_abort(r, "the standby refused GO");
		return;
	}
	if (m->type != REMUS_MSG_RUNNING)
		return;
	struct json_object *f = json_object_new_object(), *o = json_object_new_object();
	double ready = (double)(r->sw_t_ready - r->sw_t0) / 1e6, total = ms_since(r->sw_t0);
	json_object_object_add(f, "peer", json_object_new_string(r->sw_peer));
	json_object_object_add(f, "listen", json_object_new_string(r->sw_listen));
	json_object_object_add(f, "ready_ms", json_object_new_double(ready));
	json_object_object_add(f, "go_ms", json_object_new_double(ms_since(r->sw_t_commit)));
	json_object_object_add(f, "paused_ms", json_object_new_double(total));
	json_object_object_add(f, "epoch", json_object_new_int64((int64_t)m->value));
	json_object_object_add(o, "role", json_object_new_string("standby"));
	json_object_object_add(o, "epoch", json_object_new_int64((int64_t)m->value));
	json_object_object_add(o, "new_primary", json_object_new_string(r->sw_peer));
	json_object_object_add(o, "listen", json_object_new_string(r->sw_listen));
	json_object_object_add(o, "ready_ms", json_object_new_double(ready));
	json_object_object_add(o, "paused_ms", json_object_new_double(total));
	remus_event_fields(r, "switchover", m->value, f, "switched over to %s (guest parked %.1f ms here)",
			   r->sw_peer, total);
	log_info("remus", vmm_name(r->v), "switched over to %s at epoch %llu; standby now on %s", r->sw_peer,
		 (unsigned long long)m->value, r->sw_listen);
	r->sw_lfd = -1; /* it is r->lfd now */
	switch_reset(r);
	remus_finish_reply(&r->sw_conn, o);
}

static void go_rx(struct ev_loop *loop, ev_io *w, int revents)
{
	struct remus *r = w->data;
	uint8_t buf[64];

	(void)loop, (void)revents;
	ssize_t n = recv(r->sw_fd, buf, sizeof(buf), MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0 || remus_msgbuf_feed(&r->sw_mb, buf, (size_t)n, go_msg, r) < 0) {
		if (r->sw != SW_GO)
			return;
		switch_reset(r);
		remus_record_event(r, "switchover-unknown", r->committed_epoch,
				   "GO connection to %s closed without an answer: staying a held standby",
				   r->sw_peer);
		remus_finish_reply(&r->sw_conn,
				   ctl_error("the GO connection to %s closed without an answer: %s stays a "
					     "held standby here (if the peer does not run, `doppel failover` "
					     "this copy)",
					     r->sw_peer, vmm_name(r->v)));
	}
}

static int send_all(int fd, const uint8_t *b, size_t len)
{
	while (len) {
		ssize_t n = send(fd, b, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -errno;
		b += n;
		len -= (size_t)n;
	}
	return 0;
}

static uint16_t listen_port(const char *addr)
{
	const char *c = strrchr(addr, ':');
	long p = c ? strtol(c + 1, NULL, 10) : 0;

	return p > 0 && p < 65536 ? (uint16_t)p : 0;
}

/* The GO connection to S: with TLS (the protect's credentials and pinned name) the same handshake
 * and certificate check as the replication stream, bounded by GO_CONNECT_MS in all. fd or -1 (err). */
static int go_connect(struct remus *r, char *err, size_t errlen)
{
	uint64_t deadline = now_ns() + GO_CONNECT_MS * 1000000ull;
	char id[TLS_ID_MAX], e2[200];
	int fd = sock_connect(r->sw_peer, GO_CONNECT_MS, err, errlen);

	if (fd < 0 || !r->tls)
		return fd;
	int rc = tls_wrap(r->tls, false, &fd, deadline, id, sizeof(id), e2, sizeof(e2));
	if (rc) {
		if (fd >= 0)
			close(fd);
		errf(err, errlen, rc, "GO connection to %s: %s", r->sw_peer, e2);
		return -1;
	}
	log_info("remus", vmm_name(r->v), "switchover GO to %s over TLS 1.3 (peer certificate %s)",
		 r->sw_peer, id);
	return fd;
}

void remus_switch_abandoned(struct remus *r, uint64_t epoch)
{
	char err[256];
	uint8_t m[2 * REMUS_MSG_SIZE];
	int rc;

	r->sw_t_ready = now_ns();
	/* Commit. Our own final state: if S never runs, this copy can still be promoted. */
	rc = ckpt_state_capture(&r->committed, r->vm, err, sizeof(err));
	if (rc) {
		switch_abort(r, err);
		return;
	}
	pthread_mutex_lock(&r->lock);
	r->have_committed = true;
	r->committed_epoch = epoch;
	r->abandoned = false;
	r->failed_over = false;
	r->connected = false;
	pthread_mutex_unlock(&r->lock);
	snprintf(r->sw_peer, sizeof(r->sw_peer), "%s", r->peer);
	remus_standby_start_fd(r, r->sw_lfd, r->sw_listen); /* role standby: the lease is not ours */
	int fd = go_connect(r, err, sizeof(err));
	if (fd < 0) {
		r->sw_lfd = -1; /* r->lfd now: switch_abort closes it */
		switch_abort(r, err); /* GO never left: S stays held */
		return;
	}
	if (r->wit) {
		ev_timer_stop(r->loop, &r->wit_w);
		if (witness_release(r->wit, err, sizeof(err)))
			log_warn("remus", vmm_name(r->v), "witness release: %s (the key expires on its own)",
				 err);
	}
	remus_msg_encode(m, REMUS_MSG_GO, epoch);
	remus_msg_encode(m + REMUS_MSG_SIZE, REMUS_MSG_BACK, listen_port(r->sw_listen));
	r->sw_lfd = -1;
	r->sw_fd = fd;
	r->sw = SW_GO;
	r->sw_t_commit = now_ns();
	r->sw_mb.n = 0;
	remus_record_event(r, "switchover-commit", epoch, "standby %s holds epoch %llu: GO", r->sw_peer,
			   (unsigned long long)epoch);
	rc = send_all(fd, m, sizeof(m));
	if (rc) {
		/* Possibly partly sent: S may have GO. Stay a standby (safe side). */
		switch_reset(r);
		remus_finish_reply(&r->sw_conn,
				   ctl_error("sending GO to %s: %s; %s stays a held standby here", r->sw_peer,
					     strerror(-rc), vmm_name(r->v)));
		return;
	}
	ev_io_init(&r->sw_io, go_rx, fd, EV_READ);
	r->sw_io.data = r;
	ev_io_start(r->loop, &r->sw_io);
	ev_timer_set(&r->sw_w, SWITCH_TICK_MS / 1e3 * 50, SWITCH_TICK_MS / 1e3 * 50);
	ev_timer_again(r->loop, &r->sw_w);
}

void remus_switch_lost(struct remus *r, const char *why)
{
	if (r->sw == SW_FINAL || r->sw == SW_ENDING)
		switch_abort(r, why);
}

struct json_object *remus_cmd_switchover(struct remus *r, struct json_object *req)
{
	struct json_object *j;
	char err[256];
	int fd, rc;

	if (r->sw != SW_NONE)
		return ctl_error("a switchover is already under way (%s)", sw_names[r->sw]);
	if (r->role != REMUS_PRIMARY || r->pstate != PS_PROTECTED)
		return ctl_error("%s is not a protected primary (%s): nothing to switch over to",
				 vmm_name(r->v),
				 r->role == REMUS_STANDBY ? "standby" : remus_pstate_name(r->pstate));
	if (!json_object_object_get_ex(req, "listen", &j) || !json_object_is_type(j, json_type_string))
		return ctl_error("switchover needs a \"listen\" string (ADDR:PORT where this copy will be "
				 "the new standby)");
	const char *listen = json_object_get_string(j);
	if (strlen(listen) >= sizeof(r->sw_listen) || !listen_port(listen))
		return ctl_error("bad listen address %s (ADDR:PORT)", listen);
	fd = sock_listen(listen, err, sizeof(err));
	if (fd < 0)
		return ctl_error("%s", err);
	rc = vmm_hold_vcpus(r->v);
	if (rc) {
		close(fd);
		return ctl_error("cannot park the vCPUs: %s", strerror(-rc));
	}
	snprintf(r->sw_listen, sizeof(r->sw_listen), "%s", listen);
	r->sw_lfd = fd;
	r->sw = SW_FINAL;
	r->sw_t0 = now_ns();
	r->sw_t_ready = r->sw_t_commit = 0;
	r->sw_from = r->next_epoch; /* captured after the park (the loop thread parked it) */
	ev_init(&r->sw_w, switch_tick);
	r->sw_w.data = r;
	ev_timer_set(&r->sw_w, SWITCH_TICK_MS / 1e3, SWITCH_TICK_MS / 1e3);
	ev_timer_again(r->loop, &r->sw_w);
	remus_record_event(r, "switchover-start", r->acked_epoch,
			   "to %s; this copy becomes its standby on %s", r->peer, listen);
	r->sw_conn = vmm_ctl_current(r->v);
	return r->sw_conn ? CTL_DEFER : json_object_new_object();
}

/* ---- standby side -------------------------------------------------------------------------------- */

void remus_switch_go_read(struct remus *r, struct sr_in *in, uint64_t epoch)
{
	uint8_t b[REMUS_MSG_SIZE];
	struct remus_msg m;
	struct sockaddr_storage ss = r->conn_addr; /* of the TCP connection, before any TLS relay */
	char ip[INET6_ADDRSTRLEN] = "", why[200];

	ssize_t n = sr_in_read(in, b, sizeof(b));
	bool ok = n == (ssize_t)sizeof(b) && !remus_msg_decode(b, &m) && m.type == REMUS_MSG_BACK &&
		  m.value && m.value < 65536;
	pthread_mutex_lock(&r->lock);
	if (ok && r->conn_addrlen) {
		if (ss.ss_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip, sizeof(ip));
		else if (ss.ss_family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ip, sizeof(ip));
	}
	if (!ok || !ip[0])
		snprintf(why, sizeof(why), "switchover GO without a valid BACK message: ignored");
	else if (!r->abandoned || !r->have_committed || r->committed_epoch != epoch)
		snprintf(why, sizeof(why), "switchover GO for epoch %llu refused: this standby holds %llu%s",
			 (unsigned long long)epoch, (unsigned long long)r->committed_epoch,
			 r->abandoned ? "" : " and the primary did not end replication first");
	else
		why[0] = 0;
	if (why[0]) {
		uint8_t rej[REMUS_MSG_SIZE];
		remus_msg_encode(rej, REMUS_MSG_REJECT, REMUS_REJECT_STATE);
		if (send(r->cfd, rej, sizeof(rej), MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
			log_debug("remus", vmm_name(r->v), "GO reject: %s", strerror(errno));
		close(r->cfd);
		r->cfd = -1;
		snprintf(r->end_reason, sizeof(r->end_reason), "%s", why);
		r->want_failover = false;
		pthread_mutex_unlock(&r->lock);
		remus_notify(r, RA_READER_ENDED);
		return;
	}
	snprintf(r->go_back, sizeof(r->go_back), strchr(ip, ':') ? "[%s]:%u" : "%s:%u", ip,
		 (unsigned)m.value);
	r->go_epoch = epoch;
	r->go_fd = r->cfd;
	r->cfd = -1; /* the connection is the switch's now: a takeover must not cut it */
	pthread_mutex_unlock(&r->lock);
	remus_notify(r, RA_SWITCH_GO);
}

static void go_answer(int fd, uint32_t type, uint64_t value)
{
	uint8_t b[REMUS_MSG_SIZE];

	remus_msg_encode(b, type, value);
	if (send_all(fd, b, sizeof(b)))
		log_debug("remus", NULL, "switchover answer not delivered");
	close(fd);
}

void remus_switch_go(struct remus *r)
{
	char err[256] = "", why[240];
	struct json_object *req, *res;

	if (r->reader_running) {
		pthread_join(r->reader, NULL);
		r->reader_running = false;
	}
	pthread_mutex_lock(&r->lock);
	int fd = r->go_fd;
	r->go_fd = -1;
	uint64_t e = r->go_epoch;
	pthread_mutex_unlock(&r->lock);
	if (fd < 0 || r->role != REMUS_STANDBY)
		return;
	snprintf(why, sizeof(why), "switchover from the primary (it becomes the standby on %s)", r->go_back);
	/* Dirty logging before the vCPUs start: the protect back then sends only what changed. */
	bool resume = !remus_primary_log_from_now(r, err, sizeof(err));
	if (!resume)
		log_warn("remus", vmm_name(r->v), "switchover: %s: the re-protect copies everything", err);
	if (remus_witness_acquire_now(r, err, sizeof(err)) ||
	    remus_standby_failover(r, why, true, err, sizeof(err))) {
		ckpt_engine_stop(&r->eng);
		go_answer(fd, REMUS_MSG_REJECT, REMUS_REJECT_STATE);
		snprintf(r->last_error, sizeof(r->last_error), "switchover refused: %.200s", err);
		remus_record_event(r, "switchover-refused", e, "%s", err);
		return;
	}
	go_answer(fd, REMUS_MSG_RUNNING, e);
	/* Protect to the old primary with the settings the stream had (a full re-sync). */
	req = json_object_new_object();
	json_object_object_add(req, "peer", json_object_new_string(r->go_back));
	json_object_object_add(req, "interval_ms", json_object_new_int((int)r->interval_ms));
	json_object_object_add(req, "heartbeat_timeout_ms", json_object_new_int((int)r->hb_timeout_ms));
	json_object_object_add(req, "resume", json_object_new_boolean(resume));
	if (r->tls) { /* the old primary's standby checks our certificate as the GO came: same creds */
		json_object_object_add(req, "tls_dir", json_object_new_string(tls_cfg_dir(r->tls)));
		if (tls_cfg_peer_name(r->tls))
			json_object_object_add(req, "tls_peer_name",
					       json_object_new_string(tls_cfg_peer_name(r->tls)));
	}
	res = remus_cmd_protect(r, req);
	json_object_put(req);
	struct json_object *ej = NULL;
	if (res && res != CTL_DEFER && json_object_object_get_ex(res, "error", &ej)) {
		if (r->role != REMUS_PRIMARY)
			ckpt_engine_stop(
				&r->eng); /* the log started at the switch: a later protect starts anew */
		remus_record_event(r, "reprotect-failed", e, "protecting to %s: %s", r->go_back,
				   json_object_get_string(ej));
		log_warn("remus", vmm_name(r->v), "switchover: cannot protect to %s: %s", r->go_back,
			 json_object_get_string(ej));
	}
	if (res != CTL_DEFER)
		json_object_put(res);
}

/* ---- rejoin / reprotect -------------------------------------------------------------------------- */

/* A fenced copy becomes a standby (listen): its guest stays parked, its stale RAM is rewritten by
 * the new primary's full copy. */
static struct json_object *rejoin(struct remus *r, const char *listen)
{
	char err[256];
	int fd = sock_listen(listen, err, sizeof(err));

	if (fd < 0)
		return ctl_error("%s", err);
	int rc = vmm_held(r->v) ? 0 : vmm_hold_vcpus(r->v);
	if (rc) {
		close(fd);
		return ctl_error("cannot park the vCPUs: %s", strerror(-rc));
	}
	if (r->fence_paused && !vm_resume(r->vm)) /* the fence's hold; vmm's own hold stays */
		r->fence_paused = false;
	ev_timer_stop(r->loop, &r->fence_w);
	ev_timer_stop(r->loop, &r->hold_w);
	vmm_set_tx_hook(r->v, NULL, NULL);
	if (r->nb)
		netbuf_drop_all(r->nb);
	pthread_mutex_lock(&r->lock);
	r->have_committed = false; /* stale: the new primary sends everything */
	r->abandoned = r->failed_over = r->connected = false;
	pthread_mutex_unlock(&r->lock);
	r->pstate = PS_RUNNING;
	remus_standby_start_fd(r, fd, listen);
	remus_record_event(r, "rejoined", r->acked_epoch, "fenced copy rejoined as a standby on %s", listen);
	log_info("remus", vmm_name(r->v), "rejoined as a standby on %s", listen);
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "role", json_object_new_string("standby"));
	json_object_object_add(o, "listen", json_object_new_string(listen));
	return o;
}

int remus_switch_protect_opts(struct remus *r, struct json_object *req, char *err, size_t errlen)
{
	struct json_object *j;

	r->rejoin_listen[0] = 0;
	if (!json_object_object_get_ex(req, "rejoin", &j))
		return 0;
	const char *a = json_object_is_type(j, json_type_string) ? json_object_get_string(j) : "";
	if (strlen(a) >= sizeof(r->rejoin_listen) || !listen_port(a))
		return errf(err, errlen, -EINVAL, "bad rejoin address (ADDR:PORT)");
	snprintf(r->rejoin_listen, sizeof(r->rejoin_listen), "%s", a);
	return 0;
}

void remus_switch_fenced(struct remus *r)
{
	if (!r->rejoin_listen[0] || r->pstate != PS_FENCED)
		return;
	struct json_object *o = rejoin(r, r->rejoin_listen);
	struct json_object *e = NULL;
	if (json_object_object_get_ex(o, "error", &e))
		log_error("remus", vmm_name(r->v), "--rejoin %s: %s; exiting after the fence grace",
			  r->rejoin_listen, json_object_get_string(e));
	json_object_put(o);
}

struct json_object *remus_cmd_reprotect(struct remus *r, struct json_object *req)
{
	struct json_object *j;

	if (json_object_object_get_ex(req, "listen", &j)) {
		if (!json_object_is_type(j, json_type_string))
			return ctl_error("\"listen\" must be a string (ADDR:PORT)");
		if (r->pstate != PS_FENCED)
			return ctl_error("%s is not fenced (%s): only a fenced copy rejoins as a standby",
					 vmm_name(r->v),
					 r->role == REMUS_STANDBY ? "standby" : remus_pstate_name(r->pstate));
		return rejoin(r, json_object_get_string(j));
	}
	if (!json_object_object_get_ex(req, "peer", &j))
		return ctl_error("reprotect needs \"listen\" (on a fenced copy) or \"peer\" (on the new "
				 "primary)");
	/* The new primary protects again with the settings it last ran or replicated with. */
	if (!json_object_object_get_ex(req, "interval_ms", NULL))
		json_object_object_add(req, "interval_ms", json_object_new_int((int)r->interval_ms));
	if (!json_object_object_get_ex(req, "heartbeat_timeout_ms", NULL))
		json_object_object_add(req, "heartbeat_timeout_ms",
				       json_object_new_int((int)r->hb_timeout_ms));
	return remus_cmd_protect(r, req);
}

bool remus_switch_resume(struct json_object *req)
{
	struct json_object *j;

	return json_object_object_get_ex(req, "resume", &j) && json_object_is_type(j, json_type_boolean) &&
	       json_object_get_boolean(j);
}

struct json_object *remus_cmd_drill_report(struct remus *r, struct json_object *req)
{
	struct json_object *j, *f = NULL; /* json_object_deep_copy wants *dst NULL */

	if (!json_object_object_get_ex(req, "report", &j) || !json_object_is_type(j, json_type_object))
		return ctl_error("drill_report needs a \"report\" object");
	if (json_object_deep_copy(j, &f, NULL))
		return ctl_error("out of memory");
	json_object_object_get_ex(f, "result", &j);
	remus_event_fields(r, "drill", r->role == REMUS_STANDBY ? r->committed_epoch : r->acked_epoch, f,
			   "drill report: %s", j ? json_object_get_string(j) : "?");
	return ctl_ok();
}

void remus_switch_status(struct remus *r, struct json_object *o)
{
	if (r->fo_valid) {
		struct json_object *f = json_object_new_object();
		json_object_object_add(f, "epoch", json_object_new_int64((int64_t)r->fo_epoch));
		json_object_object_add(f, "detect_ms", json_object_new_double(r->fo_detect_ms));
		json_object_object_add(f, "decide_ms", json_object_new_double(r->fo_decide_ms));
		json_object_object_add(f, "takeover_ms", json_object_new_double(r->fo_takeover_ms));
		json_object_object_add(o, "last_failover", f);
	}
	if (r->sw == SW_NONE)
		return;
	struct json_object *s = json_object_new_object();
	json_object_object_add(s, "state", json_object_new_string(sw_names[r->sw]));
	json_object_object_add(s, "listen", json_object_new_string(r->sw_listen));
	json_object_object_add(s, "elapsed_ms", json_object_new_double(ms_since(r->sw_t0)));
	json_object_object_add(o, "switchover", s);
}
