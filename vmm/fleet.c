/* fleet.c — parse and validate a fleet file whole: per-VM configs, then uniqueness, memory, CPUs, order. */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "common/errf.h"
#include "common/parse.h"
#include "vmm/fleet.h"

#define FLEET_FILE_MAX (64u << 20)
#define FLEET_MAX_CPUS 4096

struct fprob {
	char *buf;
	size_t len, used;
	int n, dropped;
};

static void add(struct fprob *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(struct fprob *p, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	p->n++;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (!p->buf || p->used + strlen(line) + 2 + 48 > p->len) {
		p->dropped++;
		return;
	}
	p->used += (size_t)snprintf(p->buf + p->used, p->len - p->used, "%s%s", p->used ? "\n" : "", line);
}

/* Append the lines a VM config parse produced (already counted in n). */
static void add_lines(struct fprob *p, const char *lines, int n)
{
	p->n += n;
	if (!*lines)
		return;
	if (!p->buf || p->used + strlen(lines) + 2 + 48 > p->len) {
		p->dropped += n;
		return;
	}
	p->used += (size_t)snprintf(p->buf + p->used, p->len - p->used, "%s%s", p->used ? "\n" : "", lines);
}

static void parse_host(struct fprob *p, struct json_object *h, const struct vmm_fleet_host *host,
		       struct vmm_fleet *f, bool *cpu_ok)
{
	struct json_object *v;
	uint64_t m;

	f->host_mem = host->mem_available;
	snprintf(f->runtime_dir, sizeof(f->runtime_dir), "%s", CTL_DIR);
	for (int c = 0; c < FLEET_MAX_CPUS; c++)
		cpu_ok[c] = c < host->ncpus;
	if (!h)
		return;
	if (!json_object_is_type(h, json_type_object)) {
		add(p, "host: expected an object");
		return;
	}
	json_object_object_foreach(h, key, val)
	{
		(void)val;
		if (strcmp(key, "name") && strcmp(key, "memory") && strcmp(key, "cpus") &&
		    strcmp(key, "runtime_dir"))
			add(p, "host: unknown key \"%.64s\"", key);
	}
	if ((v = json_object_object_get(h, "memory"))) {
		if (json_object_is_type(v, json_type_string) && !parse_size(json_object_get_string(v), &m))
			f->host_mem = m < host->mem_available ? m : host->mem_available;
		else if (json_object_is_type(v, json_type_int) && json_object_get_int64(v) > 0)
			f->host_mem = (uint64_t)json_object_get_int64(v) < host->mem_available
					      ? (uint64_t)json_object_get_int64(v)
					      : host->mem_available;
		else
			add(p, "host.memory: expected a size such as \"20G\"");
	}
	if ((v = json_object_object_get(h, "runtime_dir"))) {
		const char *s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";

		if (s[0] != '/' || strlen(s) >= sizeof(f->runtime_dir) - 80)
			add(p, "host.runtime_dir: expected an absolute path of at most %zu bytes",
			    sizeof(f->runtime_dir) - 81);
		else
			snprintf(f->runtime_dir, sizeof(f->runtime_dir), "%s", s);
	}
	if ((v = json_object_object_get(h, "cpus"))) {
		int n = json_object_is_type(v, json_type_array) ? (int)json_object_array_length(v) : -1;

		if (n <= 0) {
			add(p, "host.cpus: expected a non-empty array of host CPU numbers");
			return;
		}
		for (int c = 0; c < FLEET_MAX_CPUS; c++)
			cpu_ok[c] = false;
		for (int i = 0; i < n; i++) {
			struct json_object *e = json_object_array_get_idx(v, i);
			int64_t c = json_object_is_type(e, json_type_int) ? json_object_get_int64(e) : -1;

			if (c < 0 || c >= host->ncpus || c >= FLEET_MAX_CPUS)
				add(p, "host.cpus[%d]: CPU %s does not exist (this host has CPUs 0..%d)", i,
				    json_object_to_json_string(e), host->ncpus - 1);
			else
				cpu_ok[c] = true;
		}
	}
}

/* Uniqueness of one property across the fleet: every (value, VM) pair sorted, neighbours compared. */
struct key {
	char val[256];
	int vm;
};

static int key_cmp(const void *a, const void *b)
{
	const struct key *x = a, *y = b;
	int c = strcmp(x->val, y->val);

	return c ? c : x->vm - y->vm;
}

static void unique(struct fprob *p, struct vmm_fleet *f, const char *what,
		   bool (*get)(struct vmm_config *, int, char *, size_t), int per_vm)
{
	struct key *k = calloc((size_t)f->nr * (size_t)per_vm, sizeof(*k));
	size_t n = 0;

	if (!k) {
		add(p, "vms: out of memory");
		return;
	}
	for (int i = 0; i < f->nr; i++)
		for (int a = 0; a < per_vm; a++)
			if (get(&f->vm[i], a, k[n].val, sizeof(k[n].val)))
				k[n++].vm = i;
	qsort(k, n, sizeof(*k), key_cmp);
	for (size_t i = 1; i < n; i++)
		if (!strcmp(k[i].val, k[i - 1].val))
			add(p, "vms[%d]: %s %s is also used by vms[%d] (%s)", k[i].vm, what, k[i].val,
			    k[i - 1].vm, f->vm[k[i - 1].vm].o.name);
	free(k);
}

static bool put(char *buf, size_t len, const char *s, size_t n)
{
	if (!s)
		return false;
	snprintf(buf, len, "%.*s", (int)n, s);
	return true;
}

static bool get_name(struct vmm_config *c, int a, char *buf, size_t len)
{
	return a == 0 && put(buf, len, c->o.name, 255);
}

static bool get_ip(struct vmm_config *c, int a, char *buf, size_t len)
{
	return a == 0 && put(buf, len, c->ip, 255);
}

static bool get_control(struct vmm_config *c, int a, char *buf, size_t len)
{
	return a == 0 && put(buf, len, c->o.control, 255);
}

static bool get_listen(struct vmm_config *c, int a, char *buf, size_t len)
{
	return a == 0 && c->prot.present &&
	       put(buf, len, c->prot.listen ? c->prot.listen : c->prot.peer, 255);
}

static bool get_tap(struct vmm_config *c, int a, char *buf, size_t len)
{
	return a < c->o.nr_net && c->o.net[a] &&
	       put(buf, len, c->o.net[a] + 4, strcspn(c->o.net[a] + 4, ","));
}

static bool get_mac(struct vmm_config *c, int a, char *buf, size_t len)
{
	const uint8_t *m = c->mac[a];

	if (a >= c->o.nr_net || !c->o.net[a])
		return false;
	snprintf(buf, len, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
	return true;
}

static bool get_disk(struct vmm_config *c, int a, char *buf, size_t len)
{
	return a < c->o.nr_disk && c->o.disk[a] &&
	       put(buf, len, c->o.disk[a] + 5, strcspn(c->o.disk[a] + 5, ","));
}

static int find_vm(const struct vmm_fleet *f, const char *name)
{
	for (int i = 0; i < f->nr; i++)
		if (f->vm[i].o.name && !strcmp(f->vm[i].o.name, name))
			return i;
	return -1;
}

/* depends_on -> waves (longest path from a VM without dependencies); cycles are problems. */
static void order(struct fprob *p, struct vmm_fleet *f)
{
	bool changed = true;
	int rounds = 0;

	for (int i = 0; i < f->nr; i++) {
		f->wave[i] = 0;
		for (int d = 0; d < f->vm[i].nr_depends_on; d++) {
			int j = find_vm(f, f->vm[i].depends_on[d]);

			if (j < 0)
				add(p, "vms[%d].depends_on[%d]: no VM named %s in this fleet", i, d,
				    f->vm[i].depends_on[d]);
			else if (j == i)
				add(p, "vms[%d].depends_on[%d]: a VM cannot depend on itself", i, d);
		}
	}
	while (changed && rounds++ <= f->nr) {
		changed = false;
		for (int i = 0; i < f->nr; i++)
			for (int d = 0; d < f->vm[i].nr_depends_on; d++) {
				int j = find_vm(f, f->vm[i].depends_on[d]);

				if (j >= 0 && j != i && f->wave[i] <= f->wave[j]) {
					f->wave[i] = f->wave[j] + 1;
					changed = true;
				}
			}
	}
	if (changed)
		add(p, "vms: depends_on has a cycle");
	f->nr_waves = 0;
	for (int i = 0; i < f->nr; i++)
		if (f->wave[i] + 1 > f->nr_waves)
			f->nr_waves = f->wave[i] + 1;
}

static void resources(struct fprob *p, struct vmm_fleet *f, const bool *cpu_ok)
{
	int users[FLEET_MAX_CPUS] = {0};
	uint64_t sum = 0;

	for (int i = 0; i < f->nr; i++) {
		struct vmm_config *c = &f->vm[i];

		sum += c->o.mem ? c->o.mem : 256ull << 20;
		for (int k = 0; k < c->o.nr_cpus; k++) {
			if (c->cpus[k] >= FLEET_MAX_CPUS || !cpu_ok[c->cpus[k]]) {
				add(p,
				    "vms[%d].cpus[%d]: CPU %d is not a CPU of this host (or not in "
				    "host.cpus)",
				    i, k, c->cpus[k]);
				continue;
			}
			users[c->cpus[k]]++;
		}
	}
	for (int i = 0; i < f->nr; i++)
		for (int k = 0; f->vm[i].cpus_exclusive && k < f->vm[i].o.nr_cpus; k++) {
			int cpu = f->vm[i].cpus[k];

			if (cpu < FLEET_MAX_CPUS && cpu_ok[cpu] && users[cpu] > 1)
				add(p,
				    "vms[%d].cpus[%d]: CPU %d is exclusive to %s but %d other VM(s) use it "
				    "too",
				    i, k, cpu, f->vm[i].o.name, users[cpu] - 1);
		}
	if (sum > f->host_mem)
		add(p, "vms: the VMs need %llu MiB of memory, the host has %llu MiB for them",
		    (unsigned long long)(sum >> 20), (unsigned long long)(f->host_mem >> 20));
}

int vmm_fleet_from_json(struct json_object *root, const struct vmm_fleet_host *host, struct vmm_fleet *f,
			char *err, size_t errlen, int *nproblems)
{
	struct fprob p = {.buf = err, .len = errlen};
	struct json_object *vms;
	bool *cpu_ok = calloc(FLEET_MAX_CPUS, sizeof(bool));
	char *lines = malloc(16384), where[32];
	int n = 0, k;

	memset(f, 0, sizeof(*f));
	if (err && errlen)
		err[0] = 0;
	if (!lines || !cpu_ok) {
		free(lines);
		free(cpu_ok);
		return errf(err, errlen, -ENOMEM, "out of memory");
	}
	if (!json_object_is_type(root, json_type_object)) {
		add(&p, "(top): expected an object {\"host\": {...}, \"vms\": [...]}");
		goto out;
	}
	json_object_object_foreach(root, key, val)
	{
		(void)val;
		if (strcmp(key, "host") && strcmp(key, "vms"))
			add(&p, "(top): unknown key \"%.64s\"", key);
	}
	parse_host(&p, json_object_object_get(root, "host"), host, f, cpu_ok);
	vms = json_object_object_get(root, "vms");
	if (!json_object_is_type(vms, json_type_array) || !(n = (int)json_object_array_length(vms)) ||
	    n > FLEET_MAX_VMS) {
		add(&p, "vms: expected an array of 1..%d VM configs", FLEET_MAX_VMS);
		goto out;
	}
	f->vm = calloc((size_t)n, sizeof(*f->vm));
	f->wave = calloc((size_t)n, sizeof(*f->wave));
	if (!f->vm || !f->wave) {
		add(&p, "vms: out of memory");
		goto out;
	}
	for (f->nr = 0; f->nr < n; f->nr++) {
		snprintf(where, sizeof(where), "vms[%d].", f->nr);
		if (vmm_config_from_json(json_object_array_get_idx(vms, (size_t)f->nr), where, &f->vm[f->nr],
					 lines, 16384, &k))
			add_lines(&p, lines, k);
	}
	unique(&p, f, "name", get_name, 1);
	unique(&p, f, "tap", get_tap, VMM_MAX_NETS);
	unique(&p, f, "MAC", get_mac, VMM_MAX_NETS);
	unique(&p, f, "IP address", get_ip, 1);
	unique(&p, f, "control socket", get_control, 1);
	unique(&p, f, "standby address (protection.listen/peer)", get_listen, 1);
	unique(&p, f, "disk", get_disk, VMM_MAX_DISKS);
	for (int i = 0; i < f->nr; i++)
		if (f->vm[i].o.kernel && access(f->vm[i].o.kernel, R_OK))
			add(&p, "vms[%d].kernel: cannot read %s: %s", i, f->vm[i].o.kernel, strerror(errno));
	resources(&p, f, cpu_ok);
	order(&p, f);
out:
	free(lines);
	free(cpu_ok);
	if (p.dropped && p.buf && p.len > p.used)
		snprintf(p.buf + p.used, p.len - p.used, "%s... and %d more problems", p.used ? "\n" : "",
			 p.dropped);
	if (nproblems)
		*nproblems = p.n;
	if (p.n) {
		vmm_fleet_free(f);
		return -EINVAL;
	}
	f->root = json_object_get(root);
	return 0;
}

void vmm_fleet_host_probe(struct vmm_fleet_host *h)
{
	FILE *m = fopen("/proc/meminfo", "re");
	char line[128];
	unsigned long long kb;

	h->mem_available = 0;
	h->ncpus = (int)sysconf(_SC_NPROCESSORS_CONF);
	while (m && fgets(line, sizeof(line), m))
		if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
			h->mem_available = (uint64_t)kb << 10;
	if (m)
		fclose(m);
}

static int load(const char *path, bool running, struct vmm_fleet *f, char *err, size_t errlen, int *nproblems)
{
	struct vmm_fleet_host host;
	struct json_object *root;
	int rc;

	memset(f, 0, sizeof(*f));
	if (nproblems)
		*nproblems = 1;
	rc = vmm_json_load(path, FLEET_FILE_MAX, &root, err, errlen);
	if (rc)
		return rc;
	vmm_fleet_host_probe(&host);
	if (running)
		host.mem_available = UINT64_MAX;
	rc = vmm_fleet_from_json(root, &host, f, err, errlen, nproblems);
	json_object_put(root);
	return rc;
}

int vmm_fleet_load(const char *path, struct vmm_fleet *f, char *err, size_t errlen, int *nproblems)
{
	return load(path, false, f, err, errlen, nproblems);
}

int vmm_fleet_load_running(const char *path, struct vmm_fleet *f, char *err, size_t errlen, int *nproblems)
{
	return load(path, true, f, err, errlen, nproblems);
}

void vmm_fleet_free(struct vmm_fleet *f)
{
	for (int i = 0; f->vm && i < f->nr; i++)
		vmm_config_free(&f->vm[i]);
	free(f->vm);
	free(f->wave);
	json_object_put(f->root);
	memset(f, 0, sizeof(*f));
}
