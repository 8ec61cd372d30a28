/* kvm_dirty.h — KVM dirty logging on a raw VM fd (hv/ internals, tests and benches only). */
#ifndef DOPPEL_HV_KVM_DIRTY_H
#define DOPPEL_HV_KVM_DIRTY_H

#include <stddef.h>

#include "hv/dirty.h"
#include "hv/mem.h"

/* dirty_log_start (hv/dirty.h) on the KVM VM vm_fd whose memory slot i is gm->r[i]. Same flags,
 * ownership rules and errors; for hv/ itself and for tests that build a bare KVM VM without
 * struct vm. Product code calls dirty_log_start. */
int kvm_dirty_log_start(struct dirty_log **out, int vm_fd, struct guest_mem *gm, unsigned flags, char *err,
			size_t errlen) __attribute__((warn_unused_result));

#endif
