/* fuzz_stream.c — libFuzzer target: hostile bytes through the stream reader and decoders into a 64-page fake VM. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "replication/stream.h"

#define FZ_PAGES 64
#define FZ_STAGE 128

/* Receiver as docs/stream.md asks: stage an epoch, apply it only on a verified CHECKPOINT_END. */
struct fz_vm {
	uint8_t mem[FZ_PAGES * SR_PAGE_SIZE];
	uint8_t stage[FZ_STAGE][SR_PAGE_SIZE];
	uint64_t stage_idx[FZ_STAGE];
	int nstage;
	uint64_t zero_first[FZ_STAGE], zero_count[FZ_STAGE];
	int nzero;
};

static int stage_page(void *opaque, uint64_t idx, const void *page)
{
	struct fz_vm *vm = opaque;

	if (idx >= FZ_PAGES || vm->nstage >= FZ_STAGE)
		return 0; /* our fake VM is smaller than the header says: ignore */
	memcpy(vm->stage[vm->nstage], page, SR_PAGE_SIZE);
	vm->stage_idx[vm->nstage++] = idx;
	return 0;
}

static int stage_zero(void *opaque, uint64_t first, uint64_t count)
{
	struct fz_vm *vm = opaque;

	if (vm->nzero >= FZ_STAGE)
		return 0;
	vm->zero_first[vm->nzero] = first;
	vm->zero_count[vm->nzero++] = count;
	return 0;
}

static void apply(struct fz_vm *vm)
{
	for (int i = 0; i < vm->nstage; i++)
		memcpy(vm->mem + vm->stage_idx[i] * SR_PAGE_SIZE, vm->stage[i], SR_PAGE_SIZE);
	for (int i = 0; i < vm->nzero; i++)
		for (uint64_t p = vm->zero_first[i];
		     p < FZ_PAGES && p - vm->zero_first[i] < vm->zero_count[i]; p++)
			memset(vm->mem + p * SR_PAGE_SIZE, 0, SR_PAGE_SIZE);
	vm->nstage = vm->nzero = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fz_vm vm; /* large; per-process scratch, not library state */
	struct sr_ctx *ctx;
	struct sr_header h;
	struct sr_record rec;
	struct sr_in in;
	int rc;

	vm.nstage = vm.nzero = 0;
	sr_in_mem(&in, data, size);
	if (sr_reader_new(&ctx, &in))
		return 0;
	rc = sr_read_header(ctx, &h);
	for (int n = 0; !rc && n < 100000; n++) {
		rc = sr_read_record(ctx, &rec);
		if (rc)
			break;
		switch (rec.type) {
		case SR_REC_PAGE_DATA:
			rc = sr_decode_pages(ctx, &rec, stage_page, &vm);
			break;
		case SR_REC_ZERO_PAGES:
			rc = sr_decode_zero_pages(ctx, &rec, stage_zero, &vm);
			break;
		case SR_REC_VCPU_STATE:
			if (rec.vcpu.blob_len && rec.vcpu.blob[rec.vcpu.blob_len - 1] == 0xfe)
				vm.mem[0] ^= 1; /* touch the blob's bounds */
			break;
		case SR_REC_DEVICE_STATE:
			if (strlen(rec.dev.name) >= SR_DEV_NAME_LEN)
				__builtin_trap();
			if (rec.dev.blob_len)
				vm.mem[1] ^= rec.dev.blob[rec.dev.blob_len - 1];
			break;
		case SR_REC_CHECKPOINT_END:
			apply(&vm);
			break;
		case SR_REC_END:
			rc = 1;
			break;
		}
	}
	if (rc <= 0 && !sr_error(ctx)[0])
		__builtin_trap(); /* every failure must say why */
	sr_ctx_free(ctx);
	return 0;
}
