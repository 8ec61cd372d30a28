/* sandbox.h — least privilege for a running VM process: one seccomp allowlist and a capability drop. */
#ifndef DOPPEL_VMM_SANDBOX_H
#define DOPPEL_VMM_SANDBOX_H

#include <stddef.h>

/* OFF: nothing (library users and unit tests; `doppel run --no-sandbox`). ON: unlisted system calls
 * kill the process (`doppel run`'s default). LOG (`--sandbox-log`): same list, an unlisted call fails
 * with ENOSYS and is named on stderr ("doppel: sandbox: unlisted system call N"; scmp_sys_resolver N names it), to find what
 * a new feature needs. */
enum vmm_sandbox { VMM_SANDBOX_OFF = 0, VMM_SANDBOX_ON, VMM_SANDBOX_LOG };

/* Drop capabilities (keep CAP_SYS_NICE and the file-access ones) and install the seccomp filter on
 * every thread of the process. Call once, after all set-up, on the thread that creates the vCPUs.
 * 0 or -errno with one line in err. Irreversible. */
int vmm_sandbox_apply(enum vmm_sandbox mode, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Test hook (registered as the hidden control command "sandbox-selftest" only when the process was
 * started with DOPPEL_TEST_HOOKS=1): a new thread makes one system call that is not on the list
 * (unshare(0), a no-op when allowed). With the sandbox on the kernel kills the process (SIGSYS);
 * without it the call returns 0. Returns that result when the process survives. */
int vmm_sandbox_selftest(void);

#endif
