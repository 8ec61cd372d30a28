/* vmm.c — one running VM process: builds the VM and its devices, serves control, runs the loop. */
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hv/pvh.h"
#include "hv/dev/uart.h"
#include "common/parse.h"
#include "vmm/control.h"
#include "vmm/event.h"
#include "vmm/vmm.h"
#include "vmm/vmm_priv.h"
#include "vmm/sandbox.h"
#include "vmm/registry.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/errf.h"

/* ---- control commands ------------------------------------------------------------------------- */

struct json_object *vmm_status_json(struct vmm *v)
{
	struct json_object *o = json_object_new_object(), *p = json_object_new_object();
	struct vm_pause_stats ps;

	vm_pause_stats(v->vm, &ps);
	json_object_object_add(o, "name", json_object_new_string(v->name));
	json_object_object_add(o, "state", json_object_new_string(vm_state_name(vm_get_state(v->vm))));
	json_object_object_add(o, "pid", json_object_new_int(getpid()));
	json_object_object_add(o, "vcpus", json_object_new_int(vm_nr_vcpus(v->vm)));
	json_object_object_add(o, "mem_bytes", json_object_new_int64((int64_t)vm_mem(v->vm)->size));
	json_object_object_add(o, "uptime_s", json_object_new_double((double)(now_ns() - v->start_ns) / 1e9));
	json_object_object_add(o, "exits", json_object_new_int64((int64_t)vm_exit_count(v->vm)));
	{
		uint64_t waits, wakeups;

		vm_idle_stats(v->vm, &waits, &wakeups);
		json_object_object_add(o, "idle_waits", json_object_new_int64((int64_t)waits));
		json_object_object_add(o, "idle_wakeups", json_object_new_int64((int64_t)wakeups));
	}
	json_object_object_add(p, "count", json_object_new_int64((int64_t)ps.count));
	json_object_object_add(p, "last_us", json_object_new_double((double)ps.last_ns / 1e3));
	json_object_object_add(p, "max_us", json_object_new_double((double)ps.max_ns / 1e3));
	json_object_object_add(
		p, "mean_us",
		json_object_new_double(ps.count ? (double)ps.total_ns / 1e3 / (double)ps.count : 0));
	json_object_object_add(o, "pause", p);
	vmm_console_status(v, o);
	for (int i = 0; i < v->nr_status_hooks; i++)
		v->status_hooks[i].fn(v, o, v->status_hooks[i].opaque);
	return o;
}

static struct json_object *pause_reply(struct vmm *v, const char *state)
{
	struct json_object *o = json_object_new_object();
	struct vm_pause_stats ps;

	vm_pause_stats(v->vm, &ps);
	json_object_object_add(o, "state", json_object_new_string(state));
	json_object_object_add(o, "pause_latency_us", json_object_new_double((double)ps.last_ns / 1e3));
	return o;
}

/* {"state": state, "reason": why} for a "state" event. */
static struct json_object *state_fields(const char *state, const char *why)
{
	struct json_object *f = json_object_new_object();

	json_object_object_add(f, "state", json_object_new_string(state));
	json_object_object_add(f, "reason", json_object_new_string(why));
	return f;
}

/* What `doppel run` needs to start a matching copy (a standby or a destination with the same
 * devices): the `config` command (doppel drill). */
static struct json_object *config_json(struct vmm *v)
{
	struct json_object *o = json_object_new_object(), *net = json_object_new_array(),
			   *disk = json_object_new_array();

	json_object_object_add(o, "name", json_object_new_string(v->name));
	json_object_object_add(o, "mem", json_object_new_int64((int64_t)vm_mem(v->vm)->size));
	json_object_object_add(o, "vcpus", json_object_new_int(vm_nr_vcpus(v->vm)));
	if (v->o.kernel)
		json_object_object_add(o, "kernel", json_object_new_string(v->o.kernel));
	if (v->o.cmdline)
		json_object_object_add(o, "cmdline", json_object_new_string(v->o.cmdline));
	json_object_object_add(o, "serial", json_object_new_string(v->o.serial ? v->o.serial : "stdio"));
	json_object_object_add(o, "control", json_object_new_string(v->ctl_path));
	for (int i = 0; i < v->o.nr_net; i++)
		json_object_array_add(net, json_object_new_string(v->o.net[i]));
	for (int i = 0; i < v->o.nr_disk; i++)
		json_object_array_add(disk, json_object_new_string(v->o.disk[i]));
	json_object_object_add(o, "net", net);
	json_object_object_add(o, "disk", disk);
	json_object_object_add(o, "pid", json_object_new_int((int)getpid()));
	return o;
}

