/* kvm_state.c — capture/restore KVM vCPU and VM state: ioctls and validation. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/kvm.h>

#include "common/errf.h"
#include "hv/kvm/kvm_state.h"
#include "hv/kvm/kvm_state_blob.h"

#define MSR_IA32_TSC 0x10
#define MSR_IA32_TSC_DEADLINE 0x6e0
#define MSR_INDEX_LIST_MAX 4096

/* MSRs worth carrying to a resumed guest, in the order they are written back. Only those KVM lists
 * in KVM_GET_MSR_INDEX_LIST are kept. EFER/FS/GS base travel in sregs; feature MSRs (ARCH_CAPABILITIES,
 * PERF_CAPABILITIES, PLATFORM_INFO, UCODE_REV...) are VMM configuration, like CPUID, not state. */
static const uint32_t msr_allow[] = {
	0x174,
	0x175,
	0x176, /* SYSENTER_CS/ESP/EIP */
	0xc0000081,
	0xc0000082,
	0xc0000083, /* STAR, LSTAR, CSTAR */
	0xc0000084,
	0xc0000102,
	0xc0000103, /* SYSCALL_MASK, KERNEL_GS_BASE, TSC_AUX */
	0x277,
	0x1a0,
	0x140, /* PAT, MISC_ENABLE, MISC_FEATURES_ENABLES */
	0x48,
	0xc001011f,
	0x122,
	0xe1,
	0xda0, /* SPEC_CTRL, VIRT_SPEC_CTRL, TSX_CTRL, UMWAIT, XSS */
	0xd90,
	0x3a,
	0x34, /* BNDCFGS, FEATURE_CONTROL, SMI_COUNT */
	0x17a,
	0x17b, /* MCG_STATUS, MCG_CTL */
	0x2ff,
	0x250,
	0x258,
	0x259, /* MTRR def type, fixed */
	0x268,
	0x269,
	0x26a,
	0x26b,
	0x26c,
	0x26d,
	0x26e,
	0x26f,
	0x200,
	0x201,
	0x202,
	0x203,
	0x204,
	0x205,
	0x206,
	0x207, /* MTRR variable */
	0x208,
	0x209,
	0x20a,
	0x20b,
	0x20c,
	0x20d,
	0x20e,
	0x20f,
	0x3b,
	MSR_IA32_TSC, /* TSC_ADJUST, TSC */
	0x11,
	0x12, /* KVM_WALL_CLOCK, KVM_SYSTEM_TIME (old) */
	0x4b564d00,
	0x4b564d01, /* WALL_CLOCK_NEW, SYSTEM_TIME_NEW */
	0x4b564d06,
	0x4b564d02, /* ASYNC_PF_INT before ASYNC_PF_EN */
	0x4b564d03,
	0x4b564d04,
	0x4b564d05, /* STEAL_TIME, PV_EOI_EN, POLL_CONTROL */
	MSR_IA32_TSC_DEADLINE, /* written after the LAPIC */
};

static int check_ext(int kvm_fd, int vm_fd, long cap)
{
	int r = ioctl(vm_fd, KVM_CHECK_EXTENSION, cap);

	if (r < 0)
		r = ioctl(kvm_fd, KVM_CHECK_EXTENSION, cap);
	return r < 0 ? 0 : r;
}

