/* remus_standby.c — the replica side: accept a primary, apply whole epochs, ack, heartbeat, fail over. */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "replication/remus_priv.h"
#include "replication/sock.h"
#include "vmm/vmm.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/errf.h"

#define HELLO_TIMEOUT_MS 5000

/* Send one message to the primary without blocking (lock held). A full socket drops it: the primary
 * is then not reading, and its own liveness check decides. */
static void send_msg(struct remus *r, uint32_t type, uint64_t value)
{
	uint8_t m[REMUS_MSG_SIZE];

	if (r->cfd < 0)
		return;
	remus_msg_encode(m, type, value);
	ssize_t n = send(r->cfd, m, sizeof(m), MSG_DONTWAIT | MSG_NOSIGNAL);
	if (n > 0 && n < (ssize_t)sizeof(m))
		shutdown(r->cfd, SHUT_RDWR); /* a torn message would desynchronise the primary */
}

static void reader_end(struct remus *r, bool failover, const char *why)
{
	pthread_mutex_lock(&r->lock);
	r->want_failover = failover;
	snprintf(r->end_reason, sizeof(r->end_reason), "%.190s", why);
	r->connected = false;
	if (r->cfd >= 0)
		close(r->cfd);
	r->cfd = -1;
	pthread_mutex_unlock(&r->lock);
	remus_notify(r, RA_READER_ENDED);
}

static void *reader_main(void *arg)
{
	struct remus *r = arg;
	struct guest_mem *gm = vm_mem(r->vm);
	struct sr_ctx *rd = NULL;
	struct sr_header h;
	struct sr_in in;
	struct remus_msg m;
	uint8_t hello[REMUS_MSG_SIZE];
	uint32_t iv, to;
	char err[256], why[320];
	int rc;

	sr_in_fd(&in, r->cfd, HELLO_TIMEOUT_MS);
	ssize_t n = sr_in_read(&in, hello, sizeof(hello));
	if (n != (ssize_t)sizeof(hello) || remus_msg_decode(hello, &m) || m.type != REMUS_MSG_HELLO ||
	    remus_hello_parse(m.value, &iv, &to)) {
		reader_end(r, false, "connection without a valid hello: ignored");
		return NULL;
	}
	pthread_mutex_lock(&r->lock);
	r->interval_ms = iv;
	r->hb_timeout_ms = to;
	r->connected = true;
	/* A new primary resends everything: the old committed state no longer matches what will be
	 * written into RAM, so it cannot be used until the new stream has delivered a full state. */
	r->have_committed = false;
	pthread_mutex_unlock(&r->lock);
	remus_notify(r, RA_READER_CONNECTED);
	in.timeout_ms = (int)to; /* silence past the heartbeat timeout = primary gone */
	if (sr_reader_new(&rd, &in)) {
		reader_end(r, false, "out of memory");
		return NULL;
	}
	rc = sr_read_header(rd, &h);
	if (!rc)
		rc = sr_header_check_mem(&h, gm, err, sizeof(err));
	else
		snprintf(err, sizeof(err), "%s", sr_error(rd));
	if (!rc && h.nr_vcpus != (uint32_t)vm_nr_vcpus(r->vm)) {
		snprintf(err, sizeof(err), "primary has %u vCPUs, this standby %d", h.nr_vcpus,
			 vm_nr_vcpus(r->vm));
		rc = -EINVAL;
	}
	if (rc) {
		snprintf(why, sizeof(why), "rejected primary: %s", err);
		reader_end(r, false, why);
		sr_ctx_free(rd);
		return NULL;
	}
	for (;;) {
		bool direct;
		uint64_t t0;

		pthread_mutex_lock(&r->lock);
		direct = !r->have_committed; /* before the first full state: write straight into RAM */
		pthread_mutex_unlock(&r->lock);
		rc = ckpt_read_epoch(rd, &r->stg, direct ? gm : NULL, err, sizeof(err));
		if (rc == 0) {
			reader_end(r, false, "primary ended replication (unprotect)");
			break;
		}
		if (rc < 0) {
			bool lost = rc == -ETIMEDOUT || rc == -EPIPE || rc == -ECONNRESET || rc == -EIO ||
				    rc == -ENOTCONN || rc == -ESHUTDOWN;
			if (rc == -ETIMEDOUT)
				snprintf(why, sizeof(why), "primary silent for %u ms", to);
			else if (lost)
				snprintf(why, sizeof(why), "connection to the primary lost: %s", err);
			else
				snprintf(why, sizeof(why), "rejected a bad epoch, kept epoch %llu: %s",
					 (unsigned long long)r->committed_epoch, err);
			reader_end(r, lost, why);
			break;
		}
		if (!direct && !r->stg.have_state && (r->stg.n || r->stg.nzero)) {
			reader_end(r, false, "rejected an epoch with pages but no machine state");
			break;
		}
		t0 = now_ns();
		pthread_mutex_lock(&r->lock);
		if (r->failed_over) {
			pthread_mutex_unlock(&r->lock);
			reader_end(r, false, "failed over");
			break;
		}
		if (!direct)
			ckpt_stage_apply_pages(&r->stg, gm); /* whole epoch, under the lock */
		if (r->stg.have_state) {
			struct ckpt_state tmp = r->committed;
			r->committed = r->stg.st;
			r->stg.st = tmp; /* freed by the next ckpt_stage_reset */
			r->have_committed = true;
		}
		r->committed_epoch = r->stg.epoch;
		r->rx_epochs++;
		r->rx_pages += r->stg.pages;
		r->rx_bytes = in.bytes;
		r->apply_ns_last = now_ns() - t0;
		send_msg(r, REMUS_MSG_ACK, r->stg.epoch);
		pthread_mutex_unlock(&r->lock);
	}
	sr_ctx_free(rd);
	return NULL;
}

