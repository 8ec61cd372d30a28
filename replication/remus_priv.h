/* remus_priv.h — the inside of a VM's Remus engine, shared by replication/remus*.c. */
#ifndef DOPPEL_REPLICATION_REMUS_PRIV_H
#define DOPPEL_REPLICATION_REMUS_PRIV_H

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/hist.h"
#include "hv/dirty.h"
#include "netbuf/netbuf.h"
#include "replication/checkpoint.h"
#include "replication/ckpt_engine.h"
#include "replication/tls.h"
#include "replication/remus.h"
#include "replication/remus_proto.h"
#include "replication/colo_priv.h"

struct ctl_conn;
struct witness;

enum remus_role { REMUS_UNPROTECTED, REMUS_PRIMARY, REMUS_STANDBY };

/* What the primary side does (status "state"). */
enum remus_pstate {
	PS_RUNNING, /* unprotected (or never protected): output flows */
	PS_SYNCING, /* protect: live full copy, output held */
	PS_PROTECTED, /* epochs acknowledged, output released per ack */
	PS_ABANDONING, /* stopping on purpose: END sent or being sent, output held until ABANDONED */
	PS_HOLDING, /* standby lost, policy hold: output held until the operator decides */
	PS_FENCED, /* guest paused, held output dropped: another copy may be live */
};

/* What a primary does when it loses the standby without knowing that it is dead. */
enum remus_lost_policy {
	LOST_RELEASE, /* release held output and run on unprotected (split brain possible) */
	LOST_HOLD, /* keep output held (guest runs, its output waits) until `unprotect` */
	LOST_FENCE, /* pause the guest, drop held output, exit after the grace period */
};

/* What a standby does when it loses the primary. */
enum remus_failover_policy { FAILOVER_AUTO, FAILOVER_MANUAL };

#define REMUS_RING 1024
struct remus_ring {
	uint64_t v[REMUS_RING];
	uint64_t n; /* total pushed */
};
void remus_ring_push(struct remus_ring *r, uint64_t v);
/* q in [0,1]; 0 when empty. */
uint64_t remus_ring_pct(const struct remus_ring *r, double q);

/* Phases of an epoch (status remus.phases): inside the pause (kick = vm_pause until every vCPU
 * stopped, dirty sync, state capture, copy of the dirty pages), then queue (pause end -> the sender
 * starts it), encode (zero scan, XOR, zstd), send (socket writes), ack_wait (last byte sent -> ACK:
 * the standby's read, decode, apply and the ACK's way back) and ack (pause end -> ACK). */
enum remus_phase {
	REMUS_PH_PAUSE,
	REMUS_PH_KICK,
	REMUS_PH_SYNC,
	REMUS_PH_CAPTURE,
	REMUS_PH_COPY,
	REMUS_PH_QUEUE,
	REMUS_PH_ENCODE,
	REMUS_PH_SEND,
	REMUS_PH_ACK_WAIT,
	REMUS_PH_ACK,
	REMUS_PH_N
};
struct remus_sent {
	uint64_t epoch, t_start, t_end, send_ns;
};

/* Status lists a summary of the engine's last REMUS_MAX_EVENTS events (the events themselves, with
 * all their fields, are in the VM's event log: vmm_event), kept here so that status never parses. */
#define REMUS_MAX_EVENTS 16
struct remus_evsum {
	uint64_t seq, epoch;
	double wall; /* unix time */
	char kind[33];
	char reason[160];
};

/* The epoch timeline of the status page: one entry per epoch, the last REMUS_TL of them (4096:
 * over a minute at the default 25 ms interval). */
#define REMUS_TL 4096
struct remus_tl {
	uint64_t epoch; /* 0: unused */
	uint64_t t_ns; /* end of the pause (now_ns) */
	uint32_t pause_us;
	int32_t send_us, ack_us; /* -1 until known */
};

