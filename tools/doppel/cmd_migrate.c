/* cmd_migrate.c — `doppel migrate NAME --to ADDR:PORT`: live-migrate a running VM, with progress on a tty. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "common/parse.h"
#include "tools/common/ctl_client.h"
#include "tools/doppel/doppel.h"

#define MIGRATE_TIMEOUT_MS (10 * 60 * 1000)

static void usage(FILE *f)
{
	fprintf(f,
		"usage: doppel migrate NAME --to ADDR:PORT [--downtime-ms N] [--max-bandwidth RATE]\n"
		"                      [--compress auto|zstd|none] [--postcopy[=now|round|auto]]\n"
		"                      [--postcopy-min-pct N] [--delta-cache SIZE] [--shared-disks] "
		"[--json]\n"
		"                      [--control PATH] [--timeout-ms MS] [--tls-dir DIR [--tls-peer-name "
		"NAME]]\n"
		"       doppel migrate NAME --resume-source\n"
		"\n"
		"Live-migrate a running VM to a `doppel run --incoming ADDR:PORT` process. On success the\n"
		"source VM exits and the destination runs; on failure the source keeps running. If the\n"
		"link dies after the source committed (sent GO) it stays paused (switchover uncertain):\n"
		"stop it if the destination runs, else resume it with --resume-source.\n"
		"\n"
		"  --resume-source       resume a source left paused by an uncertain switchover; only\n"
		"                        when the destination does not run (it exits when GO is lost)\n"
		"  --to ADDR:PORT        the destination ([IPv6]:PORT for IPv6)\n"
		"  --downtime-ms N       downtime target in ms (default 10)\n"
		"  --max-bandwidth RATE  cap on the wire, bytes/s with K/M/G suffixes (default unlimited)\n"
		"  --compress MODE       auto (default: measure both, keep the faster), zstd or none\n"
		"  --postcopy[=WHEN]     post-copy: the destination runs first, pages follow on demand;\n"
		"                        round (default: after one full pre-copy round), now (no\n"
		"                        pre-copy), auto\n"
		"                        (pre-copy; post-copy instead of throttling once it stalls).\n"
		"                        If the link dies during post-copy the VM is LOST (neither host\n"
		"                        has all of it); the source stays paused and cannot resume\n"
		"  --postcopy-min-pct N  auto: switch only when the destination holds N %% of RAM\n"
		"                        current (default 50)\n"
		"  --tls-dir DIR         TLS 1.3 with mutual authentication: DIR holds ca.pem, cert.pem,\n"
		"                        key.pem (docs/security.md); without it the stream is plaintext\n"
		"  --tls-peer-name NAME  the destination's certificate must name NAME "
		"(SAN/CN)\n"
		"  --shared-disks        the destination opens the same disk images (shared storage):\n"
		"                        no disk block is sent; the source flushes them and hands\n"
		"                        each image's lock to the destination at the switchover\n"
		"  --delta-cache SIZE    from round 2 on, send a changed page as its XOR against\n"
		"                        the copy sent last (cache of SIZE bytes, K/M/G; default 0 = "
		"off)\n" DOPPEL_CTL_OPTHELP_BASE
		"  -t, --timeout-ms MS  the destination's I/O timeout during the migration (default 5000;\n"
		"                       --timeout is the old name); the command itself waits up to 10 min\n");
}

struct progress {
	const char *path;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	bool printed;
};

/* Poll status on a second connection and draw one line on the terminal. */
static void *progress_main(void *arg)
{
	struct progress *p = arg;
	struct json_object *req = json_object_new_object(), *rep, *mg, *j;
	char err[256];

	json_object_object_add(req, "cmd", json_object_new_string("status"));
	pthread_mutex_lock(&p->lock);
	while (!p->done) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 200000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&p->cond, &p->lock, &ts);
		if (p->done)
			break;
		pthread_mutex_unlock(&p->lock);
		rep = NULL;
		if (ctl_call(p->path, req, &rep, 1000, err, sizeof(err)) == 0 &&
		    json_object_object_get_ex(rep, "migration", &mg)) {
			double v[4] = {0};
			const char *keys[4] = {"round", "pages_left", "rate_mbps", "est_downtime_ms"};
			for (int i = 0; i < 4; i++)
				if (json_object_object_get_ex(mg, keys[i], &j))
					v[i] = json_object_get_double(j);
			double thr = json_object_object_get_ex(mg, "throttle_pct", &j)
					     ? json_object_get_double(j)
					     : 0;
			pthread_mutex_lock(&p->lock);
			if (!p->done) {
				fprintf(stderr,
					"\r\033[Kround %.0f  pages left %.0f  %.0f MB/s  est. downtime %.1f "
					"ms  throttle %.0f%%",
					v[0], v[1], v[2], v[3] > 1e6 ? 0 : v[3], thr);
				p->printed = true;
			}
			pthread_mutex_unlock(&p->lock);
		}
		json_object_put(rep);
		pthread_mutex_lock(&p->lock);
	}
	pthread_mutex_unlock(&p->lock);
	json_object_put(req);
	return NULL;
}

