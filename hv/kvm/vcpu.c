/* vcpu.c — vCPU threads: CPUID, the exit loop and device dispatch, pause/resume by kick-and-acknowledge. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "common/clock.h"
#include "common/errf.h"
#include "common/log.h"
#include "hv/kvm/vm_priv.h"

/* ---- CPUID ------------------------------------------------------------------------------------ */

int vcpu_setup_cpuid(struct vm *vm, struct vcpu *v, char *err, size_t errlen)
{
	int n = 256, rc;
	struct kvm_cpuid2 *c = NULL;
	long khz;

	for (;;) {
		c = calloc(1, sizeof(*c) + (size_t)n * sizeof(c->entries[0]));
		if (!c)
			return -ENOMEM;
		c->nent = (uint32_t)n;
		if (ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0)
			break;
		rc = -errno;
		free(c);
		if (rc != -E2BIG || n > 4096) {
			return errf(err, errlen, rc, "KVM_GET_SUPPORTED_CPUID: %s", strerror(-rc));
		}
		n *= 2;
	}
	khz = ioctl(v->fd, KVM_GET_TSC_KHZ, 0);
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		switch (e->function) {
		case 1:
			e->ebx = (e->ebx & 0x00ffffffu) | ((uint32_t)v->idx << 24);
			e->ecx |= 1u << 31; /* hypervisor present */
			break;
		case 0xb:
		case 0x1f:
			e->edx = (uint32_t)v->idx;
			break;
		case 0x40000000:
			/* Advertise the timing leaf below (TSC kHz), as QEMU's vmware-cpuid-freq does. */
			if (khz > 0 && e->eax < 0x40000010)
				e->eax = 0x40000010;
			break;
		}
	}
	if (khz > 0 && (int)c->nent < n) {
		c->entries[c->nent++] = (struct kvm_cpuid_entry2){
			.function = 0x40000010, .eax = (uint32_t)khz, .ebx = 1000000};
	}
	rc = ioctl(v->fd, KVM_SET_CPUID2, c) ? -errno : 0;
	if (rc)
		errf(err, errlen, 0, "KVM_SET_CPUID2: %s", strerror(-rc));
	free(c);
	return rc;
}

/* ---- exit dispatch ---------------------------------------------------------------------------- */

static int dispatch(struct vcpu *v, enum io_space space, uint64_t addr, void *data, uint32_t len,
		    bool is_write)
{
	struct vm *vm = v->vm;

	for (int i = 0; i < vm->nr_io; i++) {
		const struct io_region *r = &vm->io[i];
		if (r->space == space && addr >= r->base && addr - r->base < r->len) {
			if (!is_write)
				memset(data, 0, len);
			return r->fn(r->opaque, addr - r->base, data, len, is_write);
		}
	}
	/* No device: reads float high, writes are dropped, as on real hardware; say so, a few times. */
	if (!is_write)
		memset(data, 0xff, len);
	pthread_mutex_lock(&vm->lock);
	if (vm->unclaimed_warnings < UNCLAIMED_WARN_MAX) {
		vm->unclaimed_warnings++;
		log_warn("hv", vm->name, "guest %s %s 0x%llx (%u bytes) hits no device; %s%s",
			 is_write ? "write to" : "read from", space == IO_PIO ? "port" : "MMIO address",
			 (unsigned long long)addr, len, is_write ? "ignored" : "read as all-ones",
			 vm->unclaimed_warnings == UNCLAIMED_WARN_MAX
				 ? " (further such accesses not reported)"
				 : "");
	}
	pthread_mutex_unlock(&vm->lock);
	return 0;
}

