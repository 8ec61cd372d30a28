/* config.c — parse and validate a VM config file (docs/config.md), every problem one line with its JSON path. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "common/errf.h"
#include "common/parse.h"
#include "vmm/config.h"
#include "vmm/diskopt.h"
#include "vmm/netopt.h"

#define CONFIG_FILE_MAX (1u << 20)

/* The problems found so far: lines "PATH: message" in the caller's buffer. */
struct problems {
	char *buf;
	size_t len, used;
	int n, dropped;
	const char *where; /* path prefix */
};

static void problem(struct problems *p, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void problem(struct problems *p, const char *path, const char *fmt, ...)
{
	char line[512];
	int k;
	va_list ap;

	p->n++;
	k = snprintf(line, sizeof(line), "%s%s: ", p->where, path);
	va_start(ap, fmt);
	if (k > 0 && (size_t)k < sizeof(line))
		vsnprintf(line + k, sizeof(line) - (size_t)k, fmt, ap);
	va_end(ap);
	for (char *s = line; *s; s++) /* one line each, whatever the JSON held */
		if ((unsigned char)*s < ' ')
			*s = '?';
	/* keep room for the "... and N more problems" tail */
	if (!p->buf || p->used + strlen(line) + 2 + 48 > p->len) {
		p->dropped++;
		return;
	}
	p->used += (size_t)snprintf(p->buf + p->used, p->len - p->used, "%s%s", p->used ? "\n" : "", line);
}

static void problems_end(struct problems *p)
{
	if (p->dropped && p->buf && p->len > p->used)
		snprintf(p->buf + p->used, p->len - p->used, "%s... and %d more problems",
			 p->used ? "\n" : "", p->dropped);
}

static char *keep(struct vmm_config *c, const char *s)
{
	char *d;

	if (c->nr_strs >= (int)(sizeof(c->strs) / sizeof(c->strs[0])))
		return NULL;
	d = strdup(s);
	if (d)
		c->strs[c->nr_strs++] = d;
	return d;
}

static const char *type_name(struct json_object *v)
{
	return json_type_to_name(json_object_get_type(v));
}

/* A string field: NULL when absent; a problem when not a string or empty (or > max bytes). */
static const char *get_str(struct problems *p, struct json_object *v, const char *path, size_t max)
{
	const char *s;

	if (!v)
		return NULL;
	if (!json_object_is_type(v, json_type_string)) {
		problem(p, path, "expected a string, got %s", type_name(v));
		return NULL;
	}
	s = json_object_get_string(v);
	if (!*s || strlen(s) > max || strlen(s) != (size_t)json_object_get_string_len(v)) {
		problem(p, path, "expected a non-empty string of at most %zu bytes without NUL", max);
		return NULL;
	}
	return s;
}

/* An integer field in [lo, hi]; *out untouched when absent or bad. Returns true if set. */
static bool get_int(struct problems *p, struct json_object *v, const char *path, int64_t lo, int64_t hi,
		    int64_t *out)
{
	int64_t x;

	if (!v)
		return false;
	if (!json_object_is_type(v, json_type_int)) {
		problem(p, path, "expected an integer, got %s", type_name(v));
		return false;
	}
	errno = 0;
	x = json_object_get_int64(v);
	if (errno || x < lo || x > hi) {
		problem(p, path, "%s out of range (%lld..%lld)", json_object_to_json_string(v), (long long)lo,
			(long long)hi);
		return false;
	}
	*out = x;
	return true;
}

static bool get_bool(struct problems *p, struct json_object *v, const char *path, bool *out)
{
	if (!v)
		return false;
	if (!json_object_is_type(v, json_type_boolean)) {
		problem(p, path, "expected true or false, got %s", type_name(v));
		return false;
	}
	*out = json_object_get_boolean(v);
	return true;
}

/* Report keys of obj not in the NULL-terminated list. */
static void unknown_keys(struct problems *p, struct json_object *obj, const char *path,
			 const char *const *known)
{
	json_object_object_foreach(obj, key, val)
	{
		const char *const *k;

		(void)val;
		for (k = known; *k && strcmp(*k, key); k++)
			;
		if (!*k)
			problem(p, path, "unknown key \"%.64s\"", key);
	}
}

static bool one_of(const char *s, const char *const *set)
{
	for (; *set; set++)
		if (!strcmp(s, *set))
			return true;
	return false;
}

static void parse_memory(struct problems *p, struct vmm_config *c, struct json_object *v)
{
	uint64_t m = 0;
	int64_t i;

	if (!v)
		return;
	if (json_object_is_type(v, json_type_string)) {
		if (parse_size(json_object_get_string(v), &m)) {
			problem(p, "memory", "bad size \"%.64s\" (e.g. \"256M\", \"2G\")",
				json_object_get_string(v));
			return;
		}
	} else if (get_int(p, v, "memory", 0, INT64_MAX, &i)) {
		m = (uint64_t)i;
	} else {
		return;
	}
	if (m < HV_MEM_MIN || m > HV_MEM_MAX || m % HV_MEM_MIN) {
		problem(p, "memory", "%llu bytes: must be 2M..%lluG in 2M steps", (unsigned long long)m,
			(unsigned long long)(HV_MEM_MAX >> 30));
		return;
	}
	c->o.mem = m;
}

static void parse_nic(struct problems *p, struct vmm_config *c, struct json_object *v, int i)
{
	static const char *const known[] = {"tap", "bridge", "mac", NULL};
	const char *tap, *br, *mac;
	char path[48], sub[64], err[256];
	struct net_opts no;
	int n;

	snprintf(path, sizeof(path), "net[%d]", i);
	if (!json_object_is_type(v, json_type_object)) {
		problem(p, path, "expected an object {\"tap\": ..., \"bridge\": ..., \"mac\": ...}");
		return;
	}
	unknown_keys(p, v, path, known);
	snprintf(sub, sizeof(sub), "%s.tap", path);
	tap = get_str(p, json_object_object_get(v, "tap"), sub, NETOPT_IFNAMSIZ - 1);
	if (!json_object_object_get(v, "tap"))
		problem(p, sub, "missing (the tap interface name)");
	else if (tap && !net_ifname_valid(tap))
		problem(p, sub, "bad interface name \"%s\"", tap), tap = NULL;
	snprintf(sub, sizeof(sub), "%s.bridge", path);
	br = get_str(p, json_object_object_get(v, "bridge"), sub, NETOPT_IFNAMSIZ - 1);
	if (br && !net_ifname_valid(br))
		problem(p, sub, "bad interface name \"%s\"", br), br = NULL;
	snprintf(sub, sizeof(sub), "%s.mac", path);
	mac = get_str(p, json_object_object_get(v, "mac"), sub, 17);
	if (mac && strchr(mac, ','))
		problem(p, sub, "bad MAC \"%s\"", mac), mac = NULL;
	if (!tap)
		return;
	n = snprintf(c->net_spec[i], VMM_CONFIG_SPEC_MAX, "tap=%s%s%s%s%s", tap, br ? ",bridge=" : "",
		     br ? br : "", mac ? ",mac=" : "", mac ? mac : "");
	if (n < 0 || n >= VMM_CONFIG_SPEC_MAX || net_opts_parse(c->net_spec[i], &no, err, sizeof(err))) {
		problem(p, path, "%s", n >= VMM_CONFIG_SPEC_MAX ? "too long" : err);
		return;
	}
	memcpy(c->mac[i], no.mac, 6);
	c->o.net[i] = c->net_spec[i];
}

static void parse_nets(struct problems *p, struct vmm_config *c, struct json_object *v)
{
	int n;

	if (!v)
		return;
	if (!json_object_is_type(v, json_type_array)) {
		problem(p, "net", "expected an array of NICs, got %s", type_name(v));
		return;
	}
	n = (int)json_object_array_length(v);
	if (n > VMM_MAX_NETS) {
		problem(p, "net", "%d NICs, at most %d", n, VMM_MAX_NETS);
		n = VMM_MAX_NETS;
	}
	for (int i = 0; i < n; i++)
		parse_nic(p, c, json_object_array_get_idx(v, i), i);
	c->o.nr_net = n;
}

static void parse_disk(struct problems *p, struct vmm_config *c, struct json_object *v, int i)
{
	static const char *const known[] = {"path", "readonly", "id", NULL};
	const char *path_s, *id;
	char path[48], sub[64], err[256], *spec;
	bool ro = false;
	struct disk_opts *d;
	size_t n;

	snprintf(path, sizeof(path), "disks[%d]", i);
	if (!json_object_is_type(v, json_type_object)) {
		problem(p, path, "expected an object {\"path\": ..., \"readonly\": ..., \"id\": ...}");
		return;
	}
	unknown_keys(p, v, path, known);
	snprintf(sub, sizeof(sub), "%s.path", path);
	path_s = get_str(p, json_object_object_get(v, "path"), sub, DISKOPT_PATH_MAX - 1);
	if (!json_object_object_get(v, "path"))
		problem(p, sub, "missing (the image file or block device)");
	snprintf(sub, sizeof(sub), "%s.readonly", path);
	get_bool(p, json_object_object_get(v, "readonly"), sub, &ro);
	snprintf(sub, sizeof(sub), "%s.id", path);
	id = get_str(p, json_object_object_get(v, "id"), sub, DISKOPT_ID_MAX);
	if (!path_s)
		return;
	n = strlen(path_s) + (id ? strlen(id) : 0) + 32;
	spec = malloc(n);
	d = malloc(sizeof(*d));
	if (spec && d) {
		snprintf(spec, n, "path=%s%s%s%s", path_s, ro ? ",readonly" : "", id ? ",id=" : "",
			 id ? id : "");
		if (disk_opts_parse(spec, d, err, sizeof(err)))
			problem(p, path, "%s", err);
		else
			c->o.disk[i] = keep(c, spec);
	} else {
		problem(p, path, "out of memory");
	}
	free(spec);
	free(d);
}

static void parse_disks(struct problems *p, struct vmm_config *c, struct json_object *v)
{
	int n;

	if (!v)
		return;
	if (!json_object_is_type(v, json_type_array)) {
		problem(p, "disks", "expected an array of disks, got %s", type_name(v));
		return;
	}
	n = (int)json_object_array_length(v);
	if (n > VMM_MAX_DISKS) {
		problem(p, "disks", "%d disks, at most %d", n, VMM_MAX_DISKS);
		n = VMM_MAX_DISKS;
	}
	for (int i = 0; i < n; i++)
		parse_disk(p, c, json_object_array_get_idx(v, i), i);
	c->o.nr_disk = n;
}

/* "witness": an array of URLs or one comma-separated string -> comma-joined. */
static char *parse_witness(struct problems *p, struct vmm_config *c, struct json_object *v)
{
	char buf[2048] = "", path[48];
	size_t used = 0;
	int n;

	if (!v)
		return NULL;
	if (json_object_is_type(v, json_type_string))
		return keep(c, get_str(p, v, "protection.witness", sizeof(buf) - 1) ?: "");
	if (!json_object_is_type(v, json_type_array) || !(n = (int)json_object_array_length(v))) {
		problem(p, "protection.witness", "expected a non-empty array of etcd URLs");
		return NULL;
	}
	for (int i = 0; i < n; i++) {
		const char *u;

		snprintf(path, sizeof(path), "protection.witness[%d]", i);
		u = get_str(p, json_object_array_get_idx(v, i), path, 256);
		if (!u)
			continue;
		if (strncmp(u, "http://", 7) && strncmp(u, "https://", 8)) {
			problem(p, path, "\"%s\" is not an http:// or https:// URL", u);
			continue;
		}
		if (strchr(u, ',') || used + strlen(u) + 2 > sizeof(buf)) {
			problem(p, path, "bad URL or too many URLs");
			continue;
		}
		used += (size_t)snprintf(buf + used, sizeof(buf) - used, "%s%s", used ? "," : "", u);
	}
	return used ? keep(c, buf) : NULL;
}

static char *opt_str(struct problems *p, struct vmm_config *c, struct json_object *obj, const char *key,
		     const char *path, size_t max, const char *const *set)
{
	const char *s = get_str(p, json_object_object_get(obj, key), path, max);

	if (s && set && !one_of(s, set)) {
		char allowed[128] = "";

		for (size_t k = 0; set[k]; k++)
			snprintf(allowed + strlen(allowed), sizeof(allowed) - strlen(allowed), "%s%s",
				 k ? ", " : "", set[k]);
		problem(p, path, "\"%s\" is not one of %s", s, allowed);
		return NULL;
	}
	return s ? keep(c, s) : NULL;
}

static void parse_protection(struct problems *p, struct vmm_config *c, struct json_object *v)
{
	static const char *const known[] = {"peer",
					    "mode",
					    "interval_ms",
					    "heartbeat_timeout_ms",
					    "standby_lost",
					    "witness",
					    "witness_name",
					    "witness_ttl_ms",
					    "tls_dir",
					    "failover",
					    "fence_cmd",
					    "listen",
					    NULL};
	static const char *const modes[] = {"remus", NULL},
				 *const lost[] = {"release", "hold", "fence", NULL},
				 *const fo[] = {"auto", "manual", NULL};
	struct vmm_protection *r = &c->prot;
	int64_t x;

	if (!v)
		return;
	if (!json_object_is_type(v, json_type_object)) {
		problem(p, "protection", "expected an object, got %s", type_name(v));
		return;
	}
	unknown_keys(p, v, "protection", known);
	r->present = true;
	r->interval_ms = 25;
	r->heartbeat_timeout_ms = 200;
	r->witness_ttl_ms = 1000;
	r->peer = opt_str(p, c, v, "peer", "protection.peer", 255, NULL);
	if (!json_object_object_get(v, "peer"))
		problem(p, "protection.peer", "missing (the standby's ADDR:PORT)");
	else if (r->peer && !strrchr(r->peer, ':'))
		problem(p, "protection.peer", "\"%s\" is not ADDR:PORT", r->peer);
	r->mode = opt_str(p, c, v, "mode", "protection.mode", 16, modes);
	if (get_int(p, json_object_object_get(v, "interval_ms"), "protection.interval_ms", 1, 10000, &x))
		r->interval_ms = (int)x;
	if (get_int(p, json_object_object_get(v, "heartbeat_timeout_ms"), "protection.heartbeat_timeout_ms",
		    20, 60000, &x))
		r->heartbeat_timeout_ms = (int)x;
	r->standby_lost = opt_str(p, c, v, "standby_lost", "protection.standby_lost", 16, lost);
	r->witness = parse_witness(p, c, json_object_object_get(v, "witness"));
	r->witness_name = opt_str(p, c, v, "witness_name", "protection.witness_name", CLI_NAME_MAX, NULL);
	if (get_int(p, json_object_object_get(v, "witness_ttl_ms"), "protection.witness_ttl_ms", 100, 600000,
		    &x))
		r->witness_ttl_ms = (int)x;
	r->tls_dir = opt_str(p, c, v, "tls_dir", "protection.tls_dir", 4095, NULL);
	r->failover = opt_str(p, c, v, "failover", "protection.failover", 16, fo);
	r->fence_cmd = opt_str(p, c, v, "fence_cmd", "protection.fence_cmd", 4095, NULL);
	r->listen = opt_str(p, c, v, "listen", "protection.listen", 255, NULL);
	if (r->listen && !strrchr(r->listen, ':'))
		problem(p, "protection.listen", "\"%s\" is not ADDR:PORT", r->listen);
}

static void parse_cpus(struct problems *p, struct vmm_config *c, struct json_object *v)
{
	char path[32];
	int64_t x;
	int n;

	if (!v)
		return;
	if (!json_object_is_type(v, json_type_array) || !(n = (int)json_object_array_length(v))) {
		problem(p, "cpus", "expected a non-empty array of host CPU numbers");
		return;
	}
	if (n > VMM_MAX_CPUS) {
		problem(p, "cpus", "%d CPUs, at most %d", n, VMM_MAX_CPUS);
		return;
	}
	for (int i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "cpus[%d]", i);
		if (!get_int(p, json_object_array_get_idx(v, i), path, 0, 4095, &x))
			continue;
		for (int j = 0; j < c->o.nr_cpus; j++)
			if (c->cpus[j] == (int)x) {
				problem(p, path, "CPU %d listed twice", (int)x);
				x = -1;
				break;
			}
		if (x >= 0)
			c->cpus[c->o.nr_cpus++] = (int)x;
	}
	c->o.cpus = c->o.nr_cpus ? c->cpus : NULL;
}

