/* kvm_state_blob.c — writer and validating parser of the KVM state blobs (tagged sections). */
#include <errno.h>
#include <string.h>

#include "common/errf.h"
#include "hv/kvm/kvm_state_blob.h"

/* ---- blob writer -------------------------------------------------------------------------------
 */

int kst_wr_init(struct kst_wr *w, void *buf, size_t len, char *err, size_t errlen)
{
	w->p = buf;
	w->len = buf ? len : 0;
	w->off = KVM_STATE_HDR_SIZE;
	w->nsec = 0;
	if (w->len < KVM_STATE_HDR_SIZE)
		return errf(err, errlen, -ENOSPC, "kvm_state: buffer of %zu bytes too small", len);
	return 0;
}

/* Reserve a section of dlen bytes (zeroed, padding included); NULL when it does not fit. */
void *kst_sec_reserve(struct kst_wr *w, uint32_t tag, uint32_t dlen)
{
	size_t need = KST_SEC_HDR + KST_PAD8(dlen);
	uint8_t *s;

	if (w->len - w->off < need)
		return NULL;
	s = w->p + w->off;
	memcpy(s, &tag, 4);
	memcpy(s + 4, &dlen, 4);
	memset(s + KST_SEC_HDR, 0, KST_PAD8(dlen));
	w->off += need;
	w->nsec++;
	return s + KST_SEC_HDR;
}

int kst_sec_put(struct kst_wr *w, uint32_t tag, const void *data, uint32_t dlen, char *err, size_t errlen)
{
	void *d = kst_sec_reserve(w, tag, dlen);

	if (!d)
		return errf(err, errlen, -ENOSPC, "kvm_state: buffer of %zu bytes too small", w->len);
	memcpy(d, data, dlen);
	return 0;
}

void kst_wr_finish(struct kst_wr *w, uint32_t magic, size_t *used)
{
	uint16_t ver = KVM_STATE_VERSION, hs = KVM_STATE_HDR_SIZE;
	uint32_t total = (uint32_t)w->off;

	memcpy(w->p, &magic, 4);
	memcpy(w->p + 4, &ver, 2);
	memcpy(w->p + 6, &hs, 2);
	memcpy(w->p + 8, &total, 4);
	memcpy(w->p + 12, &w->nsec, 4);
	if (used)
		*used = w->off;
}

/* ---- blob parser -------------------------------------------------------------------------------
 */

int kst_vcpu_slot(uint32_t tag)
{
	return (tag >= KST_REGS && tag <= KST_MP_STATE) ? (int)tag : tag == KST_TSC_KHZ ? 12 : -1;
}

int kst_vm_slot(uint32_t tag)
{
	return (tag >= KST_PIC_MASTER && tag <= KST_CLOCK) ? (int)(tag - 0x100) : -1;
}

int kst_parse(const void *buf, size_t len, uint32_t want_magic, int (*slot_of)(uint32_t), struct kst_sec *s,
	      char *err, size_t errlen)
{
	const uint8_t *p = buf;
	uint32_t magic, total, nsec, i;
	uint16_t ver, hs;
	size_t off;

	memset(s, 0, KST_NSLOT * sizeof(*s));
	if (!buf || len < KVM_STATE_HDR_SIZE)
		return errf(err, errlen, -EINVAL, "kvm_state: blob truncated (%zu bytes, header is %d)",
			    buf ? len : 0, KVM_STATE_HDR_SIZE);
	memcpy(&magic, p, 4);
	memcpy(&ver, p + 4, 2);
	memcpy(&hs, p + 6, 2);
	memcpy(&total, p + 8, 4);
	memcpy(&nsec, p + 12, 4);
	if (magic != want_magic)
		return errf(err, errlen, -EINVAL, "kvm_state: bad magic 0x%08x (want %s state)", magic,
			    want_magic == KVM_STATE_VCPU_MAGIC ? "vCPU" : "VM");
	if (ver != KVM_STATE_VERSION)
		return errf(err, errlen, -EINVAL, "kvm_state: unsupported blob version %u (want %u)", ver,
			    KVM_STATE_VERSION);
	if (hs != KVM_STATE_HDR_SIZE)
		return errf(err, errlen, -EINVAL, "kvm_state: bad header size %u", hs);
	if (total < KVM_STATE_HDR_SIZE || total > len)
		return errf(err, errlen, -EINVAL,
			    "kvm_state: blob truncated (header says %u bytes, have %zu)", total, len);
	off = KVM_STATE_HDR_SIZE;
	for (i = 0; i < nsec; i++) {
		uint32_t tag, slen;
		int k;

		if (total - off < KST_SEC_HDR)
			return errf(err, errlen, -EINVAL, "kvm_state: blob truncated at section %u of %u", i,
				    nsec);
		memcpy(&tag, p + off, 4);
		memcpy(&slen, p + off + 4, 4);
		if (KST_PAD8(slen) > total - off - KST_SEC_HDR)
			return errf(err, errlen, -EINVAL,
				    "kvm_state: section 0x%x length %u overruns the blob", tag, slen);
		k = slot_of(tag);
		if (k < 0 && !(tag & KST_OPTIONAL))
			return errf(err, errlen, -EINVAL, "kvm_state: unknown mandatory section tag 0x%x",
				    tag);
		if (k >= 0) {
			if (s[k].d)
				return errf(err, errlen, -EINVAL, "kvm_state: duplicate section 0x%x", tag);
			s[k].d = p + off + KST_SEC_HDR;
			s[k].len = slen;
		}
		off += KST_SEC_HDR + KST_PAD8(slen);
	}
	if (off != total)
		return errf(err, errlen, -EINVAL, "kvm_state: %zu bytes after the last of %u sections",
			    (size_t)total - off, nsec);
	return 0;
}

int kst_want_len(const struct kst_sec *s, const char *name, size_t want, char *err, size_t errlen)
{
	if (s->d && s->len != want)
		return errf(err, errlen, -EINVAL, "kvm_state: %s section is %u bytes, want %zu", name, s->len,
			    want);
	return 0;
}
