/* cmd_run.c — `doppel run`: boot a VM in the foreground until it stops; see usage() for its exit codes. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "migrate/migrate.h"
#include "replication/remus.h"
#include "replication/snapshot.h"
#include "common/log.h"
#include "common/parse.h"
#include "vmm/config.h"
#include "vmm/vmm.h"
#include "vmm/sandbox.h"
#include "tools/doppel/doppel.h"

/* clang-format off */
static void usage(FILE *f)
{
	fprintf(f,
		"usage: doppel run --kernel FILE | --restore SNAPSHOT | --config FILE [--name NAME] [--mem SIZE]\n"
		"                  [--vcpus N]\n"
		"                  [--cmdline STR] [--serial stdio|file:PATH|none] [--control PATH]\n"
		"                  [--net tap=IFNAME[,bridge=BR][,mac=52:54:..]]...\n"
		"                  [--disk path=FILE[,readonly][,id=NAME]]...\n"
		"                  [--standby --listen ADDR:PORT [--failover auto|manual] [--fence-cmd CMD]\n"
		"                   | --incoming ADDR:PORT]\n"
		"                  [--tls-dir DIR [--tls-peer-name NAME]] [--accept-any-peer]\n"
		"                  [--control-group GROUP] [--no-sandbox | --sandbox-log]\n"
		"                  [--log-level error|warn|info|debug] [--log-json FILE]\n"
		"                  [--log stderr|journal] [--event-log PATH|none] [--metrics ADDR:PORT]\n"
		"                  [--exit-status-file FILE] [--ready-fd FD]\n"
		"\n"
		"Run a VM in the foreground; SIGINT/SIGTERM or `doppel stop NAME` stop it cleanly. Under\n"
		"systemd (Type=notify) it reports READY=1 once its control socket accepts requests and\n"
		"its vCPUs run (or are held: --standby, --incoming).\n"
		"Exit status: 0 the guest exited 0, or the VM was stopped or migrated away; 1 doppel failed;\n"
		"2 bad command line; 5 the VM fenced itself; 6 the guest exited with a nonzero status\n"
		"(the byte it wrote to port 0x501: see --exit-status-file).\n"
		"\n"
		"  --config FILE    the VM from a JSON config file (docs/config.md); the other options\n"
		"                   override its values (--net or --disk replace all of the file's). With\n"
		"                   --standby the standby listens on protection.listen (default\n"
		"                   protection.peer) and takes failover, fence_cmd and witness from it\n"
		"  --kernel FILE    PVH ELF kernel (an ELF with a XEN_ELFNOTE_PHYS32_ENTRY note)\n"
		"  --restore FILE   continue from a snapshot (`doppel snapshot`); --mem and --vcpus\n"
		"                   default to the snapshot's and must match it when given\n"
		"  --name NAME      VM name (default vm); names the control socket\n"
		"  --mem SIZE       guest RAM, e.g. 256M, 2G (default 256M; 2M multiple, up to 64G)\n"
		"  --vcpus N        vCPUs, one thread each (default 1, max %d)\n"
		"  --cmdline STR    guest command line, e.g. \"work=dirty ws=64M pi=1000\"\n"
		"  --serial WHERE   console: stdio (default), file:PATH, or none\n"
		"  --control PATH   control socket (default /run/doppel/NAME.sock), mode 0660; only root\n"
		"                   (and this process's user) may issue commands\n"
		"  --control-group GROUP  members of GROUP may use the control socket too\n"
		"  --no-sandbox     debugging: no seccomp filter, no capability drop (default: after\n"
		"                   set-up only the system calls listed in vmm/sandbox.c are allowed,\n"
		"                   any other kills the process; docs/security.md)\n"
		"  --sandbox-log    the same filter, but unlisted calls are only logged (dmesg)\n"
		"  --net SPEC       virtio-net device backed by a tap (repeatable)\n"
		"  --disk SPEC      virtio-blk disk on a raw image file or block device (repeatable);\n"
		"                   readonly: writes fail with IOERR; id=NAME: its GET_ID serial\n"
		"  --standby        hold a replica for a primary (`doppel protect`); runs no vCPUs until\n"
		"                   failover. Needs --listen\n"
		"  --listen ADDR:PORT  standby: accept the primary's checkpoints here ([IPv6]:PORT)\n"
		"  --failover POLICY  standby: auto (default: take over when the primary is lost) or\n"
		"                   manual (report it and wait for `doppel failover`)\n"
		"  --fence-cmd CMD  standby: run CMD (sh -c) before a takeover; take over only if it\n"
		"                   exits 0 within 120 s (a site's STONITH; it runs off the event loop:\n"
		"                   status answers meanwhile). Without it and without manual failover\n"
		"                   a network partition can leave two running copies (docs/failure-model.md)\n"
		"  --witness URLS   standby: etcd client URLs (http://IP:PORT,...): take over only after\n"
		"                   acquiring the VM's key, i.e. after the primary's lease expired\n"
		"  --witness-name N the key's name (default: this VM's name; the primary's must match)\n"
		"  --witness-ttl-ms MS  lease TTL of this copy once it took over (default 1000; alias\n"
		"                   --witness-ttl)\n"
		"  --incoming ADDR:PORT  wait for a live migration (`doppel migrate`), then run\n"
		"  --tls-dir DIR    standby/incoming: TLS 1.3 with mutual authentication; DIR holds\n"
		"                   ca.pem, cert.pem, key.pem (docs/security.md). Without it the\n"
		"                   stream is plaintext and unauthenticated (said once in the log)\n"
		"  --tls-peer-name NAME  accept only a peer whose certificate names NAME (SAN/CN)\n"
		"  --accept-any-peer  standby: accept a new primary of another identity (certificate\n"
		"                   name; the IP address without TLS) after the first one's checkpoint\n"
		"  --log-level LVL  runtime messages up to LVL: error, warn, info (default) or debug,\n"
		"                   one line each on stderr: doppel: [SECONDS] LEVEL COMPONENT VM: TEXT\n"
		"  --log-json FILE  also append each message to FILE as a JSON line (keys t, wall, level,\n"
		"                   component, vm, msg); the stderr lines stay\n"
		"  --log WHERE      stderr (default) or journal (the systemd journal, with fields\n"
		"                   PRIORITY, DOPPEL_COMPONENT and DOPPEL_VM; nothing on stderr)\n"
		"  --event-log PATH the VM's event log, JSON lines appended (default: the control\n"
		"                   socket's path with .events.jsonl for .sock, or\n"
		"                   /var/lib/doppel/NAME/events.jsonl); none: in memory only\n"
		"  --metrics ADDR:PORT  serve Prometheus metrics at /metrics, a status page at /\n"
		"                   and its JSON at /status.json over HTTP ([IPv6]:PORT for IPv6)\n"
		"  --exit-status-file FILE  when the guest ends the VM, write its exit status (0-255) to\n"
		"                   FILE as one decimal line; untouched when the host stopped the VM\n"
		"  --ready-fd FD    once the control socket answers and the vCPUs run (or are held),\n"
		"                   write the VM's name and a newline to the inherited descriptor FD\n"
		"                   (one write: a pipe shared by many VMs keeps each line whole) and\n"
		"                   close it; `doppel fleet up` waits on this\n"
		"  --help           show this help\n",
		HV_MAX_VCPUS);
}
/* clang-format on */

