/* registry.c — the host's VM registry (registry.h): NAME.PID.json files under the runtime directory. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "common/errf.h"
#include "common/parse.h"
#include "vmm/control.h"
#include "vmm/registry.h"

#define VMREG_MAX_FILE 4096

const char *vmreg_dir(char *buf, size_t len)
{
	const char *base = getenv("DOPPEL_RUNTIME_DIR");
	int n;

	if (!base || !base[0])
		base = CTL_DIR;
	n = snprintf(buf, len, "%s/vms", base);
	return n < 0 || (size_t)n >= len ? NULL : buf;
}

static int mkdirs(const char *dir, char *err, size_t errlen)
{
	char tmp[256];

	if (snprintf(tmp, sizeof(tmp), "%s", dir) >= (int)sizeof(tmp))
		return errf(err, errlen, -ENAMETOOLONG, "registry path too long");
	for (char *p = tmp + 1;; p++) {
		char c = *p;

		if (c != '/' && c != '\0')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
			return errf(err, errlen, -errno, "cannot create %s: %s", tmp, strerror(errno));
		*p = c;
		if (!c)
			return 0;
	}
}

int vmreg_add(const char *name, const char *control, char *file, size_t file_len, char *err, size_t errlen)
{
	char dir[256], tmp[320];
	struct json_object *o;
	struct timespec ts;
	const char *s;
	int fd, rc;
	size_t len;

	if (!vmreg_dir(dir, sizeof(dir)))
		return errf(err, errlen, -ENAMETOOLONG, "registry path too long");
	rc = mkdirs(dir, err, errlen);
	if (rc)
		return rc;
	if (snprintf(file, file_len, "%s/%s.%d.json", dir, name, (int)getpid()) >= (int)file_len ||
	    snprintf(tmp, sizeof(tmp), "%s/.%s.%d.tmp", dir, name, (int)getpid()) >= (int)sizeof(tmp))
		return errf(err, errlen, -ENAMETOOLONG, "registry path too long");
	clock_gettime(CLOCK_REALTIME, &ts);
	o = json_object_new_object();
	json_object_object_add(o, "name", json_object_new_string(name));
	json_object_object_add(o, "pid", json_object_new_int((int)getpid()));
	json_object_object_add(o, "control", json_object_new_string(control));
	json_object_object_add(o, "started", json_object_new_double((double)ts.tv_sec + ts.tv_nsec / 1e9));
	s = json_object_to_json_string_ext(o, CTL_JSON_FLAGS);
	len = s ? strlen(s) : 0;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = errf(err, errlen, -errno, "cannot create %s: %s", tmp, strerror(errno));
		goto out;
	}
	if (!s || write(fd, s, len) != (ssize_t)len || write(fd, "\n", 1) != 1) {
		rc = errf(err, errlen, -EIO, "cannot write %s", tmp);
		close(fd);
		unlink(tmp);
		goto out;
	}
	close(fd);
	/* link, not rename: an entry of a live VM with the same name and pid is never replaced */
	unlink(file); /* a leftover of a dead process that had our pid */
	if (link(tmp, file) < 0)
		rc = errf(err, errlen, -errno, "cannot register %s: %s", file, strerror(errno));
	unlink(tmp);
out:
	json_object_put(o);
	return rc;
}

void vmreg_remove(const char *file)
{
	if (file && file[0])
		unlink(file);
}

int vmreg_read(const char *file, struct vmreg_entry *e, char *err, size_t errlen)
{
	struct json_object *o = NULL, *name, *pid, *ctl, *st;
	char buf[VMREG_MAX_FILE];
	ssize_t n;
	int fd, rc = 0;

	memset(e, 0, sizeof(*e));
	fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return errf(err, errlen, -errno, "cannot open %s: %s", file, strerror(errno));
	n = read(fd, buf, sizeof(buf));
	close(fd);
	if (n <= 0 || n >= (ssize_t)sizeof(buf))
		return errf(err, errlen, -EINVAL, "%s: empty or too large", file);
	if (ctl_parse_json(buf, (size_t)n, &o, err, errlen))
		return -EINVAL;
	if (!json_object_object_get_ex(o, "name", &name) || !json_object_is_type(name, json_type_string) ||
	    !cli_name_valid(json_object_get_string(name)) || !json_object_object_get_ex(o, "pid", &pid) ||
	    !json_object_is_type(pid, json_type_int) || json_object_get_int(pid) <= 0 ||
	    !json_object_object_get_ex(o, "control", &ctl) || !json_object_is_type(ctl, json_type_string) ||
	    !json_object_get_string_len(ctl) || json_object_get_string_len(ctl) >= (int)sizeof(e->control)) {
		rc = errf(err, errlen, -EINVAL, "%s: not a registry entry", file);
		goto out;
	}
	snprintf(e->name, sizeof(e->name), "%s", json_object_get_string(name));
	snprintf(e->control, sizeof(e->control), "%s", json_object_get_string(ctl));
	snprintf(e->file, sizeof(e->file), "%s", file);
	e->pid = json_object_get_int(pid);
	if (json_object_object_get_ex(o, "started", &st))
		e->started = json_object_get_double(st);
out:
	json_object_put(o);
	return rc;
}

int vmreg_alive(const struct vmreg_entry *e)
{
	struct sockaddr_un sa;
	char err[128];
	int fd, rc;

	if (kill(e->pid, 0) < 0 && errno != EPERM)
		return 0;
	if (ctl_sockaddr(e->control, &sa, err, sizeof(err)))
		return 0;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 1; /* cannot tell: keep it */
	rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	rc = rc == 0 || errno == EAGAIN || errno == EINPROGRESS;
	close(fd);
	return rc;
}

static int cmp_entry(const void *a, const void *b)
{
	const struct vmreg_entry *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	return c ? c : (x->pid > y->pid) - (x->pid < y->pid);
}

int vmreg_list(struct vmreg_entry **out, char *err, size_t errlen)
{
	struct vmreg_entry *v = NULL, *p;
	char dir[256], path[320], e2[256];
	struct dirent *d;
	int n = 0, cap = 0;
	DIR *dh;

	*out = NULL;
	if (!vmreg_dir(dir, sizeof(dir)))
		return errf(err, errlen, -ENAMETOOLONG, "registry path too long");
	dh = opendir(dir);
	if (!dh)
		return errno == ENOENT
			       ? 0
			       : errf(err, errlen, -errno, "cannot read %s: %s", dir, strerror(errno));
	while ((d = readdir(dh))) {
		size_t l = strlen(d->d_name);

		if (d->d_name[0] == '.' || l < 6 || strcmp(d->d_name + l - 5, ".json"))
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", dir, d->d_name) >= (int)sizeof(path))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			p = realloc(v, (size_t)cap * sizeof(*v));
			if (!p) {
				free(v);
				closedir(dh);
				return errf(err, errlen, -ENOMEM, "out of memory");
			}
			v = p;
		}
		if (vmreg_read(path, &v[n], e2, sizeof(e2)) || !vmreg_alive(&v[n])) {
			unlink(path); /* stale: its VM is gone */
			continue;
		}
		n++;
	}
	closedir(dh);
	if (n)
		qsort(v, (size_t)n, sizeof(*v), cmp_entry);
	*out = v;
	if (!n)
		free(v), *out = NULL;
	return n;
}
