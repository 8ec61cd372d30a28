/* migrate_priv.h — shared inside migrate/: the back-channel message, the throttle, per-VM migration state. */
#ifndef DOPPEL_MIGRATE_PRIV_H
#define DOPPEL_MIGRATE_PRIV_H

#include <ev.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "migrate/converge.h"

struct vmm;
struct vm;
struct ctl_conn;
struct json_object;
struct tls_link;

/*
 * Back channel on the migration TCP connection: fixed 144-byte messages, little endian. All of them
 * go destination -> source except GO, the one message the source writes after the stream's END.
 *
 *   ACCEPT   after the stream header matched the VM, before any memory flows (t_start_ns = 1 when
 *            the destination's RAM is known to be all zero); REJECT (text says why) instead.
 *   EPOCH    pre-copy epoch t_start_ns has been read and written into RAM: the source waits for it
 *            before the next round, so its page rate is end to end.
 *   ERROR    the destination gave up (bad stream, cannot apply the state, cannot start): it exits and
 *            never runs, whenever it is sent — so the source may resume on it even after GO.
 *
 * The switchover is two-phase, so that in every failure case at most one copy runs:
 *   1. source: final epoch (paused), END;
 *   2. destination: applies the state, answers READY (t_start_ns: END read, t_running_ns: state
 *      applied) — it could run now, but does NOT start;
 *   3. source, still paused: COMMITS (from here on it never resumes by itself; status says
 *      "committed") and sends GO;
 *   4. destination: starts its vCPUs on GO only, answers RUNNING (t_start_ns: END read,
 *      t_running_ns: vCPUs started, both CLOCK_MONOTONIC: the exact downtime), announces (GARP).
 * Link loss before the destination has the whole GO: the destination discards (exits, never runs)
 * and the source resumes if it had not sent GO. Link loss after the source sent GO: the source stays
 * paused ("switchover-uncertain") until RUNNING or ERROR arrives late, or an operator decides
 * (`doppel migrate NAME --resume-source` once the destination is known not to run, or `doppel stop`).
 * docs/migration.md and docs/failure-model.md ("Live migration") have the table.
 */
#define MIG_MSG_MAGIC 0x474d5044u /* "DPMG" */
enum mig_msg_type {
	MIG_ACCEPT = 1,
	MIG_REJECT = 2,
	MIG_RUNNING = 3,
	MIG_ERROR = 4,
	MIG_EPOCH = 5,
	MIG_READY = 6,
	MIG_GO = 7,
	MIG_PAGE_REQ = 8, /* post-copy, destination -> source: send page t_start_ns first */
	MIG_PC_DONE = 9, /* post-copy, destination -> source: every page is installed */
};
#define MIG_MSG_LAST MIG_PC_DONE
struct mig_msg {
	uint32_t magic, type;
	uint64_t t_start_ns, t_running_ns;
	char text[120];
};
_Static_assert(sizeof(struct mig_msg) == 144, "mig_msg layout");

/* Write / read one message with a timeout. 0 or -errno (-ETIMEDOUT, -EPIPE on EOF, -EBADMSG).
 * mig_msg_send returns 0 only when all 144 bytes are in the kernel's send buffer: on an error the
 * peer can never receive the whole message (what makes a failed GO safe to resume from). */
int mig_msg_send(int fd, uint32_t type, uint64_t t_start, uint64_t t_running, const char *text);
int mig_msg_recv(int fd, struct mig_msg *m, int timeout_ms);
/* The same through a TLS link's direct path when link is not NULL (both ends of a TLS migration read
 * and write the back channel that way: no relay hop on the round trip). */
int mig_msg_recv_link(int fd, struct tls_link *link, struct mig_msg *m, int timeout_ms);
int mig_msg_send_link(int fd, struct tls_link *link, uint32_t type, uint64_t t_start, uint64_t t_running,
		      const char *text);

