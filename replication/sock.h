/* sock.h — TCP endpoints for replication and migration: ADDR:PORT parsing, listen, bounded connect. */
#ifndef DOPPEL_REPLICATION_SOCK_H
#define DOPPEL_REPLICATION_SOCK_H

#include <stddef.h>
#include <sys/socket.h>

/* Parse "HOST:PORT" or "[IPV6ADDR]:PORT" into a socket address (numeric
 * hosts and resolvable names; port 1..65535). Returns 0 or -EINVAL with one line in err. */
int sock_parse(const char *s, struct sockaddr_storage *ss, socklen_t *len, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Print a socket address as "HOST:PORT" / "[V6]:PORT". Returns buf. */
const char *sock_str(const struct sockaddr *sa, socklen_t len, char *buf, size_t buflen);

/* Listening TCP socket on `s` (SO_REUSEADDR, CLOEXEC, non-blocking). Returns fd or -errno (err). */
int sock_listen(const char *s, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Connect to `s` within timeout_ms. The socket returned is blocking, CLOEXEC, TCP_NODELAY, with TCP
 * keepalive and TCP_USER_TIMEOUT = timeout_ms so a dead peer is noticed by the kernel too.
 * Returns fd or -errno (err: "cannot connect to HOST:PORT: reason"). */
int sock_connect(const char *s, int timeout_ms, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Accept one connection on a listening fd (non-blocking accept; -EAGAIN when none). Applies the same
 * options as sock_connect. Returns fd or -errno. */
int sock_accept(int lfd, int timeout_ms) __attribute__((warn_unused_result));

/* Apply NODELAY, keepalive and TCP_USER_TIMEOUT (timeout_ms, 0 = leave) to a connected socket. */
void sock_tune(int fd, int timeout_ms);

#endif