static void parse_deps(struct problems *p, struct vmm_config *c, struct json_object *v)
{
	char path[48];
	int n;

	if (!v)
		return;
	if (!json_object_is_type(v, json_type_array)) {
		problem(p, "depends_on", "expected an array of VM names");
		return;
	}
	n = (int)json_object_array_length(v);
	if (n > VMM_CONFIG_MAX_DEPS) {
		problem(p, "depends_on", "%d names, at most %d", n, VMM_CONFIG_MAX_DEPS);
		return;
	}
	for (int i = 0; i < n; i++) {
		const char *s;

		snprintf(path, sizeof(path), "depends_on[%d]", i);
		s = get_str(p, json_object_array_get_idx(v, i), path, CLI_NAME_MAX);
		if (s && !cli_name_valid(s))
			problem(p, path, "bad VM name \"%s\"", s);
		else if (s)
			c->depends_on[c->nr_depends_on++] = keep(c, s);
	}
}

/* The guest's ip= (A.B.C.D before the '/') from the cmdline, for uniqueness checks. */
static void find_ip(struct vmm_config *c)
{
	const char *s = c->o.cmdline, *ip = NULL;
	char buf[64];
	size_t n;

	for (; s && *s; s += strcspn(s, " ")) {
		s += strspn(s, " ");
		if (!strncmp(s, "ip=", 3))
			ip = s + 3; /* the last one wins, as in the guest */
	}
	if (!ip)
		return;
	n = strcspn(ip, "/ ");
	if (n && n < sizeof(buf)) {
		memcpy(buf, ip, n);
		buf[n] = 0;
		c->ip = keep(c, buf);
	}
}

