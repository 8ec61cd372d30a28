/* remus_proto.h — Remus wire messages besides the checkpoint stream: HELLO, ACK, HEARTBEAT. */
#ifndef DOPPEL_REPLICATION_REMUS_PROTO_H
#define DOPPEL_REPLICATION_REMUS_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "replication/stream.h"

/*
 * One TCP connection, primary -> standby: a HELLO message, then the checkpoint stream (docs/stream.md).
 * Standby -> primary: ACK and HEARTBEAT messages. Every message is 16 bytes, little endian:
 *     u32 magic (REMUS_MSG_MAGIC), u32 type, u64 value
 *   HELLO     value = interval_ms << 32 | heartbeat_timeout_ms (what the primary runs with)
 *   ACK       value = epoch the standby has applied (pages and state committed)
 *   HEARTBEAT value = last epoch committed (0 before the first)
 *   ABANDONED value = last epoch committed: the standby read the stream's END (the primary's
 *             ABANDON: it stops protecting on purpose) and stays held; it will not take over
 *   REJECT    value = REMUS_REJECT_*: the standby refuses this primary (its machine state does not
 *             fit the standby's vCPUs/devices, or the stream is corrupt); it will not take over
 *   DISK_SUMS / DISK_SUM / DISK_SUMS_END: the standby's disk checksums (remus_proto.h enum)
 * The primary also sends REMUS_REC_HEARTBEAT, an optional stream record (readers skip it), when no
 * epoch bytes flowed for heartbeat_timeout/4.
 */
#define REMUS_MSG_MAGIC 0x534d4552u /* "REMS" */
#define REMUS_MSG_SIZE 16u
enum remus_msg_type {
	REMUS_MSG_HELLO = 1,
	REMUS_MSG_ACK = 2,
	REMUS_MSG_HEARTBEAT = 3,
	REMUS_MSG_ABANDONED = 4,
	REMUS_MSG_REJECT = 5,
	/* standby -> primary, once per connection right after it read the stream header: its disks'
	 * block checksums for the initial sync (docs/disk.md) */
	REMUS_MSG_DISK_SUMS = 6, /* value = disk << 48 | number of 64 KiB blocks; DISK_SUM follow */
	REMUS_MSG_DISK_SUM = 7, /* value = xxh64 of the next block */
	REMUS_MSG_DISK_SUMS_END = 8, /* value = number of disks; sent also without disks */
	/* COLO, standby -> primary: a stream-style record follows the message: value = u32 record
	 * type (SR_REC_COLO_*) | u32 body length << 32; then the body, zero-padded to 8 bytes. */
	REMUS_MSG_RECORD = 9,
	/* switchover (replication/remus_switch.c): on a NEW connection after the standby confirmed an
	 * ABANDON, primary -> standby GO(epoch) then BACK(port), standby -> primary RUNNING(epoch) */
	REMUS_MSG_GO = 10, /* value = the epoch both copies hold: take over now */
	REMUS_MSG_BACK = 11, /* value = TCP port the old primary listens on as the new standby */
	REMUS_MSG_RUNNING = 12, /* value = epoch: the standby runs it (or REJECT: it will not) */
};
#define REMUS_MSG_MAX_BODY (16u << 20) /* a record body (the SVM's dirty bitmap of 512 GiB) */
enum remus_reject_reason {
	REMUS_REJECT_STATE = 1, /* machine state does not fit this standby (devices, vCPUs) */
	REMUS_REJECT_STREAM = 2, /* a corrupt or malformed epoch */
};
#define REMUS_REC_HEARTBEAT (SR_REC_OPTIONAL | 0x100u)

#define REMUS_MIN_TIMEOUT_MS 20u
#define REMUS_MAX_TIMEOUT_MS 60000u
#define REMUS_MIN_INTERVAL_MS 1u
#define REMUS_MAX_INTERVAL_MS 10000u

struct remus_msg {
	uint32_t type;
	uint64_t value;
	/* REMUS_MSG_RECORD (remus_msgbuf_feed only): the record */
	uint32_t rec_type, rec_len;
	const uint8_t *body;
};

/* Encode into out (REMUS_MSG_SIZE bytes). */
void remus_msg_encode(uint8_t *out, uint32_t type, uint64_t value);
/* Decode REMUS_MSG_SIZE bytes. Returns 0, or -EBADMSG (bad magic or unknown type). */
int remus_msg_decode(const uint8_t *in, struct remus_msg *m) __attribute__((warn_unused_result));

/* HELLO flag: the primary runs COLO (docs/colo.md), not Remus. */
#define REMUS_HELLO_COLO (1ull << 63)

/* HELLO value <-> settings (remus_hello_parse ignores REMUS_HELLO_COLO). remus_hello_parse returns 0 or -EINVAL when out of the ranges above. */
uint64_t remus_hello_value(uint32_t interval_ms, uint32_t timeout_ms);
int remus_hello_parse(uint64_t value, uint32_t *interval_ms, uint32_t *timeout_ms)
	__attribute__((warn_unused_result));

/* Classify an error of reading the primary's stream: true = the transport failed (the primary is lost:
 * failover per policy), false = the stream itself is bad (checksum, malformed record: reject the
 * epoch, keep the last one, never take over on it). rc is a negative errno. */
bool remus_read_error_is_transport(int rc);

/* Reassembly of messages from a byte stream read in arbitrary pieces. */
struct remus_msgbuf {
	uint8_t b[REMUS_MSG_SIZE];
	size_t n;
	/* the body of a REMUS_MSG_RECORD being read (grown as needed, up to REMUS_MSG_MAX_BODY) */
	uint8_t *body;
	size_t body_cap, body_want, body_got; /* want: length + pad; 0 when no body is pending */
	struct remus_msg rec;
};
/* Free the body buffer (the struct may be reused). */
void remus_msgbuf_free(struct remus_msgbuf *mb);
/* Encode the 16-byte header of a REMUS_MSG_RECORD with body length len into out. */
void remus_record_header(uint8_t *out, uint32_t rec_type, uint32_t len);
typedef void (*remus_msg_fn)(void *opaque, const struct remus_msg *m);
/* Feed len bytes; calls fn for each complete message (a RECORD with its body) in order. Returns the number of messages, or
 * -EBADMSG at the first bad one (messages before it were delivered; the stream is then unusable). */
int remus_msgbuf_feed(struct remus_msgbuf *mb, const uint8_t *data, size_t len, remus_msg_fn fn, void *opaque)
	__attribute__((warn_unused_result));

#endif