enum {
	OPT_TLS_DIR = 0x100,
	OPT_TLS_PEER,
	OPT_ANY_PEER,
	OPT_CTL_GROUP,
	OPT_NO_SANDBOX,
	OPT_SANDBOX_LOG,
	OPT_EXIT_FILE,
	OPT_READY_FD
};
static void notify_ready(struct vmm *v, void *opaque);

/* What the command line asked for. */
struct run_args {
	struct vmm_opts o;
	const char *listen, *incoming, *log_json, *fence_cmd, *failover, *witness, *witness_name;
	bool log_journal;
	const char *tls_dir, *tls_peer_name;
	const char *exit_status_file;
	uint64_t witness_ttl;
	int ready_fd; /* --ready-fd: -1 none */
	enum log_level log_level;
	bool standby, accept_any_peer;
	bool have_cfg, net_flag, disk_flag, level_flag;
	struct vmm_config cfg; /* --config FILE */
};

static int bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad_usage(const char *fmt, ...)
{
	va_list ap;

	fputs("doppel run: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 2;
}

/* One option into a. Returns -1 to go on, else the exit status (2: usage error, 0: --help). */
static int parse_opt(struct run_args *a, int c, const char *arg, const char *optname)
{
	struct vmm_opts *o = &a->o;
	uint64_t n;

	switch (c) {
	case 'k':
		o->kernel = arg;
		break;
	case 'r':
		o->restore = arg;
		break;
	case 'S':
		a->standby = true;
		break;
	case 'L':
		a->listen = arg;
		break;
	case 'I':
		a->incoming = arg;
		break;
	case 'F':
		if (strcmp(arg, "auto") && strcmp(arg, "manual"))
			return bad_usage("bad --failover '%s' (auto or manual)", arg);
		a->failover = arg;
		break;
	case 'K':
		a->fence_cmd = arg;
		break;
	case 'W':
		a->witness = arg;
		break;
	case 'X':
		a->witness_name = arg;
		break;
	case 'T':
		if (parse_uint(arg, 100, 600000, &a->witness_ttl))
			return bad_usage("bad --witness-ttl-ms '%s' (milliseconds, 100..600000)", arg);
		break;
	case OPT_TLS_DIR:
		a->tls_dir = arg;
		break;
	case OPT_TLS_PEER:
		a->tls_peer_name = arg;
		break;
	case OPT_ANY_PEER:
		a->accept_any_peer = true;
		break;
	case OPT_NO_SANDBOX:
		o->sandbox = VMM_SANDBOX_OFF;
		break;
	case OPT_SANDBOX_LOG:
		o->sandbox = VMM_SANDBOX_LOG;
		break;
	case OPT_CTL_GROUP: {
		struct group *g = getgrnam(arg);
		char *end;
		unsigned long gid = strtoul(arg, &end, 10);
		if (!g && (!*arg || *end || gid > 0x7fffffffUL))
			return bad_usage("unknown --control-group '%s'", arg);
		o->control_group = g ? (long)g->gr_gid : (long)gid;
		o->control_group_set = true;
		break;
	}
	case 'n':
		o->name = arg;
		break;
	case 'm':
		if (parse_size(arg, &o->mem) || o->mem < HV_MEM_MIN || o->mem > HV_MEM_MAX ||
		    o->mem % HV_MEM_MIN) {
			fprintf(stderr,
				"doppel run: bad --mem '%s' (a size from 2M to %lluG in 2M steps, "
				"e.g. 256M)\n",
				arg, (unsigned long long)(HV_MEM_MAX >> 30));
			return 2;
		}
		break;
	case 'c':
		if (parse_uint(arg, 1, HV_MAX_VCPUS, &n)) {
			fprintf(stderr, "doppel run: bad --vcpus '%s' (1..%d)\n", arg, HV_MAX_VCPUS);
			return 2;
		}
		o->vcpus = (int)n;
		break;
	case 'a':
		o->cmdline = arg;
		break;
	case 's':
		o->serial = arg;
		break;
	case 'C':
		o->control = arg;
		break;
	case 'N':
		if (!a->net_flag) /* command-line NICs replace the file's */
			o->nr_net = 0;
		a->net_flag = true;
		if (o->nr_net >= VMM_MAX_NETS) {
			fprintf(stderr, "doppel run: at most %d --net devices\n", VMM_MAX_NETS);
			return 2;
		}
		o->net[o->nr_net++] = arg;
		break;
	case 'D':
		if (!a->disk_flag)
			o->nr_disk = 0;
		a->disk_flag = true;
		if (o->nr_disk >= VMM_MAX_DISKS) {
			fprintf(stderr, "doppel run: at most %d --disk devices\n", VMM_MAX_DISKS);
			return 2;
		}
		o->disk[o->nr_disk++] = arg;
		break;
	case 'l':
		if (log_level_parse(arg, &a->log_level))
			return bad_usage("bad --log-level '%s' (error, warn, info or debug)", arg);
		a->level_flag = true;
		break;
	case 'Q': /* --config: loaded before the other options (load_config) */
		break;
	case 'j':
		a->log_json = arg;
		break;
	case 'G':
		if (strcmp(arg, "stderr") && strcmp(arg, "journal"))
			return bad_usage("bad --log '%s' (stderr or journal)", arg);
		a->log_journal = !strcmp(arg, "journal");
		break;
	case 'E':
		o->event_log = arg;
		break;
	case 'M':
		o->metrics = arg;
		break;
	case OPT_EXIT_FILE:
		a->exit_status_file = arg;
		break;
	case OPT_READY_FD:
		if (parse_uint(arg, 3, 1 << 20, &n) || fcntl((int)n, F_GETFD) < 0)
			return bad_usage("bad --ready-fd '%s' (an open descriptor, 3 or above)", arg);
		a->ready_fd = (int)n;
		break;
	case 'h':
		usage(stdout);
		return 0;
	default:
		return bad_usage("unknown or incomplete option '%s' (try doppel run --help)", optname);
	}
	return -1;
}

/* --config FILE (or --config=FILE), before any other option so that those override it.
 * Returns -1 to go on, else the exit status (every problem of the file one line on stderr). */
static int load_config(struct run_args *a, int argc, char **argv)
{
	const char *path = NULL;
	char err[8192];

	for (int i = 1; i < argc && strcmp(argv[i], "--"); i++) {
		if (!strcmp(argv[i], "--config") && i + 1 < argc)
			path = argv[++i];
		else if (!strncmp(argv[i], "--config=", 9))
			path = argv[i] + 9;
	}
	if (!path)
		return -1;
	if (vmm_config_load(path, &a->cfg, err, sizeof(err))) {
		for (char *line = strtok(err, "\n"); line; line = strtok(NULL, "\n"))
			fprintf(stderr, "doppel run: %s: %s\n", path, line);
		return 2;
	}
	a->have_cfg = true;
	a->o = a->cfg.o;
	if (a->cfg.log_level && log_level_parse(a->cfg.log_level, &a->log_level))
		return bad_usage("%s: bad log_level", path);
	return -1;
}

/* After the options: a standby takes its listener and takeover policy from the file's protection,
 * unless the command line gave them. Returns -1 to go on, else the exit status. */
static int config_protection(struct run_args *a)
{
	const struct vmm_protection *p = &a->cfg.prot;

	if (!a->have_cfg)
		return -1;
	if (a->o.restore || a->standby || a->incoming)
		a->o.kernel = NULL; /* the file's kernel: only for a fresh boot */
	if (!a->standby || !p->present)
		return -1;
	if (!a->tls_dir)
		a->tls_dir = p->tls_dir; /* TLS credentials directory (docs/security.md) */
	if (!a->listen)
		a->listen = p->listen ? p->listen : p->peer;
	if (!a->failover)
		a->failover = p->failover;
	if (!a->fence_cmd)
		a->fence_cmd = p->fence_cmd;
	if (!a->witness) {
		a->witness = p->witness;
		if (!a->witness_name)
			a->witness_name = p->witness_name;
		if (!a->witness_ttl && p->witness)
			a->witness_ttl = (uint64_t)p->witness_ttl_ms;
	}
	return -1;
}

/* The options alone and together. Returns -1 to go on, else the exit status. */
static int parse_args(struct run_args *a, int argc, char **argv)
{
	static const struct option opts[] = {
		{"kernel", required_argument, 0, 'k'},
		{"name", required_argument, 0, 'n'},
		{"mem", required_argument, 0, 'm'},
		{"vcpus", required_argument, 0, 'c'},
		{"cmdline", required_argument, 0, 'a'},
		{"serial", required_argument, 0, 's'},
		{"control", required_argument, 0, 'C'},
		{"net", required_argument, 0, 'N'},
		{"restore", required_argument, 0, 'r'},
		{"help", no_argument, 0, 'h'},
		{"standby", no_argument, 0, 'S'},
		{"listen", required_argument, 0, 'L'},
		{"incoming", required_argument, 0, 'I'},
		{"log-level", required_argument, 0, 'l'},
		{"log-json", required_argument, 0, 'j'},
		{"failover", required_argument, 0, 'F'},
		{"fence-cmd", required_argument, 0, 'K'},
		{"witness", required_argument, 0, 'W'},
		{"witness-name", required_argument, 0, 'X'},
		{"witness-ttl-ms", required_argument, 0, 'T'},
		{"witness-ttl", required_argument, 0, 'T'},
		{"disk", required_argument, 0, 'D'},
		{"log", required_argument, 0, 'G'},
		{"event-log", required_argument, 0, 'E'},
		{"metrics", required_argument, 0, 'M'},
		{"config", required_argument, 0, 'Q'},
		{"tls-dir", required_argument, 0, OPT_TLS_DIR},
		{"tls-peer-name", required_argument, 0, OPT_TLS_PEER},
		{"accept-any-peer", no_argument, 0, OPT_ANY_PEER},
		{"control-group", required_argument, 0, OPT_CTL_GROUP},
		{"no-sandbox", no_argument, 0, OPT_NO_SANDBOX},
		{"sandbox-log", no_argument, 0, OPT_SANDBOX_LOG},
		{"exit-status-file", required_argument, 0, OPT_EXIT_FILE},
		{"ready-fd", required_argument, 0, OPT_READY_FD},
		{0, 0, 0, 0},
	};
	int c, rc;

	*a = (struct run_args){.log_level = LOG_INFO, .ready_fd = -1};
	rc = load_config(a, argc, argv);
	if (rc >= 0)
		return rc;
	a->o.sandbox = VMM_SANDBOX_ON; /* --no-sandbox / --sandbox-log below */
	if (doppel_opts_begin(argc, argv, opts))
		return DOPPEL_EXIT_OK;
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		rc = parse_opt(a, c, optarg, argv[optind - 1]);
		if (rc >= 0)
			return rc;
	}
	if (optind < argc)
		return bad_usage("unexpected argument '%s' (try doppel run --help)", argv[optind]);
	rc = config_protection(a);
	if (rc >= 0)
		return rc;
	if (a->standby != (a->listen != NULL))
		return bad_usage("%s",
				 "--standby and --listen ADDR:PORT go together (try doppel run --help)");
	if (a->standby && a->incoming)
		return bad_usage("--standby and --incoming exclude each other");
	if (!a->standby && (a->failover || a->fence_cmd || a->witness || a->witness_name || a->witness_ttl))
		return bad_usage("%s", "--failover, --fence-cmd and --witness* need --standby (a primary "
				       "gets them from doppel protect)");
	if (!a->standby && !a->incoming && (a->tls_dir || a->tls_peer_name))
		return bad_usage("%s",
				 "--tls-dir and --tls-peer-name need --standby or --incoming (a "
				 "primary gets them from doppel protect, a source from doppel migrate)");
	if (a->tls_peer_name && !a->tls_dir)
		return bad_usage("--tls-peer-name needs --tls-dir");
	if (a->accept_any_peer && !a->standby)
		return bad_usage("--accept-any-peer needs --standby");
	a->o.hold = a->standby || a->incoming;
	a->o.disk_lock_later = a->incoming != NULL;
	a->o.ready_fn = notify_ready;
	a->o.ready_opaque = a;
	if (a->o.hold && a->o.restore)
		return bad_usage("--restore makes no sense with --standby or --incoming");
	if (!a->o.hold && !a->o.kernel == !a->o.restore)
		return bad_usage(
			"%s", "give exactly one of --kernel FILE or --restore FILE (try doppel run --help)");
	return -1;
}