static int handle_exit(struct vcpu *v)
{
	struct kvm_run *run = v->run;

	switch (run->exit_reason) {
	case KVM_EXIT_IO: {
		uint8_t *p = (uint8_t *)run + run->io.data_offset;
		if (run->io.size != 1 && run->io.size != 2 && run->io.size != 4)
			return -1;
		for (uint32_t i = 0; i < run->io.count; i++, p += run->io.size)
			if (dispatch(v, IO_PIO, run->io.port, p, run->io.size,
				     run->io.direction == KVM_EXIT_IO_OUT))
				return -1;
		return 0;
	}
	case KVM_EXIT_MMIO:
		if (run->mmio.len == 0 || run->mmio.len > 8)
			return -1;
		return dispatch(v, IO_MMIO, run->mmio.phys_addr, run->mmio.data, run->mmio.len,
				run->mmio.is_write);
	case KVM_EXIT_SHUTDOWN: {
		struct kvm_regs regs = {0};
		ioctl(v->fd, KVM_GET_REGS, &regs);
		vm_stop_with(v->vm, 1, "guest triple fault on vCPU %d (rip=0x%llx); VM stopped", v->idx,
			     (unsigned long long)regs.rip);
		return 1;
	}
	case KVM_EXIT_HLT:
		vm_stop_with(v->vm, 1, "guest halted vCPU %d with no way to wake it; VM stopped", v->idx);
		return 1;
	case KVM_EXIT_SYSTEM_EVENT:
		vm_stop_with(v->vm, run->system_event.type == KVM_SYSTEM_EVENT_RESET ? 1 : 0,
			     "guest requested system event %u", run->system_event.type);
		return 1;
	case KVM_EXIT_FAIL_ENTRY:
		vm_stop_with(v->vm, 1, "KVM entry failed on vCPU %d (reason 0x%llx)", v->idx,
			     (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		return 1;
	case KVM_EXIT_INTERNAL_ERROR:
		vm_stop_with(v->vm, 1, "KVM internal error on vCPU %d (suberror %u)", v->idx,
			     run->internal.suberror);
		return 1;
	default:
		vm_stop_with(v->vm, 1, "unhandled KVM exit reason %u on vCPU %d", run->exit_reason, v->idx);
		return 1;
	}
}

/* Park while a pause is requested. Returns true when the thread must end. Called only right after
 * KVM_RUN returned EINTR, so pending I/O has been completed and the vCPU state is consistent. */
static bool park(struct vcpu *v)
{
	struct vm *vm = v->vm;
	bool stop;

	pthread_mutex_lock(&vm->lock);
	while (vm->pause_req && !vm->stop_req) {
		vm->parked++;
		pthread_cond_broadcast(&vm->cond);
		pthread_cond_wait(&vm->cond, &vm->lock);
		vm->parked--;
	}
	stop = vm->stop_req;
	pthread_mutex_unlock(&vm->lock);
	return stop;
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	struct vm *vm = v->vm;
	sigset_t set;

	pthread_setname_np(pthread_self(), "vcpu"); /* ps/top and bench/remus_budget.py tell threads apart */
	sigemptyset(&set);
	sigaddset(&set, vm_sig_kick());
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	for (;;) {
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
				if (park(v))
					break;
				continue;
			}
			vm_stop_with(vm, 1, "KVM_RUN on vCPU %d failed: %s", v->idx, strerror(errno));
			break;
		}
		v->exits++;
		int rc = handle_exit(v);
		if (rc < 0)
			vm_stop_with(vm, 1, "bad device access on vCPU %d (exit reason %u); VM stopped",
				     v->idx, v->run->exit_reason);
		if (rc)
			break;
		/* A stop or pause request is honoured at the next KVM_RUN, which completes this exit's
		 * I/O first (immediate_exit is set) and returns EINTR. */
	}
	pthread_mutex_lock(&vm->lock);
	vm->alive--;
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
	return NULL;
}

#define VCPU_STACK_SIZE (256u << 10)

int vm_start(struct vm *vm)
{
	pthread_attr_t attr;
	sigset_t set, old;
	int rc = 0;

	pthread_mutex_lock(&vm->lock);
	if (vm->state != VM_CREATED) {
		pthread_mutex_unlock(&vm->lock);
		return -EINVAL;
	}
	vm->state = VM_RUNNING;
	if (vm->pause_count > 0) {
		/* Held before start: every vCPU parks at its first KVM_RUN (immediate_exit). */
		vm->pause_req = true;
		vm->state = VM_PAUSED;
		for (int i = 0; i < vm->nr_vcpus; i++)
			vm->vcpu[i].run->immediate_exit = 1;
	}
	/* A small stack: the exit loop and device emulation need far less than glibc's 8 MiB default
	 * (only touched pages count, but the mapping and its guard stay per thread). */
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, VCPU_STACK_SIZE);
	/* vCPU threads start with the kick signal blocked and unblock it themselves. */
	sigemptyset(&set);
	sigaddset(&set, vm_sig_kick());
	pthread_sigmask(SIG_BLOCK, &set, &old);
	for (int i = 0; i < vm->nr_vcpus; i++) {
		struct vcpu *v = &vm->vcpu[i];
		rc = -pthread_create(&v->thread, &attr, vcpu_thread, v);
		if (!rc && vm->pin)
			rc = -pthread_setaffinity_np(v->thread, sizeof(vm->cpus), &vm->cpus);
		if (rc)
			break;
		v->started = true;
		vm->alive++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	pthread_mutex_unlock(&vm->lock);
	if (rc)
		vm_stop_with(vm, 1, "cannot start vCPU thread: %s", strerror(-rc));
	return rc;
}

