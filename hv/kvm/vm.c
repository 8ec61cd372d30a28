/* vm.c — KVM VM lifecycle: create and destroy, devices, IRQ line, whole-VM state, stop. */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/errf.h"
#include "hv/kvm/vm_priv.h"

#define KVM_TSS_ADDR 0xfffbd000ul
#define KVM_IDENTITY_MAP_ADDR 0xfeffc000ull

int vm_sig_kick(void)
{
	return SIGRTMIN + 2;
}

static void kick_handler(int sig)
{
	(void)sig;
}

/* ---- create / destroy ------------------------------------------------------------------------- */

static int exit_port(void *opaque, uint64_t off, void *data, uint32_t len, bool is_write);
static int idle_port(void *opaque, uint64_t off, void *data, uint32_t len, bool is_write);

/* memory_policy: allocate (and lock) every page of guest RAM now, so the VM cannot fail later for
 * lack of memory. */
static int reserve_mem(struct vm *vm, enum hv_mem_policy p, char *err, size_t errlen)
{
	for (int i = 0; p != HV_MEM_LAZY && i < vm->mem.nr; i++) {
		struct mem_region *r = &vm->mem.r[i];

		/* the system call itself: ASan's mlock() interceptor silently does nothing */
		if (p == HV_MEM_LOCK && syscall(SYS_mlock, r->host, r->size))
			return errf(err, errlen, -errno, "cannot lock %llu MiB of guest memory: %s",
				    (unsigned long long)(r->size >> 20), strerror(errno));
		if (p == HV_MEM_POPULATE && fallocate(vm->mem.memfd, 0, (off_t)r->fd_off, (off_t)r->size))
			return errf(err, errlen, -errno, "cannot allocate %llu MiB of guest memory: %s",
				    (unsigned long long)(r->size >> 20), strerror(errno));
		if (p == HV_MEM_POPULATE && madvise(r->host, r->size, MADV_POPULATE_WRITE) && errno != EINVAL)
			return errf(err, errlen, -errno, "cannot map guest memory: %s", strerror(errno));
	}
	return 0;
}

/* vm_config.cpus: every vCPU thread's affinity; each CPU must exist. */
static int set_cpus(struct vm *vm, const struct vm_config *cfg, char *err, size_t errlen)
{
	long ncpu = sysconf(_SC_NPROCESSORS_CONF);

	CPU_ZERO(&vm->cpus);
	for (int i = 0; cfg->cpus && i < cfg->nr_cpus; i++) {
		if (cfg->cpus[i] < 0 || cfg->cpus[i] >= ncpu || cfg->cpus[i] >= CPU_SETSIZE)
			return errf(err, errlen, -EINVAL, "host CPU %d does not exist (CPUs 0..%ld)",
				    cfg->cpus[i], ncpu - 1);
		CPU_SET(cfg->cpus[i], &vm->cpus);
		vm->pin = true;
	}
	return 0;
}

static int create_vcpu(struct vm *vm, int idx, char *err, size_t errlen)
{
	struct vcpu *v = &vm->vcpu[idx];
	int rc;

	v->vm = vm;
	v->idx = idx;
	v->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, idx);
	if (v->fd < 0) {
		rc = -errno;
		errf(err, errlen, 0, "KVM_CREATE_VCPU %d: %s", idx, strerror(errno));
		return rc;
	}
	v->run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
	if (v->run == MAP_FAILED) {
		rc = -errno;
		v->run = NULL;
		errf(err, errlen, 0, "mmap vCPU %d run area: %s", idx, strerror(errno));
		return rc;
	}
	return vcpu_setup_cpuid(vm, v, err, errlen);
}