/* --resume-source: {"cmd":"migrate","resume_source":true}, answered once the VM runs again. */
static int resume_source(struct doppel_ctl_opts *o, const char *to)
{
	struct json_object *req, *reply = NULL;
	char err[512];
	int rc;

	if (to)
		return doppel_usage_error("migrate", "--resume-source takes no --to");
	req = json_object_new_object();
	json_object_object_add(req, "cmd", json_object_new_string("migrate"));
	json_object_object_add(req, "resume_source", json_object_new_boolean(1));
	rc = ctl_call(o->path, req, &reply, o->timeout_ms, err, sizeof(err));
	json_object_put(req);
	rc = (int)ctl_outcome(rc, reply);
	json_object_put(reply);
	if (rc)
		return doppel_error("migrate", rc, "%s", err);
	if (!o->json)
		printf("resumed %s on the source\n", o->label);
	else
		printf("{\"resumed\": true}\n");
	return fflush(stdout) ? DOPPEL_EXIT_FAIL : DOPPEL_EXIT_OK;
}

int cmd_migrate(int argc, char **argv)
{
	static const struct option longopts[] = {
		DOPPEL_CTL_LONGOPTS,
		{"to", required_argument, NULL, 'T'},
		{"downtime-ms", required_argument, NULL, 'D'},
		{"max-bandwidth", required_argument, NULL, 'B'},
		{"compress", required_argument, NULL, 'Z'},
		{"resume-source", no_argument, NULL, 'R'},
		{"postcopy", optional_argument, NULL, 'P'},
		{"postcopy-min-pct", required_argument, NULL, 'M'},
		{"tls-dir", required_argument, NULL, 0x100},
		{"tls-peer-name", required_argument, NULL, 0x101},
		{"delta-cache", required_argument, NULL, 'C'},
		{"shared-disks", no_argument, NULL, 0x102},
		{0},
	};
	struct doppel_ctl_opts o;
	const char *to = NULL, *compress = "auto", *tls_dir = NULL, *tls_peer = NULL;
	uint64_t downtime = 10, bw = 0, min_pct = 50, dcache = 0;
	const char *postcopy = NULL;
	bool min_pct_given = false;
	bool timeout_given = false, resume = false, shared_disks = false;
	struct json_object *req, *reply = NULL;
	char err[512];
	int c, rc;

	doppel_ctl_opts_init(&o, "migrate");
	if (doppel_opts_begin(argc, argv, longopts))
		return DOPPEL_EXIT_OK;
	while ((c = getopt_long(argc, argv, DOPPEL_CTL_OPTSTRING, longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			usage(stdout);
			return DOPPEL_EXIT_OK;
		case '?':
		case ':':
			return doppel_bad_option("migrate", c, argv);
		case 'T':
			to = optarg;
			break;
		case 'R':
			resume = true;
			break;
		case 'P':
			postcopy = optarg ? optarg : "round";
			if (strcmp(postcopy, "now") && strcmp(postcopy, "round") && strcmp(postcopy, "auto"))
				return doppel_usage_error(
					"migrate", "bad --postcopy '%s' (now, round or auto)", postcopy);
			break;
		case 'M':
			if (parse_uint(optarg, 0, 100, &min_pct))
				return doppel_usage_error("migrate", "bad --postcopy-min-pct '%s' (0..100)",
							  optarg);
			min_pct_given = true;
			break;
		case 0x100:
			tls_dir = optarg;
			break;
		case 0x101:
			tls_peer = optarg;
			break;
		case 0x102:
			shared_disks = true;
			break;
		case 'C':
			if (parse_size(optarg, &dcache) || dcache > (64ull << 30))
				return doppel_usage_error(
					"migrate", "bad --delta-cache '%s' (bytes, K/M/G, 0..64G)", optarg);
			break;
		case 'D':
			if (parse_uint(optarg, 1, 60000, &downtime))
				return doppel_usage_error("migrate", "bad --downtime-ms '%s' (1..60000)",
							  optarg);
			break;
		case 'B':
			if (parse_size(optarg, &bw) || bw < 1024)
				return doppel_usage_error(
					"migrate", "bad --max-bandwidth '%s' (bytes/s, e.g. 100M)", optarg);
			break;
		case 'Z':
			if (strcmp(optarg, "auto") && strcmp(optarg, "zstd") && strcmp(optarg, "none"))
				return doppel_usage_error("migrate",
							  "bad --compress '%s' (auto, zstd or none)", optarg);
			compress = optarg;
			break;
		default:
			if (c == 't')
				timeout_given = true;
			rc = doppel_ctl_opt(&o, c, optarg);
			if (rc)
				return rc == 1 ? doppel_bad_option("migrate", '?', argv) : rc;
		}
	}
	rc = doppel_ctl_finish(&o, argc, argv);
	if (rc)
		return rc;
	if (resume)
		return resume_source(&o, to);
	if (!to)
		return doppel_usage_error("migrate", "--to ADDR:PORT is required");
	if (min_pct_given && (!postcopy || strcmp(postcopy, "auto")))
		return doppel_usage_error("migrate", "--postcopy-min-pct needs --postcopy=auto");
	req = json_object_new_object();
	json_object_object_add(req, "cmd", json_object_new_string("migrate"));
	json_object_object_add(req, "to", json_object_new_string(to));
	json_object_object_add(req, "downtime_ms", json_object_new_int64((int64_t)downtime));
	json_object_object_add(req, "max_bandwidth", json_object_new_int64((int64_t)bw));
	json_object_object_add(req, "compress", json_object_new_string(compress));
	if (shared_disks)
		json_object_object_add(req, "shared_disks", json_object_new_boolean(1));
	if (dcache)
		json_object_object_add(req, "delta_cache", json_object_new_int64((int64_t)dcache));
	if (timeout_given)
		json_object_object_add(req, "timeout_ms", json_object_new_int(o.timeout_ms));
	if (postcopy) {
		json_object_object_add(req, "postcopy", json_object_new_string(postcopy));
		json_object_object_add(req, "postcopy_min_pct", json_object_new_int64((int64_t)min_pct));
	}
	rc = doppel_add_tls("migrate", req, tls_dir, tls_peer);
	if (rc) {
		json_object_put(req);
		return rc;
	}

	struct progress p = {.path = o.path};
	pthread_t th;
	bool tty = !o.json && isatty(STDOUT_FILENO) && isatty(STDERR_FILENO);
	pthread_mutex_init(&p.lock, NULL);
	pthread_cond_init(&p.cond, NULL);
	if (tty && pthread_create(&th, NULL, progress_main, &p))
		tty = false;
	rc = ctl_call(o.path, req, &reply, MIGRATE_TIMEOUT_MS, err, sizeof(err));
	json_object_put(req);
	if (tty) {
		pthread_mutex_lock(&p.lock);
		p.done = true;
		pthread_cond_signal(&p.cond);
		if (p.printed)
			fprintf(stderr, "\r\033[K");
		pthread_mutex_unlock(&p.lock);
		pthread_join(th, NULL);
	}
	if (rc) {
		rc = (int)ctl_outcome(rc, reply);
		json_object_put(reply);
		return doppel_error("migrate", rc, "%s", err);
	}
	if (o.json) {
		doppel_print_json(reply);
	} else {
		struct json_object *j;
		double v[3] = {0};
		const char *k[3] = {"total_ms", "downtime_ms", "rounds"};
		for (int i = 0; i < 3; i++)
			if (json_object_object_get_ex(reply, k[i], &j))
				v[i] = json_object_get_double(j);
		int64_t wire =
			json_object_object_get_ex(reply, "bytes_wire", &j) ? json_object_get_int64(j) : 0;
		printf("migrated %s to %s in %.1f ms (downtime %.2f ms, %.0f rounds, %.1f MiB on the wire)\n",
		       o.label, to, v[0], v[1], v[2], (double)wire / 1048576.0);
	}
	json_object_put(reply);
	return fflush(stdout) ? DOPPEL_EXIT_FAIL : DOPPEL_EXIT_OK;
}