/* async flags (thread -> loop) */
#define RA_PRECOPY_DONE 1u
#define RA_SENDER_FAILED 2u
#define RA_FORCE_EPOCH 4u
#define RA_READER_ENDED 8u
#define RA_READER_CONNECTED 16u
#define RA_COLO 32u /* primary: the comparator diverged */
#define RA_COLO_START 64u /* COLO standby: the first state is in, start the vCPUs */
#define RA_SWITCH_GO 128u /* standby: a switchover GO arrived (remus_switch.c) */
#define RA_TAKEOVER 1024u /* standby: a takeover job ended (remus_takeover.c) */

/* A planned switchover on the primary side (remus_switch.c). */
enum remus_sw {
	SW_NONE,
	SW_FINAL, /* guest parked: waiting for the ACK of an epoch captured after the park */
	SW_ENDING, /* ABANDON sent: waiting for ABANDONED (the standby holds the final epoch) */
	SW_GO, /* committed: this copy is a standby now; GO sent, waiting for RUNNING */
};

struct remus {
	struct vmm *v;
	struct vm *vm;
	struct ev_loop *loop;
	pthread_mutex_t lock; /* everything shared with the sender / reader thread */
	pthread_cond_t cond;
	enum remus_role role;
	ev_async async_w;
	unsigned async_flags; /* atomic */
	char peer[128];
	uint32_t interval_ms, hb_timeout_ms;
	struct colo *colo; /* COLO (--mode colo) state, NULL until first used */
	bool colo_on; /* primary: this session is COLO */
	struct remus_evsum events[REMUS_MAX_EVENTS]; /* the last events, oldest first (status) */
	int nr_events;
	uint64_t nr_failovers, nr_fenced;
	struct hist pause_hist, ack_hist, send_hist; /* epoch pause, capture -> ACK, sender write */
	struct remus_tl *tl; /* [REMUS_TL]; send_us under lock */
	uint64_t forced_reported, forced_ev_ns; /* "epochs-forced" events: at most one a second */
	uint64_t raw_base, wire_base; /* lock: bytes of earlier sessions (metrics count on) */
	char last_error[256];
	char fence_cmd[256]; /* standby: run before a takeover; take over only if it exits 0 */
	struct spawner *fence; /* runs fence_cmd outside the sandbox (common/spawner.h); NULL without one */
	/* witness (NULL: none): the active copy holds the key; see remus_witness.c */
	struct witness *wit;
	ev_timer wit_w; /* lease check */
	_Atomic uint64_t wit_loop_ns; /* now_ns() of the last lease check: the loop is alive */
	bool wit_waiting; /* standby: primary lost, waiting for the key (lock) */
	char wit_holder[160];
	char wit_wait_reason[256]; /* lock */
	/* standby: a takeover's blocking steps (witness key, --fence-cmd) run on a job thread while
	 * the loop goes on (status, heartbeats, control); see remus_takeover.c */
	pthread_t tk_thread;
	bool tk_running; /* loop: a job thread exists (joined on RA_TAKEOVER) */
	int tk_step; /* loop: TK_* of the job, or TK_REFUSED after a refusal */
	bool tk_once; /* witness: one attempt (doppel failover), not until acquired */
	atomic_bool tk_cancel; /* stop the job (a primary connected again, the process exits) */
	_Atomic int tk_child; /* the fence command's pid while it runs, 0 otherwise */
	int tk_rc; /* the job's result, written before RA_TAKEOVER */
	char tk_err[256];
	char tk_id[160]; /* the witness holder id the job acquired the key as */
	char takeover_why[200];
	struct ctl_conn *tk_reply; /* a deferred `doppel failover` */
	enum remus_failover_policy failover_policy;
	/* TLS (NULL: plaintext, said once in the log and as "tls": false in status). The standby's
	 * comes from `run --tls-dir`, the primary's from `protect --tls-dir` (replaced per protect). */
	struct tls_cfg *tls;

