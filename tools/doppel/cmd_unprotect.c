/* cmd_unprotect.c — `doppel unprotect NAME`: end Remus protection on purpose (ABANDON; the standby stays held). */
#include <stdio.h>

#include <json-c/json.h>

#include "tools/doppel/doppel.h"

static void print(const struct doppel_ctl_opts *o, struct json_object *reply)
{
	(void)reply;
	printf("%s runs unprotected; its standby stays held\n", o->label);
}

int cmd_unprotect(int argc, char **argv)
{
	static const struct doppel_simple_verb v = {
		.verb = "unprotect",
		.cmd = "unprotect",
		.description = "End protection on purpose: the epoch in flight is sent, then ABANDON; the\n"
			       "standby confirms and stays held (it never takes over on it), then held\n"
			       "output is released. A primary holding output after losing its standby\n"
			       "(--standby-lost hold) releases it: the operator says this is the only copy.",
		.print = print,
	};

	return doppel_simple_verb(&v, argc, argv);
}
