/* migrate.c — live migration: the "migrate" control command, status, back-channel messages, completion. */
#include <errno.h>
#include <json-c/json.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "migrate/migrate.h"
#include "migrate/migrate_priv.h"
#include "common/parse.h"
#include "replication/delta.h"
#include "replication/rw.h"
#include "vmm/vmm.h"
#include "common/clock.h"
#include "common/errf.h"
#include "common/log.h"
#include "replication/tls.h"

/* ---- back channel ----------------------------------------------------------------------------- */

int mig_msg_send(int fd, uint32_t type, uint64_t t_start, uint64_t t_running, const char *text)
{
	return mig_msg_send_link(fd, NULL, type, t_start, t_running, text);
}

int mig_msg_send_link(int fd, struct tls_link *link, uint32_t type, uint64_t t_start, uint64_t t_running,
		      const char *text)
{
	struct mig_msg m = {
		.magic = MIG_MSG_MAGIC, .type = type, .t_start_ns = t_start, .t_running_ns = t_running};
	size_t off = 0;

	if (text)
		snprintf(m.text, sizeof(m.text), "%s", text);
	if (link) /* 0 once the whole record is in the kernel's send buffer, as below */
		return tls_link_send(link, &m, sizeof(m), 2000);
	while (off < sizeof(m)) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		if (poll(&p, 1, 2000) <= 0)
			return -ETIMEDOUT;
		ssize_t n = send(fd, (char *)&m + off, sizeof(m) - off, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		off += (size_t)n;
	}
	return 0;
}

int mig_msg_recv(int fd, struct mig_msg *m, int timeout_ms)
{
	return mig_msg_recv_link(fd, NULL, m, timeout_ms);
}

/* 144 bytes through the link, one overall deadline. 0, -ETIMEDOUT or -EPIPE (EOF). */
static int recv_link(int fd, struct tls_link *link, struct mig_msg *m, int timeout_ms)
{
	struct sr_in in;

	sr_in_fd(&in, fd, timeout_ms);
	in.tls = link;
	in.deadline_ns = now_ns() + (uint64_t)timeout_ms * 1000000ull;
	ssize_t n = sr_in_read(&in, m, sizeof(*m));
	return n < 0 ? (int)n : n < (ssize_t)sizeof(*m) ? -EPIPE : 0;
}

int mig_msg_recv_link(int fd, struct tls_link *link, struct mig_msg *m, int timeout_ms)
{
	uint64_t end = now_ns() + (uint64_t)timeout_ms * 1000000ull;
	size_t off = 0;

	if (link) {
		int rc = recv_link(fd, link, m, timeout_ms);
		if (rc)
			return rc;
		off = sizeof(*m);
	}
	while (off < sizeof(*m)) {
		uint64_t now = now_ns();
		if (now >= end)
			return -ETIMEDOUT;
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int pr = poll(&p, 1, (int)((end - now) / 1000000ull) + 1);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr <= 0)
			return pr == 0 ? -ETIMEDOUT : -errno;
		ssize_t n = recv(fd, (char *)m + off, sizeof(*m) - off, 0);
		if (n == 0)
			return -EPIPE;
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		off += (size_t)n;
	}
	if (m->magic != MIG_MSG_MAGIC || m->type < MIG_ACCEPT || m->type > MIG_MSG_LAST)
		return -EBADMSG;
	m->text[sizeof(m->text) - 1] = 0;
	for (char *c = m->text; *c; c++)
		if ((unsigned char)*c < ' ' || *c == 0x7f)
			*c = '?';
	return 0;
}

void mig_event(struct mig *m, const char *type, const char *direction, struct json_object *f)
{
	if (!f)
		f = json_object_new_object();
	if (!f)
		return;
	json_object_object_add(f, "direction", json_object_new_string(direction));
	vmm_event(m->v, type, f);
}

/* ---- the "migrate" command -------------------------------------------------------------------- */

static void done_async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	struct mig *m = w->data;

	(void)revents;
	pthread_join(m->sender, NULL);
	pthread_mutex_lock(&m->lock);
	m->busy = false;
	pthread_mutex_unlock(&m->lock);
	if (m->success) /* the reply was queued by the sender: give the loop a moment to write it */
		ev_timer_start(loop, &m->stop_timer);
}

