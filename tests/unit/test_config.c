/* test_config.c — the VM config file parser (every field, every error) and fleet validation. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "vmm/config.h"
#include "vmm/fleet.h"

#define FULL                                                                                                 \
	"{\"name\":\"vm1\",\"memory\":\"256M\",\"vcpus\":1,\"kernel\":\"build/guest.elf\","                  \
	"\"cmdline\":\"work=kv ip=10.0.0.10/24\","                                                           \
	"\"net\":[{\"tap\":\"tap0\",\"bridge\":\"br0\",\"mac\":\"52:54:00:12:34:56\"}],"                     \
	"\"disks\":[{\"path\":\"vm1.img\"}],"                                                                \
	"\"serial\":\"file:vm1.serial\",\"control\":\"/run/doppel/vm1.sock\","                               \
	"\"protection\":{\"peer\":\"10.9.0.2:7700\",\"mode\":\"remus\",\"interval_ms\":25,"                  \
	"\"witness\":[\"http://10.0.0.200:2379\"],\"tls_dir\":\"/etc/doppel/tls\"}}"

static int parse(const char *s, struct vmm_config *c, char *err, size_t errlen)
{
	return vmm_config_parse(s, strlen(s), c, err, errlen);
}

/* The issue's example, exactly. */
static void test_issue_example(void **state)
{
	struct vmm_config c;
	char err[1024] = "";

	(void)state;
	assert_int_equal(parse(FULL, &c, err, sizeof(err)), 0);
	assert_string_equal(c.o.name, "vm1");
	assert_int_equal(c.o.mem, 256ull << 20);
	assert_int_equal(c.o.vcpus, 1);
	assert_string_equal(c.o.kernel, "build/guest.elf");
	assert_string_equal(c.o.cmdline, "work=kv ip=10.0.0.10/24");
	assert_string_equal(c.ip, "10.0.0.10");
	assert_int_equal(c.o.nr_net, 1);
	assert_string_equal(c.o.net[0], "tap=tap0,bridge=br0,mac=52:54:00:12:34:56");
	assert_memory_equal(c.mac[0], "\x52\x54\x00\x12\x34\x56", 6);
	assert_int_equal(c.o.nr_disk, 1);
	assert_string_equal(c.o.disk[0], "path=vm1.img");
	assert_string_equal(c.o.serial, "file:vm1.serial");
	assert_string_equal(c.o.control, "/run/doppel/vm1.sock");
	assert_true(c.prot.present);
	assert_string_equal(c.prot.peer, "10.9.0.2:7700");
	assert_string_equal(c.prot.mode, "remus");
	assert_int_equal(c.prot.interval_ms, 25);
	assert_int_equal(c.prot.heartbeat_timeout_ms, 200);
	assert_string_equal(c.prot.witness, "http://10.0.0.200:2379");
	assert_string_equal(c.prot.tls_dir, "/etc/doppel/tls");
	assert_null(c.prot.listen);
	assert_int_equal(c.o.mem_policy, HV_MEM_LAZY);
	assert_null(c.o.cpus);
	vmm_config_free(&c);
}

