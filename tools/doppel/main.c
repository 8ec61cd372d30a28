/* main.c — the doppel command: verb dispatch, and the option/control-socket/printing helpers verbs share. */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "common/parse.h"
#include "doppel_version.h" /* generated: build/gen/doppel_version.h */
#include "tools/common/ctl_client.h"
#include "tools/doppel/doppel.h"
#include "vmm/registry.h"

static const struct doppel_verb verbs[] = {
	{"run", "create and run a VM, serving its control socket", cmd_run},
	{"status", "show the state of a running VM", cmd_status},
	{"pause", "pause a running VM (all vCPUs stop)", cmd_pause},
	{"resume", "resume a paused VM", cmd_resume},
	{"stop", "stop a VM (its doppel run process exits)", cmd_stop},
	{"snapshot", "write a VM's complete state to a file (full or incremental)", cmd_snapshot},
	{"migrate", "live-migrate a running VM to another host (doppel run --incoming)", cmd_migrate},
	{"protect", "replicate a running VM to a standby continuously (Remus)", cmd_protect},
	{"failover", "promote a standby by hand (drills)", cmd_failover},
	{"unprotect", "end protection on purpose (the standby stays held)", cmd_unprotect},
	{"switchover", "planned role swap: the standby becomes primary, this copy its standby",
	 cmd_switchover},
	{"reprotect", "after a failover: rejoin a fenced copy as standby, or protect the new primary again",
	 cmd_reprotect},
	{"drill", "failover drill on a protected VM, with an RTO/RPO report; ends protected", cmd_drill},
	{"events", "print a VM's event log (--follow: stream new events)", cmd_events},
	{"metrics", "print a VM's Prometheus metrics", cmd_metrics},
	{"fleet", "start, stop or list a declared fleet of VMs (fleet up|down|status|check FILE)", cmd_fleet},
	{"list", "list the VMs running on this host", cmd_list},
	{"console", "attach to a VM's serial console (detach with Ctrl-])", cmd_console},
	{"version", "print doppel's version", cmd_version},
};

/* The output mode of this process (a CLI program: one command line, so one mode). */
static bool json_mode;

const char *doppel_version(void)
{
	return DOPPEL_VERSION;
}

bool doppel_json_mode(void)
{
	return json_mode;
}

int doppel_error(const char *verb, int code, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (json_mode) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "ok", json_object_new_boolean(0));
		json_object_object_add(o, "error", json_object_new_string(msg));
		json_object_object_add(o, "exit", json_object_new_int(code));
		printf("%s\n", json_object_to_json_string_ext(o, CTL_JSON_FLAGS));
		fflush(stdout);
		json_object_put(o);
	} else if (verb) {
		fprintf(stderr, "doppel %s: %s\n", verb, msg);
	} else {
		fprintf(stderr, "doppel: %s\n", msg);
	}
	return code;
}

bool doppel_opts_begin(int argc, char **argv, const struct option *opts)
{
	doppel_getopt_reset();
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			break;
		if (strcmp(argv[i], "--list-options"))
			continue;
		for (; opts->name; opts++)
			printf("--%s\n", opts->name);
		return true;
	}
	return false;
}

/* ---- shared helpers ----------------------------------------------------------------------------------- */

void doppel_getopt_reset(void)
{
	optind = 0;
	opterr = 0;
}

int doppel_usage_error(const char *verb, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (json_mode)
		return doppel_error(verb, DOPPEL_EXIT_USAGE, "%s", msg);
	return doppel_error(verb, DOPPEL_EXIT_USAGE, "%s (try doppel %s --help)", msg, verb);
}

