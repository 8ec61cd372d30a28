/* cmd_drill.c — `doppel drill NAME`: a failover test end to end on a protected VM, with an RTO/RPO report. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "common/clock.h"
#include "tools/common/ctl_client.h"
#include "tools/doppel/doppel.h"
#include "tools/doppel/roles.h"
#include "tools/kv/kv.h"

static void usage(void)
{
	printf("usage: doppel drill NAME --listen ADDR:PORT [--kind switchover|kill-primary]\n"
	       "                    [--peer-control PATH] [--probe ADDR:PORT] [--control PATH] [--json]\n"
	       "\n"
	       "Run a failover test on a protected VM while it serves, and end protected again (never\n"
	       "two live copies). Run it on the primary's host.\n"
	       "  switchover     `doppel switchover`: the standby becomes primary, this copy its standby\n"
	       "                 on --listen.\n"
	       "  kill-primary   SIGKILL the primary's process, wait for the standby's takeover (via its\n"
	       "                 control socket --peer-control: local, or forwarded, e.g. ssh -L), start a\n"
	       "                 new standby here with the same devices (from the VM's `config`) on\n"
	       "                 --listen, and have the new primary protect to it.\n"
	       "The report: detection and takeover time, client-visible outage (with --probe), epochs and\n"
	       "held output in flight at the failure, RPO (acknowledged writes lost; must be 0) and the\n"
	       "time to re-protect. It is also recorded as a `drill` event in the VM's event log.\n"
	       "--probe ADDR:PORT: the guest's KV service (UDP, doppel-kv protocol): the drill INCRs a\n"
	       "key of its own back to back throughout (50 ms per try, same request ID on retries);\n"
	       "outage = the longest gap between two acknowledged INCRs; RPO = acknowledged INCRs minus\n"
	       "the key's final value.\n"
	       "\n"
	       "  -k, --kind KIND           switchover (default) or kill-primary\n"
	       "  -l, --listen ADDR:PORT    where this host's copy listens as the standby afterwards\n"
	       "  -P, --peer-control PATH   the standby's control socket (kill-primary)\n"
	       "  -b, --probe ADDR:PORT     probe the guest's KV service during the "
	       "drill\n" DOPPEL_CTL_OPTHELP);
}

/* ---- probe: INCR back to back; every ack timestamped ---------------------------------------------- */

struct probe {
	const char *target;
	char key[KV_KEY_MAX + 1];
	int fd;
	pthread_t th;
	atomic_bool stop;
	uint64_t acked, last_value, t_last_ack, max_gap_ns, gap_start_ns, t_start;
	bool value_ok;
	char err[160];
};

/* One request with retries of the same ID (50 ms apart) until a reply, at most max_tries tries. A
 * request in flight is always finished, also when the drill ends: an INCR that was applied but whose
 * answer was never awaited would count as a write the client does not know about. 0 and the reply,
 * or -1. */
