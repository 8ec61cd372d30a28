/* control_proto.c — control-plane protocol pieces shared by server and client: request parsing, reply builders. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <json-c/json.h>

#include "vmm/control.h"
#include "common/errf.h"

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int ctl_parse_json(const char *buf, size_t len, struct json_object **out, char *err, size_t errlen)
{
	struct json_tokener *tok;
	struct json_object *obj;
	enum json_tokener_error jerr;
	char *copy;
	size_t end;

	*out = NULL;
	while (len && is_space(buf[len - 1]))
		len--;
	while (len && is_space(*buf)) {
		buf++;
		len--;
	}
	if (!len)
		return errf(err, errlen, -EINVAL, "empty request");
	if (memchr(buf, '\0', len))
		return errf(err, errlen, -EINVAL, "malformed JSON: NUL byte in input");
	/* json-c needs the terminating NUL in the input to know a trailing number or literal has ended. */
	copy = malloc(len + 1);
	tok = json_tokener_new();
	if (!copy || !tok) {
		free(copy);
		if (tok)
			json_tokener_free(tok);
		return errf(err, errlen, -ENOMEM, "out of memory");
	}
	memcpy(copy, buf, len);
	copy[len] = '\0';
	obj = json_tokener_parse_ex(tok, copy, (int)len + 1);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	free(copy);
	if (jerr != json_tokener_success) {
		json_object_put(obj);
		return errf(err, errlen, -EINVAL, "malformed JSON: %s", json_tokener_error_desc(jerr));
	}
	if (end < len) {
		json_object_put(obj);
		return errf(err, errlen, -EINVAL, "malformed JSON: trailing data after the value");
	}
	*out = obj;
	return 0;
}

int ctl_parse_request(const char *line, size_t len, struct json_object **req, const char **cmd, char *err,
		      size_t errlen)
{
	struct json_object *obj, *c;
	int rc;

	*req = NULL;
	*cmd = NULL;
	if (len > CTL_MAX_LINE)
		return errf(err, errlen, -E2BIG, "request too large");
	if (!line && len)
		return errf(err, errlen, -EINVAL, "empty request");
	rc = ctl_parse_json(line, len, &obj, err, errlen);
	if (rc)
		return rc;
	if (!json_object_is_type(obj, json_type_object)) {
		rc = errf(err, errlen, -EINVAL, "request must be a JSON object");
		goto err;
	}
	if (!json_object_object_get_ex(obj, "cmd", &c)) {
		rc = errf(err, errlen, -EINVAL, "request has no \"cmd\" field");
		goto err;
	}
	if (!json_object_is_type(c, json_type_string)) {
		rc = errf(err, errlen, -EINVAL, "\"cmd\" must be a string");
		goto err;
	}
	if (json_object_get_string_len(c) == 0 || json_object_get_string_len(c) > CTL_MAX_CMD) {
		rc = errf(err, errlen, -EINVAL, "\"cmd\" must be 1..%d characters", CTL_MAX_CMD);
		goto err;
	}
	*req = obj;
	*cmd = json_object_get_string(c);
	return 0;
err:
	json_object_put(obj);
	return rc;
}

struct json_object *ctl_ok(void)
{
	struct json_object *o = json_object_new_object();

	if (o)
		json_object_object_add(o, "ok", json_object_new_boolean(1));
	return o;
}

struct json_object *ctl_error(const char *fmt, ...)
{
	struct json_object *o = json_object_new_object();
	char msg[512];
	va_list ap;

	if (!o)
		return NULL;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_object_object_add(o, "ok", json_object_new_boolean(0));
	json_object_object_add(o, "error", json_object_new_string(msg));
	return o;
}

struct json_object *ctl_refused(const char *fmt, ...)
{
	struct json_object *o = json_object_new_object();
	char msg[512];
	va_list ap;

	if (!o)
		return NULL;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_object_object_add(o, "ok", json_object_new_boolean(0));
	json_object_object_add(o, "error", json_object_new_string(msg));
	json_object_object_add(o, "refused", json_object_new_boolean(1));
	return o;
}

int ctl_sockaddr(const char *path, struct sockaddr_un *sa, char *err, size_t errlen)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (!path || !path[0])
		return errf(err, errlen, -EINVAL, "empty control socket path");
	if (strlen(path) >= sizeof(sa->sun_path))
		return errf(err, errlen, -ENAMETOOLONG, "control socket path too long (max %zu bytes): %s",
			    sizeof(sa->sun_path) - 1, path);
	memcpy(sa->sun_path, path, strlen(path));
	return 0;
}
