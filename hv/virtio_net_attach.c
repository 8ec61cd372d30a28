/* virtio_net_attach.c — wire a virtio-net device to a VM: tap backend, MMIO window, KVM IRQ line, libev RX. */
#include <errno.h>
#include <ev.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "hv/hv.h"
#include "hv/tap.h"
#include "hv/virtio_net.h"

#define RX_BURST 64 /* frames read from the tap per wakeup, so one busy tap cannot starve the loop */

struct net_port {
	struct virtio_net *dev;
	int fd;
	int vm_fd;
	int gsi;
	struct ev_loop *loop;
	ev_io w;
	bool rx_enabled; /* false while the VM does not run (standby, incoming): frames are dropped */
	char ifname[NETOPT_IFNAMSIZ];
	uint8_t buf[VNET_MAX_FRAME + 1];
};

uint64_t virtio_net_mmio_base(int index)
{
	return VIRTIO_MMIO_BASE + VIRTIO_MMIO_SIZE * (uint64_t)(VIRTIO_MMIO_SLOTS - 1 - index);
}

int virtio_net_gsi(int index)
{
	return VIRTIO_MMIO_IRQ_BASE + (VIRTIO_MMIO_SLOTS - 1 - index);
}

static void kvm_irq(void *opaque, int level)
{
	struct net_port *p = opaque;
	struct kvm_irq_level l = {.irq = (uint32_t)p->gsi, .level = (uint32_t)level};

	(void)ioctl(p->vm_fd, KVM_IRQ_LINE, &l); /* fails only if the VM is gone */
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

static void rx_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct net_port *p = w->data;

	(void)loop, (void)revents;
	for (int i = 0; i < RX_BURST; i++) {
		ssize_t n = read(p->fd, p->buf, sizeof(p->buf));

		if (n <= 0)
			break; /* EAGAIN: drained; other errors: retried on the next readiness */
		if (!__atomic_load_n(&p->rx_enabled, __ATOMIC_ACQUIRE))
			continue; /* a replica must not receive: its memory belongs to the primary */
		(void)virtio_net_rx_queue(p->dev, p->buf, (size_t)n); /* drops are counted in stats */
	}
}

int virtio_net_attach(struct vm *vm, const struct net_opts *o, int index, struct ev_loop *loop,
		      struct virtio_net **out, char *cmdline_frag, size_t fraglen, char *err, size_t errlen)
{
	struct net_port *p = NULL;
	uint64_t base;
	int rc;

	*out = NULL;
	if (!vm || !o || !loop || index < 0 || index >= VIRTIO_MMIO_SLOTS) {
		snprintf(err, errlen, "net: device index %d out of range 0..%d", index, VIRTIO_MMIO_SLOTS - 1);
		return -EINVAL;
	}
	if (!net_ifname_valid(o->ifname) || (o->bridge[0] && !net_ifname_valid(o->bridge))) {
		snprintf(err, errlen, "net: invalid interface name");
		return -EINVAL;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		snprintf(err, errlen, "net: out of memory");
		return -ENOMEM;
	}
	p->fd = -1;
	p->rx_enabled = true;
	p->vm_fd = vm_fd(vm);
	p->gsi = virtio_net_gsi(index);
	p->loop = loop;
	rc = tap_open(o->ifname, p->ifname, 0, err, errlen);
	if (rc < 0)
		goto err;
	p->fd = rc;
	rc = tap_set_up(p->ifname, o->bridge, err, errlen);
	if (rc < 0)
		goto err;
	rc = virtio_net_create(vm_mem(vm), o->mac, virtio_net_tap_output, NULL, &p->dev);
	if (rc < 0) {
		snprintf(err, errlen, "net: cannot create device: %s", strerror(-rc));
		goto err;
	}
	virtio_net_set_tx(p->dev, virtio_net_tap_output, p->dev);
	virtio_net_set_backend(p->dev, p);
	virtio_net_set_irq(p->dev, kvm_irq, p);
	base = virtio_net_mmio_base(index);
	rc = vm_io_register(vm, IO_MMIO, base, VIRTIO_MMIO_SIZE, virtio_net_io, p->dev);
	if (rc < 0) {
		snprintf(err, errlen, "net: cannot register MMIO window at 0x%llx: %s",
			 (unsigned long long)base, strerror(-rc));
		goto err;
	}
	if (cmdline_frag)
		snprintf(cmdline_frag, fraglen, "virtio_mmio.device=512@0x%llx:%d", (unsigned long long)base,
			 p->gsi);
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

void virtio_net_detach(struct virtio_net *dev)
{
	struct net_port *p;

	if (!dev)
		return;
	p = virtio_net_backend(dev);
	if (p) {
		ev_io_stop(p->loop, &p->w);
		if (p->fd >= 0)
			close(p->fd);
		free(p);
	}
	virtio_net_destroy(dev);
}