static int probe_op(struct probe *p, enum kv_cmd cmd, uint64_t id, struct kv_reply *rep, int max_tries)
{
	struct kv_req rq = {.id = id, .cmd = cmd};
	char buf[KV_DGRAM_MAX];

	snprintf(rq.key, sizeof(rq.key), "%s", p->key);
	int len = kv_format_request(buf, sizeof(buf), &rq);
	if (len < 0)
		return -1;
	for (int tries = 0; tries < max_tries; tries++) {
		if (send(p->fd, buf, (size_t)len, 0) < 0 && errno != ECONNREFUSED) {
			snprintf(p->err, sizeof(p->err), "send: %s", strerror(errno));
			return -1;
		}
		uint64_t end = now_ns() + 50000000ull;
		while (now_ns() < end) {
			struct timeval tv = {.tv_sec = 0,
					     .tv_usec = (suseconds_t)((end - now_ns()) / 1000) + 1};
			setsockopt(p->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
			char in[KV_DGRAM_MAX];
			ssize_t n = recv(p->fd, in, sizeof(in), 0);
			if (n <= 0)
				break;
			if (!kv_parse_reply(in, (size_t)n, rep) && rep->id == id)
				return 0;
		}
	}
	return -1;
}

static void *probe_main(void *arg)
{
	struct probe *p = arg;
	uint64_t base = kv_id_base();
	struct kv_reply rep;

	for (uint64_t i = 0; !atomic_load(&p->stop); i++) {
		if (probe_op(p, KV_INCR, base + i, &rep, 1200)) { /* a minute without an answer */
			snprintf(p->err, sizeof(p->err), "INCR %llu: no answer for 60 s",
				 (unsigned long long)i);
			break;
		}
		uint64_t now = now_ns(), v;
		if (!rep.ok || kv_parse_u64(rep.text, strlen(rep.text), &v)) {
			snprintf(p->err, sizeof(p->err), "INCR answered %s", rep.text);
			break;
		}
		if (p->t_last_ack && now - p->t_last_ack > p->max_gap_ns) {
			p->max_gap_ns = now - p->t_last_ack;
			p->gap_start_ns = p->t_last_ack;
		}
		p->t_last_ack = now;
		p->acked++;
		p->last_value = v;
	}
	return NULL;
}

static int probe_start(struct probe *p, const char *target)
{
	char err[160];

	memset(p, 0, sizeof(*p));
	p->target = target;
	snprintf(p->key, sizeof(p->key), "drill%d", (int)getpid());
	p->fd = kv_connect(target, err, sizeof(err));
	if (p->fd < 0) {
		fprintf(stderr, "doppel drill: probe %s: %s\n", target, err);
		return -1;
	}
	fcntl(p->fd, F_SETFL, fcntl(p->fd, F_GETFL) & ~O_NONBLOCK); /* kv_connect's is non-blocking */
	p->t_start = now_ns();
	if (pthread_create(&p->th, NULL, probe_main, p)) {
		close(p->fd);
		return -1;
	}
	return 0;
}

/* Stop and check: the key's final value must equal the acknowledged INCRs (RPO 0). */
static void probe_finish(struct probe *p, struct json_object *rep)
{
	struct kv_reply r;
	uint64_t v = 0;

	atomic_store(&p->stop, true);
	pthread_join(p->th, NULL);
	atomic_store(&p->stop, false);
	bool got = !probe_op(p, KV_GET, kv_id_base() + 1000000007ull, &r, 100) && r.ok &&
		   !kv_parse_u64(r.text, strlen(r.text), &v);
	close(p->fd);
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "target", json_object_new_string(p->target));
	json_object_object_add(o, "key", json_object_new_string(p->key));
	json_object_object_add(o, "acked_incr", json_object_new_int64((int64_t)p->acked));
	json_object_object_add(o, "final_value", got ? json_object_new_int64((int64_t)v) : NULL);
	json_object_object_add(o, "outage_ms", json_object_new_double((double)p->max_gap_ns / 1e6));
	if (p->err[0])
		json_object_object_add(o, "error", json_object_new_string(p->err));
	json_object_object_add(rep, "probe", o);
	/* RPO: acknowledged writes that the surviving copy does not have */
	json_object_object_add(rep, "rpo_acked_lost",
			       got ? json_object_new_int64((int64_t)p->acked - (int64_t)v) : NULL);
	json_object_object_add(rep, "outage_ms", json_object_new_double((double)p->max_gap_ns / 1e6));
}

/* ---- kill-primary -------------------------------------------------------------------------------- */

/* Dead: no such process, or a zombie its parent has not reaped yet. */
static bool gone(pid_t pid)
{
	char path[64], st[256];
	FILE *f;

	if (kill(pid, 0) && errno == ESRCH)
		return true;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return true;
	bool z = fgets(st, sizeof(st), f) && strstr(st, ") Z ");
	fclose(f);
	return z;
}

static int wait_gone(pid_t pid, int timeout_ms)
{
	uint64_t t0 = now_ns();

	while (!gone(pid)) {
		if (roles_ms_since(t0) > timeout_ms)
			return -ETIMEDOUT;
		roles_sleep_ms(1);
	}
	return 0;
}

/* Start `doppel run` of the same VM as a standby listening on listen, detached (its own session),
 * output to LOG. Returns its pid or -1. */