/*
 * Right after the stream header the source sends PC_MODE (first = 1: post-copy at once, no pre-copy
 * round: the destination drops its prefaulted RAM now, while the source still runs, so that every
 * page faults later without a discard inside the downtime; else 0; count = flags: PC_MODE_SHARED_DISKS
 * = the disks are on shared storage, no block is sent and the image locks move at GO).
 * After the stream's END the source sends one switch frame (little endian, as the whole protocol):
 *   PC_SWITCH first = 0: stop-and-copy, the two-phase switchover follows;
 *             first = 1: post-copy; count = words of the stale bitmap that follow (one bit per RAM
 *             page: the pages the destination must not use — dirtied since sent, or never sent).
 * In post-copy, after GO, the source sends the stale pages, those the destination asked for
 * (MIG_PAGE_REQ) first, the rest in the background: PC_PAGES (count pages from first, raw 4 KiB
 * each, count <= PC_MAX_RUN), PC_ZERO (count zero pages from first), then PC_DONE; the destination
 * answers MIG_PC_DONE once every page is installed.
 */
#define PC_MAGIC 0x43504450u /* "PDPC" */
#define PC_MAX_RUN 256u
enum pc_frame_type { PC_SWITCH = 1, PC_PAGES = 2, PC_ZERO = 3, PC_DONE = 4, PC_MODE = 5 };
#define PC_MODE_SHARED_DISKS 1u
struct pc_frame {
	uint32_t magic, type;
	uint64_t first, count;
};
_Static_assert(sizeof(struct pc_frame) == 24, "pc_frame layout");

/* ---- auto-converge throttle (throttle.c) ----------------------------------------------------- */

/* A thread that, while frac > 0, pauses the VM for frac of every 10 ms slice (vm_pause/vm_resume). */
#define THROTTLE_SLICE_NS 10000000ull
struct throttle {
	struct vm *vm;
	pthread_t th;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	double frac;
	bool stop, started;
	uint64_t paused_ns; /* total time the throttle kept the VM paused */
};
int throttle_start(struct throttle *t, struct vm *vm);
void throttle_set(struct throttle *t, double frac);
/* Stop the thread and leave the VM running (resumed). Idempotent. */
void throttle_stop(struct throttle *t);

/* ---- per-VM state ----------------------------------------------------------------------------- */

enum mig_compress { MIG_COMP_AUTO, MIG_COMP_ZSTD, MIG_COMP_NONE };
/* off: pre-copy + stop-and-copy (auto-converge throttle when rounds stall); now: post-copy at once
 * (no pre-copy round); round: post-copy after the first full round; auto: pre-copy, and post-copy
 * instead of the throttle once a round stalls and the destination holds postcopy_min_frac of RAM. */
enum mig_postcopy { MIG_PC_OFF, MIG_PC_NOW, MIG_PC_ROUND, MIG_PC_AUTO };

struct mig_params {
	char to[256];
	double downtime_ms;
	uint64_t max_bw; /* bytes/s, 0 = unlimited */
	enum mig_compress compress;
	int connect_timeout_ms, io_timeout_ms;
	uint64_t max_rounds; /* safety net: force stop-and-copy after this many rounds */
	enum mig_postcopy postcopy;
	double postcopy_min_frac; /* auto: fraction of RAM current on the destination, 0..1 */
	uint64_t delta_bytes; /* --delta-cache: PAGE_DELTA from round 2 on, 0 = off */
	bool shared_disks; /* --shared-disks: the destination opens the same images; the lock moves */
};

/* Progress, published by the sender for status (lock). */
struct mig_progress {
	/* source: "none", "active", "completing" (paused, not committed), "switchover" (committed, GO
	 * sent), "switchover-uncertain" (no RUNNING: stays paused), "completed", "failed";
	 * destination: "waiting", "incoming", "ready" (READY sent, waiting for GO), "completed" */
	const char *state;
	bool committed; /* source: GO was sent; this side never resumes by itself */
	uint64_t round, pages_left, bytes_wire, bytes_raw;
	double rate_mbps, est_downtime_ms, throttle;
	bool compress;
	char error[300];
	bool postcopy; /* the switchover is (or was) post-copy */
	uint64_t pc_faults, pc_requests; /* post-copy: faults seen / pages requested (destination) */
	double downtime_ms; /* source, once completed */
};

