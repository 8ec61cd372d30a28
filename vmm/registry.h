/* registry.h — the host's VM registry: each VM process registers itself under the runtime directory. */
#ifndef DOPPEL_VMM_REGISTRY_H
#define DOPPEL_VMM_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

/* The registry directory: $DOPPEL_RUNTIME_DIR/vms when that is set (tests, unprivileged use), else
 * /run/doppel/vms. One file per VM process and VM: NAME.PID.json, {"name","pid","control","started"}
 * (started: wall-clock seconds), written atomically (temporary file, then link) when the control socket
 * is up and removed when the VM ends. Returns buf, or NULL if it does not fit. */
const char *vmreg_dir(char *buf, size_t len);

struct vmreg_entry {
	char name[65];
	char control[108]; /* the control socket */
	int pid;
	double started; /* wall-clock seconds since the epoch */
	char file[320]; /* the registry file */
};

/* Register a VM whose control socket is `control`. On success *file (file_len bytes) names the entry for
 * vmreg_remove. 0 or -errno with one line in err (the directory is created 0755 when missing). */
int vmreg_add(const char *name, const char *control, char *file, size_t file_len, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Remove an entry made by vmreg_add (NULL or "" is ignored). */
void vmreg_remove(const char *file);

/* Read and validate one entry file. 0 or -EINVAL/-errno with one line in err. */
int vmreg_read(const char *file, struct vmreg_entry *e, char *err, size_t errlen);

/* True when e's process lives and something accepts connections on its control socket. */
int vmreg_alive(const struct vmreg_entry *e);

/* Every live entry, sorted by name then pid, into *out (malloc'd, caller frees); stale ones (dead pid or
 * dead socket) and unreadable ones are removed. Returns the count (>= 0) or -errno with one line in err;
 * a missing directory is an empty registry. */
int vmreg_list(struct vmreg_entry **out, char *err, size_t errlen) __attribute__((warn_unused_result));

#endif