int doppel_bad_option(const char *verb, int c, char **argv)
{
	const char *arg = optind > 0 ? argv[optind - 1] : NULL;
	char opt[64];

	if (arg && !strncmp(arg, "--", 2))
		snprintf(opt, sizeof(opt), "%.*s", (int)strcspn(arg, "="), arg); /* --name, without =value */
	else if (optopt > ' ' && optopt < 127)
		snprintf(opt, sizeof(opt), "-%c", optopt);
	else
		snprintf(opt, sizeof(opt), "%s", arg ? arg : "?");
	if (c == ':')
		return doppel_usage_error(verb, "option '%s' needs a value", opt);
	if (arg && !strncmp(arg, "--", 2) && optopt) /* glibc: known long option given a value */
		return doppel_usage_error(verb, "option '%s' takes no value", opt);
	return doppel_usage_error(verb, "unknown option '%s'", opt);
}

int doppel_add_tls(const char *verb, struct json_object *req, const char *dir, const char *peer_name)
{
	char *abs;

	if (peer_name && !dir)
		return doppel_usage_error(verb, "--tls-peer-name needs --tls-dir");
	if (!dir)
		return 0;
	abs = realpath(dir, NULL);
	if (!abs) {
		fprintf(stderr, "doppel %s: --tls-dir %s: %s\n", verb, dir, strerror(errno));
		return DOPPEL_EXIT_USAGE;
	}
	json_object_object_add(req, "tls_dir", json_object_new_string(abs));
	free(abs);
	if (peer_name)
		json_object_object_add(req, "tls_peer_name", json_object_new_string(peer_name));
	return 0;
}

void doppel_ctl_opts_init(struct doppel_ctl_opts *o, const char *verb)
{
	memset(o, 0, sizeof(*o));
	o->verb = verb;
	o->json = json_mode;
	o->timeout_ms = DOPPEL_CTL_TIMEOUT_MS;
}

int doppel_ctl_opt(struct doppel_ctl_opts *o, int c, const char *arg)
{
	uint64_t v;

	switch (c) {
	case 'c':
		o->control = arg;
		return 0;
	case 'j':
		o->json = true;
		return 0;
	case 't':
		if (parse_uint(arg, 1, 3600 * 1000, &v))
			return doppel_usage_error(o->verb, "bad --timeout-ms '%s' (milliseconds, 1..3600000)",
						  arg);
		o->timeout_ms = (int)v;
		return 0;
	default:
		return 1;
	}
}

/* NAME has no socket at the default path: a VM of that name started with its own --control? */
static int registry_lookup(struct doppel_ctl_opts *o)
{
	struct vmreg_entry *e = NULL;
	char err[256];
	int n, found = -1, count = 0;

	n = vmreg_list(&e, err, sizeof(err));
	for (int i = 0; i < n; i++) {
		if (strcmp(e[i].name, o->name))
			continue;
		found = i;
		count++;
	}
	if (count == 1)
		snprintf(o->path, sizeof(o->path), "%s", e[found].control);
	free(e);
	if (count > 1)
		return doppel_usage_error(
			o->verb, "%d VMs named '%s' run here: say which with --control PATH", count, o->name);
	return 0; /* none: the default path stays, and the request reports "not running" */
}

int doppel_ctl_finish(struct doppel_ctl_opts *o, int argc, char **argv)
{
	if (optind < argc)
		o->name = argv[optind++];
	if (optind < argc)
		return doppel_usage_error(o->verb, "unexpected argument '%s'", argv[optind]);
	if (o->name && !cli_name_valid(o->name))
		return doppel_usage_error(o->verb,
					  "invalid VM name '%s' (1-%d characters from A-Z a-z 0-9 . _ -)",
					  o->name, CLI_NAME_MAX);
	if (o->control) {
		if (!o->control[0] || strlen(o->control) >= sizeof(o->path))
			return doppel_usage_error(o->verb, "bad --control path (1-%zu bytes)",
						  sizeof(o->path) - 1);
		snprintf(o->path, sizeof(o->path), "%s", o->control);
	} else if (!o->name) {
		return doppel_usage_error(o->verb, "missing VM name");
	} else if (!ctl_default_path(o->name, o->path, sizeof(o->path))) {
		return doppel_usage_error(o->verb, "invalid VM name '%s'", o->name);
	} else if (access(o->path, F_OK) < 0) {
		int rc = registry_lookup(o);

		if (rc)
			return rc;
	}
	o->label = o->name ? o->name : o->path;
	return 0;
}