/* --restore: take --mem/--vcpus from the snapshot's header (they must match when given).
 * Returns 0 or the exit status. */
static int restore_opts(struct vmm_opts *o)
{
	struct sr_header h;
	char err[512];

	if (snap_read_header(o->restore, &h, err, sizeof(err))) {
		fprintf(stderr, "doppel run: %s\n", err);
		return 1;
	}
	if ((o->mem && o->mem != h.mem_size) || (o->vcpus && (uint32_t)o->vcpus != h.nr_vcpus)) {
		fprintf(stderr,
			"doppel run: snapshot %s is of a VM with %llu MiB and %u vCPUs; "
			"--mem/--vcpus differ\n",
			o->restore, (unsigned long long)(h.mem_size >> 20), h.nr_vcpus);
		return 1;
	}
	o->mem = h.mem_size;
	o->vcpus = (int)h.nr_vcpus;
	o->restore_fn = snapshot_restore;
	return 0;
}

/* The process's log settings (the program chooses them; library code only logs). 0 or exit status.
 */
static int setup_logging(const struct run_args *a)
{
	char err[512];

	log_set_level(a->log_level);
	if (a->log_journal) {
		log_set_journal(1);
		log_set_stderr(0);
	}
	if (a->log_json && log_set_json_file(a->log_json, err, sizeof(err))) {
		fprintf(stderr, "doppel run: %s\n", err);
		return 1;
	}
	return 0;
}

