/* cmd_failover.c — `doppel failover NAME [--force]`: promote a standby by hand (drills). */
#include <stdio.h>

#include <json-c/json.h>

#include "tools/doppel/doppel.h"

static void usage(void)
{
	printf("usage: doppel failover NAME [--force] [--control PATH] [--json]\n"
	       "\n"
	       "Promote a standby: apply the last acknowledged checkpoint, start its vCPUs and announce it\n"
	       "on the network. Refused while the primary is still heard, unless --force (a drill: the old\n"
	       "primary then continues unprotected too).\n"
	       "\n"
	       "  -f, --force          take over even though the primary is alive\n" DOPPEL_CTL_OPTHELP);
}

static void print(const struct doppel_ctl_opts *o, struct json_object *reply)
{
	struct json_object *e = NULL;

	json_object_object_get_ex(reply, "epoch", &e);
	printf("%s took over at epoch %lld\n", o->label, e ? (long long)json_object_get_int64(e) : 0LL);
}

int cmd_failover(int argc, char **argv)
{
	static const struct option opts[] = {
		DOPPEL_CTL_LONGOPTS,
		{"force", no_argument, NULL, 'f'},
		{0},
	};
	struct doppel_ctl_opts o;
	struct json_object *req;
	bool force = false;
	int c, rc;

	doppel_ctl_opts_init(&o, "failover");
	if (doppel_opts_begin(argc, argv, opts))
		return DOPPEL_EXIT_OK;
	while ((c = getopt_long(argc, argv, DOPPEL_CTL_OPTSTRING "f", opts, NULL)) != -1) {
		if (c == 'h') {
			usage();
			return DOPPEL_EXIT_OK;
		}
		if (c == '?' || c == ':')
			return doppel_bad_option("failover", c, argv);
		if (c == 'f')
			force = true;
		else if ((rc = doppel_ctl_opt(&o, c, optarg)) == 1)
			return doppel_bad_option("failover", c, argv);
		else if (rc)
			return rc;
	}
	rc = doppel_ctl_finish(&o, argc, argv);
	if (rc)
		return rc;
	req = json_object_new_object();
	json_object_object_add(req, "cmd", json_object_new_string("failover"));
	json_object_object_add(req, "force", json_object_new_boolean(force));
	return doppel_ctl_run(&o, req, print);
}