static void stop_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct mig *m = w->data;

	(void)loop, (void)revents;
	vmm_stop(m->v, 0);
}

static int parse_params(struct json_object *req, struct mig_params *p, char *err, size_t errlen)
{
	struct json_object *j;

	*p = (struct mig_params){.downtime_ms = 10,
				 .compress = MIG_COMP_AUTO,
				 .connect_timeout_ms = 5000,
				 .io_timeout_ms = 5000,
				 .max_rounds = 1000};
	if (!json_object_object_get_ex(req, "to", &j) || !json_object_is_type(j, json_type_string) ||
	    strlen(json_object_get_string(j)) >= sizeof(p->to))
		return errf(err, errlen, -EINVAL, "migrate needs a \"to\": \"ADDR:PORT\" string");
	snprintf(p->to, sizeof(p->to), "%s", json_object_get_string(j));
	if (json_object_object_get_ex(req, "downtime_ms", &j)) {
		p->downtime_ms = json_object_get_double(j);
		if (!(p->downtime_ms >= 1 && p->downtime_ms <= 60000))
			return errf(err, errlen, -EINVAL, "\"downtime_ms\" must be 1..60000");
	}
	if (json_object_object_get_ex(req, "max_bandwidth", &j)) {
		int64_t bw = json_object_get_int64(j);
		if (bw < 0)
			return errf(err, errlen, -EINVAL, "\"max_bandwidth\" must be >= 0 bytes/s");
		p->max_bw = (uint64_t)bw;
	}
	if (json_object_object_get_ex(req, "compress", &j)) {
		const char *s = json_object_get_string(j);
		if (s && !strcmp(s, "auto"))
			p->compress = MIG_COMP_AUTO;
		else if (s && !strcmp(s, "zstd"))
			p->compress = MIG_COMP_ZSTD;
		else if (s && !strcmp(s, "none"))
			p->compress = MIG_COMP_NONE;
		else {
			return errf(err, errlen, -EINVAL, "\"compress\" must be auto, zstd or none");
		}
	}
	p->postcopy_min_frac = 0.5;
	if (json_object_object_get_ex(req, "postcopy", &j)) {
		const char *v = json_object_get_string(j);
		static const char *const names[] = {"off", "now", "round", "auto"};
		int k = 0;
		while (k < 4 && !(v && !strcmp(v, names[k])))
			k++;
		if (k == 4)
			return errf(err, errlen, -EINVAL, "\"postcopy\" must be off, now, round or auto");
		p->postcopy = (enum mig_postcopy)k;
	}
	if (json_object_object_get_ex(req, "postcopy_min_pct", &j)) {
		double pct = json_object_get_double(j);
		if (!(pct >= 0 && pct <= 100))
			return errf(err, errlen, -EINVAL, "\"postcopy_min_pct\" must be 0..100");
		p->postcopy_min_frac = pct / 100;
	}
	if (json_object_object_get_ex(req, "delta_cache", &j)) {
		int64_t b = json_object_get_int64(j);
		if (b < 0 || (uint64_t)b > SR_DELTA_MAX)
			return errf(err, errlen, -EINVAL,
				    "\"delta_cache\" must be 0..%llu bytes (0 = no delta encoding)",
				    (unsigned long long)SR_DELTA_MAX);
		p->delta_bytes = (uint64_t)b;
	}
	if (json_object_object_get_ex(req, "shared_disks", &j)) {
		if (!json_object_is_type(j, json_type_boolean))
			return errf(err, errlen, -EINVAL, "\"shared_disks\" must be true or false");
		p->shared_disks = json_object_get_boolean(j);
	}
	if (json_object_object_get_ex(req, "timeout_ms", &j)) {
		int64_t t = json_object_get_int64(j);
		if (t < 100 || t > 600000)
			return errf(err, errlen, -EINVAL, "\"timeout_ms\" must be 100..600000");
		p->io_timeout_ms = p->connect_timeout_ms = (int)t;
	}
	return 0;
}

/* `doppel migrate NAME --resume-source`: the operator's way out of an uncertain switchover (GO sent,
 * no RUNNING). Only then: the sender thread, waiting in that state, resumes the VM and replies. The
 * operator must know the destination does not run (it exits whenever GO did not reach it). */
