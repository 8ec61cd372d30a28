/* devices.c — a VM's device table: attach through hv_dev_ops, state view, MMIO slot allocator. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/errf.h"
#include "hv/dev/devices.h"

int dev_table_attach(struct dev_table *t, struct vm *vm, const char *name, const struct hv_dev_ops *ops,
		     void *dev, char *err, size_t errlen)
{
	struct vm_devstate *d;
	int rc;

	if (!name || !*name || strlen(name) >= HV_DEV_NAME_MAX || !ops)
		return errf(err, errlen, -EINVAL, "device name '%s' invalid (1..%d characters, with ops)",
			    name ? name : "", HV_DEV_NAME_MAX - 1);
	if ((ops->save == NULL) != (ops->restore == NULL))
		return errf(err, errlen, -EINVAL, "device %s: save and restore go together", name);
	if (dev_table_find(t, name))
		return errf(err, errlen, -EEXIST, "device name %s already in use", name);
	if (t->nr >= HV_MAX_DEVS)
		return errf(err, errlen, -ENOSPC, "device %s: too many devices (%d)", name, HV_MAX_DEVS);
	if (ops->attach) {
		rc = ops->attach(vm, dev, err, errlen);
		if (rc)
			return rc;
	}
	d = &t->dev[t->nr];
	memset(d, 0, sizeof(*d));
	snprintf(d->name, sizeof(d->name), "%s", name);
	d->ops = ops;
	d->opaque = dev;
	if (ops->save) {
		d->save = ops->save;
		d->restore = ops->restore;
		d->max = ops->state_size ? ops->state_size(dev) : 0;
		t->stateful[t->nr_stateful++] = t->nr;
	}
	t->nr++;
	return 0;
}

void *dev_table_find(const struct dev_table *t, const char *name)
{
	for (int i = 0; name && i < t->nr; i++)
		if (!strcmp(t->dev[i].name, name))
			return t->dev[i].opaque;
	return NULL;
}

void dev_table_reset_all(struct dev_table *t)
{
	for (int i = 0; i < t->nr; i++)
		if (t->dev[i].ops->reset)
			t->dev[i].ops->reset(t->dev[i].opaque);
}

void dev_table_resumed_all(struct dev_table *t)
{
	for (int i = 0; i < t->nr; i++)
		if (t->dev[i].ops->resumed)
			t->dev[i].ops->resumed(t->dev[i].opaque);
}

void dev_table_detach_all(struct dev_table *t)
{
	while (t->nr > 0) {
		struct vm_devstate *d = &t->dev[--t->nr];
		if (d->ops->detach)
			d->ops->detach(d->opaque);
	}
	t->nr_stateful = 0;
}

int dev_table_slot_claim(struct dev_table *t, struct vm *vm, io_fn fn, void *opaque,
			 struct hv_mmio_slot *slot)
{
	int s, rc;
	size_t n;

	if (!slot || !fn)
		return -EINVAL;
	if (t->nr_slots >= HV_MMIO_SLOTS)
		return -ENOSPC;
	s = HV_MMIO_SLOTS - 1 - t->nr_slots;
	memset(slot, 0, sizeof(*slot));
	slot->index = t->nr_slots;
	slot->base = HV_MMIO_BASE + HV_MMIO_SLOT_SIZE * (uint64_t)s;
	slot->gsi = HV_MMIO_IRQ_BASE + s;
	rc = vm_io_register(vm, IO_MMIO, slot->base, HV_MMIO_SLOT_SIZE, fn, opaque);
	if (rc)
		return rc;
	snprintf(slot->cmdline, sizeof(slot->cmdline), "virtio_mmio.device=%llu@0x%llx:%d",
		 (unsigned long long)HV_MMIO_SLOT_SIZE, (unsigned long long)slot->base, slot->gsi);
	n = strlen(t->cmdline);
	snprintf(t->cmdline + n, sizeof(t->cmdline) - n, "%s%s", n ? " " : "", slot->cmdline);
	t->nr_slots++;
	return 0;
}