/* ---- loop side --------------------------------------------------------------------------------- */

static void announce_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct remus *r = w->data;

	(void)revents;
	vmm_net_announce(r->v);
	if (--r->announce_left <= 0)
		ev_timer_stop(loop, w);
}

/* Take over. Loop thread. Returns 0, or -EAGAIN when no complete state ever arrived. */
static int do_failover(struct remus *r, const char *why, char *err, size_t errlen)
{
	uint64_t t0 = now_ns(), epoch;
	int rc;

	pthread_mutex_lock(&r->lock);
	if (!r->have_committed) {
		pthread_mutex_unlock(&r->lock);
		return errf(err, errlen, -EAGAIN, "no complete checkpoint received yet: cannot take over");
	}
	r->failed_over = true; /* the reader applies nothing more */
	if (r->cfd >= 0)
		shutdown(r->cfd, SHUT_RDWR);
	epoch = r->committed_epoch;
	pthread_mutex_unlock(&r->lock);
	if (r->reader_running) {
		pthread_join(r->reader, NULL);
		r->reader_running = false;
	}
	ev_timer_stop(r->loop, &r->hb_w);
	ev_io_stop(r->loop, &r->accept_w);
	if (r->lfd >= 0)
		close(r->lfd);
	r->lfd = -1;
	ckpt_stage_free(&r->stg);
	rc = ckpt_state_apply(&r->committed, r->vm, err, errlen);
	if (!rc)
		rc = vmm_start_vcpus(r->v);
	if (rc) {
		if (!*err)
			errf(err, errlen, rc, "cannot start vCPUs: %s", strerror(-rc));
		snprintf(r->last_error, sizeof(r->last_error), "failover failed: %s", err);
		log_error("remus", vmm_name(r->v), "failover failed: %s", err);
		vmm_stop(r->v, 1);
		return rc;
	}
	r->announce_left = 3;
	ev_timer_init(&r->announce_w, announce_cb, 0, 0.05);
	r->announce_w.data = r;
	ev_timer_start(r->loop, &r->announce_w);
	r->role = REMUS_UNPROTECTED;
	r->nr_failovers++;
	remus_record_event(r, "failover", epoch, "%s (took over in %.1f ms)", why,
			   (double)(now_ns() - t0) / 1e6);
	log_warn("remus", vmm_name(r->v), "took over at epoch %llu: %s", (unsigned long long)epoch, why);
	return 0;
}

static void hb_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct remus *r = w->data;

	(void)loop, (void)revents;
	pthread_mutex_lock(&r->lock);
	if (r->connected)
		send_msg(r, REMUS_MSG_HEARTBEAT, r->committed_epoch);
	pthread_mutex_unlock(&r->lock);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct remus *r = w->data;
	int fd;

	(void)loop, (void)revents;
	while ((fd = sock_accept(r->lfd, 0)) >= 0) {
		if (r->reader_running || r->role != REMUS_STANDBY) {
			close(fd); /* one primary at a time */
			continue;
		}
		pthread_mutex_lock(&r->lock);
		r->cfd = fd;
		pthread_mutex_unlock(&r->lock);
		if (pthread_create(&r->reader, NULL, reader_main, r)) {
			close(fd);
			r->cfd = -1;
			continue;
		}
		r->reader_running = true;
	}
}

