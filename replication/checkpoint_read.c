/* checkpoint_read.c — epochs read from the stream into the stage or RAM, and applied. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/errf.h"
#include "replication/checkpoint.h"

/* ---- the stage --------------------------------------------------------------------------------
 */

int ckpt_stage_reserve(struct ckpt_stage *stg, size_t n)
{
	size_t cap = stg->cap ? stg->cap : 1024;

	while (cap < n)
		cap *= 2;
	if (cap == stg->cap)
		return 0;
	uint64_t *ni = realloc(stg->idx, cap * sizeof(*ni));
	if (!ni)
		return -ENOMEM;
	stg->idx = ni;
	const void **np = realloc(stg->ptrs, cap * sizeof(*np));
	if (!np)
		return -ENOMEM;
	stg->ptrs = np;
	uint8_t *nd = realloc(stg->data, cap * GUEST_PAGE_SIZE);
	if (!nd)
		return -ENOMEM;
	stg->data = nd;
	stg->cap = cap;
	for (size_t i = 0; i < stg->n; i++) /* the copies may have moved */
		stg->ptrs[i] = nd + i * GUEST_PAGE_SIZE;
	return 0;
}

int ckpt_stage_write(struct sr_ctx *w, const struct ckpt_stage *stg)
{
	int rc = sr_write_pages(w, stg->idx, stg->ptrs, stg->n);

	if (!rc && stg->have_state)
		rc = ckpt_state_write(w, &stg->st);
	if (!rc)
		rc = disk_buf_write(w, stg->disk_out);
	if (!rc)
		rc = sr_write_checkpoint_end(w, stg->epoch);
	return rc;
}

/* ---- reading ----------------------------------------------------------------------------------
 */

struct rd {
	struct ckpt_stage *stg;
	struct guest_mem *gm; /* direct mode */
	uint64_t limit; /* max staged pages */
};

static void zero_pages(struct guest_mem *gm, uint64_t first, uint64_t count)
{
	for (uint64_t i = first; i < first + count;) {
		uint64_t gpa = mem_page_gpa(gm, i);
		const struct mem_region *r = NULL;
		for (int k = 0; k < gm->nr; k++)
			if (gpa >= gm->r[k].gpa && gpa < gm->r[k].gpa + gm->r[k].size)
				r = &gm->r[k];
		if (!r)
			return;
		uint64_t in_region = r->pfn_base + (r->size >> GUEST_PAGE_SHIFT) - i;
		uint64_t n = count - (i - first) < in_region ? count - (i - first) : in_region;
		uint64_t off = r->fd_off + (gpa - r->gpa);
		/* Punching a hole zeroes and frees the pages; fall back to memset on plain buffers.
		 */
		if (gm->memfd < 0 || fallocate(gm->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					       (off_t)off, (off_t)(n << GUEST_PAGE_SHIFT)) < 0)
			memset(r->host + (gpa - r->gpa), 0, n << GUEST_PAGE_SHIFT);
		mem_mark_dirty(gm, gpa, n << GUEST_PAGE_SHIFT);
		i += n;
	}
}

static int on_page(void *opaque, uint64_t idx, const void *page)
{
	struct rd *rd = opaque;
	struct ckpt_stage *s = rd->stg;

	s->pages++;
	if (rd->gm) {
		void *dst = mem_page_host(rd->gm, idx);
		if (!dst)
			return -EINVAL;
		memcpy(dst, page, GUEST_PAGE_SIZE);
		return 0;
	}
	if (s->n >= rd->limit)
		return -E2BIG;
	int rc = ckpt_stage_reserve(s, s->n + 1);
	if (rc)
		return rc;
	ckpt_stage_push(s, idx, page);
	return 0;
}

/* The delta base of a page: the receiver's RAM holds the last copy it applied (direct mode: the RAM
 * being written; staged mode: stg->base, the replica's committed RAM). */
static const void *on_base(void *opaque, uint64_t idx)
{
	struct rd *rd = opaque;
	struct guest_mem *gm = rd->gm ? rd->gm : rd->stg->base;

	return gm ? mem_page_host(gm, idx) : NULL;
}

static int on_zero(void *opaque, uint64_t first, uint64_t count)
{
	struct rd *rd = opaque;
	struct ckpt_stage *s = rd->stg;

	s->zero_pages += count;
	if (rd->gm) {
		zero_pages(rd->gm, first, count);
		return 0;
	}
	if (s->nzero >= rd->limit)
		return -E2BIG;
	if (s->nzero == s->zcap) {
		size_t cap = s->zcap ? s->zcap * 2 : 64;
		void *nz = realloc(s->zero, cap * sizeof(*s->zero));
		if (!nz)
			return -ENOMEM;
		s->zero = nz;
		s->zcap = cap;
	}
	s->zero[s->nzero][0] = first;
	s->zero[s->nzero][1] = count;
	s->nzero++;
	return 0;
}

