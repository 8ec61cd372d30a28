/* migrate.h — live migration: converging pre-copy over the checkpoint stream. */
#ifndef DOPPEL_MIGRATE_MIGRATE_H
#define DOPPEL_MIGRATE_MIGRATE_H

#include <stddef.h>

struct vmm;

/* Register the "migrate" control command and the status hook. Loop thread, before vmm_run. */
int migrate_setup(struct vmm *v) __attribute__((warn_unused_result));

/* Make this (held, not running) VM wait for an incoming migration on `addr`; when the stream has
 * arrived completely the VM starts. tls_dir (NULL: plaintext) holds ca.pem, cert.pem, key.pem: only a
 * source with a certificate of that CA (naming tls_peer_name when not NULL) is accepted; others are
 * closed with one log line and the destination keeps waiting. Loop thread, before vmm_run. Returns 0 or -errno with err. */
int migrate_incoming_listen(struct vmm *v, const char *addr, const char *tls_dir, const char *tls_peer_name,
			    char *err, size_t errlen) __attribute__((warn_unused_result));

#endif