	/* ---- primary ---- */
	enum remus_pstate pstate;
	enum remus_lost_policy lost_policy;
	uint32_t fence_grace_ms;
	uint32_t hold_timeout_ms; /* policy hold: release after this (0: until `unprotect`) */
	ev_timer abandon_w, fence_w, hold_w;
	struct ctl_conn *unprotect_conn; /* deferred `unprotect` reply */
	bool standby_rejected; /* the standby sent REJECT: it will not take over */
	uint32_t reject_reason;
	bool fifo_ok; /* SCHED_FIFO around the epoch is permitted */
	int fd;
	struct netbuf *nb;
	/* The checkpoint engine in staging mode with hot pages (a page dirty in two epochs in a row
	 * stays writable and is copied every epoch instead of faulting on its first write after
	 * every re-protect, ~3-10 us each here). Its stage is the epoch the sender writes. */
	struct ckpt_engine eng;
	bool eng_ready; /* eng initialised (kept across sessions: the stage stays grown) */
	/* the VM's disks (eng.disks points here while it has some): write log and initial sync */
	struct disk_repl disks;
	bool disks_ready;
	bool sums_ready; /* lock: the standby's disk checksums arrived (or will not) */
	pthread_t sender;
	bool sender_running;
	bool stop_sender; /* lock */
	bool job_pending; /* lock: eng.stage holds a captured epoch the sender has not taken yet */
	struct ckpt_stage tx; /* the sender's: the epoch it sends (swapped with eng.stage) */
	bool precopy_done; /* lock */
	char sender_err[256];
	uint64_t next_epoch; /* loop; monotonic across sessions */
	uint64_t first_ckpt; /* first real (stateful) epoch of this session */
	uint64_t acked_epoch, last_sent_epoch;
	uint64_t cap_epoch[64], cap_ns[64]; /* capture time of recent epochs, for ack latency */
	ev_timer epoch_w, live_w;
	ev_io rx_w;
	struct remus_msgbuf mb;
	uint64_t last_rx_ns;
	struct ctl_conn *reply_conn; /* deferred `protect` reply */
	uint64_t protect_start_ns;
	/* primary stats */
	struct remus_ring pause_ns, ack_ns;
	struct remus_ring colo_pause_ns; /* COLO: the PVM's pause per checkpoint (capture) */
	/* COLO profile (status colo.latency / colo.checkpoint_phases), ns: forwarded frames' time in
	 * the send queue (lock), an input's round trip through the SVM (forward to its first output
	 * back), request -> the SVM's dirty set, epoch queued -> written (lock), written -> ack,
	 * and pause -> ack (the time a checkpoint's output stays held) */
	struct remus_ring colo_fwdq_ns, colo_rtt_ns, colo_req_dirty_ns, colo_send_ns, colo_ack_wait_ns,
		colo_hold_ns;
	uint64_t last_t_pause; /* now_ns() at the last epoch's pause */
	uint64_t epochs, skipped, forced, dirty_last, dirty_total, precopy_pages, precopy_rounds;
	uint64_t bytes_raw, bytes_wire; /* lock (sender) */
	uint64_t send_ns_last; /* lock */
	uint64_t ph_kick, ph_sync, ph_capture, ph_copy; /* last pause, by phase (ns) */
	/* Where an epoch's time goes (status remus.phases), ns: rings of the last REMUS_RING epochs. */
	struct remus_ring ph_ring[REMUS_PH_N];
	struct remus_sent sent[64]; /* lock: the sender's timings of recent epochs (by epoch % 64) */
	/* Delta encoding (PAGE_DELTA): the cache of last-sent pages, the sender's while it runs. */
	uint64_t delta_bytes; /* configured size; 0 = off */
	struct sr_delta *delta;
	struct sr_delta_stats delta_st; /* lock: copied by the sender after each epoch */
	struct sr_stats sst; /* lock: the writer's stats after each epoch */

