/* snapshot_cmd.c — the "snapshot" control command: a worker thread, a deferred reply. */
#include <errno.h>
#include <ev.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replication/snapshot.h"
#include "vmm/vmm.h"

/* Per VM: the snapshot state and the one job that may be in flight. */
struct snap_cmd {
	struct vmm *v;
	struct snap snap;
	bool busy; /* loop thread */
	pthread_t thread;
	ev_async done;
	struct ctl_conn *conn;
	struct json_object *reply;
	bool stop_after;
};

struct job {
	struct snap_cmd *c;
	char path[256], prev[256];
	bool has_prev, stop, with_disks;
};

static void *job_main(void *arg)
{
	struct job *j = arg;
	struct snap_cmd *c = j->c;
	struct snap_result res;
	struct json_object *o;
	char err[512];
	int rc;

	c->snap.with_disks = j->with_disks;
	rc = snap_take(&c->snap, vmm_vm(c->v), j->path, j->has_prev ? j->prev : NULL, j->stop, 2, &res, err,
		       sizeof(err));
	if (rc) {
		o = ctl_error("snapshot failed: %s", err);
	} else {
		o = json_object_new_object();
		json_object_object_add(o, "path", json_object_new_string(j->path));
		json_object_object_add(o, "incremental", json_object_new_boolean(res.incremental));
		json_object_object_add(o, "epoch", json_object_new_int64((int64_t)res.epoch));
		json_object_object_add(o, "pages", json_object_new_int64((int64_t)res.pages));
		json_object_object_add(o, "zero_pages", json_object_new_int64((int64_t)res.zero_pages));
		json_object_object_add(o, "bytes", json_object_new_int64((int64_t)res.bytes));
		json_object_object_add(o, "pause_ms", json_object_new_double((double)res.pause_ns / 1e6));
	}
	c->reply = o;
	c->stop_after = rc == 0 && j->stop;
	free(j);
	ev_async_send(vmm_loop(c->v), &c->done);
	return NULL;
}

/* Loop thread: wait for a snapshot in flight and send its reply. */
static void join(struct snap_cmd *c)
{
	if (!c->busy)
		return;
	pthread_join(c->thread, NULL);
	c->busy = false;
	if (c->conn)
		ctl_reply(c->conn, c->reply); /* takes the reply, even if the client left */
	else
		json_object_put(c->reply);
	c->conn = NULL;
	c->reply = NULL;
	if (c->stop_after)
		vmm_stop(c->v, 0);
}

static void done_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	(void)loop, (void)revents;
	join(w->data);
}

static void status_hook(struct vmm *v, struct json_object *status, void *opaque)
{
	struct snap_cmd *c = opaque;
	struct json_object *o;

	(void)v;
	if (!c->busy)
		return;
	o = json_object_new_object();
	json_object_object_add(
		o, "pages_done",
		json_object_new_int64((int64_t)__atomic_load_n(&c->snap.progress.done, __ATOMIC_RELAXED)));
	json_object_object_add(
		o, "pages_total",
		json_object_new_int64((int64_t)__atomic_load_n(&c->snap.progress.total, __ATOMIC_RELAXED)));
	json_object_object_add(status, "snapshot_in_progress", o);
}

/* vmm_destroy (vCPUs stopped): finish a snapshot in flight, then free. */
static void exit_hook(struct vmm *v, void *opaque)
{
	struct snap_cmd *c = opaque;

	join(c);
	ev_async_stop(vmm_loop(v), &c->done);
	snap_free(&c->snap);
	free(c);
}

static bool get_path(struct json_object *req, const char *key, char *out, size_t len, bool *present,
		     struct json_object **bad)
{
	struct json_object *j;

	*present = json_object_object_get_ex(req, key, &j);
	if (!*present)
		return true;
	if (!json_object_is_type(j, json_type_string) || !*json_object_get_string(j) ||
	    strlen(json_object_get_string(j)) >= len) {
		*bad = ctl_error("\"%s\" must be a non-empty path shorter than %zu bytes", key, len);
		return false;
	}
	snprintf(out, len, "%s", json_object_get_string(j));
	return true;
}

static struct json_object *cmd_snapshot(struct vmm *v, struct json_object *req, void *opaque)
{
	struct snap_cmd *c = opaque;
	struct json_object *j, *bad = NULL;
	struct job *job;
	bool has_path;
	int rc;

	if (c->busy)
		return ctl_refused("%s is busy writing a snapshot; try again when it is done", vmm_name(v));
	job = calloc(1, sizeof(*job));
	if (!job)
		return ctl_error("out of memory");
	job->c = c;
	if (!get_path(req, "path", job->path, sizeof(job->path), &has_path, &bad) ||
	    !get_path(req, "incremental_from", job->prev, sizeof(job->prev), &job->has_prev, &bad)) {
		free(job);
		return bad;
	}
	if (!has_path) {
		free(job);
		return ctl_error("snapshot needs a \"path\" string");
	}
	if (json_object_object_get_ex(req, "stop", &j))
		job->stop = json_object_get_boolean(j);
	if (json_object_object_get_ex(req, "with_disks", &j))
		job->with_disks = json_object_get_boolean(j);
	struct virtio_blk *devs[DISK_MAX];
	int nd = vmm_disk_count(v) < DISK_MAX ? vmm_disk_count(v) : DISK_MAX;
	for (int i = 0; i < nd; i++)
		devs[i] = vmm_disk(v, i);
	if (snap_set_disks(&c->snap, devs, nd)) {
		free(job);
		return ctl_error("out of memory");
	}
	if (vm_get_state(vmm_vm(v)) == VM_STOPPED || vmm_held(v)) {
		free(job);
		return ctl_refused("%s is not running", vmm_name(v));
	}
	c->conn = vmm_ctl_current(v);
	c->snap.progress.done = c->snap.progress.total = 0;
	c->busy = true;
	rc = pthread_create(&c->thread, NULL, job_main, job);
	if (rc) {
		c->busy = false;
		free(job);
		if (c->conn)
			ctl_reply(c->conn, ctl_error("cannot start snapshot thread: %s", strerror(rc)));
		c->conn = NULL;
	}
	return CTL_DEFER;
}

int snapshot_setup(struct vmm *v)
{
	struct snap_cmd *c = calloc(1, sizeof(*c));
	int rc;

	if (!c)
		return -ENOMEM;
	c->v = v;
	ev_async_init(&c->done, done_cb);
	c->done.data = c;
	ev_async_start(vmm_loop(v), &c->done);
	rc = vmm_add_exit_hook(v, exit_hook, c);
	if (rc) {
		ev_async_stop(vmm_loop(v), &c->done);
		free(c);
		return rc;
	}
	rc = vmm_register_cmd(v, "snapshot", cmd_snapshot, c);
	if (!rc)
		rc = vmm_add_status_hook(v, status_hook, c);
	return rc; /* on error c is freed by the exit hook */
}

int snapshot_restore(struct vmm *v, const char *path, char *err, size_t errlen)
{
	struct virtio_blk *devs[DISK_MAX];
	int n = vmm_disk_count(v) < DISK_MAX ? vmm_disk_count(v) : DISK_MAX;

	for (int i = 0; i < n; i++)
		devs[i] = vmm_disk(v, i);
	return snap_restore_disks(vmm_vm(v), devs, n, path, err, errlen);
}
