/* tap.c — tap devices via /dev/net/tun, brought up and bridged with libnl-route-3. */
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <netlink/netlink.h>
#include <netlink/route/link.h>

#include "common/errf.h"
#include "hv/dev/tap.h"

int tap_open(const char *ifname, char *actual_name, int flags, char *err, size_t errlen)
{
	struct ifreq ifr;
	int fd, rc;

	if (!ifname || strlen(ifname) >= IFNAMSIZ) {
		errf(err, errlen, 0, "tap: interface name too long");
		return -EINVAL;
	}
	fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		errf(err, errlen, 0, "tap: open /dev/net/tun: %s", strerror(errno));
		return rc;
	}
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | ((flags & TAP_F_VNET_HDR) ? IFF_VNET_HDR : 0);
	strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		rc = -errno;
		errf(err, errlen, 0, "tap: TUNSETIFF %s: %s", *ifname ? ifname : "(auto)", strerror(errno));
		goto err;
	}
	if (actual_name) {
		memcpy(actual_name, ifr.ifr_name, IFNAMSIZ);
		actual_name[IFNAMSIZ - 1] = 0;
	}
	return fd;
err:
	close(fd);
	return rc;
}

static int nlerr(int rc, const char *what, const char *name, char *err, size_t errlen)
{
	errf(err, errlen, 0, "tap: %s %s: %s", what, name, nl_geterror(rc));
	return rc == -NLE_OBJ_NOTFOUND || rc == -NLE_NODEV ? -ENODEV : rc == -NLE_PERM ? -EPERM : -EIO;
}

int tap_set_up(const char *ifname, const char *bridge, char *err, size_t errlen)
{
	struct rtnl_link *link = NULL, *change = NULL, *br = NULL;
	struct nl_sock *sk;
	int rc;

	sk = nl_socket_alloc();
	if (!sk) {
		errf(err, errlen, 0, "tap: out of memory for netlink socket");
		return -ENOMEM;
	}
	rc = nl_connect(sk, NETLINK_ROUTE);
	if (rc < 0) {
		rc = nlerr(rc, "netlink connect for", ifname, err, errlen);
		goto out;
	}
	rc = rtnl_link_get_kernel(sk, 0, ifname, &link);
	if (rc < 0) {
		rc = nlerr(rc, "look up", ifname, err, errlen);
		goto out;
	}
	change = rtnl_link_alloc();
	if (!change) {
		errf(err, errlen, 0, "tap: out of memory");
		rc = -ENOMEM;
		goto out;
	}
	rtnl_link_set_flags(change, IFF_UP);
	rc = rtnl_link_change(sk, link, change, 0);
	if (rc < 0) {
		rc = nlerr(rc, "set up", ifname, err, errlen);
		goto out;
	}
	if (bridge && *bridge) {
		rc = rtnl_link_get_kernel(sk, 0, bridge, &br);
		if (rc < 0) {
			rc = nlerr(rc, "look up bridge", bridge, err, errlen);
			goto out;
		}
		rc = rtnl_link_enslave(sk, br, link);
		if (rc < 0) {
			rc = nlerr(rc, "enslave to bridge", bridge, err, errlen);
			goto out;
		}
	}
	rc = 0;
out:
	if (br)
		rtnl_link_put(br);
	if (change)
		rtnl_link_put(change);
	if (link)
		rtnl_link_put(link);
	nl_socket_free(sk);
	return rc;
}