int doppel_ctl_request(const struct doppel_ctl_opts *o, struct json_object *req, struct json_object **reply)
{
	char err[512];
	int rc;

	rc = ctl_call(o->path, req, reply, o->timeout_ms, err, sizeof(err));
	if (rc == 0)
		return DOPPEL_EXIT_OK;
	rc = (int)ctl_outcome(rc, *reply);
	json_object_put(*reply);
	*reply = NULL;
	return doppel_error(o->verb, rc, "%s", err);
}

void doppel_print_json(struct json_object *reply)
{
	struct json_object *copy = json_object_new_object();

	if (!copy)
		return;
	json_object_object_foreach(reply, key, val)
	{
		if (strcmp(key, "ok"))
			json_object_object_add(copy, key, json_object_get(val));
	}
	printf("%s\n", json_object_to_json_string_ext(copy, CTL_JSON_FLAGS));
	json_object_put(copy);
}

/* Print a scalar without quotes, control characters replaced so one value stays on one line. */
static void print_scalar(FILE *f, struct json_object *v)
{
	const char *s;

	if (!v) {
		fputs("null", f);
		return;
	}
	s = json_object_is_type(v, json_type_string) ? json_object_get_string(v)
						     : json_object_to_json_string_ext(v, CTL_JSON_FLAGS);
	for (; s && *s; s++)
		fputc((unsigned char)*s < ' ' || *s == 0x7f ? '?' : *s, f);
}

static bool is_container(struct json_object *v)
{
	return json_object_is_type(v, json_type_object) || json_object_is_type(v, json_type_array);
}

void doppel_print_tree(FILE *f, struct json_object *obj, int indent)
{
	if (indent > 40) { /* absurdly deep: flatten */
		fprintf(f, "%*s", indent, "");
		print_scalar(f, obj);
		fputc('\n', f);
		return;
	}
	json_object_object_foreach(obj, key, val)
	{
		if (indent == 0 && !strcmp(key, "ok"))
			continue;
		fprintf(f, "%*s%s:", indent, "", key);
		if (json_object_is_type(val, json_type_object) && json_object_object_length(val)) {
			fputc('\n', f);
			doppel_print_tree(f, val, indent + 2);
		} else if (json_object_is_type(val, json_type_array)) {
			size_t n = json_object_array_length(val), i;
			bool flat = true;

			for (i = 0; i < n; i++)
				flat = flat && !is_container(json_object_array_get_idx(val, i));
			if (flat) {
				for (i = 0; i < n; i++) {
					fputs(i ? ", " : " ", f);
					print_scalar(f, json_object_array_get_idx(val, i));
				}
				fputc('\n', f);
				continue;
			}
			fputc('\n', f);
			for (i = 0; i < n; i++) {
				struct json_object *e = json_object_array_get_idx(val, i);

				fprintf(f, "%*s-", indent + 2, "");
				if (json_object_is_type(e, json_type_object)) {
					fputc('\n', f);
					doppel_print_tree(f, e, indent + 4);
				} else {
					fputc(' ', f);
					print_scalar(f, e);
					fputc('\n', f);
				}
			}
		} else {
			fputc(' ', f);
			print_scalar(f, val);
			fputc('\n', f);
		}
	}
}

int doppel_ctl_run(const struct doppel_ctl_opts *o, struct json_object *req,
		   void (*print)(const struct doppel_ctl_opts *o, struct json_object *reply))
{
	struct json_object *reply = NULL;
	int rc = doppel_ctl_request(o, req, &reply);

	json_object_put(req);
	if (rc)
		return rc;
	if (o->json)
		doppel_print_json(reply);
	else if (print)
		print(o, reply);
	else
		doppel_print_tree(stdout, reply, 0);
	json_object_put(reply);
	return fflush(stdout) ? DOPPEL_EXIT_FAIL : DOPPEL_EXIT_OK;
}

