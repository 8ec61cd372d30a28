/* remus.h — Remus: continuous checkpoint replication to a standby, output commit, heartbeat, failover. */
#ifndef DOPPEL_REPLICATION_REMUS_H
#define DOPPEL_REPLICATION_REMUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vmm;

/* Register the Remus control commands ("protect", "failover", ...) and the status hook on a VM
 * process. Loop thread, before vmm_run. Returns 0 or -errno. */
int remus_setup(struct vmm *v) __attribute__((warn_unused_result));

struct remus_standby_opts {
	const char *listen; /* ADDR:PORT ([IPv6]:PORT) */
	bool failover_manual; /* primary lost: report and wait for `doppel failover` */
	const char *fence_cmd; /* NULL, or a shell command run before a takeover (must exit 0) */
	const char
		*witness; /* NULL, or etcd client URLs "http://IP:PORT[,...]": take over only with the key */
	const char *witness_name; /* the key's VM name (NULL: this VM's name); the primary's must match */
	uint32_t witness_ttl_ms; /* 0: 1000 */
	const char *tls_dir; /* NULL (plaintext), or DIR with ca.pem, cert.pem, key.pem: TLS 1.3, mutual */
	const char *tls_peer_name; /* NULL, or the name the primary's certificate must carry */
	bool accept_any_peer; /* accept a new primary of another identity after the first one */
};

/* Make this (held, not running) VM a standby: listen on o->listen for a primary's stream, keep the
 * last acknowledged epoch, take over (per o) when the primary is lost. Loop thread, before vmm_run.
 * Returns 0 or -errno with one line in err. */
int remus_standby_listen(struct vmm *v, const struct remus_standby_opts *o, char *err, size_t errlen)
	__attribute__((warn_unused_result));

#endif