int kvm_state_ctx_init(struct kvm_state_ctx *c, int kvm_fd, int vm_fd, char *err, size_t errlen)
{
	struct kvm_msr_list probe = {.nmsrs = 0}, *list;
	uint32_t n, i, j;
	int x2;

	if (!c)
		return errf(err, errlen, -EINVAL, "kvm_state: NULL ctx");
	memset(c, 0, sizeof(*c));
	if (kvm_fd < 0 || vm_fd < 0)
		return errf(err, errlen, -EBADF, "kvm_state: bad kvm/vm fd (%d, %d)", kvm_fd, vm_fd);
	if (ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
		return errf(err, errlen, -errno, "kvm_state: KVM_GET_MSR_INDEX_LIST: %s", strerror(errno));
	n = probe.nmsrs;
	if (n > MSR_INDEX_LIST_MAX)
		return errf(err, errlen, -EOVERFLOW, "kvm_state: KVM lists %u MSRs (> %u)", n,
			    MSR_INDEX_LIST_MAX);
	list = calloc(1, sizeof(*list) + (size_t)n * sizeof(list->indices[0]));
	if (!list)
		return errf(err, errlen, -ENOMEM, "kvm_state: out of memory");
	list->nmsrs = n;
	if (n && ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, list) < 0) {
		int rc = -errno;

		free(list);
		return errf(err, errlen, rc, "kvm_state: KVM_GET_MSR_INDEX_LIST: %s", strerror(-rc));
	}
	for (i = 0; i < sizeof(msr_allow) / sizeof(msr_allow[0]); i++) {
		for (j = 0; j < list->nmsrs && j < n; j++) {
			if (list->indices[j] == msr_allow[i])
				break;
		}
		if (j < list->nmsrs && j < n && c->nr_msrs < KVM_STATE_MAX_MSRS)
			c->msrs[c->nr_msrs++] = msr_allow[i];
	}
	free(list);

	x2 = check_ext(kvm_fd, vm_fd, KVM_CAP_XSAVE2);
	if (x2 > 0) {
		c->xsave2 = true;
		c->xsave_size =
			(uint32_t)x2 < sizeof(struct kvm_xsave) ? sizeof(struct kvm_xsave) : (uint32_t)x2;
	} else if (check_ext(kvm_fd, vm_fd, KVM_CAP_XSAVE) > 0) {
		c->xsave_size = sizeof(struct kvm_xsave);
	}
	if (c->xsave_size > (1u << 20))
		return errf(err, errlen, -EOVERFLOW, "kvm_state: XSAVE size %u too large", c->xsave_size);
	c->xcrs = check_ext(kvm_fd, vm_fd, KVM_CAP_XCRS) > 0;
	c->sregs2 = check_ext(kvm_fd, vm_fd, KVM_CAP_SREGS2) > 0;
	c->events = check_ext(kvm_fd, vm_fd, KVM_CAP_VCPU_EVENTS) > 0;
	c->debugregs = check_ext(kvm_fd, vm_fd, KVM_CAP_DEBUGREGS) > 0;
	c->mp_state = check_ext(kvm_fd, vm_fd, KVM_CAP_MP_STATE) > 0;
	c->clock = check_ext(kvm_fd, vm_fd, KVM_CAP_ADJUST_CLOCK) > 0;
	c->pit2 = check_ext(kvm_fd, vm_fd, KVM_CAP_PIT_STATE2) > 0;
	return 0;
}

/* ---- vCPU -------------------------------------------------------------------------------------- */

size_t kvm_vcpu_state_max(const struct kvm_state_ctx *c)
{
	size_t n = KVM_STATE_HDR_SIZE;

	n += KST_SEC_HDR + KST_PAD8(sizeof(struct kvm_regs));
	n += KST_SEC_HDR + KST_PAD8(sizeof(struct kvm_sregs));
	n += KST_SEC_HDR + KST_PAD8(sizeof(struct kvm_sregs2));
	n += KST_SEC_HDR + KST_PAD8(c && c->xsave_size ? c->xsave_size : sizeof(struct kvm_fpu));
	n += KST_SEC_HDR + KST_PAD8(sizeof(struct kvm_xcrs));
	n += KST_SEC_HDR + 8 + KVM_STATE_MAX_MSRS * sizeof(struct kvm_msr_entry);
	n += KST_SEC_HDR + KST_PAD8(sizeof(struct kvm_lapic_state));
	n += KST_SEC_HDR + KST_PAD8(sizeof(struct kvm_vcpu_events));
	n += KST_SEC_HDR + KST_PAD8(sizeof(struct kvm_debugregs));
	n += KST_SEC_HDR + KST_PAD8(sizeof(struct kvm_mp_state));
	n += KST_SEC_HDR + 8;
	return n;
}

struct msr_buf {
	uint64_t raw[(sizeof(struct kvm_msrs) + KVM_STATE_MAX_MSRS * sizeof(struct kvm_msr_entry)) / 8 + 1];
};

/* Read ctx's MSRs; those KVM refuses (feature not in this vCPU's CPUID) are skipped. */
static int get_msrs(const struct kvm_state_ctx *c, int fd, struct kvm_msr_entry *out, uint32_t *nout)
{
	struct msr_buf mb;
	struct kvm_msrs *m = (struct kvm_msrs *)mb.raw;
	uint32_t i = 0, n = 0, k, cnt;
	int r;

	while (i < c->nr_msrs && i < KVM_STATE_MAX_MSRS) {
		cnt = c->nr_msrs - i;
		memset(&mb, 0, sizeof(mb));
		m->nmsrs = cnt;
		for (k = 0; k < cnt; k++)
			m->entries[k].index = c->msrs[i + k];
		r = ioctl(fd, KVM_GET_MSRS, m);
		if (r < 0)
			return -errno;
		if ((uint32_t)r > cnt)
			return -EIO;
		memcpy(out + n, m->entries, (size_t)r * sizeof(*out));
		n += r;
		i += r;
		if ((uint32_t)r < cnt)
			i++; /* entry i was refused */
	}
	*nout = n;
	return 0;
}