static void parse_top(struct problems *p, struct vmm_config *c, struct json_object *obj)
{
	static const char *const known[] = {
		"name",		  "memory", "vcpus",	 "kernel",     "cmdline", "net",
		"disks",	  "serial", "control",	 "protection", "cpus",	  "memory_policy",
		"cpus_exclusive", "log",    "log_level", "depends_on", NULL};
	static const char *const pol[] = {"lazy", "populate", "lock", NULL}, *const lvl[] = {"error", "warn",
											     "info", "debug",
											     NULL};
	const char *s;
	int64_t x;

	unknown_keys(p, obj, "(top)", known);
	c->o.name = opt_str(p, c, obj, "name", "name", CLI_NAME_MAX, NULL);
	if (!json_object_object_get(obj, "name"))
		problem(p, "name", "missing (the VM's name)");
	else if (c->o.name && !cli_name_valid(c->o.name))
		problem(p, "name", "bad VM name \"%s\" (1-%d of A-Z a-z 0-9 . _ -, not starting with - or .)",
			c->o.name, CLI_NAME_MAX);
	parse_memory(p, c, json_object_object_get(obj, "memory"));
	if (get_int(p, json_object_object_get(obj, "vcpus"), "vcpus", 1, HV_MAX_VCPUS, &x))
		c->o.vcpus = (int)x;
	c->o.kernel = opt_str(p, c, obj, "kernel", "kernel", 4095, NULL);
	if (!json_object_object_get(obj, "kernel"))
		problem(p, "kernel", "missing (the PVH ELF to boot)");
	c->o.cmdline = opt_str(p, c, obj, "cmdline", "cmdline", 2000, NULL);
	find_ip(c);
	parse_nets(p, c, json_object_object_get(obj, "net"));
	parse_disks(p, c, json_object_object_get(obj, "disks"));
	c->o.serial = opt_str(p, c, obj, "serial", "serial", 4095, NULL);
	if (c->o.serial && strcmp(c->o.serial, "stdio") && strcmp(c->o.serial, "none") &&
	    (strncmp(c->o.serial, "file:", 5) || !c->o.serial[5]))
		problem(p, "serial", "\"%s\" is not stdio, none or file:PATH", c->o.serial);
	c->o.control = opt_str(p, c, obj, "control", "control", 107, NULL);
	parse_protection(p, c, json_object_object_get(obj, "protection"));
	parse_cpus(p, c, json_object_object_get(obj, "cpus"));
	s = opt_str(p, c, obj, "memory_policy", "memory_policy", 16, pol);
	c->o.mem_policy = !s			   ? HV_MEM_LAZY
			  : !strcmp(s, "lock")	   ? HV_MEM_LOCK
			  : !strcmp(s, "populate") ? HV_MEM_POPULATE
						   : HV_MEM_LAZY;
	get_bool(p, json_object_object_get(obj, "cpus_exclusive"), "cpus_exclusive", &c->cpus_exclusive);
	if (c->cpus_exclusive && !c->o.nr_cpus)
		problem(p, "cpus_exclusive", "needs \"cpus\"");
	c->log = opt_str(p, c, obj, "log", "log", 4095, NULL);
	c->log_level = opt_str(p, c, obj, "log_level", "log_level", 8, lvl);
	parse_deps(p, c, json_object_object_get(obj, "depends_on"));
}

