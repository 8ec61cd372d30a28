/* kvm_state_blob.h — the KVM state blob format (kvm_state.h): writer and validating parser. */
#ifndef DOPPEL_HV_KVM_STATE_BLOB_H
#define DOPPEL_HV_KVM_STATE_BLOB_H

#include <stddef.h>
#include <stdint.h>

#include "hv/kvm/kvm_state.h"

#define KST_PAD8(x) (((size_t)(x) + 7) & ~(size_t)7)
#define KST_SEC_HDR 8
#define KST_NSLOT 16 /* parsed sections are indexed by kst_vcpu_slot / kst_vm_slot */

/* Writer over a caller buffer: header first (written by kst_wr_finish), then sections. */
struct kst_wr {
	uint8_t *p;
	size_t len, off;
	uint32_t nsec;
};

/* -ENOSPC (err set) when the buffer cannot hold the header. */
int kst_wr_init(struct kst_wr *w, void *buf, size_t len, char *err, size_t errlen);
/* Reserve a section of dlen bytes (zeroed, padding included); NULL when it does not fit. */
void *kst_sec_reserve(struct kst_wr *w, uint32_t tag, uint32_t dlen);
/* Append a section holding data[0..dlen); -ENOSPC (err set) when it does not fit. */
int kst_sec_put(struct kst_wr *w, uint32_t tag, const void *data, uint32_t dlen, char *err, size_t errlen);
/* Write the header (magic, version, total length, section count); *used = bytes (may be NULL). */
void kst_wr_finish(struct kst_wr *w, uint32_t magic, size_t *used);

/* One parsed section: its data and length, d NULL when absent. */
struct kst_sec {
	const uint8_t *d;
	uint32_t len;
};

/* Section index of a tag (-1 when unknown). */
int kst_vcpu_slot(uint32_t tag);
int kst_vm_slot(uint32_t tag);
/* Validate buf (magic, version, lengths, tags, duplicates) and fill s[KST_NSLOT] by slot_of.
 * 0, or -EINVAL with one line in err. */
int kst_parse(const void *buf, size_t len, uint32_t want_magic, int (*slot_of)(uint32_t), struct kst_sec *s,
	      char *err, size_t errlen);
/* -EINVAL (err set) when section s is present with a length other than want. */
int kst_want_len(const struct kst_sec *s, const char *name, size_t want, char *err, size_t errlen);

#endif