#define GET_OR_FAIL(fd, req, ptr, what)                                                                      \
	do {                                                                                                 \
		if (ioctl((fd), (req), (ptr)) < 0) {                                                         \
			rc = -errno;                                                                         \
			return errf(err, errlen, rc, "kvm_state: %s: %s", (what), strerror(-rc));            \
		}                                                                                            \
	} while (0)

int kvm_vcpu_save(const struct kvm_state_ctx *c, int fd, void *buf, size_t len, size_t *used, char *err,
		  size_t errlen)
{
	struct kvm_msr_entry msrs[KVM_STATE_MAX_MSRS];
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_sregs2 sregs2;
	struct kvm_fpu fpu;
	struct kvm_xcrs xcrs;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events ev;
	struct kvm_debugregs dbg;
	struct kvm_mp_state mp;
	uint32_t nmsr = 0, hdr[2];
	struct kst_wr w;
	void *x;
	int rc, khz;

	if (!c)
		return errf(err, errlen, -EINVAL, "kvm_state: NULL ctx");
	rc = kst_wr_init(&w, buf, len, err, errlen);
	if (rc)
		return rc;
#define PUT(tag, obj)                                                                                        \
	do {                                                                                                 \
		rc = kst_sec_put(&w, (tag), &(obj), sizeof(obj), err, errlen);                               \
		if (rc)                                                                                      \
			return rc;                                                                           \
	} while (0)

	memset(&regs, 0, sizeof(regs));
	GET_OR_FAIL(fd, KVM_GET_REGS, &regs, "KVM_GET_REGS");
	PUT(KST_REGS, regs);
	memset(&sregs, 0, sizeof(sregs));
	GET_OR_FAIL(fd, KVM_GET_SREGS, &sregs, "KVM_GET_SREGS");
	PUT(KST_SREGS, sregs);
	if (c->sregs2) {
		memset(&sregs2, 0, sizeof(sregs2));
		GET_OR_FAIL(fd, KVM_GET_SREGS2, &sregs2, "KVM_GET_SREGS2");
		PUT(KST_SREGS2, sregs2);
	}
	if (c->xsave_size) {
		x = kst_sec_reserve(&w, KST_XSAVE, c->xsave_size);
		if (!x)
			return errf(err, errlen, -ENOSPC, "kvm_state: buffer of %zu bytes too small", len);
		if (c->xsave2)
			GET_OR_FAIL(fd, KVM_GET_XSAVE2, x, "KVM_GET_XSAVE2");
		else
			GET_OR_FAIL(fd, KVM_GET_XSAVE, x, "KVM_GET_XSAVE");
	} else {
		memset(&fpu, 0, sizeof(fpu));
		GET_OR_FAIL(fd, KVM_GET_FPU, &fpu, "KVM_GET_FPU");
		PUT(KST_FPU, fpu);
	}
	if (c->xcrs) {
		memset(&xcrs, 0, sizeof(xcrs));
		GET_OR_FAIL(fd, KVM_GET_XCRS, &xcrs, "KVM_GET_XCRS");
		PUT(KST_XCRS, xcrs);
	}
	rc = get_msrs(c, fd, msrs, &nmsr);
	if (rc)
		return errf(err, errlen, rc, "kvm_state: KVM_GET_MSRS: %s", strerror(-rc));
	x = kst_sec_reserve(&w, KST_MSRS, 8 + nmsr * sizeof(msrs[0]));
	if (!x)
		return errf(err, errlen, -ENOSPC, "kvm_state: buffer of %zu bytes too small", len);
	hdr[0] = nmsr;
	hdr[1] = 0;
	memcpy(x, hdr, 8);
	memcpy((uint8_t *)x + 8, msrs, nmsr * sizeof(msrs[0]));

	memset(&lapic, 0, sizeof(lapic));
	if (ioctl(fd, KVM_GET_LAPIC, &lapic) == 0)
		PUT(KST_LAPIC, lapic);
	else if (errno != ENXIO && errno != EINVAL) /* no in-kernel LAPIC: EINVAL (x86), ENXIO */
		return errf(err, errlen, -errno, "kvm_state: KVM_GET_LAPIC: %s", strerror(errno));
	if (c->events) {
		memset(&ev, 0, sizeof(ev));
		GET_OR_FAIL(fd, KVM_GET_VCPU_EVENTS, &ev, "KVM_GET_VCPU_EVENTS");
		PUT(KST_EVENTS, ev);
	}
	if (c->debugregs) {
		memset(&dbg, 0, sizeof(dbg));
		GET_OR_FAIL(fd, KVM_GET_DEBUGREGS, &dbg, "KVM_GET_DEBUGREGS");
		PUT(KST_DEBUGREGS, dbg);
	}
	if (c->mp_state) {
		memset(&mp, 0, sizeof(mp));
		GET_OR_FAIL(fd, KVM_GET_MP_STATE, &mp, "KVM_GET_MP_STATE");
		PUT(KST_MP_STATE, mp);
	}
	khz = ioctl(fd, KVM_GET_TSC_KHZ, 0);
	if (khz > 0) { /* informational; optional */
		hdr[0] = (uint32_t)khz;
		hdr[1] = 0;
		rc = kst_sec_put(&w, KST_TSC_KHZ, hdr, 8, err, errlen);
		if (rc)
			return rc;
	}
	kst_wr_finish(&w, KVM_STATE_VCPU_MAGIC, used);
	return 0;
}

