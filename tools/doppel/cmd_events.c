/* cmd_events.c — `doppel events NAME [--follow]`: the VM's event log, over its control socket or from the file. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "common/parse.h"
#include "tools/common/ctl_client.h"
#include "tools/doppel/doppel.h"
#include "vmm/vmm.h"

#define POLL_MS 250

static volatile sig_atomic_t interrupted; /* the CLI process's own: SIGINT/SIGTERM end --follow */

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

static void usage(void)
{
	printf("usage: doppel events NAME [--follow] [--since SEQ] [--json] [--control PATH]\n"
	       "       doppel events --file PATH [--follow] [--since SEQ] [--json]\n"
	       "\n"
	       "Print a VM's events (state changes, protection, failovers with their timings, fencing,\n"
	       "witness, migrations, errors), oldest first, one per line: SEQ TIME TYPE key=value...\n"
	       "A running VM answers over its control socket with the events it holds in memory (the\n"
	       "last 512); --file reads an event log file. For a VM that is not running, its default\n"
	       "event log file is read (/var/lib/doppel/NAME/events.jsonl, or next to --control PATH).\n"
	       "\n"
	       "  -f, --follow         keep printing new events until interrupted (Ctrl-C)\n"
	       "  -s, --since SEQ      only events after SEQ\n"
	       "  -F, --file PATH      read this event log file instead of asking the VM\n"
	       "  -j, --json           print each event as its JSON line\n"
	       "  NAME                 the VM: its control socket is /run/doppel/NAME.sock, or the one it\n"
	       "                       registered (doppel list) when started with its own --control\n"
	       "  -c, --control PATH   use this control socket instead (NAME is then optional)\n"
	       "  -t, --timeout-ms MS  give up waiting for the reply after MS milliseconds (default\n"
	       "                       10000; --timeout is the old name)\n"
	       "  -h, --help           show this help\n");
}

/* One event: its JSON line, or "SEQ TIME TYPE key=value ...". */
static void print_event(struct json_object *e, bool json)
{
	struct json_object *j;
	char when[64] = "?";

	if (json) {
		printf("%s\n", json_object_to_json_string_ext(e, CTL_JSON_FLAGS));
		return;
	}
	if (json_object_object_get_ex(e, "time", &j)) {
		double t = json_object_get_double(j);
		time_t s = (time_t)t;
		struct tm tm;
		gmtime_r(&s, &tm);
		size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
		snprintf(when + n, sizeof(when) - n, ".%03dZ", (int)((t - (double)s) * 1000));
	}
	printf("%lld %s %s",
	       json_object_object_get_ex(e, "seq", &j) ? (long long)json_object_get_int64(j) : 0LL, when,
	       json_object_object_get_ex(e, "type", &j) ? json_object_get_string(j) : "?");
	json_object_object_foreach(e, k, v)
	{
		if (!strcmp(k, "seq") || !strcmp(k, "time") || !strcmp(k, "type") || !strcmp(k, "vm"))
			continue;
		const char *s = json_object_is_type(v, json_type_string)
					? json_object_get_string(v)
					: json_object_to_json_string_ext(v, CTL_JSON_FLAGS);
		printf(strpbrk(s, " \t") ? " %s=\"%s\"" : " %s=%s", k, s);
	}
	putchar('\n');
}

/* Events with seq > *since from the VM; *since advances. 0, or the exit status (printed). */
static int from_vm(const struct doppel_ctl_opts *o, uint64_t *since, bool json, bool first)
{
	struct json_object *req = json_object_new_object(), *reply = NULL, *a, *j;
	int rc;

	json_object_object_add(req, "cmd", json_object_new_string("events"));
	json_object_object_add(req, "since", json_object_new_int64((int64_t)*since));
	rc = doppel_ctl_request(o, req, &reply);
	json_object_put(req);
	if (rc)
		return rc;
	if (first && json_object_object_get_ex(reply, "missed", &j) && json_object_get_int64(j) > 0) {
		struct json_object *f = NULL;
		json_object_object_get_ex(reply, "file", &f);
		fprintf(stderr, "doppel events: %lld earlier events are no longer in memory%s%s\n",
			(long long)json_object_get_int64(j), f ? ": see " : "",
			f ? json_object_get_string(f) : "");
	}
	if (json_object_object_get_ex(reply, "events", &a))
		for (size_t i = 0; i < json_object_array_length(a); i++)
			print_event(json_object_array_get_idx(a, i), json);
	if (json_object_object_get_ex(reply, "next", &j))
		*since = (uint64_t)json_object_get_int64(j);
	json_object_put(reply);
	return fflush(stdout) ? DOPPEL_EXIT_FAIL : 0;
}

