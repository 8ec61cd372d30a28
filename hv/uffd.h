/* uffd.h — demand paging of guest RAM with userfaultfd (post-copy migration's destination side). */
#ifndef DOPPEL_HV_UFFD_H
#define DOPPEL_HV_UFFD_H

#include <stddef.h>
#include <stdint.h>

#include "hv/mem.h"

/*
 * A missing-page tracker over all guest RAM (a memfd: shmem). A RAM page that is not in the memfd's
 * page cache (a hole: never written, or discarded with mem_discard) makes any access to it — a vCPU
 * through KVM (get_user_pages), a device emulated in the VMM, KVM's own copy_to_user — wait until
 * mem_uffd_copy or mem_uffd_zero installs it. mem_uffd_next_fault reports such an access (a page
 * index) to the one thread that serves faults. Pages present are untouched. Closing unregisters the
 * range and wakes every waiter (they then see the hole as zero: only for a VM being discarded).
 * Needs CAP_SYS_PTRACE or vm.unprivileged_userfaultfd for kernel-mode faults (KVM's); we are root.
 */
struct mem_uffd;

/* Register every RAM region of gm (memfd-backed only). 0 or -errno with one line in err. */
int mem_uffd_open(struct guest_mem *gm, struct mem_uffd **out, char *err, size_t errlen);
/* Unregister, wake all waiters, close, free. NULL-safe. */
void mem_uffd_close(struct mem_uffd *u);
/* Wait up to timeout_ms for a missing-page fault: 1 with its RAM page index in *idx, 0 on timeout,
 * -errno on failure. Faults of a page already being served may be reported again. */
int mem_uffd_next_fault(struct mem_uffd *u, uint64_t *idx, int timeout_ms);
/* Install count pages starting at RAM page idx (inside one region) from src and wake the waiters.
 * Pages already present are skipped (not overwritten). 0 or -errno. */
int mem_uffd_copy(struct mem_uffd *u, uint64_t idx, const void *src, uint64_t count);
/* Install count zero pages at idx (inside one region), skipping present ones. 0 or -errno. */
int mem_uffd_zero(struct mem_uffd *u, uint64_t idx, uint64_t count);
/* Wake waiters on page idx (it was installed by another path meanwhile). */
void mem_uffd_wake(struct mem_uffd *u, uint64_t idx);

#endif
