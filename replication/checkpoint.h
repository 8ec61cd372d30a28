/* checkpoint.h — capture a paused VM into the checkpoint stream; stage and apply epochs read from
 * it. */
#ifndef DOPPEL_REPLICATION_CHECKPOINT_H
#define DOPPEL_REPLICATION_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hv/hv.h"
#include "replication/disk_repl.h"
#include "replication/stream.h"

/*
 * An epoch in the stream is: PAGE_DATA / ZERO_PAGES records, then VCPU_STATE for every vCPU, then
 * DEVICE_STATE for the in-kernel VM state ("kvm-vm", kind CKPT_DEV_KVM) and for every device the VM
 * registered (kind CKPT_DEV_HV, name as registered), then CHECKPOINT_END. A full epoch carries
 * every RAM page (zero ranges included); an incremental one only pages dirtied since the previous
 * epoch.
 */
#define CKPT_DEV_KVM 1u
#define CKPT_DEV_HV 2u
#define CKPT_DEV_INFO 3u /* snapshot/replication metadata, see struct ckpt_info */

/* Machine state other than memory, captured in memory while the VM is paused. */
struct ckpt_blob {
	char name[SR_DEV_NAME_LEN];
	uint32_t kind;
	uint8_t *data;
	size_t len;
};
struct ckpt_state {
	uint32_t nr_vcpus;
	struct ckpt_blob vcpu[HV_MAX_VCPUS];
	int nr_dev;
	struct ckpt_blob dev[HV_MAX_DEVSTATE + 2];
};

/* Capture every vCPU, the in-kernel VM state and every registered device. Precondition: the VM is
 * paused (vm_pause) or not yet started. Returns 0 or -errno with one line in err. */
int ckpt_state_capture(struct ckpt_state *s, struct vm *vm, char *err, size_t errlen);
/* Write the captured state records (VCPU_STATE..., DEVICE_STATE...). */
int ckpt_state_write(struct sr_ctx *w, const struct ckpt_state *s);
/* Apply captured state to a paused / not started VM: every device blob is matched by name and
 * validated by its restore function; vCPUs, then devices, then the kvm-vm state. Returns 0 or
 * -errno with err. Precondition checked: the state has exactly vm_nr_vcpus() vCPUs and every
 * registered device has a blob. */
int ckpt_state_apply(const struct ckpt_state *s, struct vm *vm, char *err, size_t errlen);
void ckpt_state_free(struct ckpt_state *s); /* frees blobs; the struct may be reused */
/* Set a blob to a copy of data (the reading side's records). 0 or -ENOMEM. */
int ckpt_blob_set(struct ckpt_blob *b, const char *name, uint32_t kind, const void *data, size_t len);
/* The blob of kind/name in s, or NULL. */
struct ckpt_blob *ckpt_state_find(const struct ckpt_state *s, uint32_t kind, const char *name);

/* Metadata of a snapshot or replication stream, carried as DEVICE_STATE kind CKPT_DEV_INFO "info".
 */
struct ckpt_info {
	uint64_t id; /* random id of this image */
	uint64_t base_id; /* 0 for a full image; else the id of the image this one is incremental to */
	uint64_t epoch;
	char base_path[256]; /* where the base image was written (a hint, NUL-terminated) */
};
int ckpt_info_write(struct sr_ctx *w, const struct ckpt_info *info);

/* ---- pages out: the one batcher ------------------------------------------------------------- */

/* Progress of a page write, readable from other threads (atomic loads): pages done of total. */
struct ckpt_progress {
	uint64_t done, total;
};

/*
 * Pages go out through a batch: page pointers are collected into chunks and each chunk is written
 * with sr_write_pages (nthreads <= 1) or sr_write_pages_mt. Pages are read live from guest memory
 * when the chunk is written, so the caller either pauses the VM or accepts that a later round
 * resends what changed. After every chunk, on_chunk (if set) runs with the chunk's page count and
 * the time its write took: migration paces the link and chooses compression there. A batch is one
 * writer's.
 */
#define CKPT_CHUNK_MAX 16384u
struct ckpt_batch {
	struct sr_ctx *w; /* the stream (set before writing) */
	int nthreads; /* compression threads (<= 1: inline) */
	size_t chunk; /* pages per write call, 1..CKPT_CHUNK_MAX */
	struct ckpt_progress *prog; /* NULL or counted into (total set by each ckpt_batch_write_*) */
	int (*on_chunk)(void *opaque, size_t pages, uint64_t write_ns); /* non-zero stops the write */
	void *opaque;
	uint64_t pages; /* pages written through this batch so far */
	size_t n;
	uint64_t idx[CKPT_CHUNK_MAX];
	const void *ptr[CKPT_CHUNK_MAX];
};
/* A batch writing to w with nthreads threads in chunks of CKPT_CHUNK_MAX; NULL when out of memory.
 */
