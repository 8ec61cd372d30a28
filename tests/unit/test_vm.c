/* test_vm.c — VM lifecycle on real KVM: start, nested pause holds, the DMA gate, stop, exit port, bad configs. */
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "hv/hv.h"
#include "tests/unit/need.h"

#define ENTRY 0x100000u

/* A VM whose one vCPU spins at ENTRY ("jmp ."), or writes `status` to the exit port. */
static struct vm *make_vm(int nr_vcpus, int exit_status)
{
	struct vm_config cfg = {.name = "t", .mem_size = 16ull << 20, .nr_vcpus = nr_vcpus};
	struct vm *vm;
	char err[256];
	/* mov al, status; mov dx, 0x501; out dx, al; jmp . */
	uint8_t out[] = {0xb0, (uint8_t)exit_status, 0x66, 0xba, 0x01, 0x05, 0xee, 0xeb, 0xfe};
	uint8_t spin[] = {0xeb, 0xfe};

	assert_int_equal(vm_create(&cfg, &vm, err, sizeof(err)), 0);
	if (exit_status >= 0)
		assert_int_equal(mem_write(vm_mem(vm), ENTRY, out, sizeof(out)), 0);
	else
		assert_int_equal(mem_write(vm_mem(vm), ENTRY, spin, sizeof(spin)), 0);
	assert_int_equal(vm_set_pvh_entry(vm, ENTRY, 0), 0);
	return vm;
}

static void test_pause_holds_nest(void **state)
{
	struct vm *vm;
	struct vm_pause_stats ps;

	(void)state;
	need_kvm();
	vm = make_vm(2, -1);
	assert_int_equal(vm_start(vm), 0);
	assert_int_equal(vm_get_state(vm), VM_RUNNING);
	assert_int_equal(vm_pause(vm), 0); /* e.g. the operator */
	assert_int_equal(vm_get_state(vm), VM_PAUSED);
	assert_int_equal(vm_pause(vm), 0); /* e.g. a checkpoint */
	assert_int_equal(vm_resume(vm), 0);
	assert_int_equal(vm_get_state(vm), VM_PAUSED); /* the operator still holds it */
	assert_int_equal(vm_resume(vm), 0);
	assert_int_equal(vm_get_state(vm), VM_RUNNING);
	assert_int_equal(vm_resume(vm), -EINVAL); /* unbalanced */
	vm_pause_stats(vm, &ps);
	assert_int_equal(ps.count, 1); /* only the first hold stopped the vCPUs */
	assert_true(ps.last_ns > 0);
	vm_stop(vm, 4);
	assert_int_equal(vm_wait(vm), 4);
	assert_int_equal(vm_pause(vm), -ESHUTDOWN);
	assert_int_equal(vm_resume(vm), -ESHUTDOWN);
	vm_destroy(vm);
}

static void test_hold_before_start_starts_parked(void **state)
{
	struct vm *vm;

	(void)state;
	need_kvm();
	vm = make_vm(1, 9); /* would exit at once if it ran */
	assert_int_equal(vm_pause(vm), 0);
	assert_int_equal(vm_start(vm), 0);
	usleep(50000);
	assert_int_equal(vm_get_state(vm), VM_PAUSED);
	assert_int_equal(vm_resume(vm), 0);
	assert_int_equal(vm_wait(vm), 9); /* ran once released: exit port status */
	vm_destroy(vm);
}

static void test_bad_configs(void **state)
{
	struct vm_config cfg = {.mem_size = 16ull << 20, .nr_vcpus = 0};
	struct vm *vm = (struct vm *)1;
	char err[256];

	(void)state;
	assert_int_equal(vm_create(&cfg, &vm, err, sizeof(err)), -EINVAL);
	assert_null(vm);
	assert_non_null(strstr(err, "vCPU"));
	cfg.nr_vcpus = 1;
	cfg.mem_size = 3 << 20; /* not a 2 MiB multiple */
	assert_int_equal(vm_create(&cfg, &vm, err, sizeof(err)), -EINVAL);
	cfg.mem_size = HV_MEM_MAX + (2 << 20);
	assert_int_equal(vm_create(&cfg, &vm, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "memory"));
}