/* New complete lines of the file from *off on; *off advances past them. 0 or the exit status. */
static int from_file(const char *path, long *off, uint64_t since, bool json)
{
	FILE *f = fopen(path, "r");
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	if (!f) {
		fprintf(stderr, "doppel events: cannot open %s: %s\n", path, strerror(errno));
		return DOPPEL_EXIT_FAIL;
	}
	if (fseek(f, *off, SEEK_SET) == 0) {
		while ((n = getline(&line, &cap, f)) > 0 && line[n - 1] == '\n') {
			struct json_object *e = json_tokener_parse(line), *j;
			*off += (long)n;
			if (!e || !json_object_is_type(e, json_type_object)) {
				fprintf(stderr,
					"doppel events: %s: skipping a line that is not a JSON object\n",
					path);
			} else if (!json_object_object_get_ex(e, "seq", &j) ||
				   (uint64_t)json_object_get_int64(j) > since) {
				print_event(e, json);
			}
			json_object_put(e);
		}
	}
	free(line);
	fclose(f);
	return fflush(stdout) ? DOPPEL_EXIT_FAIL : 0;
}

/* No VM behind the control socket path: none there, or a stale one (the VM was killed). */
static bool vm_down(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), rc, e;

	if (fd < 0)
		return false;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	e = errno;
	close(fd);
	return rc < 0 && (e == ENOENT || e == ECONNREFUSED);
}

static void sleep_poll(void)
{
	struct timespec ts = {0, POLL_MS * 1000000L};

	nanosleep(&ts, NULL); /* a signal ends it early */
}

int cmd_events(int argc, char **argv)
{
	static const struct option opts[] = {
		DOPPEL_CTL_LONGOPTS,
		{"follow", no_argument, NULL, 'f'},
		{"since", required_argument, NULL, 's'},
		{"file", required_argument, NULL, 'F'},
		{0},
	};
	struct doppel_ctl_opts o;
	const char *file = NULL;
	bool follow = false;
	uint64_t since = 0;
	long off = 0;
	int c, rc;

	doppel_ctl_opts_init(&o, "events");
	if (doppel_opts_begin(argc, argv, opts))
		return DOPPEL_EXIT_OK;
	while ((c = getopt_long(argc, argv, DOPPEL_CTL_OPTSTRING "fs:F:", opts, NULL)) != -1) {
		if (c == 'h') {
			usage();
			return DOPPEL_EXIT_OK;
		}
		if (c == '?' || c == ':')
			return doppel_bad_option("events", c, argv);
		if (c == 'f')
			follow = true;
		else if (c == 'F')
			file = optarg;
		else if (c == 's' && parse_uint(optarg, 0, UINT64_MAX, &since))
			return doppel_usage_error("events", "bad --since '%s' (an event seq, >= 0)", optarg);
		else if (c != 's' && (rc = doppel_ctl_opt(&o, c, optarg)) == 1)
			return doppel_bad_option("events", c, argv);
		else if (c != 's' && rc)
			return rc;
	}
	if (file && optind < argc)
		return doppel_usage_error("events", "give NAME or --file PATH, not both");
	if (!file && (rc = doppel_ctl_finish(&o, argc, argv)))
		return rc;
	struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: the poll sleep ends */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	char def[512];
	if (!file && o.name && vm_down(o.path) &&
	    vmm_event_log_default(o.name, o.control, def, sizeof(def)) && !access(def, R_OK)) {
		/* not running: its default event log file still tells */
		fprintf(stderr, "doppel events: %s is not running; reading %s\n", o.label, def);
		file = def;
	}
	rc = file ? from_file(file, &off, since, o.json) : from_vm(&o, &since, o.json, true);
	while (!rc && follow && !interrupted) {
		sleep_poll();
		if (!interrupted)
			rc = file ? from_file(file, &off, since, o.json) : from_vm(&o, &since, o.json, false);
	}
	return rc;
}
