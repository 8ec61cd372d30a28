/* vmm_snapshot.c — the "snapshot" control command: written on a worker thread, replied to later. */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/control.h"
#include "vmm/vmm_priv.h"

struct job {
	struct vmm *v;
	char path[256], prev[256];
	bool has_prev, stop;
};

static void *job_main(void *arg)
{
	struct job *j = arg;
	struct vmm *v = j->v;
	struct snap_result res;
	struct json_object *o;
	char err[512];
	int rc;

	rc = snap_take(&v->snap, v->vm, j->path, j->has_prev ? j->prev : NULL, j->stop, 2, &res, err,
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
	v->job_reply = o;
	v->job_stop = rc == 0 && j->stop;
	free(j);
	ev_async_send(v->loop, &v->job_done);
	return NULL;
}

/* Loop thread: the worker finished. */
static void job_done_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	struct vmm *v = w->data;

	(void)loop, (void)revents;
	vmm_snapshot_join(v);
}

void vmm_snapshot_join(struct vmm *v)
{
	if (!v->job_busy)
		return;
	pthread_join(v->job_thread, NULL);
	v->job_busy = false;
	if (v->job_conn)
		ctl_reply(v->job_conn, v->job_reply); /* takes the reply, even if the client left */
	else
		json_object_put(v->job_reply);
	v->job_conn = NULL;
	v->job_reply = NULL;
	if (v->job_stop)
		vmm_stop(v, 0);
}

static void status_hook(struct vmm *v, struct json_object *status, void *opaque)
{
	struct json_object *o;

	(void)opaque;
	if (!v->job_busy)
		return;
	o = json_object_new_object();
	json_object_object_add(o, "pages_done", json_object_new_int64((int64_t)__atomic_load_n(
							&v->snap.progress.done, __ATOMIC_RELAXED)));
	json_object_object_add(o, "pages_total", json_object_new_int64((int64_t)__atomic_load_n(
							 &v->snap.progress.total, __ATOMIC_RELAXED)));
	json_object_object_add(status, "snapshot_in_progress", o);
}

void vmm_snapshot_init(struct vmm *v)
{
	ev_async_init(&v->job_done, job_done_cb);
	v->job_done.data = v;
	ev_async_start(v->loop, &v->job_done);
	vmm_add_status_hook(v, status_hook, NULL);
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

struct json_object *vmm_cmd_snapshot(struct vmm *v, struct json_object *req)
{
	struct json_object *j, *bad = NULL;
	struct job *job = calloc(1, sizeof(*job));
	bool has_path;
	int rc;

	if (!job)
		return ctl_error("out of memory");
	job->v = v;
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
	if (vm_get_state(v->vm) == VM_STOPPED || v->held) {
		free(job);
		return ctl_error("%s is not running", v->name);
	}
	v->job_conn = ctl_current_conn(v->ctl);
	v->snap.progress.done = v->snap.progress.total = 0;
	v->job_busy = true;
	rc = pthread_create(&v->job_thread, NULL, job_main, job);
	if (rc) {
		v->job_busy = false;
		free(job);
		if (v->job_conn)
			ctl_reply(v->job_conn, ctl_error("cannot start snapshot thread: %s", strerror(rc)));
		v->job_conn = NULL;
		return CTL_DEFER;
	}
	return CTL_DEFER;
}
