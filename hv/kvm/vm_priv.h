/* vm_priv.h — the inside of struct vm (KVM backend): hv/kvm/vm.c, vcpu.c, kvm_dirty.c. */
#ifndef DOPPEL_HV_VM_PRIV_H
#define DOPPEL_HV_VM_PRIV_H

#include <linux/kvm.h>
#include <sched.h>

#include "hv/dev/devices.h"
#include "hv/hv.h"
#include "hv/kvm/kvm_state.h"

#define UNCLAIMED_WARN_MAX 8

struct io_region {
	enum io_space space;
	uint64_t base, len;
	io_fn fn;
	void *opaque;
};

struct vcpu {
	struct vm *vm;
	int idx;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	bool started;
	uint64_t exits;
};

struct vm {
	char name[64];
	int kvm_fd, vm_fd;
	struct guest_mem mem;
	struct kvm_state_ctx ks;
	int nr_vcpus;
	size_t run_size;
	struct vcpu vcpu[HV_MAX_VCPUS];
	struct io_region io[HV_MAX_IO];
	int nr_io;
	struct dev_table devs;
	cpu_set_t cpus; /* vCPU thread affinity (vm_config.cpus) */
	bool pin;

	/* The idle doorbell (HV_IDLE_PORT): a vCPU waits here for an event; lock order vm->lock ->
	 * idle_lock (the kick path takes it to wake a waiting vCPU for a pause or stop). */
	pthread_mutex_t idle_lock;
	pthread_cond_t idle_cond; /* CLOCK_MONOTONIC */
	bool idle_event; /* an event arrived since the last wait returned */
	uint64_t idle_waits, idle_wakeups; /* waits that slept; of those, ended by an event */

	pthread_mutex_t lock; /* protects everything below */
	pthread_cond_t cond;
	enum vm_state state;
	bool pause_req;
	unsigned pause_count; /* nested holds: vm_pause increments, vm_resume decrements */
	int dma_active; /* open vm_dma_begin brackets (the gate is closed while pause_count > 0) */
	int parked; /* vCPU threads parked for a pause */
	int alive; /* vCPU threads not yet ended */
	bool stop_req;
	int exit_status;
	char error[256];
	vm_exit_cb exit_cb;
	void *exit_opaque;
	struct vm_pause_stats pst;
	unsigned unclaimed_warnings;
};

/* The signal that kicks a vCPU thread out of KVM_RUN (a real-time signal with an empty handler). */
int vm_sig_kick(void);
/* Set immediate_exit on every vCPU and signal the running ones. vm->lock held. */
void vm_kick_all_locked(struct vm *vm);
/* vm.c: the last pause hold was released (vm_resume, no lock held): every device's resumed hook. */
void vm_dev_resumed_all(struct vm *vm);
/* First stop wins: record status and (printf-style, may be NULL) reason, kick, notify the owner. */
void vm_stop_with(struct vm *vm, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* vcpu.c: CPUID for one vCPU (supported CPUID + APIC id + TSC-frequency leaf). */
int vcpu_setup_cpuid(struct vm *vm, struct vcpu *v, char *err, size_t errlen);

#endif