int vm_create(const struct vm_config *cfg, struct vm **out, char *err, size_t errlen)
{
	struct vm *vm;
	struct sigaction sa = {.sa_handler = kick_handler};
	int rc, mmap_size;

	*out = NULL;
	if (cfg->nr_vcpus < 1 || cfg->nr_vcpus > HV_MAX_VCPUS) {
		errf(err, errlen, 0, "vCPU count %d out of range (1..%d)", cfg->nr_vcpus, HV_MAX_VCPUS);
		return -EINVAL;
	}
	if (cfg->mem_size < HV_MEM_MIN || cfg->mem_size > HV_MEM_MAX || cfg->mem_size % (2ull << 20)) {
		errf(err, errlen, 0, "memory size %llu bytes invalid (2 MiB multiple, 2 MiB .. %llu GiB)",
		     (unsigned long long)cfg->mem_size, (unsigned long long)(HV_MEM_MAX >> 30));
		return -EINVAL;
	}
	vm = calloc(1, sizeof(*vm));
	if (!vm)
		return -ENOMEM;
	vm->kvm_fd = vm->vm_fd = -1;
	vm->mem.memfd = -1;
	for (int i = 0; i < HV_MAX_VCPUS; i++)
		vm->vcpu[i].fd = -1;
	pthread_mutex_init(&vm->lock, NULL);
	pthread_cond_init(&vm->cond, NULL);
	pthread_mutex_init(&vm->idle_lock, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&vm->idle_cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	snprintf(vm->name, sizeof(vm->name), "%s", cfg->name ? cfg->name : "vm");
	sigaction(vm_sig_kick(), &sa, NULL);

	vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm->kvm_fd < 0) {
		rc = -errno;
		errf(err, errlen, 0, "cannot open /dev/kvm: %s", strerror(errno));
		goto err;
	}
	if (ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
		rc = -ENOTSUP;
		errf(err, errlen, 0, "/dev/kvm: unsupported KVM API version");
		goto err;
	}
	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0) {
		rc = -errno;
		errf(err, errlen, 0, "KVM_CREATE_VM: %s", strerror(errno));
		goto err;
	}
	mmap_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (mmap_size <= 0) {
		rc = -EINVAL;
		errf(err, errlen, 0, "KVM_GET_VCPU_MMAP_SIZE failed");
		goto err;
	}
	vm->run_size = (size_t)mmap_size;
	/* Real-mode helpers some KVM backends need; harmless where unused. */
	ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, KVM_TSS_ADDR);
	{
		uint64_t idmap = KVM_IDENTITY_MAP_ADDR;
		ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap);
	}
	if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0) {
		rc = -errno;
		errf(err, errlen, 0, "KVM_CREATE_IRQCHIP: %s", strerror(errno));
		goto err;
	}
	{
		struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
		if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0) {
			rc = -errno;
			errf(err, errlen, 0, "KVM_CREATE_PIT2: %s", strerror(errno));
			goto err;
		}
	}
	rc = kvm_state_ctx_init(&vm->ks, vm->kvm_fd, vm->vm_fd, err, errlen);
	if (rc)
		goto err;
	rc = set_cpus(vm, cfg, err, errlen);
	if (rc)
		goto err;
	rc = mem_create(&vm->mem, cfg->mem_size);
	if (rc) {
		errf(err, errlen, 0, "cannot allocate %llu MiB of guest memory: %s",
		     (unsigned long long)(cfg->mem_size >> 20), strerror(-rc));
		goto err;
	}
	rc = reserve_mem(vm, cfg->mem_policy, err, errlen);
	if (rc)
		goto err;
	for (int i = 0; i < vm->mem.nr; i++) {
		struct kvm_userspace_memory_region r = {
			.slot = (uint32_t)i,
			.guest_phys_addr = vm->mem.r[i].gpa,
			.memory_size = vm->mem.r[i].size,
			.userspace_addr = (uint64_t)(uintptr_t)vm->mem.r[i].host,
		};
		if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0) {
			rc = -errno;
			errf(err, errlen, 0, "KVM_SET_USER_MEMORY_REGION: %s", strerror(errno));
			goto err;
		}
	}
	vm->nr_vcpus = cfg->nr_vcpus;
	for (int i = 0; i < vm->nr_vcpus; i++) {
		rc = create_vcpu(vm, i, err, errlen);
		if (rc)
			goto err;
	}
	rc = vm_io_register(vm, IO_PIO, HV_EXIT_PORT, 2, exit_port, vm);
	if (!rc)
		rc = vm_io_register(vm, IO_PIO, HV_IDLE_PORT, 4, idle_port, vm);
	if (rc)
		goto err;
	vm->state = VM_CREATED;
	*out = vm;
	return 0;
err:
	vm_destroy(vm);
	return rc;
}

void vm_destroy(struct vm *vm)
{
	if (!vm)
		return;
	if (vm->state == VM_RUNNING || vm->state == VM_PAUSED) {
		vm_stop(vm, 0);
		vm_wait(vm);
	}
	dev_table_detach_all(&vm->devs);
	for (int i = 0; i < HV_MAX_VCPUS; i++) {
		if (vm->vcpu[i].run)
			munmap(vm->vcpu[i].run, vm->run_size);
		if (vm->vcpu[i].fd >= 0)
			close(vm->vcpu[i].fd);
	}
	mem_destroy(&vm->mem);
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	pthread_mutex_destroy(&vm->lock);
	pthread_cond_destroy(&vm->cond);
	pthread_mutex_destroy(&vm->idle_lock);
	pthread_cond_destroy(&vm->idle_cond);
	free(vm);
}

