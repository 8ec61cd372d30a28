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
#include "vmm/vmm.h"
#include "common/clock.h"
#include "common/errf.h"

/* ---- back channel ----------------------------------------------------------------------------- */

int mig_msg_send(int fd, uint32_t type, uint64_t t_start, uint64_t t_running, const char *text)
{
	struct mig_msg m = {
		.magic = MIG_MSG_MAGIC, .type = type, .t_start_ns = t_start, .t_running_ns = t_running};
	size_t off = 0;

	if (text)
		snprintf(m.text, sizeof(m.text), "%s", text);
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
	uint64_t end = now_ns() + (uint64_t)timeout_ms * 1000000ull;
	size_t off = 0;

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
	if (m->magic != MIG_MSG_MAGIC || m->type < MIG_ACCEPT || m->type > MIG_GO)
		return -EBADMSG;
	m->text[sizeof(m->text) - 1] = 0;
	for (char *c = m->text; *c; c++)
		if ((unsigned char)*c < ' ' || *c == 0x7f)
			*c = '?';
	return 0;
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

static struct json_object *cmd_migrate(struct vmm *v, struct json_object *req, void *opaque)
{
	struct mig *m = opaque;
	struct mig_params p;
	struct json_object *j;
	char err[300];
	int rc;

	if (json_object_object_get_ex(req, "resume_source", &j) && json_object_get_boolean(j))
		return resume_source(v, m);
	if (vmm_held(v))
		return ctl_refused("this VM is not running (held for an incoming migration or as a standby)");
	if (vm_get_state(vmm_vm(v)) != VM_RUNNING)
		return ctl_refused("VM %s is %s; only a running VM can be migrated", vmm_name(v),
				   vm_state_name(vm_get_state(vmm_vm(v))));
	if (parse_params(req, &p, err, sizeof(err)))
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
	if (m->prog.state) {
		json_object_object_add(o, "committed", json_object_new_boolean(m->prog.committed));
		json_object_object_add(o, "round", json_object_new_int64((int64_t)m->prog.round));
		json_object_object_add(o, "pages_left", json_object_new_int64((int64_t)m->prog.pages_left));
		json_object_object_add(o, "rate_mbps", json_object_new_double(m->prog.rate_mbps));
		json_object_object_add(o, "est_downtime_ms", json_object_new_double(m->prog.est_downtime_ms));
		json_object_object_add(o, "throttle_pct", json_object_new_double(m->prog.throttle * 100));
		json_object_object_add(o, "bytes_wire", json_object_new_int64((int64_t)m->prog.bytes_wire));
		json_object_object_add(o, "bytes_raw", json_object_new_int64((int64_t)m->prog.bytes_raw));
		json_object_object_add(o, "compress", json_object_new_boolean(m->prog.compress));
		if (m->prog.error[0])
			json_object_object_add(o, "error", json_object_new_string(m->prog.error));
	}
	pthread_mutex_unlock(&m->lock);
	json_object_object_add(st, "migration", o);
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
	return rc; /* on error m is freed by the exit hook */
}

/* The struct mig registered by migrate_setup (its "migrate" command's opaque). */
static struct mig *mig_of(struct vmm *v)
{
	return vmm_cmd_opaque(v, "migrate");
}

int migrate_incoming_listen(struct vmm *v, const char *addr, char *err, size_t errlen)
{
	struct mig *m = mig_of(v);

	if (!m)
		return errf(err, errlen, -EINVAL, "internal error: migrate_setup was not called");
	if (!vmm_held(v))
		return errf(err, errlen, -EINVAL, "--incoming needs a VM that has not started");
	return mig_recv_listen(m, addr, err, errlen);
}
