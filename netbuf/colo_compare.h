/* colo_compare.h — COLO output comparator: release a PVM frame once the SVM produced the same output for the same flow and position. */
#ifndef DOPPEL_NETBUF_COLO_COMPARE_H
#define DOPPEL_NETBUF_COLO_COMPARE_H

#include <stddef.h>
#include <stdint.h>

/*
 * Pure library: no KVM, no sockets, no threads of its own; thread-safe via one internal mutex (the
 * PVM's frames arrive on a vCPU thread via the VMM tx hook, the SVM's on the replication receive
 * thread, timers on the loop thread).
 *
 * Frames are Ethernet frames as the guest's virtio-net transmits them (no virtio-net header),
 * optionally 802.1Q / 802.1ad (QinQ) tagged. Flows: netidx + VLAN id(s) + 5-tuple, IPv4 and IPv6
 * (IPv6 extension headers skipped), in a hash table that grows (no fixed size that resets when
 * full); idle flows expire, closed TCP flows (both FINs, or a RST) expire.
 *
 * TCP payload is compared by sequence range (different segmentation still matches); SVM sequence
 * and ack numbers are mapped into the PVM's space by the ISN offset learnt from the two SYN/ACKs.
 * TTL / hop limit, IP id, checksums, window updates and pure-ACK timing are ignored. UDP, ICMP,
 * ICMPv6, ARP and ND compare payloads, in order per flow; anything else compares the whole frame.
 *
 * Ordering: PVM frames leave in the PVM's order within each flow (a flow is on one netidx); frames
 * of different flows are independent, so a held frame of one connection never delays another's.
 * See docs/colo.md, "Comparator".
 */

#define COLO_CMP_MAX_FRAME 65536u
#define COLO_CMP_DEFAULT_TIMEOUT_MS 100u
#define COLO_CMP_DEFAULT_BYTES (4u << 20)
#define COLO_CMP_DEFAULT_FRAMES 4096u
#define COLO_CMP_DEFAULT_IDLE_MS 60000u
#define COLO_CMP_CLOSED_LINGER_MS 1000u
#define COLO_CMP_DEFAULT_FLOWS (1u << 20)

struct colo_cmp;

enum colo_cmp_reason {
	/* why a checkpoint is needed */
	COLO_CMP_NONE = 0,
	COLO_CMP_MISMATCH, /* same flow/position, different output */
	COLO_CMP_TIMEOUT, /* a frame unmatched for longer than timeout_ms */
	COLO_CMP_QUEUE, /* held bytes/frames over the bound (checkpoint instead of dropping) */
};

struct colo_cmp_cfg {
	uint32_t timeout_ms; /* unmatched-frame bound; 0 -> 100 */
	size_t max_bytes, max_frames; /* held bound per side; 0 -> 4 MiB / 4096 */
	/* release a PVM frame to the wire (called with the comparator lock held; in the PVM's order
	 * within each flow, see "Ordering" above) */
	void (*release)(void *opaque, int netidx, const void *frame, size_t len);
	/* the comparator wants a checkpoint (called once per divergence episode, lock held, must not
	 * call back into the comparator; the engine schedules the checkpoint on its own thread) */
	void (*diverged)(void *opaque, enum colo_cmp_reason why);
	void *opaque;
	/* addition to the contract: a flow with nothing queued expires after idle_ms without frames
	 * (0 -> 60000); a closed TCP flow (both FINs seen, or a RST) after COLO_CMP_CLOSED_LINGER_MS */
	uint32_t idle_ms;
	/* addition: live flow bound (0 -> COLO_CMP_DEFAULT_FLOWS). At the bound a new flow evicts the
	 * least recently used flow with nothing queued (its state is lost, not every flow's) */
	size_t max_flows;
};

