/* virtio_blk_attach.c — virtio-blk on a VM: backing file, MMIO slot, IRQ line, DMA gate, hv_dev_ops. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/errf.h"
#include "hv/dev/virtio_blk.h"
#include "hv/hv.h"

struct blk_port {
	struct virtio_blk *dev;
	struct vm *vm;
	struct hv_mmio_slot slot;
};

static void irq_line(void *opaque, int level)
{
	struct blk_port *p = opaque;

	if (level == VIRTIO_IRQ_WAKE)
		vm_wake(p->vm);
	else
		(void)vm_irq_line(p->vm, p->slot.gsi, level); /* fails only if the VM is gone */
}

static bool gate_begin(void *opaque)
{
	return vm_dma_begin(((struct blk_port *)opaque)->vm);
}

static void gate_end(void *opaque)
{
	vm_dma_end(((struct blk_port *)opaque)->vm);
}

/* ---- hv_dev_ops ---- */

static int attach_cb(struct vm *vm, void *opaque, char *err, size_t errlen)
{
	struct blk_port *p = opaque;
	int rc = vm_mmio_slot_claim(vm, virtio_blk_io, p->dev, &p->slot);

	if (rc)
		return errf(err, errlen, rc, "disk: no virtio-mmio slot: %s", strerror(-rc));
	virtio_blk_set_irq(p->dev, irq_line, p);
	virtio_blk_set_gate(p->dev, gate_begin, gate_end, p);
	return 0;
}

static void reset_cb(void *opaque)
{
	struct blk_port *p = opaque;

	(void)virtio_blk_io(p->dev, VMMIO_STATUS, &(uint32_t){0}, 4, true);
}

static size_t state_size_cb(void *opaque)
{
	return virtio_blk_state_size(((struct blk_port *)opaque)->dev);
}

static int save_cb(void *opaque, void *buf, size_t len)
{
	return virtio_blk_save(((struct blk_port *)opaque)->dev, buf, len);
}

static int restore_cb(void *opaque, const void *buf, size_t len)
{
	return virtio_blk_restore(((struct blk_port *)opaque)->dev, buf, len);
}

static void resumed_cb(void *opaque)
{
	virtio_blk_kick(((struct blk_port *)opaque)->dev);
}

static void detach_cb(void *opaque)
{
	struct blk_port *p = opaque;

	virtio_blk_destroy(p->dev);
	free(p);
}

static const struct hv_dev_ops blk_ops = {
	.kind = "virtio-blk",
	.attach = attach_cb,
	.reset = reset_cb,
	.state_size = state_size_cb,
	.save = save_cb,
	.restore = restore_cb,
	.detach = detach_cb,
	.resumed = resumed_cb,
};

int virtio_blk_attach(struct vm *vm, const char *name, const struct virtio_blk_cfg *c,
		      struct virtio_blk **out, char *err, size_t errlen)
{
	struct blk_port *p;
	uint64_t cap = 0;
	bool locked = true;
	int fd, rc;

	*out = NULL;
	if (!vm || !c || !c->path)
		return errf(err, errlen, -EINVAL, "disk: invalid arguments");
	p = calloc(1, sizeof(*p));
	if (!p)
		return errf(err, errlen, -ENOMEM, "disk: out of memory");
	p->vm = vm;
	fd = virtio_blk_open_image(c->path, c->readonly, c->lock_later, &cap, &locked, err, errlen);
	if (fd < 0) {
		free(p);
		return fd;
	}
	rc = virtio_blk_create(vm_mem(vm), fd, cap, c->readonly, c->id, 0, &p->dev);
	if (rc) {
		close(fd);
		free(p);
		return errf(err, errlen, rc, "disk %s: cannot create device: %s", c->path, strerror(-rc));
	}
	virtio_blk_set_locked(p->dev, locked);
	rc = vm_dev_attach(vm, name, &blk_ops, p, err, errlen);
	if (rc) {
		virtio_blk_destroy(p->dev); /* closes fd */
		free(p);
		return rc;
	}
	*out = p->dev;
	return 0;
}