static pid_t start_standby(struct json_object *cfg, const char *listen, const char *log)
{
	char *av[64], mem[32], vcpus[16];
	int n = 0;
	struct json_object *a;

	av[n++] = "doppel";
	av[n++] = "run";
	av[n++] = "--name", av[n++] = (char *)roles_str(cfg, "name");
	snprintf(mem, sizeof(mem), "%.0f", roles_num(cfg, "mem", 0));
	snprintf(vcpus, sizeof(vcpus), "%.0f", roles_num(cfg, "vcpus", 1));
	av[n++] = "--mem", av[n++] = mem;
	av[n++] = "--vcpus", av[n++] = vcpus;
	if (*roles_str(cfg, "kernel"))
		av[n++] = "--kernel", av[n++] = (char *)roles_str(cfg, "kernel");
	if (*roles_str(cfg, "cmdline"))
		av[n++] = "--cmdline", av[n++] = (char *)roles_str(cfg, "cmdline");
	av[n++] = "--serial", av[n++] = (char *)roles_str(cfg, "serial");
	av[n++] = "--control", av[n++] = (char *)roles_str(cfg, "control");
	if ((a = roles_get(cfg, "net")) && json_object_is_type(a, json_type_array))
		for (size_t i = 0; i < json_object_array_length(a) && n < 50; i++)
			av[n++] = "--net",
			av[n++] = (char *)json_object_get_string(json_object_array_get_idx(a, i));
	av[n++] = "--standby";
	av[n++] = "--listen", av[n++] = (char *)listen;
	av[n] = NULL;
	pid_t pid = fork();
	if (pid == 0) {
		setsid();
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		int nul = open("/dev/null", O_RDONLY);
		if (fd >= 0)
			dup2(fd, 1), dup2(fd, 2);
		if (nul >= 0)
			dup2(nul, 0);
		execv("/proc/self/exe", av);
		_exit(127);
	}
	return pid;
}

static int fail(const char *fmt, const char *a)
{
	fprintf(stderr, "doppel drill: ");
	fprintf(stderr, fmt, a);
	fputc('\n', stderr);
	return DOPPEL_EXIT_FAIL;
}

static int kill_primary(const struct doppel_ctl_opts *o, const char *peer, const char *listen,
			struct json_object *rep)
{
	struct json_object *cfg = roles_call(o->path, "config", 2000), *st;
	char log[300];

	if (!cfg)
		return fail("%s: no `config` reply (not running?)", o->label);
	if (json_object_array_length(roles_get(cfg, "disk")) > 0) {
		json_object_put(cfg);
		return fail("%s has disks: a kill-primary drill cannot re-create them here", o->label);
	}
	st = roles_call(o->path, "status", 2000);
	pid_t pid = (pid_t)roles_num(st, "pid", 0);
	double ep = roles_num(st, "remus.epoch", 0), acked = roles_num(st, "remus.acked_epoch", 0);
	json_object_object_add(rep, "epochs_in_flight", json_object_new_int64((int64_t)(ep - acked)));
	json_object_object_add(rep, "held_frames",
			       json_object_new_int64((int64_t)roles_num(st, "remus.held_output.frames", 0)));
	json_object_object_add(rep, "held_bytes",
			       json_object_new_int64((int64_t)roles_num(st, "remus.held_output.bytes", 0)));
	json_object_object_add(rep, "acked_epoch_at_failure", json_object_new_int64((int64_t)acked));
	json_object_put(st);
	if (pid <= 1 || pid == getpid()) {
		json_object_put(cfg);
		return fail("%s: no pid in status", o->label);
	}
	uint64_t t_kill = now_ns();
	if (kill(pid, SIGKILL) || wait_gone(pid, 10000)) {
		json_object_put(cfg);
		return fail("cannot kill the primary (pid from status): %s", strerror(errno));
	}
	/* the standby's takeover */
	uint64_t t_run = 0;
	while (!t_run && roles_ms_since(t_kill) < 30000) {
		st = roles_call(peer, "status", 1000);
		if (st && !strcmp(roles_str(st, "remus.role"), "unprotected") &&
		    !strcmp(roles_str(st, "state"), "running"))
			t_run = now_ns();
		if (t_run) {
			json_object_object_add(
				rep, "detect_ms",
				json_object_new_double(roles_num(st, "remus.last_failover.detect_ms", -1)));
			json_object_object_add(
				rep, "decide_ms",
				json_object_new_double(roles_num(st, "remus.last_failover.decide_ms", -1)));
			json_object_object_add(
				rep, "takeover_ms",
				json_object_new_double(roles_num(st, "remus.last_failover.takeover_ms", -1)));
			json_object_object_add(rep, "epoch_taken_over",
					       json_object_new_int64((int64_t)roles_num(
						       st, "remus.last_failover.epoch", -1)));
		}
		json_object_put(st);
		if (!t_run)
			roles_sleep_ms(5);
	}
	if (!t_run) {
		json_object_put(cfg);
		return fail("the standby (%s) did not take over within 30 s", peer);
	}
	json_object_object_add(rep, "kill_to_running_ms",
			       json_object_new_double((double)(t_run - t_kill) / 1e6));
	/* a new standby here, same devices */
	snprintf(log, sizeof(log), "%s.drill.log", roles_str(cfg, "control"));
	uint64_t t_re = now_ns();
	pid_t spid = start_standby(cfg, listen, log);
	json_object_put(cfg);
	if (spid < 0)
		return fail("cannot start the new standby: %s", strerror(errno));
	json_object_object_add(rep, "standby_pid", json_object_new_int(spid));
	json_object_object_add(rep, "standby_log", json_object_new_string(log));
	bool up = false;
	while (!up && roles_ms_since(t_re) < 20000) {
		st = roles_call(o->path, "status", 500);
		up = st && !strcmp(roles_str(st, "remus.role"), "standby");
		json_object_put(st);
		if (!up)
			roles_sleep_ms(10);
	}
	if (!up)
		return fail("the new standby did not come up (see %s)", log);
	/* the new primary protects to it */
	struct json_object *req = json_object_new_object(), *reply = NULL;
	char err[256];
	json_object_object_add(req, "cmd", json_object_new_string("reprotect"));
	json_object_object_add(req, "peer", json_object_new_string(listen));
	int rc = ctl_call(peer, req, &reply, 120000, err, sizeof(err));
	json_object_put(req);
	json_object_put(reply);
	if (rc)
		return fail("re-protect failed: %s", err);
	json_object_object_add(rep, "reprotect_ms", json_object_new_double(roles_ms_since(t_re)));
	return 0;
}