static int nop_io(void *o, uint64_t off, void *d, uint32_t l, bool w)
{
	(void)o, (void)off, (void)d, (void)l, (void)w;
	return 0;
}

static void test_io_registration(void **state)
{
	struct vm *vm;

	(void)state;
	need_kvm();
	vm = make_vm(1, -1);
	assert_int_equal(vm_io_register(vm, IO_PIO, 0x3f8, 8, nop_io, NULL), 0);
	assert_int_equal(vm_io_register(vm, IO_PIO, 0x3fc, 2, nop_io, NULL), -EEXIST);
	assert_int_equal(vm_io_register(vm, IO_PIO, 0x501, 1, nop_io, NULL), -EEXIST); /* exit port */
	assert_int_equal(vm_io_register(vm, IO_PIO, 0xfff0, 0x20, nop_io, NULL), -EINVAL);
	assert_int_equal(vm_io_register(vm, IO_MMIO, 0xfeb00000, 0x200, nop_io, NULL), 0);
	assert_int_equal(vm_io_register(vm, IO_MMIO, UINT64_MAX - 4, 0x10, nop_io, NULL), -EINVAL);
	vm_destroy(vm);
}

/* A stub device counting its resumed hook. */
static int stub_resumed;
static void stub_resumed_cb(void *dev)
{
	(void)dev;
	__atomic_fetch_add(&stub_resumed, 1, __ATOMIC_SEQ_CST);
}
static const struct hv_dev_ops stub_ops = {.kind = "stub", .resumed = stub_resumed_cb};

static int pause_done;
static void *pause_thread(void *arg)
{
	assert_int_equal(vm_pause(arg), 0);
	__atomic_store_n(&pause_done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

/* The DMA gate: a pause waits for an open bracket, brackets cannot open while any hold is out, and
 * the last resume calls the devices' resumed hooks (where a device delivers what it held back). */
static void test_dma_gate(void **state)
{
	struct vm *vm;
	pthread_t th;
	char err[256];

	(void)state;
	need_kvm();
	vm = make_vm(1, -1);
	assert_int_equal(vm_dev_attach(vm, "stub0", &stub_ops, &stub_resumed, err, sizeof(err)), 0);
	assert_int_equal(vm_start(vm), 0);
	assert_true(vm_dma_begin(vm)); /* e.g. net RX writing a frame into guest RAM */
	pause_done = 0;
	assert_int_equal(pthread_create(&th, NULL, pause_thread, vm), 0);
	usleep(50 * 1000); /* a pause that does not wait for the bracket would be done by now */
	assert_int_equal(__atomic_load_n(&pause_done, __ATOMIC_SEQ_CST), 0);
	vm_dma_end(vm);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(pause_done, 1);
	assert_int_equal(vm_get_state(vm), VM_PAUSED);
	assert_false(vm_dma_begin(vm)); /* closed while paused */
	assert_int_equal(vm_pause(vm), 0); /* a nested hold */
	assert_int_equal(vm_resume(vm), 0);
	assert_int_equal(stub_resumed, 0); /* still held: no resumed hook yet */
	assert_false(vm_dma_begin(vm));
	assert_int_equal(vm_resume(vm), 0);
	assert_int_equal(stub_resumed, 1); /* last hold released */
	assert_true(vm_dma_begin(vm));
	vm_dma_end(vm);
	vm_stop(vm, 0);
	assert_int_equal(vm_wait(vm), 0);
	vm_destroy(vm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pause_holds_nest),
		cmocka_unit_test(test_hold_before_start_starts_parked),
		cmocka_unit_test(test_bad_configs),
		cmocka_unit_test(test_io_registration),
		cmocka_unit_test(test_dma_gate),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
