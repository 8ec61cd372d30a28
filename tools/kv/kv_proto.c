/* kv_proto.c — the doppel key-value wire protocol: parsing and formatting of requests and replies. */
#include "tools/kv/kv_proto.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int kv_parse_u64(const char *s, size_t len, uint64_t *out)
{
	uint64_t v = 0;

	if (len == 0 || len > 20)
		return len > 20 ? -ERANGE : -EINVAL;
	for (size_t i = 0; i < len; i++) {
		unsigned d;

		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		d = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

int kv_parse_i64(const char *s, size_t len, int64_t *out)
{
	bool neg = len > 0 && s[0] == '-';
	uint64_t mag;
	int rc;

	rc = kv_parse_u64(s + neg, len - neg, &mag);
	if (rc)
		return rc;
	if (neg) {
		if (mag > (uint64_t)INT64_MAX + 1)
			return -ERANGE;
		*out = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
	} else {
		if (mag > (uint64_t)INT64_MAX)
			return -ERANGE;
		*out = (int64_t)mag;
	}
	return 0;
}

bool kv_key_valid(const char *s, size_t len)
{
	if (len < 1 || len > KV_KEY_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == '-'))
			return false;
	}
	return true;
}

bool kv_value_valid(const char *s, size_t len)
{
	if (len < 1 || len > KV_VAL_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (s[i] <= ' ' || s[i] > '~')
			return false;
	return true;
}

static const char *const cmd_names[] = {[KV_SET] = "SET", [KV_GET] = "GET", [KV_INCR] = "INCR"};

const char *kv_cmd_name(enum kv_cmd cmd)
{
	return (unsigned)cmd < 3 ? cmd_names[cmd] : "?";
}

int kv_cmd_parse(const char *s, size_t len, enum kv_cmd *out)
{
	for (unsigned i = 0; i < 3; i++) {
		if (strlen(cmd_names[i]) == len && !memcmp(cmd_names[i], s, len)) {
			*out = (enum kv_cmd)i;
			return 0;
		}
	}
	return -EINVAL;
}

/* Strip one trailing "\n" or "\r\n"; split on single spaces into at most max fields.
 * Returns the number of fields, or -1 if there are more than max or an empty field. */
static int split_fields(const char *buf, size_t len, const char **f, size_t *flen, int max)
{
	int n = 0;
	size_t start = 0;

	if (len && buf[len - 1] == '\n')
		len--;
	if (len && buf[len - 1] == '\r')
		len--;
	if (len == 0)
		return -1;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && buf[i] != ' ')
			continue;
		if (i == start || n == max)
			return -1;
		f[n] = buf + start;
		flen[n] = i - start;
		n++;
		start = i + 1;
	}
	return n;
}

int kv_parse_request(const char *buf, size_t len, struct kv_req *req, bool *id_valid, const char **reason)
{
	const char *f[4];
	size_t fl[4];
	int n;

	*id_valid = false;
	memset(req, 0, sizeof(*req));
	if (len > KV_DGRAM_MAX) {
		*reason = "toolong";
		return -EINVAL;
	}
	/* The ID is the first field even if the rest is malformed. */
	{
		size_t i = 0;

		while (i < len && buf[i] != ' ')
			i++;
		if (kv_parse_u64(buf, i, &req->id) == 0 && i < len)
			*id_valid = true;
	}
	if (!*id_valid) {
		*reason = "badid";
		return -EINVAL;
	}
	n = split_fields(buf, len, f, fl, 4);
	if (n < 3) {
		*reason = "args";
		return -EINVAL;
	}
	if (kv_cmd_parse(f[1], fl[1], &req->cmd)) {
		*reason = "badcmd";
		return -EINVAL;
	}
	if (!kv_key_valid(f[2], fl[2])) {
		*reason = "badkey";
		return -EINVAL;
	}
	memcpy(req->key, f[2], fl[2]);
	req->key[fl[2]] = '\0';
	if ((req->cmd == KV_SET) != (n == 4)) {
		*reason = "args";
		return -EINVAL;
	}
	if (n == 4) {
		if (!kv_value_valid(f[3], fl[3])) {
			*reason = "badvalue";
			return -EINVAL;
		}
		memcpy(req->val, f[3], fl[3]);
		req->val[fl[3]] = '\0';
	}
	return 0;
}

