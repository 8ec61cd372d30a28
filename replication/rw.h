/* rw.h — byte I/O for the checkpoint stream: file descriptors (file, pipe, socket) and memory buffers. */
#ifndef DOPPEL_REPLICATION_RW_H
#define DOPPEL_REPLICATION_RW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * A tagged struct, no vtable: SR_IO_FD talks to a blocking or non-blocking descriptor (a socket gets
 * poll() with timeout_ms before every transfer so a dead peer cannot hang us), SR_IO_MEM to memory.
 * Both directions count bytes moved. Not thread-safe: one user at a time.
 */
enum sr_io_kind { SR_IO_FD, SR_IO_MEM };
struct tls_link;

struct sr_out {
	enum sr_io_kind kind;
	int fd; /* SR_IO_FD */
	int timeout_ms; /* SR_IO_FD: -1 = wait forever */
	struct tls_link *tls; /* SR_IO_FD: NULL, or write through this TLS link (replication/tls.h) */
	uint8_t *buf; /* SR_IO_MEM: growable, owned by the sr_out */
	size_t len, cap; /* SR_IO_MEM */
	size_t max; /* SR_IO_MEM: refuse to grow past this (0 = no limit) -> -ENOSPC */
	uint64_t bytes; /* bytes written so far */
};

struct sr_in {
	enum sr_io_kind kind;
	int fd; /* SR_IO_FD */
	int timeout_ms; /* SR_IO_FD: -1 = wait forever */
	uint64_t deadline_ns; /* SR_IO_FD: 0, or an absolute now_ns() past which reads fail -ETIMEDOUT
			       * (one overall bound, e.g. handshake + HELLO: a peer dribbling one byte
			       * per timeout_ms cannot hold the connection longer) */
	struct tls_link *tls; /* SR_IO_FD: NULL, or read through this TLS link (replication/tls.h) */
	const uint8_t *buf; /* SR_IO_MEM: caller-owned, must outlive the sr_in */
	size_t len, pos; /* SR_IO_MEM */
	uint64_t bytes; /* bytes read so far */
};

/* Writers. sr_out_fd does not take ownership of fd (set o->tls afterwards for the TLS direct path). sr_out_mem starts empty; free with sr_out_free
 * (safe for either kind, idempotent). */
void sr_out_fd(struct sr_out *o, int fd, int timeout_ms);
void sr_out_mem(struct sr_out *o, size_t max);
void sr_out_free(struct sr_out *o);

/* Write all len bytes. Returns 0, -ETIMEDOUT (peer not draining within timeout_ms), -EPIPE (peer
 * closed), -ENOMEM/-ENOSPC (memory), or another -errno. On error a prefix may have been written. */
int sr_out_write(struct sr_out *o, const void *buf, size_t len) __attribute__((warn_unused_result));

/* Readers. sr_in_fd does not take ownership of fd; sr_in_mem does not copy buf. */
void sr_in_fd(struct sr_in *in, int fd, int timeout_ms);
void sr_in_mem(struct sr_in *in, const void *buf, size_t len);

/* Read up to len bytes, looping until len bytes came or EOF. Returns the count read (< len only at
 * EOF, 0 at EOF before any byte), or -ETIMEDOUT / -errno. Callers decide whether a short count is
 * a truncated stream (the stream layer reports "truncated stream: ..."). */
ssize_t sr_in_read(struct sr_in *in, void *buf, size_t len) __attribute__((warn_unused_result));

#endif