struct colo_cmp_proto_stats {
	uint64_t compared, matched, mismatched;
};
struct colo_cmp_stats {
	uint64_t compared, matched, mismatched; /* frames (or TCP segments) compared */
	struct colo_cmp_proto_stats tcp, udp, icmp, arp,
		other; /* per protocol (icmp includes ICMPv6, arp includes ND) */
	uint64_t flows; /* live flows in the table */
	uint64_t held_frames, held_bytes; /* PVM side held now */
	uint64_t svm_frames, svm_bytes; /* SVM side queued now */
	uint64_t released, dropped_svm;
	uint64_t divergence_since_ns; /* now_ns() of the oldest unmatched frame, 0 if none */
	/* additions to the contract */
	uint64_t malformed; /* frames whose headers were truncated/inconsistent (compared whole) */
	uint64_t invalid; /* frames refused with -EINVAL (len 0 / over COLO_CMP_MAX_FRAME) */
	uint64_t passthrough; /* PVM frames released at once in passthrough mode */
	uint64_t expired; /* flows removed: idle, TCP closed, or evicted at max_flows */
	uint64_t divergences; /* diverged() calls */
	/* how long the PVM frames released by a match were held (their arrival to the SVM twin's),
	 * over the last COLO_CMP_HOLD_RING of them; 0 when none */
	uint64_t hold_p50_ns, hold_p99_ns;
};

#define COLO_CMP_HOLD_RING 512

int colo_cmp_new(struct colo_cmp **out, const struct colo_cmp_cfg *cfg); /* 0 / -ENOMEM / -EINVAL */
void colo_cmp_free(struct colo_cmp *c); /* NULL-safe, drops held */
/* A frame the PVM / SVM transmitted on NIC netidx at time now (now_ns()). The frame is copied.
 * Returns 0, or -EINVAL for len 0 / over 65536 (frame dropped, counted). Matching PVM frames are
 * released from inside these calls. (Addition: -ENOMEM when no buffer could be allocated: the
 * frame is dropped, never released unverified, and diverged(COLO_CMP_QUEUE) asks for a
 * checkpoint.) */
int colo_cmp_primary(struct colo_cmp *c, int netidx, const void *frame, size_t len, uint64_t now);
int colo_cmp_secondary(struct colo_cmp *c, int netidx, const void *frame, size_t len, uint64_t now);
/* Timer tick (engine calls it every few ms): fires diverged(COLO_CMP_TIMEOUT) once when the oldest
 * unmatched frame is older than timeout_ms. Returns the current reason (COLO_CMP_NONE if fine). */
enum colo_cmp_reason colo_cmp_tick(struct colo_cmp *c, uint64_t now);
/* A checkpoint completed (both VMs now identical): release every held PVM frame in order, drop every
 * SVM frame, and keep the flows: the SVM's memory is now a copy of the PVM's, so every flow's SVM
 * sequence offset becomes 0 and its next expected sequence numbers move to the PVM's. */
/* (Engine's side: call it once the SVM holds the checkpoint and before either VM resumes, after
 * every frame the SVM sent before the checkpoint was passed to colo_cmp_secondary: an SVM frame of
 * the old state arriving later would be compared against the new one and diverge again.) */
void colo_cmp_checkpoint_done(struct colo_cmp *c);
/* The SVM is gone: release everything held and pass every later PVM frame straight to release(). */
void colo_cmp_passthrough(struct colo_cmp *c);
/* An inbound frame (client -> VM) about to be injected into the SVM: rewrite in place the TCP ack
 * number (and SACK blocks, and the TCP checksum) from the PVM's sequence space into the SVM's, using
 * the flow's learnt ISN offset (PVM ISN - SVM ISN from the two SYN/ACKs), like QEMU's filter-rewriter.
 * Frames of other protocols, or flows without an offset, are left alone. Returns 0 or -EINVAL. */
/* (The checksum is updated incrementally (RFC 1624), so the frame must carry a complete TCP
 * checksum, as a tap without TUNSETOFFLOAD delivers; a CHECKSUM_PARTIAL frame must not be passed.) */
int colo_cmp_rewrite_inbound(struct colo_cmp *c, int netidx, void *frame, size_t len);
void colo_cmp_get_stats(struct colo_cmp *c, struct colo_cmp_stats *st);

#endif
