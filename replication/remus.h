/* remus.h — Remus: continuous checkpoint replication to a standby, output commit, heartbeat, failover. */
#ifndef DOPPEL_REPLICATION_REMUS_H
#define DOPPEL_REPLICATION_REMUS_H

#include <stddef.h>

struct vmm;

/* Register the Remus control commands ("protect", "failover", ...) and the status hook on a VM
 * process. Loop thread, before vmm_run. Returns 0 or -errno. */
int remus_setup(struct vmm *v) __attribute__((warn_unused_result));

/* Make this (held, not running) VM a standby: listen on `addr` for a primary's stream, keep the last
 * acknowledged epoch, take over when the primary goes silent. Loop thread, before vmm_run.
 * Returns 0 or -errno with one line in err. */
int remus_standby_listen(struct vmm *v, const char *addr, char *err, size_t errlen)
	__attribute__((warn_unused_result));

#endif