/* Build the VM with its control commands and, for a standby or a migration target, its listener.
 * Returns 0 or the exit status (one line on stderr). */
static int build_vm(struct run_args *a, struct vmm **out)
{
	struct vmm *v;
	char err[512];
	int rc;

	rc = vmm_create(&v, &a->o, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "doppel run: %s\n", err);
		return 1;
	}
	rc = remus_setup(v);
	if (!rc)
		rc = snapshot_setup(v);
	if (!rc)
		rc = migrate_setup(v);
	if (rc) {
		fprintf(stderr, "doppel run: cannot set up control commands: %s\n", strerror(-rc));
		vmm_destroy(v);
		return 1;
	}
	if (a->standby)
		rc = remus_standby_listen(
			v,
			&(struct remus_standby_opts){
				.listen = a->listen,
				.failover_manual = a->failover && !strcmp(a->failover, "manual"),
				.fence_cmd = a->fence_cmd,
				.witness = a->witness,
				.witness_name = a->witness_name,
				.witness_ttl_ms = (uint32_t)a->witness_ttl,
				.tls_dir = a->tls_dir,
				.tls_peer_name = a->tls_peer_name,
				.accept_any_peer = a->accept_any_peer,
			},
			err, sizeof(err));
	else if (a->incoming)
		rc = migrate_incoming_listen(v, a->incoming, a->tls_dir, a->tls_peer_name, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "doppel run: %s\n", err);
		vmm_destroy(v);
		return 1;
	}
	*out = v;
	return 0;
}

