/* vmm.h — one running VM process: the VM, its devices, the event loop and the control socket. */
#ifndef DOPPEL_VMM_H
#define DOPPEL_VMM_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "hv/hv.h"

struct ev_loop;
struct json_object;
struct uart;
struct vmm;

#define VMM_MAX_NETS 4
#define VMM_MAX_DISKS 4
#define VMM_MAX_CMDS 32
#define VMM_MAX_CPUS 256

struct vmm_opts {
	const char *name; /* VM name; default "vm" */
	const char *kernel; /* PVH ELF (required unless restoring) */
	const char *cmdline; /* guest command line (may be NULL) */
	const char *serial; /* "stdio" (default), "file:PATH" or "none" */
	const char *control; /* control socket path; default /run/doppel/NAME.sock */
	long control_group; /* gid whose members may use the control socket besides root (-1 or 0 with
			     * control_group_set false: none) */
	bool control_group_set;
	uint64_t mem; /* bytes; default 256 MiB */
	int vcpus; /* default 1 */
	const char *restore; /* snapshot file to restore instead of booting a kernel, with restore_fn: */
	/* Restore `path` into the VM of v (devices and disks attached, nothing run yet); 0 or -errno with
	 * err. The caller supplies it (doppel run: snapshot_restore), so the runtime needs no snapshot
	 * code. */
	int (*restore_fn)(struct vmm *v, const char *path, char *err, size_t errlen);
	const char *net[VMM_MAX_NETS]; /* --net option strings, parsed by the network layer */
	int nr_net;
	const char *disk[VMM_MAX_DISKS]; /* --disk option strings, parsed by vmm/diskopt.c */
	int nr_disk;
	bool hold; /* build the VM but start no vCPUs until vmm_start_vcpus (standby, incoming) */
	/* incoming migration: a disk image locked by another process (the source, shared storage) is
	 * opened without its lock, taken at the switchover (docs/migration.md, "Shared storage") */
	bool disk_lock_later;
	/* Event log file (JSON lines): NULL for the default (vmm_event_log_default), "none" for memory
	 * only. */
	const char *event_log;
	const char *metrics; /* NULL, or ADDR:PORT to serve /metrics, / and /status.json over HTTP */
	const int *cpus; /* pin the vCPU threads to these host CPUs (NULL: no pinning) */
	int nr_cpus;
	enum hv_mem_policy mem_policy; /* guest RAM: lazy (default), populate or lock */
	int sandbox; /* enum vmm_sandbox (vmm/sandbox.h): 0 off (default), 1 on, 2 log; vmm_run applies it */
	/* Called once on the loop thread when the control socket accepts requests and the vCPUs run
	 * (or are held, for a standby or a migration target): sd_notify, fleet readiness. */
	void (*ready_fn)(struct vmm *v, void *opaque);
	void *ready_opaque;
};

/* ---- control replies ----------------------------------------------------------------------------
 * What a command handler (vmm_register_cmd) returns or sends later. The control protocol itself is
 * vmm/control.h; engines need only this. */
struct ctl_conn;
/* Reply builders. ctl_ok() is {"ok": true}; ctl_error() is {"ok": false, "error": <formatted>}.
 * Both return a new object (NULL only if out of memory). */
struct json_object *ctl_ok(void);
struct json_object *ctl_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A refusal because of the VM's state (not running, already protected, busy, a standby...):
 * {"ok": false, "error": <formatted>, "refused": true}; `doppel` exits 4 on it instead of 1. */
