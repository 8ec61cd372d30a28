/* fleet.h — a fleet file (docs/fleet.md): a host and its VMs, validated whole before anything starts. */
#ifndef DOPPEL_VMM_FLEET_H
#define DOPPEL_VMM_FLEET_H

#include <stddef.h>
#include <stdint.h>

#include "vmm/config.h"

struct json_object;

#define FLEET_MAX_VMS 4096

struct vmm_fleet {
	struct json_object *root; /* the parsed file (each VM's object is root.vms[i]) */
	struct vmm_config *vm; /* nr VMs, in declared order */
	int nr;
	int *wave; /* wave[i]: VM i starts after every VM of a lower wave runs (depends_on) */
	int nr_waves;
	uint64_t host_mem; /* host.memory, or what the host had available */
	char runtime_dir[200]; /* host.runtime_dir, default /run/doppel */
};

/* Host facts the validation checks against (the CLI reads them from /proc and sysconf; tests fake
 * them): memory available for guests, number of host CPUs. */
struct vmm_fleet_host {
	uint64_t mem_available;
	int ncpus;
};

/* Parse and validate a whole fleet: every VM config (problems named vms[I].PATH), then across VMs:
 * unique names, MACs, tap names, IPv4 addresses (cmdline ip=), control sockets, standby listen
 * addresses and disk paths; the memory sum within host.memory (or what is available); every CPU
 * pin existing and within host.cpus; exclusive pins not shared; depends_on naming other VMs of the
 * fleet, without cycles. Every problem is one line in err (separated by '\n'). Returns 0, or -EINVAL
 * with the number of problems in *nproblems (nothing kept). */
int vmm_fleet_from_json(struct json_object *root, const struct vmm_fleet_host *host, struct vmm_fleet *f,
			char *err, size_t errlen, int *nproblems) __attribute__((warn_unused_result));

/* Read the file and vmm_fleet_from_json it (takes the host facts from this machine). */
int vmm_fleet_load(const char *path, struct vmm_fleet *f, char *err, size_t errlen, int *nproblems)
	__attribute__((warn_unused_result));
/* The same for a fleet that may be running (down, status): the host's free memory is not a limit
 * then (the fleet's own VMs use it); host.memory from the file still is. */
int vmm_fleet_load_running(const char *path, struct vmm_fleet *f, char *err, size_t errlen, int *nproblems)
	__attribute__((warn_unused_result));

void vmm_fleet_free(struct vmm_fleet *f);

/* This machine: MemAvailable and the number of configured CPUs. */
void vmm_fleet_host_probe(struct vmm_fleet_host *h);

#endif
