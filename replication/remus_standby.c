/* remus_standby.c — the replica side: accept a primary, apply whole epochs, ack, heartbeat, fail over. */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "replication/remus_priv.h"
#include "replication/sock.h"
#include "replication/witness.h"
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
	if (r->colo_mode) {
		(void)colo_txq_put(r->colo, m, sizeof(m), NULL, 0, false); /* one writer for COLO */
		return;
	}
	ssize_t n = send(r->cfd, m, sizeof(m), MSG_DONTWAIT | MSG_NOSIGNAL);
	if (n > 0 && n < (ssize_t)sizeof(m))
		shutdown(r->cfd, SHUT_RDWR); /* a torn message would desynchronise the primary */
}

static void reader_end(struct remus *r, bool failover, const char *why)
{
	if (r->colo_mode)
		colo_standby_end(r); /* drains what is queued (ACK, ABANDONED, REJECT) first */
	pthread_mutex_lock(&r->lock);
	r->want_failover = failover;
	r->lost_ns = now_ns();
	snprintf(r->end_reason, sizeof(r->end_reason), "%.390s", why);
	r->connected = false;
	if (r->cfd >= 0)
		close(r->cfd);
	r->cfd = -1;
	pthread_mutex_unlock(&r->lock);
	remus_notify(r, RA_READER_ENDED);
}

/* Would ckpt_state_apply of s succeed on this VM, as far as can be told without touching it? The
 * presence checks of ckpt_state_apply in both directions (a device the primary has and this standby
 * lacks would vanish from the guest at failover; one this standby has and the primary lacks would
 * fail the apply) and the blob sizes. */
static int state_fits(const struct ckpt_state *s, struct vm *vm, char *err, size_t errlen)
{
	if (s->nr_vcpus != (uint32_t)vm_nr_vcpus(vm))
		return errf(err, errlen, -EINVAL, "primary has %u vCPUs, this standby %d", s->nr_vcpus,
			    vm_nr_vcpus(vm));
	for (uint32_t i = 0; i < s->nr_vcpus; i++)
		if (!s->vcpu[i].data || s->vcpu[i].len > vm_vcpu_state_max(vm))
			return errf(err, errlen, -EINVAL, "vCPU %u state does not fit this standby", i);
	const struct ckpt_blob *k = ckpt_state_find(s, CKPT_DEV_KVM, vm_platform_state_name(vm));
	if (!k || k->len > vm_platform_state_max(vm))
		return errf(err, errlen, -EINVAL, "the primary's platform state does not fit this standby");
	for (int i = 0; i < vm_devstate_count(vm); i++) {
		const struct vm_devstate *d = vm_devstate_get(vm, i);
		const struct ckpt_blob *b = ckpt_state_find(s, CKPT_DEV_HV, d->name);
		if (!b)
			return errf(err, errlen, -EINVAL, "this standby has device %s, the primary not",
				    d->name);
		if (b->len > d->max)
			return errf(err, errlen, -EINVAL, "device %s state does not fit this standby",
				    d->name);
	}
	for (int i = 0; i < s->nr_dev; i++) {
		bool found = s->dev[i].kind != CKPT_DEV_HV;
		for (int j = 0; j < vm_devstate_count(vm) && !found; j++)
			found = !strcmp(vm_devstate_get(vm, j)->name, s->dev[i].name);
		if (!found)
			return errf(err, errlen, -EINVAL, "the primary has device %s, this standby not",
				    s->dev[i].name);
	}
	return 0;
}

/* The reader's end after a read error: a transport error means the primary is lost; an integrity
 * error rejects the epoch (the standby keeps the last one and says so to the primary). */
static void read_failed(struct remus *r, int rc, uint32_t to, const char *err)
{
	char why[320];

	pthread_mutex_lock(&r->lock);
	bool progress = r->progress_lost;
	uint64_t kept = r->committed_epoch;
	if (!remus_read_error_is_transport(rc))
		send_msg(r, REMUS_MSG_REJECT, REMUS_REJECT_STREAM);
	pthread_mutex_unlock(&r->lock);
	if (progress)
		snprintf(why, sizeof(why),
			 "no checkpoint from the primary for %u ms (it heartbeats but makes no progress)",
			 remus_progress_timeout_ms(r));
	else if (rc == -ETIMEDOUT)
		snprintf(why, sizeof(why), "primary silent for %u ms", to);
	else if (remus_read_error_is_transport(rc))
		snprintf(why, sizeof(why), "connection to the primary lost: %s", err);
	else
		snprintf(why, sizeof(why), "rejected a bad epoch, kept epoch %llu: %s",
			 (unsigned long long)kept, err);
	reader_end(r, progress || remus_read_error_is_transport(rc), why);
}

