/* cmd_protect.c — `doppel protect NAME --peer ADDR:PORT`: start Remus replication of a running VM to a standby. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "common/parse.h"
#include "tools/doppel/doppel.h"

/* clang-format off */
static void usage(void)
{
	printf("usage: doppel protect NAME --peer ADDR:PORT [--mode remus|colo] [--interval-ms MS]\n"
	       "                       [--checkpoint-interval MS] [--compare-timeout MS]\n"
	       "                       [--heartbeat-timeout-ms MS] [--standby-lost release|hold|fence]\n"
	       "                       [--fence-grace-ms MS] [--hold-timeout-ms MS] [--rejoin ADDR:PORT]\n"
	       "                       [--witness URLS [--witness-name N] [--witness-ttl-ms MS]]\n"
	       "                       [--delta-cache SIZE] [--tls-dir DIR [--tls-peer-name NAME]]\n"
	       "                       [--control PATH] [--json] [--timeout-ms MS]\n"
	       "\n"
	       "Protect a running VM with a standby (`doppel run --standby --listen ADDR:PORT`): copy its\n"
	       "memory live, then checkpoint it every --interval-ms; its network output is held until\n"
	       "the standby acknowledged the checkpoint that produced it. Returns once the first\n"
	       "checkpoint is acknowledged. `doppel unprotect` ends protection on purpose (the standby\n"
	       "stays held). If the standby is lost (silent past the heartbeat timeout, connection\n"
	       "lost) --standby-lost decides: release (default) runs on unprotected, releasing held\n"
	       "output: if the standby was only cut off it may take over too (two copies, see\n"
	       "docs/failure-model.md); hold keeps output held until `doppel unprotect`; fence pauses\n"
	       "the guest, drops held output and exits (status 5) after --fence-grace-ms.\n"
	       "Every option in milliseconds ends in -ms; the names without it are the old aliases.\n"
	       "\n"
	       "  -p, --peer ADDR:PORT             the standby ([IPv6]:PORT for IPv6)\n"
	       "  -m, --mode MODE                  remus (default): checkpoint every --interval-ms, hold\n"
	       "                                   output until acknowledged; colo: the standby runs in\n"
	       "                                   lockstep on the same input, output is released as soon\n"
	       "                                   as both VMs produced it, a checkpoint only on divergence\n"
	       "                                   (docs/colo.md)\n"
	       "      --checkpoint-interval MS     colo: periodic checkpoint (default 2000, 1..10000)\n"
	       "      --compare-timeout MS         colo: an unmatched output forces a checkpoint after MS\n"
	       "                                   (default 100)\n"
	       "  -i, --interval-ms MS             checkpoint interval (default 25; alias --interval)\n"
	       "  -H, --heartbeat-timeout-ms MS    silence that counts as a dead peer (default 200;\n"
	       "                                   alias --heartbeat-timeout)\n"
	       "  -l, --standby-lost POLICY        release, hold or fence (default release)\n"
	       "  -g, --fence-grace-ms MS          fenced: exit after MS (default 5000; alias --fence-grace)\n"
	       "      --rejoin ADDR:PORT           fenced: become a standby listening on ADDR:PORT instead\n"
	       "                                   of exiting (the new primary then `reprotect --peer`s it)\n"
	       "      --hold-timeout-ms MS         hold: release held output after MS (default 0: only\n"
	       "                                   on `doppel unprotect`; alias --hold-timeout)\n"
	       "  -w, --witness URLS               etcd client URLs (http://IP:PORT,...): hold the VM's key\n"
	       "                                   and renew it; output leaves only while this copy can\n"
	       "                                   prove it holds it, else the VM fences itself\n"
	       "      --witness-name N             the key's name (default: the VM's name)\n"
	       "      --witness-ttl-ms MS          this copy's validity window (default 1000; a standby\n"
	       "                                   takes the key over MS after the last renewal; alias\n"
	       "                                   --witness-ttl)\n"
	       "      --delta-cache SIZE           cache of last-sent pages: a cached page that changed\n"
	       "                                   little is sent as its XOR against the last copy\n"
	       "                                   (default 64M; 0 turns delta encoding off)\n"
	       "      --tls-dir DIR                TLS 1.3 with mutual authentication: DIR holds ca.pem,\n"
	       "                                   cert.pem, key.pem (docs/security.md); without it the\n"
	       "                                   stream is plaintext and unauthenticated\n"
	       "      --tls-peer-name NAME         the standby's certificate must name NAME (SAN/CN)\n"
	       DOPPEL_CTL_OPTHELP_BASE
	       "  -t, --timeout-ms MS              give up waiting for the first acknowledged checkpoint\n"
	       "                                   after MS (default 120000; alias --timeout)\n");
}
/* clang-format on */

