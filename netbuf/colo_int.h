/* colo_int.h — internals of the COLO comparator shared by colo_compare.c, colo_parse.c and colo_tcp.c. */
#ifndef DOPPEL_NETBUF_COLO_INT_H
#define DOPPEL_NETBUF_COLO_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "netbuf/colo_compare.h"

/* stats class of a frame (ND counts as ARP, ICMPv6 as ICMP) */
enum colo_kind { CK_TCP = 0, CK_UDP, CK_ICMP, CK_ARP, CK_OTHER, CK_NR };

enum { SIDE_P = 0, SIDE_S = 1 };

#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_PSH 0x08
#define TH_ACK 0x10

#define COLO_MAX_IGN 6

/* Flow key, in the VM -> peer direction. Always zeroed before it is filled (hashed and compared
 * as bytes). */
struct colo_key {
	int32_t netidx;
	uint16_t vlan[2]; /* VLAN ids, outer first; 0 when absent */
	uint16_t ethertype; /* innermost */
	uint8_t nvlan, family; /* family 4, 6, or 0 (not IP, or malformed) */
	uint8_t proto, frag, pad[2]; /* frag: an IP fragment (compared as bytes) */
	uint8_t src[16], dst[16];
	uint16_t sport, dport;
};

/* A parsed frame. Non-TCP frames compare bytes [0, cmp_end) except the ign ranges (ascending). */
struct colo_pkt {
	struct colo_key key;
	uint8_t kind; /* enum colo_kind */
	bool malformed;
	bool tcp; /* a whole TCP header was parsed: the fields below are valid */
	uint8_t tflags;
	uint32_t seq, ack;
	uint32_t l4off, payoff, paylen, optoff, optlen;
	uint32_t cmp_end;
	uint8_t nign;
	uint16_t ign_off[COLO_MAX_IGN];
	uint8_t ign_len[COLO_MAX_IGN];
};

/* A queued frame (PVM held or SVM waiting), on its flow's queue and on the global age list. */
struct colo_ent {
	struct colo_ent *fprev, *fnext;
	struct colo_ent *aprev, *anext;
	struct colo_flow *flow;
	uint64_t t;
	uint32_t len, cap;
	uint8_t side, cls, kind; /* cls: slab class; kind: enum colo_kind */
	bool rst_matched;
	/* TCP: the segment occupies [seq, seq + vlen) of its side's space, vlen = SYN + payload + FIN */
	uint8_t tflags;
	uint32_t seq, ack, vlen, payoff, paylen, optoff, optlen;
	/* non-TCP comparison */
	uint32_t cmp_end;
	uint8_t nign;
	uint16_t ign_off[COLO_MAX_IGN];
	uint8_t ign_len[COLO_MAX_IGN];
	uint8_t data[];
};

struct colo_q {
	struct colo_ent *head, *tail;
	uint32_t n;
};

struct colo_flow {
	struct colo_key key;
	uint64_t hash;
	struct colo_flow *hnext;
	struct colo_flow *lprev, *lnext; /* LRU list: c->lru or c->closed */
	struct colo_q q[2];
	uint64_t last; /* last frame, ns */
	uint32_t gen; /* c->gen when last brought up to date */
	uint8_t kind;
	bool diverged, closed;
	/* TCP, VM -> peer direction. m: every PVM sequence number before m was matched. */
	bool synced, have_nxt, fin_out, fin_in;
	uint32_t m, pvm_nxt;
	uint32_t isn[2], syn_gen[2];
	uint32_t off; /* PVM ISN - SVM ISN; valid when syn_gen[P] == syn_gen[S] */
};

struct colo_list {
	struct colo_flow *head, *tail;
};

#define COLO_SLAB_CLASSES 3
struct colo_cmp {
	pthread_mutex_t lock;
	struct colo_cmp_cfg cfg;
	uint64_t timeout_ns, idle_ns;
	uint64_t seed; /* flow hash seed */
	struct colo_flow **tab;
	size_t nbuckets, nflows;
	struct colo_list lru, closed;
	struct colo_ent *ahead, *atail; /* age list: every queued frame of both sides, arrival order */
	struct colo_ent *slab[COLO_SLAB_CLASSES];
	uint32_t slab_n[COLO_SLAB_CLASSES];
	uint64_t held_frames[2], held_bytes[2];
	uint32_t gen; /* bumped by every checkpoint */
	enum colo_cmp_reason reason; /* current divergence episode, NONE if none */
	bool passthrough;
	struct colo_cmp_stats st;
	struct colo_cmp_proto_stats ps[CK_NR];
	uint64_t now; /* the time of the call in progress (frame_in) */
	uint64_t hold[COLO_CMP_HOLD_RING], nhold; /* how long matched PVM frames were held, ns */
};

/* colo_parse.c */
void colo_parse(const uint8_t *f, size_t len, int netidx, struct colo_pkt *p);
bool colo_ent_equal(const struct colo_ent *a, const struct colo_ent *b);
uint16_t colo_csum_fold_add(uint16_t csum, uint32_t oldv, uint32_t newv);

/* colo_compare.c, used by colo_tcp.c */
void colo_release(struct colo_cmp *c, struct colo_ent *e, bool compared);
void colo_drop(struct colo_cmp *c, struct colo_ent *e, bool count);
void colo_drop_now(struct colo_cmp *c, struct colo_ent *e, bool count);
void colo_enqueue(struct colo_cmp *c, struct colo_ent *e);
void colo_diverge(struct colo_cmp *c, enum colo_cmp_reason why);
void colo_mismatch(struct colo_cmp *c, struct colo_flow *f);
void colo_flow_close(struct colo_cmp *c, struct colo_flow *f);
void colo_flow_reopen(struct colo_cmp *c, struct colo_flow *f);
void colo_release_now(struct colo_cmp *c, struct colo_ent *e);

/* colo_tcp.c */
void colo_tcp_frame(struct colo_cmp *c, struct colo_flow *f, struct colo_ent *e);
void colo_tcp_advance(struct colo_cmp *c, struct colo_flow *f);
void colo_tcp_checkpoint(struct colo_flow *f);
void colo_tcp_inbound(struct colo_flow *f, uint8_t *frame, const struct colo_pkt *p);

static inline bool seq_lt(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) < 0;
}
static inline bool seq_le(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) <= 0;
}
static inline uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}
static inline uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static inline void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

#endif
