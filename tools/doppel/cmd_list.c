/* cmd_list.c — `doppel list [--json]`: every VM running on this host, from the registry each VM keeps. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "common/parse.h"
#include "tools/common/ctl_client.h"
#include "tools/doppel/doppel.h"
#include "vmm/registry.h"

#define LIST_TIMEOUT_MS 2000

static void usage(void)
{
	printf("usage: doppel list [--json] [--timeout-ms MS]\n"
	       "\n"
	       "List every VM running on this host: each `doppel run` registers itself under\n"
	       "/run/doppel/vms ($DOPPEL_RUNTIME_DIR/vms when set), also with its own --control path.\n"
	       "Stale entries (process or socket gone) are removed. Columns: NAME, STATE, ROLE\n"
	       "(primary, standby or unprotected), PROTECTION (remus:PEER while protected, else -),\n"
	       "UPTIME (seconds), CONTROL (the socket).\n"
	       "\n"
	       "  -j, --json           one JSON object {\"vms\": [{name, pid, state, role, protection,\n"
	       "                       uptime_s, control}]}; protection is null or {mode, peer, state}\n"
	       "  -t, --timeout-ms MS  how long to wait for each VM's status (default 2000; --timeout\n"
	       "                       is the old name)\n"
	       "  -h, --help           show this help\n");
}

static const char *str_at(struct json_object *o, const char *k1, const char *k2, const char *dflt)
{
	struct json_object *v;

	if (!o || !json_object_object_get_ex(o, k1, &v))
		return dflt;
	if (k2 && !json_object_object_get_ex(v, k2, &v))
		return dflt;
	return json_object_is_type(v, json_type_string) ? json_object_get_string(v) : dflt;
}

/* One VM's row from its registry entry and its status reply (NULL: no answer, err says why). */
static struct json_object *row(const struct vmreg_entry *e, struct json_object *st, const char *err)
{
	struct json_object *r = json_object_new_object(), *p = NULL, *v;
	const char *role = str_at(st, "role", NULL, "unprotected");

	json_object_object_add(r, "name", json_object_new_string(e->name));
	json_object_object_add(r, "pid", json_object_new_int(e->pid));
	json_object_object_add(r, "state",
			       json_object_new_string(st ? str_at(st, "state", NULL, "?") : "unreachable"));
	json_object_object_add(r, "role", json_object_new_string(role));
	if (st && !strcmp(role, "primary")) {
		p = json_object_new_object();
		json_object_object_add(p, "mode", json_object_new_string("remus"));
		json_object_object_add(p, "peer", json_object_new_string(str_at(st, "remus", "peer", "?")));
		json_object_object_add(p, "state", json_object_new_string(str_at(st, "remus", "state", "?")));
	}
	json_object_object_add(r, "protection", p);
	if (st && json_object_object_get_ex(st, "uptime_s", &v))
		json_object_object_add(r, "uptime_s", json_object_new_double(json_object_get_double(v)));
	else
		json_object_object_add(r, "uptime_s", NULL);
	json_object_object_add(r, "control", json_object_new_string(e->control));
	if (!st)
		json_object_object_add(r, "error", json_object_new_string(err));
	return r;
}

static void print_table(struct json_object *vms)
{
	size_t n = json_object_array_length(vms);

	printf("%-16s %-12s %-12s %-24s %9s  %s\n", "NAME", "STATE", "ROLE", "PROTECTION", "UPTIME",
	       "CONTROL");
	for (size_t i = 0; i < n; i++) {
		struct json_object *r = json_object_array_get_idx(vms, i), *p, *u;
		char prot[160] = "-", up[32] = "-";

		if (json_object_object_get_ex(r, "protection", &p) && p)
			snprintf(prot, sizeof(prot), "remus:%s", str_at(r, "protection", "peer", "?"));
		if (json_object_object_get_ex(r, "uptime_s", &u) && u)
			snprintf(up, sizeof(up), "%.0f", json_object_get_double(u));
		printf("%-16s %-12s %-12s %-24s %9s  %s\n", str_at(r, "name", NULL, "?"),
		       str_at(r, "state", NULL, "?"), str_at(r, "role", NULL, "?"), prot, up,
		       str_at(r, "control", NULL, "?"));
	}
}

int cmd_list(int argc, char **argv)
{
	static const struct option opts[] = {
		{"json", no_argument, NULL, 'j'},
		{"timeout-ms", required_argument, NULL, 't'},
		{"timeout", required_argument, NULL, 't'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	struct json_object *req, *out, *vms;
	struct vmreg_entry *e = NULL;
	uint64_t timeout = LIST_TIMEOUT_MS;
	bool json = false;
	char err[512];
	int c, n;

	if (doppel_opts_begin(argc, argv, opts))
		return DOPPEL_EXIT_OK;
	while ((c = getopt_long(argc, argv, ":jt:h", opts, NULL)) != -1) {
		if (c == 'h') {
			usage();
			return DOPPEL_EXIT_OK;
		}
		if (c == 'j')
			json = true;
		else if (c == 't' && parse_uint(optarg, 1, 3600000, &timeout))
			return doppel_usage_error("list", "bad --timeout-ms '%s' (milliseconds, 1..3600000)",
						  optarg);
		else if (c != 't')
			return doppel_bad_option("list", c, argv);
	}
	if (optind < argc)
		return doppel_usage_error("list", "unexpected argument '%s'", argv[optind]);
	n = vmreg_list(&e, err, sizeof(err));
	if (n < 0)
		return doppel_error("list", DOPPEL_EXIT_FAIL, "%s", err);
	req = json_object_new_object();
	json_object_object_add(req, "cmd", json_object_new_string("status"));
	vms = json_object_new_array();
	for (int i = 0; i < n; i++) {
		struct json_object *st = NULL;
		int rc = ctl_call(e[i].control, req, &st, (int)timeout, err, sizeof(err));

		if (rc && ctl_outcome(rc, st) == CTL_OUTCOME_NOT_RUNNING) { /* ended meanwhile */
			json_object_put(st);
			continue;
		}
		json_object_array_add(vms, row(&e[i], rc ? NULL : st, err));
		json_object_put(st);
	}
	free(e);
	json_object_put(req);
	if (json) {
		out = json_object_new_object();
		json_object_object_add(out, "vms", vms);
		printf("%s\n", json_object_to_json_string_ext(out, CTL_JSON_FLAGS));
		json_object_put(out);
	} else {
		print_table(vms);
		json_object_put(vms);
	}
	return fflush(stdout) ? DOPPEL_EXIT_FAIL : DOPPEL_EXIT_OK;
}
