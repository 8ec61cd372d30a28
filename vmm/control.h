/* control.h — the VM control plane: newline-delimited JSON over a unix stream socket (libev server; the blocking client is tools/common/ctl_client.h). */
#ifndef DOPPEL_CONTROL_H
#define DOPPEL_CONTROL_H

#include <stdbool.h>
#include <stddef.h>

struct ev_loop;
struct json_object;

/* Reply builders, CTL_DEFER, ctl_reply and ctl_conn_alive are part of the runtime contract: vmm/vmm.h. */
#include "vmm/vmm.h"

/*
 * Protocol. A request is one JSON object on one line: {"cmd": "status", ...args}. Each request gets
 * exactly one reply, one JSON object on one line, in request order: {"ok": true, ...} or
 * {"ok": false, "error": "one clear line"}. A request line longer than CTL_MAX_LINE bytes gets
 * {"ok":false,"error":"request too large"} and the connection is closed; any other bad request gets an
 * error reply and the connection stays usable.
 */
#define CTL_MAX_LINE (64 * 1024) /* request line, without its '\n' */
#define CTL_MAX_OUT (1024 * 1024) /* per-client unsent reply bytes; a client over it is dropped */
#define CTL_MAX_CMD 64 /* length of the "cmd" string */

/* ---- request parsing (pure, no sockets) ---------------------------------------------------------- */

/* Parse one request line (len bytes, without the '\n'; a trailing '\r' and surrounding whitespace are
 * ignored; need not be NUL-terminated). On success returns 0, *req is the request object (caller owns:
 * json_object_put) and *cmd points at its "cmd" string (valid as long as *req). On failure returns
 * -E2BIG (line over CTL_MAX_LINE) or -EINVAL (empty, NUL byte, malformed JSON, not an object, missing
 * or non-string or empty or over-long "cmd"), sets *req = NULL, *cmd = NULL and writes one line to err. */
int ctl_parse_request(const char *line, size_t len, struct json_object **req, const char **cmd, char *err,
		      size_t errlen) __attribute__((warn_unused_result));

/* Parse exactly one JSON value (any type) from buf[0, len), whitespace around it allowed, no NUL bytes.
 * Returns 0 and *out (caller owns), or -EINVAL/-ENOMEM with *out = NULL and one line in err. */
int ctl_parse_json(const char *buf, size_t len, struct json_object **out, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Fill *sa for a unix socket at path. -EINVAL (empty) or -ENAMETOOLONG (over sun_path) with one line. */
struct sockaddr_un;
int ctl_sockaddr(const char *path, struct sockaddr_un *sa, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* How replies and requests are serialised: one line, '/' not escaped. */
#define CTL_JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* ---- server (libev) ------------------------------------------------------------------------------- */

struct ctl_server;
struct ctl_conn;

/*
 * Called on the loop thread for each well-formed request. `req` is owned by the server (take a
 * json_object_get() to keep it); `cmd` points into it. Return:
 *   - a reply object (ownership passes to the server). If it has no "ok" key, "ok": true is added in
 *     front, so a handler may return just {"state": "running"}; use ctl_error() for failures;
 *   - NULL: the command is unknown; the server replies {"ok":false,"error":"unknown command 'x'"};
 *   - CTL_DEFER: the reply comes later. The handler must have called ctl_current_conn() during this call;
 *     later it calls ctl_reply() exactly once with that conn. While a reply is deferred, further
 *     requests from the same client are buffered, not dispatched (replies stay in order).
 * A returned reply is written to the socket (as far as the socket buffer takes it) before the server
 * goes back to the loop, so a "stop" handler can ev_break() the loop and return its reply, and the caller
 * ctl_server_stop()s after ev_run() returns. The handler may also call ctl_server_stop() on its own
 * server; the reply is then dropped.
 */
typedef struct json_object *(*ctl_handler)(void *opaque, const char *cmd, struct json_object *req);

/* Listen on the unix socket `path` and serve it from `loop` (call on the loop's thread; the loop must not
 * be running on another thread at the same time). Creates the parent directory (mode 0755) if missing.
 * If `path` exists: a socket with a live server -> -EADDRINUSE "control socket PATH is in use by a
 * running VM"; a stale socket (connect refused) -> unlinked and replaced; anything else -> -EEXIST,
 * left alone. The socket is created mode 0660 (under umask 0117, no chmod after bind) and, with
 * group >= 0, owned by that group. Only clients that are root, of this process's uid or (group >= 0)
 * in that group (SO_PEERCRED; supplementary groups too) are served; others get one
 * {"ok":false,"error":"permission denied: ..."} line and are closed (one log line). Returns 0 and
 * *out, or -errno with one line in err. The server's watchers keep the loop alive until
 * ctl_server_stop(). */
int ctl_server_start(struct ctl_server **out, struct ev_loop *loop, const char *path, long group,
		     ctl_handler fn, void *opaque, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Stop listening, close every client, unlink the socket. Call on the loop thread (from a handler is
 * fine). NULL-safe. Outstanding deferred conns stay valid until their ctl_reply(); the replies are
 * dropped. The server's memory is freed when the last such conn is released. */
void ctl_server_stop(struct ctl_server *s);

/* The path the server listens on. */
const char *ctl_server_path(const struct ctl_server *s);

/*
 * Deferred replies: lifetime by reference count. Inside a handler, ctl_current_conn() returns the
 * requesting client's conn with one reference taken for the caller (NULL outside a handler). That
 * reference keeps the conn's memory valid even after the client disconnects or the server stops;
 * ctl_reply() consumes it.
 */
struct ctl_conn *ctl_current_conn(struct ctl_server *s);

/*
 * Inside a handler that returns a reply (not CTL_DEFER): once that reply is written, the server forgets
 * the connection and calls fn(opaque, fd) on the loop thread, which then owns the socket (a byte stream
 * from then on: `doppel console`). If the client goes away first, fn is never called. 0 or -EINVAL
 * (outside a handler).
 */
typedef void (*ctl_handover_fn)(void *opaque, int fd);
int ctl_handover(struct ctl_server *s, ctl_handover_fn fn, void *opaque);

#endif
