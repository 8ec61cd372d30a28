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

/* What a ctl_call result means for a command-line tool, as its exit code: CTL_OUTCOME_OK (rc 0),
 * CTL_OUTCOME_NOT_RUNNING (no socket at the path, or nothing listening: -ENOENT, -ECONNREFUSED),
 * CTL_OUTCOME_REFUSED (the VM answered ok:false with "refused": true: its state forbids the request),
 * CTL_OUTCOME_FAILED (anything else). reply may be NULL. */
enum ctl_outcome {
	CTL_OUTCOME_OK = 0,
	CTL_OUTCOME_FAILED = 1,
	CTL_OUTCOME_NOT_RUNNING = 3,
	CTL_OUTCOME_REFUSED = 4,
};
enum ctl_outcome ctl_outcome(int rc, struct json_object *reply);

/* Like ctl_call, but on success keeps the connection: *fd (blocking, the caller closes it) carries
 * whatever the server streams after its reply (`doppel console`). The reply line is read byte by byte
 * so nothing after it is consumed. *fd = -1 on failure. */
int ctl_call_stream(const char *path, struct json_object *req, struct json_object **reply, int timeout_ms,
		    int *fd, char *err, size_t errlen) __attribute__((warn_unused_result));

#endif