int kv_format_request(char *buf, size_t cap, const struct kv_req *req)
{
	int n;

	if ((unsigned)req->cmd > KV_INCR || !kv_key_valid(req->key, strlen(req->key)))
		return -EINVAL;
	if (req->cmd == KV_SET) {
		if (!kv_value_valid(req->val, strlen(req->val)))
			return -EINVAL;
		n = snprintf(buf, cap, "%llu SET %s %s", (unsigned long long)req->id, req->key, req->val);
	} else {
		if (req->val[0])
			return -EINVAL;
		n = snprintf(buf, cap, "%llu %s %s", (unsigned long long)req->id, kv_cmd_name(req->cmd),
			     req->key);
	}
	if (n < 0 || (size_t)n >= cap)
		return -ENOSPC;
	return n;
}

int kv_parse_reply(const char *buf, size_t len, struct kv_reply *rep)
{
	size_t i = 0, j;

	memset(rep, 0, sizeof(*rep));
	if (len && buf[len - 1] == '\n')
		len--;
	if (len && buf[len - 1] == '\r')
		len--;
	while (i < len && buf[i] != ' ')
		i++;
	if (i == len || kv_parse_u64(buf, i, &rep->id))
		return -EINVAL;
	j = ++i;
	while (j < len && buf[j] != ' ')
		j++;
	if (j == len)
		return -EINVAL;
	if (j - i == 2 && !memcmp(buf + i, "OK", 2))
		rep->ok = true;
	else if (!(j - i == 3 && !memcmp(buf + i, "ERR", 3)))
		return -EINVAL;
	j++;
	/* VALUE (OK) must be a valid value; REASON (ERR) may hold spaces but must be printable. */
	if (len - j < 1 || len - j >= sizeof(rep->text))
		return -EINVAL;
	for (size_t k = j; k < len; k++)
		if (buf[k] < ' ' || buf[k] > '~')
			return -EINVAL;
	if (rep->ok && !kv_value_valid(buf + j, len - j))
		return -EINVAL;
	memcpy(rep->text, buf + j, len - j);
	rep->text[len - j] = '\0';
	return 0;
}

int kv_format_reply(char *buf, size_t cap, uint64_t id, bool ok, const char *text)
{
	int n = snprintf(buf, cap, "%llu %s %s", (unsigned long long)id, ok ? "OK" : "ERR", text);

	if (n < 0 || (size_t)n >= cap)
		return -ENOSPC;
	return n;
}

int kv_split_hostport(const char *s, char *host, size_t hostcap, char *port, size_t portcap)
{
	const char *h = s, *p = NULL, *colon;
	size_t hl;
	uint64_t pv;

	if (!s || !*s)
		return -EINVAL;
	if (s[0] == '[') {
		const char *end = strchr(s, ']');

		if (!end || end == s + 1)
			return -EINVAL;
		h = s + 1;
		hl = (size_t)(end - h);
		if (end[1] == ':')
			p = end + 2;
		else if (end[1])
			return -EINVAL;
	} else {
		colon = strchr(s, ':');
		if (colon && strchr(colon + 1, ':')) {
			hl = strlen(s); /* bare IPv6 */
		} else if (colon) {
			hl = (size_t)(colon - s);
			p = colon + 1;
		} else {
			hl = strlen(s);
		}
	}
	if (hl == 0 || hl >= hostcap)
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = '\0';
	if (p) {
		if (kv_parse_u64(p, strlen(p), &pv) || pv == 0 || pv > 65535)
			return -EINVAL;
	} else {
		pv = KV_DEFAULT_PORT;
	}
	if ((size_t)snprintf(port, portcap, "%llu", (unsigned long long)pv) >= portcap)
		return -EINVAL;
	return 0;
}