	/* ---- standby ---- */
	int lfd;
	ev_io accept_w;
	ev_timer hb_w;
	int cfd; /* lock */
	bool reader_running; /* loop */
	pthread_t reader;
	bool connected; /* lock: a primary is heard */
	bool failed_over; /* lock */
	bool want_failover; /* lock: set by the reader at its end */
	char end_reason[400];
	char conn_id[TLS_ID_MAX]; /* reader: identity of the current connection's peer */
	struct sockaddr_storage conn_addr; /* reader: its TCP address (the TLS relay's fd has none) */
	socklen_t conn_addrlen; /* 0: unknown */
	/* The identity of the primary whose first full checkpoint was committed here (certificate name,
	 * or "addr:IP" in plaintext): later connections from another identity are refused unless
	 * accept_any_peer (`run --accept-any-peer`). Loop reads it only via the reader (lock). */
	char bound_id[TLS_ID_MAX]; /* lock */
	bool accept_any_peer;
	uint64_t refused; /* lock: connections closed before HELLO (TLS, identity, deadline) */
	struct ckpt_stage stg;
	struct disk_stage dstage; /* stg.disk: the epoch's disk writes, applied with its pages */
	struct virtio_blk *sdisk[DISK_MAX]; /* this standby's disks */
	int nr_sdisk;
	uint32_t disks_verified; /* reader: a bit per disk whose DISK_INFO matched this connection */
	bool colo_ov_on; /* COLO secondary: the disks' overlays are on (reader until takeover, then loop) */
	uint64_t ov_written; /* COLO secondary: overlay bytes written back into the images at takeover */
	bool colo_mode; /* lock: the primary's HELLO asked for COLO */
	struct ckpt_state committed; /* lock */
	bool have_committed; /* lock */
	uint64_t committed_epoch; /* lock */
	uint64_t rx_epochs, rx_bytes, rx_pages, rejected; /* lock */
	uint64_t apply_ns_last; /* lock */
	uint64_t last_ckpt_ns; /* lock: when the last epoch (CHECKPOINT_END) was committed */
	uint64_t lost_ns; /* lock: when the reader saw the primary go (0: not yet) */
	bool progress_lost; /* lock: no epoch for the progress timeout; the reader was cut */
	bool abandoned; /* lock: the primary ABANDONed replication */
	bool awaiting_manual; /* primary lost under --failover manual: waiting for `doppel failover` */
	ev_timer progress_w;
	int announce_left;
	ev_timer announce_w;

	/* ---- switchover / rejoin (remus_switch.c) ---- */
	enum remus_sw sw;
	uint64_t sw_from; /* primary: first epoch captured with the guest parked */
	uint64_t sw_t0, sw_t_ready, sw_t_commit; /* now_ns() of park, ABANDONED, GO sent */
	int sw_lfd, sw_fd; /* primary: the new standby role's listen socket; the GO connection */
	char sw_listen[128], sw_peer[128];
	ev_timer sw_w;
	ev_io sw_io;
	struct remus_msgbuf sw_mb;
	struct ctl_conn *sw_conn; /* deferred `switchover` reply */
	bool fence_paused; /* remus_fence's vm_pause succeeded (a rejoin drops that hold) */
	bool resume; /* this protect session skips the live full copy (after a switchover) */
	char rejoin_listen[128]; /* protect --rejoin: fenced, become a standby here instead of exiting */
	/* standby: a GO read by the reader (lock until RA_SWITCH_GO) */
	int go_fd;
	uint64_t go_epoch;
	char go_back[160]; /* ADDR:PORT the old primary listens on: protect to it */
	/* the last takeover's report (status remus.last_failover; doppel drill reads it) */
	bool fo_valid;
	double fo_detect_ms, fo_decide_ms, fo_takeover_ms;
	uint64_t fo_epoch;
};