struct pc_dst;

struct mig {
	struct vmm *v;
	/* TLS (NULL: plaintext): the destination's from `run --incoming --tls-dir`, the source's from
	 * the migrate request (replaced per migration; read by the sender thread it starts). */
	struct tls_cfg *tls;
	struct tls_link *link; /* destination: the accepted connection's (NULL: plaintext); every read
				* of m->fd goes through it (tls_link_recv); dropped where m->fd is closed */
	pthread_mutex_t lock;
	struct mig_progress prog;
	bool busy; /* an outgoing migration is running */
	pthread_t sender;
	struct mig_params p;
	struct ctl_conn *conn;
	ev_async done_async; /* sender -> loop: migration finished */
	ev_timer stop_timer; /* after success: let the reply flush, then stop */
	bool success;
	uint64_t nr_completed, nr_failed; /* lock: outgoing migrations, for metrics */
	double last_downtime_ms; /* lock */
	/* source, after an uncertain switchover (lock): the operator's decision */
	bool uncertain, op_resume, quit;
	bool pc_lost; /* source: post-copy broke after GO; the VM cannot be resumed here */
	struct ctl_conn *op_conn;
	/* incoming */
	int lfd, fd;
	ev_io accept_w;
	ev_async in_async; /* receiver -> loop: stream complete, start vCPUs */
	pthread_t receiver;
	bool recv_started;
	uint64_t t_in_end, t_in_applied, t_in_go; /* when END was read, state applied, GO read */
	char in_err[512];
	int in_rc;
	bool in_shared_disks; /* destination: the source said --shared-disks (PC_MODE) */
	pthread_mutex_t tx_lock; /* destination: back-channel writes from several threads (post-copy) */
	struct pc_dst *pc; /* destination: post-copy state, NULL in stop-and-copy */
	int pc_phase; /* destination: 0 no post-copy, 1 running (set before in_async), 2 ended (loop) */
	bool pc_started; /* destination, loop thread: the vCPUs were started for post-copy */
	ev_async pc_async; /* receiver -> loop: post-copy finished or failed */
};

/* migrate.c */
/* A "migration" event: {"direction", "result"|..., plus f's keys} (f: ownership taken, may be NULL). */
void mig_event(struct mig *m, const char *type, const char *direction, struct json_object *f);

/* migrate_send.c */
void *mig_sender_main(void *arg);
/* migrate_recv.c */
int mig_recv_listen(struct mig *m, const char *addr, char *err, size_t errlen);
/* Destination: mig_msg_send under m->tx_lock. */
int mig_dst_send(struct mig *m, uint32_t type, uint64_t t_start, uint64_t t_running, const char *text);

/* postcopy_recv.c (destination) */
/* After the stream header: read PC_MODE (post-copy at once: discard all RAM now). 0 or -errno with
 * m->in_err. */
int pc_dst_mode(struct mig *m);
/* After the final state was applied: read the switch frame. 0: stop-and-copy follows; 1: post-copy
 * (stale pages discarded, userfaultfd registered: m->pc set); -errno with m->in_err. */
int pc_dst_prepare(struct mig *m);
/* After GO, before the vCPUs start: serve faults (a thread). 0 or -errno with m->in_err. */
int pc_dst_start(struct mig *m);
/* Receiver thread: install pushed pages until DONE, then MIG_PC_DONE. 0 or -errno with m->in_err. */
int pc_dst_receive(struct mig *m);
/* Loop thread, after the receiver ended: stop the fault thread, unregister (wakes any waiter), free. */
void pc_dst_free(struct mig *m);
#define MIG_HANDSHAKE_MS 5000 /* one deadline for TLS handshake + stream header (both sides) */

#endif
