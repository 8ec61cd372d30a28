/* virtio_net_attach.c — virtio-net on a VM: tap backend, MMIO slot, IRQ line, RX watcher, ops. */
#include <errno.h>
#include <ev.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/errf.h"
#include "hv/dev/tap.h"
#include "hv/dev/virtio_net.h"
#include "hv/hv.h"

#define RX_BURST 64 /* frames read from the tap per wakeup, so one busy tap cannot starve the loop */

struct net_port {
	struct virtio_net *dev;
	struct vm *vm;
	int fd;
	struct hv_mmio_slot slot;
	bool attached;
	struct ev_loop *loop;
	ev_io w;
	bool rx_enabled; /* false while the VM does not run (standby, incoming): frames are dropped
	                  */
	char ifname[IFNAMSIZ];
	uint8_t buf[VNET_MAX_FRAME + 1];
};

static void irq_line(void *opaque, int level)
{
	struct net_port *p = opaque;

	if (level == VIRTIO_IRQ_WAKE)
		vm_wake(p->vm);
	else
		(void)vm_irq_line(p->vm, p->slot.gsi, level); /* fails only if the VM is gone */
}

int virtio_net_tap_output(void *dev, const void *frame, size_t len)
{
	struct net_port *p = virtio_net_backend(dev);
	ssize_t n;

	if (!p || p->fd < 0)
		return -ENODEV;
	n = write(p->fd, frame, len);
	if (n < 0)
		return -errno;
	return (size_t)n == len ? 0 : -EIO;
}

void virtio_net_rx_enable(struct virtio_net *dev, bool on)
{
	struct net_port *p = virtio_net_backend(dev);

	if (p)
		__atomic_store_n(&p->rx_enabled, on, __ATOMIC_RELEASE);
}

int virtio_net_tap_fd(struct virtio_net *dev)
{
	struct net_port *p = virtio_net_backend(dev);

	return p ? p->fd : -1;
}

const struct hv_mmio_slot *virtio_net_slot(struct virtio_net *dev)
{
	struct net_port *p = dev ? virtio_net_backend(dev) : NULL;

	return p && p->attached ? &p->slot : NULL;
}

static void rx_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct net_port *p = w->data;

	(void)loop, (void)revents;
	for (int i = 0; i < RX_BURST; i++) {
		ssize_t n = read(p->fd, p->buf, sizeof(p->buf));

		if (n <= 0)
			break; /* EAGAIN: drained; other errors: retried on the next readiness */
		if (!__atomic_load_n(&p->rx_enabled, __ATOMIC_ACQUIRE))
			continue; /* a replica must not receive: its memory belongs to the primary
			           */
		/* Into guest RAM only through the DMA gate: while a checkpoint (or anyone) holds the VM
		 * paused, frames wait in the device's queue and go in from resumed_cb. Drops are counted. */
		if (vm_dma_begin(p->vm)) {
			(void)virtio_net_rx_queue(p->dev, p->buf, (size_t)n);
			vm_dma_end(p->vm);
		} else {
			(void)virtio_net_rx_hold(p->dev, p->buf, (size_t)n);
		}
	}
}

/* ---- hv_dev_ops ---- */

static int attach_cb(struct vm *vm, void *opaque, char *err, size_t errlen)
{
	struct net_port *p = opaque;
	int rc = vm_mmio_slot_claim(vm, virtio_net_io, p->dev, &p->slot);

	if (rc)
		return errf(err, errlen, rc, "net: no virtio-mmio slot: %s", strerror(-rc));
	p->attached = true;
	virtio_net_set_irq(p->dev, irq_line, p);
	return 0;
}

static void reset_cb(void *opaque)
{
	struct net_port *p = opaque;

	/* What a guest's Status = 0 write does: the transport resets itself and the device. */
	(void)virtio_net_io(p->dev, VMMIO_STATUS, &(uint32_t){0}, 4, true);
}

static size_t state_size_cb(void *opaque)
{
	return virtio_net_state_size(((struct net_port *)opaque)->dev);
}

static int save_cb(void *opaque, void *buf, size_t len)
{
	return virtio_net_save(((struct net_port *)opaque)->dev, buf, len);
}

static int restore_cb(void *opaque, const void *buf, size_t len)
{
	return virtio_net_restore(((struct net_port *)opaque)->dev, buf, len);
}

static void resumed_cb(void *opaque)
{
	struct net_port *p = opaque;

	if (vm_dma_begin(p->vm)) {
		virtio_net_rx_flush(p->dev);
		vm_dma_end(p->vm);
	}
}

static void detach_cb(void *opaque)
{
	struct net_port *p = opaque;

	if (p->loop)
		ev_io_stop(p->loop, &p->w);
	if (p->fd >= 0)
		close(p->fd);
	virtio_net_destroy(p->dev);
	free(p);
}

static const struct hv_dev_ops net_ops = {
	.kind = "virtio-net",
	.attach = attach_cb,
	.reset = reset_cb,
	.state_size = state_size_cb,
	.save = save_cb,
	.restore = restore_cb,
	.detach = detach_cb,
	.resumed = resumed_cb,
};

int virtio_net_attach(struct vm *vm, const char *name, const struct virtio_net_cfg *c, struct ev_loop *loop,
		      struct virtio_net **out, char *err, size_t errlen)
{
	struct net_port *p = NULL;
	int rc;

	*out = NULL;
	if (!vm || !c || !c->ifname || !loop)
		return errf(err, errlen, -EINVAL, "net: invalid arguments");
	p = calloc(1, sizeof(*p));
	if (!p)
		return errf(err, errlen, -ENOMEM, "net: out of memory");
	p->fd = -1;
	p->rx_enabled = true;
	p->vm = vm;
	rc = tap_open(c->ifname, p->ifname, 0, err, errlen);
	if (rc < 0)
		goto err;
	p->fd = rc;
	rc = tap_set_up(p->ifname, c->bridge, err, errlen);
	if (rc < 0)
		goto err;
	rc = virtio_net_create(vm_mem(vm), c->mac, virtio_net_tap_output, NULL, &p->dev);
	if (rc < 0) {
		errf(err, errlen, 0, "net: cannot create device: %s", strerror(-rc));
		goto err;
	}
	virtio_net_set_tx(p->dev, virtio_net_tap_output, p->dev);
	virtio_net_set_backend(p->dev, p);
	rc = vm_dev_attach(vm, name, &net_ops, p, err, errlen);
	if (rc < 0)
		goto err;
	p->loop = loop;
	ev_io_init(&p->w, rx_cb, p->fd, EV_READ);
	p->w.data = p;
	ev_io_start(loop, &p->w);
	*out = p->dev;
	return 0;
err:
	virtio_net_destroy(p->dev);
	if (p->fd >= 0)
		close(p->fd);
	free(p);
	return rc;
}