static void print(const struct doppel_ctl_opts *o, struct json_object *reply)
{
	struct json_object *e = NULL, *ms = NULL, *peer = NULL;

	json_object_object_get_ex(reply, "epoch", &e);
	json_object_object_get_ex(reply, "sync_ms", &ms);
	json_object_object_get_ex(reply, "peer", &peer);
	struct json_object *md = NULL;
	json_object_object_get_ex(reply, "mode", &md);
	printf("protected %s -> %s%s (first checkpoint epoch %lld acknowledged after %.0f ms)\n", o->label,
	       peer ? json_object_get_string(peer) : "?",
	       md && !strcmp(json_object_get_string(md), "colo") ? " (colo)" : "",
	       e ? (long long)json_object_get_int64(e) : 0LL, ms ? json_object_get_double(ms) : 0.0);
}

int cmd_protect(int argc, char **argv)
{
	static const struct option opts[] = {
		DOPPEL_CTL_LONGOPTS,
		{"peer", required_argument, NULL, 'p'},
		{"mode", required_argument, NULL, 'm'},
		{"checkpoint-interval", required_argument, NULL, 'C'},
		{"compare-timeout", required_argument, NULL, 'K'},
		{"interval-ms", required_argument, NULL, 'i'},
		{"interval", required_argument, NULL, 'i'},
		{"heartbeat-timeout-ms", required_argument, NULL, 'H'},
		{"heartbeat-timeout", required_argument, NULL, 'H'},
		{"standby-lost", required_argument, NULL, 'l'},
		{"fence-grace-ms", required_argument, NULL, 'g'},
		{"fence-grace", required_argument, NULL, 'g'},
		{"rejoin", required_argument, NULL, 'J'},
		{"hold-timeout-ms", required_argument, NULL, 'O'},
		{"hold-timeout", required_argument, NULL, 'O'},
		{"witness", required_argument, NULL, 'w'},
		{"witness-name", required_argument, NULL, 'X'},
		{"witness-ttl-ms", required_argument, NULL, 'T'},
		{"witness-ttl", required_argument, NULL, 'T'},
		{"delta-cache", required_argument, NULL, 'D'},
		{"tls-dir", required_argument, NULL, 0x100},
		{"tls-peer-name", required_argument, NULL, 0x101},
		{0},
	};
	struct doppel_ctl_opts o;
	struct json_object *req;
	const char *peer = NULL, *lost = NULL, *witness = NULL, *wname = NULL, *tls_dir = NULL,
		   *tls_peer = NULL, *mode = NULL;
	uint64_t civ = 0, cto = 0;
	uint64_t interval = 25, timeout = 200, grace = 5000, wttl = 1000, hold = 0, dcache = 0;
	bool have_dcache = false;
	const char *rejoin = NULL;
	int c, rc;

	doppel_ctl_opts_init(&o, "protect");
	o.timeout_ms = 120000; /* the first full copy takes a while */
	if (doppel_opts_begin(argc, argv, opts))
		return DOPPEL_EXIT_OK;
	while ((c = getopt_long(argc, argv, DOPPEL_CTL_OPTSTRING "p:i:H:l:g:w:m:", opts, NULL)) != -1) {
		if (c == 'h') {
			usage();
			return DOPPEL_EXIT_OK;
		}
		if (c == '?' || c == ':')
			return doppel_bad_option("protect", c, argv);
		if (c == 'p') {
			peer = optarg;
		} else if (c == 'm') {
			if (strcmp(optarg, "remus") && strcmp(optarg, "colo"))
				return doppel_usage_error("protect", "bad --mode '%s' (remus or colo)",
							  optarg);
			mode = optarg;
		} else if (c == 'C') {
			if (parse_uint(optarg, 1, 10000, &civ))
				return doppel_usage_error(
					"protect", "bad --checkpoint-interval '%s' (milliseconds, 1..10000)",
					optarg);
		} else if (c == 'K') {
			if (parse_uint(optarg, 1, 60000, &cto))
				return doppel_usage_error(
					"protect", "bad --compare-timeout '%s' (milliseconds, 1..60000)",
					optarg);
		} else if (c == 'i') {
			if (parse_uint(optarg, 1, 10000, &interval))
				return doppel_usage_error(
					"protect", "bad --interval-ms '%s' (milliseconds, 1..10000)", optarg);
		} else if (c == 'H') {
			if (parse_uint(optarg, 20, 60000, &timeout))
				return doppel_usage_error(
					"protect",
					"bad --heartbeat-timeout-ms '%s' (milliseconds, 20..60000)", optarg);
		} else if (c == 'l') {
			if (strcmp(optarg, "release") && strcmp(optarg, "hold") && strcmp(optarg, "fence"))
				return doppel_usage_error("protect",
							  "bad --standby-lost '%s' (release, hold or fence)",
							  optarg);
			lost = optarg;
		} else if (c == 0x100) {
			tls_dir = optarg;
		} else if (c == 0x101) {
			tls_peer = optarg;
		} else if (c == 'w') {
			witness = optarg;
		} else if (c == 'X') {
			wname = optarg;
		} else if (c == 'T') {
			if (parse_uint(optarg, 100, 600000, &wttl))
				return doppel_usage_error("protect",
							  "bad --witness-ttl-ms '%s' (milliseconds)", optarg);
		} else if (c == 'O') {
			if (parse_uint(optarg, 0, 86400000, &hold))
				return doppel_usage_error(
					"protect", "bad --hold-timeout-ms '%s' (milliseconds)", optarg);
		} else if (c == 'D') {
			if (parse_size(optarg, &dcache) || dcache > (64ull << 30))
				return doppel_usage_error(
					"protect", "bad --delta-cache '%s' (bytes, K/M/G, 0..64G)", optarg);
			have_dcache = true;
		} else if (c == 'J') {
			rejoin = optarg;
		} else if (c == 'g') {
			if (parse_uint(optarg, 0, 3600000, &grace))
				return doppel_usage_error("protect",
							  "bad --fence-grace-ms '%s' (milliseconds)", optarg);
		} else if ((rc = doppel_ctl_opt(&o, c, optarg)) == 1) {
			return doppel_bad_option("protect", c, argv);
		} else if (rc) {
			return rc;
		}
	}
	rc = doppel_ctl_finish(&o, argc, argv);
	if (rc)
		return rc;
	if (!peer || !*peer)
		return doppel_usage_error("protect", "missing --peer ADDR:PORT");
	bool colo = mode && !strcmp(mode, "colo");
	if (!colo && (civ || cto))
		return doppel_usage_error("protect",
					  "--checkpoint-interval and --compare-timeout need --mode colo");
	req = json_object_new_object();
	json_object_object_add(req, "cmd", json_object_new_string("protect"));
	if (mode)
		json_object_object_add(req, "mode", json_object_new_string(mode));
	if (civ)
		json_object_object_add(req, "checkpoint_interval_ms", json_object_new_int((int)civ));
	if (cto)
		json_object_object_add(req, "compare_timeout_ms", json_object_new_int((int)cto));
	json_object_object_add(req, "peer", json_object_new_string(peer));
	json_object_object_add(req, "interval_ms", json_object_new_int((int)interval));
	json_object_object_add(req, "heartbeat_timeout_ms", json_object_new_int((int)timeout));
	if (lost)
		json_object_object_add(req, "standby_lost", json_object_new_string(lost));
	json_object_object_add(req, "fence_grace_ms", json_object_new_int((int)grace));
	if (rejoin)
		json_object_object_add(req, "rejoin", json_object_new_string(rejoin));
	json_object_object_add(req, "hold_timeout_ms", json_object_new_int((int)hold));
	if (have_dcache)
		json_object_object_add(req, "delta_cache", json_object_new_int64((int64_t)dcache));
	if (witness) {
		json_object_object_add(req, "witness", json_object_new_string(witness));
		json_object_object_add(req, "witness_ttl_ms", json_object_new_int((int)wttl));
		if (wname)
			json_object_object_add(req, "witness_name", json_object_new_string(wname));
	}
	rc = doppel_add_tls("protect", req, tls_dir, tls_peer);
	if (rc) {
		json_object_put(req);
		return rc;
	}
	return doppel_ctl_run(&o, req, print);
}