int vm_pause(struct vm *vm)
{
	uint64_t t0 = now_ns(), dt;
	int rc = 0;

	pthread_mutex_lock(&vm->lock);
	if (vm->stop_req || vm->state == VM_STOPPED) {
		rc = -ESHUTDOWN;
		goto out;
	}
	/* Holds nest: only the first one closes the DMA gate and stops the vCPUs. */
	if (vm->pause_count++ > 0)
		goto out;
	while (vm->dma_active > 0)
		pthread_cond_wait(&vm->cond, &vm->lock);
	if (vm->state == VM_CREATED)
		goto out;
	vm->pause_req = true;
	vm_kick_all_locked(vm);
	while (vm->parked < vm->alive && !vm->stop_req)
		pthread_cond_wait(&vm->cond, &vm->lock);
	if (vm->stop_req) {
		rc = -ESHUTDOWN;
		goto out;
	}
	vm->state = VM_PAUSED;
	dt = now_ns() - t0;
	vm->pst.count++;
	vm->pst.last_ns = dt;
	vm->pst.total_ns += dt;
	if (dt > vm->pst.max_ns)
		vm->pst.max_ns = dt;
out:
	pthread_mutex_unlock(&vm->lock);
	return rc;
}

int vm_resume(struct vm *vm)
{
	bool opened = false;
	int rc = 0;

	pthread_mutex_lock(&vm->lock);
	if (vm->stop_req || vm->state == VM_STOPPED)
		rc = -ESHUTDOWN;
	else if (vm->pause_count == 0)
		rc = -EINVAL; /* unbalanced: nobody holds the VM paused */
	else if (--vm->pause_count == 0) {
		if (vm->state == VM_PAUSED) {
			vm->pause_req = false;
			vm->state = VM_RUNNING;
			pthread_cond_broadcast(&vm->cond);
		}
		opened = true;
	}
	pthread_mutex_unlock(&vm->lock);
	if (opened)
		vm_dev_resumed_all(vm);
	return rc;
}

bool vm_dma_begin(struct vm *vm)
{
	bool open;

	pthread_mutex_lock(&vm->lock);
	open = vm->pause_count == 0;
	if (open)
		vm->dma_active++;
	pthread_mutex_unlock(&vm->lock);
	return open;
}

void vm_dma_end(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	if (--vm->dma_active == 0)
		pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
}

void vm_pause_stats(const struct vm *vm, struct vm_pause_stats *out)
{
	struct vm *m = (struct vm *)vm;

	pthread_mutex_lock(&m->lock);
	*out = m->pst;
	pthread_mutex_unlock(&m->lock);
}

int vm_wait(struct vm *vm)
{
	for (int i = 0; i < vm->nr_vcpus; i++) {
		if (vm->vcpu[i].started) {
			pthread_join(vm->vcpu[i].thread, NULL);
			vm->vcpu[i].started = false;
		}
	}
	pthread_mutex_lock(&vm->lock);
	vm->state = VM_STOPPED;
	pthread_mutex_unlock(&vm->lock);
	return vm->exit_status;
}

uint64_t vm_exit_count(const struct vm *vm)
{
	uint64_t n = 0;

	for (int i = 0; i < vm->nr_vcpus; i++)
		n += __atomic_load_n(&vm->vcpu[i].exits, __ATOMIC_RELAXED);
	return n;
}

/* ---- boot state ------------------------------------------------------------------------------- */

int vm_set_pvh_entry(struct vm *vm, uint32_t entry, uint32_t start_info)
{
	struct vcpu *v = &vm->vcpu[0];
	struct kvm_sregs sregs;
	struct kvm_regs regs = {0};
	struct kvm_segment code = {
		.base = 0,
		.limit = 0xffffffff,
		.selector = 0x10,
		.type = 0xb,
		.present = 1,
		.dpl = 0,
		.db = 1,
		.s = 1,
		.l = 0,
		.g = 1,
	};
	struct kvm_segment data = code;

	if (ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0)
		return -errno;
	data.type = 0x3;
	data.selector = 0x18;
	sregs.cs = code;
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
	sregs.cr0 = 0x11; /* PE | ET */
	sregs.cr4 = 0;
	sregs.efer = 0;
	if (ioctl(v->fd, KVM_SET_SREGS, &sregs) < 0)
		return -errno;
	regs.rip = entry;
	regs.rbx = start_info;
	regs.rflags = 0x2;
	if (ioctl(v->fd, KVM_SET_REGS, &regs) < 0)
		return -errno;
	return 0;
}
