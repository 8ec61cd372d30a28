/* config.h — the VM config file (docs/config.md): one JSON object -> vmm_opts, protection, resources. */
#ifndef DOPPEL_VMM_CONFIG_H
#define DOPPEL_VMM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm/vmm.h"

struct json_object;

#define VMM_CONFIG_MAX_DEPS 16
#define VMM_CONFIG_SPEC_MAX 80 /* "tap=IFNAME,bridge=BR,mac=xx:xx:xx:xx:xx:xx" */

/* "protection": how the primary protects the VM and how its standby listens (both sides read it). */
struct vmm_protection {
	bool present;
	char *peer; /* ADDR:PORT of the standby (required) */
	char *mode; /* "remus" */
	int interval_ms; /* 1..10000, default 25 */
	int heartbeat_timeout_ms; /* 20..60000, default 200 */
	char *standby_lost; /* release|hold|fence, NULL = release */
	char *witness; /* etcd client URLs, comma-joined; NULL = none */
	char *witness_name; /* NULL = the VM's name */
	int witness_ttl_ms; /* 100..600000, default 1000 */
	char *tls_dir; /* NULL = plain TCP */
	char *failover; /* standby: auto|manual, NULL = auto */
	char *fence_cmd; /* standby: NULL = none */
	char *listen; /* standby's listen address; NULL = peer */
};

/* One parsed VM config. Every string is owned by it (vmm_config_free); o's pointers point into it. */
struct vmm_config {
	struct vmm_opts o; /* name, kernel, cmdline, serial, control, mem, vcpus, net, disk, cpus,
			      mem_policy */
	struct vmm_protection prot;
	int cpus[VMM_MAX_CPUS]; /* "cpus": host CPUs (o.cpus points here) */
	bool cpus_exclusive; /* "cpus_exclusive": no other VM of a fleet may use these CPUs */
	char *log; /* "log": stderr of a detached VM (fleet), NULL = the runtime directory's NAME.log */
	char *log_level; /* error|warn|info|debug, NULL = info */
	char *depends_on[VMM_CONFIG_MAX_DEPS]; /* fleet: start after these VMs run */
	int nr_depends_on;
	char net_spec[VMM_MAX_NETS][VMM_CONFIG_SPEC_MAX]; /* o.net[i] points here */
	uint8_t mac[VMM_MAX_NETS][6]; /* each NIC's MAC (given or the tap's default) */
	char *ip; /* the ip= of the cmdline (A.B.C.D, no prefix) or NULL: for fleet uniqueness */
	char *strs[48]; /* everything strdup'd, freed by vmm_config_free */
	int nr_strs;
};

/* Parse one VM config object. `where` prefixes every JSON path in messages ("" for a lone file,
 * "vms[3]." inside a fleet). Every problem found is one line "PATH: message" appended to
 * err (lines separated by '\n'; "... and N more problems" when it fills up). Returns 0, or -EINVAL
 * with the number of problems in *nproblems (may be NULL). Either way c holds what was parsed (a
 * fleet cross-checks even a VM with problems) and the caller frees it with vmm_config_free. */
int vmm_config_from_json(struct json_object *obj, const char *where, struct vmm_config *c, char *err,
			 size_t errlen, int *nproblems) __attribute__((warn_unused_result));

/* Parse JSON text (len bytes, need not be NUL-terminated) holding one VM config. On error nothing
 * is kept (c is freed). */
int vmm_config_parse(const char *text, size_t len, struct vmm_config *c, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Read and parse a file (at most 1 MiB). Errors name the file in their first line. */
int vmm_config_load(const char *path, struct vmm_config *c, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Read a JSON file (at most `max` bytes) into a json object: 0 or -errno with one line in err. */
int vmm_json_load(const char *path, size_t max, struct json_object **out, char *err, size_t errlen)
	__attribute__((warn_unused_result));

void vmm_config_free(struct vmm_config *c);

/* The memory_policy names: "lazy", "populate", "lock". */
const char *vmm_mem_policy_name(enum hv_mem_policy p);

#endif