static struct json_object *handle(void *opaque, const char *cmd, struct json_object *req)
{
	struct vmm *v = opaque;
	int rc;

	if (!strcmp(cmd, "status"))
		return vmm_status_json(v);
	if (!strcmp(cmd, "events"))
		return vmm_cmd_events(v, req);
	if (!strcmp(cmd, "config"))
		return config_json(v);
	if (!strcmp(cmd, "metrics")) {
		char *text = vmm_metrics_text(v);
		struct json_object *o = text ? json_object_new_object() : NULL;

		if (o)
			json_object_object_add(o, "text", json_object_new_string(text));
		free(text);
		return o ? o : ctl_error("out of memory");
	}
	/* The operator's pause is one hold among others (checkpoints, throttling): idempotent here. */
	if (!strcmp(cmd, "pause")) {
		if (v->held)
			return ctl_refused("%s is not running", v->name);
		if (!v->user_paused) {
			rc = vm_pause(v->vm);
			if (rc)
				return ctl_error("cannot pause %s: %s", v->name, strerror(-rc));
			v->user_paused = true;
			vmm_event(v, "state", state_fields("paused", "doppel pause"));
		}
		return pause_reply(v, vm_state_name(vm_get_state(v->vm)));
	}
	if (!strcmp(cmd, "resume")) {
		if (v->user_paused) {
			rc = vm_resume(v->vm);
			if (rc)
				return ctl_error("cannot resume %s: %s", v->name, strerror(-rc));
			v->user_paused = false;
			vmm_event(v, "state", state_fields("running", "doppel resume"));
		}
		return pause_reply(v, vm_state_name(vm_get_state(v->vm)));
	}
	if (!strcmp(cmd, "stop")) {
		vmm_stop(v, 0);
		return json_object_new_object();
	}
	if (!strcmp(cmd, "sandbox-selftest") && v->test_hooks) {
		/* hidden; DOPPEL_TEST_HOOKS=1 only: proves the filter covers threads (tests/system) */
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "unshare", json_object_new_int(vmm_sandbox_selftest()));
		return o;
	}
	if (!strcmp(cmd, "console"))
		return vmm_console_cmd(v);
	for (int i = 0; i < v->nr_cmds; i++)
		if (!strcmp(cmd, v->cmds[i].name))
			return v->cmds[i].fn(v, req, v->cmds[i].opaque);
	return NULL;
}

int vmm_register_cmd(struct vmm *v, const char *name, vmm_cmd_fn fn, void *opaque)
{
	if (v->nr_cmds >= VMM_MAX_CMDS || strlen(name) >= sizeof(v->cmds[0].name))
		return -ENOSPC;
	for (int i = 0; i < v->nr_cmds; i++)
		if (!strcmp(v->cmds[i].name, name))
			return -EEXIST;
	snprintf(v->cmds[v->nr_cmds].name, sizeof(v->cmds[0].name), "%s", name);
	v->cmds[v->nr_cmds].fn = fn;
	v->cmds[v->nr_cmds].opaque = opaque;
	v->nr_cmds++;
	return 0;
}

void *vmm_cmd_opaque(struct vmm *v, const char *name)
{
	for (int i = 0; i < v->nr_cmds; i++)
		if (!strcmp(v->cmds[i].name, name))
			return v->cmds[i].opaque;
	return NULL;
}

struct ctl_conn *vmm_ctl_current(struct vmm *v)
{
	return ctl_current_conn(v->ctl);
}

bool vmm_booted_kernel(const struct vmm *v)
{
	return v->o.kernel != NULL;
}

int vmm_add_exit_hook(struct vmm *v, vmm_exit_fn fn, void *opaque)
{
	if (v->nr_exit_hooks >= VMM_MAX_EXIT_HOOKS)
		return -ENOSPC;
	v->exit_hooks[v->nr_exit_hooks].fn = fn;
	v->exit_hooks[v->nr_exit_hooks].opaque = opaque;
	v->nr_exit_hooks++;
	return 0;
}

