/* cmd_fleet.c — `doppel fleet up|down|status|check FILE`: a validated fleet of detached VM processes. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "common/clock.h"
#include "common/errf.h"
#include "common/parse.h"
#include "tools/common/ctl_client.h"
#include "tools/doppel/doppel.h"
#include "vmm/fleet.h"

/* VMs being set up at once per host CPU: enough that their waits (KVM's RCU grace periods, the
 * RTNL lock for taps) overlap, few enough that fleet up and the VMs already up are not starved. */
#define FLEET_PARALLEL_PER_CPU 16

static void usage(FILE *f)
{
	fprintf(f,
		"usage: doppel fleet up|down|status|check FILE [--standby] [--runtime-dir DIR] [--json]\n"
		"                                           [--timeout MS] [--parallel N]\n"
		"\n"
		"A fleet file (docs/fleet.md) declares a host and its VMs, each in the config-file shape\n"
		"(docs/config.md) plus \"cpus\", \"cpus_exclusive\", \"memory_policy\" and \"depends_on\".\n"
		"  check    validate the whole fleet, print every problem (one line each), start nothing\n"
		"  up       validate, then start every VM as its own detached process (`doppel run`\n"
		"           with its config), in parallel by depends_on waves; return once all run. VMs "
		"with\n"
		"           \"protection\" are then protected (the standbys must be up: `fleet up "
		"--standby`\n"
		"           on the other host first). On any failure the VMs started are stopped again\n"
		"  down     stop every VM of the fleet and wait until their processes ended\n"
		"  status   name, state and role of every VM (--json: {\"vms\": [{\"name\", \"state\", "
		"\"role\"}]})\n"
		"\n"
		"  --standby       this host holds the standbys: only the VMs with \"protection\", each\n"
		"                  `doppel run --standby` listening on protection.listen (default .peer)\n"
		"  --runtime-dir DIR  where the VMs' control sockets, logs and config files go (an absolute\n"
		"                  path; default: the file's host.runtime_dir, else /run/doppel)\n"
		"  -j, --json      status: one JSON object\n"
		"  -t, --timeout MS  up/down: give up after MS (default 60000)\n"
		"  -p, --parallel N  up: at most N VMs starting at once (default %d per host CPU)\n"
		"  -h, --help      show this help\n",
		FLEET_PARALLEL_PER_CPU);
}

struct fleet_args {
	const char *verb, *file, *runtime_dir;
	bool standby, json;
	int timeout_ms, parallel;
};

static void ctl_path(const struct vmm_fleet *f, int i, char *buf, size_t len)
{
	if (f->vm[i].o.control)
		snprintf(buf, len, "%s", f->vm[i].o.control);
	else
		snprintf(buf, len, "%s/%s.sock", f->runtime_dir, f->vm[i].o.name);
}

static bool selected(const struct fleet_args *a, const struct vmm_fleet *f, int i)
{
	return !a->standby || f->vm[i].prot.present;
}

/* One control request; reply (or NULL) for the caller. 0 or -errno. */
static int call(const struct vmm_fleet *f, int i, const char *cmd, struct json_object *req, int timeout_ms,
		struct json_object **reply, char *err, size_t errlen)
{
	char path[256];
	struct json_object *own = req ? NULL : json_object_new_object();
	int rc;

	if (own)
		json_object_object_add(own, "cmd", json_object_new_string(cmd));
	ctl_path(f, i, path, sizeof(path));
	rc = ctl_call(path, req ? req : own, reply, timeout_ms, err, errlen);
	json_object_put(own);
	return rc;
}

/* What `fleet up` keeps while it starts VMs: the readiness pipe every VM writes "NAME\n" to once it
 * runs (`doppel run --ready-fd`), how many VMs may be starting at once, and this process's nice value
 * (fleet up runs at a higher priority than the VMs it forks, which get this value back). */
struct starter {
	int rd, wr;
	int window, nice0;
	char buf[8192];
	size_t have;
};

/* A detached `doppel run --config RUNDIR/NAME.json --ready-fd W`: own session, stdin /dev/null,
 * output to its log. The child runs cmd_run straight after fork, without exec: this process has every
 * library mapped and relocated already, which is half of what starting a small VM costs
 * (docs/fleet.md). */
