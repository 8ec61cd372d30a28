/* devices.h — a VM's device table: named devices and their ops, state view, virtio-mmio slots. */
#ifndef DOPPEL_HV_DEV_DEVICES_H
#define DOPPEL_HV_DEV_DEVICES_H

#include "hv/hv.h"

/* Embedded in struct vm (hv/kvm/vm_priv.h); hv.h's vm_dev_* and vm_mmio_slot_* functions forward
 * here. Not locked: devices are attached before vm_start, on the thread that owns the VM. */
struct dev_table {
	struct vm_devstate dev[HV_MAX_DEVS]; /* every attached device, attach order */
	int nr;
	int stateful[HV_MAX_DEVS]; /* indices into dev[] of the devices with save + restore */
	int nr_stateful;
	int nr_slots; /* virtio-mmio slots claimed */
	char cmdline[HV_MMIO_SLOTS * 64];
};

int dev_table_attach(struct dev_table *t, struct vm *vm, const char *name, const struct hv_dev_ops *ops,
		     void *dev, char *err, size_t errlen);
void *dev_table_find(const struct dev_table *t, const char *name);
void dev_table_reset_all(struct dev_table *t);
/* Call every device's resumed hook (the last pause hold was released). */
void dev_table_resumed_all(struct dev_table *t);
/* Detach every device, newest first, and empty the table (vm_destroy, vCPUs stopped). */
void dev_table_detach_all(struct dev_table *t);
int dev_table_slot_claim(struct dev_table *t, struct vm *vm, io_fn fn, void *opaque,
			 struct hv_mmio_slot *slot);

#endif
