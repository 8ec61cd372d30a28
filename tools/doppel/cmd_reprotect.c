/* cmd_reprotect.c — `doppel reprotect NAME`: after a failover, a fenced copy rejoins as standby / the new primary protects again. */
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "common/parse.h"
#include "tools/doppel/doppel.h"
#include "tools/doppel/roles.h"

static void usage(void)
{
	printf("usage: doppel reprotect NAME (--listen ADDR:PORT | --peer ADDR:PORT) [--control PATH] "
	       "[--json]\n"
	       "\n"
	       "Protect a VM again after a failover. On the old copy (fenced: it cannot prove the\n"
	       "witness lease or lost its standby under --standby-lost fence) --listen makes it a\n"
	       "standby instead of exiting: its guest stays parked and its memory is rewritten by the\n"
	       "new primary. On the new primary --peer protects to that standby (or to a fresh\n"
	       "`doppel run --standby`) with the interval and heartbeat timeout it last ran with; it\n"
	       "returns once the first checkpoint is acknowledged.\n"
	       "\n"
	       "  -l, --listen ADDR:PORT   (on a fenced copy) rejoin as a standby listening here\n"
	       "  -p, --peer ADDR:PORT     (on the new primary) protect to this "
	       "standby\n" DOPPEL_CTL_OPTHELP);
}

static void print(const struct doppel_ctl_opts *o, struct json_object *reply)
{
	if (roles_get(reply, "listen"))
		printf("%s rejoined as a standby on %s\n", o->label, roles_str(reply, "listen"));
	else
		printf("protected %s -> %s again (first checkpoint epoch %.0f acknowledged after %.0f ms)\n",
		       o->label, roles_str(reply, "peer"), roles_num(reply, "epoch", 0),
		       roles_num(reply, "sync_ms", 0));
}

int cmd_reprotect(int argc, char **argv)
{
	static const struct option opts[] = {
		DOPPEL_CTL_LONGOPTS,
		{"listen", required_argument, NULL, 'l'},
		{"peer", required_argument, NULL, 'p'},
		{0},
	};
	struct doppel_ctl_opts o;
	struct json_object *req;
	const char *listen = NULL, *peer = NULL;
	int c, rc;

	doppel_ctl_opts_init(&o, "reprotect");
	if (doppel_opts_begin(argc, argv, opts))
		return DOPPEL_EXIT_OK;
	while ((c = getopt_long(argc, argv, DOPPEL_CTL_OPTSTRING "l:p:", opts, NULL)) != -1) {
		if (c == 'h') {
			usage();
			return DOPPEL_EXIT_OK;
		}
		if (c == '?' || c == ':')
			return doppel_bad_option("reprotect", c, argv);
		if (c == 'l')
			listen = optarg;
		else if (c == 'p')
			peer = optarg;
		else if ((rc = doppel_ctl_opt(&o, c, optarg)) == 1)
			return doppel_bad_option("reprotect", c, argv);
		else if (rc)
			return rc;
	}
	rc = doppel_ctl_finish(&o, argc, argv);
	if (rc)
		return rc;
	if (!listen == !peer)
		return doppel_usage_error("reprotect",
					  "give exactly one of --listen (a fenced copy) and --peer "
					  "(the new primary)");
	req = json_object_new_object();
	json_object_object_add(req, "cmd", json_object_new_string("reprotect"));
	json_object_object_add(req, listen ? "listen" : "peer",
			       json_object_new_string(listen ? listen : peer));
	return doppel_ctl_run(&o, req, print);
}
