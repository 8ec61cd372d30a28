/* cmd_status.c — `doppel status NAME`: print a running VM's state as reported over its control socket. */
#include "tools/doppel/doppel.h"

int cmd_status(int argc, char **argv)
{
	static const struct doppel_simple_verb v = {
		.verb = "status",
		.cmd = "status",
		.description = "Show the state of a running VM: every field it reports, one \"key: value\" "
			       "per line.",
		.print = NULL, /* doppel_print_tree */
	};

	return doppel_simple_verb(&v, argc, argv);
}
