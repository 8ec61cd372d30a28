/* ckpt_engine.h — the one checkpoint engine: dirty log, quiesced epoch, pre-copy loop. */
#ifndef DOPPEL_REPLICATION_CKPT_ENGINE_H
#define DOPPEL_REPLICATION_CKPT_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hv/dirty.h"
#include "hv/hv.h"
#include "replication/checkpoint.h"
#include "replication/stream.h"

/*
 * One path for an epoch, whoever asks for it:
 *
 *   pause -> dirty sync (| caller's merge set) -> state capture -> pages -> disks -> commit -> resume
 *
 * "pages" is where the modes differ (struct ckpt_ops, cf. Xen's xc_sr_save_ops): a staging mode
 * (Remus) copies the dirty pages into the engine's stage and resumes at once, the stage being
 * written by another thread later (ckpt_stage_write); a writing mode (migration's stop-and-copy,
 * snapshots) writes pages, state and CHECKPOINT_END straight from RAM while still paused, then
 * resumes or, when the epoch asks (migration switchover, snapshot --stop), stays paused. Nothing
 * inside the pause of a staging epoch allocates unless the dirty set outgrew the stage (it is
 * pre-grown at start).
 *
 * Before the epochs, ckpt_engine_precopy runs the live rounds: a full round (every page, holes as
 * zero ranges), then rounds of the pages dirtied meanwhile; after each sync a policy callback
 * decides "another round, a last one, or stop-and-copy now".
 *
 * Threads: an engine is driven by one thread at a time (Remus: the sender thread runs the pre-copy,
 * then the loop thread runs the epochs).
 */

#define CKPT_HOT_MAX 32768 /* keep_hot: at most this many pages left writable across epochs */
#define CKPT_HOT_COOL 40 /* keep_hot: a slice of the hot set is re-learnt every this many epochs */
#define CKPT_HOT_SLICES 8 /* keep_hot: ... one of this many (by bitmap word), in turn */
#define CKPT_HOT_WINDOW 32 /* keep_hot: "recently dirty" = at a sync of the last 32..64 epochs */

struct ckpt_engine;
struct ckpt_epoch;

struct ckpt_ops {
	const char *name;
	unsigned log_flags; /* DIRTY_START_* for ckpt_engine_start */
	/* A page dirty in two epochs in a row stays writable (dirty_log_sync_keep) and is copied
	 * every epoch instead of write-faulting after every re-protect (Remus). */
	bool keep_hot;
	/* Copy the dirty pages into e->stage and resume (Remus); else write the epoch to the stream
	 * while paused. */
	bool stage;
	/* Still paused, the epoch complete: commit it (Remus: mark the output boundary; snapshots:
	 * END, fsync, rename). Non-zero fails the epoch (the VM is resumed). May be NULL. */
	int (*commit)(struct ckpt_engine *e, struct ckpt_epoch *ep, char *err, size_t errlen);
};

struct ckpt_phases {
	uint64_t kick, sync, capture, copy; /* ns: pausing, dirty sync, state capture, pages */
	uint64_t helped; /* pages of the copy done by the engine's helper thread (ckpt_copy.h) */
};

struct ckpt_epoch {
	/* in */
	uint64_t epoch; /* number for CHECKPOINT_END / the stage */
	const uint64_t *merge; /* pages to include even if not dirty (gm->nr_pages bits), or NULL */
	bool all_pages; /* a full image: every RAM page, not the dirty set */
	bool stay_paused; /* keep the pause hold after a successful epoch */
	bool state_only; /* writing modes: no pages, the dirty set stays in e->bitmap (post-copy) */
	struct sr_ctx *w; /* writing modes: the stream */
	/* writing modes with disks, outside replication's write log (snapshots): carry the disks' blocks
	 * (all of them with all_pages, else those written since the last epoch), and/or clone every image
	 * to "<disk_sidecar>.diskN" (disk_repl_epoch) */
	bool disk_data;
	const char *disk_sidecar;
	void *opaque; /* for the ops */
	/* out */
	bool quiesced; /* the VM was paused and the dirty set consumed (also on failure) */
	bool io_failed; /* the failure was the stream's (err holds sr_error) */
	uint64_t pages; /* pages in the epoch */
	uint64_t t_pause; /* now_ns() before vm_pause */
	uint64_t pause_ns; /* pause to resume (to the end of commit when staying paused) */
	struct ckpt_phases ph;
};