static struct json_object *resume_source(struct vmm *v, struct mig *m)
{
	pthread_mutex_lock(&m->lock);
	if (m->pc_lost) {
		pthread_mutex_unlock(&m->lock);
		return ctl_error("refused: the post-copy migration of %s failed after the destination "
				 "started running; neither host holds the whole VM, so it cannot be resumed "
				 "here (stop it with `doppel stop`)",
				 vmm_name(v));
	}
	if (!m->uncertain || m->op_resume) {
		const char *st = m->prog.state ? m->prog.state : "none";
		pthread_mutex_unlock(&m->lock);
		return ctl_refused("%s is not in an uncertain switchover (migration state %s); nothing to "
				   "resume",
				   vmm_name(v), st);
	}
	m->op_resume = true;
	m->op_conn = vmm_ctl_current(v);
	pthread_mutex_unlock(&m->lock);
	return CTL_DEFER;
}

/* The source's TLS credentials from the request ("tls_dir", "tls_peer_name"), replacing the last
 * migration's. No sender thread runs. 0 or -errno with err. */
static int migrate_tls(struct mig *m, struct json_object *req, const char *to, char *err, size_t errlen)
{
	struct json_object *d = NULL, *n = NULL;
	struct tls_cfg *tc = NULL;
	int rc;

	json_object_object_get_ex(req, "tls_dir", &d);
	json_object_object_get_ex(req, "tls_peer_name", &n);
	if ((d && !json_object_is_type(d, json_type_string)) ||
	    (n && !json_object_is_type(n, json_type_string)))
		return errf(err, errlen, -EINVAL, "tls_dir and tls_peer_name must be strings");
	if (n && !d)
		return errf(err, errlen, -EINVAL, "--tls-peer-name needs --tls-dir");
	if (d && (rc = tls_cfg_load(&tc, json_object_get_string(d), n ? json_object_get_string(n) : NULL, err,
				    errlen)))
		return rc;
	if (!tc)
		log_warn("migrate", vmm_name(m->v),
			 "migration to %s is plaintext and unauthenticated (no --tls-dir)", to);
	tls_cfg_free(m->tls);
	m->tls = tc;
	return 0;
}

static struct json_object *cmd_migrate(struct vmm *v, struct json_object *req, void *opaque)
{
	struct mig *m = opaque;
	struct mig_params p;
	struct json_object *j;
	char err[300];
	int rc;

	if (json_object_object_get_ex(req, "resume_source", &j) && json_object_get_boolean(j))
		return resume_source(v, m);
	pthread_mutex_lock(&m->lock);
	bool lost = m->pc_lost;
	pthread_mutex_unlock(&m->lock);
	if (lost)
		return ctl_error("the post-copy migration of %s failed; it cannot migrate again",
				 vmm_name(v));
	if (vmm_held(v))
		return ctl_refused("this VM is not running (held for an incoming migration or as a standby)");
	if (vm_get_state(vmm_vm(v)) != VM_RUNNING)
		return ctl_refused("VM %s is %s; only a running VM can be migrated", vmm_name(v),
				   vm_state_name(vm_get_state(vmm_vm(v))));
	if (parse_params(req, &p, err, sizeof(err)))
		return ctl_error("%s", err);
	pthread_mutex_lock(&m->lock);
	bool busy = m->busy;
	pthread_mutex_unlock(&m->lock);
	if (!busy && migrate_tls(m, req, p.to, err, sizeof(err)))
		return ctl_error("%s", err);
	pthread_mutex_lock(&m->lock);
	if (m->busy) {
		pthread_mutex_unlock(&m->lock);
		return ctl_refused("a migration of %s is already running", vmm_name(v));
	}
	m->busy = true;
	m->success = false;
	m->uncertain = m->op_resume = false;
	m->op_conn = NULL;
	m->p = p;
	m->prog = (struct mig_progress){.state = "active"};
	pthread_mutex_unlock(&m->lock);
	m->conn = vmm_ctl_current(v);
	struct json_object *f = json_object_new_object();
	json_object_object_add(f, "to", json_object_new_string(p.to));
	json_object_object_add(f, "downtime_target_ms", json_object_new_double(p.downtime_ms));
	mig_event(m, "migration-start", "out", f);
	rc = pthread_create(&m->sender, NULL, mig_sender_main, m);
	if (rc) {
		pthread_mutex_lock(&m->lock);
		m->busy = false;
		m->prog.state = "failed";
		pthread_mutex_unlock(&m->lock);
		ctl_reply(m->conn, ctl_error("cannot start the migration thread: %s", strerror(rc)));
		return CTL_DEFER;
	}
	return CTL_DEFER;
}

