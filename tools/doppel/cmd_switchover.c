/* cmd_switchover.c — `doppel switchover NAME --listen ADDR:PORT`: planned role swap with the standby. */
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "common/clock.h"
#include "tools/doppel/doppel.h"
#include "tools/doppel/roles.h"

static void usage(void)
{
	printf("usage: doppel switchover NAME --listen ADDR:PORT [--no-wait] [--control PATH] [--json]\n"
	       "\n"
	       "Planned, zero-loss role swap of a protected VM (run it on the primary's host): the\n"
	       "guest is parked, its last epoch acknowledged, replication ended (ABANDON); the standby\n"
	       "holds exactly this state and is told to run it (GO): it takes the witness key, starts\n"
	       "its vCPUs and announces the VM. This copy becomes the new primary's standby, listening\n"
	       "on --listen, and the new primary protects to it (a full re-sync). Never two live copies:\n"
	       "if anything fails before GO this copy resumes; after GO it stays a held standby.\n"
	       "Waits until the re-protect finished unless --no-wait.\n"
	       "\n"
	       "  -l, --listen ADDR:PORT   where this copy listens as the new standby (the new primary\n"
	       "                           connects to this port at the address GO came from)\n"
	       "  -n, --no-wait            return once the peer runs (do not wait for the "
	       "re-sync)\n" DOPPEL_CTL_OPTHELP);
}

static void print(const struct doppel_ctl_opts *o, struct json_object *reply)
{
	printf("%s switched over to %s at epoch %.0f (guest parked %.1f ms here); standby here on %s\n",
	       o->label, roles_str(reply, "new_primary"), roles_num(reply, "epoch", 0),
	       roles_num(reply, "paused_ms", 0), roles_str(reply, "listen"));
	if (roles_get(reply, "resync_ms"))
		printf("re-protected: the new primary's full copy took %.0f ms\n",
		       roles_num(reply, "resync_ms", 0));
}

int cmd_switchover(int argc, char **argv)
{
	static const struct option opts[] = {
		DOPPEL_CTL_LONGOPTS,
		{"listen", required_argument, NULL, 'l'},
		{"no-wait", no_argument, NULL, 'n'},
		{0},
	};
	struct doppel_ctl_opts o;
	struct json_object *req, *reply = NULL;
	const char *listen = NULL;
	bool wait = true;
	int c, rc;

	doppel_ctl_opts_init(&o, "switchover");
	if (doppel_opts_begin(argc, argv, opts))
		return DOPPEL_EXIT_OK;
	while ((c = getopt_long(argc, argv, DOPPEL_CTL_OPTSTRING "l:n", opts, NULL)) != -1) {
		if (c == 'h') {
			usage();
			return DOPPEL_EXIT_OK;
		}
		if (c == '?' || c == ':')
			return doppel_bad_option("switchover", c, argv);
		if (c == 'l')
			listen = optarg;
		else if (c == 'n')
			wait = false;
		else if ((rc = doppel_ctl_opt(&o, c, optarg)) == 1)
			return doppel_bad_option("switchover", c, argv);
		else if (rc)
			return rc;
	}
	rc = doppel_ctl_finish(&o, argc, argv);
	if (rc)
		return rc;
	if (!listen)
		return doppel_usage_error("switchover", "--listen ADDR:PORT is required");
	req = json_object_new_object();
	json_object_object_add(req, "cmd", json_object_new_string("switchover"));
	json_object_object_add(req, "listen", json_object_new_string(listen));
	uint64_t t0 = now_ns();
	rc = doppel_ctl_request(&o, req, &reply);
	json_object_put(req);
	if (rc)
		return rc;
	if (wait) {
		uint64_t t1 = now_ns();
		if (roles_wait_standby_synced(o.path, o.timeout_ms > 60000 ? o.timeout_ms : 60000)) {
			fprintf(stderr,
				"doppel switchover: switched over, but the new primary did not re-protect "
				"to this copy in time (see `doppel status`)\n");
			json_object_put(reply);
			return DOPPEL_EXIT_FAIL;
		}
		json_object_object_add(reply, "resync_ms", json_object_new_double(roles_ms_since(t1)));
	}
	json_object_object_add(reply, "total_ms", json_object_new_double(roles_ms_since(t0)));
	if (o.json)
		doppel_print_json(reply);
	else
		print(&o, reply);
	json_object_put(reply);
	return DOPPEL_EXIT_OK;
}