int vmm_add_status_hook(struct vmm *v, vmm_status_fn fn, void *opaque)
{
	if (v->nr_status_hooks >= VMM_MAX_STATUS_HOOKS)
		return -ENOSPC;
	v->status_hooks[v->nr_status_hooks].fn = fn;
	v->status_hooks[v->nr_status_hooks].opaque = opaque;
	v->nr_status_hooks++;
	return 0;
}

/* ---- loop plumbing ---------------------------------------------------------------------------- */

/* vCPU thread (or any thread) -> loop: the VM has stopped. */
static void on_vm_exit(void *opaque)
{
	struct vmm *v = opaque;

	ev_async_send(v->loop, &v->exit_async);
}

static void exit_async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	(void)w;
	(void)revents;
	ev_break(loop, EVBREAK_ALL);
}

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct vmm *v = w->data;

	(void)loop;
	(void)revents;
	vmm_stop(v, 0);
}

static void stdin_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct vmm *v = w->data;
	char buf[256];
	ssize_t n = read(w->fd, buf, sizeof(buf));

	(void)revents;
	if (n > 0) {
		uart_input(v->uart, buf, (size_t)n);
	} else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
		ev_io_stop(loop, w);
		v->stdin_active = false;
	}
}

void vmm_stop(struct vmm *v, int status)
{
	if (v->stop_status < 0)
		v->stop_status = status;
	vm_stop(v->vm, status);
}

/* ---- create / run / destroy ------------------------------------------------------------------- */

