/* kv_proto.h — the doppel key-value wire protocol: parsing and formatting of requests and replies. */
#ifndef DOPPEL_KV_PROTO_H
#define DOPPEL_KV_PROTO_H

/*
 * Protocol (UDP, one datagram per message, ASCII, fields separated by one space, an optional single
 * trailing "\n" or "\r\n" is tolerated):
 *   request  "ID CMD KEY [VALUE]"   CMD one of SET (VALUE required), GET, INCR (no VALUE)
 *   reply    "ID OK VALUE" | "ID ERR REASON"
 * ID: decimal u64 chosen by the client. KEY: 1..32 chars [A-Za-z0-9_.-]. VALUE: 1..64 printable
 * ASCII chars, no spaces. INCR treats the stored value as a decimal i64 (a missing key starts at 0) and
 * replies with the new value. GET of a missing key replies "ID ERR nokey". SET replies with the value set.
 * A server remembers recent (client address, ID) -> reply and answers a retried ID with the same reply
 * without applying it again.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KV_DEFAULT_PORT 7777
#define KV_KEY_MAX 32
#define KV_VAL_MAX 64
#define KV_REASON_MAX 64
#define KV_DGRAM_MAX 256 /* longer datagrams are malformed */

enum kv_cmd { KV_SET, KV_GET, KV_INCR };

struct kv_req {
	uint64_t id;
	enum kv_cmd cmd;
	char key[KV_KEY_MAX + 1];
	char val[KV_VAL_MAX + 1]; /* "" unless cmd == KV_SET */
};

struct kv_reply {
	uint64_t id;
	bool ok;
	char text[KV_REASON_MAX > KV_VAL_MAX ? KV_REASON_MAX + 1 : KV_VAL_MAX + 1]; /* VALUE or REASON */
};

/* Parse a decimal u64 / i64 of exactly len chars (no sign for u64, optional '-' for i64, no leading
 * '+', no spaces). Returns 0, or -EINVAL (not a number) / -ERANGE (overflow). */
int kv_parse_u64(const char *s, size_t len, uint64_t *out);
int kv_parse_i64(const char *s, size_t len, int64_t *out);

/* True if s[0..len) is a valid KEY / VALUE. */
bool kv_key_valid(const char *s, size_t len);
bool kv_value_valid(const char *s, size_t len);

/* Command name <-> enum. kv_cmd_parse returns 0 or -EINVAL. */
const char *kv_cmd_name(enum kv_cmd cmd);
int kv_cmd_parse(const char *s, size_t len, enum kv_cmd *out);

/*
 * Parse a request datagram. Returns 0 on success. On failure returns -EINVAL and sets *reason to a
 * short protocol reason word ("badid", "badcmd", "badkey", "badvalue", "args", "toolong");
 * *id_valid tells whether req->id was parsed (a server replies "ID ERR reason" only then).
 */
int kv_parse_request(const char *buf, size_t len, struct kv_req *req, bool *id_valid, const char **reason);

/* Format a request into buf (size cap). Returns the length, or -EINVAL for an invalid key/value or a
 * value with GET/INCR, -ENOSPC if cap is too small. No trailing newline. */
int kv_format_request(char *buf, size_t cap, const struct kv_req *req);

/* Parse a reply datagram. Returns 0 or -EINVAL (malformed; callers ignore such datagrams). */
int kv_parse_reply(const char *buf, size_t len, struct kv_reply *rep);

/* Format "ID OK VALUE" / "ID ERR REASON". Returns the length or -ENOSPC. */
int kv_format_reply(char *buf, size_t cap, uint64_t id, bool ok, const char *text);

/*
 * Split "HOST[:PORT]" (HOST: name, IPv4, IPv6, "[IPv6]" with optional ":PORT"; a bare IPv6 address
 * with several colons is taken whole) into host and port strings. A missing port gives
 * KV_DEFAULT_PORT. Returns 0 or -EINVAL (empty host, bad port, too long).
 */
int kv_split_hostport(const char *s, char *host, size_t hostcap, char *port, size_t portcap);

/* Monotonic clock (CLOCK_MONOTONIC) in ns: the time base of the load log. */

#endif
