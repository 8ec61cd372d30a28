/* spawner.h — run one fixed site command (e.g. --fence-cmd) from a helper process forked before the
 * VM process installs its seccomp filter, so the command runs with the host's full system-call set. */
#ifndef DOPPEL_COMMON_SPAWNER_H
#define DOPPEL_COMMON_SPAWNER_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

struct spawner;

/* Forks the helper, which holds `sh -c CMD` fixed: the VM process can only ask it to run that command
 * (never another), to kill the running one, or to exit. Call it before the sandbox is applied. The
 * helper dies with the VM process (PR_SET_PDEATHSIG and EOF on its socket). */
int spawner_start(const char *cmd, struct spawner **out, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Runs the command once and waits for it. Returns 0 with *wstatus (a waitpid status) once it ended,
 * -ETIMEDOUT if it was still running at deadline_ns (CLOCK_MONOTONIC; then killed), -ECANCELED if
 * *cancel became true (then killed), -EPIPE if the helper is gone. *pid gets the command's pid while
 * it runs (0 after). One caller at a time. */
int spawner_run(struct spawner *s, uint64_t deadline_ns, atomic_bool *cancel, _Atomic int *pid, int *wstatus,
		char *err, size_t errlen) __attribute__((warn_unused_result));

/* Kills a running command, stops the helper and frees s (NULL is fine). */
void spawner_stop(struct spawner *s);

#endif
