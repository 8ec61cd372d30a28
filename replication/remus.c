/* remus.c — Remus engine setup: control commands, the status hook, shared helpers (rings, events, async). */
#include <errno.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "replication/remus_priv.h"
#include "common/spawner.h"
#include "vmm/vmm.h"
#include "common/errf.h"
#include "common/log.h"

void remus_ring_push(struct remus_ring *r, uint64_t v)
{
	r->v[r->n % REMUS_RING] = v;
	r->n++;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

uint64_t remus_ring_pct(const struct remus_ring *r, double q)
{
	uint64_t tmp[REMUS_RING];
	size_t n = r->n < REMUS_RING ? (size_t)r->n : REMUS_RING, k;

	if (!n)
		return 0;
	memcpy(tmp, r->v, n * sizeof(tmp[0]));
	qsort(tmp, n, sizeof(tmp[0]), cmp_u64);
	k = (size_t)(q * (double)(n - 1) + 0.5);
	return tmp[k < n ? k : n - 1];
}

void remus_record_event(struct remus *r, const char *kind, uint64_t epoch, const char *fmt, ...)
{
	char reason[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	remus_event_fields(r, kind, epoch, NULL, "%s", reason);
}

void remus_notify(struct remus *r, unsigned flag)
{
	__atomic_or_fetch(&r->async_flags, flag, __ATOMIC_ACQ_REL);
	ev_async_send(r->loop, &r->async_w);
}

void remus_finish_reply(struct ctl_conn **c, struct json_object *reply)
{
	if (*c) {
		ctl_reply(*c, reply);
		*c = NULL;
	} else {
		json_object_put(reply);
	}
}

static void async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	struct remus *r = w->data;
	unsigned f = __atomic_exchange_n(&r->async_flags, 0, __ATOMIC_ACQ_REL);

	(void)loop, (void)revents;
	if (f & (RA_PRECOPY_DONE | RA_SENDER_FAILED | RA_FORCE_EPOCH))
		remus_primary_async(r, f & ~(unsigned)RA_COLO);
	if (f & RA_COLO)
		remus_primary_async(r, RA_COLO);
	if (f & RA_COLO_START)
		colo_standby_start_vcpus(r);
	if (f & (RA_READER_ENDED | RA_READER_CONNECTED))
		remus_standby_async(r, f);
	if (f & RA_SWITCH_GO)
		remus_switch_go(r);
	if (f & RA_TAKEOVER)
		remus_takeover_async(r);
}

static const char *role_name(enum remus_role role)
{
	return role == REMUS_PRIMARY ? "primary" : role == REMUS_STANDBY ? "standby" : "unprotected";
}

static void status_hook(struct vmm *v, struct json_object *o, void *opaque)
{
	struct remus *r = opaque;
	struct json_object *rm = json_object_new_object();

	(void)v;
	json_object_object_add(o, "role", json_object_new_string(role_name(r->role)));
	json_object_object_add(rm, "role", json_object_new_string(role_name(r->role)));
	json_object_object_add(rm, "mode",
			       json_object_new_string(r->colo_on || r->colo_mode ? "colo" : "remus"));
	if (r->peer[0])
		json_object_object_add(rm, "peer", json_object_new_string(r->peer));
	json_object_object_add(rm, "tls", json_object_new_boolean(r->tls != NULL));
	if (r->tls && tls_cfg_peer_name(r->tls))
		json_object_object_add(rm, "tls_peer_name",
				       json_object_new_string(tls_cfg_peer_name(r->tls)));
	/* the process's replication/migration transport; the migration hook (registered after this
	 * one) overrides it while a migration is its current transfer */
	json_object_object_add(o, "tls", json_object_new_boolean(r->tls != NULL));
	json_object_object_add(rm, "interval_ms", json_object_new_int((int)r->interval_ms));
	json_object_object_add(rm, "heartbeat_timeout_ms", json_object_new_int((int)r->hb_timeout_ms));
	remus_primary_status(r, rm);
	colo_status(r, o);
	remus_standby_status(r, rm);
	remus_witness_status(r, rm);
	remus_switch_status(r, rm);
	remus_disk_status(r, rm);
	/* Never "running" for a copy that cannot prove its lease (or is fenced). */
	if (r->pstate == PS_FENCED || remus_witness_unproven(r))
		json_object_object_add(o, "state", json_object_new_string("fenced"));
	json_object_object_add(rm, "failovers", json_object_new_int64((int64_t)r->nr_failovers));
	remus_status_events(r, rm);
	if (r->last_error[0])
		json_object_object_add(rm, "last_error", json_object_new_string(r->last_error));
	json_object_object_add(o, "remus", rm);
}

static struct json_object *cmd_protect(struct vmm *v, struct json_object *req, void *opaque)
{
	(void)v;
	return remus_cmd_protect(opaque, req);
}

static struct json_object *cmd_unprotect(struct vmm *v, struct json_object *req, void *opaque)
{
	(void)v, (void)req;
	return remus_cmd_unprotect(opaque);
}

static struct json_object *cmd_switchover(struct vmm *v, struct json_object *req, void *opaque)
{
	(void)v;
	return remus_cmd_switchover(opaque, req);
}

static struct json_object *cmd_reprotect(struct vmm *v, struct json_object *req, void *opaque)
{
	(void)v;
	return remus_cmd_reprotect(opaque, req);
}

static struct json_object *cmd_drill_report(struct vmm *v, struct json_object *req, void *opaque)
{
	(void)v;
	return remus_cmd_drill_report(opaque, req);
}

static struct json_object *cmd_failover(struct vmm *v, struct json_object *req, void *opaque)
{
	(void)v;
	return remus_cmd_failover(opaque, req);
}

/* The engine of v: the opaque of its "protect" command (no globals: several VMs per process work). */
static struct remus *remus_of(struct vmm *v)
{
	return vmm_cmd_opaque(v, "protect");
}

/* vmm_destroy, after the vCPUs stopped and before guest memory and devices go: stop the threads and
 * free. A reader thread still running (a standby exiting) keeps the engine. */
static void exit_hook(struct vmm *v, void *opaque)
{
	struct remus *r = opaque;

	(void)v;
	remus_primary_exit(r);
	remus_takeover_stop(r); /* before the witness goes: the job may be using it */
	spawner_stop(r->fence);
	r->fence = NULL;
	remus_witness_free(r);
	if (r->reader_running) {
		/* A standby going away: stop applying (the replica's RAM goes next) and end the reader. */
		pthread_mutex_lock(&r->lock);
		r->failed_over = true;
		if (r->cfd >= 0)
			shutdown(r->cfd, SHUT_RDWR);
		pthread_mutex_unlock(&r->lock);
		pthread_join(r->reader, NULL);
		r->reader_running = false;
	}
	if (r->sender_running)
		return; /* a sender that would not stop: leave the engine to it, the process is ending */
	if (r->lfd >= 0)
		close(r->lfd);
	if (r->fd >= 0)
		close(r->fd);
	if (r->sw_lfd >= 0)
		close(r->sw_lfd);
	if (r->sw_fd >= 0)
		close(r->sw_fd);
	if (r->go_fd >= 0)
		close(r->go_fd);
	netbuf_free(r->nb);
	ckpt_engine_free(&r->eng);
	colo_free(r->colo);
	remus_msgbuf_free(&r->mb);
	ckpt_stage_free(&r->tx);
	sr_delta_free(r->delta);
	if (r->disks_ready)
		disk_repl_free(&r->disks);
	disk_stage_free(&r->dstage);
	ckpt_state_free(&r->committed);
	ckpt_stage_free(&r->stg);
	remus_obs_free(r);
	tls_cfg_free(r->tls);
	pthread_cond_destroy(&r->cond);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

int remus_setup(struct vmm *v)
{
	struct remus *r = calloc(1, sizeof(*r));
	int rc;

	if (!r)
		return -ENOMEM;
	r->v = v;
	r->vm = vmm_vm(v);
	r->loop = vmm_loop(v);
	r->fd = r->lfd = r->cfd = -1;
	r->sw_lfd = r->sw_fd = r->go_fd = -1;
	r->interval_ms = 25;
	r->hb_timeout_ms = 200;
	r->next_epoch = 1;
	pthread_condattr_t ca;
	pthread_mutex_init(&r->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* timed waits immune to wall-clock steps */
	pthread_cond_init(&r->cond, &ca);
	pthread_condattr_destroy(&ca);
	ev_async_init(&r->async_w, async_cb);
	r->async_w.data = r;
	ev_async_start(r->loop, &r->async_w);
	ev_unref(r->loop); /* the async watcher alone must not keep the loop alive */
	rc = remus_obs_setup(r);
	if (!rc)
		rc = vmm_add_exit_hook(v, exit_hook, r);
	if (!rc)
		rc = vmm_register_cmd(v, "protect", cmd_protect, r);
	if (!rc)
		rc = vmm_register_cmd(v, "unprotect", cmd_unprotect, r);
	if (!rc)
		rc = vmm_register_cmd(v, "failover", cmd_failover, r);
	if (!rc)
		rc = vmm_register_cmd(v, "switchover", cmd_switchover, r);
	if (!rc)
		rc = vmm_register_cmd(v, "reprotect", cmd_reprotect, r);
	if (!rc)
		rc = vmm_register_cmd(v, "drill_report", cmd_drill_report, r);
	if (!rc)
		rc = vmm_add_status_hook(v, status_hook, r);
	if (rc)
		return rc; /* r stays reachable from the registered callbacks: not freed */
	return 0;
}

int remus_standby_listen(struct vmm *v, const struct remus_standby_opts *o, char *err, size_t errlen)
{
	struct remus *r = remus_of(v);

	if (!r)
		return errf(err, errlen, -EINVAL, "remus_setup was not called for this VM");
	if (!vmm_held(v))
		return errf(err, errlen, -EINVAL, "a standby VM must be created held (no vCPUs running)");
	if (o->fence_cmd && strlen(o->fence_cmd) >= sizeof(r->fence_cmd))
		return errf(err, errlen, -EINVAL, "fence command too long (max %zu bytes)",
			    sizeof(r->fence_cmd) - 1);
	snprintf(r->fence_cmd, sizeof(r->fence_cmd), "%s", o->fence_cmd ? o->fence_cmd : "");
	/* Before the sandbox (vmm_run): the command must not inherit the VM's seccomp allowlist. */
	if (r->fence_cmd[0] && !r->fence) {
		int rc = spawner_start(r->fence_cmd, &r->fence, err, errlen);
		if (rc)
			return rc;
	}
	r->failover_policy = o->failover_manual ? FAILOVER_MANUAL : FAILOVER_AUTO;
	if (o->witness) {
		int rc = remus_witness_config(r, o->witness, o->witness_name,
					      o->witness_ttl_ms ? o->witness_ttl_ms : 1000, err, errlen);
		if (rc)
			return rc;
	}
	if (o->tls_peer_name && !o->tls_dir)
		return errf(err, errlen, -EINVAL, "--tls-peer-name needs --tls-dir");
	if (o->tls_dir) {
		int rc = tls_cfg_load(&r->tls, o->tls_dir, o->tls_peer_name, err, errlen);
		if (rc)
			return rc;
	} else {
		log_warn("remus", vmm_name(v),
			 "standby: replication is plaintext and unauthenticated (no --tls-dir): anyone who "
			 "can reach %s can replace this replica",
			 o->listen);
	}
	r->accept_any_peer = o->accept_any_peer;
	return remus_standby_start(r, o->listen, err, errlen);
}