static int switchover(const struct doppel_ctl_opts *o, const char *listen, struct json_object *rep)
{
	struct json_object *req = json_object_new_object(), *reply = NULL;
	char err[256];

	struct json_object *st = roles_call(o->path, "status", 2000);
	double ep = roles_num(st, "remus.epoch", 0), acked = roles_num(st, "remus.acked_epoch", 0);
	json_object_object_add(rep, "epochs_in_flight", json_object_new_int64((int64_t)(ep - acked)));
	json_object_object_add(rep, "held_frames",
			       json_object_new_int64((int64_t)roles_num(st, "remus.held_output.frames", 0)));
	json_object_object_add(rep, "held_bytes",
			       json_object_new_int64((int64_t)roles_num(st, "remus.held_output.bytes", 0)));
	json_object_put(st);
	json_object_object_add(req, "cmd", json_object_new_string("switchover"));
	json_object_object_add(req, "listen", json_object_new_string(listen));
	uint64_t t0 = now_ns();
	int rc = ctl_call(o->path, req, &reply, 30000, err, sizeof(err));
	json_object_put(req);
	if (rc) {
		json_object_put(reply);
		return fail("switchover failed: %s", err);
	}
	json_object_object_add(rep, "detect_ms", json_object_new_double(0)); /* planned: nothing to detect */
	json_object_object_add(rep, "takeover_ms", json_object_new_double(roles_ms_since(t0)));
	json_object_object_add(rep, "guest_parked_ms",
			       json_object_new_double(roles_num(reply, "paused_ms", -1)));
	json_object_object_add(rep, "epoch_taken_over",
			       json_object_new_int64((int64_t)roles_num(reply, "epoch", 0)));
	json_object_object_add(rep, "new_primary", json_object_new_string(roles_str(reply, "new_primary")));
	json_object_put(reply);
	uint64_t t1 = now_ns();
	if (roles_wait_standby_synced(o->path, 120000))
		return fail("%s", "the new primary did not re-protect to this copy within 120 s");
	json_object_object_add(rep, "reprotect_ms", json_object_new_double(roles_ms_since(t1)));
	return 0;
}

static void record(const char *path, struct json_object *rep)
{
	struct json_object *req = json_object_new_object(), *reply = NULL;
	char err[256];

	json_object_object_add(req, "cmd", json_object_new_string("drill_report"));
	json_object_object_add(req, "report", json_object_get(rep));
	if (ctl_call(path, req, &reply, 2000, err, sizeof(err)))
		fprintf(stderr, "doppel drill: recording the report in %s's event log: %s\n", path, err);
	json_object_put(reply);
	json_object_put(req);
}

