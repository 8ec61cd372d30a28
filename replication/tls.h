/* tls.h — TLS 1.3 with mutual authentication under the replication and migration connections. */
#ifndef DOPPEL_REPLICATION_TLS_H
#define DOPPEL_REPLICATION_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * One credentials directory, the libvirt/QEMU layout: DIR/ca.pem (the CA that signs every peer),
 * DIR/cert.pem (this host's certificate, which must be valid for both TLS server and client use),
 * DIR/key.pem (its private key). Both sides present a certificate and verify the other's against
 * ca.pem (chain, validity dates, key usage); with a peer name set the peer's certificate must also
 * name it (DNS SAN, IP SAN, or CN when no DNS SAN).
 *
 * The layer sits *under* the existing connection code: tls_wrap() runs the handshake on a connected
 * TCP socket and, on success, replaces the caller's descriptor with one end of a socketpair whose
 * other end two relay threads carry over the TLS session (one encrypts what the engine writes, one
 * decrypts what the peer sends; GnuTLS allows one sender and one receiver thread per session). Every
 * existing send/recv/poll/shutdown/close on that descriptor keeps its meaning: EOF when the peer
 * closed or the TLS session failed, EPIPE after it, POLLRDHUP when the peer is gone. Encryption thus
 * never runs on the loop thread or inside an epoch pause. Closing (or shutting down) the descriptor
 * ends the session (close_notify, then the TCP socket is closed by the relay).
 */
struct tls_cfg;

#define TLS_ID_MAX 256 /* peer identity: certificate name, or "addr:IP" in plaintext mode */

/* Load DIR/{ca,cert,key}.pem. peer_name may be NULL (any certificate the CA signed). Checks that
 * the files exist, parse, that the key matches the certificate and that cert.pem is within its
 * validity dates. Returns 0 or -errno with one line in err ("tls: DIR/cert.pem: ..."). */
int tls_cfg_load(struct tls_cfg **out, const char *dir, const char *peer_name, char *err, size_t errlen)
	__attribute__((warn_unused_result));
void tls_cfg_free(struct tls_cfg *c); /* drops the owner's reference; live relays keep theirs */
const char *tls_cfg_dir(const struct tls_cfg *c);
const char *tls_cfg_peer_name(const struct tls_cfg *c); /* NULL when none is pinned */

/* Handshake as server (accepting side) or client on the connected TCP socket *fd, finished before
 * deadline_ns (now_ns() clock). On success *fd is the plaintext end of the relay (blocking, CLOEXEC;
 * the TCP socket now belongs to the relay), peer_id (TLS_ID_MAX) holds the peer certificate's name,
 * and 0 is returned. On failure the caller closes *fd if it is still >= 0 (it is unchanged except in
 * the rare case where the relay could not start after the handshake: then -1), and err holds
 * one line: "TLS handshake failed: ...", "peer certificate rejected: ...", "peer certificate names
 * X, expected Y", "timed out". Thread-safe; blocks at most until the deadline. */
int tls_wrap(struct tls_cfg *c, bool server, int *fd, uint64_t deadline_ns, char *peer_id, size_t idlen,
	     char *err, size_t errlen) __attribute__((warn_unused_result));

/* The identity of a peer for "accept only the intended peer": with TLS the certificate name; without,
 * "addr:" and the peer's IP address (no port) of the connected socket fd. */
void tls_plain_identity(int fd, char *id, size_t idlen);

/* Does the certificate (PEM text, len bytes) name `name` (DNS SAN / IP SAN / CN as above)? 1 yes,
 * 0 no, -EINVAL unparsable. Exposed for the unit tests. */
int tls_cert_names(const void *pem, size_t len, const char *name) __attribute__((warn_unused_result));

#endif
