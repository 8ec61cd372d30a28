/* vmm_priv.h — the inside of struct vmm, shared by the files that make up vmm/vmm*.c. */
#ifndef DOPPEL_VMM_PRIV_H
#define DOPPEL_VMM_PRIV_H

#include <ev.h>
#include <pthread.h>
#include <stdint.h>

#include "vmm/tx_hook.h"
#include "vmm/vmm.h"

struct virtio_net;
struct virtio_blk;
struct evlog;
struct vmm_http;

/* One virtio-net device and what the host learned about the guest behind it (for announcements
 * after failover or migration; carried in the stream as the "netN-host" device record). */
struct vmm_net {
	struct vmm *v;
	int idx;
	struct virtio_net *dev;
	uint8_t mac[6];
	uint32_t ip4; /* network order; 0 = not seen yet */
	uint8_t ip6[16];
	bool have_ip6;
};

struct vmm_cmd {
	char name[32];
	vmm_cmd_fn fn;
	void *opaque;
};

/* The console client (console.c): at most one; fd and counters out are shared with the vCPU threads. */
struct vmm_console {
	pthread_mutex_t lock; /* fd, bytes_out, dropped */
	int fd; /* -1: none */
	bool attached; /* loop thread */
	ev_io rio;
	uint64_t bytes_in, bytes_out, dropped, sessions;
};

struct vmm {
	struct vmm_opts o;
	char name[65];
	char ctl_path[256];
	struct ev_loop *loop;
	struct vm *vm;
	struct uart *uart;
	int serial_fd;
	bool own_serial_fd;
	bool test_hooks; /* DOPPEL_TEST_HOOKS=1 at start: hidden test-only commands */
	struct ctl_server *ctl;
	ev_async exit_async;
	ev_signal sigint_w, sigterm_w;
	ev_io stdin_w;
	bool stdin_active;
	uint64_t start_ns;
	int stop_status; /* -1: none requested */
	struct vmm_cmd cmds[VMM_MAX_CMDS];
	int nr_cmds;
	struct {
		vmm_status_fn fn;
		void *opaque;
	} status_hooks[VMM_MAX_STATUS_HOOKS];
	int nr_status_hooks;
	struct {
		vmm_exit_fn fn;
		void *opaque;
	} exit_hooks[VMM_MAX_EXIT_HOOKS];
	int nr_exit_hooks;
	struct vmm_net net[VMM_MAX_NETS];
	int nr_net;
	struct virtio_blk *disk[VMM_MAX_DISKS];
	int nr_disk;
	struct vmm_tx_slot tx; /* the output hook (netbuf) */
	vmm_rx_hook rx_hook; /* loop thread */
	void *rx_hook_opaque;
	bool held; /* vCPUs not started yet (standby / incoming), or parked again (reheld) */
	bool reheld; /* held by vmm_hold_vcpus: the vCPUs exist and are paused */
	bool user_paused; /* `doppel pause` holds the VM */
	struct evlog *ev; /* the event log (never NULL after vmm_create) */
	struct {
		vmm_metrics_fn fn;
		void *opaque;
	} metrics_hooks[VMM_MAX_METRICS_HOOKS];
	int nr_metrics_hooks;
	struct vmm_http *http; /* --metrics server, NULL when not asked for */
	struct vmm_console console;
	bool console_ready; /* vmm_console_init done */
	char reg_file[320]; /* the registry entry (vmm/registry.h), "" when none */
};

/* vmm.c */
struct json_object *vmm_status_json(struct vmm *v); /* the status reply (loop thread) */

/* vmm_metrics.c (loop thread) */
/* The whole Prometheus text (malloc'd, NUL-terminated), or NULL when out of memory. */
char *vmm_metrics_text(struct vmm *v);
/* What the status page polls: status, the epoch timeline, the last failover (a new object). */
struct json_object *vmm_page_json(struct vmm *v);
struct json_object *vmm_cmd_events(struct vmm *v, struct json_object *req);

/* vmm_http.c */
/* Serve addr ("ADDR:PORT", "[IPv6]:PORT") with libmicrohttpd on its own thread. The handler asks the
 * loop for each page (ev_async) and waits up to 2 s. Call on the loop thread before ev_run. */
int vmm_http_start(struct vmm *v, const char *addr, char *err, size_t errlen);
void vmm_http_stop(struct vmm *v);
/* The status page (one HTML document, inline CSS/JS/SVG). */
extern const char vmm_status_page_html[];

/* vmm_net.c */
/* Attach the --net devices (virtio-net "netN" + its "netN-host" record each; the VM owns and detaches
 * them in vm_destroy) and append their virtio_mmio.device= fragments to cmdline. */
int vmm_net_attach_all(struct vmm *v, char *cmdline, size_t cmdlen, char *err, size_t errlen);
void vmm_net_rx_enable_all(struct vmm *v, bool on);

/* vmm_disk.c */
/* Attach the --disk devices (virtio-blk "diskN"; the VM owns and detaches them in vm_destroy) and
 * append their virtio_mmio.device= fragments to cmdline. */
int vmm_disk_attach_all(struct vmm *v, char *cmdline, size_t cmdlen, char *err, size_t errlen);
/* Run what the disks hold: requests restored in flight (from a snapshot or a checkpoint). */
void vmm_disk_kick_all(struct vmm *v);

/* console.c */
void vmm_console_init(struct vmm *v); /* after the UART is attached */
void vmm_console_fini(struct vmm *v); /* before the VM is destroyed */
struct json_object *vmm_console_cmd(struct vmm *v); /* the "console" control command */
void vmm_console_status(struct vmm *v, struct json_object *status);

#endif