static pid_t spawn(const struct fleet_args *a, const struct vmm_fleet *f, int i, const struct starter *st,
		   char *err, size_t errlen)
{
	const struct vmm_config *c = &f->vm[i];
	char cfg[320], log[320], ctl[256], comm[16], wr[16];
	pid_t pid;
	int fd;

	snprintf(cfg, sizeof(cfg), "%s/%s%s.json", f->runtime_dir, c->o.name, a->standby ? "-standby" : "");
	if (c->log)
		snprintf(log, sizeof(log), "%s", c->log);
	else
		snprintf(log, sizeof(log), "%s/%s%s.log", f->runtime_dir, c->o.name,
			 a->standby ? "-standby" : "");
	ctl_path(f, i, ctl, sizeof(ctl));
	snprintf(wr, sizeof(wr), "%d", st->wr);
	if (json_object_to_file_ext(
		    cfg, json_object_array_get_idx(json_object_object_get(f->root, "vms"), (size_t)i),
		    JSON_C_TO_STRING_PLAIN))
		return errf(err, errlen, -EIO, "cannot write %s: %s", cfg, json_util_get_last_err());
	fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		return errf(err, errlen, -errno, "cannot open log %s: %s", log, strerror(errno));
	fflush(NULL); /* nothing buffered is written twice */
	pid = fork();
	if (pid < 0) {
		close(fd);
		return errf(err, errlen, -errno, "fork: %s", strerror(errno));
	}
	if (pid == 0) {
		char *argv[] = {"run", "--config",   cfg, "--control",
				ctl,   "--ready-fd", wr,  a->standby ? "--standby" : NULL,
				NULL};
		int nul = open("/dev/null", O_RDONLY), rc;

		setsid();
		setpriority(PRIO_PROCESS, 0, st->nice0); /* back to the caller's priority */
		close(st->rd);
		if (nul < 0 || dup2(nul, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
			_exit(127);
		close(nul);
		close(fd);
		snprintf(comm, sizeof(comm), "dp-%s", c->o.name);
		prctl(PR_SET_NAME, comm); /* ps shows which VM this process is */
		rc = cmd_run(a->standby ? 8 : 7, argv);
		fflush(NULL);
		_exit(rc);
	}
	close(fd);
	return pid;
}

static int stop_all(const struct fleet_args *a, const struct vmm_fleet *f, int timeout_ms, bool quiet);

/* Every whole "NAME\n" line on the readiness pipe: that VM runs (pids[i] negated: started by us and
 * done with). Returns how many VMs became ready. */
static int drain_ready(const struct vmm_fleet *f, pid_t *pids, struct starter *st)
{
	int ready = 0;
	ssize_t n;

	while ((n = read(st->rd, st->buf + st->have, sizeof(st->buf) - st->have)) > 0) {
		char *line = st->buf, *nl;

		st->have += (size_t)n;
		while ((nl = memchr(line, '\n', st->have - (size_t)(line - st->buf)))) {
			*nl = 0;
			for (int i = 0; i < f->nr; i++)
				if (pids[i] > 0 && !strcmp(f->vm[i].o.name, line)) {
					pids[i] = -pids[i];
					ready++;
					break;
				}
			line = nl + 1;
		}
		st->have -= (size_t)(line - st->buf);
		memmove(st->buf, line, st->have);
		if (st->have == sizeof(st->buf)) /* no line is this long (names are short): drop it */
			st->have = 0;
	}
	return ready;
}

/* A VM process that ended before it said it runs: its index, else -1 (none ended). */
static int reap_failed(const struct vmm_fleet *f, pid_t *pids, struct starter *st, int *inflight)
{
	pid_t pid;
	int wst;

	while ((pid = waitpid(-1, &wst, WNOHANG)) > 0) {
		*inflight -= drain_ready(f, pids, st); /* it may have said so just before it ended */
		for (int i = 0; i < f->nr; i++)
			if (pids[i] == pid) {
				fprintf(stderr,
					"doppel fleet: %s exited with status %d while starting (see its "
					"log)\n",
					f->vm[i].o.name,
					WIFEXITED(wst) ? WEXITSTATUS(wst) : 128 + WTERMSIG(wst));
				pids[i] = 0;
				return i;
			}
	}
	return -1;
}

/* Start one wave, at most st->window VMs starting at once, each done when it says it runs on the
 * readiness pipe (no polling of control sockets). */
static int start_wave(const struct fleet_args *a, const struct vmm_fleet *f, int wave, pid_t *pids,
		      struct starter *st, uint64_t deadline)
{
	char err[512];
	int next = 0, inflight = 0;

	for (;;) {
		for (; next < f->nr && inflight < st->window; next++) {
			if (f->wave[next] != wave || !selected(a, f, next))
				continue;
			pids[next] = spawn(a, f, next, st, err, sizeof(err));
			if (pids[next] < 0) {
				fprintf(stderr, "doppel fleet: %s: %s\n", f->vm[next].o.name, err);
				pids[next] = 0;
				return -1;
			}
			inflight++;
			inflight -= drain_ready(f, pids, st);
		}
		inflight -= drain_ready(f, pids, st);
		if (reap_failed(f, pids, st, &inflight) >= 0)
			return -1;
		if (!inflight && next >= f->nr)
			return 0;
		if (now_ns() > deadline) {
			fprintf(stderr, "doppel fleet: %d VM(s) did not come up in time\n", inflight);
			return -1;
		}
		if (inflight >= st->window || next >= f->nr)
			poll(&(struct pollfd){.fd = st->rd, .events = POLLIN}, 1, 50);
	}
}

static struct json_object *protect_req(const struct vmm_protection *p)
{
	struct json_object *req = json_object_new_object();

	json_object_object_add(req, "cmd", json_object_new_string("protect"));
	json_object_object_add(req, "peer", json_object_new_string(p->peer));
	json_object_object_add(req, "interval_ms", json_object_new_int(p->interval_ms));
	json_object_object_add(req, "heartbeat_timeout_ms", json_object_new_int(p->heartbeat_timeout_ms));
	if (p->standby_lost)
		json_object_object_add(req, "standby_lost", json_object_new_string(p->standby_lost));
	if (p->tls_dir)
		json_object_object_add(req, "tls_dir", json_object_new_string(p->tls_dir));
	if (p->witness) {
		json_object_object_add(req, "witness", json_object_new_string(p->witness));
		json_object_object_add(req, "witness_ttl_ms", json_object_new_int(p->witness_ttl_ms));
		if (p->witness_name)
			json_object_object_add(req, "witness_name", json_object_new_string(p->witness_name));
	}
	return req;
}

static int protect_all(const struct vmm_fleet *f, int timeout_ms)
{
	char err[512];

	for (int i = 0; i < f->nr; i++) {
		struct json_object *req, *r = NULL;
		int rc;

		if (!f->vm[i].prot.present)
			continue;
		req = protect_req(&f->vm[i].prot);
		rc = call(f, i, NULL, req, timeout_ms, &r, err, sizeof(err));
		json_object_put(req);
		json_object_put(r);
		if (rc) {
			fprintf(stderr, "doppel fleet: cannot protect %s: %s\n", f->vm[i].o.name, err);
			return -1;
		}
	}
	return 0;
}

/* The readiness pipe (the read end non-blocking, 1 MiB so that a thousand "NAME\n" lines fit while
 * fleet up forks) and fleet up's priority: nice -10 relative to the caller, so that the one process
 * forking every VM is not starved by the VMs it already started (they get the caller's value). */
static int starter_open(const struct fleet_args *a, struct starter *st)
{
	int p[2];

	memset(st, 0, sizeof(*st));
	if (pipe2(p, O_CLOEXEC)) {
		fprintf(stderr, "doppel fleet: pipe: %s\n", strerror(errno));
		return -1;
	}
	st->rd = p[0];
	st->wr = p[1];
	fcntl(st->rd, F_SETFL, O_NONBLOCK);
	fcntl(st->wr, F_SETFL, O_NONBLOCK); /* a VM never blocks on a full pipe */
	fcntl(st->wr, F_SETPIPE_SZ, 1 << 20); /* best effort: the default 64 KiB works too */
	st->window = a->parallel;
	errno = 0;
	st->nice0 = getpriority(PRIO_PROCESS, 0);
	if (errno)
		st->nice0 = 0;
	(void)setpriority(PRIO_PROCESS, 0, st->nice0 - 10); /* best effort (needs CAP_SYS_NICE) */
	return 0;
}

static void starter_close(struct starter *st)
{
	close(st->rd);
	close(st->wr);
	(void)setpriority(PRIO_PROCESS, 0, st->nice0);
}

static int fleet_up(const struct fleet_args *a, const struct vmm_fleet *f)
{
	uint64_t t0 = now_ns(), deadline = t0 + (uint64_t)a->timeout_ms * 1000000ull;
	pid_t *pids = calloc((size_t)f->nr, sizeof(pid_t));
	struct starter st;
	char err[512];
	int nstart = 0, nprot = 0, bad = 0;

	if (!pids)
		return DOPPEL_EXIT_FAIL;
	for (int i = 0; i < f->nr; i++) { /* nothing may already run under these names */
		struct json_object *r = NULL;

		if (selected(a, f, i) && call(f, i, "status", NULL, 1000, &r, err, sizeof(err)) == 0) {
			fprintf(stderr, "doppel fleet: %s is already running\n", f->vm[i].o.name);
			bad++;
		}
		json_object_put(r);
	}
	if (bad || (mkdir(f->runtime_dir, 0755) && errno != EEXIST)) {
		if (!bad)
			fprintf(stderr, "doppel fleet: cannot create %s: %s\n", f->runtime_dir,
				strerror(errno));
		free(pids);
		return DOPPEL_EXIT_FAIL;
	}
	if (starter_open(a, &st)) {
		free(pids);
		return DOPPEL_EXIT_FAIL;
	}
	for (int w = 0; w < f->nr_waves; w++)
		if (start_wave(a, f, w, pids, &st, deadline)) {
			starter_close(&st);
			stop_all(a, f, a->timeout_ms, true);
			free(pids);
			return DOPPEL_EXIT_FAIL;
		}
	starter_close(&st);
	free(pids);
	for (int i = 0; i < f->nr; i++) {
		nstart += selected(a, f, i);
		nprot += f->vm[i].prot.present;
	}
	if (!a->standby && nprot && protect_all(f, a->timeout_ms)) {
		stop_all(a, f, a->timeout_ms, true);
		return DOPPEL_EXIT_FAIL;
	}
	printf("fleet %s: %d VM(s) %s in %.2f s%s\n", a->file, nstart,
	       a->standby ? "held as standbys" : "running", (double)(now_ns() - t0) / 1e9,
	       !a->standby && nprot ? " (protected where the file says)" : "");
	return fflush(stdout) ? DOPPEL_EXIT_FAIL : DOPPEL_EXIT_OK;
}

static bool pid_alive(pid_t pid)
{
	return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

/* Stop every selected VM that answers, then wait for its process to end. */
static int stop_all(const struct fleet_args *a, const struct vmm_fleet *f, int timeout_ms, bool quiet)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ull;
	pid_t *pids = calloc((size_t)f->nr, sizeof(pid_t));
	char err[512];
	int stopped = 0, left;

	if (!pids)
		return DOPPEL_EXIT_FAIL;
	for (int i = 0; i < f->nr; i++) {
		struct json_object *r = NULL, *pid;

		if (!selected(a, f, i) || call(f, i, "status", NULL, 2000, &r, err, sizeof(err)))
			goto next;
		if (json_object_object_get_ex(r, "pid", &pid))
			pids[i] = (pid_t)json_object_get_int(pid);
		json_object_put(r);
		r = NULL;
		if (call(f, i, "stop", NULL, 2000, &r, err, sizeof(err)) == 0)
			stopped++;
		else if (!quiet)
			fprintf(stderr, "doppel fleet: cannot stop %s: %s\n", f->vm[i].o.name, err);
	next:
		json_object_put(r);
	}
	do {
		left = 0;
		for (int i = 0; i < f->nr; i++) {
			waitpid(pids[i], NULL, WNOHANG); /* our own children (fleet up failing) */
			left += pid_alive(pids[i]);
		}
		if (left)
			nanosleep(&(struct timespec){.tv_nsec = 10000000}, NULL);
	} while (left && now_ns() < deadline);
	free(pids);
	if (left) {
		fprintf(stderr, "doppel fleet: %d VM process(es) still running after %d ms\n", left,
			timeout_ms);
		return DOPPEL_EXIT_FAIL;
	}
	if (!quiet)
		printf("fleet %s: %d VM(s) stopped\n", a->file, stopped);
	return DOPPEL_EXIT_OK;
}

static int fleet_status(const struct fleet_args *a, const struct vmm_fleet *f)
{
	struct json_object *out = json_object_new_object(), *arr = json_object_new_array();
	char err[512];

	json_object_object_add(out, "vms", arr);
	for (int i = 0; i < f->nr; i++) {
		struct json_object *r = NULL, *e = json_object_new_object(), *st = NULL, *role = NULL;

		if (!selected(a, f, i)) {
			json_object_put(e);
			continue;
		}
		if (call(f, i, "status", NULL, 2000, &r, err, sizeof(err)) == 0) {
			json_object_object_get_ex(r, "state", &st);
			json_object_object_get_ex(r, "role", &role);
		}
		json_object_object_add(e, "name", json_object_new_string(f->vm[i].o.name));
		json_object_object_add(e, "state",
				       st ? json_object_get(st) : json_object_new_string("stopped"));
		json_object_object_add(e, "role", role ? json_object_get(role) : NULL);
		json_object_array_add(arr, e);
		if (!a->json)
			printf("%-24s %-10s %s\n", f->vm[i].o.name,
			       st ? json_object_get_string(st) : "stopped",
			       role ? json_object_get_string(role) : "-");
		json_object_put(r);
	}
	if (a->json)
		printf("%s\n", json_object_to_json_string_ext(out, JSON_C_TO_STRING_PLAIN));
	json_object_put(out);
	return fflush(stdout) ? DOPPEL_EXIT_FAIL : DOPPEL_EXIT_OK;
}

static int parse(struct fleet_args *a, int argc, char **argv)
{
	static const struct option opts[] = {
		{"standby", no_argument, NULL, 'S'},
		{"json", no_argument, NULL, 'j'},
		{"runtime-dir", required_argument, NULL, 'R'},
		{"timeout", required_argument, NULL, 't'},
		{"parallel", required_argument, NULL, 'p'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	uint64_t v;
	int c;

	*a = (struct fleet_args){.timeout_ms = 60000,
				 .parallel = FLEET_PARALLEL_PER_CPU * (int)sysconf(_SC_NPROCESSORS_ONLN)};
	if (a->parallel < FLEET_PARALLEL_PER_CPU)
		a->parallel = FLEET_PARALLEL_PER_CPU;
	if (doppel_opts_begin(argc, argv, opts))
		return DOPPEL_EXIT_OK;
	while ((c = getopt_long(argc, argv, ":jt:p:h", opts, NULL)) != -1) {
		if (c == 'h') {
			usage(stdout);
			return DOPPEL_EXIT_OK;
		} else if (c == 'S') {
			a->standby = true;
		} else if (c == 'R') {
			if (optarg[0] != '/' || strlen(optarg) > 100)
				return doppel_usage_error(
					"fleet", "bad --runtime-dir '%s' (an absolute path)", optarg);
			a->runtime_dir = optarg;
		} else if (c == 'j') {
			a->json = true;
		} else if (c == 'p') {
			if (parse_uint(optarg, 1, FLEET_MAX_VMS, &v))
				return doppel_usage_error("fleet",
							  "bad --parallel '%s' (VMs starting at once, 1..%d)",
							  optarg, FLEET_MAX_VMS);
			a->parallel = (int)v;
		} else if (c == 't') {
			if (parse_uint(optarg, 1, 3600000, &v))
				return doppel_usage_error(
					"fleet", "bad --timeout '%s' (milliseconds, 1..3600000)", optarg);
			a->timeout_ms = (int)v;
		} else {
			return doppel_bad_option("fleet", c, argv);
		}
	}
	if (argc - optind != 2)
		return doppel_usage_error("fleet", "expected up|down|status|check FILE");
	a->verb = argv[optind];
	a->file = argv[optind + 1];
	if (strcmp(a->verb, "up") && strcmp(a->verb, "down") && strcmp(a->verb, "status") &&
	    strcmp(a->verb, "check"))
		return doppel_usage_error("fleet", "unknown fleet verb '%s' (up, down, status or check)",
					  a->verb);
	return -1;
}

int cmd_fleet(int argc, char **argv)
{
	struct fleet_args a;
	struct vmm_fleet f;
	size_t errlen = 1 << 20;
	char *err = malloc(errlen);
	int rc = parse(&a, argc, argv), n = 0;

	if (rc >= 0 || !err) {
		free(err);
		return rc >= 0 ? rc : DOPPEL_EXIT_FAIL;
	}
	/* up and check: the host must have the memory; down and status: the fleet may be using it */
	if (!strcmp(a.verb, "up") || !strcmp(a.verb, "check"))
		rc = vmm_fleet_load(a.file, &f, err, errlen, &n);
	else
		rc = vmm_fleet_load_running(a.file, &f, err, errlen, &n);
	if (rc) {
		for (char *line = strtok(err, "\n"); line; line = strtok(NULL, "\n"))
			fprintf(stderr, "doppel fleet: %s: %s\n", a.file, line);
		fprintf(stderr, "doppel fleet: %s refused (%d problem%s), nothing started\n", a.file, n,
			n == 1 ? "" : "s");
		free(err);
		return DOPPEL_EXIT_FAIL;
	}
	free(err);
	if (a.runtime_dir)
		snprintf(f.runtime_dir, sizeof(f.runtime_dir), "%s", a.runtime_dir);
	if (!strcmp(a.verb, "check")) {
		printf("fleet %s: %d VM(s), valid\n", a.file, f.nr);
		rc = DOPPEL_EXIT_OK;
	} else if (!strcmp(a.verb, "up")) {
		rc = fleet_up(&a, &f);
	} else if (!strcmp(a.verb, "down")) {
		rc = stop_all(&a, &f, a.timeout_ms, false);
	} else {
		rc = fleet_status(&a, &f);
	}
	vmm_fleet_free(&f);
	return rc;
}