/* Every other field, with values other than the defaults. */
static void test_all_fields(void **state)
{
	static const char *s =
		"{\"name\":\"a.b_c-1\",\"memory\":16777216,\"vcpus\":4,\"kernel\":\"k\",\"serial\":\"none\","
		"\"net\":[{\"tap\":\"t1\"},{\"tap\":\"t2\",\"mac\":\"02:00:00:00:00:01\"}],"
		"\"disks\":[{\"path\":\"/d1\",\"readonly\":true,\"id\":\"serial1\"},{\"path\":\"/"
		"d2\",\"readonly\":false}],"
		"\"cpus\":[1,0],\"cpus_exclusive\":true,\"memory_policy\":\"lock\",\"log\":\"/tmp/x.log\","
		"\"log_level\":\"debug\",\"depends_on\":[\"db\",\"cache\"],"
		"\"protection\":{\"peer\":\"[fd00::2]:7700\",\"heartbeat_timeout_ms\":500,\"standby_lost\":"
		"\"fence\","
		"\"witness\":\"http://a:1,http://b:2\",\"witness_name\":\"w\",\"witness_ttl_ms\":2000,"
		"\"failover\":\"manual\",\"fence_cmd\":\"true\",\"listen\":\"0.0.0.0:7700\"}}";
	struct vmm_config c;
	char err[1024] = "";

	(void)state;
	assert_int_equal(parse(s, &c, err, sizeof(err)), 0);
	assert_string_equal(c.o.name, "a.b_c-1");
	assert_int_equal(c.o.mem, 16ull << 20);
	assert_int_equal(c.o.vcpus, 4);
	assert_string_equal(c.o.serial, "none");
	assert_int_equal(c.o.nr_net, 2);
	assert_string_equal(c.o.net[0], "tap=t1");
	assert_string_equal(c.o.net[1], "tap=t2,mac=02:00:00:00:00:01");
	assert_int_equal(c.o.nr_disk, 2);
	assert_string_equal(c.o.disk[0], "path=/d1,readonly,id=serial1");
	assert_string_equal(c.o.disk[1], "path=/d2");
	assert_int_equal(c.o.nr_cpus, 2);
	assert_int_equal(c.o.cpus[0], 1);
	assert_int_equal(c.o.cpus[1], 0);
	assert_true(c.cpus_exclusive);
	assert_int_equal(c.o.mem_policy, HV_MEM_LOCK);
	assert_string_equal(vmm_mem_policy_name(c.o.mem_policy), "lock");
	assert_string_equal(c.log, "/tmp/x.log");
	assert_string_equal(c.log_level, "debug");
	assert_int_equal(c.nr_depends_on, 2);
	assert_string_equal(c.depends_on[1], "cache");
	assert_string_equal(c.prot.peer, "[fd00::2]:7700");
	assert_null(c.prot.mode);
	assert_int_equal(c.prot.interval_ms, 25);
	assert_int_equal(c.prot.heartbeat_timeout_ms, 500);
	assert_string_equal(c.prot.standby_lost, "fence");
	assert_string_equal(c.prot.witness, "http://a:1,http://b:2");
	assert_string_equal(c.prot.witness_name, "w");
	assert_int_equal(c.prot.witness_ttl_ms, 2000);
	assert_string_equal(c.prot.failover, "manual");
	assert_string_equal(c.prot.fence_cmd, "true");
	assert_string_equal(c.prot.listen, "0.0.0.0:7700");
	assert_null(c.ip);
	vmm_config_free(&c);
}

/* One bad input -> exactly the expected lines. */
static void expect(const char *json, const char *lines)
{
	struct vmm_config c;
	char err[2048] = "";

	assert_int_equal(parse(json, &c, err, sizeof(err)), -EINVAL);
	if (strcmp(err, lines))
		fail_msg("input %s\n got: %s\nwant: %s", json, err, lines);
}

