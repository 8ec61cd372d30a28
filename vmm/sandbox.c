/* sandbox.c — least privilege for a running VM process: one seccomp allowlist and a capability drop. */
// clang-format off
/*
 * vmm_sandbox_apply() runs once, in vmm_run(), after every set-up step that needs more (KVM and
 * guest RAM, taps via netlink, disks, the control socket under its umask/egid, the standby's or
 * incoming listener) and before the vCPU threads start. From then on every thread of the process
 * (SCMP_FLTATR_CTL_TSYNC: threads that already exist too, e.g. virtio-blk workers) may only make the
 * system calls below; anything else kills the whole process (SCMP_ACT_KILL_PROCESS: a compromised
 * device thread must not be able to retry). Capabilities are narrowed to CAPS_KEPT on the calling
 * thread (the loop); threads created later (vCPUs, Remus/migration/snapshot/relay/witness threads)
 * inherit the narrowed set.
 *
 * Who needs what at run time (one line per user; keep it that way when adding):
 *   loop      libev (epoll, signalfd-less signals via a pipe/eventfd), control socket (accept4,
 *             SO_PEERCRED, /proc/PID/status for groups), timers, tap RX, serial, status JSON
 *   vcpu      KVM_RUN and device ioctls, tap/serial writes, pthread_kill kicks (tgkill), futex
 *   remus     sockets (connect/accept/send/recv/poll/shutdown), SCHED_FIFO around epochs,
 *             --fence-cmd (asked of a helper forked before the filter: send/recv on its socket,
 *             wait4 at exit; no fork or execve from here)
 *   tls       GnuTLS handshake (getrandom, reads of the credentials at protect/migrate time),
 *             relay threads (socketpair, poll, send/recv)
 *   migrate   sockets as remus, throttle thread (nanosleep), madvise on guest RAM
 *   snapshot  openat O_EXCL, pwrite/write, fsync, rename, unlink, lseek (SEEK_DATA/SEEK_HOLE)
 *   witness   libcurl: sockets, DNS (getaddrinfo reads /etc/hosts and resolv.conf, UDP sendmmsg/recvfrom), uname
 *   disk      virtio-blk workers: preadv/pwritev/fdatasync/fallocate (discard); flock (the image
 *             lock handed over by a --shared-disks migration)
 *   all       threads (clone3, set_robust_list, rseq, futex, exit), memory (mmap, mprotect, madvise,
 *             munmap, mremap, brk), time (clock_nanosleep), logging (writev), malloc arenas
 *
 * Finding a missing system call (a thread of yours died with "Bad system call", exit status 159 or
 * signal SIGSYS): run the failing case with `doppel run --sandbox-log ...`, which installs the same
 * list with SCMP_ACT_TRAP: an unlisted call fails with ENOSYS and prints one stderr line
 *     doppel: sandbox: unlisted system call 272
 * (`scmp_sys_resolver 272` names it: unshare; the kernel's SCMP_ACT_LOG would need audit, absent on
 * many kernels). Add the call to ALLOWED with
 * a comment naming its user, and add a system test that exercises that path with the sandbox on (the
 * default).
 * `--no-sandbox` disables both the filter and the capability drop (debugging only).
 */
// clang-format on
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <ucontext.h>
#include <seccomp.h>
#include <cap-ng.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "vmm/sandbox.h"
#include "common/errf.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

#define SYS(name) SCMP_SYS(name)

