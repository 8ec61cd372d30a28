/* sender.h — inside migrate/: the source's sender state, shared by pre-copy (migrate_send.c) and post-copy (postcopy_send.c). */
#ifndef DOPPEL_MIGRATE_SENDER_H
#define DOPPEL_MIGRATE_SENDER_H

#include <json-c/json.h>

#include "migrate/migrate_priv.h"
#include "replication/ckpt_engine.h"
#include "replication/disk_repl.h"
#include "replication/stream.h"

#define CHUNK_PAGES 4096u /* pages per sr_write_pages_mt call (16 MiB raw) */
#define NTHREADS 2 /* compression workers: both cores */
#define ZSTD_LEVEL 1

struct sender {
	struct mig *m;
	struct vm *vm;
	struct guest_mem *gm;
	int fd;
	struct tls_link *link; /* TLS: the direct path of the stream (out) and the back channel; NULL plain */
	struct sr_out out;
	struct sr_ctx *w;
	struct ckpt_engine eng;
	bool eng_ready;
	struct disk_repl disks; /* the VM's disks: blocks pre-copied, the rest in the stop-and-copy epoch */
	bool disks_ready;
	bool disks_released; /* shared storage: the image locks were given up at GO */
	/* non-shared disks: bytes of blocks sent up front, in the pre-copy rounds, in stop-and-copy;
	 * pages-equivalent of the last round's blocks (for the page rate) */
	uint64_t disk_initial, disk_rounds, disk_final, disk_round_pages, disk_left;
	struct throttle thr;
	struct converge conv;
	bool compress;
	bool dst_zero; /* the destination's RAM is known to be all zero */
	int auto_phase; /* auto compression: 0 = try raw, 1 = try zstd, 2 = decided */
	double rate_raw, rate_zstd;
	uint64_t t0, t_accepted, pages_sent, epoch;
	uint64_t t_ready, t_go; /* switchover: READY received, GO sent */
	uint64_t left; /* pages to send in the current round (for progress) */
	uint64_t round_sent; /* pages sent so far in the current round */
	double est_ms; /* downtime estimate at the last sync */
	struct json_object *rlog; /* per-round {pages, ms, dirty, throttle} */
	bool postcopy; /* the policy chose post-copy for the switchover */
	bool pc_at_once; /* post-copy with no pre-copy round (--postcopy=now, or auto chose it) */
	struct sr_delta *delta; /* --delta-cache: attached to w after the full round, NULL if off */
	char err[300];
};

/* migrate_send.c */
#define SW_UNCERTAIN (-EINPROGRESS) /* committed, no answer: stay paused */
#define SW_PC_LOST (-ENOLINK) /* post-copy broke after GO: the VM is lost, the source stays paused */
void mig_publish(struct sender *s, uint64_t left, double est_ms);
void mig_pace(struct sender *s);
void mig_link_error(struct sender *s, int rc, const char *what);
void mig_set_state(struct mig *m, const char *state, bool committed);
/* READY -> commit -> GO; with until_go return right after GO (post-copy), else wait for RUNNING. */
int mig_switchover(struct sender *s, struct mig_msg *msg, uint64_t *t_ack, bool until_go);
struct json_object *mig_result_json(struct sender *s, const struct ckpt_epoch *ep, const struct mig_msg *msg,
				    uint64_t t_sent, uint64_t t_ack);

/* migrate_disks.c */
/* Non-shared disks: the write log in SYNC mode (mig_setup_disks, before the engine starts); every
 * block before the memory pre-copy, acknowledged like rounds (mig_precopy_disks: *next = the next
 * epoch); the blocks written since the last round, with the next one (mig_disk_round, s->err set);
 * the bytes of blocks sent so far (mig_disk_sent_bytes). 0 or -errno with s->err. */
int mig_setup_disks(struct sender *s);
int mig_precopy_disks(struct sender *s, uint64_t *next);
int mig_disk_round(struct sender *s);
uint64_t mig_disk_sent_bytes(struct sender *s);
/* Shared storage (--shared-disks): after the final epoch, paused: wait for the disks' host I/O, then
 * fdatasync every image (0, or -errno with s->err: not committed, resume). Right after GO: release
 * the read-write images' locks. Before resuming after GO: take them back (0, or -EBUSY with why). */
int mig_disks_flush(struct sender *s);
void mig_disks_release(struct sender *s);
int mig_disks_retake(struct sender *s, char *why, size_t whylen);
/* migrate_send.c: wait for the destination to have applied epoch s->epoch */
int mig_wait_epoch(struct sender *s);

/* postcopy_send.c */
/* After the stream header: PC_MODE (post-copy at once or not). --postcopy=auto chooses at once here
 * when, counting the source's data pages (holes are zero on a fresh destination), the destination
 * would hold at least --postcopy-min-pct of RAM current at the switch (docs/migration.md). */
int pc_send_mode(struct sender *s);
/* After ACCEPT: auto's choice of post-copy at once stands only if the destination's RAM is zero. */
void pc_mode_accepted(struct sender *s);
/* After END: tell the destination which switchover follows (and, for post-copy, the stale set). */
int pc_send_switch(struct sender *s, const uint64_t *stale);
/* The post-copy switchover: state-only epoch, stale set, READY/GO, then pages on demand and pushed.
 * 0 (result set), an error before GO (the VM resumed), or SW_PC_LOST (committed, stays paused). */
int pc_source_run(struct sender *s, struct json_object **result);
/* --postcopy now: every data page of RAM as the set the destination lacks, into bm. */
void pc_all_data_pages(struct sender *s, uint64_t *bm);

#endif
