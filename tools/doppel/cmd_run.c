/* cmd_run.c — `doppel run`: boot a VM in the foreground; exit status is the guest's. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migrate/migrate.h"
#include "replication/remus.h"
#include "replication/snapshot.h"
#include "common/parse.h"
#include "vmm/vmm.h"
#include "tools/doppel/doppel.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: doppel run --kernel FILE | --restore SNAPSHOT [--name NAME] [--mem SIZE] [--vcpus N]\n"
		"                  [--cmdline STR] [--serial stdio|file:PATH|none] [--control PATH]\n"
		"                  [--net tap=IFNAME[,bridge=BR][,mac=52:54:..]]...\n"
		"                  [--standby --listen ADDR:PORT | --incoming ADDR:PORT]\n"
		"\n"
		"Run a VM in the foreground. The process exits with the guest's exit status\n"
		"(the byte it writes to port 0x501); SIGINT/SIGTERM or `doppel stop NAME` stop it cleanly.\n"
		"\n"
		"  --kernel FILE    PVH ELF kernel (an ELF with a XEN_ELFNOTE_PHYS32_ENTRY note)\n"
		"  --restore FILE   continue from a snapshot (`doppel snapshot`); --mem and --vcpus\n"
		"                   default to the snapshot's and must match it when given\n"
		"  --name NAME      VM name (default vm); names the control socket\n"
		"  --mem SIZE       guest RAM, e.g. 256M, 2G (default 256M; 2M multiple, up to 64G)\n"
		"  --vcpus N        vCPUs, one thread each (default 1, max %d)\n"
		"  --cmdline STR    guest command line, e.g. \"work=dirty ws=64M pi=1000\"\n"
		"  --serial WHERE   console: stdio (default), file:PATH, or none\n"
		"  --control PATH   control socket (default /run/doppel/NAME.sock)\n"
		"  --net SPEC       virtio-net device backed by a tap (repeatable)\n"
		"  --standby        hold a replica for a primary (`doppel protect`); runs no vCPUs until\n"
		"                   failover. Needs --listen ADDR:PORT ([IPv6]:PORT for IPv6)\n"
		"  --incoming ADDR:PORT  wait for a live migration (`doppel migrate`), then run\n",
		HV_MAX_VCPUS);
}

int cmd_run(int argc, char **argv)
{
	static const struct option opts[] = {
		{"kernel", required_argument, 0, 'k'}, {"name", required_argument, 0, 'n'},
		{"mem", required_argument, 0, 'm'},    {"vcpus", required_argument, 0, 'c'},
		{"cmdline", required_argument, 0, 'a'}, {"serial", required_argument, 0, 's'},
		{"control", required_argument, 0, 'C'}, {"net", required_argument, 0, 'N'},
		{"restore", required_argument, 0, 'r'}, {"help", no_argument, 0, 'h'},
		{"standby", no_argument, 0, 'S'},       {"listen", required_argument, 0, 'L'},
		{"incoming", required_argument, 0, 'I'},
		{0, 0, 0, 0},
	};
	struct vmm_opts o = {0};
	const char *listen = NULL, *incoming = NULL;
	bool standby = false;
	struct vmm *v;
	char err[512];
	uint64_t n;
	int c, rc;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (c) {
		case 'k':
			o.kernel = optarg;
			break;
		case 'r':
			o.restore = optarg;
			break;
		case 'S':
			standby = true;
			break;
		case 'L':
			listen = optarg;
			break;
		case 'I':
			incoming = optarg;
			break;
		case 'n':
			o.name = optarg;
			break;
		case 'm':
			if (parse_size(optarg, &o.mem) || o.mem < HV_MEM_MIN || o.mem > HV_MEM_MAX ||
			    o.mem % HV_MEM_MIN) {
				fprintf(stderr,
					"doppel run: bad --mem '%s' (a size from 2M to %lluG in 2M steps, e.g. 256M)\n",
					optarg, (unsigned long long)(HV_MEM_MAX >> 30));
				return 2;
			}
			break;
		case 'c':
			if (parse_uint(optarg, 1, HV_MAX_VCPUS, &n)) {
				fprintf(stderr, "doppel run: bad --vcpus '%s' (1..%d)\n", optarg, HV_MAX_VCPUS);
				return 2;
			}
			o.vcpus = (int)n;
			break;
		case 'a':
			o.cmdline = optarg;
			break;
		case 's':
			o.serial = optarg;
			break;
		case 'C':
			o.control = optarg;
			break;
		case 'N':
			if (o.nr_net >= VMM_MAX_NETS) {
				fprintf(stderr, "doppel run: at most %d --net devices\n", VMM_MAX_NETS);
				return 2;
			}
			o.net[o.nr_net++] = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			fprintf(stderr, "doppel run: unknown or incomplete option '%s' (try doppel run --help)\n",
				argv[optind - 1]);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "doppel run: unexpected argument '%s' (try doppel run --help)\n", argv[optind]);
		return 2;
	}
	if (standby != (listen != NULL)) {
		fprintf(stderr, "doppel run: --standby and --listen ADDR:PORT go together (try doppel run --help)\n");
		return 2;
	}
	if (standby && incoming) {
		fprintf(stderr, "doppel run: --standby and --incoming exclude each other\n");
		return 2;
	}
	o.hold = standby || incoming;
	if (o.hold && o.restore) {
		fprintf(stderr, "doppel run: --restore makes no sense with --standby or --incoming\n");
		return 2;
	}
	if (!o.hold && !o.kernel == !o.restore) {
		fprintf(stderr, "doppel run: give exactly one of --kernel FILE or --restore FILE (try doppel run --help)\n");
		return 2;
	}
	if (o.restore) {
		struct sr_header h;
		if (snap_read_header(o.restore, &h, err, sizeof(err))) {
			fprintf(stderr, "doppel run: %s\n", err);
			return 1;
		}
		if ((o.mem && o.mem != h.mem_size) || (o.vcpus && (uint32_t)o.vcpus != h.nr_vcpus)) {
			fprintf(stderr, "doppel run: snapshot %s is of a VM with %llu MiB and %u vCPUs; --mem/--vcpus differ\n",
				o.restore, (unsigned long long)(h.mem_size >> 20), h.nr_vcpus);
			return 1;
		}
		o.mem = h.mem_size;
		o.vcpus = (int)h.nr_vcpus;
		o.restore_fn = snap_restore;
	}
	rc = vmm_create(&v, &o, err, sizeof(err));
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
	if (standby)
		rc = remus_standby_listen(v, listen, err, sizeof(err));
	else if (incoming)
		rc = migrate_incoming_listen(v, incoming, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "doppel run: %s\n", err);
		vmm_destroy(v);
		return 1;
	}
	rc = vmm_run(v, false);
	vmm_destroy(v);
	return rc;
}