static bool ctx_has_msr(const struct kvm_state_ctx *c, uint32_t idx)
{
	uint32_t i;

	for (i = 0; i < c->nr_msrs && i < KVM_STATE_MAX_MSRS; i++) {
		if (c->msrs[i] == idx)
			return true;
	}
	return false;
}

/* Validate everything before touching the vCPU. */
static int vcpu_validate(const struct kvm_state_ctx *c, const struct kst_sec *s, char *err, size_t errlen)
{
	struct kvm_msr_entry e;
	uint32_t hdr[2], i;
	int rc = 0;

	if (!s[KST_REGS].d || !s[KST_SREGS].d || !s[KST_MSRS].d)
		return errf(err, errlen, -EINVAL, "kvm_state: vCPU blob lacks a mandatory section (%s)",
			    !s[KST_REGS].d    ? "regs"
			    : !s[KST_SREGS].d ? "sregs"
					      : "msrs");
	if (!s[KST_XSAVE].d && !s[KST_FPU].d)
		return errf(err, errlen, -EINVAL, "kvm_state: vCPU blob has neither XSAVE nor FPU");
	rc = rc ?: kst_want_len(&s[KST_REGS], "regs", sizeof(struct kvm_regs), err, errlen);
	rc = rc ?: kst_want_len(&s[KST_SREGS], "sregs", sizeof(struct kvm_sregs), err, errlen);
	rc = rc ?: kst_want_len(&s[KST_SREGS2], "sregs2", sizeof(struct kvm_sregs2), err, errlen);
	rc = rc ?: kst_want_len(&s[KST_FPU], "fpu", sizeof(struct kvm_fpu), err, errlen);
	rc = rc ?: kst_want_len(&s[KST_XCRS], "xcrs", sizeof(struct kvm_xcrs), err, errlen);
	rc = rc ?: kst_want_len(&s[KST_LAPIC], "lapic", sizeof(struct kvm_lapic_state), err, errlen);
	rc = rc ?: kst_want_len(&s[KST_EVENTS], "vcpu events", sizeof(struct kvm_vcpu_events), err, errlen);
	rc = rc ?: kst_want_len(&s[KST_DEBUGREGS], "debugregs", sizeof(struct kvm_debugregs), err, errlen);
	rc = rc ?: kst_want_len(&s[KST_MP_STATE], "mp state", sizeof(struct kvm_mp_state), err, errlen);
	if (rc)
		return rc;
	if (s[KST_XSAVE].d) {
		if (!c->xsave_size)
			return errf(err, errlen, -EOPNOTSUPP, "kvm_state: blob has XSAVE, KVM lacks it");
		if (s[KST_XSAVE].len < sizeof(struct kvm_xsave) || s[KST_XSAVE].len > c->xsave_size)
			return errf(err, errlen, -EINVAL,
				    "kvm_state: XSAVE section is %u bytes, want %zu..%u", s[KST_XSAVE].len,
				    sizeof(struct kvm_xsave), c->xsave_size);
	}
	if ((s[KST_XCRS].d && !c->xcrs) || (s[KST_EVENTS].d && !c->events) ||
	    (s[KST_DEBUGREGS].d && !c->debugregs) || (s[KST_MP_STATE].d && !c->mp_state))
		return errf(err, errlen, -EOPNOTSUPP,
			    "kvm_state: blob has xcrs/events/debugregs/mp state this KVM lacks");
	if (s[KST_MSRS].len < 8)
		return errf(err, errlen, -EINVAL, "kvm_state: MSR section is %u bytes", s[KST_MSRS].len);
	memcpy(hdr, s[KST_MSRS].d, 8);
	if (hdr[0] > KVM_STATE_MAX_MSRS || hdr[1] != 0 || s[KST_MSRS].len != 8 + (size_t)hdr[0] * sizeof(e))
		return errf(err, errlen, -EINVAL, "kvm_state: bad MSR section (count %u, %u bytes)", hdr[0],
			    s[KST_MSRS].len);
	for (i = 0; i < hdr[0]; i++) {
		memcpy(&e, s[KST_MSRS].d + 8 + i * sizeof(e), sizeof(e));
		if (!ctx_has_msr(c, e.index))
			return errf(err, errlen, -EINVAL, "kvm_state: MSR 0x%x is not restorable here",
				    e.index);
	}
	return 0;
}

