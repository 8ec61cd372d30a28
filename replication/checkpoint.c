/* checkpoint.c — capture a paused VM into the checkpoint stream; stage and apply epochs read from it. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hv/dirty.h"
#include "replication/checkpoint.h"

#define CHUNK_PAGES 16384u

/* ---- machine state ---------------------------------------------------------------------------- */

void ckpt_state_free(struct ckpt_state *s)
{
	for (uint32_t i = 0; i < HV_MAX_VCPUS; i++)
		free(s->vcpu[i].data);
	for (int i = 0; i < s->nr_dev; i++)
		free(s->dev[i].data);
	memset(s, 0, sizeof(*s));
}

static int blob_set(struct ckpt_blob *b, const char *name, uint32_t kind, const void *data, size_t len)
{
	uint8_t *p = malloc(len ? len : 1);

	if (!p)
		return -ENOMEM;
	memcpy(p, data, len);
	free(b->data);
	b->data = p;
	b->len = len;
	b->kind = kind;
	snprintf(b->name, sizeof(b->name), "%s", name);
	return 0;
}

int ckpt_state_capture(struct ckpt_state *s, struct vm *vm, char *err, size_t errlen)
{
	size_t max = vm_vcpu_state_max(vm), used;
	uint8_t *buf;
	int rc = 0;

	ckpt_state_free(s);
	if (vm_platform_state_max(vm) > max)
		max = vm_platform_state_max(vm);
	for (int i = 0; i < vm_devstate_count(vm); i++)
		if (vm_devstate_get(vm, i)->max > max)
			max = vm_devstate_get(vm, i)->max;
	buf = malloc(max);
	if (!buf)
		return -ENOMEM;
	s->nr_vcpus = (uint32_t)vm_nr_vcpus(vm);
	for (uint32_t i = 0; i < s->nr_vcpus; i++) {
		rc = vm_vcpu_save(vm, (int)i, buf, max, &used, err, errlen);
		if (rc || (rc = blob_set(&s->vcpu[i], "vcpu", 0, buf, used)))
			goto out;
	}
	rc = vm_platform_save(vm, buf, max, &used, err, errlen);
	if (rc || (rc = blob_set(&s->dev[s->nr_dev++], vm_platform_state_name(vm), CKPT_DEV_KVM, buf, used)))
		goto out;
	for (int i = 0; i < vm_devstate_count(vm); i++) {
		const struct vm_devstate *d = vm_devstate_get(vm, i);
		int n = d->save(d->opaque, buf, d->max);
		if (n < 0) {
			rc = n;
			snprintf(err, errlen, "cannot save device %s: %s", d->name, strerror(-n));
			goto out;
		}
		rc = blob_set(&s->dev[s->nr_dev++], d->name, CKPT_DEV_HV, buf, (size_t)n);
		if (rc)
			goto out;
	}
out:
	free(buf);
	if (rc)
		ckpt_state_free(s);
	return rc;
}

int ckpt_state_write(struct sr_ctx *w, const struct ckpt_state *s)
{
	int rc;

	for (uint32_t i = 0; i < s->nr_vcpus; i++)
		if ((rc = sr_write_vcpu(w, i, s->vcpu[i].data, s->vcpu[i].len)))
			return rc;
	for (int i = 0; i < s->nr_dev; i++)
		if ((rc = sr_write_device(w, s->dev[i].kind, s->dev[i].name, s->dev[i].data,
					  s->dev[i].len)))
			return rc;
	return 0;
}

static const struct ckpt_blob *find_dev(const struct ckpt_state *s, uint32_t kind, const char *name)
{
	for (int i = 0; i < s->nr_dev; i++)
		if (s->dev[i].kind == kind && !strcmp(s->dev[i].name, name))
			return &s->dev[i];
	return NULL;
}

int ckpt_state_apply(const struct ckpt_state *s, struct vm *vm, char *err, size_t errlen)
{
	const struct ckpt_blob *kvm = find_dev(s, CKPT_DEV_KVM, vm_platform_state_name(vm));
	int rc;

	/* Validate presence of everything before touching anything. */
	if (s->nr_vcpus != (uint32_t)vm_nr_vcpus(vm)) {
		snprintf(err, errlen, "state has %u vCPUs, VM has %d", s->nr_vcpus, vm_nr_vcpus(vm));
		return -EINVAL;
	}
	for (uint32_t i = 0; i < s->nr_vcpus; i++)
		if (!s->vcpu[i].data) {
			snprintf(err, errlen, "state lacks vCPU %u", i);
			return -EINVAL;
		}
	if (!kvm) {
		snprintf(err, errlen, "state lacks the kvm-vm record");
		return -EINVAL;
	}
	for (int i = 0; i < vm_devstate_count(vm); i++)
		if (!find_dev(s, CKPT_DEV_HV, vm_devstate_get(vm, i)->name)) {
			snprintf(err, errlen, "state lacks device %s", vm_devstate_get(vm, i)->name);
			return -EINVAL;
		}
	for (uint32_t i = 0; i < s->nr_vcpus; i++) {
		rc = vm_vcpu_restore(vm, (int)i, s->vcpu[i].data, s->vcpu[i].len, err, errlen);
		if (rc)
			return rc;
	}
	for (int i = 0; i < vm_devstate_count(vm); i++) {
		const struct vm_devstate *d = vm_devstate_get(vm, i);
		const struct ckpt_blob *b = find_dev(s, CKPT_DEV_HV, d->name);
		rc = d->restore(d->opaque, b->data, b->len);
		if (rc) {
			snprintf(err, errlen, "device %s rejected its state: %s", d->name, strerror(-rc));
			return rc;
		}
	}
	return vm_platform_restore(vm, kvm->data, kvm->len, err, errlen);
}