static int stage_state(struct ckpt_stage *s, const struct sr_record *rec, char *err, size_t errlen)
{
	if (rec->type == SR_REC_VCPU_STATE) {
		if (rec->vcpu.vcpu >= HV_MAX_VCPUS)
			return errf(err, errlen, -EBADMSG, "vCPU index %u out of range", rec->vcpu.vcpu);
		if (rec->vcpu.vcpu + 1 > s->st.nr_vcpus)
			s->st.nr_vcpus = rec->vcpu.vcpu + 1;
		s->have_state = true;
		return ckpt_blob_set(&s->st.vcpu[rec->vcpu.vcpu], "vcpu", 0, rec->vcpu.blob,
				     rec->vcpu.blob_len);
	}
	if (rec->dev.kind == CKPT_DEV_INFO) {
		if (rec->dev.blob_len != sizeof(s->info))
			return errf(err, errlen, -EBADMSG, "info record has %u bytes, expected %zu",
				    rec->dev.blob_len, sizeof(s->info));
		memcpy(&s->info, rec->dev.blob, sizeof(s->info));
		s->info.base_path[sizeof(s->info.base_path) - 1] = 0;
		s->have_info = true;
		return 0;
	}
	struct ckpt_blob *b = ckpt_state_find(&s->st, rec->dev.kind, rec->dev.name);
	if (!b) {
		if (s->st.nr_dev >= (int)(sizeof(s->st.dev) / sizeof(s->st.dev[0])))
			return errf(err, errlen, -EBADMSG, "too many device records in one epoch");
		b = &s->st.dev[s->st.nr_dev++];
	}
	return ckpt_blob_set(b, rec->dev.name, rec->dev.kind, rec->dev.blob, rec->dev.blob_len);
}

int ckpt_read_epoch(struct sr_ctx *r, struct ckpt_stage *stg, struct guest_mem *gm, char *err, size_t errlen)
{
	/* An epoch names each page at most once; one batch of slack. A stream repeating pages to
	 * grow the stage without bound is refused. */
	struct rd rd = {.stg = stg, .gm = gm, .limit = sr_nr_pages(r) + SR_BATCH_PAGES};
	struct sr_record rec;
	char tn[48];
	int rc;

	ckpt_stage_reset(stg);
	for (;;) {
		rc = sr_read_record(r, &rec);
		if (rc)
			return errf(err, errlen, rc, "%s", sr_error(r));
		switch (rec.type) {
		case SR_REC_PAGE_DATA:
			rc = sr_decode_pages(r, &rec, on_page, &rd);
			break;
		case SR_REC_PAGE_DELTA:
			rc = sr_decode_delta(r, &rec, on_base, on_page, &rd);
			break;
		case SR_REC_ZERO_PAGES:
			rc = sr_decode_zero_pages(r, &rec, on_zero, &rd);
			break;
		case SR_REC_VCPU_STATE:
		case SR_REC_DEVICE_STATE:
			rc = stage_state(stg, &rec, err, errlen);
			if (rc)
				return rc;
			continue;
		case SR_REC_DISK_WRITE:
		case SR_REC_DISK_INFO:
			if (!stg->disk)
				return errf(err, errlen, -EBADMSG,
					    "%s record, but this VM takes no disk records",
					    sr_type_name(rec.type, tn, sizeof(tn)));
			rc = disk_stage_add(stg->disk, &rec, err, errlen);
			if (rc)
				return rc;
			continue;
		case SR_REC_CHECKPOINT_END:
			stg->epoch = rec.ckpt.epoch;
			return 1;
		case SR_REC_END:
			return 0;
		default:
			return errf(err, errlen, -EBADMSG, "unexpected %s record",
				    sr_type_name(rec.type, tn, sizeof(tn)));
		}
		if (rc) {
			rc = rc < 0 ? rc : -EBADMSG;
			if (rc == -E2BIG)
				return errf(err, errlen, rc, "epoch carries more pages than the VM has");
			if (*sr_error(r))
				return errf(err, errlen, rc, "%s", sr_error(r));
			return errf(err, errlen, rc, "cannot apply page data: %s", strerror(-rc));
		}
	}
}

void ckpt_stage_apply_pages(struct ckpt_stage *stg, struct guest_mem *gm)
{
	for (size_t i = 0; i < stg->nzero; i++)
		zero_pages(gm, stg->zero[i][0], stg->zero[i][1]);
	for (size_t i = 0; i < stg->n; i++) {
		void *dst = mem_page_host(gm, stg->idx[i]);
		if (dst)
			memcpy(dst, stg->data + i * GUEST_PAGE_SIZE, GUEST_PAGE_SIZE);
	}
}

int ckpt_stage_apply(struct ckpt_stage *stg, struct vm *vm, char *err, size_t errlen)
{
	ckpt_stage_apply_pages(stg, vm_mem(vm));
	if (!stg->have_state)
		return 0;
	return ckpt_state_apply(&stg->st, vm, err, errlen);
}

void ckpt_stage_reset(struct ckpt_stage *stg)
{
	stg->n = stg->nzero = 0;
	stg->pages = stg->zero_pages = 0;
	stg->have_state = stg->have_info = false;
	stg->epoch = 0;
	ckpt_state_free(&stg->st);
	if (stg->disk)
		disk_stage_reset(stg->disk);
}

void ckpt_stage_free(struct ckpt_stage *stg)
{
	ckpt_state_free(&stg->st);
	free(stg->idx);
	free(stg->data);
	free(stg->ptrs);
	free(stg->zero);
	memset(stg, 0, sizeof(*stg));
}
