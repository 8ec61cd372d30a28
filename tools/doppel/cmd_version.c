/* cmd_version.c — `doppel version` (also `doppel --version`): print the version doppel was built as. */
#include <stdio.h>

#include <json-c/json.h>

#include "vmm/control.h"
#include "tools/doppel/doppel.h"

int cmd_version(int argc, char **argv)
{
	static const struct option opts[] = {
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	bool json = false;
	int c;

	if (doppel_opts_begin(argc, argv, opts))
		return DOPPEL_EXIT_OK;
	while ((c = getopt_long(argc, argv, ":jh", opts, NULL)) != -1) {
		if (c == 'h') {
			printf("usage: doppel version [--json]\n"
			       "\n"
			       "Print the version doppel was built as (git describe at build time); the "
			       "same\n"
			       "as `doppel --version`.\n"
			       "\n"
			       "  -j, --json           print {\"version\": \"...\"}\n"
			       "  -h, --help           show this help\n");
			return DOPPEL_EXIT_OK;
		}
		if (c == 'j')
			json = true;
		else
			return doppel_bad_option("version", c, argv);
	}
	if (optind < argc)
		return doppel_usage_error("version", "unexpected argument '%s'", argv[optind]);
	if (json) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "version", json_object_new_string(doppel_version()));
		printf("%s\n", json_object_to_json_string_ext(o, CTL_JSON_FLAGS));
		json_object_put(o);
	} else {
		printf("doppel %s\n", doppel_version());
	}
	return fflush(stdout) ? DOPPEL_EXIT_FAIL : DOPPEL_EXIT_OK;
}
