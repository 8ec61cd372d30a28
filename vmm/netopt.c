/* netopt.c — parse the --net option string and derive a stable default MAC. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/errf.h"
#include "vmm/netopt.h"

bool net_ifname_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n >= NETOPT_IFNAMSIZ || !strcmp(name, ".") || !strcmp(name, ".."))
		return false;
	for (size_t i = 0; i < n; i++)
		if (name[i] == '/' || name[i] == ':' || name[i] == ',' || name[i] == '=' ||
		    isspace((unsigned char)name[i]) || !isprint((unsigned char)name[i]))
			return false;
	return true;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)tolower((unsigned char)c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int net_mac_parse(const char *s, uint8_t mac[6])
{
	if (strlen(s) != 17)
		return -EINVAL;
	for (int i = 0; i < 6; i++) {
		int hi = hexval(s[3 * i]), lo = hexval(s[3 * i + 1]);

		if (hi < 0 || lo < 0 || (i < 5 && s[3 * i + 2] != ':'))
			return -EINVAL;
		mac[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

void net_default_mac(const char *ifname, uint8_t mac[6])
{
	uint32_t h = 2166136261u; /* FNV-1a */

	for (const char *p = ifname; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	mac[0] = 0x52;
	mac[1] = 0x54;
	mac[2] = 0x00;
	mac[3] = (uint8_t)(h >> 16);
	mac[4] = (uint8_t)(h >> 8);
	mac[5] = (uint8_t)h;
}

int net_opts_parse(const char *s, struct net_opts *o, char *err, size_t errlen)
{
	char buf[256], *save = NULL, *tok;
	bool have_tap = false, have_br = false;
	struct net_opts r;

	memset(&r, 0, sizeof(r));
	if (!s || !*s) {
		return errf(err, errlen, -EINVAL,
			    "--net: empty option (want tap=IFNAME[,bridge=BR][,mac=..])");
	}
	if (strlen(s) >= sizeof(buf)) {
		return errf(err, errlen, -EINVAL, "--net: option string too long");
	}
	strcpy(buf, s);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		const char *val;

		if (!eq) {
			return errf(err, errlen, -EINVAL, "--net: '%.40s' is not key=value", tok);
		}
		*eq = 0;
		val = eq + 1;
		if (!strcmp(tok, "tap") || !strcmp(tok, "bridge")) {
			bool is_tap = tok[0] == 't';

			if (is_tap ? have_tap : have_br) {
				return errf(err, errlen, -EINVAL, "--net: %s given twice", tok);
			}
			if (!net_ifname_valid(val)) {
				return errf(err, errlen, -EINVAL,
					    "--net: invalid interface name '%.40s' for %s", val, tok);
			}
			strcpy(is_tap ? r.ifname : r.bridge, val);
			*(is_tap ? &have_tap : &have_br) = true;
		} else if (!strcmp(tok, "mac")) {
			if (r.mac_given) {
				return errf(err, errlen, -EINVAL, "--net: mac given twice");
			}
			if (net_mac_parse(val, r.mac)) {
				return errf(err, errlen, -EINVAL,
					    "--net: invalid mac '%.40s' (want xx:xx:xx:xx:xx:xx)", val);
			}
			if ((r.mac[0] & 1) ||
			    !(r.mac[0] | r.mac[1] | r.mac[2] | r.mac[3] | r.mac[4] | r.mac[5])) {
				return errf(err, errlen, -EINVAL, "--net: mac %s is multicast or zero", val);
			}
			r.mac_given = true;
		} else {
			return errf(err, errlen, -EINVAL,
				    "--net: unknown key '%.40s' (want tap, bridge, mac)", tok);
		}
	}
	if (!have_tap) {
		return errf(err, errlen, -EINVAL, "--net: tap=IFNAME is required");
	}
	if (have_br && !strcmp(r.bridge, r.ifname)) {
		return errf(err, errlen, -EINVAL, "--net: bridge and tap are the same interface");
	}
	if (!r.mac_given)
		net_default_mac(r.ifname, r.mac);
	*o = r;
	return 0;
}