static int open_serial(struct vmm *v, char *err, size_t errlen)
{
	const char *s = v->o.serial ? v->o.serial : "stdio";

	if (!strcmp(s, "stdio")) {
		v->serial_fd = STDOUT_FILENO;
		return 0;
	}
	if (!strcmp(s, "none")) {
		v->serial_fd = -1;
		return 0;
	}
	if (!strncmp(s, "file:", 5) && s[5]) {
		struct stat st;
		/* 0600: the console may carry what the guest prints (secrets too); an existing
		 * regular file is narrowed through the descriptor, never by path */
		v->serial_fd = open(s + 5, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
		if (v->serial_fd < 0)
			return errf(err, errlen, -errno, "cannot open serial file %s: %s", s + 5,
				    strerror(errno));
		if (fstat(v->serial_fd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 077))
			(void)fchmod(v->serial_fd, 0600);
		v->own_serial_fd = true;
		return 0;
	}
	return errf(err, errlen, -EINVAL, "bad --serial '%s' (expected stdio, file:PATH or none)", s);
}

static int open_events(struct vmm *v, char *err, size_t errlen)
{
	char def[512];
	const char *path = v->o.event_log;

	if (!path) {
		path = vmm_event_log_default(v->name, v->o.control, def, sizeof(def));
		if (!path)
			return errf(err, errlen, -ENAMETOOLONG,
				    "default event log path too long: use --event-log");
	} else if (!strcmp(path, "none")) {
		path = NULL;
	}
	return evlog_open(&v->ev, path, v->name, 0, err, errlen);
}

int vmm_create(struct vmm **out, const struct vmm_opts *o, char *err, size_t errlen)
{
	struct vmm *v = calloc(1, sizeof(*v));
	struct vm_config cfg;
	char cmdline[PVH_CMDLINE_MAX];
	int rc;

	*out = NULL;
	if (!v)
		return -ENOMEM;
	v->o = *o;
	v->serial_fd = -1;
	v->stop_status = -1;
	v->held = o->hold;
	v->test_hooks = getenv("DOPPEL_TEST_HOOKS") && !strcmp(getenv("DOPPEL_TEST_HOOKS"), "1");
	snprintf(v->name, sizeof(v->name), "%s", o->name ? o->name : "vm");
	if (!cli_name_valid(v->name)) {
		rc = errf(err, errlen, -EINVAL, "bad VM name '%s' (1-64 of A-Z a-z 0-9 . _ -)", v->name);
		goto err;
	}
	if (o->control)
		snprintf(v->ctl_path, sizeof(v->ctl_path), "%s", o->control);
	else
		ctl_default_path(v->name, v->ctl_path, sizeof(v->ctl_path));
	rc = open_events(v, err, errlen);
	if (rc)
		goto err;
	cfg = (struct vm_config){.name = v->name,
				 .mem_size = o->mem ? o->mem : 256ull << 20,
				 .nr_vcpus = o->vcpus ? o->vcpus : 1,
				 .mem_policy = o->mem_policy,
				 .cpus = o->cpus,
				 .nr_cpus = o->nr_cpus};
	rc = vm_create(&cfg, &v->vm, err, errlen);
	if (rc)
		goto err;
	v->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
	if (!v->loop) {
		rc = errf(err, errlen, -ENOMEM, "cannot create event loop");
		goto err;
	}
	rc = open_serial(v, err, errlen);
	if (rc)
		goto err;
	rc = uart_attach(v->vm, UART_COM1_BASE, v->serial_fd, &v->uart);
	if (rc) {
		errf(err, errlen, rc, "cannot attach UART: %s", strerror(-rc));
		goto err;
	}
	vmm_console_init(v);
	v->console_ready = true;
	snprintf(cmdline, sizeof(cmdline), "%s", o->cmdline ? o->cmdline : "");
	rc = vmm_net_attach_all(v, cmdline, sizeof(cmdline), err, errlen);
	if (rc)
		goto err;
	rc = vmm_disk_attach_all(v, cmdline, sizeof(cmdline), err, errlen);
	if (rc)
		goto err;
	if (o->restore) {
		rc = o->restore_fn ? o->restore_fn(v, o->restore, err, errlen)
				   : errf(err, errlen, -EINVAL, "no restore function for %s", o->restore);
		if (rc)
			goto err;
		vmm_disk_kick_all(v); /* requests in flight when the snapshot was taken run again */
	} else if (o->kernel) {
		struct pvh_image img;
		rc = pvh_load_file(vm_mem(v->vm), o->kernel, cmdline, &img, err, errlen);
		if (rc)
			goto err;
		rc = vm_set_pvh_entry(v->vm, img.entry, img.start_info);
		if (rc) {
			errf(err, errlen, rc, "cannot set boot vCPU state: %s", strerror(-rc));
			goto err;
		}
	}
	ev_async_init(&v->exit_async, exit_async_cb);
	ev_async_start(v->loop, &v->exit_async);
	vm_set_exit_cb(v->vm, on_vm_exit, v);
	*out = v;
	return 0;
err:
	vmm_destroy(v);
	return rc;
}

int vmm_run(struct vmm *v, bool start_paused)
{
	char err[256];
	int rc, status;

	/* SIGINT/SIGTERM stop the VM cleanly from before anyone can see it (its socket, READY=1). */
	ev_signal_init(&v->sigint_w, signal_cb, SIGINT);
	ev_signal_init(&v->sigterm_w, signal_cb, SIGTERM);
	v->sigint_w.data = v->sigterm_w.data = v;
	ev_signal_start(v->loop, &v->sigint_w);
	ev_signal_start(v->loop, &v->sigterm_w);
	/* The control socket appears only now, when everything (a standby's or a migration target's
	 * listener, the --metrics server) is set up: a client that sees it may use the VM at once. */
	if (v->o.metrics && vmm_http_start(v, v->o.metrics, err, sizeof(err))) {
		log_error("vmm", v->name, "%s", err);
		v->stop_status = 1; /* the host's failure, not the guest's exit */
		return 1;
	}
	rc = ctl_server_start(&v->ctl, v->loop, v->ctl_path, v->o.control_group_set ? v->o.control_group : -1,
			      handle, v, err, sizeof(err));
	if (rc) {
		log_error("vmm", v->name, "%s", err);
		v->stop_status = 1;
		return 1;
	}
	log_debug("vmm", v->name, "control socket %s", v->ctl_path);
	if (vmreg_add(v->name, ctl_server_path(v->ctl), v->reg_file, sizeof(v->reg_file), err, sizeof(err))) {
		log_warn("vmm", v->name, "not registered for doppel list: %s", err);
		v->reg_file[0] = '\0';
	}
	/* Everything that needs more is done (KVM, RAM, taps, disks, listeners, the control socket,
	 * the registry entry): from here on the allowlist of vmm/sandbox.c, before any vCPU thread
	 * exists and before READY=1. */
	rc = vmm_sandbox_apply(v->o.sandbox, err, sizeof(err));
	if (rc) {
		log_error("vmm", v->name, "%s", err);
		ctl_server_stop(v->ctl);
		v->ctl = NULL;
		v->stop_status = 1;
		return 1;
	}
	if (v->o.sandbox == VMM_SANDBOX_OFF)
		log_info("vmm", v->name, "sandbox off: every system call and capability stays available");

	if (v->o.serial == NULL || !strcmp(v->o.serial, "stdio")) {
		int fl = fcntl(STDIN_FILENO, F_GETFL);
		if (fl >= 0 && fcntl(STDIN_FILENO, F_SETFL, fl | O_NONBLOCK) == 0) {
			ev_io_init(&v->stdin_w, stdin_cb, STDIN_FILENO, EV_READ);
			v->stdin_w.data = v;
			ev_io_start(v->loop, &v->stdin_w);
			v->stdin_active = true;
		}
	}
	v->start_ns = now_ns();
	if (start_paused && vm_pause(v->vm) == 0) /* a hold before start: vCPUs start parked */
		v->user_paused = true;
	rc = v->held ? 0 : vm_start(v->vm);
	if (rc == 0 && v->o.ready_fn) /* the VM runs (or is held, as asked) */
		v->o.ready_fn(v, v->o.ready_opaque);
	vmm_event(v, "state",
		  state_fields(rc	      ? "failed"
			       : v->held      ? "held"
			       : start_paused ? "paused"
					      : "running",
			       "started"));
	if (rc == 0)
		ev_run(v->loop, 0);
	if (v->held)
		vm_stop(v->vm, v->stop_status < 0 ? 0 : v->stop_status);
	status = vm_wait(v->vm);
	if (*vm_error(v->vm))
		log_error("vmm", v->name, "%s", vm_error(v->vm));
	log_debug("vmm", v->name, "stopped, exit status %d", status);
	struct json_object *f = state_fields("stopped", *vm_error(v->vm) ? vm_error(v->vm) : "exit");
	json_object_object_add(f, "exit_status", json_object_new_int(status));
	vmm_event(v, "state", f);
	if (v->stdin_active) {
		ev_io_stop(v->loop, &v->stdin_w);
		int fl = fcntl(STDIN_FILENO, F_GETFL);
		if (fl >= 0)
			fcntl(STDIN_FILENO, F_SETFL, fl & ~O_NONBLOCK);
	}
	return status;
}

void vmm_destroy(struct vmm *v)
{
	if (!v)
		return;
	vmm_http_stop(v);
	vmreg_remove(v->reg_file);
	if (v->ctl)
		ctl_server_stop(v->ctl);
	if (v->vm) {
		vm_stop(v->vm, 0);
		vm_wait(v->vm);
	}
	while (v->nr_exit_hooks > 0) {
		v->nr_exit_hooks--;
		v->exit_hooks[v->nr_exit_hooks].fn(v, v->exit_hooks[v->nr_exit_hooks].opaque);
	}
	if (v->console_ready)
		vmm_console_fini(v);
	vm_destroy(v->vm); /* detaches the UART and the network devices */
	if (v->own_serial_fd && v->serial_fd >= 0)
		close(v->serial_fd);
	if (v->loop)
		ev_loop_destroy(v->loop);
	evlog_close(v->ev); /* last: exit hooks may still record events */
	free(v);
}

int vmm_start_vcpus(struct vmm *v)
{
	int rc;

	if (!v->held)
		return -EALREADY;
	v->held = false;
	vmm_net_rx_enable_all(v, true);
	vmm_disk_kick_all(v);
	v->start_ns = now_ns();
	rc = v->reheld ? vm_resume(v->vm) : vm_start(v->vm); /* reheld: started once, parked */
	v->reheld = false;
	vmm_event(v, "state",
		  state_fields(rc ? "failed" : "running", "vCPUs started (takeover or migration)"));
	return rc;
}

int vmm_hold_vcpus(struct vmm *v)
{
	int rc;

	if (v->held)
		return -EALREADY;
	rc = vm_pause(v->vm);
	if (rc)
		return rc;
	v->held = v->reheld = true;
	vmm_net_rx_enable_all(v, false);
	vmm_event(v, "state", state_fields("held", "vCPUs parked (role change to standby)"));
	return 0;
}

bool vmm_guest_exited(const struct vmm *v)
{
	return v->stop_status < 0 && !*vm_error(v->vm);
}

bool vmm_held(const struct vmm *v)
{
	return v->held;
}

struct vm *vmm_vm(struct vmm *v)
{
	return v->vm;
}

struct ev_loop *vmm_loop(struct vmm *v)
{
	return v->loop;
}

const char *vmm_name(const struct vmm *v)
{
	return v->name;
}

struct uart *vmm_uart(struct vmm *v)
{
	return v->uart;
}
