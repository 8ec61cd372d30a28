/* roles.h — helpers of the role verbs (switchover, reprotect, drill): status polling, JSON paths. */
#ifndef DOPPEL_TOOLS_ROLES_H
#define DOPPEL_TOOLS_ROLES_H

#include <stdbool.h>
#include <stdint.h>

struct json_object;

/* One control request {"cmd": cmd} to socket path (timeout ms); the reply (caller puts) or NULL. */
struct json_object *roles_call(const char *path, const char *cmd, int timeout_ms);
/* The value at a dotted path ("remus.witness.token") or NULL. */
struct json_object *roles_get(struct json_object *o, const char *path);
const char *roles_str(struct json_object *o, const char *path); /* "" when absent */
double roles_num(struct json_object *o, const char *path, double def);
bool roles_bool(struct json_object *o, const char *path);
/* Poll `status` on path every 10 ms until this copy is a standby holding a complete checkpoint of
 * a connected primary (a re-protect finished), or timeout_ms. 0 or -ETIMEDOUT. */
int roles_wait_standby_synced(const char *path, int timeout_ms);
/* Poll `status` until remus.role is `primary` and remus.state `protected`. 0 or -ETIMEDOUT. */
int roles_wait_protected(const char *path, int timeout_ms);
void roles_sleep_ms(unsigned ms);
double roles_ms_since(uint64_t t_ns);

#endif