/* The allowlist. Grouped by user (see the header); a call used by several is listed once. */
static const int ALLOWED[] = {
	/* all: I/O on descriptors we hold */
	SYS(read),
	SYS(write),
	SYS(readv),
	SYS(writev),
	SYS(pread64),
	SYS(pwrite64),
	SYS(preadv),
	SYS(pwritev),
	SYS(preadv2),
	SYS(pwritev2),
	SYS(lseek),
	SYS(close),
	SYS(dup),
	SYS(dup2),
	SYS(dup3),
	SYS(fcntl),
	SYS(ioctl) /* vcpu: KVM_RUN, KVM_* state, dirty log; tap; FIONREAD */,
	SYS(pipe2),
	SYS(eventfd2) /* libev async */,
	SYS(fstat),
	SYS(newfstatat),
	SYS(statx),
	SYS(stat),
	SYS(lstat),
	/* all: memory and threads */
	SYS(mmap),
	SYS(munmap),
	SYS(mremap),
	SYS(mprotect),
	SYS(madvise) /* migrate prefault, malloc; post-copy: drop stale pages */,
	SYS(userfaultfd) /* post-copy destination (falls back to /dev/userfaultfd without CAP_SYS_PTRACE) */,
	SYS(memfd_create) /* --log journal: sd_journal_send passes large entries in a memfd */,
	SYS(brk),
	SYS(clone),
	SYS(clone3),
	SYS(set_robust_list),
	SYS(get_robust_list),
	SYS(rseq),
	SYS(futex),
	SYS(exit),
	SYS(restart_syscall) /* a signal (a vCPU kick) interrupted a sleep */,
	SYS(exit_group),
	SYS(sched_yield),
	SYS(getpid),
	SYS(gettid),
	SYS(getppid),
	SYS(membarrier),
	SYS(set_tid_address),
	SYS(sched_getaffinity) /* glibc: nproc for zstd/worker counts */,
	SYS(sched_setaffinity) /* fleet: vCPU threads pinned to the VM's "cpus" as they start */,
	SYS(prlimit64),
	SYS(sysinfo) /* glibc: physical memory size (zstd, malloc) */,
	SYS(getrlimit),
	SYS(prctl) /* thread names (PR_SET_NAME) */,
	/* all: time */
	SYS(clock_gettime),
	SYS(clock_getres),
	SYS(gettimeofday),
	SYS(time),
	SYS(nanosleep),
	SYS(clock_nanosleep),
	SYS(timerfd_create),
	SYS(timerfd_settime),
	SYS(timerfd_gettime),
	/* loop: libev backends, signals, vCPU kicks */
	SYS(epoll_create1),
	SYS(epoll_ctl),
	SYS(epoll_wait),
	SYS(epoll_pwait),
	SYS(epoll_pwait2),
	SYS(poll),
	SYS(ppoll),
	SYS(select),
	SYS(pselect6),
	SYS(rt_sigaction),
	SYS(rt_sigprocmask),
	SYS(rt_sigreturn),
	SYS(rt_sigtimedwait),
	SYS(sigaltstack),
	SYS(tgkill),
	SYS(tkill),
	SYS(kill) /* stop self on signal */,
	SYS(signalfd4),
	/* loop: control socket peers; remus/migrate/tls/witness: network */
	SYS(socket),
	SYS(socketpair),
	SYS(connect),
	SYS(accept),
	SYS(accept4),
	SYS(bind) /* witness: curl */,
	SYS(listen),
	SYS(shutdown),
	SYS(getsockopt),
	SYS(setsockopt),
	SYS(getsockname),
	SYS(getpeername),
	SYS(sendto),
	SYS(recvfrom),
	SYS(sendmsg),
	SYS(recvmsg),
	SYS(sendmmsg),
	SYS(recvmmsg),
	SYS(getuid),
	SYS(geteuid),
	SYS(getgid),
	SYS(getegid),
	SYS(getgroups),
	SYS(uname) /* witness: libcurl, getaddrinfo */,
	SYS(getrandom) /* tls, snapshot ids */,
	/* remus: SCHED_FIFO around epochs */
	SYS(sched_setscheduler),
	SYS(sched_getscheduler),
	SYS(sched_setparam),
	SYS(sched_getparam),
	SYS(sched_get_priority_min),
	SYS(sched_get_priority_max),
	SYS(sched_setattr),
	SYS(sched_getattr),
	/* snapshot, tls credentials, /proc, DNS config: files */
	SYS(open),
	SYS(openat),
	SYS(access),
	SYS(faccessat),
	SYS(faccessat2),
	SYS(readlink),
	SYS(readlinkat),
	SYS(getdents64),
	SYS(fsync),
	SYS(fdatasync),
	SYS(rename),
	SYS(renameat),
	SYS(renameat2),
	SYS(unlink),
	SYS(unlinkat),
	SYS(ftruncate),
	SYS(fchmod) /* serial file 0600 */,
	SYS(fallocate) /* disk: discard */,
	SYS(flock) /* disk: the image lock moves at a shared-storage migration's GO */,
	SYS(getcwd),
	SYS(umask),
	/* remus: reaping the --fence-cmd helper at exit (common/spawner.c: the command itself runs in a
	 * helper forked before this filter, so neither fork nor execve is allowed here) */
	SYS(wait4),
};

/* Kept after set-up: SCHED_FIFO (remus), writing snapshots where root may (DAC), nothing else. */
static const int CAPS_KEPT[] = {CAP_SYS_NICE, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER};