int ckpt_info_write(struct sr_ctx *w, const struct ckpt_info *info)
{
	return sr_write_device(w, CKPT_DEV_INFO, "info", info, sizeof(*info));
}

/* ---- pages out -------------------------------------------------------------------------------- */

struct page_batch {
	uint64_t idx[CHUNK_PAGES];
	const void *ptr[CHUNK_PAGES];
	size_t n;
	struct ckpt_progress *prog;
};

/* A batch counting into prog (may be NULL), whose total becomes `total`. NULL when out of memory. */
static struct page_batch *batch_new(struct ckpt_progress *prog, uint64_t total)
{
	struct page_batch *b = malloc(sizeof(*b));

	if (!b)
		return NULL;
	b->n = 0;
	b->prog = prog;
	if (prog)
		__atomic_store_n(&prog->total, total, __ATOMIC_RELAXED);
	return b;
}

static void progress_add(struct ckpt_progress *p, uint64_t n)
{
	if (p)
		__atomic_fetch_add(&p->done, n, __ATOMIC_RELAXED);
}

static int batch_flush(struct sr_ctx *w, struct page_batch *b, int nthreads)
{
	int rc = 0;

	if (b->n)
		rc = nthreads > 1 ? sr_write_pages_mt(w, b->idx, b->ptr, b->n, nthreads)
				  : sr_write_pages(w, b->idx, b->ptr, b->n);
	progress_add(b->prog, b->n);
	b->n = 0;
	return rc;
}

static int batch_add(struct sr_ctx *w, struct page_batch *b, const struct guest_mem *gm,
		     uint64_t idx, int nthreads)
{
	b->idx[b->n] = idx;
	b->ptr[b->n] = mem_page_host(gm, idx);
	if (++b->n == CHUNK_PAGES)
		return batch_flush(w, b, nthreads);
	return 0;
}

int ckpt_write_all_pages(struct sr_ctx *w, struct guest_mem *gm, int nthreads)
{
	return ckpt_write_all_pages_progress(w, gm, nthreads, NULL);
}

int ckpt_write_all_pages_progress(struct sr_ctx *w, struct guest_mem *gm, int nthreads,
				  struct ckpt_progress *prog)
{
	struct page_batch *b = batch_new(prog, gm->nr_pages);
	int rc = 0;

	if (!b)
		return -ENOMEM;
	for (int i = 0; i < gm->nr && !rc; i++) {
		const struct mem_region *r = &gm->r[i];
		uint64_t npages = r->size >> GUEST_PAGE_SHIFT, p = 0;
		while (p < npages && !rc) {
			/* Data extent [d, h) of the memfd; everything before d is a hole (zero). */
			uint64_t d = p, h = npages;
			if (gm->memfd >= 0) {
				off_t o = lseek(gm->memfd, (off_t)(r->fd_off + (p << GUEST_PAGE_SHIFT)), SEEK_DATA);
				if (o < 0 || (uint64_t)o >= r->fd_off + r->size)
					d = npages;
				else
					d = ((uint64_t)o - r->fd_off) >> GUEST_PAGE_SHIFT;
				if (d < npages) {
					o = lseek(gm->memfd, (off_t)(r->fd_off + (d << GUEST_PAGE_SHIFT)), SEEK_HOLE);
					h = (o < 0 || (uint64_t)o >= r->fd_off + r->size)
						    ? npages
						    : ((uint64_t)o - r->fd_off + GUEST_PAGE_SIZE - 1) >> GUEST_PAGE_SHIFT;
				}
			}
			if (d > p && (rc = sr_write_zero_range(w, r->pfn_base + p, d - p)))
				break;
			progress_add(prog, d - p);
			for (uint64_t q = d; q < h && !rc; q++)
				rc = batch_add(w, b, gm, r->pfn_base + q, nthreads);
			p = h;
		}
	}
	if (!rc)
		rc = batch_flush(w, b, nthreads);
	free(b);
	return rc;
}

int ckpt_write_dirty_pages(struct sr_ctx *w, struct guest_mem *gm, const uint64_t *bitmap,
			   int nthreads)
{
	return ckpt_write_dirty_pages_progress(w, gm, bitmap, nthreads, NULL);
}

