/* uffd.h — demand paging of guest RAM with userfaultfd (post-copy migration's destination side). */
#ifndef DOPPEL_HV_UFFD_H
#define DOPPEL_HV_UFFD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hv/mem.h"

/*
 * A page-fault tracker over all guest RAM (a memfd: shmem), in one of two modes:
 *
 * minor (the default where the kernel has UFFD_FEATURE_MINOR_SHMEM): the guest mapping is registered
 *   MISSING|MINOR. A page whose guest PTE is gone but whose page-cache page exists (mem_uffd_zap,
 *   the cheap way to make a page fault: no page is freed) faults MINOR; a hole (never written, or
 *   mem_discard) faults MISSING. mem_uffd_copy / mem_uffd_zero write the page cache (pwritev into
 *   the memfd: no mapping is touched), then map the range into the guest mapping (UFFDIO_CONTINUE)
 *   and wake its waiters; mem_uffd_continue maps a page whose page-cache content the caller knows
 *   to be current.
 * missing (older kernels): MISSING only; copy/zero use UFFDIO_COPY / UFFDIO_ZEROPAGE, which skip
 *   present pages; mem_uffd_zap and mem_uffd_continue are not available (-EOPNOTSUPP).
 *
 * An access to a faulting page — a vCPU through KVM (get_user_pages), a device emulated in the VMM,
 * KVM's own copy_to_user — waits until the page is mapped; mem_uffd_next_fault reports it (a page
 * index) to the one thread that serves faults. Closing unregisters the range and wakes every waiter
 * (only for a VM being discarded: they then see the page cache / zero). Needs CAP_SYS_PTRACE or
 * vm.unprivileged_userfaultfd for kernel-mode faults (KVM's); we are root.
 */
struct mem_uffd;

/* Register every RAM region of gm (memfd-backed only), in minor mode if want_minor and the kernel
 * has it (mem_uffd_minor tells), else missing mode. 0 or -errno with one line in err. */
int mem_uffd_open(struct guest_mem *gm, bool want_minor, struct mem_uffd **out, char *err, size_t errlen);
/* Unregister, wake all waiters, close, free. NULL-safe. */
void mem_uffd_close(struct mem_uffd *u);
bool mem_uffd_minor(const struct mem_uffd *u);
/* Wait up to timeout_ms for a fault: 1 with its RAM page index in *idx and *minor (a MINOR fault: the
 * page-cache page exists; else MISSING: a hole), 0 on timeout, -errno on failure. Faults of a page
 * already being served may be reported again. minor may be NULL. */
int mem_uffd_next_fault(struct mem_uffd *u, uint64_t *idx, bool *minor, int timeout_ms);
/* Install count pages starting at RAM page idx (inside one region) from src and wake the waiters.
 * Missing mode: pages already present are skipped (not overwritten). Minor mode: the page cache is
 * written (the caller installs only pages nobody has mapped since they were zapped), then mapped;
 * already mapped pages stay mapped. 0 or -errno. */
int mem_uffd_copy(struct mem_uffd *u, uint64_t idx, const void *src, uint64_t count);
/* The same with zero pages. 0 or -errno. */
int mem_uffd_zero(struct mem_uffd *u, uint64_t idx, uint64_t count);
/* Minor mode: map page idx from the page cache as it is (its content is current) and wake its
 * waiters. 0, or -EOPNOTSUPP in missing mode, or -errno. */
int mem_uffd_continue(struct mem_uffd *u, uint64_t idx);
/* Minor mode: unmap RAM pages [first, first + count) (clipped to RAM) from the guest mapping only
 * (MADV_DONTNEED: the page cache keeps them), so that their next access faults MINOR. 0, -EOPNOTSUPP
 * in missing mode, or -errno. */
int mem_uffd_zap(struct mem_uffd *u, uint64_t first, uint64_t count);
/* Wake waiters on page idx (it was installed by another path meanwhile). */
void mem_uffd_wake(struct mem_uffd *u, uint64_t idx);

#endif
