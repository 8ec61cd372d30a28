/* netopt.h — the runtime's `--net tap=IFNAME[,bridge=BR][,mac=..]` option and default MAC. */
#ifndef DOPPEL_VMM_NETOPT_H
#define DOPPEL_VMM_NETOPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NETOPT_IFNAMSIZ 16 /* IFNAMSIZ: names are 1..15 characters */

struct net_opts {
	char ifname[NETOPT_IFNAMSIZ]; /* tap device name (created if absent) */
	char bridge[NETOPT_IFNAMSIZ]; /* "" = do not enslave */
	uint8_t mac[6]; /* guest MAC: given, or net_default_mac(ifname) */
	bool mac_given;
};

/* Parse "tap=IFNAME[,bridge=BR][,mac=XX:XX:XX:XX:XX:XX]" (keys in any order, each at most once, tap
 * required). Interface names follow the kernel's rules (1..15 chars, no '/', ':', whitespace, not
 * "." or ".."); the MAC must be unicast and non-zero. Pure function. Returns 0, or -EINVAL with one
 * line in err. *o is fully written on success (mac defaulted when not given). */
int net_opts_parse(const char *s, struct net_opts *o, char *err, size_t errlen);

/* Parse "xx:xx:xx:xx:xx:xx" (hex, case-insensitive). Returns 0 or -EINVAL. */
int net_mac_parse(const char *s, uint8_t mac[6]);

/* Stable locally administered MAC for a tap name: 52:54:00:xx:xx:xx, xx from a hash of the name. */
void net_default_mac(const char *ifname, uint8_t mac[6]);

/* Kernel interface name rules (see above). */
bool net_ifname_valid(const char *name);

#endif
