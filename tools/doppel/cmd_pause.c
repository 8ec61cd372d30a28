/* cmd_pause.c — `doppel pause NAME`: stop all vCPUs of a running VM. */
#include <stdio.h>

#include <json-c/json.h>

#include "tools/doppel/doppel.h"

/* The pause latency, if the reply carries one: pause_latency_us, latency_us, or the _ns variants. */
static bool latency_us(struct json_object *reply, double *us)
{
	static const struct {
		const char *key;
		double scale;
	} keys[] = {
		{"pause_latency_us", 1}, {"latency_us", 1}, {"pause_latency_ns", 1e-3}, {"latency_ns", 1e-3}};
	struct json_object *v;

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		if (json_object_object_get_ex(reply, keys[i].key, &v) &&
		    (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double))) {
			*us = json_object_get_double(v) * keys[i].scale;
			return true;
		}
	}
	return false;
}

static void print(const struct doppel_ctl_opts *o, struct json_object *reply)
{
	double us;

	if (latency_us(reply, &us))
		printf("paused %s (pause latency %.*f us)\n", o->label, us < 10 ? 1 : 0, us);
	else
		printf("paused %s\n", o->label);
}

int cmd_pause(int argc, char **argv)
{
	static const struct doppel_simple_verb v = {
		.verb = "pause",
		.cmd = "pause",
		.description = "Pause a running VM: every vCPU leaves the guest and waits. Idempotent.",
		.print = print,
	};

	return doppel_simple_verb(&v, argc, argv);
}