void remus_standby_async(struct remus *r, unsigned flags)
{
	char err[256], why[200];
	bool fo;

	if (r->role != REMUS_STANDBY)
		return;
	if (flags & RA_READER_CONNECTED) {
		double t = (double)r->hb_timeout_ms / 4e3;
		ev_timer_stop(r->loop, &r->hb_w);
		ev_timer_set(&r->hb_w, t, t);
		ev_timer_start(r->loop, &r->hb_w);
		hb_cb(r->loop, &r->hb_w, 0);
	}
	if (!(flags & RA_READER_ENDED) || !r->reader_running)
		return;
	pthread_join(r->reader, NULL);
	r->reader_running = false;
	ev_timer_stop(r->loop, &r->hb_w);
	pthread_mutex_lock(&r->lock);
	fo = r->want_failover;
	snprintf(why, sizeof(why), "%s", r->end_reason);
	pthread_mutex_unlock(&r->lock);
	if (!fo) {
		if (strncmp(why, "rejected", 8) == 0) {
			r->rejected++;
			remus_record_event(r, "rejected", r->committed_epoch, "%s", why);
		}
		snprintf(r->last_error, sizeof(r->last_error), "%s", why);
		log_warn("remus", vmm_name(r->v), "standby: %s; waiting for a primary", why);
		return;
	}
	if (do_failover(r, why, err, sizeof(err)) == -EAGAIN) {
		snprintf(r->last_error, sizeof(r->last_error), "%.120s; %.120s", why, err);
		remus_record_event(r, "no-takeover", 0, "%s; %s", why, err);
		log_warn("remus", vmm_name(r->v), "standby: %s; %s; waiting for a primary", why, err);
	}
}

struct json_object *remus_cmd_failover(struct remus *r, struct json_object *req)
{
	struct json_object *j, *o;
	bool force = false, heard;
	char err[256] = "";
	int rc;

	if (r->role != REMUS_STANDBY)
		return ctl_error("%s is not a standby", vmm_name(r->v));
	if (json_object_object_get_ex(req, "force", &j))
		force = json_object_get_boolean(j);
	pthread_mutex_lock(&r->lock);
	heard = r->connected;
	pthread_mutex_unlock(&r->lock);
	if (heard && !force)
		return ctl_error(
			"the primary is still heard (connected, timeout %u ms); use --force for a drill",
			r->hb_timeout_ms);
	rc = do_failover(r, force ? "manual failover (forced)" : "manual failover", err, sizeof(err));
	if (rc)
		return ctl_error("failover failed: %s", err);
	o = json_object_new_object();
	json_object_object_add(o, "role", json_object_new_string("unprotected"));
	json_object_object_add(o, "epoch", json_object_new_int64((int64_t)r->committed_epoch));
	return o;
}

int remus_standby_start(struct remus *r, const char *addr, char *err, size_t errlen)
{
	int fd = sock_listen(addr, err, errlen);

	if (fd < 0)
		return fd;
	r->lfd = fd;
	snprintf(r->peer, sizeof(r->peer), "%s", addr);
	r->role = REMUS_STANDBY;
	ev_io_init(&r->accept_w, accept_cb, fd, EV_READ);
	r->accept_w.data = r;
	ev_io_start(r->loop, &r->accept_w);
	ev_init(&r->hb_w, hb_cb);
	r->hb_w.data = r;
	return 0;
}

void remus_standby_status(struct remus *r, struct json_object *o)
{
	if (r->role != REMUS_STANDBY && !r->rx_epochs)
		return;
	pthread_mutex_lock(&r->lock);
	json_object_object_add(o, "connected", json_object_new_boolean(r->connected));
	json_object_object_add(o, "have_state", json_object_new_boolean(r->have_committed));
	json_object_object_add(o, r->role == REMUS_STANDBY ? "epoch" : "standby_epoch",
			       json_object_new_int64((int64_t)r->committed_epoch));
	if (r->role == REMUS_STANDBY)
		json_object_object_add(o, "acked_epoch", json_object_new_int64((int64_t)r->committed_epoch));
	json_object_object_add(o, "rx_epochs", json_object_new_int64((int64_t)r->rx_epochs));
	json_object_object_add(o, "rx_pages", json_object_new_int64((int64_t)r->rx_pages));
	json_object_object_add(o, "rx_bytes", json_object_new_int64((int64_t)r->rx_bytes));
	json_object_object_add(o, "rejected", json_object_new_int64((int64_t)r->rejected));
	json_object_object_add(o, "apply_ms_last", json_object_new_double((double)r->apply_ns_last / 1e6));
	pthread_mutex_unlock(&r->lock);
}