struct json_object *ctl_refused(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Returned by a handler that will answer later with ctl_reply(). Never dereference or free it. */
extern const char ctl_defer_marker;
#define CTL_DEFER ((struct json_object *)(void *)&ctl_defer_marker)

/* Send `reply` (ownership taken, NULL means "internal error") to conn's client and drop the reference
 * from ctl_current_conn(). Thread-safe: may be called from any thread, also from within the handler
 * itself; the reply is written by the loop thread on its next iteration (via an ev_async). If the client
 * has gone away or the server was stopped, the reply is discarded and -ENOTCONN returned; otherwise 0.
 * Calling it twice for one reference is a bug (-EALREADY, reply discarded). */
int ctl_reply(struct ctl_conn *conn, struct json_object *reply);

/* True while the client behind conn is connected (thread-safe; e.g. to cancel long work early). */
bool ctl_conn_alive(struct ctl_conn *conn);

/* A control command beyond the built-ins (status, pause, resume, stop). Runs on the loop thread.
 * Returns a reply object, or CTL_DEFER (below). */
typedef struct json_object *(*vmm_cmd_fn)(struct vmm *v, struct json_object *req, void *opaque);

/* Build the VM: create it, attach devices, load the kernel with PVH (or restore a snapshot).
 * Nothing runs yet and the control socket does not exist yet (vmm_run opens it).
 * Returns 0, or -errno with one line in err (nothing is left behind). */
int vmm_create(struct vmm **out, const struct vmm_opts *o, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Register an extra control command (before vmm_run). Returns 0 or -ENOSPC/-EEXIST. */
int vmm_register_cmd(struct vmm *v, const char *name, vmm_cmd_fn fn, void *opaque)
	__attribute__((warn_unused_result));

/* The opaque pointer a command was registered with (NULL if no such command): lets a subsystem
 * find its per-VM state from the vmm alone. */
void *vmm_cmd_opaque(struct vmm *v, const char *name);
/* Inside a command handler: the requesting client, for a deferred reply (ctl_reply). */
struct ctl_conn *vmm_ctl_current(struct vmm *v);
/* True when the VM booted a kernel in this process (--kernel), i.e. its RAM is not all zero. */
bool vmm_booted_kernel(const struct vmm *v);

/* Run fn(v, opaque) when the VM process ends: in vmm_destroy, on the loop thread, after the vCPUs
 * have stopped and before devices, guest memory or the loop are freed; last registered runs first.
 * Subsystems stop their threads and free their state here. Up to VMM_MAX_EXIT_HOOKS (-ENOSPC). */
#define VMM_MAX_EXIT_HOOKS 8
typedef void (*vmm_exit_fn)(struct vmm *v, void *opaque);
int vmm_add_exit_hook(struct vmm *v, vmm_exit_fn fn, void *opaque) __attribute__((warn_unused_result));

/* Add keys to every status reply: fn fills `status` (an object) on the loop thread. Up to
 * VMM_MAX_STATUS_HOOKS hooks (-ENOSPC beyond). */
#define VMM_MAX_STATUS_HOOKS 4
typedef void (*vmm_status_fn)(struct vmm *v, struct json_object *status, void *opaque);
int vmm_add_status_hook(struct vmm *v, vmm_status_fn fn, void *opaque);

/* Open the control socket, start the vCPUs (unless held or `start_paused`) and run the event loop
 * until the VM stops (guest exit, `doppel stop`, SIGINT/SIGTERM, fatal error). Returns the process
 * exit status: the guest's; 1 with one line on stderr if the control socket cannot be opened (e.g.
 * in use by a running VM). */
int vmm_run(struct vmm *v, bool start_paused) __attribute__((warn_unused_result));

/* After vmm_run: true when the guest ended the VM itself (its exit port), so vmm_run's status is the
 * guest's byte; false when the host stopped it (vmm_stop, a signal, `doppel stop`) or it failed. */
bool vmm_guest_exited(const struct vmm *v);

/* Ask the loop to end with `status` (loop thread or any thread). */
void vmm_stop(struct vmm *v, int status);

void vmm_destroy(struct vmm *v);

/* Start the vCPUs of a VM created with `hold` (after its state arrived): enables network RX.
 * Loop thread. Returns 0 or -errno. */
int vmm_start_vcpus(struct vmm *v) __attribute__((warn_unused_result));
/* The reverse: park the running vCPUs (a hold nothing else resumes) and stop network RX, so the VM
 * is held like a standby; vmm_start_vcpus resumes them. Loop thread. 0, -EALREADY or -errno. */
int vmm_hold_vcpus(struct vmm *v) __attribute__((warn_unused_result));
bool vmm_held(const struct vmm *v);

/* ---- events and metrics ---------------------------------------------------------------------------
 * The event log (vmm/event.h has the format): every state change, protection start/stop, failover,
 * fencing, witness, migration and error event of the VM. */

/* Record an event: `type` is 1-32 of a-z 0-9 -, `fields` an object or NULL (ownership taken). Any
 * thread; never blocks on I/O (a background thread appends it to the file). Returns its seq (>= 1),
 * or -errno (bad type or fields, out of memory). */
int64_t vmm_event(struct vmm *v, const char *type, struct json_object *fields);
/* The newest event of `type` still in memory (a new object; NULL if none). Any thread. */
struct json_object *vmm_event_last(struct vmm *v, const char *type);
/* Event `seq` if still in memory (a new object), else NULL. Any thread. */
struct json_object *vmm_event_get(struct vmm *v, uint64_t seq);
/* The default event log of a VM: its control socket's path with ".sock" replaced by ".events.jsonl"
 * when a control path is given, else /var/lib/doppel/NAME/events.jsonl. Returns buf, or NULL when it
 * does not fit. */
char *vmm_event_log_default(const char *name, const char *control, char *buf, size_t len);

/* Add metrics: fn writes Prometheus text lines (# HELP, # TYPE, samples; names doppel_...) to out.
 * Runs on the loop thread for `doppel metrics` and for every scrape of --metrics. Up to
 * VMM_MAX_METRICS_HOOKS (-ENOSPC beyond). */
#define VMM_MAX_METRICS_HOOKS 4
typedef void (*vmm_metrics_fn)(struct vmm *v, FILE *out, void *opaque);
int vmm_add_metrics_hook(struct vmm *v, vmm_metrics_fn fn, void *opaque);

/* ---- disks -------------------------------------------------------------------------------------- */

/* Number of virtio-blk disks attached (--disk). Remus, snapshots and migration carry them
 * (replication/disk_repl.h, docs/disk.md). */
int vmm_disk_count(const struct vmm *v);
/* Disk i (0 .. vmm_disk_count - 1), or NULL. */
struct virtio_blk;
struct virtio_blk *vmm_disk(struct vmm *v, int i);

/* ---- network ---------------------------------------------------------------------------------- */

/* Output hook (netbuf): when set, every frame the guest transmits goes to fn instead of the tap.
 * Called on a vCPU thread with the device lock held: copy the frame, do not block, do not call back
 * into the device. Release frames later with vmm_net_output. fn NULL restores direct output; a vCPU
 * that loaded the old fn just before may still call it once, with the last non-NULL opaque (which
 * is kept, never NULL): that opaque must stay valid for the VM's life. */
typedef void (*vmm_tx_hook)(void *opaque, int netidx, const void *frame, size_t len);
void vmm_set_tx_hook(struct vmm *v, vmm_tx_hook fn, void *opaque);
/* Write one frame to net device netidx's tap (any thread). 0 or -errno (-EAGAIN: tap full, dropped). */
int vmm_net_output(struct vmm *v, int netidx, const void *frame, size_t len);
int vmm_net_count(const struct vmm *v);
/* Input hook (COLO): fn sees every frame the taps deliver to the guest, on the loop thread, before
 * delivery (the frame is valid during the call only). fn NULL removes it. */
typedef void (*vmm_rx_hook)(void *opaque, int netidx, const void *frame, size_t len);
void vmm_set_rx_hook(struct vmm *v, vmm_rx_hook fn, void *opaque);
/* Deliver one frame into net device netidx of the guest as if its tap had received it (any thread;
 * through the DMA gate, queued in the device while the VM is paused). 0 or -errno (-EINVAL bad
 * netidx, -ENOBUFS device queue full, -ENETDOWN driver not ready, -EMSGSIZE). */
int vmm_net_inject(struct vmm *v, int netidx, const void *frame, size_t len);
/* Take frames from the taps (on) or drop them (off): a COLO secondary runs with its taps off and
 * gets its input through vmm_net_inject. vmm_start_vcpus turns them on. */
void vmm_net_rx_tap(struct vmm *v, bool on);
/* Announce the guest on every network: a gratuitous ARP for the guest's IPv4 address (learned from
 * its own output), an unsolicited neighbour advertisement for its IPv6 address when it has one, and
 * a RARP with its MAC (what QEMU sends) so bridges relearn the port. Returns frames sent. */
int vmm_net_announce(struct vmm *v);

struct vm *vmm_vm(struct vmm *v);
struct ev_loop *vmm_loop(struct vmm *v);
const char *vmm_name(const struct vmm *v);
struct uart *vmm_uart(struct vmm *v);

#endif
