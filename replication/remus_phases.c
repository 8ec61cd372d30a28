/* remus_phases.c — the primary's status of where an epoch's time goes and of delta encoding. */
#include <json-c/json.h>

#include "replication/remus_priv.h"

static const char *const phase_names[REMUS_PH_N] = {
	[REMUS_PH_PAUSE] = "pause",	[REMUS_PH_KICK] = "kick", [REMUS_PH_SYNC] = "sync",
	[REMUS_PH_CAPTURE] = "capture", [REMUS_PH_COPY] = "copy", [REMUS_PH_QUEUE] = "queue",
	[REMUS_PH_ENCODE] = "encode",	[REMUS_PH_SEND] = "send", [REMUS_PH_ACK_WAIT] = "ack_wait",
	[REMUS_PH_ACK] = "ack",
};

static void add_u64(struct json_object *o, const char *k, uint64_t v)
{
	json_object_object_add(o, k, json_object_new_int64((int64_t)v));
}

/* remus.phases {NAME: {p50_us, p99_us, n}} and remus.delta {...}. Loop thread. */
void remus_phases_status(struct remus *r, struct json_object *o)
{
	struct json_object *ph = json_object_new_object(), *d = json_object_new_object();
	struct sr_delta_stats ds;
	struct sr_stats ss;

	for (int i = 0; i < REMUS_PH_N; i++) {
		struct json_object *x = json_object_new_object();
		const struct remus_ring *rg = &r->ph_ring[i];

		json_object_object_add(x, "p50_us",
				       json_object_new_double((double)remus_ring_pct(rg, 0.5) / 1e3));
		json_object_object_add(x, "p99_us",
				       json_object_new_double((double)remus_ring_pct(rg, 0.99) / 1e3));
		add_u64(x, "n", rg->n < REMUS_RING ? rg->n : REMUS_RING);
		json_object_object_add(ph, phase_names[i], x);
	}
	json_object_object_add(o, "phases", ph);
	pthread_mutex_lock(&r->lock);
	ds = r->delta_st;
	ss = r->sst;
	pthread_mutex_unlock(&r->lock);
	json_object_object_add(d, "enabled", json_object_new_boolean(r->delta != NULL));
	add_u64(d, "cache_bytes", r->delta ? ds.bytes : 0);
	add_u64(d, "cache_pages", r->delta ? ds.slots : 0);
	add_u64(d, "hits", ds.hits);
	add_u64(d, "misses", ds.misses);
	add_u64(d, "evictions", ds.evictions);
	add_u64(d, "unchanged", ds.unchanged);
	add_u64(d, "dense", ds.dense);
	add_u64(d, "delta_pages", ds.delta_pages);
	add_u64(d, "delta_bytes", ds.delta_bytes);
	/* Raw page bytes that did not go out: unchanged pages, and delta pages' 4096 bytes minus
	 * their compressed XOR. */
	uint64_t raw = (ds.delta_pages + ds.unchanged) * 4096ull;
	add_u64(d, "bytes_saved", raw > ds.delta_bytes ? raw - ds.delta_bytes : 0);
	add_u64(d, "plain_pages", ss.data_pages);
	json_object_object_add(o, "delta", d);
}
