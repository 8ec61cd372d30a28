/* kvm_state.h — capture/restore KVM vCPU and VM (irqchip, PIT, kvmclock) state as versioned blobs. */
#ifndef DOPPEL_HV_KVM_STATE_H
#define DOPPEL_HV_KVM_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Works on raw KVM fds (no struct vm): hv/kvm/vm.c wraps it as vm_vcpu_save/restore and
 * vm_platform_save/restore (hv/hv.h), the only way code outside hv/ reaches it; tests use it directly.
 * Thread safety: the ctx is read-only after kvm_state_ctx_init, so any number of threads may share it.
 * A vCPU must not be inside KVM_RUN while it is saved or restored (pause it first).
 *
 * IMPORTANT for the caller: after a KVM_EXIT_IO / KVM_EXIT_MMIO (and a few others) the exiting
 * instruction is completed only by the NEXT KVM_RUN (api.rst, "KVM_RUN"). Before saving a vCPU that
 * last exited that way, re-enter KVM_RUN once with run->immediate_exit = 1 (it returns -EINTR after
 * completing the operation, without running guest code); otherwise the restored copy re-executes it.
 *
 * Blob format (both kinds; little endian, host layout of the KVM structs, so same-arch only):
 *   header  { u32 magic; u16 version; u16 hdr_size (16); u32 total_len (incl. header); u32 nr_sections }
 *   section { u32 tag; u32 len; u8 data[len]; zero pad to a multiple of 8 }   x nr_sections
 * Tags with bit 31 (KST_OPTIONAL) set may be skipped by a reader that does not know them; an unknown
 * tag without it is an error. Each tag appears at most once.
 *
 * vCPU sections (magic "DKVC"):
 *   REGS (struct kvm_regs)              mandatory
 *   SREGS (struct kvm_sregs)            mandatory
 *   SREGS2 (struct kvm_sregs2)          if KVM_CAP_SREGS2; used instead of SREGS on restore when the
 *                                       target has the cap (carries the PAE PDPTRs)
 *   XSAVE (KVM_GET_XSAVE2/XSAVE area)   if KVM_CAP_XSAVE, else FPU (struct kvm_fpu)
 *   XCRS (struct kvm_xcrs)              if KVM_CAP_XCRS
 *   MSRS { u32 nr; u32 0; struct kvm_msr_entry e[nr] }   mandatory; indices from ctx->msrs. MSRs the
 *                                       vCPU refuses to read (feature absent from its CPUID) are left
 *                                       out. Includes MSR_IA32_TSC: restore writes the saved TSC back, so
 *                                       the guest TSC continues from the saved value (guest time does not
 *                                       jump backwards nor forwards by the downtime; as QEMU does).
 *   LAPIC (struct kvm_lapic_state)      when the vCPU has an in-kernel LAPIC (KVM_GET_LAPIC fails
 *                                       with EINVAL/ENXIO otherwise: section left out)
 *   EVENTS (struct kvm_vcpu_events)     if KVM_CAP_VCPU_EVENTS
 *   DEBUGREGS (struct kvm_debugregs)    if KVM_CAP_DEBUGREGS
 *   MP_STATE (struct kvm_mp_state)      if KVM_CAP_MP_STATE
 *   TSC_KHZ { u32 khz; u32 0 }          optional, informational only (not applied on restore)
 * Restore order (QEMU kvm_arch_put_registers + api.rst): regs, xsave/fpu, xcrs, sregs(2) (sets
 * APIC base, which KVM_SET_LAPIC needs first), msrs except TSC_DEADLINE, vcpu events, mp state,
 * lapic, TSC_DEADLINE (KVM drops it unless the LAPIC timer is already in TSC-deadline mode), debugregs.
 *
 * VM sections (magic "DKVM"): PIC_MASTER, PIC_SLAVE, IOAPIC (struct kvm_irqchip each) when the VM
 * has an in-kernel irqchip; PIT2 (struct kvm_pit_state2) when it has an in-kernel PIT; CLOCK
 * (struct kvm_clock_data) if KVM_CAP_ADJUST_CLOCK. Absence is detected by the GET ioctl failing with
 * ENXIO; any other error fails the save. CLOCK is restored with KVM_SET_CLOCK, flags = 0: kvmclock
 * resumes at the saved value (consistent with the TSC choice; no KVM_CLOCK_REALTIME advance).
 * Call kvm_vm_restore after every kvm_vcpu_restore of the VM, just before resuming it, so the
 * clock restarts as late as possible. On the round trip the PIT count_load_time and the clock/TSC
 * values move with time: they are restored, not frozen.
 */