/* Apply one whole epoch read into r->stg (pages not under r->lock: the heartbeat and ACK sender must
 * not wait behind a big epoch). Returns 0, or -1 when the reader must end (reason given). */
static int commit_epoch(struct remus *r, bool direct, uint64_t in_bytes)
{
	struct guest_mem *gm = vm_mem(r->vm);
	char err[256], why[320];
	uint64_t t0 = now_ns();

	if (remus_disk_check(r, err, sizeof(err)) ||
	    (r->stg.have_state && direct && state_fits(&r->stg.st, r->vm, err, sizeof(err)))) {
		/* The first machine state of this primary: it must fit, or this standby could never
		 * take over. Refuse protection instead of acking epochs it cannot use. */
		pthread_mutex_lock(&r->lock);
		send_msg(r, REMUS_MSG_REJECT, REMUS_REJECT_STATE);
		pthread_mutex_unlock(&r->lock);
		snprintf(why, sizeof(why), "rejected primary: %s", err);
		reader_end(r, false, why);
		return -1;
	}
	/* Early ACK (issue 15): a staged epoch is acknowledged once it is verified, before it is
	 * applied. Safe because the apply is certain to finish before anything could use this copy: a
	 * takeover sets failed_over under this lock and then joins this thread, so once the ACK left
	 * (failed_over still false, same lock hold) the epoch is applied and committed before the
	 * takeover reads RAM or state; and what is left to do cannot fail on a stream that verified,
	 * unless the primary's own zstd wrote an invalid frame -- then this copy says so (REJECT, no
	 * takeover from it), exactly as before: the primary only released output of a VM that still
	 * runs (docs/remus.md, "Early ACK"). The ACK then no longer waits for the apply (13-35 ms per
	 * 64 MiB epoch here). Not for COLO (its ack follows the secondary's resume) nor in direct mode
	 * (the pages are already in RAM). */
	pthread_mutex_lock(&r->lock);
	bool stop = r->failed_over, early = !stop && !direct && !r->colo_mode;
	if (early)
		send_msg(r, REMUS_MSG_ACK, r->stg.epoch);
	pthread_mutex_unlock(&r->lock);
	if (stop) {
		reader_end(r, false, "failed over");
		return -1;
	}
	/* Only this thread writes replica RAM and disks; a takeover joins it before using RAM, disks or
	 * state, so it finds all of an epoch or none of it. Every record of the epoch was verified while
	 * it was read (checksum at CHECKPOINT_END, sizes, delta bases): what is left cannot fail unless
	 * the primary wrote an invalid zstd frame, and then the replica holds part of this epoch: no
	 * usable state, no takeover from it. */
	if (!direct && ckpt_stage_apply_pages(&r->stg, gm, err, sizeof(err))) {
		pthread_mutex_lock(&r->lock);
		r->have_committed = false;
		send_msg(r, REMUS_MSG_REJECT, REMUS_REJECT_STREAM);
		pthread_mutex_unlock(&r->lock);
		snprintf(why, sizeof(why), "epoch %llu half applied, replica unusable: %s",
			 (unsigned long long)r->stg.epoch, err);
		reader_end(r, false, why);
		return -1;
	}
	if (remus_disk_apply(r, err, sizeof(err))) {
		/* The images now hold part of an epoch: no state matches them any more. */
		pthread_mutex_lock(&r->lock);
		r->have_committed = false;
		send_msg(r, REMUS_MSG_REJECT, REMUS_REJECT_STATE);
		pthread_mutex_unlock(&r->lock);
		snprintf(why, sizeof(why), "rejected primary: %s", err);
		reader_end(r, false, why);
		return -1;
	}
	pthread_mutex_lock(&r->lock);
	if (r->stg.have_state) {
		struct ckpt_state tmp = r->committed;
		r->committed = r->stg.st;
		r->stg.st = tmp; /* freed by the next ckpt_stage_reset */
		r->have_committed = true;
		snprintf(r->bound_id, sizeof(r->bound_id), "%s", r->conn_id);
	}
	r->committed_epoch = r->stg.epoch;
	r->last_ckpt_ns = now_ns();
	r->rx_epochs++;
	r->rx_pages += r->stg.pages;
	r->rx_bytes = in_bytes;
	r->apply_ns_last = now_ns() - t0;
	if (!early)
		send_msg(r, REMUS_MSG_ACK, r->stg.epoch);
	pthread_mutex_unlock(&r->lock);
	return 0;
}

