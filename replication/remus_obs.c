/* remus_obs.c — what Remus shows operators: its events (in the VM's event log), its Prometheus metrics, the
 * epoch timeline of the status page. */
#include <errno.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "replication/remus_priv.h"
#include "replication/witness.h"
#include "vmm/vmm.h"

/* Histogram buckets (ns). Epoch pauses: 50 us .. 100 ms; send and ACK: 0.5 ms .. 5 s. */
static const uint64_t pause_le[] = {50000,   100000,   200000,	 300000,   500000,
				    750000,  1000000,  1500000,	 2000000,  3000000,
				    5000000, 10000000, 20000000, 50000000, 100000000};
static const uint64_t lat_le[] = {500000,   1000000,   2000000,	  5000000,   10000000,	 25000000,
				  50000000, 100000000, 250000000, 500000000, 1000000000, 5000000000ull};
#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- events ------------------------------------------------------------------------------------ */

void remus_event_fields(struct remus *r, const char *kind, uint64_t epoch, struct json_object *fields,
			const char *fmt, ...)
{
	struct json_object *f = fields ? fields : json_object_new_object();
	char reason[256];
	va_list ap;
	int64_t seq;

	if (!f)
		return;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	json_object_object_add(f, "src", json_object_new_string("remus"));
	json_object_object_add(f, "epoch", json_object_new_int64((int64_t)epoch));
	json_object_object_add(f, "reason", json_object_new_string(reason));
	seq = vmm_event(r->v, kind, f);
	if (seq <= 0)
		return;
	if (r->nr_events == REMUS_MAX_EVENTS) {
		memmove(r->events, r->events + 1, sizeof(r->events[0]) * (REMUS_MAX_EVENTS - 1));
		r->nr_events--;
	}
	struct remus_evsum *e = &r->events[r->nr_events++];
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	e->seq = (uint64_t)seq;
	e->epoch = epoch;
	e->wall = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	snprintf(e->kind, sizeof(e->kind), "%s", kind);
	snprintf(e->reason, sizeof(e->reason), "%.159s", reason);
}

/* status "events": [{time, kind, epoch, reason}] of the engine's last events, oldest first. */
void remus_status_events(struct remus *r, struct json_object *rm)
{
	struct json_object *a = json_object_new_array();
	char t[32];

	for (int i = 0; a && i < r->nr_events; i++) {
		const struct remus_evsum *e = &r->events[i];
		struct json_object *o = json_object_new_object();
		snprintf(t, sizeof(t), "%.3f", e->wall);
		json_object_object_add(o, "time", json_object_new_double_s(e->wall, t));
		json_object_object_add(o, "kind", json_object_new_string(e->kind));
		json_object_object_add(o, "epoch", json_object_new_int64((int64_t)e->epoch));
		json_object_object_add(o, "reason", json_object_new_string(e->reason));
		json_object_array_add(a, o);
	}
	json_object_object_add(rm, "events", a);
}

/* ---- the epoch timeline ------------------------------------------------------------------------ */

/* {"cmd":"timeline","seconds":N} -> {"epochs":[[age_s, epoch, pause_us, send_us, ack_us], ...]},
 * oldest first; -1 where not known (yet). */
static struct json_object *cmd_timeline(struct vmm *v, struct json_object *req, void *opaque)
{
	struct remus *r = opaque;
	struct json_object *o, *a, *j;
	int64_t secs = 60;
	uint64_t now = now_ns();

