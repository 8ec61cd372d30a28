/* tx_hook.c — the VM's output hook holder (lock-free set/clear against vCPUs calling it). */
#include "vmm/tx_hook.h"

void vmm_tx_slot_set(struct vmm_tx_slot *s, vmm_tx_hook fn, void *opaque)
{
	/* A vCPU may have loaded the old hook and not yet its opaque: clearing keeps the opaque (the
	 * hook's owner outlives the vCPUs), so such a late call gets a valid one, never NULL. */
	if (fn)
		__atomic_store_n(&s->opaque, opaque, __ATOMIC_RELEASE);
	__atomic_store_n(&s->fn, fn, __ATOMIC_RELEASE);
}

bool vmm_tx_slot_call(struct vmm_tx_slot *s, int netidx, const void *frame, size_t len)
{
	vmm_tx_hook fn = __atomic_load_n(&s->fn, __ATOMIC_ACQUIRE);

	if (!fn)
		return false;
	fn(__atomic_load_n(&s->opaque, __ATOMIC_ACQUIRE), netidx, frame, len);
	return true;
}