int doppel_simple_verb(const struct doppel_simple_verb *v, int argc, char **argv)
{
	static const struct option longopts[] = {DOPPEL_CTL_LONGOPTS, {0}};
	struct doppel_ctl_opts o;
	struct json_object *req;
	int c, rc;

	doppel_ctl_opts_init(&o, v->verb);
	if (doppel_opts_begin(argc, argv, longopts))
		return DOPPEL_EXIT_OK;
	while ((c = getopt_long(argc, argv, DOPPEL_CTL_OPTSTRING, longopts, NULL)) != -1) {
		if (c == 'h') {
			printf("usage: doppel %s NAME [--control PATH] [--json] [--timeout-ms "
			       "MS]\n\n%s\n\n" DOPPEL_CTL_OPTHELP,
			       v->verb, v->description);
			return DOPPEL_EXIT_OK;
		}
		if (c == '?' || c == ':')
			return doppel_bad_option(v->verb, c, argv);
		rc = doppel_ctl_opt(&o, c, optarg);
		if (rc)
			return rc == 1 ? doppel_bad_option(v->verb, '?', argv) : rc;
	}
	rc = doppel_ctl_finish(&o, argc, argv);
	if (rc)
		return rc;
	req = json_object_new_object();
	if (!req || json_object_object_add(req, "cmd", json_object_new_string(v->cmd))) {
		json_object_put(req);
		return doppel_error(v->verb, DOPPEL_EXIT_FAIL, "out of memory");
	}
	return doppel_ctl_run(&o, req, v->print);
}

/* ---- dispatch --------------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
	size_t i;

	fprintf(f, "usage: doppel VERB [options]   (doppel VERB --help for a verb's options)\n"
		   "       doppel --version\n\nverbs:\n");
	for (i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		fprintf(f, "  %-10s %s\n", verbs[i].name, verbs[i].summary);
}

static const struct doppel_verb *find_verb(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (!strcmp(verbs[i].name, name))
			return &verbs[i];
	return NULL;
}

int main(int argc, char **argv)
{
	const struct doppel_verb *v;

	/* Peers and pipes that go away are reported as EPIPE by the writer, never by a signal. */
	signal(SIGPIPE, SIG_IGN);
	for (int i = 2; i < argc && strcmp(argv[i], "--"); i++)
		if (!strcmp(argv[i], "--json") || !strcmp(argv[i], "-j"))
			json_mode = true;
	if (argc < 2) {
		usage(stderr);
		return DOPPEL_EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(stdout);
		return DOPPEL_EXIT_OK;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
		printf("doppel %s\n", doppel_version());
		return DOPPEL_EXIT_OK;
	}
	if (!strcmp(argv[1], "--list-verbs")) { /* hidden: for the tests and the bash completion */
		for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
			printf("%s\n", verbs[i].name);
		return DOPPEL_EXIT_OK;
	}
	if (!strcmp(argv[1], "help")) { /* doppel help [VERB] */
		if (argc < 3) {
			usage(stdout);
			return DOPPEL_EXIT_OK;
		}
		v = find_verb(argv[2]);
		if (!v)
			return doppel_error(NULL, DOPPEL_EXIT_USAGE, "unknown verb '%s' (try doppel --help)",
					    argv[2]);
		char *hargv[] = {argv[2], (char *)"--help", NULL};

		return v->fn(2, hargv);
	}
	if (argv[1][0] == '-')
		return doppel_error(NULL, DOPPEL_EXIT_USAGE, "unknown option '%s' (try doppel --help)",
				    argv[1]);
	v = find_verb(argv[1]);
	if (!v)
		return doppel_error(NULL, DOPPEL_EXIT_USAGE, "unknown verb '%s' (try doppel --help)",
				    argv[1]);
	return v->fn(argc - 1, argv + 1);
}
