/* tls.h — TLS 1.3 with mutual authentication under the replication and migration connections. */
#ifndef DOPPEL_REPLICATION_TLS_H
#define DOPPEL_REPLICATION_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

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

/*
 * The direct path (migration's bulk stream). tls_wrap_link is tls_wrap that also returns a reference
 * to the connection's link (*link; NULL on failure): tls_link_send encrypts on the caller's thread
 * and writes to the TCP socket (one copy, no relay hop), after whatever the owner's threads had
 * queued on the descriptor (the order of bytes is kept); tls_link_recv decrypts straight into the
 * caller's buffer — from the first call on, the rx relay stops and every read of the connection
 * must go through tls_link_recv (the descriptor is never fed again; what the relay had queued is
 * returned first). Writes and closes on the descriptor keep working as with tls_wrap. One sending
 * thread may use tls_link_send while another writes on the descriptor; one thread at a time may
 * call tls_link_recv. Drop the reference with tls_link_put after closing the descriptor.
 */
struct tls_link;
int tls_wrap_link(struct tls_cfg *c, bool server, int *fd, uint64_t deadline_ns, struct tls_link **link,
		  char *peer_id, size_t idlen, char *err, size_t errlen) __attribute__((warn_unused_result));
/* Send all len bytes. 0, -ETIMEDOUT (the socket took nothing for timeout_ms; -1: no limit) or
 * -EPIPE (the connection is gone). */
int tls_link_send(struct tls_link *l, const void *buf, size_t len, int timeout_ms)
	__attribute__((warn_unused_result));
/* Receive 1..len bytes, waiting up to timeout_ms (-1: no limit). The count, 0 at EOF (close_notify,
 * reset, a bad record — the connection is then dead), or -ETIMEDOUT. */
ssize_t tls_link_recv(struct tls_link *l, void *buf, size_t len, int timeout_ms)
	__attribute__((warn_unused_result));
void tls_link_put(struct tls_link *l); /* NULL-safe */
/* The TCP socket under the link, for poll(POLLRDHUP) only (never read or write it). */
int tls_link_net_fd(const struct tls_link *l);

/* The identity of a peer for "accept only the intended peer": with TLS the certificate name; without,
 * "addr:" and the peer's IP address (no port) of the connected socket fd. */
void tls_plain_identity(int fd, char *id, size_t idlen);

/* Does the certificate (PEM text, len bytes) name `name` (DNS SAN / IP SAN / CN as above)? 1 yes,
 * 0 no, -EINVAL unparsable. Exposed for the unit tests. */
int tls_cert_names(const void *pem, size_t len, const char *name) __attribute__((warn_unused_result));

#endif