static void test_errors(void **state)
{
	(void)state;
	expect("", "(top): not valid JSON at byte 0: unexpected end of input");
	expect("[1]", "(top): expected a JSON object, got array");
	expect("{\"name\":\"a\",\"kernel\":\"k\"} x",
	       "(top): not valid JSON at byte 26: unexpected character");
	expect("{}", "name: missing (the VM's name)\nkernel: missing (the PVH ELF to boot)");
	expect("{\"name\":\"a\",\"kernel\":\"k\",\"bogus\":1}", "(top): unknown key \"bogus\"");
	expect("{\"name\":\"-a\",\"kernel\":\"k\"}",
	       "name: bad VM name \"-a\" (1-64 of A-Z a-z 0-9 . _ -, not starting with - or .)");
	expect("{\"name\":5,\"kernel\":\"\"}", "name: expected a string, got int\nkernel: expected a "
					       "non-empty string of at most 4095 bytes without NUL");
	expect("{\"name\":\"a\",\"kernel\":\"k\",\"memory\":\"lots\"}",
	       "memory: bad size \"lots\" (e.g. \"256M\", \"2G\")");
	expect("{\"name\":\"a\",\"kernel\":\"k\",\"memory\":\"3M\"}",
	       "memory: 3145728 bytes: must be 2M..64G in 2M steps");
	expect("{\"name\":\"a\",\"kernel\":\"k\",\"memory\":true}",
	       "memory: expected an integer, got boolean");
	expect("{\"name\":\"a\",\"kernel\":\"k\",\"vcpus\":0}", "vcpus: 0 out of range (1..64)");
	expect("{\"name\":\"a\",\"kernel\":\"k\",\"vcpus\":1.5}", "vcpus: expected an integer, got double");
	expect("{\"name\":\"a\",\"kernel\":\"k\",\"net\":{}}", "net: expected an array of NICs, got object");
	expect("{\"name\":\"a\",\"kernel\":\"k\",\"net\":[{},{\"tap\":\"a/"
	       "b\"},{\"tap\":\"t\",\"mac\":\"01:00:00:00:00:01\","
	       "\"x\":1},5,{\"tap\":\"t\",\"bridge\":\"b b\"}]}",
	       "net: 5 NICs, at most 4\nnet[0].tap: missing (the tap interface name)\nnet[1].tap: bad "
	       "interface name "
	       "\"a/b\"\nnet[2]: unknown key \"x\"\nnet[2]: --net: mac 01:00:00:00:00:01 is multicast or "
	       "zero\n"
	       "net[3]: expected an object {\"tap\": ..., \"bridge\": ..., \"mac\": ...}");
	expect("{\"name\":\"a\",\"kernel\":\"k\",\"disks\":[{\"readonly\":1},{\"path\":\"p\",\"id\":\"has "
	       "space\"}]}",
	       "disks[0].path: missing (the image file or block device)\ndisks[0].readonly: expected true or "
	       "false, got "
	       "int\ndisks[1]: --disk: bad id 'has space' (1..20 printable characters, no ',' or space)");
	expect("{\"name\":\"a\",\"kernel\":\"k\",\"serial\":\"tty\"}",
	       "serial: \"tty\" is not stdio, none or file:PATH");
	expect("{\"name\":\"a\",\"kernel\":\"k\",\"protection\":[]}",
	       "protection: expected an object, got array");
	expect("{\"name\":\"a\",\"kernel\":\"k\",\"protection\":{\"mode\":\"colo\",\"interval_ms\":0,"
	       "\"standby_lost\":\"x\",\"witness\":[\"ftp://"
	       "x\"],\"failover\":\"maybe\",\"listen\":\"nowhere\"}}",
	       "protection.peer: missing (the standby's ADDR:PORT)\nprotection.mode: \"colo\" is not one of "
	       "remus\n"
	       "protection.interval_ms: 0 out of range (1..10000)\nprotection.standby_lost: \"x\" is not one "
	       "of release, "
	       "hold, fence\nprotection.witness[0]: \"ftp://x\" is not an http:// or https:// "
	       "URL\nprotection.failover: "
	       "\"maybe\" is not one of auto, manual\nprotection.listen: \"nowhere\" is not ADDR:PORT");
	expect("{\"name\":\"a\",\"kernel\":\"k\",\"protection\":{\"peer\":\"host\",\"witness\":[]}}",
	       "protection.peer: \"host\" is not ADDR:PORT\nprotection.witness: expected a non-empty array "
	       "of etcd URLs");
	expect("{\"name\":\"a\",\"kernel\":\"k\",\"cpus\":[0,0,-1],\"memory_policy\":\"eager\",\"log_level\":"
	       "\"loud\"}",
	       "cpus[1]: CPU 0 listed twice\ncpus[2]: -1 out of range (0..4095)\nmemory_policy: \"eager\" is "
	       "not one of "
	       "lazy, populate, lock\nlog_level: \"loud\" is not one of error, warn, info, debug");
	expect("{\"name\":\"a\",\"kernel\":\"k\",\"cpus\":[],\"cpus_exclusive\":true}",
	       "cpus: expected a non-empty array of host CPU numbers\ncpus_exclusive: needs \"cpus\"");
	expect("{\"name\":\"a\",\"kernel\":\"k\",\"depends_on\":[\"ok\",\"bad name\",3]}",
	       "depends_on[1]: bad VM name \"bad name\"\ndepends_on[2]: expected a string, got int");
	expect("{\"name\":\"a\\u0000b\",\"kernel\":\"k\"}",
	       "name: expected a non-empty string of at most 64 bytes without NUL");
}

/* A small buffer still gets whole lines and the count of the rest. */
static void test_error_overflow(void **state)
{
	struct vmm_config c;
	char err[160];

	(void)state;
	assert_int_equal(parse("{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6}", &c, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "more problems"));
	assert_non_null(strstr(err, "(top): unknown key \"a\""));
}

static struct json_object *fleet_json(const char *s)
{
	struct json_object *o = json_tokener_parse(s);

	assert_non_null(o);
	return o;
}

static int fleet(const char *s, char *err, size_t errlen, int *n)
{
	struct vmm_fleet_host host = {.mem_available = 1ull << 30, .ncpus = 4};
	struct json_object *o = fleet_json(s);
	struct vmm_fleet f;
	int rc = vmm_fleet_from_json(o, &host, &f, err, errlen, n);

	json_object_put(o);
	if (rc == 0) {
		*n = f.nr_waves;
		vmm_fleet_free(&f);
	}
	return rc;
}

#define VM(name, extra) "{\"name\":\"" name "\",\"kernel\":\"/dev/null\",\"memory\":\"16M\"" extra "}"

static void test_fleet_ok(void **state)
{
	char err[4096] = "";
	int n = 0;

	(void)state;
	assert_int_equal(
		fleet("{\"host\":{\"memory\":\"64M\",\"cpus\":[0,1,2,3]},\"vms\":[" VM(
			      "a",
			      ",\"cpus\":[0]") "," VM("b",
						      ",\"depends_on\":[\"a\"]") "," VM("c",
											",\"depends_on\":["
											"\"b\",\"a\"]") "]}",
		      err, sizeof(err), &n),
		0);
	assert_int_equal(n, 3); /* waves: a, then b, then c */
}