	(void)v;
	if (json_object_object_get_ex(req, "seconds", &j) &&
	    (!json_object_is_type(j, json_type_int) || (secs = json_object_get_int64(j)) < 1 || secs > 600))
		return ctl_error("\"seconds\" must be an integer 1..600");
	a = json_object_new_array();
	uint64_t last = r->next_epoch ? r->next_epoch - 1 : 0,
		 first = last > REMUS_TL ? last - REMUS_TL + 1 : 1;
	pthread_mutex_lock(&r->lock);
	for (uint64_t e = first; a && e <= last && last; e++) {
		const struct remus_tl *t = &r->tl[e % REMUS_TL];
		if (t->epoch != e || now - t->t_ns > (uint64_t)secs * 1000000000ull)
			continue;
		struct json_object *x = json_object_new_array();
		json_object_array_add(x, json_object_new_double((double)(now - t->t_ns) / 1e9));
		json_object_array_add(x, json_object_new_int64((int64_t)e));
		json_object_array_add(x, json_object_new_int64(t->pause_us));
		json_object_array_add(x, json_object_new_int64(t->send_us));
		json_object_array_add(x, json_object_new_int64(t->ack_us));
		json_object_array_add(a, x);
	}
	pthread_mutex_unlock(&r->lock);
	o = json_object_new_object();
	json_object_object_add(o, "epochs", a);
	return o;
}

/* ---- metrics ----------------------------------------------------------------------------------- */

static void one(FILE *f, const char *name, const char *type, const char *help, double val)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, val);
}