#define REFUSED "refused a connection from" /* reader_end reasons that change nothing */

/* TLS handshake (with --tls-dir) and the identity check on the accepted socket r->cfd, before
 * anything is read. Returns the descriptor to read (r->cfd, now possibly the TLS relay's) or -1
 * with why ("refused a connection from ...: reason"). */
static int secure_conn(struct remus *r, uint64_t deadline, char *why, size_t whylen)
{
	char addr[INET6_ADDRSTRLEN + 16], err[256], id[TLS_ID_MAX];
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd, rc = 0;

	pthread_mutex_lock(&r->lock);
	fd = r->cfd;
	pthread_mutex_unlock(&r->lock);
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
		sock_str((struct sockaddr *)&ss, sl, addr, sizeof(addr));
	} else {
		snprintf(addr, sizeof(addr), "?");
		sl = 0;
	}
	r->conn_addr = ss;
	r->conn_addrlen = sl;
	tls_plain_identity(fd, id, sizeof(id));
	if (r->tls) {
		rc = tls_wrap(r->tls, true, &fd, deadline, id, sizeof(id), err, sizeof(err));
		pthread_mutex_lock(&r->lock);
		if (!rc || fd < 0)
			r->cfd = fd; /* the relay owns the TCP socket now */
		pthread_mutex_unlock(&r->lock);
	}
	if (rc) {
		errf(why, whylen, rc, "%s %s: %s", REFUSED, addr, err);
		return -1;
	}
	pthread_mutex_lock(&r->lock);
	if (r->bound_id[0] && !r->accept_any_peer && strcmp(r->bound_id, id)) {
		errf(why, whylen, -EACCES,
		     "%s %s: peer %s is not this replica's primary %s (run with --accept-any-peer to allow)",
		     REFUSED, addr, id, r->bound_id);
		rc = -EACCES;
	}
	pthread_mutex_unlock(&r->lock);
	if (rc)
		return -1;
	snprintf(r->conn_id, sizeof(r->conn_id), "%s", id);
	return fd;
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

	pthread_setname_np(pthread_self(), "remus-read");
	/* One deadline for the TLS handshake, the identity check and HELLO: a peer dribbling bytes
	 * cannot hold the only slot longer. Nothing changes on this standby before HELLO is valid. */
	uint64_t deadline = now_ns() + HELLO_TIMEOUT_MS * 1000000ull;
	int fd = secure_conn(r, deadline, why, sizeof(why));
	if (fd < 0) {
		reader_end(r, false, why);
		return NULL;
	}
	sr_in_fd(&in, fd, HELLO_TIMEOUT_MS);
	in.deadline_ns = deadline;
	ssize_t n = sr_in_read(&in, hello, sizeof(hello));
	if (n == (ssize_t)sizeof(hello) && !remus_msg_decode(hello, &m) && m.type == REMUS_MSG_GO) {
		remus_switch_go_read(r, &in, m.value); /* a switchover's second phase */
		return NULL;
	}
	if (n != (ssize_t)sizeof(hello) || remus_msg_decode(hello, &m) || m.type != REMUS_MSG_HELLO ||
	    remus_hello_parse(m.value, &iv, &to)) {
		snprintf(why, sizeof(why), "%s %s: %s", REFUSED, r->conn_id,
			 n == -ETIMEDOUT ? "no valid hello within the deadline"
					 : "connection without a valid hello");
		reader_end(r, false, why);
		return NULL;
	}
	in.deadline_ns = 0;
	if ((m.value & REMUS_HELLO_COLO) && colo_standby_begin(r, r->cfd)) {
		reader_end(r, false, "cannot start the COLO secondary: out of memory");
		return NULL;
	}
	pthread_mutex_lock(&r->lock);
	r->colo_mode = (m.value & REMUS_HELLO_COLO) != 0;
	r->interval_ms = iv;
	r->hb_timeout_ms = to;
	r->connected = true;
	r->abandoned = false;
	r->progress_lost = false;
	r->lost_ns = 0;
	r->last_ckpt_ns = now_ns();
	/* A new primary resends everything: the old committed state no longer matches what will be
	 * written into RAM, so it cannot be used until the new stream has delivered a full state. */
	r->have_committed = false;
	r->disks_verified = 0;
	pthread_mutex_unlock(&r->lock);
	remus_notify(r, RA_READER_CONNECTED);
	in.timeout_ms = (int)to; /* silence past the heartbeat timeout = primary gone */
	if (sr_reader_new(&rd, &in)) {
		reader_end(r, false, "out of memory");
		return NULL;
	}
	if (r->colo_mode)
		sr_set_optional_hook(rd, colo_standby_record, r);
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
		pthread_mutex_lock(&r->lock);
		send_msg(r, REMUS_MSG_REJECT, REMUS_REJECT_STATE);
		pthread_mutex_unlock(&r->lock);
		reader_end(r, false, why);
		sr_ctx_free(rd);
		return NULL;
	}
	r->stg.base = gm; /* PAGE_DELTA: the replica's RAM is the last copy the primary sent */
	rc = remus_disk_send_sums(r);
	if (rc) {
		snprintf(why, sizeof(why), "cannot send the disk checksums to the primary: %s",
			 strerror(-rc));
		reader_end(r, false, why);
		sr_ctx_free(rd);
		return NULL;
	}
	r->stg.keep_bodies = true; /* records decoded straight into RAM at commit (docs/remus.md) */
	for (;;) {
		bool direct;

		pthread_mutex_lock(&r->lock);
		direct = !r->have_committed; /* before the first full state: write straight into RAM */
		pthread_mutex_unlock(&r->lock);
		rc = ckpt_read_epoch(rd, &r->stg, direct ? gm : NULL, err, sizeof(err));
		if (rc == 0) {
			/* END: the primary's ABANDON. Say so and stay held: no takeover. */
			if (r->colo_mode && r->colo->svm_running && !r->colo->svm_paused && !vm_pause(r->vm))
				r->colo->svm_paused = true; /* a running secondary stops: a hold */
			pthread_mutex_lock(&r->lock);
			r->abandoned = true;
			send_msg(r, REMUS_MSG_ABANDONED, r->committed_epoch);
			snprintf(why, sizeof(why),
				 "primary ended replication (ABANDON); staying held at epoch %llu",
				 (unsigned long long)r->committed_epoch);
			pthread_mutex_unlock(&r->lock);
			reader_end(r, false, why);
			break;
		}
		if (rc < 0) {
			read_failed(r, rc, to, err);
			break;
		}
		if (!direct && !r->stg.have_state && (r->stg.pages || r->stg.nzero)) {
			pthread_mutex_lock(&r->lock);
			send_msg(r, REMUS_MSG_REJECT, REMUS_REJECT_STREAM);
			pthread_mutex_unlock(&r->lock);
			reader_end(r, false, "rejected an epoch with pages but no machine state");
			break;
		}
		bool stateful = r->stg.have_state;
		if (commit_epoch(r, direct, in.bytes))
			break;
		if (r->colo_mode && stateful && colo_standby_applied(r, err, sizeof(err))) {
			snprintf(why, sizeof(why), "COLO: cannot apply a checkpoint: %.200s", err);
			reader_end(r, false, why);
			break;
		}
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

/* The failover report, as a "failover" event: when the primary was last heard (its last committed
 * epoch), when its loss was seen, when the takeover began (after a witness wait, fence command or
 * operator) and how long it took. t0: the takeover's start. */
static void failover_event(struct remus *r, const char *why, uint64_t epoch, uint64_t t0)
{
	struct json_object *f = json_object_new_object();
	uint64_t t1 = now_ns();

	pthread_mutex_lock(&r->lock);
	uint64_t last = r->last_ckpt_ns, lost = r->lost_ns;
	pthread_mutex_unlock(&r->lock);
	r->nr_failovers++;
	r->fo_valid = true;
	r->fo_epoch = epoch;
	r->fo_takeover_ms = (double)(t1 - t0) / 1e6;
	r->fo_detect_ms = r->fo_decide_ms = -1;
	if (lost && last && lost >= last && t0 >= lost) {
		r->fo_detect_ms = (double)(lost - last) / 1e6;
		r->fo_decide_ms = (double)(t0 - lost) / 1e6;
		json_object_object_add(f, "detect_ms", json_object_new_double((double)(lost - last) / 1e6));
		json_object_object_add(f, "decide_ms", json_object_new_double((double)(t0 - lost) / 1e6));
	}
	json_object_object_add(f, "takeover_ms", json_object_new_double((double)(t1 - t0) / 1e6));
	if (last && t1 >= last) /* from the last epoch the primary committed until this copy runs */
		json_object_object_add(f, "outage_ms", json_object_new_double((double)(t1 - last) / 1e6));
	json_object_object_add(f, "heartbeat_timeout_ms", json_object_new_int((int)r->hb_timeout_ms));
	json_object_object_add(
		f, "policy",
		json_object_new_string(r->failover_policy == FAILOVER_MANUAL ? "manual" : "auto"));
	json_object_object_add(f, "fence_cmd", json_object_new_boolean(r->fence_cmd[0] != 0));
	if (r->wit)
		json_object_object_add(f, "witness_token",
				       json_object_new_int64((int64_t)witness_token(r->wit)));
	json_object_object_add(f, "failovers", json_object_new_int64((int64_t)r->nr_failovers));
	remus_event_fields(r, "failover", epoch, f, "%s (took over in %.1f ms)", why,
			   (double)(t1 - t0) / 1e6);
}

int remus_standby_halt_reader(struct remus *r, char *err, size_t errlen)
{
	pthread_mutex_lock(&r->lock);
	if (!r->have_committed) {
		pthread_mutex_unlock(&r->lock);
		return errf(err, errlen, -EAGAIN, "no complete checkpoint received yet: cannot take over");
	}
	r->failed_over = true; /* the reader applies nothing more */
	if (r->cfd >= 0)
		shutdown(r->cfd, SHUT_RDWR);
	pthread_mutex_unlock(&r->lock);
	if (r->reader_running) {
		pthread_join(r->reader, NULL);
		r->reader_running = false;
	}
	return 0;
}

/* Take over. Loop thread. Returns 0, or -EAGAIN when no complete state ever arrived. */
int remus_standby_failover(struct remus *r, const char *why, bool planned, char *err, size_t errlen)
{
	uint64_t t0 = now_ns(), epoch;
	int rc;

	(void)planned; /* the fence command (not for a planned switchover) ran before: remus_takeover.c */
	rc = remus_standby_halt_reader(r, err, errlen);
	if (rc)
		return rc;
	epoch = r->committed_epoch; /* the reader has ended: no lock needed */
	ev_timer_stop(r->loop, &r->hb_w);
	ev_timer_stop(r->loop, &r->progress_w);
	ev_io_stop(r->loop, &r->accept_w);
	if (r->lfd >= 0)
		close(r->lfd);
	r->lfd = -1;
	ckpt_stage_free(&r->stg);
	if (r->colo_mode && r->colo->svm_running) {
		/* COLO: the secondary already runs with a state every released output agrees with */
		rc = colo_standby_takeover(r, err, errlen);
		r->colo_mode = false;
	} else {
		remus_disk_colo_discard(r);
		rc = ckpt_state_apply(&r->committed, r->vm, err, errlen);
		if (!rc)
			rc = vmm_start_vcpus(r->v);
	}
	if (rc) {
		if (!*err)
			errf(err, errlen, rc, "cannot start vCPUs: %s", strerror(-rc));
		snprintf(r->last_error, sizeof(r->last_error), "failover failed: %s", err);
		remus_record_event(r, "error", epoch, "failover failed: %s", err);
		log_error("remus", vmm_name(r->v), "failover failed: %s", err);
		vmm_stop(r->v, 1);
		return rc;
	}
	failover_event(r, why, epoch, t0);
	r->announce_left = 3;
	ev_timer_init(&r->announce_w, announce_cb, 0, 0.05);
	r->announce_w.data = r;
	ev_timer_start(r->loop, &r->announce_w);
	r->role = REMUS_UNPROTECTED;
	r->awaiting_manual = false;
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

uint32_t remus_progress_timeout_ms(const struct remus *r)
{
	uint32_t a = r->hb_timeout_ms * 5, b = r->interval_ms * 20;

	return a > b ? a : b;
}

/* Liveness on progress, not on the primary's sender thread: a primary whose loop or vCPUs are
 * wedged keeps heartbeating but sends no CHECKPOINT_END. Past the progress timeout cut the reader;
 * it ends as "primary lost". */
static void progress_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct remus *r = w->data;

	(void)loop, (void)revents;
	pthread_mutex_lock(&r->lock);
	if (r->connected && r->have_committed && r->cfd >= 0 && !r->progress_lost &&
	    now_ns() - r->last_ckpt_ns > (uint64_t)remus_progress_timeout_ms(r) * 1000000ull) {
		r->progress_lost = true;
		shutdown(r->cfd, SHUT_RDWR);
	}
	pthread_mutex_unlock(&r->lock);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct remus *r = w->data;
	int fd;

	(void)loop, (void)revents;
	while ((fd = sock_accept(r->lfd, 0)) >= 0) {
		pthread_mutex_lock(&r->lock);
		/* A reader that ended (or sent ABANDONED and is ending) whose end the loop has not handled
		 * yet: join it first (a switchover's GO follows ABANDONED at once). */
		bool ended = r->reader_running && (r->cfd < 0 || r->abandoned);
		pthread_mutex_unlock(&r->lock);
		if (ended)
			remus_standby_async(r, RA_READER_ENDED);
		if (r->reader_running || r->role != REMUS_STANDBY || remus_takeover_fencing(r)) {
			close(fd); /* one primary at a time; none while the primary is being fenced */
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
	char why[400];
	bool fo;

	if (r->role != REMUS_STANDBY)
		return;
	if (flags & RA_READER_CONNECTED) {
		double t = (double)r->hb_timeout_ms / 4e3;
		ev_timer_stop(r->loop, &r->hb_w);
		ev_timer_set(&r->hb_w, t, t);
		ev_timer_start(r->loop, &r->hb_w);
		hb_cb(r->loop, &r->hb_w, 0);
		ev_timer_stop(r->loop, &r->progress_w);
		ev_timer_set(&r->progress_w, t, t);
		ev_timer_start(r->loop, &r->progress_w);
		remus_takeover_cancel(r); /* a primary again: no takeover */
		r->awaiting_manual = false;
	}
	if (!(flags & RA_READER_ENDED) || !r->reader_running)
		return;
	pthread_join(r->reader, NULL);
	r->reader_running = false;
	ev_timer_stop(r->loop, &r->hb_w);
	ev_timer_stop(r->loop, &r->progress_w);
	pthread_mutex_lock(&r->lock);
	fo = r->want_failover;
	snprintf(why, sizeof(why), "%s", r->end_reason);
	pthread_mutex_unlock(&r->lock);
	if (!fo && strncmp(why, REFUSED, strlen(REFUSED)) == 0) {
		pthread_mutex_lock(&r->lock);
		r->refused++;
		pthread_mutex_unlock(&r->lock);
		log_warn("remus", vmm_name(r->v), "standby: %s", why);
		return;
	}
	if (!fo) {
		if (strncmp(why, "rejected", 8) == 0) {
			r->rejected++;
			remus_record_event(r, "rejected", r->committed_epoch, "%s", why);
		}
		snprintf(r->last_error, sizeof(r->last_error), "%.250s", why);
		log_warn("remus", vmm_name(r->v), "standby: %s; waiting for a primary", why);
		return;
	}
	remus_record_event(r, "primary-lost", r->committed_epoch, "%s (%s failover policy)", why,
			   r->failover_policy == FAILOVER_MANUAL ? "manual" : "auto");
	if (r->failover_policy == FAILOVER_MANUAL) {
		r->awaiting_manual = true;
		snprintf(r->last_error, sizeof(r->last_error),
			 "%.150s; failover manual: waiting for `doppel failover`", why);
		log_warn("remus", vmm_name(r->v), "standby: %s", r->last_error);
		return;
	}
	/* With a witness only once the key is ours (the primary's window ended); with --fence-cmd only
	 * once it exited 0: both on a job thread (remus_takeover.c), then the state is applied here. */
	remus_takeover_auto(r, why);
}

struct json_object *remus_cmd_failover(struct remus *r, struct json_object *req)
{
	struct json_object *j;
	bool force = false, heard;

	if (r->role != REMUS_STANDBY)
		return ctl_refused("%s is not a standby", vmm_name(r->v));
	if (json_object_object_get_ex(req, "force", &j)) {
		/* a JSON boolean only: json_object_get_boolean("false") is true */
		if (!json_object_is_type(j, json_type_boolean))
			return ctl_error("\"force\" must be a JSON boolean (true or false)");
		force = json_object_get_boolean(j);
	}
	pthread_mutex_lock(&r->lock);
	heard = r->connected;
	pthread_mutex_unlock(&r->lock);
	if (heard && !force)
		return ctl_refused(
			"the primary is still heard (connected, timeout %u ms); use --force for a drill",
			r->hb_timeout_ms);
	return remus_takeover_manual(r, force); /* witness key, fence command: answered when done */
}

int remus_standby_start(struct remus *r, const char *addr, char *err, size_t errlen)
{
	int fd = sock_listen(addr, err, errlen);

	if (fd < 0)
		return fd;
	remus_standby_start_fd(r, fd, addr);
	return 0;
}

void remus_standby_start_fd(struct remus *r, int fd, const char *addr)
{
	r->lfd = fd;
	snprintf(r->peer, sizeof(r->peer), "%s", addr);
	r->role = REMUS_STANDBY;
	remus_disk_standby_init(r);
	ev_io_init(&r->accept_w, accept_cb, fd, EV_READ);
	r->accept_w.data = r;
	ev_io_start(r->loop, &r->accept_w);
	ev_init(&r->hb_w, hb_cb);
	r->hb_w.data = r;
	ev_init(&r->progress_w, progress_cb);
	r->progress_w.data = r;
}

void remus_standby_status(struct remus *r, struct json_object *o)
{
	if (r->role != REMUS_STANDBY && !r->rx_epochs)
		return;
	pthread_mutex_lock(&r->lock);
	json_object_object_add(o, "connected", json_object_new_boolean(r->connected));
	if (r->role == REMUS_STANDBY) {
		/* what it does: "held" (waiting or replicating), "abandoned" (the primary ended on
		 * purpose: stays held), "awaiting-failover" (primary lost, --failover manual) */
		json_object_object_add(o, "state",
				       json_object_new_string(r->awaiting_manual ? "awaiting-failover"
							      : r->abandoned	 ? "abandoned"
										 : "held"));
		json_object_object_add(
			o, "failover",
			json_object_new_string(r->failover_policy == FAILOVER_MANUAL ? "manual" : "auto"));
		json_object_object_add(o, "progress_timeout_ms",
				       json_object_new_int((int)remus_progress_timeout_ms(r)));
		remus_takeover_status(r, o);
		json_object_object_add(o, "split_brain_possible",
				       json_object_new_boolean(r->failover_policy == FAILOVER_AUTO &&
							       !r->fence_cmd[0] && !r->wit));
	}
	json_object_object_add(o, "have_state", json_object_new_boolean(r->have_committed));
	json_object_object_add(o, r->role == REMUS_STANDBY ? "epoch" : "standby_epoch",
			       json_object_new_int64((int64_t)r->committed_epoch));
	if (r->role == REMUS_STANDBY)
		json_object_object_add(o, "acked_epoch", json_object_new_int64((int64_t)r->committed_epoch));
	json_object_object_add(o, "rx_epochs", json_object_new_int64((int64_t)r->rx_epochs));
	json_object_object_add(o, "rx_pages", json_object_new_int64((int64_t)r->rx_pages));
	json_object_object_add(o, "rx_bytes", json_object_new_int64((int64_t)r->rx_bytes));
	json_object_object_add(o, "rejected", json_object_new_int64((int64_t)r->rejected));
	if (r->role == REMUS_STANDBY) {
		json_object_object_add(o, "refused", json_object_new_int64((int64_t)r->refused));
		json_object_object_add(o, "accept_any_peer", json_object_new_boolean(r->accept_any_peer));
		if (r->bound_id[0])
			json_object_object_add(o, "primary_identity", json_object_new_string(r->bound_id));
	}
	json_object_object_add(o, "apply_ms_last", json_object_new_double((double)r->apply_ns_last / 1e6));
	pthread_mutex_unlock(&r->lock);
}
