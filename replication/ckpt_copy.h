/* ckpt_copy.h — the staging copy of an epoch's dirty pages on two cores (the paused vCPU's and the loop's). */
#ifndef DOPPEL_REPLICATION_CKPT_COPY_H
#define DOPPEL_REPLICATION_CKPT_COPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "replication/checkpoint.h"

/*
 * Inside a Remus pause the vCPU is stopped, so its core is idle while the loop thread copies the
 * hot set into the stage (64 MiB: ~7 ms at one core's memcpy bandwidth). A copier is one helper
 * thread, at SCHED_FIFO priority 1 so the host's other work cannot preempt it while it holds a
 * chunk, that takes part in that copy: ckpt_copier_copy publishes the job, wakes the helper (one
 * futex wake: no allocation, no blocking) and copies; both threads claim chunks of
 * CKPT_COPY_CHUNK pages from one atomic cursor. Work is claimed, not assigned: a helper that wakes
 * late costs nothing (the loop thread has copied everything by then and waits for at most the one
 * chunk the helper holds). A claim carries the epoch's generation, so a helper late from an earlier
 * epoch never touches a later one. The helper never spins: between epochs it sleeps. One copier per
 * engine, driven by one thread at a time.
 */

#define CKPT_COPY_CHUNK 64 /* pages per claim (256 KiB) */
#define CKPT_COPY_MIN_CPUS 3 /* engines get a helper only on hosts with at least this many CPUs */
#define CKPT_COPY_MIN 512 /* smaller epochs are copied by the loop alone (not worth a wake-up) */

struct ckpt_copier;

/* Start the helper thread (sleeping) at SCHED_FIFO priority 1. 0 or -errno (-EPERM without
 * CAP_SYS_NICE: then there is no helper and the loop copies alone). */
int ckpt_copier_new(struct ckpt_copier **out);
void ckpt_copier_free(struct ckpt_copier *c); /* joins the helper; NULL-safe */
/* Copy stg->n pages: for each i < stg->n, stg->ptrs[i] holds the source (host RAM) on entry and
 * points at its copy, stg->data + i * 4096, on return. With the helper when c is non-NULL and
 * stg->n >= CKPT_COPY_MIN. Returns the pages the helper copied. */
uint64_t ckpt_copier_copy(struct ckpt_copier *c, struct ckpt_stage *stg);
/* Outside any pause: give stg room for cap pages and touch the new part, so a pause that fills it
 * neither allocates nor faults. 0 or -ENOMEM. */
int ckpt_stage_prepare(struct ckpt_stage *stg, size_t cap);
/* Pages copied by the helper so far (status). */
uint64_t ckpt_copier_helped(const struct ckpt_copier *c);

#endif
