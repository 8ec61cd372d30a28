/* vm.c — KVM VM and vCPU lifecycle: create, I/O dispatch, pause/resume by kick-and-acknowledge, stop. */
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
#include <time.h>
#include <unistd.h>

#include "hv/hv.h"
#include "hv/kvm_state.h"

#define KVM_TSS_ADDR 0xfffbd000ul
#define KVM_IDENTITY_MAP_ADDR 0xfeffc000ull
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
	struct vm_devstate devstate[HV_MAX_DEVSTATE];
	int nr_devstate;

	pthread_mutex_t lock; /* protects everything below */
	pthread_cond_t cond;
	enum vm_state state;
	bool pause_req;
	int parked;  /* vCPU threads parked for a pause */
	int alive;   /* vCPU threads not yet ended */
	bool stop_req;
	int exit_status;
	char error[256];
	vm_exit_cb exit_cb;
	void *exit_opaque;
	struct vm_pause_stats pst;
	unsigned unclaimed_warnings;
};

static int sig_kick(void)
{
	return SIGRTMIN + 2;
}

static void kick_handler(int sig)
{
	(void)sig;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void seterr(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (!err || !len)
		return;
	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
}

/* ---- CPUID ------------------------------------------------------------------------------------ */

static int setup_cpuid(struct vm *vm, struct vcpu *v, char *err, size_t errlen)
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
			seterr(err, errlen, "KVM_GET_SUPPORTED_CPUID: %s", strerror(-rc));
			return rc;
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
		seterr(err, errlen, "KVM_SET_CPUID2: %s", strerror(-rc));
	free(c);
	return rc;
}

/* ---- create / destroy ------------------------------------------------------------------------- */

static int exit_port(void *opaque, uint64_t off, void *data, uint32_t len, bool is_write);

static int create_vcpu(struct vm *vm, int idx, char *err, size_t errlen)
{
	struct vcpu *v = &vm->vcpu[idx];
	int rc;

	v->vm = vm;
	v->idx = idx;
	v->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, idx);
	if (v->fd < 0) {
		rc = -errno;
		seterr(err, errlen, "KVM_CREATE_VCPU %d: %s", idx, strerror(errno));
		return rc;
	}
	v->run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
	if (v->run == MAP_FAILED) {
		rc = -errno;
		v->run = NULL;
		seterr(err, errlen, "mmap vCPU %d run area: %s", idx, strerror(errno));
		return rc;
	}
	return setup_cpuid(vm, v, err, errlen);
}