static void print(const char *label, struct json_object *rep)
{
	printf("drill %s on %s: %s\n", roles_str(rep, "kind"), label, roles_str(rep, "result"));
	printf("  detection        %.1f ms\n", roles_num(rep, "detect_ms", -1));
	printf("  takeover         %.1f ms\n", roles_num(rep, "takeover_ms", -1));
	if (roles_get(rep, "probe"))
		printf("  client outage    %.1f ms (%s, %.0f INCRs acknowledged)\n",
		       roles_num(rep, "outage_ms", -1), roles_str(rep, "probe.target"),
		       roles_num(rep, "probe.acked_incr", 0));
	printf("  in flight        %.0f epochs, %.0f held frames (%.0f bytes)\n",
	       roles_num(rep, "epochs_in_flight", 0), roles_num(rep, "held_frames", 0),
	       roles_num(rep, "held_bytes", 0));
	if (roles_get(rep, "rpo_acked_lost"))
		printf("  RPO              %.0f acknowledged writes lost\n",
		       roles_num(rep, "rpo_acked_lost", -1));
	else
		printf("  RPO              not measured (no --probe)\n");
	printf("  re-protect       %.0f ms\n", roles_num(rep, "reprotect_ms", -1));
}

int cmd_drill(int argc, char **argv)
{
	static const struct option opts[] = {
		DOPPEL_CTL_LONGOPTS,
		{"kind", required_argument, NULL, 'k'},
		{"listen", required_argument, NULL, 'l'},
		{"peer-control", required_argument, NULL, 'P'},
		{"probe", required_argument, NULL, 'b'},
		{0},
	};
	struct doppel_ctl_opts o;
	const char *kind = "switchover", *listen = NULL, *peer = NULL, *probe_addr = NULL;
	struct probe p;
	int c, rc;

	doppel_ctl_opts_init(&o, "drill");
	if (doppel_opts_begin(argc, argv, opts))
		return DOPPEL_EXIT_OK;
	while ((c = getopt_long(argc, argv, DOPPEL_CTL_OPTSTRING "k:l:P:b:", opts, NULL)) != -1) {
		if (c == 'h') {
			usage();
			return DOPPEL_EXIT_OK;
		}
		if (c == '?' || c == ':')
			return doppel_bad_option("drill", c, argv);
		if (c == 'k')
			kind = optarg;
		else if (c == 'l')
			listen = optarg;
		else if (c == 'P')
			peer = optarg;
		else if (c == 'b')
			probe_addr = optarg;
		else if ((rc = doppel_ctl_opt(&o, c, optarg)) == 1)
			return doppel_bad_option("drill", c, argv);
		else if (rc)
			return rc;
	}
	rc = doppel_ctl_finish(&o, argc, argv);
	if (rc)
		return rc;
	bool kill_kind = !strcmp(kind, "kill-primary");
	if (!kill_kind && strcmp(kind, "switchover"))
		return doppel_usage_error("drill", "bad --kind %s (switchover or kill-primary)", kind);
	if (!listen)
		return doppel_usage_error("drill", "--listen ADDR:PORT is required");
	if (kill_kind && !peer)
		return doppel_usage_error("drill", "--kind kill-primary needs --peer-control PATH");
	struct json_object *st = roles_call(o.path, "status", 2000);
	bool prot = st && !strcmp(roles_str(st, "remus.state"), "protected");
	json_object_put(st);
	if (!prot) {
		fprintf(stderr, "doppel drill: %s is not a protected primary\n", o.label);
		return st ? 4 : 3;
	}
	struct json_object *rep = json_object_new_object();
	json_object_object_add(rep, "kind", json_object_new_string(kind));
	if (probe_addr && probe_start(&p, probe_addr)) {
		json_object_put(rep);
		return DOPPEL_EXIT_FAIL;
	}
	if (probe_addr) /* a few acknowledged INCRs before the failure */
		for (int i = 0; i < 200 && p.acked < 5; i++)
			roles_sleep_ms(5);
	uint64_t t0 = now_ns();
	rc = kill_kind ? kill_primary(&o, peer, listen, rep) : switchover(&o, listen, rep);
	json_object_object_add(rep, "total_ms", json_object_new_double(roles_ms_since(t0)));
	if (probe_addr) {
		roles_sleep_ms(100); /* acknowledged INCRs after the re-protect too */
		probe_finish(&p, rep);
	}
	/* with a probe the RPO must be measured, and 0 */
	bool rpo_ok = !probe_addr || (roles_num(rep, "rpo_acked_lost", -1) == 0 && !p.err[0]);
	json_object_object_add(rep, "result",
			       json_object_new_string(rc       ? "failed"
						      : rpo_ok ? "ok"
							       : "rpo-violated"));
	record(o.path, rep);
	if (peer)
		record(peer, rep);
	if (o.json)
		printf("%s\n", json_object_to_json_string_ext(rep, JSON_C_TO_STRING_PLAIN));
	else
		print(o.label, rep);
	json_object_put(rep);
	return rc || !rpo_ok ? DOPPEL_EXIT_FAIL : DOPPEL_EXIT_OK;
}
