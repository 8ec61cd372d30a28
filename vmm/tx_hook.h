/* tx_hook.h — the VM's output hook holder: set and cleared on the loop thread, called on vCPU threads. */
#ifndef DOPPEL_VMM_TX_HOOK_H
#define DOPPEL_VMM_TX_HOOK_H

#include <stdbool.h>
#include <stddef.h>

#include "vmm/vmm.h"

/* The hook and its opaque, published lock-free (vmm_set_tx_hook / the virtio-net TX path). A vCPU
 * loads fn, then opaque: a concurrent clear must never hand it NULL, so clearing keeps the last
 * non-NULL opaque (its owner outlives the vCPUs, see vmm_set_tx_hook in vmm/vmm.h). */
struct vmm_tx_slot {
	vmm_tx_hook fn;
	void *opaque;
};

/* Any thread (the loop in practice): fn NULL clears. */
void vmm_tx_slot_set(struct vmm_tx_slot *s, vmm_tx_hook fn, void *opaque);
/* vCPU thread: give the frame to the hook. true: the hook took it; false: no hook (send it on). */
bool vmm_tx_slot_call(struct vmm_tx_slot *s, int netidx, const void *frame, size_t len);

#endif