int vm_create(const struct vm_config *cfg, struct vm **out, char *err, size_t errlen)
{
	struct vm *vm;
	struct sigaction sa = {.sa_handler = kick_handler};
	int rc, mmap_size;

	*out = NULL;
	if (cfg->nr_vcpus < 1 || cfg->nr_vcpus > HV_MAX_VCPUS) {
		seterr(err, errlen, "vCPU count %d out of range (1..%d)", cfg->nr_vcpus, HV_MAX_VCPUS);
		return -EINVAL;
	}
	if (cfg->mem_size < HV_MEM_MIN || cfg->mem_size > HV_MEM_MAX ||
	    cfg->mem_size % (2ull << 20)) {
		seterr(err, errlen, "memory size %llu bytes invalid (2 MiB multiple, 2 MiB .. %llu GiB)",
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
	snprintf(vm->name, sizeof(vm->name), "%s", cfg->name ? cfg->name : "vm");
	sigaction(sig_kick(), &sa, NULL);

	vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm->kvm_fd < 0) {
		rc = -errno;
		seterr(err, errlen, "cannot open /dev/kvm: %s", strerror(errno));
		goto err;
	}
	if (ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
		rc = -ENOTSUP;
		seterr(err, errlen, "/dev/kvm: unsupported KVM API version");
		goto err;
	}
	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0) {
		rc = -errno;
		seterr(err, errlen, "KVM_CREATE_VM: %s", strerror(errno));
		goto err;
	}
	mmap_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (mmap_size <= 0) {
		rc = -EINVAL;
		seterr(err, errlen, "KVM_GET_VCPU_MMAP_SIZE failed");
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
		seterr(err, errlen, "KVM_CREATE_IRQCHIP: %s", strerror(errno));
		goto err;
	}
	{
		struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
		if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0) {
			rc = -errno;
			seterr(err, errlen, "KVM_CREATE_PIT2: %s", strerror(errno));
			goto err;
		}
	}
	rc = kvm_state_ctx_init(&vm->ks, vm->kvm_fd, vm->vm_fd, err, errlen);
	if (rc)
		goto err;
	rc = mem_create(&vm->mem, cfg->mem_size);
	if (rc) {
		seterr(err, errlen, "cannot allocate %llu MiB of guest memory: %s",
		       (unsigned long long)(cfg->mem_size >> 20), strerror(-rc));
		goto err;
	}
	for (int i = 0; i < vm->mem.nr; i++) {
		struct kvm_userspace_memory_region r = {
			.slot = (uint32_t)i,
			.guest_phys_addr = vm->mem.r[i].gpa,
			.memory_size = vm->mem.r[i].size,
			.userspace_addr = (uint64_t)(uintptr_t)vm->mem.r[i].host,
		};
		if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0) {
			rc = -errno;
			seterr(err, errlen, "KVM_SET_USER_MEMORY_REGION: %s", strerror(errno));
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

int vm_fd(const struct vm *vm)
{
	return vm->vm_fd;
}

int vm_kvm_fd(const struct vm *vm)
{
	return vm->kvm_fd;
}

int vm_vcpu_fd(const struct vm *vm, int idx)
{
	return idx >= 0 && idx < vm->nr_vcpus ? vm->vcpu[idx].fd : -1;
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

const struct kvm_state_ctx *vm_kvm_state(const struct vm *vm)
{
	return &vm->ks;
}

const char *vm_name(const struct vm *vm)
{
	return vm->name;
}

int vm_io_register(struct vm *vm, enum io_space space, uint64_t base, uint64_t len, io_fn fn,
		   void *opaque)
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

int vm_devstate_register(struct vm *vm, const char *name, size_t max, devstate_save_fn save,
			 devstate_restore_fn restore, void *opaque)
{
	if (!name || !*name || strlen(name) >= sizeof(vm->devstate[0].name) || !save || !restore)
		return -EINVAL;
	if (vm->nr_devstate >= HV_MAX_DEVSTATE)
		return -ENOSPC;
	for (int i = 0; i < vm->nr_devstate; i++)
		if (!strcmp(vm->devstate[i].name, name))
			return -EEXIST;
	struct vm_devstate *d = &vm->devstate[vm->nr_devstate++];
	snprintf(d->name, sizeof(d->name), "%s", name);
	d->max = max;
	d->save = save;
	d->restore = restore;
	d->opaque = opaque;
	return 0;
}

int vm_devstate_count(const struct vm *vm)
{
	return vm->nr_devstate;
}

const struct vm_devstate *vm_devstate_get(const struct vm *vm, int idx)
{
	return idx >= 0 && idx < vm->nr_devstate ? &vm->devstate[idx] : NULL;
}

void vm_set_exit_cb(struct vm *vm, vm_exit_cb cb, void *opaque)
{
	vm->exit_cb = cb;
	vm->exit_opaque = opaque;
}

/* ---- stop / error ----------------------------------------------------------------------------- */

static void kick_all_locked(struct vm *vm)
{
	for (int i = 0; i < vm->nr_vcpus; i++) {
		struct vcpu *v = &vm->vcpu[i];
		__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
		if (v->started)
			pthread_kill(v->thread, sig_kick());
	}
}

/* First stop wins: record status and reason, kick everyone, tell the owner. */
static void stop_with(struct vm *vm, int status, const char *fmt, ...)
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
		kick_all_locked(vm);
		pthread_cond_broadcast(&vm->cond);
	}
	pthread_mutex_unlock(&vm->lock);
	if (first && vm->exit_cb)
		vm->exit_cb(vm->exit_opaque);
}