struct ckpt_batch *ckpt_batch_new(struct sr_ctx *w, int nthreads);
void ckpt_batch_free(struct ckpt_batch *b);
/* Queue page idx (skipped if it is not RAM); writes a chunk when full. 0 or -errno. */
int ckpt_batch_page(struct ckpt_batch *b, const struct guest_mem *gm, uint64_t idx);
/* Write what is queued. */
int ckpt_batch_flush(struct ckpt_batch *b);
/* Every RAM page: holes of the memfd (never touched) as zero ranges without being read (omitted
 * when skip_holes: the reader's RAM is known to be zero), data extents as pages. Flushes. */
int ckpt_batch_write_all(struct ckpt_batch *b, const struct guest_mem *gm, bool skip_holes);
/* The pages whose bit is set in bitmap (gm->nr_pages bits). Flushes. */
int ckpt_batch_write_bitmap(struct ckpt_batch *b, const struct guest_mem *gm, const uint64_t *bitmap);

/* One-shot forms of the above on a batch of their own (tests, tools). */
int ckpt_write_all_pages(struct sr_ctx *w, struct guest_mem *gm, int nthreads);
int ckpt_write_dirty_pages(struct sr_ctx *w, struct guest_mem *gm, const uint64_t *bitmap, int nthreads);
int ckpt_write_all_pages_progress(struct sr_ctx *w, struct guest_mem *gm, int nthreads,
				  struct ckpt_progress *prog);
int ckpt_write_dirty_pages_progress(struct sr_ctx *w, struct guest_mem *gm, const uint64_t *bitmap,
				    int nthreads, struct ckpt_progress *prog);

/* ---- reading ----------------------------------------------------------------------------------
 */

/*
 * One staged epoch: page indices, page copies, a pointer to each copy (what sr_write_pages takes),
 * and the machine state. The writing side (the checkpoint engine's stage mode, Remus) fills it
 * inside the pause and writes it later with ckpt_stage_write; the reading side fills it from the
 * stream. Read in staged mode (gm == NULL when reading) page contents are kept in the stage until
 * ckpt_stage_apply, so a torn or corrupt epoch never touches the VM; in direct mode (reading with
 * gm set, for restoring into a VM that has not run) pages go straight into RAM.
 */
struct ckpt_stage {
	uint64_t *idx; /* staged page indices */
	uint8_t *data; /* staged pages, 4096 bytes each */
	const void **ptrs; /* ptrs[i] == data + i * 4096 */
	size_t n, cap;
	uint64_t (*zero)[2]; /* staged zero ranges {first, count} */
	size_t nzero, zcap;
	struct ckpt_state st;
	bool have_state;
	struct ckpt_info info;
	bool have_info;
	uint64_t epoch;
	uint64_t pages, zero_pages; /* counts of this epoch */
	/* Staged reading: the RAM holding the last applied copy of every page, against which
	 * PAGE_DELTA records are decoded (a Remus replica's RAM: see docs/stream.md). NULL: delta
	 * records are refused. Kept by ckpt_stage_reset. */
	struct guest_mem *base;
	/* disks: writing side, the epoch's frozen write log (written before CHECKPOINT_END); reading
	 * side, where DISK_WRITE / DISK_INFO records are staged (NULL: such records are refused) */
	const struct disk_buf *disk_out;
	struct disk_stage *disk;
};

/* Read records up to and including the next CHECKPOINT_END (whose checksum the reader verifies).
 * Returns 1 when an epoch was read, 0 at END, -errno with err on any failure (the stage then holds
 * nothing usable: ckpt_stage_reset it). With gm non-NULL pages are written directly into gm. */
int ckpt_read_epoch(struct sr_ctx *r, struct ckpt_stage *stg, struct guest_mem *gm, char *err, size_t errlen);
/* Apply a staged epoch: pages into RAM (marked device-dirty), then state if the epoch carried it.
 * The VM must be paused or not started. */
int ckpt_stage_apply(struct ckpt_stage *stg, struct vm *vm, char *err, size_t errlen);
/* Apply only the memory part of a staged epoch to gm (a standby's replica keeps state staged). */
void ckpt_stage_apply_pages(struct ckpt_stage *stg, struct guest_mem *gm);
void ckpt_stage_reset(struct ckpt_stage *stg); /* empties, keeps buffers */
/* Room for n pages (capacity doubles from 1024; 0 without allocating when it already fits). */
int ckpt_stage_reserve(struct ckpt_stage *stg, size_t n);
/* Append a copy of page idx from src. Precondition: room reserved (stg->n < stg->cap). */
static inline void ckpt_stage_push(struct ckpt_stage *stg, uint64_t idx, const void *src)
{
	uint8_t *dst = stg->data + stg->n * GUEST_PAGE_SIZE;

	__builtin_memcpy(dst, src, GUEST_PAGE_SIZE);
	stg->idx[stg->n] = idx;
	stg->ptrs[stg->n++] = dst;
}
/* Write a staged epoch: its pages, its state when it has some, CHECKPOINT_END(stg->epoch). */
int ckpt_stage_write(struct sr_ctx *w, const struct ckpt_stage *stg);
void ckpt_stage_free(struct ckpt_stage *stg);

#endif
