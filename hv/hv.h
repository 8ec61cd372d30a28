/* hv.h — the narrow VMM interface: create, memory map, devices, run, pause, resume, stop. */
#ifndef DOPPEL_HV_H
#define DOPPEL_HV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>

#include "hv/mem.h"

#define HV_MAX_VCPUS 64
#define HV_MAX_IO 64

/* Guest-exit port: the guest writes one byte (its status) here to power off (as QEMU's isa-debug-exit,
 * whose default iobase this is; under QEMU the process exit status is (status << 1) | 1). */
#define HV_EXIT_PORT 0x501

enum io_space { IO_PIO, IO_MMIO };

/* A device access. Called on a vCPU thread with no hv lock held: devices lock themselves.
 * `off` is relative to the registered base; `data` holds `len` (1,2,4,8) bytes, little endian.
 * For reads the handler fills data (it is pre-zeroed). Return 0, or -1 to report the access as
 * an error (the VM stops with a clear message). */
typedef int (*io_fn)(void *opaque, uint64_t off, void *data, uint32_t len, bool is_write);

struct vm_config {
	const char *name;  /* for messages; may be NULL */
	uint64_t mem_size; /* bytes, page multiple, 2 MiB .. HV_MEM_MAX */
	int nr_vcpus;      /* 1 .. HV_MAX_VCPUS */
};
#define HV_MEM_MIN (2ull << 20)
#define HV_MEM_MAX (64ull << 30)

enum vm_state { VM_CREATED, VM_RUNNING, VM_PAUSED, VM_STOPPED };

struct vm;

/* Create a VM: /dev/kvm VM, RAM (memfd), in-kernel irqchip + PIT, vCPUs (not yet running), CPUID.
 * Returns 0 or -errno with a one-line reason in err (size errlen). */
int vm_create(const struct vm_config *cfg, struct vm **out, char *err, size_t errlen);

/* Stop vCPU threads if running, free everything. NULL-safe. */
void vm_destroy(struct vm *vm);

struct guest_mem *vm_mem(struct vm *vm);
int vm_nr_vcpus(const struct vm *vm);
int vm_fd(const struct vm *vm);
int vm_kvm_fd(const struct vm *vm); /* the VM's /dev/kvm fd */
const char *vm_name(const struct vm *vm);
/* What to save of this VM's vCPUs and in-kernel devices (hv/kvm_state.h), set up at create. */
struct kvm_state_ctx;
const struct kvm_state_ctx *vm_kvm_state(const struct vm *vm);
int vm_vcpu_fd(const struct vm *vm, int idx);
enum vm_state vm_get_state(const struct vm *vm);
const char *vm_state_name(enum vm_state s);

/* Register a device over [base, base+len) in one space. Overlaps are rejected (-EEXIST).
 * Only before vm_start. */
int vm_io_register(struct vm *vm, enum io_space space, uint64_t base, uint64_t len, io_fn fn,
		   void *opaque);

/* Device state for checkpoints. Each device with guest-visible state registers one save/restore pair
 * (kept apart from host resources: a tap fd is not state). save writes at most `max` bytes and returns
 * the count or -errno; restore validates before changing anything and returns 0 or -errno. Both are
 * called only while the VM is paused (or not started). Names are unique, 1..31 chars. */
#define HV_MAX_DEVSTATE 16
typedef int (*devstate_save_fn)(void *opaque, void *buf, size_t len);
typedef int (*devstate_restore_fn)(void *opaque, const void *buf, size_t len);
struct vm_devstate {
	char name[32];
	size_t max;
	devstate_save_fn save;
	devstate_restore_fn restore;
	void *opaque;
};
int vm_devstate_register(struct vm *vm, const char *name, size_t max, devstate_save_fn save,
			 devstate_restore_fn restore, void *opaque);
int vm_devstate_count(const struct vm *vm);
const struct vm_devstate *vm_devstate_get(const struct vm *vm, int idx);

/* Set the boot vCPU state for a PVH entry: 32-bit flat protected mode, paging off, eip = entry,
 * ebx = start_info gpa. Other vCPUs stay in their reset state (the guest does not start APs). */
int vm_set_pvh_entry(struct vm *vm, uint32_t entry, uint32_t start_info);

/* Called on the thread that ends the VM (guest exit, fault, vm_stop) exactly once. */
typedef void (*vm_exit_cb)(void *opaque);
void vm_set_exit_cb(struct vm *vm, vm_exit_cb cb, void *opaque);

/* Start one thread per vCPU. */
int vm_start(struct vm *vm);

/* Quiesce: kick every vCPU out of KVM_RUN and wait until each has acknowledged (its thread is parked
 * outside KVM_RUN). On return no guest code runs and vCPU state may be read or written.
 * Holds nest: each vm_pause must be matched by one vm_resume, and the vCPUs run again only when the
 * last hold is released, so a checkpoint, a throttle and an operator's pause never undo each other.
 * A hold taken before vm_start makes the vCPUs start parked. vm_resume returns -EINVAL when no hold
 * is outstanding. Both return -ESHUTDOWN once the VM has stopped. Not callable from a vCPU thread. */
int vm_pause(struct vm *vm);
int vm_resume(struct vm *vm);

/* Last pause latency (request -> all acknowledged), in ns, and totals. */
struct vm_pause_stats {
	uint64_t count, last_ns, max_ns, total_ns;
};
void vm_pause_stats(const struct vm *vm, struct vm_pause_stats *out);

/* Request a stop with an exit status; vCPU threads end. Safe from any thread, idempotent
 * (the first status wins). */
void vm_stop(struct vm *vm, int status);

/* Wait until all vCPU threads have ended. Returns the exit status: the guest's byte on a guest exit,
 * the vm_stop status otherwise; a VM that failed (triple fault, bad access...) returns 1 (or the
 * vm_stop status) and vm_error() says why. */
int vm_wait(struct vm *vm);
const char *vm_error(const struct vm *vm); /* "" when none */

/* Per-vCPU exit counters, for status. */
uint64_t vm_exit_count(const struct vm *vm);

#endif