void vm_stop(struct vm *vm, int status)
{
	stop_with(vm, status, NULL);
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
		stop_with(vm, *(uint8_t *)data, NULL);
	return 0;
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
		fprintf(stderr, "doppel: %s: guest %s %s 0x%llx (%u bytes) hits no device; %s%s\n",
			vm->name, is_write ? "write to" : "read from",
			space == IO_PIO ? "port" : "MMIO address", (unsigned long long)addr, len,
			is_write ? "ignored" : "read as all-ones",
			vm->unclaimed_warnings == UNCLAIMED_WARN_MAX ? " (further such accesses not reported)"
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
		stop_with(v->vm, 1, "guest triple fault on vCPU %d (rip=0x%llx); VM stopped", v->idx,
			  (unsigned long long)regs.rip);
		return 1;
	}
	case KVM_EXIT_HLT:
		stop_with(v->vm, 1, "guest halted vCPU %d with no way to wake it; VM stopped", v->idx);
		return 1;
	case KVM_EXIT_SYSTEM_EVENT:
		stop_with(v->vm, run->system_event.type == KVM_SYSTEM_EVENT_RESET ? 1 : 0,
			  "guest requested system event %u", run->system_event.type);
		return 1;
	case KVM_EXIT_FAIL_ENTRY:
		stop_with(v->vm, 1, "KVM entry failed on vCPU %d (reason 0x%llx)", v->idx,
			  (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		return 1;
	case KVM_EXIT_INTERNAL_ERROR:
		stop_with(v->vm, 1, "KVM internal error on vCPU %d (suberror %u)", v->idx,
			  run->internal.suberror);
		return 1;
	default:
		stop_with(v->vm, 1, "unhandled KVM exit reason %u on vCPU %d", run->exit_reason, v->idx);
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

	sigemptyset(&set);
	sigaddset(&set, sig_kick());
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	for (;;) {
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
				if (park(v))
					break;
				continue;
			}
			stop_with(vm, 1, "KVM_RUN on vCPU %d failed: %s", v->idx, strerror(errno));
			break;
		}
		v->exits++;
		int rc = handle_exit(v);
		if (rc < 0)
			stop_with(vm, 1, "bad device access on vCPU %d (exit reason %u); VM stopped", v->idx,
				  v->run->exit_reason);
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

int vm_start(struct vm *vm)
{
	sigset_t set, old;
	int rc = 0;

	pthread_mutex_lock(&vm->lock);
	if (vm->state != VM_CREATED) {
		pthread_mutex_unlock(&vm->lock);
		return -EINVAL;
	}
	vm->state = VM_RUNNING;
	/* vCPU threads start with the kick signal blocked and unblock it themselves. */
	sigemptyset(&set);
	sigaddset(&set, sig_kick());
	pthread_sigmask(SIG_BLOCK, &set, &old);
	for (int i = 0; i < vm->nr_vcpus; i++) {
		struct vcpu *v = &vm->vcpu[i];
		rc = -pthread_create(&v->thread, NULL, vcpu_thread, v);
		if (rc)
			break;
		v->started = true;
		vm->alive++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_mutex_unlock(&vm->lock);
	if (rc)
		stop_with(vm, 1, "cannot start vCPU thread: %s", strerror(-rc));
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
	if (vm->state == VM_PAUSED || vm->state == VM_CREATED)
		goto out;
	vm->pause_req = true;
	kick_all_locked(vm);
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
	int rc = 0;

	pthread_mutex_lock(&vm->lock);
	if (vm->stop_req || vm->state == VM_STOPPED)
		rc = -ESHUTDOWN;
	else if (vm->state == VM_PAUSED) {
		vm->pause_req = false;
		vm->state = VM_RUNNING;
		pthread_cond_broadcast(&vm->cond);
	}
	pthread_mutex_unlock(&vm->lock);
	return rc;
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
		.base = 0, .limit = 0xffffffff, .selector = 0x10, .type = 0xb,
		.present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1,
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