#define KVM_STATE_VERSION 1
#define KVM_STATE_MAX_MSRS 64
#define KVM_STATE_VCPU_MAGIC 0x43564b44u /* "DKVC" */
#define KVM_STATE_VM_MAGIC 0x4d564b44u /* "DKVM" */
#define KVM_STATE_HDR_SIZE 16

#define KST_OPTIONAL 0x80000000u
enum kvm_state_tag {
	KST_REGS = 1,
	KST_SREGS = 2,
	KST_SREGS2 = 3,
	KST_XSAVE = 4,
	KST_FPU = 5,
	KST_XCRS = 6,
	KST_MSRS = 7,
	KST_LAPIC = 8,
	KST_EVENTS = 9,
	KST_DEBUGREGS = 10,
	KST_MP_STATE = 11,
	KST_TSC_KHZ = 12 | KST_OPTIONAL,
	KST_PIC_MASTER = 0x101,
	KST_PIC_SLAVE = 0x102,
	KST_IOAPIC = 0x103,
	KST_PIT2 = 0x104,
	KST_CLOCK = 0x105,
};

struct kvm_state_ctx {
	uint32_t msrs[KVM_STATE_MAX_MSRS]; /* MSRs to save, in restore order */
	uint32_t nr_msrs;
	uint32_t xsave_size; /* bytes of the XSAVE area; 0 = no XSAVE, use KVM_GET_FPU */
	bool xsave2; /* KVM_GET_XSAVE2 available */
	bool xcrs, sregs2, events, debugregs, mp_state, clock, pit2;
};

/* Fill c: capabilities of kvm_fd (/dev/kvm) and vm_fd, and the MSR list = KVM_GET_MSR_INDEX_LIST
 * filtered by an allow-list of MSRs that matter for a resumed guest (syscall/sysenter, PAT, TSC,
 * TSC_ADJUST, TSC_DEADLINE, MISC_ENABLE, MTRRs, kvmclock/async-PF/steal-time/PV-EOI/poll MSRs,
 * SPEC_CTRL, ...). The XSAVE size is a per-VM property (KVM_CAP_XSAVE2 on vm_fd): use one ctx per
 * VM, or per process when all VMs are configured alike. Save and restore sides need compatible
 * ctxs (a restored MSR must be in the restoring ctx's list).
 * Returns 0, or -errno with a one-line reason in err. */
int kvm_state_ctx_init(struct kvm_state_ctx *c, int kvm_fd, int vm_fd, char *err, size_t errlen);

/* Upper bound of a vCPU blob's size for this ctx (a buffer this large never gets -ENOSPC). */
size_t kvm_vcpu_state_max(const struct kvm_state_ctx *c);
/* Upper bound of a VM blob's size. */
size_t kvm_vm_state_max(void);

/* Save the state of a stopped (not in KVM_RUN) vCPU into buf[0..len). On success *used = bytes
 * written. Returns 0, -ENOSPC when len is too small, or -errno of a failed ioctl (err says which).
 * An essential ioctl failing (regs, sregs, msrs, lapic other than ENXIO, ...) fails the save. */
int kvm_vcpu_save(const struct kvm_state_ctx *c, int vcpu_fd, void *buf, size_t len, size_t *used, char *err,
		  size_t errlen);

/* Validate the whole blob (magic, version, lengths, tags, MSR count and indices), then apply it to
 * vcpu_fd in the order above. Returns 0, -EINVAL for a malformed blob (vCPU untouched), -EOPNOTSUPP
 * when the blob needs a capability this ctx lacks, -EIO when KVM refuses an MSR value, or -errno of
 * a failed ioctl (the vCPU may then be partly restored). A refused MSR write is tolerated only when
 * it loses nothing: the vCPU already holds that value, or cannot read the MSR and the value is 0
 * (e.g. ASYNC_PF_INT without an in-kernel LAPIC). len may exceed the blob (trailing bytes ignored). */
int kvm_vcpu_restore(const struct kvm_state_ctx *c, int vcpu_fd, const void *buf, size_t len, char *err,
		     size_t errlen);

/* Same for the VM-wide state of vm_fd. Restoring irqchip/PIT sections into a VM that lacks them
 * fails with -ENXIO. */
int kvm_vm_save(const struct kvm_state_ctx *c, int vm_fd, void *buf, size_t len, size_t *used, char *err,
		size_t errlen);
int kvm_vm_restore(const struct kvm_state_ctx *c, int vm_fd, const void *buf, size_t len, char *err,
		   size_t errlen);

#endif