static void onehot(FILE *f, const char *name, const char *label, const char *help, const char *const *vals,
		   int n, const char *cur)
{
	bool known = false;

	fprintf(f, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
	for (int i = 0; i < n; i++) {
		known = known || !strcmp(cur, vals[i]);
		fprintf(f, "%s{%s=\"%s\"} %d\n", name, label, vals[i], !strcmp(cur, vals[i]));
	}
	if (!known)
		fprintf(f, "%s{%s=\"%s\"} 1\n", name, label, cur);
}

static void metrics_hook(struct vmm *v, FILE *f, void *opaque)
{
	static const char *const roles[] = {"primary", "standby", "unprotected"};
	static const char *const states[] = {"running", "syncing", "protected", "abandoning",	    "holding",
					     "fenced",	"held",	   "abandoned", "awaiting-failover"};
	struct remus *r = opaque;
	struct netbuf_stats ns = {0};
	const char *role = r->role == REMUS_PRIMARY   ? "primary"
			   : r->role == REMUS_STANDBY ? "standby"
						      : "unprotected";
	const char *state = r->role != REMUS_STANDBY ? remus_pstate_name(r->pstate)
			    : r->awaiting_manual     ? "awaiting-failover"
						     : "held";

	(void)v;
	pthread_mutex_lock(&r->lock);
	uint64_t raw = r->raw_base + r->bytes_raw, wire = r->wire_base + r->bytes_wire;
	uint64_t rx_epochs = r->rx_epochs, rx_bytes = r->rx_bytes, rejected = r->rejected;
	uint64_t sb_epoch = r->committed_epoch;
	bool connected = r->connected, abandoned = r->abandoned;
	pthread_mutex_unlock(&r->lock);
	if (r->role == REMUS_STANDBY && abandoned && !r->awaiting_manual)
		state = "abandoned";
	if (r->nb)
		netbuf_get_stats(r->nb, &ns);
	onehot(f, "doppel_remus_role", "role", "1 for this copy's Remus role.", roles, N(roles), role);
	onehot(f, "doppel_remus_state", "state", "1 for what Remus does now (as status remus.state).", states,
	       N(states), state);
	one(f, "doppel_remus_epochs_total", "counter", "Checkpoint epochs taken (primary).",
	    (double)r->epochs);
	one(f, "doppel_remus_epochs_skipped_total", "counter",
	    "Epoch ticks skipped: the previous one was still being sent.", (double)r->skipped);
	one(f, "doppel_remus_epochs_forced_total", "counter", "Epochs forced early by held-output pressure.",
	    (double)r->forced);
	one(f, "doppel_remus_epoch", "gauge", "Number of the last epoch taken.",
	    (double)(r->next_epoch ? r->next_epoch - 1 : 0));
	one(f, "doppel_remus_acked_epoch", "gauge", "Last epoch the standby acknowledged (primary).",
	    (double)r->acked_epoch);
	hist_prom(f, &r->pause_hist, "doppel_remus_epoch_pause_seconds",
		  "How long the guest was paused for an epoch (sync, capture, copy).", NULL);
	hist_prom(f, &r->send_hist, "doppel_remus_epoch_send_seconds",
		  "Time to write a staged epoch to the standby.", NULL);
	hist_prom(f, &r->ack_hist, "doppel_remus_ack_latency_seconds",
		  "From the end of an epoch's pause until the standby's ACK of it.", NULL);
	one(f, "doppel_remus_epoch_dirty_pages", "gauge", "Pages the last epoch carried.",
	    (double)r->dirty_last);
	one(f, "doppel_remus_dirty_pages_total", "counter", "Pages carried by all epochs.",
	    (double)r->dirty_total);
	one(f, "doppel_remus_stream_raw_bytes_total", "counter",
	    "Stream payload bytes before compression (primary).", (double)raw);
	one(f, "doppel_remus_stream_wire_bytes_total", "counter",
	    "Stream bytes written to the standby (primary).", (double)wire);
	one(f, "doppel_remus_held_output_frames", "gauge", "Guest frames held until their epoch's ACK.",
	    (double)ns.held_frames);
	one(f, "doppel_remus_held_output_bytes", "gauge", "Bytes of the held guest frames.",
	    (double)ns.held_bytes);
	one(f, "doppel_remus_released_output_frames_total", "counter", "Held frames released (after an ACK).",
	    (double)ns.released_frames);
	one(f, "doppel_remus_dropped_output_frames_total", "counter",
	    "Held frames dropped (full buffer, fencing).", (double)ns.dropped);
	one(f, "doppel_remus_failovers_total", "counter", "Takeovers by this copy.", (double)r->nr_failovers);
	one(f, "doppel_remus_fencings_total", "counter", "Times this copy fenced itself.",
	    (double)r->nr_fenced);
	one(f, "doppel_remus_standby_connected", "gauge", "1 while a primary streams to this standby.",
	    connected ? 1 : 0);
	one(f, "doppel_remus_standby_epoch", "gauge", "Last epoch this standby committed.", (double)sb_epoch);
	one(f, "doppel_remus_standby_received_epochs_total", "counter", "Epochs this standby committed.",
	    (double)rx_epochs);
	one(f, "doppel_remus_standby_received_bytes_total", "counter",
	    "Stream bytes this standby read from its current primary.", (double)rx_bytes);
	one(f, "doppel_remus_standby_rejected_total", "counter", "Streams or epochs this standby rejected.",
	    (double)rejected);
	if (r->wit) {
		uint64_t until = witness_valid_until_ns(r->wit), now = now_ns();
		one(f, "doppel_remus_witness_lease_valid_seconds", "gauge",
		    "How long this copy's witness lease is still provably valid (0: not held).",
		    until > now ? (double)(until - now) / 1e9 : 0);
		one(f, "doppel_remus_witness_token", "gauge", "Fencing token (key revision) this copy holds.",
		    (double)witness_token(r->wit));
	}
}

int remus_obs_setup(struct remus *r)
{
	int rc;

	r->tl = calloc(REMUS_TL, sizeof(*r->tl));
	if (!r->tl)
		return -ENOMEM;
	rc = hist_init(&r->pause_hist, pause_le, N(pause_le));
	if (!rc)
		rc = hist_init(&r->send_hist, lat_le, N(lat_le));
	if (!rc)
		rc = hist_init(&r->ack_hist, lat_le, N(lat_le));
	if (!rc)
		rc = vmm_add_metrics_hook(r->v, metrics_hook, r);
	if (!rc)
		rc = vmm_register_cmd(r->v, "timeline", cmd_timeline, r);
	if (rc) {
		free(r->tl);
		r->tl = NULL;
	}
	return rc;
}

void remus_obs_free(struct remus *r)
{
	free(r->tl);
	r->tl = NULL;
}

void remus_primary_status(struct remus *r, struct json_object *o)
{
	struct json_object *p = json_object_new_object(), *d = json_object_new_object();
	struct json_object *b = json_object_new_object(), *a = json_object_new_object();
	struct json_object *h = json_object_new_object();
	struct netbuf_stats ns = {0};

	if (r->role == REMUS_STANDBY)
		return;
	pthread_mutex_lock(&r->lock);
	uint64_t raw = r->bytes_raw, wire = r->bytes_wire, send_ns = r->send_ns_last;
	pthread_mutex_unlock(&r->lock);
	json_object_object_add(o, "state", json_object_new_string(remus_pstate_name(r->pstate)));
	json_object_object_add(o, "standby_lost",
			       json_object_new_string(remus_lost_policy_name(r->lost_policy)));
	/* Without a witness a partition can leave two copies running: this primary releasing output
	 * after losing the standby while the standby (auto failover) takes over. */
	json_object_object_add(o, "split_brain_possible",
			       json_object_new_boolean(r->lost_policy == LOST_RELEASE && !r->wit));
	json_object_object_add(o, "epoch", json_object_new_int64((int64_t)(r->next_epoch - 1)));
	json_object_object_add(o, "acked_epoch", json_object_new_int64((int64_t)r->acked_epoch));
	json_object_object_add(o, "epochs", json_object_new_int64((int64_t)r->epochs));
	json_object_object_add(o, "epochs_skipped", json_object_new_int64((int64_t)r->skipped));
	json_object_object_add(o, "epochs_forced", json_object_new_int64((int64_t)r->forced));
	json_object_object_add(o, "precopy_rounds", json_object_new_int64((int64_t)r->precopy_rounds));
	json_object_object_add(
		p, "last_us",
		json_object_new_double(
			r->pause_ns.n ? (double)r->pause_ns.v[(r->pause_ns.n - 1) % REMUS_RING] / 1e3 : 0));
	json_object_object_add(p, "p50_us",
			       json_object_new_double((double)remus_ring_pct(&r->pause_ns, 0.5) / 1e3));
	json_object_object_add(p, "p99_us",
			       json_object_new_double((double)remus_ring_pct(&r->pause_ns, 0.99) / 1e3));
	struct json_object *ph = json_object_new_object();
	json_object_object_add(ph, "kick_us", json_object_new_double((double)r->ph_kick / 1e3));
	json_object_object_add(ph, "sync_us", json_object_new_double((double)r->ph_sync / 1e3));
	json_object_object_add(ph, "capture_us", json_object_new_double((double)r->ph_capture / 1e3));
	json_object_object_add(ph, "copy_us", json_object_new_double((double)r->ph_copy / 1e3));
	json_object_object_add(p, "last_phases", ph);
	json_object_object_add(o, "pause", p);
	json_object_object_add(d, "last", json_object_new_int64((int64_t)r->dirty_last));
	json_object_object_add(
		d, "avg", json_object_new_double(r->epochs ? (double)r->dirty_total / (double)r->epochs : 0));
	json_object_object_add(d, "hot", json_object_new_int64((int64_t)r->eng.hot_pages));
	json_object_object_add(o, "dirty_pages", d);
	json_object_object_add(b, "raw", json_object_new_int64((int64_t)raw));
	json_object_object_add(b, "wire", json_object_new_int64((int64_t)wire));
	json_object_object_add(b, "last_send_ms", json_object_new_double((double)send_ns / 1e6));
	json_object_object_add(o, "bytes", b);
	json_object_object_add(
		a, "last_ms",
		json_object_new_double(r->ack_ns.n ? (double)r->ack_ns.v[(r->ack_ns.n - 1) % REMUS_RING] / 1e6
						   : 0));
	json_object_object_add(a, "p50_ms",
			       json_object_new_double((double)remus_ring_pct(&r->ack_ns, 0.5) / 1e6));
	json_object_object_add(a, "p99_ms",
			       json_object_new_double((double)remus_ring_pct(&r->ack_ns, 0.99) / 1e6));
	json_object_object_add(o, "ack_latency", a);
	if (r->nb)
		netbuf_get_stats(r->nb, &ns);
	json_object_object_add(h, "frames", json_object_new_int64((int64_t)ns.held_frames));
	json_object_object_add(h, "bytes", json_object_new_int64((int64_t)ns.held_bytes));
	json_object_object_add(h, "released_frames", json_object_new_int64((int64_t)ns.released_frames));
	json_object_object_add(h, "dropped", json_object_new_int64((int64_t)ns.dropped));
	json_object_object_add(o, "held_output", h);
	remus_phases_status(r, o);
}