/* remus.c */
void remus_record_event(struct remus *r, const char *kind, uint64_t epoch, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void remus_notify(struct remus *r, unsigned flag); /* any thread */
/* Send reply on *c (a deferred command) and clear it; or drop reply when *c is NULL. */
void remus_finish_reply(struct ctl_conn **c, struct json_object *reply);

/* remus_obs.c: events in status, metrics, the epoch timeline (loop thread) */
int remus_obs_setup(struct remus *r);
void remus_obs_free(struct remus *r);
void remus_status_events(struct remus *r, struct json_object *rm);
/* Record one event with the given fields (ownership taken; NULL: none) plus epoch, reason, src. */
void remus_event_fields(struct remus *r, const char *kind, uint64_t epoch, struct json_object *fields,
			const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* remus_primary.c (loop thread unless noted) */
struct json_object *remus_cmd_protect(struct remus *r, struct json_object *req); /* remus_protect.c */
int remus_primary_prepare(struct remus *r, bool resume_req, char *err, size_t errlen);
int remus_primary_arm(struct remus *r, int fd);
struct json_object *remus_cmd_unprotect(struct remus *r);
void remus_primary_async(struct remus *r, unsigned flags);
/* The standby is lost (transport error, silence, protocol error): apply the lost policy. */
void remus_primary_lost(struct remus *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Stop protecting on purpose (a local error the VM survives): ABANDON, output held until the
 * standby confirms. */
void remus_primary_abandon(struct remus *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* vmm exit (stop): end replication with ABANDON, synchronously (the loop no longer runs). */
void remus_primary_exit(struct remus *r);
const char *remus_pstate_name(enum remus_pstate s);
/* One checkpoint through the engine (pause, sync | merge, capture, stage, commit, resume unless
 * stay_paused), handed to the sender (Remus: job_pending; COLO: also queued in order by the
 * caller). 0, or -1 when nothing was staged (skipped, abandoned, or the VM stops). */
int remus_checkpoint(struct remus *r, const uint64_t *merge, bool stay_paused);
/* The standby acknowledged epoch e (loop): state protected, the deferred `protect` reply. */
void remus_primary_acked(struct remus *r, uint64_t e, uint64_t now);
/* Start dirty logging now with a clean set (a switchover's new primary, before its vCPUs start:
 * the old primary's RAM is this RAM, so only pages dirtied from here on need to be sent). */
int remus_primary_log_from_now(struct remus *r, char *err, size_t errlen);

/* remus_phases.c */
void remus_phases_status(struct remus *r, struct json_object *o);

/* remus_end.c */
void remus_fence(struct remus *r, const char *why);
void remus_primary_abandoned(struct remus *r, uint64_t epoch); /* the standby sent ABANDONED */
int remus_lost_policy_parse(const char *s, enum remus_lost_policy *out);
const char *remus_lost_policy_name(enum remus_lost_policy p);
void remus_primary_status(struct remus *r, struct json_object *o); /* remus_obs.c */

/* remus_standby.c (loop thread) */
int remus_standby_start(struct remus *r, const char *addr, char *err, size_t errlen);
void remus_standby_async(struct remus *r, unsigned flags);
struct json_object *remus_cmd_failover(struct remus *r, struct json_object *req);
void remus_standby_status(struct remus *r, struct json_object *o);
uint32_t remus_progress_timeout_ms(const struct remus *r);

/* remus_takeover.c (loop thread): a standby's takeover. Its blocking steps, the witness key (until
 * acquired, or one attempt for `doppel failover`) and then --fence-cmd (a child process, timed out
 * after REMUS_FENCE_TIMEOUT_MS), run on a job thread; the loop applies the state only when both
 * succeeded. Status remus.takeover: "acquiring-witness" | "fencing" while a job runs, "refused"
 * after one failed (last_error says why). */
#define REMUS_FENCE_TIMEOUT_MS 120000
enum { TK_IDLE, TK_ACQUIRING, TK_FENCING, TK_REFUSED };
void remus_takeover_auto(struct remus *r, const char *why); /* primary lost, --failover auto */
struct json_object *remus_takeover_manual(struct remus *r, bool force); /* doppel failover */
void remus_takeover_async(struct remus *r); /* RA_TAKEOVER */
void remus_takeover_cancel(struct remus *r); /* a primary connected: stop waiting for the key */
void remus_takeover_stop(struct remus *r); /* exit: kill the fence command, join the job */
bool remus_takeover_fencing(const struct remus *r);
void remus_takeover_status(struct remus *r, struct json_object *o);

/* remus_standby.c, shared with remus_switch.c */
/* Take over now (loop thread): apply the state and run. The fence command, when configured, has
 * run before (remus_takeover.c); planned (a switchover) is recorded as such. 0 or -errno. */
int remus_standby_failover(struct remus *r, const char *why, bool planned, char *err, size_t errlen);
/* Stop the reader for a takeover (loop): it applies nothing more. 0, or -EAGAIN when no complete
 * state ever arrived (nothing changed then). */
int remus_standby_halt_reader(struct remus *r, char *err, size_t errlen);
/* Become a standby on listening socket fd (bound to addr). */
void remus_standby_start_fd(struct remus *r, int fd, const char *addr);

/* remus_switch.c (loop thread unless noted) */
struct sr_in;
struct json_object *remus_cmd_switchover(struct remus *r, struct json_object *req);
struct json_object *remus_cmd_reprotect(struct remus *r, struct json_object *req);
void remus_switch_abandoned(struct remus *r, uint64_t epoch); /* ABANDONED during a switchover */
void remus_switch_lost(struct remus *r, const char *why); /* standby lost during a switchover */
/* Reader thread: the connection began with GO(epoch). Ends the reader (no failover). */
void remus_switch_go_read(struct remus *r, struct sr_in *in, uint64_t epoch);
void remus_switch_go(struct remus *r); /* RA_SWITCH_GO */
void remus_switch_status(struct remus *r, struct json_object *o);
/* protect's request asks to resume from the switch point ("resume": true, internal) */
bool remus_switch_resume(struct json_object *req);
/* protect's "rejoin" (ADDR:PORT or absent): 0, or -EINVAL with err */
int remus_switch_protect_opts(struct remus *r, struct json_object *req, char *err, size_t errlen);
void remus_switch_fenced(struct remus *r); /* just fenced: rejoin as standby when configured */
struct json_object *remus_cmd_drill_report(struct remus *r, struct json_object *req);
/* remus_disk.c */
int remus_disk_protect(struct remus *r); /* loop: set up the disks for a protect; 0 or -errno */
void remus_disk_msg(struct remus *r, const struct remus_msg *m); /* loop: DISK_SUMS* from the standby */
/* sender: the initial sync (final = false: before the memory pre-copy) or its last pass (after) */
int remus_disk_sync(struct remus *r, struct sr_ctx *w, uint64_t *epoch, bool final, char *err, size_t errlen);
void remus_disk_status(struct remus *r, struct json_object *o);
void remus_disk_standby_init(struct remus *r);
int remus_disk_send_sums(struct remus *r); /* reader */
int remus_disk_check(struct remus *r, char *err, size_t errlen); /* reader */
int remus_disk_apply(struct remus *r, char *err, size_t errlen); /* reader */
/* COLO secondary (docs/colo.md "Disks"). At each checkpoint, the SVM paused (reader): start its
 * disks' overlays, or discard what they hold. At takeover (loop): write the overlays back into the
 * images (the SVM paused meanwhile) and end them. 0 or -errno with err. */
#define COLO_OVERLAY_MAX (64ull << 20) /* written data per disk between two checkpoints */
int remus_disk_colo_checkpoint(struct remus *r, char *err, size_t errlen);
int remus_disk_colo_takeover(struct remus *r, char *err, size_t errlen);
/* A takeover from the committed state instead (the secondary of an earlier COLO session is not
 * running): the images hold that state's disk, drop the overlays unwritten. */
void remus_disk_colo_discard(struct remus *r);

/* remus_witness.c (loop thread) */
int remus_witness_config(struct remus *r, const char *urls, const char *name, uint32_t ttl_ms, char *err,
			 size_t errlen);
int remus_witness_primary_start(struct remus *r, char *err, size_t errlen);
bool remus_witness_may_release(struct remus *r); /* false: lease unproven, fenced now */
/* Acquire (primary) or take over (standby) the key and keep it alive; one thread at a time (a
 * takeover job's). 0: acquired (then remus_witness_held on the loop), 1: ours already, -errno. */
int remus_witness_try_hold(struct remus *r, bool standby, char *id, size_t idlen, char *err, size_t errlen);
void remus_witness_held(struct remus *r, const char *id, const char *role);
int remus_witness_acquire_now(struct remus *r, char *err, size_t errlen);
void remus_witness_status(struct remus *r, struct json_object *o);
bool remus_witness_unproven(struct remus *r);
void remus_witness_free(struct remus *r);

#endif