static int drop_caps(char *err, size_t errlen)
{
	capng_get_caps_process();
	capng_clear(CAPNG_SELECT_BOTH);
	for (size_t i = 0; i < sizeof(CAPS_KEPT) / sizeof(CAPS_KEPT[0]); i++)
		if (capng_update(CAPNG_ADD, CAPNG_EFFECTIVE | CAPNG_PERMITTED, (unsigned)CAPS_KEPT[i]))
			return errf(err, errlen, -EINVAL, "sandbox: cannot keep capability %d", CAPS_KEPT[i]);
	/* An unprivileged run has none of them to keep: then there is nothing to drop either. */
	if (capng_apply(CAPNG_SELECT_BOTH) && geteuid() == 0)
		return errf(err, errlen, -EPERM, "sandbox: cannot drop capabilities");
	return 0;
}

/* --sandbox-log: an unlisted call traps here (SIGSYS, on the calling thread), is named on stderr
 * with one async-signal-safe write, and fails with ENOSYS instead of killing the process. (The
 * kernel's own SCMP_ACT_LOG needs audit support, which kernels without CONFIG_AUDIT lack.) */
static void sigsys_log(int sig, siginfo_t *si, void *uc_)
{
	ucontext_t *uc = uc_;
	char msg[96], num[16], *p = num + sizeof(num);
	unsigned n = (unsigned)si->si_syscall;
	static const char pre[] = "doppel: sandbox: unlisted system call ";
	size_t len = 0;

	(void)sig;
	do
		*--p = (char)('0' + n % 10);
	while (n /= 10);
	memcpy(msg, pre, sizeof(pre) - 1);
	len = sizeof(pre) - 1;
	memcpy(msg + len, p, (size_t)(num + sizeof(num) - p));
	len += (size_t)(num + sizeof(num) - p);
	msg[len++] = '\n'; /* a number only: name lookups allocate (not async-signal-safe) */
	if (write(STDERR_FILENO, msg, len) < 0) {
		/* nothing else to do in a signal handler */
	}
	uc->uc_mcontext.gregs[REG_RAX] = -ENOSYS;
}

int vmm_sandbox_apply(enum vmm_sandbox mode, char *err, size_t errlen)
{
	scmp_filter_ctx ctx;
	int rc;

	if (mode == VMM_SANDBOX_OFF)
		return 0;
#if defined(__SANITIZE_ADDRESS__)
	/* `make asan` only: LeakSanitizer's exit-time check stops the world from a ptrace()ing tracer
	 * task, which this filter kills — the process then spun forever in exit(). Check for leaks now,
	 * while that still works (a leak in set-up fails the run); the exit-time check is then off for
	 * a sandboxed process (--no-sandbox keeps it). */
	__lsan_do_leak_check();
#endif
	rc = drop_caps(err, errlen);
	if (rc)
		return rc;
	if (mode == VMM_SANDBOX_LOG) {
		struct sigaction sa = {.sa_sigaction = sigsys_log, .sa_flags = SA_SIGINFO};
		if (sigaction(SIGSYS, &sa, NULL) < 0)
			return errf(err, errlen, -errno, "sandbox: sigaction(SIGSYS): %s", strerror(errno));
	}
	ctx = seccomp_init(mode == VMM_SANDBOX_LOG ? SCMP_ACT_TRAP : SCMP_ACT_KILL_PROCESS);
	if (!ctx)
		return errf(err, errlen, -ENOMEM, "sandbox: seccomp_init failed");
	rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
	/* a binary tree over the syscall number: every KVM exit's ioctl pays log2(n) comparisons, not
	 * a walk of the whole list */
	if (!rc)
		rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
	for (size_t i = 0; !rc && i < sizeof(ALLOWED) / sizeof(ALLOWED[0]); i++)
		if (ALLOWED[i] >= 0) /* __NR_SCMP_ERROR: not on this architecture */
			rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, ALLOWED[i], 0);
	if (!rc)
		rc = seccomp_load(ctx);
	seccomp_release(ctx);
	if (rc)
		return errf(err, errlen, rc, "sandbox: cannot install the seccomp filter: %s", strerror(-rc));
	return 0;
}

static void *selftest_main(void *arg)
{
	long *rc = arg;

	*rc = syscall(SYS_unshare, 0); /* not on ALLOWED: killed here with the sandbox on */
	return NULL;
}

int vmm_sandbox_selftest(void)
{
	pthread_t t;
	long rc = -1;

	if (pthread_create(&t, NULL, selftest_main, &rc))
		return -EAGAIN;
	pthread_join(t, NULL);
	return (int)rc;
}
