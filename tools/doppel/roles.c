/* roles.c — helpers of the role verbs (switchover, reprotect, drill): status polling, JSON paths. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "common/clock.h"
#include "tools/common/ctl_client.h"
#include "tools/doppel/roles.h"

struct json_object *roles_call(const char *path, const char *cmd, int timeout_ms)
{
	struct json_object *req = json_object_new_object(), *reply = NULL;
	char err[256];

	json_object_object_add(req, "cmd", json_object_new_string(cmd));
	if (ctl_call(path, req, &reply, timeout_ms, err, sizeof(err))) {
		json_object_put(reply);
		reply = NULL;
	}
	json_object_put(req);
	return reply;
}

struct json_object *roles_get(struct json_object *o, const char *path)
{
	char part[64];

	while (o && *path) {
		size_t n = strcspn(path, ".");
		if (n >= sizeof(part))
			return NULL;
		memcpy(part, path, n);
		part[n] = 0;
		if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, part, &o))
			return NULL;
		path += n + (path[n] == '.');
	}
	return o;
}

const char *roles_str(struct json_object *o, const char *path)
{
	struct json_object *v = roles_get(o, path);

	return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
}

double roles_num(struct json_object *o, const char *path, double def)
{
	struct json_object *v = roles_get(o, path);

	return v && (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double))
		       ? json_object_get_double(v)
		       : def;
}

bool roles_bool(struct json_object *o, const char *path)
{
	struct json_object *v = roles_get(o, path);

	return v && json_object_is_type(v, json_type_boolean) && json_object_get_boolean(v);
}

void roles_sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

double roles_ms_since(uint64_t t_ns)
{
	return (double)(now_ns() - t_ns) / 1e6;
}

static int wait_status(const char *path, int timeout_ms, bool (*done)(struct json_object *))
{
	uint64_t t0 = now_ns();

	for (;;) {
		struct json_object *s = roles_call(path, "status", 1000);
		bool ok = s && done(s);

		json_object_put(s);
		if (ok)
			return 0;
		if (roles_ms_since(t0) > timeout_ms)
			return -ETIMEDOUT;
		roles_sleep_ms(10);
	}
}

static bool standby_synced(struct json_object *s)
{
	return !strcmp(roles_str(s, "remus.role"), "standby") && roles_bool(s, "remus.connected") &&
	       roles_bool(s, "remus.have_state");
}

static bool protected(struct json_object *s)
{
	return !strcmp(roles_str(s, "remus.role"), "primary") &&
	       !strcmp(roles_str(s, "remus.state"), "protected");
}

int roles_wait_standby_synced(const char *path, int timeout_ms)
{
	return wait_status(path, timeout_ms, standby_synced);
}

int roles_wait_protected(const char *path, int timeout_ms)
{
	return wait_status(path, timeout_ms, protected);
}