/* True when the vCPU already holds idx = val, or refuses to read idx and val is 0 (reset value):
 * then a refused write of it loses nothing (e.g. ASYNC_PF_INT = 0 without an in-kernel LAPIC). */
static bool msr_harmless(int fd, uint32_t idx, uint64_t val)
{
	uint64_t raw[(sizeof(struct kvm_msrs) + sizeof(struct kvm_msr_entry)) / 8 + 1];
	struct kvm_msrs *m = (struct kvm_msrs *)raw;
	int r;

	memset(raw, 0, sizeof(raw));
	m->nmsrs = 1;
	m->entries[0].index = idx;
	r = ioctl(fd, KVM_GET_MSRS, m);
	return r == 1 ? m->entries[0].data == val : r == 0 && val == 0;
}

/* Write the blob's MSRs: deadline == false -> all but TSC_DEADLINE, true -> only TSC_DEADLINE. */
static int put_msrs(int fd, const struct kst_sec *ms, bool deadline, char *err, size_t errlen)
{
	struct kvm_msr_entry ent[KVM_STATE_MAX_MSRS], e;
	struct msr_buf mb;
	struct kvm_msrs *m = (struct kvm_msrs *)mb.raw;
	uint32_t nr, i, n = 0;
	int r;

	memcpy(&nr, ms->d, 4); /* validated: nr <= KVM_STATE_MAX_MSRS */
	for (i = 0; i < nr && i < KVM_STATE_MAX_MSRS; i++) {
		memcpy(&e, ms->d + 8 + i * sizeof(e), sizeof(e));
		if ((e.index == MSR_IA32_TSC_DEADLINE) == deadline)
			ent[n++] = e;
	}
	i = 0;
	while (i < n) {
		memset(&mb, 0, sizeof(mb));
		m->nmsrs = n - i;
		memcpy(m->entries, ent + i, (size_t)(n - i) * sizeof(e));
		r = ioctl(fd, KVM_SET_MSRS, m);
		if (r < 0)
			return errf(err, errlen, -errno, "kvm_state: KVM_SET_MSRS: %s", strerror(errno));
		if ((uint32_t)r >= n - i)
			break;
		e = ent[i + r];
		if (!msr_harmless(fd, e.index, e.data))
			return errf(err, errlen, -EIO, "kvm_state: KVM refused MSR 0x%x = 0x%llx", e.index,
				    (unsigned long long)e.data);
		i += r + 1; /* skip the harmless refused entry */
	}
	return 0;
}

#define SET_OR_FAIL(fd, req, ptr, what)                                                                      \
	do {                                                                                                 \
		if (ioctl((fd), (req), (ptr)) < 0) {                                                         \
			rc = -errno;                                                                         \
			goto out;                                                                            \
		}                                                                                            \
	} while (0)