struct ckpt_engine {
	struct vm *vm;
	struct guest_mem *gm;
	const struct ckpt_ops *ops;
	void *opaque;
	struct dirty_log *log; /* NULL until ckpt_engine_start */
	uint64_t *bitmap; /* the dirty set of the last sync (| merge) */
	uint64_t *carry; /* after a pre-copy ending in stop-and-copy: its last sync's pages */
	uint64_t *hot; /* keep_hot: the keep set of the next sync (seen | seen_prev) */
	uint64_t *seen, *seen_prev; /* keep_hot: dirty in this / the previous CKPT_HOT_WINDOW */
	uint64_t hot_pages; /* pages the last sync left writable */
	uint32_t hot_age, win_age, hot_slice;
	struct ckpt_stage stage; /* staging mode: the last epoch; writing modes: its state */
	/* The VM's disks (NULL: none or not carried): started and stopped with the dirty log; each
	 * epoch's pause freezes their write log, which goes out before the epoch's CHECKPOINT_END
	 * (staging: with the stage; writing modes: from write_epoch). Set by the caller. */
	struct disk_repl *disks;
	struct ckpt_batch *batch; /* page writer: set nthreads / chunk / on_chunk / prog as needed */
	/* staging mode: a helper thread that copies half of a large epoch inside the pause (the paused
	 * vCPU's core is idle; replication/ckpt_copy.h). NULL: the loop copies alone. */
	struct ckpt_copier *copier;
	uint64_t copy_helped; /* pages the helper copied, all epochs */
};

/* Allocate bitmaps, batch (nthreads 1), for keep_hot the hot set and, for staging engines, the copy
 * helper thread (without it the loop copies alone). 0 or -ENOMEM (then free). */
int ckpt_engine_init(struct ckpt_engine *e, struct vm *vm, const struct ckpt_ops *ops, void *opaque);
/* Start dirty logging with ops->log_flags (the engine's only dirty_log_start). Forgets the hot set;
 * a staging engine pre-grows and touches its stage for 4096 pages. 0 or -errno with err. */
int ckpt_engine_start(struct ckpt_engine *e, char *err, size_t errlen);
/* The same with other DIRTY_START_* flags (Remus after a switchover: DIRTY_START_CLEAN). */
int ckpt_engine_start_flags(struct ckpt_engine *e, unsigned flags, char *err, size_t errlen);
/* Stop and free the dirty log (the next epoch has no dirty set until a new start). Idempotent. */
void ckpt_engine_stop(struct ckpt_engine *e);
void ckpt_engine_free(struct ckpt_engine *e); /* everything; the struct may be re-initialised */

/* One quiesced epoch (see the top). 0, or -errno with one line in err; on failure the VM is resumed
 * (this hold only) and, in writing modes, the stream is unusable. Errors: "cannot pause the VM:
 * ..", "dirty log sync failed: ..", "checkpoint capture failed: ..", a stream error (writing
 * modes), or the commit's. A full image (all_pages) whose log was taken over (-ECANCELED) drops the
 * log and goes on: it needs no dirty set. */
int ckpt_engine_epoch(struct ckpt_engine *e, struct ckpt_epoch *ep, char *err, size_t errlen);

/* ---- pre-copy -------------------------------------------------------------------------------- */

enum ckpt_next {
	CKPT_STOP = 0, /* stop-and-copy now: the synced pages stay in e->carry for the merge */
	CKPT_ROUND = 1, /* send the synced pages as another round */
	CKPT_LAST_ROUND = 2, /* send them, then stop (no further sync) */
};

struct ckpt_round {
	uint64_t round; /* 1 = the full round */
	uint64_t epoch; /* the round's CHECKPOINT_END number */
	uint64_t sent; /* pages the round wrote */
	uint64_t dirty; /* pages the sync after it found (next only) */
	uint64_t t_start; /* now_ns() when the round began */
	uint64_t t_sync; /* now_ns() right before the sync (next only) */
};

struct ckpt_policy {
	/* After a round's CHECKPOINT_END (migration: wait for the destination to apply it). May be
	 * NULL. Non-zero stops the loop with that code. */
	int (*round_end)(void *opaque, const struct ckpt_round *rd);
	/* After the sync: enum ckpt_next, or -errno (its own error text). */
	int (*next)(void *opaque, const struct ckpt_round *rd);
	bool skip_holes; /* the reader's RAM is all zero: the full round omits zero ranges */
};

/* Live rounds on the stream w, starting at epoch *epoch (left at the next unused number). A log
 * started with DIRTY_START_ALL is synced once before the full round (its initial all-set is
 * consumed). Returns 0 or -errno; *io_failed tells a stream error (err then holds sr_error) from a
 * sync failure or the policy's own error. */
int ckpt_engine_precopy(struct ckpt_engine *e, struct sr_ctx *w, const struct ckpt_policy *pol, void *opaque,
			uint64_t *epoch, bool *io_failed, char *err, size_t errlen);

#endif
