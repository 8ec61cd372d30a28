/* kv.h — doppel-kv internals: the reference server, the single-op client and the load generator. */
#ifndef DOPPEL_KV_H
#define DOPPEL_KV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "tools/kv/kv_proto.h"

/* ---- reference server (kv_server.c) ------------------------------------------------------------ */

struct kv_server;

/*
 * Create a server state (store + retry cache) and, if addrport is non-NULL, bind a UDP socket:
 * "PORT" binds [::] dual-stack (0.0.0.0 if IPv6 is unavailable), "ADDR:PORT" / "[V6]:PORT" binds ADDR.
 * addrport == NULL gives a socketless state for kv_server_handle() (tests).
 * Returns 0 or -errno with a one-line reason in err.
 */
int kv_server_open(const char *addrport, struct kv_server **out, char *err, size_t errlen);

/* Free everything, close the socket. NULL-safe. */
void kv_server_close(struct kv_server *s);

/*
 * Handle one request datagram from `from` and build the reply in out (cap >= KV_DGRAM_MAX).
 * Returns the reply length, or 0 when the datagram is dropped (no parseable ID). A request whose
 * (from, ID) is in the retry cache gets the cached reply and is not applied again.
 */
size_t kv_server_handle(struct kv_server *s, const struct sockaddr *from, socklen_t fromlen, const char *buf,
			size_t len, char *out, size_t cap);

/* Serve until SIGINT/SIGTERM (blocked and read via signalfd). Returns 0 or -errno. */
int kv_server_run(struct kv_server *s, bool verbose);

/* Bound address as text ("[::]:7777"), for messages. */
const char *kv_server_addr(const struct kv_server *s);

/* ---- client (kv_client.c) ------------------------------------------------------------------------ */

enum kv_load_cmd { KV_LOAD_SET = KV_SET, KV_LOAD_GET = KV_GET, KV_LOAD_INCR = KV_INCR, KV_LOAD_MIX };

struct kv_client_opts {
	const char *target; /* HOST[:PORT] */
	unsigned timeout_ms; /* per try */
	unsigned retries; /* single op: extra tries after the first */
	/* load mode */
	uint64_t load; /* number of requests; 0 = single op */
	double rate; /* requests per second; 0 = as fast as the window allows */
	unsigned window; /* max requests in flight */
	enum kv_load_cmd cmd;
	const char *key; /* key, or key prefix when keys > 1 */
	unsigned keys; /* number of keys (1 = just `key`) */
	double deadline_s; /* give up the whole run after this; 0 = default */
	const char *log; /* JSONL log of acknowledged ops, or NULL */
	bool json; /* summary as one JSON object */
};

/* Connect a UDP socket to HOST[:PORT] (getaddrinfo, IPv4/IPv6). Returns fd or -errno (+ err). */
int kv_connect(const char *target, char *err, size_t errlen);

/* A request ID base unique to this process (time and pid mixed); IDs base, base+1, ... */
uint64_t kv_id_base(void);

/*
 * One request: send, wait timeout_ms, resend the SAME ID up to `retries` times. On OK prints VALUE to
 * stdout and returns 0; on ERR prints the ERR line to stderr and returns 1; no reply -> 3; setup
 * errors -> 2 (message on stderr).
 */
int kv_client_single(const struct kv_client_opts *o, enum kv_cmd cmd, const char *key, const char *value);

/* Load mode (see kv_client.c for pacing). Returns the process exit status: 0 all acknowledged,
 * 1 otherwise, 2 setup error. */
int kv_client_load(const struct kv_client_opts *o);

#endif
