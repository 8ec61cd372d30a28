/* cmd_metrics.c — `doppel metrics NAME`: the VM's Prometheus metrics (what --metrics serves at /metrics). */
#include <stdio.h>

#include <json-c/json.h>

#include "tools/doppel/doppel.h"

static void print(const struct doppel_ctl_opts *o, struct json_object *reply)
{
	struct json_object *t = NULL;

	(void)o;
	if (json_object_object_get_ex(reply, "text", &t))
		fputs(json_object_get_string(t), stdout);
}

int cmd_metrics(int argc, char **argv)
{
	static const struct doppel_simple_verb v = {
		.verb = "metrics",
		.cmd = "metrics",
		.description =
			"Print the VM's metrics in the Prometheus text format, exactly what\n"
			"`doppel run --metrics ADDR:PORT` serves at /metrics (--json: {\"text\": ...}).",
		.print = print,
	};

	return doppel_simple_verb(&v, argc, argv);
}
