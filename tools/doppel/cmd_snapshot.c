/* cmd_snapshot.c — `doppel snapshot NAME FILE`: write a full or incremental snapshot of a running VM. */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "tools/common/ctl_client.h"
#include "tools/doppel/doppel.h"

static void usage(void)
{
	printf("usage: doppel snapshot NAME FILE [--stop] [--incremental-from PREV] [--with-disks] "
	       "[--control PATH]\n"
	       "                       [--json] [--timeout-ms MS]\n"
	       "\n"
	       "Pause the VM, write its complete state (memory, vCPUs, devices) to FILE, then resume it\n"
	       "(or, with --stop, stop it). With --incremental-from PREV only the pages written since\n"
	       "PREV are stored; PREV must be the last snapshot this VM process took. FILE appears\n"
	       "atomically: a failed snapshot never leaves a partial FILE. Restore with\n"
	       "`doppel run --restore FILE`. Each --disk is recorded (size, id) and, by default, copied\n"
	       "at the paused point to FILE.disk0, FILE.disk1, ... (a reflink where the filesystem can);\n"
	       "restore with those copies as the --disk paths. --with-disks puts the disks' blocks into\n"
	       "FILE instead (an incremental snapshot: only the blocks written since PREV).\n"
	       "\n"
	       "  FILE                      where to write (relative paths are taken from here)\n"
	       "  -s, --stop                stop the VM after the snapshot\n"
	       "  -i, --incremental-from P  only pages dirtied since snapshot P\n"
	       "  -D, --with-disks          carry the disks' blocks in FILE (no FILE.diskN "
	       "copies)\n" DOPPEL_CTL_OPTHELP_BASE
	       "  -t, --timeout-ms MS  give up waiting for the snapshot after MS milliseconds (default\n"
	       "                       600000; --timeout is the old name)\n");
}

/* The VM process has its own working directory: send absolute paths. */
static char *absolute(const char *p)
{
	char cwd[PATH_MAX], *out;

	if (p[0] == '/')
		return strdup(p);
	if (!getcwd(cwd, sizeof(cwd)))
		return NULL;
	if (asprintf(&out, "%s/%s", cwd, p) < 0)
		return NULL;
	return out;
}

/* A progress bar on a terminal: poll the VM's status from a second connection while the snapshot
 * request waits for its reply. */
struct progress {
	const char *path;
	volatile bool done;
	bool drawn;
};

static void *progress_main(void *arg)
{
	struct progress *p = arg;
	struct json_object *req = json_object_new_object(), *rep, *s, *d, *t;
	char err[256];

	json_object_object_add(req, "cmd", json_object_new_string("status"));
	while (!p->done) {
		usleep(200000);
		if (p->done || ctl_call(p->path, req, &rep, 2000, err, sizeof(err)))
			continue;
		if (json_object_object_get_ex(rep, "snapshot_in_progress", &s) &&
		    json_object_object_get_ex(s, "pages_done", &d) &&
		    json_object_object_get_ex(s, "pages_total", &t) && json_object_get_int64(t) > 0) {
			double f = (double)json_object_get_int64(d) / (double)json_object_get_int64(t);
			int bar = (int)(f * 30);
			fprintf(stderr, "\rsnapshot [%.*s%*s] %3.0f%% of %lld MiB", bar,
				"##############################", 30 - bar, "", f * 100,
				(long long)(json_object_get_int64(t) >> 8));
			p->drawn = true;
		}
		json_object_put(rep);
	}
	if (p->drawn)
		fprintf(stderr, "\r%60s\r", "");
	json_object_put(req);
	return NULL;
}

int cmd_snapshot(int argc, char **argv)
{
	struct progress prog = {0};
	pthread_t pt;
	bool bar;
	static const struct option opts[] = {
		DOPPEL_CTL_LONGOPTS,
		{"stop", no_argument, NULL, 's'},
		{"incremental-from", required_argument, NULL, 'i'},
		{"with-disks", no_argument, NULL, 'D'},
		{0},
	};
	struct doppel_ctl_opts o;
	struct json_object *req, *reply;
	const char *file, *prev = NULL;
	char *afile = NULL, *aprev = NULL;
	bool stop = false, with_disks = false;
	int c, rc, npos;

	doppel_ctl_opts_init(&o, "snapshot");
	if (doppel_opts_begin(argc, argv, opts))
		return DOPPEL_EXIT_OK;
	while ((c = getopt_long(argc, argv, DOPPEL_CTL_OPTSTRING "si:D", opts, NULL)) != -1) {
		if (c == 'h') {
			usage();
			return DOPPEL_EXIT_OK;
		}
		if (c == 's')
			stop = true;
		else if (c == 'D')
			with_disks = true;
		else if (c == 'i')
			prev = optarg;
		else if ((rc = doppel_ctl_opt(&o, c, optarg)) == 1)
			return doppel_bad_option("snapshot", c, argv);
		else if (rc)
			return rc;
	}
	npos = argc - optind;
	if (npos < 1 || npos > 2)
		return doppel_usage_error("snapshot", "expected NAME FILE");
	if (npos == 1 && !o.control) /* `doppel snapshot vm1`: the one argument is the VM */
		return doppel_usage_error("snapshot", "missing FILE (doppel snapshot NAME FILE)");
	file = argv[argc - 1];
	rc = doppel_ctl_finish(&o, argc - 1, argv);
	if (rc)
		return rc;
	afile = absolute(file);
	aprev = prev ? absolute(prev) : NULL;
	if (!afile || (prev && !aprev)) {
		free(afile);
		free(aprev);
		return doppel_error("snapshot", DOPPEL_EXIT_FAIL, "cannot resolve path");
	}
	req = json_object_new_object();
	json_object_object_add(req, "cmd", json_object_new_string("snapshot"));
	json_object_object_add(req, "path", json_object_new_string(afile));
	if (aprev)
		json_object_object_add(req, "incremental_from", json_object_new_string(aprev));
	json_object_object_add(req, "stop", json_object_new_boolean(stop));
	if (with_disks)
		json_object_object_add(req, "with_disks", json_object_new_boolean(true));
	if (o.timeout_ms == DOPPEL_CTL_TIMEOUT_MS)
		o.timeout_ms = 600000; /* a big VM takes a while to write */
	prog.path = o.path;
	bar = !o.json && isatty(STDERR_FILENO) && pthread_create(&pt, NULL, progress_main, &prog) == 0;
	rc = doppel_ctl_request(&o, req, &reply);
	prog.done = true;
	if (bar)
		pthread_join(pt, NULL);
	json_object_put(req);
	if (rc == 0) {
		if (o.json)
			doppel_print_json(reply);
		else
			printf("snapshot of %s written to %s\n", o.label, file);
		json_object_put(reply);
	}
	free(afile);
	free(aprev);
	return rc;
}