int ckpt_write_dirty_pages_progress(struct sr_ctx *w, struct guest_mem *gm, const uint64_t *bitmap,
				    int nthreads, struct ckpt_progress *prog)
{
	struct page_batch *b = batch_new(prog, prog ? dirty_bitmap_count(bitmap, gm->nr_pages) : 0);
	int rc = 0;

	if (!b)
		return -ENOMEM;
	for (uint64_t pos = 0, idx; !rc && (idx = dirty_next(bitmap, gm->nr_pages, &pos)) != UINT64_MAX;)
		rc = batch_add(w, b, gm, idx, nthreads);
	if (!rc)
		rc = batch_flush(w, b, nthreads);
	free(b);
	return rc;
}

/* ---- reading ---------------------------------------------------------------------------------- */

struct rd {
	struct ckpt_stage *stg;
	struct guest_mem *gm; /* direct mode */
	uint64_t limit;       /* max staged pages */
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
		/* Punching a hole zeroes and frees the pages; fall back to memset on plain buffers. */
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
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 1024;
		uint64_t *ni = realloc(s->idx, cap * sizeof(*ni));
		if (!ni)
			return -ENOMEM;
		s->idx = ni;
		uint8_t *nd = realloc(s->data, cap * GUEST_PAGE_SIZE);
		if (!nd)
			return -ENOMEM;
		s->data = nd;
		s->cap = cap;
	}
	s->idx[s->n] = idx;
	memcpy(s->data + s->n * GUEST_PAGE_SIZE, page, GUEST_PAGE_SIZE);
	s->n++;
	return 0;
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
		if (rec->vcpu.vcpu >= HV_MAX_VCPUS) {
			snprintf(err, errlen, "vCPU index %u out of range", rec->vcpu.vcpu);
			return -EBADMSG;
		}
		if (rec->vcpu.vcpu + 1 > s->st.nr_vcpus)
			s->st.nr_vcpus = rec->vcpu.vcpu + 1;
		s->have_state = true;
		return blob_set(&s->st.vcpu[rec->vcpu.vcpu], "vcpu", 0, rec->vcpu.blob, rec->vcpu.blob_len);
	}
	if (rec->dev.kind == CKPT_DEV_INFO) {
		if (rec->dev.blob_len != sizeof(s->info)) {
			snprintf(err, errlen, "info record has %u bytes, expected %zu", rec->dev.blob_len,
				 sizeof(s->info));
			return -EBADMSG;
		}
		memcpy(&s->info, rec->dev.blob, sizeof(s->info));
		s->info.base_path[sizeof(s->info.base_path) - 1] = 0;
		s->have_info = true;
		return 0;
	}
	struct ckpt_blob *b = (struct ckpt_blob *)find_dev(&s->st, rec->dev.kind, rec->dev.name);
	if (!b) {
		if (s->st.nr_dev >= (int)(sizeof(s->st.dev) / sizeof(s->st.dev[0]))) {
			snprintf(err, errlen, "too many device records in one epoch");
			return -EBADMSG;
		}
		b = &s->st.dev[s->st.nr_dev++];
	}
	return blob_set(b, rec->dev.name, rec->dev.kind, rec->dev.blob, rec->dev.blob_len);
}

int ckpt_read_epoch(struct sr_ctx *r, struct ckpt_stage *stg, struct guest_mem *gm, char *err,
		    size_t errlen)
{
	/* An epoch names each page at most once; one batch of slack. A stream repeating pages to grow
	 * the stage without bound is refused. */
	struct rd rd = {.stg = stg, .gm = gm, .limit = sr_nr_pages(r) + SR_BATCH_PAGES};
	struct sr_record rec;
	char tn[48];
	int rc;

	ckpt_stage_reset(stg);
	for (;;) {
		rc = sr_read_record(r, &rec);
		if (rc) {
			snprintf(err, errlen, "%s", sr_error(r));
			return rc;
		}
		switch (rec.type) {
		case SR_REC_PAGE_DATA:
			rc = sr_decode_pages(r, &rec, on_page, &rd);
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
		case SR_REC_CHECKPOINT_END:
			stg->epoch = rec.ckpt.epoch;
			return 1;
		case SR_REC_END:
			return 0;
		default:
			snprintf(err, errlen, "unexpected %s record", sr_type_name(rec.type, tn, sizeof(tn)));
			return -EBADMSG;
		}
		if (rc) {
			if (rc == -E2BIG)
				snprintf(err, errlen, "epoch carries more pages than the VM has");
			else if (*sr_error(r))
				snprintf(err, errlen, "%s", sr_error(r));
			else
				snprintf(err, errlen, "cannot apply page data: %s", strerror(-rc));
			return rc < 0 ? rc : -EBADMSG;
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
}

void ckpt_stage_free(struct ckpt_stage *stg)
{
	ckpt_state_free(&stg->st);
	free(stg->idx);
	free(stg->data);
	free(stg->zero);
	memset(stg, 0, sizeof(*stg));
}
