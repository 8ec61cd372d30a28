/* diskopt.c — parse the --disk option string. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/errf.h"
#include "vmm/diskopt.h"

#define WANT "(want path=FILE[,readonly][,id=NAME])"

static bool id_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > DISKOPT_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] <= ' ' || s[i] > '~' || s[i] == ',')
			return false;
	return true;
}

int disk_opts_parse(const char *s, struct disk_opts *o, char *err, size_t errlen)
{
	bool have_path = false, have_ro = false, have_id = false;
	char *buf, *save = NULL, *tok;
	int rc = 0;

	memset(o, 0, sizeof(*o));
	if (!s || !*s)
		return errf(err, errlen, -EINVAL, "--disk: empty option " WANT);
	if (strlen(s) >= DISKOPT_PATH_MAX + 64)
		return errf(err, errlen, -EINVAL, "--disk: option string too long");
	buf = strdup(s);
	if (!buf)
		return errf(err, errlen, -ENOMEM, "--disk: out of memory");
	for (tok = strtok_r(buf, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');

		if (!strcmp(tok, "readonly")) {
			if (have_ro)
				rc = errf(err, errlen, -EINVAL, "--disk: 'readonly' given twice");
			have_ro = o->readonly = true;
		} else if (!eq) {
			rc = errf(err, errlen, -EINVAL, "--disk: '%s' is not key=value " WANT, tok);
		} else if (!strncmp(tok, "path=", 5)) {
			if (have_path)
				rc = errf(err, errlen, -EINVAL, "--disk: 'path' given twice");
			else if (!eq[1])
				rc = errf(err, errlen, -EINVAL, "--disk: empty path");
			else if (strlen(eq + 1) >= DISKOPT_PATH_MAX)
				rc = errf(err, errlen, -EINVAL, "--disk: path too long");
			else
				strcpy(o->path, eq + 1);
			have_path = true;
		} else if (!strncmp(tok, "id=", 3)) {
			if (have_id)
				rc = errf(err, errlen, -EINVAL, "--disk: 'id' given twice");
			else if (!id_valid(eq + 1))
				rc = errf(err, errlen, -EINVAL,
					  "--disk: bad id '%s' (1..%d printable characters, no ',' or space)",
					  eq + 1, DISKOPT_ID_MAX);
			else
				strcpy(o->id, eq + 1);
			have_id = true;
		} else {
			*eq = '\0';
			rc = errf(err, errlen, -EINVAL, "--disk: unknown key '%s' " WANT, tok);
		}
	}
	free(buf);
	if (!rc && !have_path)
		rc = errf(err, errlen, -EINVAL, "--disk: path= is required " WANT);
	return rc;
}
