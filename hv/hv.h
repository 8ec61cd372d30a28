/* hv.h — the hypervisor seam: VM lifecycle, memory, devices, IRQs, state; no KVM fd leaves hv/. */
#ifndef DOPPEL_HV_H
#define DOPPEL_HV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>

#include "hv/mem.h"

/*
 * Everything outside hv/ drives a VM through this header, hv/dirty.h (dirty logging), hv/mem.h
 * (guest RAM) and the device headers in hv/dev/. No KVM file descriptor, ioctl or struct crosses it:
 * the KVM backend lives in hv/kvm/ (vm.c, vcpu.c, kvm_state*.c, kvm_dirty.c), the devices in hv/dev/
 * (uart, virtio-mmio transport + virtqueues, virtio-net + tap, the device table and slot allocator,
 * the state encoder). A second backend (Xen, a VMX-only feature) implements the same functions.
 */

#define HV_MAX_VCPUS 64
#define HV_MAX_IO 64

/* Guest-exit port: the guest writes one byte (its status) here to power off (as QEMU's isa-debug-exit,
 * whose default iobase this is; under QEMU the process exit status is (status << 1) | 1). */
#define HV_EXIT_PORT 0x501

/* Idle doorbell: a guest with nothing to do writes a 32-bit timeout in microseconds to this port
 * (4-byte OUT; 0 only consumes a pending event); its vCPU thread then sleeps in the VMM until an
 * event for the guest (vm_wake: a device filled a used ring or raised an interrupt), the timeout, or
 * a pause or stop request, whichever comes first — an idle guest costs no host CPU. A 4-byte IN
 * returns HV_IDLE_MAGIC, so a guest can tell a VMM with the doorbell from one without (reads float
 * high). Events are sticky: one that arrives while the guest is not waiting ends its next wait at
 * once, so "poll, then wait" loses no wakeup. */
#define HV_IDLE_PORT 0x504
#define HV_IDLE_MAGIC 0x454c4449u /* "IDLE" */

enum io_space { IO_PIO, IO_MMIO };

/* A device access. Called on a vCPU thread with no hv lock held: devices lock themselves.
 * `off` is relative to the registered base; `data` holds `len` (1,2,4,8) bytes, little endian.
 * For reads the handler fills data (it is pre-zeroed). Return 0, or -1 to report the access as
 * an error (the VM stops with a clear message). */
typedef int (*io_fn)(void *opaque, uint64_t off, void *data, uint32_t len, bool is_write);

/* How guest RAM is backed up front: lazy (pages on first touch), populate (every page allocated at
 * create time), lock (populated and mlock'ed: never swapped, never fails later). */
enum hv_mem_policy { HV_MEM_LAZY, HV_MEM_POPULATE, HV_MEM_LOCK };

