/* ctl_client.h — the blocking control-plane client the command-line tools use (protocol: vmm/control.h). */
#ifndef DOPPEL_CTL_CLIENT_H
#define DOPPEL_CTL_CLIENT_H

#include <stddef.h>

#include "vmm/control.h"

/* Connect to `path`, send `req` (not consumed; must be an object with "cmd") as one line, read one
 * reply line, parse it. Everything within timeout_ms (> 0) in total.
 * Returns 0 if the reply has "ok": true. Returns -EREMOTEIO if the server answered "ok": false (err
 * gets its "error" text). In both cases *reply is the reply object (caller json_object_put()s it).
 * Otherwise *reply = NULL and -errno with one line in err: -ENOENT "no VM control socket at PATH (is the
 * VM running?)", -ECONNREFUSED (stale socket), -ETIMEDOUT, -EPROTO (bad or missing reply), ... */
int ctl_call(const char *path, struct json_object *req, struct json_object **reply, int timeout_ms, char *err,
	     size_t errlen) __attribute__((warn_unused_result));

#endif