int kvm_vcpu_restore(const struct kvm_state_ctx *c, int fd, const void *buf, size_t len, char *err,
		     size_t errlen)
{
	struct kst_sec s[KST_NSLOT];
	const char *what = "";
	void *xs = NULL;
	int rc;

	if (!c)
		return errf(err, errlen, -EINVAL, "kvm_state: NULL ctx");
	rc = kst_parse(buf, len, KVM_STATE_VCPU_MAGIC, kst_vcpu_slot, s, err, errlen);
	if (rc)
		return rc;
	rc = vcpu_validate(c, s, err, errlen);
	if (rc)
		return rc;
	/* Kernel ioctls copy from user memory, so the (possibly unaligned) blob is passed directly. */
	what = "KVM_SET_REGS";
	SET_OR_FAIL(fd, KVM_SET_REGS, s[KST_REGS].d, what);
	if (s[KST_XSAVE].d) {
		xs = calloc(1, c->xsave_size);
		if (!xs) {
			rc = -ENOMEM;
			what = "XSAVE buffer";
			goto out;
		}
		memcpy(xs, s[KST_XSAVE].d, s[KST_XSAVE].len);
		what = "KVM_SET_XSAVE";
		SET_OR_FAIL(fd, KVM_SET_XSAVE, xs, what);
	} else {
		what = "KVM_SET_FPU";
		SET_OR_FAIL(fd, KVM_SET_FPU, s[KST_FPU].d, what);
	}
	if (s[KST_XCRS].d) {
		what = "KVM_SET_XCRS";
		SET_OR_FAIL(fd, KVM_SET_XCRS, s[KST_XCRS].d, what);
	}
	if (s[KST_SREGS2].d && c->sregs2) {
		what = "KVM_SET_SREGS2";
		SET_OR_FAIL(fd, KVM_SET_SREGS2, s[KST_SREGS2].d, what);
	} else {
		what = "KVM_SET_SREGS";
		SET_OR_FAIL(fd, KVM_SET_SREGS, s[KST_SREGS].d, what);
	}
	rc = put_msrs(fd, &s[KST_MSRS], false, err, errlen);
	if (rc)
		goto out_msg;
	if (s[KST_EVENTS].d) {
		what = "KVM_SET_VCPU_EVENTS";
		SET_OR_FAIL(fd, KVM_SET_VCPU_EVENTS, s[KST_EVENTS].d, what);
	}
	if (s[KST_MP_STATE].d) {
		what = "KVM_SET_MP_STATE";
		SET_OR_FAIL(fd, KVM_SET_MP_STATE, s[KST_MP_STATE].d, what);
	}
	if (s[KST_LAPIC].d) {
		what = "KVM_SET_LAPIC";
		SET_OR_FAIL(fd, KVM_SET_LAPIC, s[KST_LAPIC].d, what);
	}
	rc = put_msrs(fd, &s[KST_MSRS], true, err, errlen);
	if (rc)
		goto out_msg;
	if (s[KST_DEBUGREGS].d) {
		what = "KVM_SET_DEBUGREGS";
		SET_OR_FAIL(fd, KVM_SET_DEBUGREGS, s[KST_DEBUGREGS].d, what);
	}
	rc = 0;
out:
	if (rc)
		errf(err, errlen, rc, "kvm_state: %s: %s", what, strerror(-rc));
out_msg:
	free(xs);
	return rc;
}

/* ---- VM ---------------------------------------------------------------------------------------- */

size_t kvm_vm_state_max(void)
{
	return KVM_STATE_HDR_SIZE + 3 * (KST_SEC_HDR + KST_PAD8(sizeof(struct kvm_irqchip))) + KST_SEC_HDR +
	       KST_PAD8(sizeof(struct kvm_pit_state2)) + KST_SEC_HDR +
	       KST_PAD8(sizeof(struct kvm_clock_data));
}