int vmm_config_from_json(struct json_object *obj, const char *where, struct vmm_config *c, char *err,
			 size_t errlen, int *nproblems)
{
	struct problems p = {.buf = err, .len = errlen, .where = where ? where : ""};

	memset(c, 0, sizeof(*c));
	if (err && errlen)
		err[0] = 0;
	if (!obj || !json_object_is_type(obj, json_type_object))
		problem(&p, "(top)", "expected a JSON object, got %s", obj ? type_name(obj) : "null");
	else
		parse_top(&p, c, obj);
	if (c->nr_strs >= (int)(sizeof(c->strs) / sizeof(c->strs[0])))
		problem(&p, "(top)", "too many strings");
	problems_end(&p);
	if (nproblems)
		*nproblems = p.n;
	return p.n ? -EINVAL : 0;
}

int vmm_config_parse(const char *text, size_t len, struct vmm_config *c, char *err, size_t errlen)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *obj;
	int rc;

	memset(c, 0, sizeof(*c));
	if (!tok)
		return errf(err, errlen, -ENOMEM, "out of memory");
	if (len > CONFIG_FILE_MAX) {
		json_tokener_free(tok);
		return errf(err, errlen, -EFBIG, "(top): config larger than %u bytes", CONFIG_FILE_MAX);
	}
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	obj = json_tokener_parse_ex(tok, text, (int)len);
	if (!obj || json_tokener_get_parse_end(tok) < len) {
		size_t end = json_tokener_get_parse_end(tok);
		enum json_tokener_error e = json_tokener_get_error(tok);

		/* trailing white space after the object is fine */
		while (obj && end < len && strchr(" \t\r\n", text[end]))
			end++;
		if (!obj || end < len) {
			rc = errf(err, errlen, -EINVAL, "(top): not valid JSON at byte %zu: %s", end,
				  obj			       ? "data after the object"
				  : e == json_tokener_continue ? "unexpected end of input"
							       : json_tokener_error_desc(e));
			json_object_put(obj);
			json_tokener_free(tok);
			return rc;
		}
	}
	json_tokener_free(tok);
	rc = vmm_config_from_json(obj, "", c, err, errlen, NULL);
	json_object_put(obj);
	if (rc)
		vmm_config_free(c);
	return rc;
}

