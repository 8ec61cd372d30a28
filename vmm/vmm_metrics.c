/* vmm_metrics.c — the runtime's side of events and metrics: vmm_event, the "events" and "metrics" commands,
 * the Prometheus text of the VM itself (state, uptime, exits, pauses, net and disk counters) and the status
 * page's JSON. */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "hv/dev/virtio_blk.h"
#include "hv/dev/virtio_net.h"
#include "vmm/event.h"
#include "vmm/vmm.h"
#include "vmm/vmm_priv.h"

int64_t vmm_event(struct vmm *v, const char *type, struct json_object *fields)
{
	return evlog_emit(v->ev, type, fields);
}

struct json_object *vmm_event_last(struct vmm *v, const char *type)
{
	return evlog_last(v->ev, type);
}

struct json_object *vmm_event_get(struct vmm *v, uint64_t seq)
{
	return evlog_get(v->ev, seq);
}

char *vmm_event_log_default(const char *name, const char *control, char *buf, size_t len)
{
	size_t n;
	int w;

	if (!control) {
		w = snprintf(buf, len, "/var/lib/doppel/%s/events.jsonl", name);
		return w > 0 && (size_t)w < len ? buf : NULL;
	}
	n = strlen(control);
	if (n > 5 && !strcmp(control + n - 5, ".sock"))
		n -= 5;
	w = snprintf(buf, len, "%.*s.events.jsonl", (int)n, control);
	return w > 0 && (size_t)w < len ? buf : NULL;
}

int vmm_add_metrics_hook(struct vmm *v, vmm_metrics_fn fn, void *opaque)
{
	if (v->nr_metrics_hooks >= VMM_MAX_METRICS_HOOKS)
		return -ENOSPC;
	v->metrics_hooks[v->nr_metrics_hooks].fn = fn;
	v->metrics_hooks[v->nr_metrics_hooks].opaque = opaque;
	v->nr_metrics_hooks++;
	return 0;
}

/* {"cmd":"events","since":N,"max":M} -> {"events":[...],"next":N,"missed":K,"last_seq":S,"file":P} */
struct json_object *vmm_cmd_events(struct vmm *v, struct json_object *req)
{
	struct json_object *j, *o, *a;
	struct evlog_stats st;
	int64_t since = 0, max = EVLOG_RING;
	uint64_t next, missed;

	if (json_object_object_get_ex(req, "since", &j)) {
		if (!json_object_is_type(j, json_type_int) || (since = json_object_get_int64(j)) < 0)
			return ctl_error("\"since\" must be an integer >= 0 (a seq)");
	}
	if (json_object_object_get_ex(req, "max", &j)) {
		if (!json_object_is_type(j, json_type_int) || (max = json_object_get_int64(j)) < 1 ||
		    max > EVLOG_RING)
			return ctl_error("\"max\" must be an integer 1..%d", EVLOG_RING);
	}
	a = evlog_since(v->ev, (uint64_t)since, (int)max, &next, &missed);
	o = json_object_new_object();
	if (!a || !o) {
		json_object_put(a);
		json_object_put(o);
		return ctl_error("out of memory");
	}
	evlog_get_stats(v->ev, &st);
	json_object_object_add(o, "events", a);
	json_object_object_add(o, "next", json_object_new_int64((int64_t)next));
	json_object_object_add(o, "missed", json_object_new_int64((int64_t)missed));
	json_object_object_add(o, "last_seq", json_object_new_int64((int64_t)st.last_seq));
	json_object_object_add(o, "file",
			       evlog_path(v->ev) ? json_object_new_string(evlog_path(v->ev)) : NULL);
	return o;
}

/* ---- Prometheus text ---------------------------------------------------------------------------- */

static void metric(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void vm_metrics(struct vmm *v, FILE *f, const char *state)
{
	static const char *const states[] = {"created", "running", "paused", "stopped", "fenced"};
	struct vm_pause_stats ps;
	struct evlog_stats es;
	bool known = false;

	metric(f, "doppel_vm_info", "gauge", "The VM this process runs (always 1).");
	fprintf(f, "doppel_vm_info{name=\"%s\"} 1\n", v->name); /* names are [A-Za-z0-9._-] */
	metric(f, "doppel_vm_state", "gauge", "1 for the VM's current state (as in doppel status), else 0.");
	for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
		known = known || !strcmp(state, states[i]);
		fprintf(f, "doppel_vm_state{state=\"%s\"} %d\n", states[i], !strcmp(state, states[i]));
	}
	if (!known)
		fprintf(f, "doppel_vm_state{state=\"%s\"} 1\n", state);
	metric(f, "doppel_vm_uptime_seconds", "gauge", "Seconds since the VM started running here.");
	fprintf(f, "doppel_vm_uptime_seconds %.3f\n", (double)(now_ns() - v->start_ns) / 1e9);
	metric(f, "doppel_vm_vcpus", "gauge", "vCPUs of the VM.");
	fprintf(f, "doppel_vm_vcpus %d\n", vm_nr_vcpus(v->vm));
	metric(f, "doppel_vm_memory_bytes", "gauge", "Guest RAM.");
	fprintf(f, "doppel_vm_memory_bytes %llu\n", (unsigned long long)vm_mem(v->vm)->size);
	metric(f, "doppel_vm_exits_total", "counter", "vCPU exits handled by the VMM.");
	fprintf(f, "doppel_vm_exits_total %llu\n", (unsigned long long)vm_exit_count(v->vm));
	vm_pause_stats(v->vm, &ps);
	metric(f, "doppel_vm_pauses_total", "counter",
	       "Times all vCPUs were paused (epochs, throttle, operator).");
	fprintf(f, "doppel_vm_pauses_total %llu\n", (unsigned long long)ps.count);
	metric(f, "doppel_vm_pause_latency_seconds_total", "counter",
	       "Sum of the time from a pause request until every vCPU was parked.");
	fprintf(f, "doppel_vm_pause_latency_seconds_total %.9f\n", (double)ps.total_ns / 1e9);
	evlog_get_stats(v->ev, &es);
	metric(f, "doppel_events_total", "counter", "Events recorded in the event log by this process.");
	fprintf(f, "doppel_events_total %llu\n", (unsigned long long)es.emitted);
	metric(f, "doppel_events_dropped_total", "counter",
	       "Events not appended to the event log file (queue full or write error).");
	fprintf(f, "doppel_events_dropped_total %llu\n", (unsigned long long)es.dropped);
}