static void status_hook(struct vmm *v, struct json_object *st, void *opaque)
{
	struct mig *m = opaque;
	struct json_object *o = json_object_new_object();

	(void)v;
	pthread_mutex_lock(&m->lock);
	json_object_object_add(o, "state", json_object_new_string(m->prog.state ? m->prog.state : "none"));
	json_object_object_add(o, "tls", json_object_new_boolean(m->tls != NULL));
	if (m->prog.state) {
		/* the VM's current transfer is this migration: its TLS is the process's */
		json_object_object_add(st, "tls", json_object_new_boolean(m->tls != NULL));
		json_object_object_add(o, "committed", json_object_new_boolean(m->prog.committed));
		json_object_object_add(o, "round", json_object_new_int64((int64_t)m->prog.round));
		json_object_object_add(o, "pages_left", json_object_new_int64((int64_t)m->prog.pages_left));
		json_object_object_add(o, "rate_mbps", json_object_new_double(m->prog.rate_mbps));
		json_object_object_add(o, "est_downtime_ms", json_object_new_double(m->prog.est_downtime_ms));
		json_object_object_add(o, "throttle_pct", json_object_new_double(m->prog.throttle * 100));
		json_object_object_add(o, "bytes_wire", json_object_new_int64((int64_t)m->prog.bytes_wire));
		json_object_object_add(o, "bytes_raw", json_object_new_int64((int64_t)m->prog.bytes_raw));
		json_object_object_add(o, "compress", json_object_new_boolean(m->prog.compress));
		json_object_object_add(o, "postcopy", json_object_new_boolean(m->prog.postcopy));
		if (m->prog.postcopy) {
			json_object_object_add(o, "postcopy_faults",
					       json_object_new_int64((int64_t)m->prog.pc_faults));
			json_object_object_add(o, "postcopy_requests",
					       json_object_new_int64((int64_t)m->prog.pc_requests));
		}
		if (m->prog.error[0])
			json_object_object_add(o, "error", json_object_new_string(m->prog.error));
	}
	pthread_mutex_unlock(&m->lock);
	json_object_object_add(st, "migration", o);
}

static void metrics_hook(struct vmm *v, FILE *f, void *opaque)
{
	struct mig *m = opaque;

	(void)v;
	pthread_mutex_lock(&m->lock);
	struct mig_progress p = m->prog;
	bool busy = m->busy;
	uint64_t ok = m->nr_completed, bad = m->nr_failed;
	double down = m->last_downtime_ms;
	pthread_mutex_unlock(&m->lock);
	fprintf(f,
		"# HELP doppel_migration_active 1 while an outgoing migration runs.\n"
		"# TYPE doppel_migration_active gauge\ndoppel_migration_active %d\n",
		busy);
	fprintf(f,
		"# HELP doppel_migration_sent_pages Pages sent by the current (or last) outgoing migration.\n"
		"# TYPE doppel_migration_sent_pages gauge\ndoppel_migration_sent_pages %llu\n",
		(unsigned long long)(p.bytes_raw / GUEST_PAGE_SIZE));
	fprintf(f,
		"# HELP doppel_migration_remaining_pages Pages left in the current round.\n"
		"# TYPE doppel_migration_remaining_pages gauge\ndoppel_migration_remaining_pages %llu\n",
		(unsigned long long)p.pages_left);
	fprintf(f,
		"# HELP doppel_migration_sent_wire_bytes Bytes on the link of the current (or last) "
		"migration.\n"
		"# TYPE doppel_migration_sent_wire_bytes gauge\ndoppel_migration_sent_wire_bytes %llu\n",
		(unsigned long long)p.bytes_wire);
	fprintf(f,
		"# HELP doppel_migration_round Pre-copy round of the current (or last) migration.\n"
		"# TYPE doppel_migration_round gauge\ndoppel_migration_round %llu\n",
		(unsigned long long)p.round);
	fprintf(f,
		"# HELP doppel_migration_estimated_downtime_seconds Downtime the remaining pages would cost "
		"now.\n"
		"# TYPE doppel_migration_estimated_downtime_seconds gauge\n"
		"doppel_migration_estimated_downtime_seconds %.6f\n",
		p.est_downtime_ms / 1e3);
	fprintf(f,
		"# HELP doppel_migration_last_downtime_seconds Downtime of the last completed outgoing "
		"migration.\n"
		"# TYPE doppel_migration_last_downtime_seconds gauge\n"
		"doppel_migration_last_downtime_seconds %.6f\n",
		down / 1e3);
	fprintf(f,
		"# HELP doppel_migrations_total Outgoing migrations by result.\n"
		"# TYPE doppel_migrations_total counter\n"
		"doppel_migrations_total{result=\"completed\"} "
		"%llu\ndoppel_migrations_total{result=\"failed\"} %llu\n",
		(unsigned long long)ok, (unsigned long long)bad);
}

