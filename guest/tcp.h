/* tcp.h — the test guest's TCP (passive open only) over IPv4 and IPv6, and the services on it. */
#ifndef DOPPEL_GUEST_TCP_H
#define DOPPEL_GUEST_TCP_H

#include "net.h"

#define TCP_CONNS 256 /* connection table (SYN_RCVD and TIME_WAIT included) */
#define TCP_RXBUF 4096 /* per connection: received, not yet consumed by the service (= our window) */
#define TCP_TXBUF 32768 /* per connection: unacknowledged + unsent bytes */

enum tcp_state {
	TCP_FREE,
	TCP_SYN_RCVD,
	TCP_ESTABLISHED,
	TCP_CLOSE_WAIT,
	TCP_LAST_ACK,
	TCP_FIN_WAIT1,
	TCP_FIN_WAIT2,
	TCP_CLOSING,
	TCP_TIME_WAIT,
};

struct tcp_conn {
	uint8_t state;
	uint8_t app; /* index of the listener */
	uint8_t retries, dupacks;
	bool close_req; /* the service asked to close: FIN after the queued data */
	bool fin_sent, ack_now, probe;
	struct net_peer peer;
	uint16_t lport, rport, mss, next; /* next: hash chain */
	uint32_t iss, snd_una, snd_nxt, snd_max, snd_wnd, rcv_nxt;
	uint32_t rx_len; /* bytes in rx[] */
	uint32_t tx_len, tx_head; /* bytes in tx[] starting at tx_head (seq snd_una) */
	uint64_t rto_ns, timer_at; /* retransmission (or TIME_WAIT end) deadline, 0 = none */
	uint64_t srtt, rttvar, rtt_at; /* RFC 6298 estimator; rtt_at: when rtt_seq was sent, 0 = none */
	uint32_t rtt_seq;
	uint64_t app_left; /* service state: bytes still to generate (HTTP /bytes/N) */
	bool app_close; /* service state: close once app_left is sent */
	uint8_t rx[TCP_RXBUF];
	uint8_t tx[TCP_TXBUF];
};

/*
 * A service: called whenever the connection has new received bytes or freed send space. It reads
 * c->rx[0..c->rx_len), consumes a prefix with tcp_consume, writes replies with tcp_write (never
 * more than tcp_space) and may call tcp_close.
 */
typedef void (*tcp_app_fn)(struct tcp_conn *c);

/* Listen on port (at most 4 listeners). isn= is read here: random (default) or fixed. */
void tcp_listen(uint16_t port, tcp_app_fn fn);
void tcp_init(void);
/* A segment for us (addresses already checked by IPv4/IPv6): validate and process it. */
void tcp_input(const struct net_peer *p, const uint8_t *seg, size_t len);
/* Send what is due (data, ACKs, FINs) on every connection that has something: net_poll calls it. */
void tcp_flush(void);
/* Retransmissions, window probes and TIME_WAIT expiry: call a few times per millisecond. */
void tcp_timers(uint64_t now);
/* The earliest pending TCP timer (retransmission, TIME_WAIT, FIN_WAIT2) as a now_ns() value, UINT64_MAX if none. */
uint64_t tcp_next_timer(void);

size_t tcp_space(const struct tcp_conn *c);
void tcp_write(struct tcp_conn *c, const void *p, size_t n); /* n <= tcp_space(c) */
void tcp_consume(struct tcp_conn *c, size_t n);
void tcp_close(struct tcp_conn *c);

struct tcp_stats {
	uint64_t conns, active, rx_bad, rx_ooo, rst_rx, rst_tx, retrans, syn_drop;
};
void tcp_get_stats(struct tcp_stats *st);

/* services (resp.c, http.c) */
void resp_serve(struct tcp_conn *c);
void http_serve(struct tcp_conn *c);

#endif