static void test_fleet_problems(void **state)
{
	static const char *s = "{\"host\":{\"memory\":\"40M\",\"cpus\":[0,9]},\"vms\":[" VM(
		"a",
		",\"cpus\":[0],\"cpus_exclusive\":true,\"cmdline\":\"ip=10.0.0.1/24\","
		"\"net\":[{\"tap\":\"t0\",\"mac\":\"52:54:00:00:00:01\"}],\"disks\":[{\"path\":\"/d\"}],"
		"\"protection\":{\"peer\":\"h:1\"}") "," VM("a",
							    ",\"cpus\":[0,3],\"cmdline\":\"work=kv "
							    "ip=10.0.0.1/24\","
							    "\"net\":[{\"tap\":\"t0\",\"mac\":\"52:54:00:00:"
							    "00:01\"}],\"disks\":[{\"path\":\"/"
							    "d\",\"readonly\":true}],"
							    "\"protection\":{\"peer\":\"h:1\"},\"depends_"
							    "on\":[\"zz\"]") "," VM("c",
										    ",\"memory\":\"1G\","
										    "\"depends_on\":[\"c\"],"
										    "\"kernel\":\"/"
										    "nonexistent/k\"") "]}";
	char err[8192] = "";
	int n = 0;

	(void)state;
	assert_int_equal(fleet(s, err, sizeof(err), &n), -EINVAL);
	assert_string_equal(
		err, "host.cpus[1]: CPU 9 does not exist (this host has CPUs 0..3)\n"
		     "vms[1]: name a is also used by vms[0] (a)\n"
		     "vms[1]: tap t0 is also used by vms[0] (a)\n"
		     "vms[1]: MAC 52:54:00:00:00:01 is also used by vms[0] (a)\n"
		     "vms[1]: IP address 10.0.0.1 is also used by vms[0] (a)\n"
		     "vms[1]: standby address (protection.listen/peer) h:1 is also used by vms[0] (a)\n"
		     "vms[1]: disk /d is also used by vms[0] (a)\n"
		     "vms[2].kernel: cannot read /nonexistent/k: No such file or directory\n"
		     "vms[1].cpus[1]: CPU 3 is not a CPU of this host (or not in host.cpus)\n"
		     "vms[0].cpus[0]: CPU 0 is exclusive to a but 1 other VM(s) use it too\n"
		     "vms: the VMs need 1056 MiB of memory, the host has 40 MiB for them\n"
		     "vms[1].depends_on[0]: no VM named zz in this fleet\n"
		     "vms[2].depends_on[0]: a VM cannot depend on itself");
	assert_int_equal(n, 13);
}

/* fleet down/status load a fleet that may be running: its own VMs use the host's free memory, so
 * only up/check compare with MemAvailable (a fleet bigger than any host stands in for that). */
static void test_fleet_load_running(void **state)
{
	char path[] = "/tmp/test_fleet_XXXXXX", err[4096] = "";
	const char *s = "{\"vms\":[" VM("big", ",\"memory\":\"64G\"") "]}";
	struct vmm_fleet f;
	int fd = mkstemp(path), n = 0;

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
	close(fd);
	assert_int_equal(vmm_fleet_load(path, &f, err, sizeof(err), &n), -EINVAL);
	assert_int_equal(n, 1);
	assert_non_null(strstr(err, "vms: the VMs need 65536 MiB of memory, the host has "));
	assert_int_equal(vmm_fleet_load_running(path, &f, err, sizeof(err), &n), 0);
	assert_int_equal(f.nr, 1);
	assert_string_equal(f.vm[0].o.name, "big");
	vmm_fleet_free(&f);
	unlink(path);
}

static void test_fleet_shape(void **state)
{
	char err[4096] = "";
	int n = 0;

	(void)state;
	assert_int_equal(fleet("{\"vms\":[]}", err, sizeof(err), &n), -EINVAL);
	assert_string_equal(err, "vms: expected an array of 1..4096 VM configs");
	assert_int_equal(
		fleet("{\"host\":{\"x\":1},\"vms\":[{\"name\":\"a\"}],\"y\":2}", err, sizeof(err), &n),
		-EINVAL);
	assert_string_equal(
		err, "(top): unknown key \"y\"\nhost: unknown key \"x\"\nvms[0].kernel: missing (the PVH "
		     "ELF to boot)");
	assert_int_equal(fleet("{\"vms\":[" VM("a", ",\"depends_on\":[\"b\"]") "," VM(
				       "b", ",\"depends_on\":[\"a\"]") "]}",
			       err, sizeof(err), &n),
			 -EINVAL);
	assert_string_equal(err, "vms: depends_on has a cycle");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_issue_example), cmocka_unit_test(test_all_fields),
		cmocka_unit_test(test_errors),	      cmocka_unit_test(test_error_overflow),
		cmocka_unit_test(test_fleet_ok),      cmocka_unit_test(test_fleet_problems),
		cmocka_unit_test(test_fleet_shape),   cmocka_unit_test(test_fleet_load_running),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