static void dev_metrics(struct vmm *v, FILE *f)
{
	struct virtio_net_stats ns[VMM_MAX_NETS];
	struct virtio_blk_stats bs[VMM_MAX_DISKS];
	static const struct {
		const char *name, *help;
		size_t off;
	} net[] =
		{
			{"doppel_net_tx_frames_total", "Frames the guest transmitted.",
			 offsetof(struct virtio_net_stats, tx_frames)},
			{"doppel_net_tx_dropped_total", "Transmitted frames dropped.",
			 offsetof(struct virtio_net_stats, tx_dropped)},
			{"doppel_net_rx_frames_total", "Frames delivered to the guest.",
			 offsetof(struct virtio_net_stats, rx_frames)},
			{"doppel_net_rx_dropped_total", "Received frames dropped.",
			 offsetof(struct virtio_net_stats, rx_dropped)},
		},
	  blk[] = {
		  {"doppel_disk_reads_total", "Read requests completed.",
		   offsetof(struct virtio_blk_stats, reads)},
		  {"doppel_disk_writes_total", "Write requests completed.",
		   offsetof(struct virtio_blk_stats, writes)},
		  {"doppel_disk_flushes_total", "Flush requests completed.",
		   offsetof(struct virtio_blk_stats, flushes)},
		  {"doppel_disk_read_bytes_total", "Bytes read by the guest.",
		   offsetof(struct virtio_blk_stats, bytes_read)},
		  {"doppel_disk_written_bytes_total", "Bytes written by the guest.",
		   offsetof(struct virtio_blk_stats, bytes_written)},
		  {"doppel_disk_errors_total", "Requests completed with an I/O error.",
		   offsetof(struct virtio_blk_stats, ioerr)},
	  };

	for (int i = 0; i < v->nr_net; i++)
		virtio_net_get_stats(v->net[i].dev, &ns[i]);
	for (int i = 0; i < v->nr_disk; i++)
		virtio_blk_get_stats(v->disk[i], &bs[i]);
	for (size_t k = 0; v->nr_net && k < sizeof(net) / sizeof(net[0]); k++) {
		metric(f, net[k].name, "counter", net[k].help);
		for (int i = 0; i < v->nr_net; i++)
			fprintf(f, "%s{dev=\"net%d\"} %llu\n", net[k].name, i,
				(unsigned long long)*(uint64_t *)((char *)&ns[i] + net[k].off));
	}
	for (size_t k = 0; v->nr_disk && k < sizeof(blk) / sizeof(blk[0]); k++) {
		metric(f, blk[k].name, "counter", blk[k].help);
		for (int i = 0; i < v->nr_disk; i++)
			fprintf(f, "%s{dev=\"disk%d\"} %llu\n", blk[k].name, i,
				(unsigned long long)*(uint64_t *)((char *)&bs[i] + blk[k].off));
	}
}

char *vmm_metrics_text(struct vmm *v)
{
	struct json_object *st = vmm_status_json(v), *j;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f) {
		json_object_put(st);
		return NULL;
	}
	vm_metrics(v, f,
		   st && json_object_object_get_ex(st, "state", &j) ? json_object_get_string(j) : "unknown");
	json_object_put(st);
	dev_metrics(v, f);
	for (int i = 0; i < v->nr_metrics_hooks; i++)
		v->metrics_hooks[i].fn(v, f, v->metrics_hooks[i].opaque);
	if (fclose(f)) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* ---- the status page's data --------------------------------------------------------------------- */

struct json_object *vmm_page_json(struct vmm *v)
{
	struct json_object *o = json_object_new_object(), *tl = NULL, *req, *j;
	struct timespec ts;

	if (!o)
		return NULL;
	clock_gettime(CLOCK_REALTIME, &ts);
	json_object_object_add(o, "now",
			       json_object_new_double((double)ts.tv_sec + (double)ts.tv_nsec / 1e9));
	json_object_object_add(o, "status", vmm_status_json(v));
	/* the epoch timeline, if an engine keeps one (Remus: the "timeline" command) */
	for (int i = 0; i < v->nr_cmds; i++) {
		if (strcmp(v->cmds[i].name, "timeline"))
			continue;
		req = json_object_new_object();
		json_object_object_add(req, "seconds", json_object_new_int(60));
		tl = v->cmds[i].fn(v, req, v->cmds[i].opaque);
		json_object_put(req);
	}
	if (tl && json_object_object_get_ex(tl, "epochs", &j))
		json_object_object_add(o, "epochs", json_object_get(j));
	else
		json_object_object_add(o, "epochs", json_object_new_array());
	json_object_put(tl);
	json_object_object_add(o, "last_failover", vmm_event_last(v, "failover"));
	return o;
}