int kvm_vm_save(const struct kvm_state_ctx *c, int vm_fd, void *buf, size_t len, size_t *used, char *err,
		size_t errlen)
{
	static const uint32_t chip_tag[3] = {KST_PIC_MASTER, KST_PIC_SLAVE, KST_IOAPIC};
	struct kvm_irqchip chip;
	struct kvm_pit_state2 pit;
	struct kvm_clock_data clk;
	struct kst_wr w;
	uint32_t i;
	int rc;

	if (!c)
		return errf(err, errlen, -EINVAL, "kvm_state: NULL ctx");
	rc = kst_wr_init(&w, buf, len, err, errlen);
	if (rc)
		return rc;
	for (i = 0; i < 3; i++) {
		memset(&chip, 0, sizeof(chip));
		chip.chip_id = i;
		if (ioctl(vm_fd, KVM_GET_IRQCHIP, &chip) < 0) {
			if (errno == ENXIO && i == 0)
				break; /* no in-kernel irqchip */
			return errf(err, errlen, -errno, "kvm_state: KVM_GET_IRQCHIP(%u): %s", i,
				    strerror(errno));
		}
		PUT(chip_tag[i], chip);
	}
	if (c->pit2) {
		memset(&pit, 0, sizeof(pit));
		if (ioctl(vm_fd, KVM_GET_PIT2, &pit) == 0)
			PUT(KST_PIT2, pit);
		else if (errno != ENXIO)
			return errf(err, errlen, -errno, "kvm_state: KVM_GET_PIT2: %s", strerror(errno));
	}
	if (c->clock) {
		memset(&clk, 0, sizeof(clk));
		GET_OR_FAIL(vm_fd, KVM_GET_CLOCK, &clk, "KVM_GET_CLOCK");
		PUT(KST_CLOCK, clk);
	}
	kst_wr_finish(&w, KVM_STATE_VM_MAGIC, used);
	return 0;
}

int kvm_vm_restore(const struct kvm_state_ctx *c, int vm_fd, const void *buf, size_t len, char *err,
		   size_t errlen)
{
	static const uint32_t chip_tag[3] = {KST_PIC_MASTER, KST_PIC_SLAVE, KST_IOAPIC};
	struct kvm_clock_data clk, set;
	struct kvm_irqchip chip;
	struct kst_sec s[KST_NSLOT];
	const char *what = "";
	uint32_t i;
	int rc;

	if (!c)
		return errf(err, errlen, -EINVAL, "kvm_state: NULL ctx");
	rc = kst_parse(buf, len, KVM_STATE_VM_MAGIC, kst_vm_slot, s, err, errlen);
	if (rc)
		return rc;
	for (i = 0; i < 3; i++) {
		const struct kst_sec *cs = &s[kst_vm_slot(chip_tag[i])];

		rc = kst_want_len(cs, "irqchip", sizeof(chip), err, errlen);
		if (rc)
			return rc;
		if (cs->d) {
			memcpy(&chip, cs->d, sizeof(chip));
			if (chip.chip_id != i)
				return errf(err, errlen, -EINVAL,
					    "kvm_state: irqchip section 0x%x has chip %u", chip_tag[i],
					    chip.chip_id);
		}
	}
	rc = kst_want_len(&s[kst_vm_slot(KST_PIT2)], "pit2", sizeof(struct kvm_pit_state2), err, errlen);
	rc = rc ?: kst_want_len(&s[kst_vm_slot(KST_CLOCK)], "clock", sizeof(clk), err, errlen);
	if (rc)
		return rc;
	if ((s[kst_vm_slot(KST_PIT2)].d && !c->pit2) || (s[kst_vm_slot(KST_CLOCK)].d && !c->clock))
		return errf(err, errlen, -EOPNOTSUPP, "kvm_state: blob has PIT2/clock this KVM lacks");

	for (i = 0; i < 3; i++) {
		const struct kst_sec *cs = &s[kst_vm_slot(chip_tag[i])];

		if (!cs->d)
			continue;
		what = "KVM_SET_IRQCHIP";
		SET_OR_FAIL(vm_fd, KVM_SET_IRQCHIP, cs->d, what);
	}
	if (s[kst_vm_slot(KST_PIT2)].d) {
		what = "KVM_SET_PIT2";
		SET_OR_FAIL(vm_fd, KVM_SET_PIT2, s[kst_vm_slot(KST_PIT2)].d, what);
	}
	if (s[kst_vm_slot(KST_CLOCK)].d) {
		memcpy(&clk, s[kst_vm_slot(KST_CLOCK)].d, sizeof(clk));
		memset(&set, 0, sizeof(set));
		set.clock = clk.clock; /* flags 0: resume at the saved value, no realtime advance */
		what = "KVM_SET_CLOCK";
		SET_OR_FAIL(vm_fd, KVM_SET_CLOCK, &set, what);
	}
	return 0;
out:
	return errf(err, errlen, rc, "kvm_state: %s: %s%s", what, strerror(-rc),
		    rc == -ENXIO ? " (target VM lacks the in-kernel device)" : "");
}
