/* tap.h — tap devices via /dev/net/tun, brought up and bridged with libnl-route-3. */
#ifndef DOPPEL_HV_TAP_H
#define DOPPEL_HV_TAP_H

#include <stddef.h>

#define TAP_F_VNET_HDR 1 /* IFF_VNET_HDR: frames carry a struct virtio_net_hdr (not used by default) */

/* Open (creating if absent) tap `ifname` ("" lets the kernel pick tapN) with IFF_TAP | IFF_NO_PI,
 * non-blocking and close-on-exec. actual_name (>= 16 bytes, may be NULL) receives the kernel's name.
 * Needs CAP_NET_ADMIN. Returns the fd, or -errno with one line in err. */
int tap_open(const char *ifname, char *actual_name, int flags, char *err, size_t errlen);

/* Set `ifname` up (IFF_UP via rtnl_link_change) and, if bridge is non-NULL and non-empty, enslave it
 * to that existing bridge (rtnl_link_enslave). Returns 0, -ENODEV if an interface does not exist,
 * -EIO (or -errno) on other netlink failures, with one line in err. */
int tap_set_up(const char *ifname, const char *bridge, char *err, size_t errlen);

#endif