/* vmm_destroy: free the engine unless a migration thread still runs (the process is ending then). */
static void exit_hook(struct vmm *v, void *opaque)
{
	struct mig *m = opaque;

	pthread_mutex_lock(&m->lock);
	bool waiting = m->busy && m->uncertain;
	m->quit = true;
	pthread_mutex_unlock(&m->lock);
	if (waiting) /* an uncertain switchover ended by the operator (stop): the thread exits in 100 ms */
		pthread_join(m->sender, NULL);
	else if (m->busy || m->recv_started)
		return;
	ev_io_stop(vmm_loop(v), &m->accept_w);
	ev_timer_stop(vmm_loop(v), &m->stop_timer);
	if (m->lfd >= 0)
		close(m->lfd);
	if (m->fd >= 0)
		close(m->fd);
	tls_link_put(m->link);
	tls_cfg_free(m->tls);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

int migrate_setup(struct vmm *v)
{
	struct mig *m = calloc(1, sizeof(*m));
	int rc;

	if (!m)
		return -ENOMEM;
	m->v = v;
	m->lfd = m->fd = -1;
	pthread_mutex_init(&m->lock, NULL);
	pthread_mutex_init(&m->tx_lock, NULL);
	ev_async_init(&m->done_async, done_async_cb);
	m->done_async.data = m;
	ev_async_start(vmm_loop(v), &m->done_async);
	ev_unref(vmm_loop(v)); /* does not keep the loop alive by itself */
	ev_timer_init(&m->stop_timer, stop_timer_cb, 0.05, 0);
	m->stop_timer.data = m;
	rc = vmm_add_exit_hook(v, exit_hook, m);
	if (rc) {
		pthread_mutex_destroy(&m->lock);
		free(m);
		return rc;
	}
	rc = vmm_register_cmd(v, "migrate", cmd_migrate, m);
	if (!rc)
		rc = vmm_add_status_hook(v, status_hook, m);
	if (!rc)
		rc = vmm_add_metrics_hook(v, metrics_hook, m);
	return rc; /* on error m is freed by the exit hook */
}

/* The struct mig registered by migrate_setup (its "migrate" command's opaque). */
static struct mig *mig_of(struct vmm *v)
{
	return vmm_cmd_opaque(v, "migrate");
}

int migrate_incoming_listen(struct vmm *v, const char *addr, const char *tls_dir, const char *tls_peer_name,
			    char *err, size_t errlen)
{
	struct mig *m = mig_of(v);
	int rc;

	if (!m)
		return errf(err, errlen, -EINVAL, "internal error: migrate_setup was not called");
	if (!vmm_held(v))
		return errf(err, errlen, -EINVAL, "--incoming needs a VM that has not started");
	if (tls_peer_name && !tls_dir)
		return errf(err, errlen, -EINVAL, "--tls-peer-name needs --tls-dir");
	if (tls_dir && (rc = tls_cfg_load(&m->tls, tls_dir, tls_peer_name, err, errlen)))
		return rc;
	if (!tls_dir)
		log_warn("migrate", vmm_name(v),
			 "incoming migration is plaintext and unauthenticated (no --tls-dir): whoever "
			 "connects "
			 "to %s first runs here",
			 addr);
	return mig_recv_listen(m, addr, err, errlen);
}
