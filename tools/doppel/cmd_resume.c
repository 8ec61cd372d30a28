/* cmd_resume.c — `doppel resume NAME`: let a paused VM's vCPUs run again. */
#include <stdio.h>

#include "tools/doppel/doppel.h"

static void print(const struct doppel_ctl_opts *o, struct json_object *reply)
{
	(void)reply;
	printf("resumed %s\n", o->label);
}

int cmd_resume(int argc, char **argv)
{
	static const struct doppel_simple_verb v = {
		.verb = "resume",
		.cmd = "resume",
		.description = "Resume a paused VM. Idempotent.",
		.print = print,
	};

	return doppel_simple_verb(&v, argc, argv);
}