struct guest_mem *vm_mem(struct vm *vm)
{
	return &vm->mem;
}

int vm_nr_vcpus(const struct vm *vm)
{
	return vm->nr_vcpus;
}

enum vm_state vm_get_state(const struct vm *vm)
{
	struct vm *m = (struct vm *)vm;
	enum vm_state s;

	pthread_mutex_lock(&m->lock);
	s = m->state;
	pthread_mutex_unlock(&m->lock);
	return s;
}

const char *vm_state_name(enum vm_state s)
{
	switch (s) {
	case VM_CREATED:
		return "created";
	case VM_RUNNING:
		return "running";
	case VM_PAUSED:
		return "paused";
	case VM_STOPPED:
		return "stopped";
	}
	return "unknown";
}

const char *vm_name(const struct vm *vm)
{
	return vm->name;
}

int vm_io_register(struct vm *vm, enum io_space space, uint64_t base, uint64_t len, io_fn fn, void *opaque)
{
	if (!fn || len == 0 || base + len < base || (space == IO_PIO && base + len > 0x10000))
		return -EINVAL;
	if (vm->nr_io >= HV_MAX_IO)
		return -ENOSPC;
	for (int i = 0; i < vm->nr_io; i++) {
		const struct io_region *r = &vm->io[i];
		if (r->space == space && base < r->base + r->len && r->base < base + len)
			return -EEXIST;
	}
	vm->io[vm->nr_io++] = (struct io_region){space, base, len, fn, opaque};
	return 0;
}

int vm_dev_attach(struct vm *vm, const char *name, const struct hv_dev_ops *ops, void *dev, char *err,
		  size_t errlen)
{
	return dev_table_attach(&vm->devs, vm, name, ops, dev, err, errlen);
}

void *vm_dev_find(const struct vm *vm, const char *name)
{
	return dev_table_find(&vm->devs, name);
}

void vm_dev_reset_all(struct vm *vm)
{
	dev_table_reset_all(&vm->devs);
}

void vm_dev_resumed_all(struct vm *vm)
{
	dev_table_resumed_all(&vm->devs);
}

int vm_devstate_count(const struct vm *vm)
{
	return vm->devs.nr_stateful;
}

const struct vm_devstate *vm_devstate_get(const struct vm *vm, int idx)
{
	return idx >= 0 && idx < vm->devs.nr_stateful ? &vm->devs.dev[vm->devs.stateful[idx]] : NULL;
}

int vm_mmio_slot_claim(struct vm *vm, io_fn fn, void *opaque, struct hv_mmio_slot *slot)
{
	return dev_table_slot_claim(&vm->devs, vm, fn, opaque, slot);
}

const char *vm_dev_cmdline(const struct vm *vm)
{
	return vm->devs.cmdline;
}

int vm_irq_line(struct vm *vm, int gsi, int level)
{
	struct kvm_irq_level l = {.irq = (uint32_t)gsi, .level = (uint32_t)level};

	if (level)
		vm_wake(vm);
	return ioctl(vm->vm_fd, KVM_IRQ_LINE, &l) < 0 ? -errno : 0;
}

/* ---- whole-VM state ---------------------------------------------------------------------------- */

size_t vm_vcpu_state_max(const struct vm *vm)
{
	return kvm_vcpu_state_max(&vm->ks);
}

size_t vm_platform_state_max(const struct vm *vm)
{
	(void)vm;
	return kvm_vm_state_max();
}

const char *vm_platform_state_name(const struct vm *vm)
{
	(void)vm;
	return "kvm-vm";
}

int vm_vcpu_save(struct vm *vm, int idx, void *buf, size_t len, size_t *used, char *err, size_t errlen)
{
	if (idx < 0 || idx >= vm->nr_vcpus)
		return errf(err, errlen, -EINVAL, "no vCPU %d", idx);
	return kvm_vcpu_save(&vm->ks, vm->vcpu[idx].fd, buf, len, used, err, errlen);
}

int vm_vcpu_restore(struct vm *vm, int idx, const void *buf, size_t len, char *err, size_t errlen)
{
	if (idx < 0 || idx >= vm->nr_vcpus)
		return errf(err, errlen, -EINVAL, "no vCPU %d", idx);
	return kvm_vcpu_restore(&vm->ks, vm->vcpu[idx].fd, buf, len, err, errlen);
}

int vm_platform_save(struct vm *vm, void *buf, size_t len, size_t *used, char *err, size_t errlen)
{
	return kvm_vm_save(&vm->ks, vm->vm_fd, buf, len, used, err, errlen);
}

