/* cmd_stop.c — `doppel stop NAME`: stop a VM; its `doppel run` process exits. */
#include <stdio.h>

#include <json-c/json.h>

#include "tools/doppel/doppel.h"

static void print(const struct doppel_ctl_opts *o, struct json_object *reply)
{
	struct json_object *st;

	if (json_object_object_get_ex(reply, "exit_status", &st) && json_object_is_type(st, json_type_int))
		printf("stopped %s (exit status %d)\n", o->label, json_object_get_int(st));
	else
		printf("stopped %s\n", o->label);
}

int cmd_stop(int argc, char **argv)
{
	static const struct doppel_simple_verb v = {
		.verb = "stop",
		.cmd = "stop",
		.description = "Stop a VM: its vCPUs end and its `doppel run` process exits.",
		.print = print,
	};

	return doppel_simple_verb(&v, argc, argv);
}