struct vm_config {
	const char *name; /* for messages; may be NULL */
	uint64_t mem_size; /* bytes, page multiple, 2 MiB .. HV_MEM_MAX */
	int nr_vcpus; /* 1 .. HV_MAX_VCPUS */
	enum hv_mem_policy mem_policy; /* default lazy */
	const int *cpus; /* host CPUs every vCPU thread is pinned to (affinity mask); NULL: no pinning */
	int nr_cpus;
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
const char *vm_name(const struct vm *vm);
enum vm_state vm_get_state(const struct vm *vm);
const char *vm_state_name(enum vm_state s);

/* ---- whole-VM state (checkpoints, snapshots, migration) ----------------------------------------
 * Backend blobs, opaque outside hv/ (KVM: the versioned tagged sections of hv/kvm/kvm_state.h). The
 * vCPUs must be parked (vm_pause, or not started). A checkpoint saves every vCPU and the platform
 * (in-kernel irqchip, PIT, clock) and restores them in the same order: every vCPU first, then the
 * platform last, just before resuming, so the guest clock restarts as late as possible.
 * save: 0 and *used, -ENOSPC when len is short (a buffer of the _max size never is), or -errno of the
 * backend with one line in err. restore validates the whole blob before applying it: -EINVAL for a
 * malformed blob (nothing changed), -EOPNOTSUPP when it needs a capability this VM lacks, other
 * -errno when the backend refuses part of it (the vCPU/platform may then be partly restored). */
size_t vm_vcpu_state_max(const struct vm *vm);
size_t vm_platform_state_max(const struct vm *vm);
int vm_vcpu_save(struct vm *vm, int idx, void *buf, size_t len, size_t *used, char *err, size_t errlen)
	__attribute__((warn_unused_result));
int vm_vcpu_restore(struct vm *vm, int idx, const void *buf, size_t len, char *err, size_t errlen)
	__attribute__((warn_unused_result));
int vm_platform_save(struct vm *vm, void *buf, size_t len, size_t *used, char *err, size_t errlen)
	__attribute__((warn_unused_result));
int vm_platform_restore(struct vm *vm, const void *buf, size_t len, char *err, size_t errlen)
	__attribute__((warn_unused_result));
/* Record name of the platform blob in streams and snapshot files ("kvm-vm" for the KVM backend). */
const char *vm_platform_state_name(const struct vm *vm);

/* Drive interrupt line `gsi` of the VM's interrupt controller to `level` (1 assert, 0 deassert).
 * Any thread; a device model calls it with its own lock held. Returns 0 or -errno (the VM is gone). */
int vm_irq_line(struct vm *vm, int gsi, int level);

/* An event for the guest happened (a device put buffers in a used ring, an interrupt was raised):
 * end a vCPU's idle-doorbell wait, or make the next one return at once. Any thread, cheap when no
 * vCPU waits. */
void vm_wake(struct vm *vm);
/* Idle doorbell counters: waits that slept, and of those the ones an event ended. */
void vm_idle_stats(const struct vm *vm, uint64_t *waits, uint64_t *wakeups);

/* Register a device over [base, base+len) in one space. Overlaps are rejected (-EEXIST).
 * Only before vm_start. */
int vm_io_register(struct vm *vm, enum io_space space, uint64_t base, uint64_t len, io_fn fn, void *opaque);

/* ---- devices (hv/dev/) ------------------------------------------------------------------------
 * One ops shape for every device, in the spirit of kvmtool's device headers and Firecracker's
 * device manager. A device model is created by its own constructor (uart_new, virtio_net_attach...),
 * then handed to vm_dev_attach under a unique name, which is also the name of its state record in
 * streams and snapshot files ("uart0", "net0", "net0-host"). From then on the VM owns it: vm_destroy
 * calls detach on every device, in reverse attach order, after the vCPUs have stopped.
 * Every hook is optional. All are called with no hv lock held; save/restore/reset only while the VM
 * is paused (or not started). */
struct hv_dev_ops {
	const char *kind; /* model, for messages: "uart", "virtio-net", "net-host" */
	/* Claim guest-visible resources: I/O windows (vm_io_register), a virtio-mmio slot
	 * (vm_mmio_slot_claim). Claims cannot be given back, so the last step that can fail claims.
	 * Returns 0, or -errno with one line in err. */
	int (*attach)(struct vm *vm, void *dev, char *err, size_t errlen);
	/* Return to power-on state (guest-visible registers; host resources stay). */
	void (*reset)(void *dev);
	/* Upper bound of save's output (0 or NULL hook: the device has no state). */
	size_t (*state_size)(void *dev);
	/* Write the guest-visible state (hv/dev/state.h encoder): bytes written or -ENOSPC. */
	int (*save)(void *dev, void *buf, size_t len);
	/* Validate all of buf, then apply it: 0, or -EINVAL with the device unchanged. */
	int (*restore)(void *dev, const void *buf, size_t len);
	/* Release host resources and free the device (the VM's vCPUs have stopped). */
	void (*detach)(void *dev);
	/* Optional: the last pause hold was released; deliver what was held back while paused (see
	 * vm_dma_begin). Called on the resuming thread with no hv lock held. */
	void (*resumed)(void *dev);
};

#define HV_MAX_DEVS 16
#define HV_DEV_NAME_MAX 32 /* names are 1..31 characters */
#define HV_MAX_DEVSTATE HV_MAX_DEVS /* devices with state: checkpoints size their tables by it */

/* Attach `dev` under `name`: checks the name (-EINVAL) is unique (-EEXIST) and the table has room
 * (-ENOSPC) before calling ops->attach. Only before vm_start. On failure nothing was taken and the
 * caller still owns dev. Returns 0 or -errno with one line in err. */
int vm_dev_attach(struct vm *vm, const char *name, const struct hv_dev_ops *ops, void *dev, char *err,
		  size_t errlen) __attribute__((warn_unused_result));
/* The device attached under `name`, or NULL. */
void *vm_dev_find(const struct vm *vm, const char *name);
/* Call reset on every device, in attach order (the VM paused or not started). */
void vm_dev_reset_all(struct vm *vm);

/* The devices with state, in attach order, as checkpoints walk them. `max` bounds save's output;
 * save/restore/opaque are the device's ops and the device itself. */
typedef int (*devstate_save_fn)(void *opaque, void *buf, size_t len);
typedef int (*devstate_restore_fn)(void *opaque, const void *buf, size_t len);
struct vm_devstate {
	char name[HV_DEV_NAME_MAX];
	size_t max;
	devstate_save_fn save;
	devstate_restore_fn restore;
	void *opaque;
	const struct hv_dev_ops *ops;
};
int vm_devstate_count(const struct vm *vm);
const struct vm_devstate *vm_devstate_get(const struct vm *vm, int idx);

/* ---- virtio-mmio slots: the one MMIO window + IRQ allocator ------------------------------------
 * Layout as QEMU microvm: slot s (0..HV_MMIO_SLOTS-1) at HV_MMIO_BASE + HV_MMIO_SLOT_SIZE * s with
 * GSI HV_MMIO_IRQ_BASE + s; slots are handed out from the top in claim order, so the first device
 * gets 512@0xfeb00e00:12 as under QEMU microvm, the second 512@0xfeb00c00:11, and so on. */
#define HV_MMIO_BASE 0xfeb00000ull
#define HV_MMIO_SLOT_SIZE 0x200ull
#define HV_MMIO_SLOTS 8
#define HV_MMIO_IRQ_BASE 5

struct hv_mmio_slot {
	int index; /* claim order: 0 for the first device */
	uint64_t base; /* guest-physical base of the HV_MMIO_SLOT_SIZE window */
	int gsi; /* its interrupt line (vm_irq_line) */
	char cmdline[64]; /* "virtio_mmio.device=512@0x...:GSI", also appended to vm_dev_cmdline */
};

/* Take the next free slot and register fn/opaque over its window. Returns 0 and *slot, -ENOSPC when
 * all slots are taken, or the vm_io_register error; on error no slot is consumed. Before vm_start. */
int vm_mmio_slot_claim(struct vm *vm, io_fn fn, void *opaque, struct hv_mmio_slot *slot)
	__attribute__((warn_unused_result));
/* The kernel command-line fragments of every claimed slot, space separated, in claim order ("" when
 * none): what the guest needs to find its virtio-mmio devices. */
const char *vm_dev_cmdline(const struct vm *vm);

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

/* The DMA gate. A device that writes guest RAM (or changes the state it saves) from a thread other
 * than a vCPU thread — net RX on the event loop — brackets that work with vm_dma_begin/vm_dma_end.
 * While any pause hold is outstanding the gate is closed: vm_dma_begin returns false and the device
 * must leave guest RAM and its saved state alone (queue the work, deliver it from hv_dev_ops.resumed),
 * and vm_pause returns only after every bracket that was open has ended. So between a pause and its
 * resume, guest RAM and device state change only through the hold's owner: a checkpoint's dirty sync,
 * state capture and page copy see one consistent machine. vCPU threads need no bracket (they are parked
 * while paused). Not callable from a thread that holds a pause (it would wait for itself). */
bool vm_dma_begin(struct vm *vm);
void vm_dma_end(struct vm *vm);

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
