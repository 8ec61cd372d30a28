/* test_two_vms.c — two VMs in one process on real KVM: run, pause, resume and destroy apart. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/clock.h"
#include "hv/dev/uart.h"
#include "hv/dirty.h"
#include "hv/hv.h"
#include "hv/pvh.h"

#define ENTRY 0x100000u
#define COUNTER_GPA 0x2000u
#define WAIT_MS 20000

static bool have_kvm(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/* A VM whose vCPU counts: "inc dword [0x2000]; jmp back", in 32-bit flat mode. */
static struct vm *counter_vm(const char *name)
{
	struct vm_config cfg = {.name = name, .mem_size = 16ull << 20, .nr_vcpus = 1};
	uint8_t code[] = {0xff, 0x05, 0x00, 0x20, 0x00, 0x00, 0xeb, 0xf8};
	struct vm *vm = NULL;
	char err[256];

	if (vm_create(&cfg, &vm, err, sizeof(err)))
		fail_msg("vm_create %s: %s", name, err);
	assert_int_equal(mem_write(vm_mem(vm), ENTRY, code, sizeof(code)), 0);
	assert_int_equal(vm_set_pvh_entry(vm, ENTRY, 0), 0);
	return vm;
}

static uint32_t counter(struct vm *vm)
{
	volatile uint32_t *c = gpa_ptr(vm_mem(vm), COUNTER_GPA, 4);

	assert_non_null((void *)c);
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

/* Wait until vm's counter moves past `from` (fails after WAIT_MS). */
static uint32_t wait_past(struct vm *vm, uint32_t from)
{
	uint64_t end = now_ns() + WAIT_MS * 1000000ull;
	uint32_t c;

	while ((c = counter(vm)) == from) {
		if (now_ns() > end)
			fail_msg("%s made no progress in %d ms (counter %u)", vm_name(vm), WAIT_MS, from);
		poll(NULL, 0, 1);
	}
	return c;
}

/* `paused` holds still while `running` keeps counting. */
static void check_one_paused(struct vm *paused, struct vm *running)
{
	uint32_t p0 = counter(paused), r0 = counter(running);

	assert_int_equal(vm_get_state(paused), VM_PAUSED);
	assert_int_equal(vm_get_state(running), VM_RUNNING);
	wait_past(running, r0);
	wait_past(running, counter(running));
	poll(NULL, 0, 20);
	assert_int_equal(counter(paused), p0);
}

static void test_counters(void **state)
{
	struct vm *a, *b;
	uint32_t c;

	(void)state;
	if (!have_kvm())
		skip();
	a = counter_vm("a");
	b = counter_vm("b");
	assert_int_equal(vm_start(a), 0);
	assert_int_equal(vm_start(b), 0);
	wait_past(a, 0);
	wait_past(b, 0);

	assert_int_equal(vm_pause(a), 0);
	check_one_paused(a, b);
	assert_int_equal(vm_resume(a), 0);
	wait_past(a, counter(a));

	assert_int_equal(vm_pause(b), 0);
	check_one_paused(b, a);
	assert_int_equal(vm_resume(b), 0);
	wait_past(b, counter(b));

	/* Destroying a leaves b running. */
	vm_destroy(a);
	assert_int_equal(vm_get_state(b), VM_RUNNING);
	c = wait_past(b, counter(b));
	wait_past(b, c);
	assert_string_equal(vm_error(b), "");
	vm_stop(b, 3);
	assert_int_equal(vm_wait(b), 3);
	vm_destroy(b);
}

/* ---- two guest.elf VMs with their own UART, devices and dirty logs ---- */

struct gvm {
	struct vm *vm;
	struct uart *uart;
	int rd, wr;
	char out[8192];
	size_t len;
};

static void gvm_create(struct gvm *g, const char *name, const char *cmdline)
{
	struct vm_config cfg = {.name = name, .mem_size = 64ull << 20, .nr_vcpus = 1};
	const char *b = getenv("DOPPEL_BUILD");
	char path[4096], err[256];
	struct pvh_image img;
	int p[2];

	memset(g, 0, sizeof(*g));
	snprintf(path, sizeof(path), "%s/guest.elf", b ? b : "build");
	assert_int_equal(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
	g->rd = p[0];
	g->wr = p[1];
	if (vm_create(&cfg, &g->vm, err, sizeof(err)))
		fail_msg("vm_create %s: %s", name, err);
	assert_int_equal(uart_attach(g->vm, UART_COM1_BASE, g->wr, &g->uart), 0);
	if (pvh_load_file(vm_mem(g->vm), path, cmdline, &img, err, sizeof(err)))
		fail_msg("pvh_load_file %s: %s", path, err);
	assert_int_equal(vm_set_pvh_entry(g->vm, img.entry, img.start_info), 0);
}

static void gvm_drain(struct gvm *g)
{
	ssize_t n;

	while (g->len < sizeof(g->out) - 1 &&
	       (n = read(g->rd, g->out + g->len, sizeof(g->out) - 1 - g->len)) > 0)
		g->len += (size_t)n;
	g->out[g->len] = 0;
}

static void gvm_wait_for(struct gvm *g, const char *what)
{
	uint64_t end = now_ns() + WAIT_MS * 1000000ull;

	for (;;) {
		gvm_drain(g);
		if (strstr(g->out, what))
			return;
		if (now_ns() > end)
			fail_msg("%s never printed '%s'; output: %s", vm_name(g->vm), what, g->out);
		poll(NULL, 0, 5);
	}
}

static void gvm_destroy(struct gvm *g)
{
	vm_destroy(g->vm); /* also frees the UART */
	close(g->rd);
	close(g->wr);
}

static int64_t dirty_pages(struct dirty_log *d, struct vm *vm)
{
	uint64_t *bm = calloc(dirty_bitmap_words(vm_mem(vm)->nr_pages), 8);
	int64_t n;

	assert_non_null(bm);
	n = dirty_log_sync(d, bm);
	free(bm);
	assert_true(n >= 0);
	return n;
}

static void test_guests(void **state)
{
	struct gvm a, b;
	struct dirty_log *da = NULL, *db = NULL;
	char err[256];

	(void)state;
	if (!have_kvm())
		skip();
	gvm_create(&a, "ga", "work=dirty ws=1M pi=50");
	gvm_create(&b, "gb", "work=dirty ws=1M pi=50");
	assert_int_equal(vm_start(a.vm), 0);
	assert_int_equal(vm_start(b.vm), 0);
	gvm_wait_for(&a, "guest: dirty ws=");
	gvm_wait_for(&b, "guest: dirty ws=");

	/* One dirty log per VM, at the same time. */
	assert_int_equal(dirty_log_start(&da, a.vm, DIRTY_START_CLEAN, err, sizeof(err)), 0);
	assert_int_equal(dirty_log_start(&db, b.vm, DIRTY_START_CLEAN, err, sizeof(err)), 0);
	poll(NULL, 0, 50);
	assert_true(dirty_pages(da, a.vm) > 0);
	assert_true(dirty_pages(db, b.vm) > 0);

	/* a paused: it dirties nothing more while b keeps writing. */
	assert_int_equal(vm_pause(a.vm), 0);
	(void)dirty_pages(da, a.vm);
	(void)dirty_pages(db, b.vm);
	poll(NULL, 0, 100);
	assert_int_equal(dirty_pages(da, a.vm), 0);
	assert_true(dirty_pages(db, b.vm) > 0);
	assert_int_equal(vm_resume(a.vm), 0);
	poll(NULL, 0, 50);
	assert_true(dirty_pages(da, a.vm) > 0);

	/* Destroy a (its log first); b runs on. */
	dirty_log_free(da);
	gvm_destroy(&a);
	(void)dirty_pages(db, b.vm);
	poll(NULL, 0, 100);
	assert_true(dirty_pages(db, b.vm) > 0);
	assert_int_equal(vm_get_state(b.vm), VM_RUNNING);
	dirty_log_free(db);
	gvm_drain(&b);
	assert_null(strstr(b.out, "error"));
	vm_stop(b.vm, 0);
	assert_int_equal(vm_wait(b.vm), 0);
	assert_string_equal(vm_error(b.vm), "");
	gvm_destroy(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_counters),
		cmocka_unit_test(test_guests),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