static int read_file(const char *path, size_t max, char **out, size_t *len, char *err, size_t errlen)
{
	struct stat st;
	char *buf;
	ssize_t n;
	size_t got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc;

	if (fd < 0)
		return errf(err, errlen, -errno, "cannot open %s: %s", path, strerror(errno));
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || (size_t)st.st_size > max) {
		rc = errf(err, errlen, -EINVAL, "%s: not a regular file of at most %zu bytes", path, max);
		close(fd);
		return rc;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		return errf(err, errlen, -ENOMEM, "out of memory");
	}
	while (got < (size_t)st.st_size && (n = read(fd, buf + got, (size_t)st.st_size - got)) > 0)
		got += (size_t)n;
	close(fd);
	buf[got] = 0;
	*out = buf;
	*len = got;
	return 0;
}

int vmm_json_load(const char *path, size_t max, struct json_object **out, char *err, size_t errlen)
{
	struct json_tokener *tok;
	char *buf;
	size_t len, end;
	int rc = read_file(path, max, &buf, &len, err, errlen);

	*out = NULL;
	if (rc)
		return rc;
	tok = json_tokener_new();
	if (!tok) {
		free(buf);
		return errf(err, errlen, -ENOMEM, "out of memory");
	}
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	*out = json_tokener_parse_ex(tok, buf, (int)len);
	end = json_tokener_get_parse_end(tok);
	while (*out && end < len && strchr(" \t\r\n", buf[end]))
		end++;
	if (!*out || end < len) {
		rc = errf(err, errlen, -EINVAL, "%s: not valid JSON at byte %zu: %s", path, end,
			  *out ? "data after the object"
			       : json_tokener_error_desc(json_tokener_get_error(tok)));
		json_object_put(*out);
		*out = NULL;
	}
	json_tokener_free(tok);
	free(buf);
	return rc;
}

int vmm_config_load(const char *path, struct vmm_config *c, char *err, size_t errlen)
{
	char *buf;
	size_t len;
	int rc;

	memset(c, 0, sizeof(*c));
	rc = read_file(path, CONFIG_FILE_MAX, &buf, &len, err, errlen);
	if (rc)
		return rc;
	rc = vmm_config_parse(buf, len, c, err, errlen);
	free(buf);
	return rc;
}

void vmm_config_free(struct vmm_config *c)
{
	for (int i = 0; i < c->nr_strs; i++)
		free(c->strs[i]);
	memset(c, 0, sizeof(*c));
}

const char *vmm_mem_policy_name(enum hv_mem_policy p)
{
	return p == HV_MEM_LOCK ? "lock" : p == HV_MEM_POPULATE ? "populate" : "lazy";
}
