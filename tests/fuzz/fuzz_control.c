/* fuzz_control.c — libFuzzer target: arbitrary bytes as a control-socket request line. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <json-c/json.h>

#include "vmm/control.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json_object *req = NULL;
	const char *cmd = NULL;
	char err[256] = "";
	int rc = ctl_parse_request((const char *)data, size, &req, &cmd, err, sizeof(err));

	if (rc == 0) {
		/* a success is an object with a non-empty, bounded "cmd" string */
		if (!req || !json_object_is_type(req, json_type_object) || !cmd || !*cmd ||
		    strlen(cmd) > CTL_MAX_CMD)
			__builtin_trap();
		json_object_put(req);
	} else {
		/* a failure is negative, leaves nothing behind and says why in one line */
		if (rc > 0 || req || cmd || !err[0] || strchr(err, '\n'))
			__builtin_trap();
	}
	return 0;
}