/* The control socket is up and the VM runs: tell --ready-fd (one write of "NAME\n", atomic on a
 * pipe) and systemd (Type=notify; nothing happens without $NOTIFY_SOCKET). */
static void notify_ready(struct vmm *v, void *opaque)
{
	struct run_args *a = opaque;
	char line[80];
	int rc, n;

	if (a->ready_fd >= 0) {
		n = snprintf(line, sizeof(line), "%s\n", vmm_name(v));
		if (write(a->ready_fd, line, (size_t)n) != n)
			log_warn("run", vmm_name(v), "--ready-fd %d: %s", a->ready_fd, strerror(errno));
		close(a->ready_fd);
		a->ready_fd = -1;
	}
	rc = sd_notifyf(0, "READY=1\nSTATUS=%s running, control socket up", vmm_name(v));
	if (rc < 0)
		log_warn("run", vmm_name(v), "sd_notify: %s", strerror(-rc));
}

/* The process's exit status from how the VM ended (see usage()). */
static int exit_status(const struct run_args *a, struct vmm *v, int status)
{
	FILE *f;

	if (!vmm_guest_exited(v)) /* the host stopped it: 0 clean, 1 failed, 5 fenced */
		return status == 3 ? DOPPEL_EXIT_FENCED : status ? DOPPEL_EXIT_FAIL : DOPPEL_EXIT_OK;
	if (a->exit_status_file) {
		f = fopen(a->exit_status_file, "we");
		if (!f || fprintf(f, "%d\n", status) < 0 || fclose(f)) {
			fprintf(stderr, "doppel run: cannot write --exit-status-file %s: %s\n",
				a->exit_status_file, strerror(errno));
			return DOPPEL_EXIT_FAIL;
		}
	}
	if (status)
		log_info("run", vmm_name(v), "guest exited with status %d", status);
	return status ? DOPPEL_EXIT_GUEST : DOPPEL_EXIT_OK;
}

int cmd_run(int argc, char **argv)
{
	struct run_args a;
	struct vmm *v;
	int rc;

	rc = parse_args(&a, argc, argv);
	if (rc >= 0) {
		vmm_config_free(&a.cfg);
		return rc;
	}
	rc = setup_logging(&a);
	if (!rc && a.o.restore)
		rc = restore_opts(&a.o);
	if (!rc)
		rc = build_vm(&a, &v);
	if (rc) {
		vmm_config_free(&a.cfg);
		return rc;
	}
	rc = vmm_run(v, false);
	rc = exit_status(&a, v, rc);
	vmm_destroy(v);
	vmm_config_free(&a.cfg);
	return rc; /* the JSON log (if any) closes with the process */
}