int vm_platform_restore(struct vm *vm, const void *buf, size_t len, char *err, size_t errlen)
{
	return kvm_vm_restore(&vm->ks, vm->vm_fd, buf, len, err, errlen);
}

void vm_set_exit_cb(struct vm *vm, vm_exit_cb cb, void *opaque)
{
	vm->exit_cb = cb;
	vm->exit_opaque = opaque;
}

/* ---- stop / error ----------------------------------------------------------------------------- */

void vm_kick_all_locked(struct vm *vm)
{
	for (int i = 0; i < vm->nr_vcpus; i++) {
		struct vcpu *v = &vm->vcpu[i];
		__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
		if (v->started)
			pthread_kill(v->thread, vm_sig_kick());
	}
	/* a vCPU sleeping in the idle doorbell rechecks pause_req/stop_req (set by our caller) */
	pthread_mutex_lock(&vm->idle_lock);
	pthread_cond_broadcast(&vm->idle_cond);
	pthread_mutex_unlock(&vm->idle_lock);
}

void vm_stop_with(struct vm *vm, int status, const char *fmt, ...)
{
	bool first = false;

	pthread_mutex_lock(&vm->lock);
	if (!vm->stop_req) {
		first = true;
		vm->stop_req = true;
		vm->exit_status = status;
		if (fmt) {
			va_list ap;
			va_start(ap, fmt);
			vsnprintf(vm->error, sizeof(vm->error), fmt, ap);
			va_end(ap);
		}
		vm_kick_all_locked(vm);
		pthread_cond_broadcast(&vm->cond);
	}
	pthread_mutex_unlock(&vm->lock);
	if (first && vm->exit_cb)
		vm->exit_cb(vm->exit_opaque);
}

void vm_stop(struct vm *vm, int status)
{
	vm_stop_with(vm, status, NULL);
}

const char *vm_error(const struct vm *vm)
{
	return vm->error;
}

static int exit_port(void *opaque, uint64_t off, void *data, uint32_t len, bool is_write)
{
	struct vm *vm = opaque;

	(void)len;
	if (is_write && off == 0)
		vm_stop_with(vm, *(uint8_t *)data, NULL);
	return 0;
}

/* ---- idle doorbell ---------------------------------------------------------------------------- */

void vm_wake(struct vm *vm)
{
	pthread_mutex_lock(&vm->idle_lock);
	vm->idle_event = true;
	pthread_cond_broadcast(&vm->idle_cond);
	pthread_mutex_unlock(&vm->idle_lock);
}

void vm_idle_stats(const struct vm *vm, uint64_t *waits, uint64_t *wakeups)
{
	struct vm *m = (struct vm *)vm;

	pthread_mutex_lock(&m->idle_lock);
	*waits = m->idle_waits;
	*wakeups = m->idle_wakeups;
	pthread_mutex_unlock(&m->idle_lock);
}

static bool idle_interrupted(struct vm *vm)
{
	return __atomic_load_n(&vm->pause_req, __ATOMIC_SEQ_CST) ||
	       __atomic_load_n(&vm->stop_req, __ATOMIC_SEQ_CST);
}

/* On the vCPU thread: sleep until an event, the timeout, or a pause/stop request (whose kick
 * broadcasts idle_cond after setting the flag, so the check below under idle_lock cannot miss it).
 * The vCPU then re-enters KVM_RUN, which parks it for the pause as usual. */
static int idle_port(void *opaque, uint64_t off, void *data, uint32_t len, bool is_write)
{
	struct vm *vm = opaque;
	uint32_t us, magic = HV_IDLE_MAGIC;
	struct timespec ts;

	if (off != 0 || len != 4) {
		if (!is_write)
			memset(data, 0xff, len);
		return 0;
	}
	if (!is_write) {
		memcpy(data, &magic, 4);
		return 0;
	}
	memcpy(&us, data, 4);
	pthread_mutex_lock(&vm->idle_lock);
	if (!vm->idle_event && us && !idle_interrupted(vm)) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += us / 1000000;
		ts.tv_nsec += (long)(us % 1000000) * 1000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		vm->idle_waits++;
		while (!vm->idle_event && !idle_interrupted(vm))
			if (pthread_cond_timedwait(&vm->idle_cond, &vm->idle_lock, &ts) == ETIMEDOUT)
				break;
		if (vm->idle_event)
			vm->idle_wakeups++;
	}
	vm->idle_event = false;
	pthread_mutex_unlock(&vm->idle_lock);
	return 0;
}
