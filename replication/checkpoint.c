/* checkpoint.c — machine state of a paused VM: capture, write, apply. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hv/dirty.h"
#include "common/errf.h"
#include "replication/checkpoint.h"

/* ---- machine state ---------------------------------------------------------------------------- */

void ckpt_state_free(struct ckpt_state *s)
{
	for (uint32_t i = 0; i < HV_MAX_VCPUS; i++)
		free(s->vcpu[i].data);
	for (int i = 0; i < s->nr_dev; i++)
		free(s->dev[i].data);
	memset(s, 0, sizeof(*s));
}

static int blob_set(struct ckpt_blob *b, const char *name, uint32_t kind, const void *data, size_t len)
{
	uint8_t *p = malloc(len ? len : 1);

	if (!p)
		return -ENOMEM;
	memcpy(p, data, len);
	free(b->data);
	b->data = p;
	b->len = len;
	b->kind = kind;
	snprintf(b->name, sizeof(b->name), "%s", name);
	return 0;
}

int ckpt_state_capture(struct ckpt_state *s, struct vm *vm, char *err, size_t errlen)
{
	size_t max = vm_vcpu_state_max(vm), used;
	uint8_t *buf;
	int rc = 0;

	ckpt_state_free(s);
	if (vm_platform_state_max(vm) > max)
		max = vm_platform_state_max(vm);
	for (int i = 0; i < vm_devstate_count(vm); i++)
		if (vm_devstate_get(vm, i)->max > max)
			max = vm_devstate_get(vm, i)->max;
	buf = malloc(max);
	if (!buf)
		return -ENOMEM;
	s->nr_vcpus = (uint32_t)vm_nr_vcpus(vm);
	for (uint32_t i = 0; i < s->nr_vcpus; i++) {
		rc = vm_vcpu_save(vm, (int)i, buf, max, &used, err, errlen);
		if (rc || (rc = blob_set(&s->vcpu[i], "vcpu", 0, buf, used)))
			goto out;
	}
	rc = vm_platform_save(vm, buf, max, &used, err, errlen);
	if (rc || (rc = blob_set(&s->dev[s->nr_dev++], vm_platform_state_name(vm), CKPT_DEV_KVM, buf, used)))
		goto out;
	for (int i = 0; i < vm_devstate_count(vm); i++) {
		const struct vm_devstate *d = vm_devstate_get(vm, i);
		int n = d->save(d->opaque, buf, d->max);
		if (n < 0) {
			rc = errf(err, errlen, n, "cannot save device %s: %s", d->name, strerror(-n));
			goto out;
		}
		rc = blob_set(&s->dev[s->nr_dev++], d->name, CKPT_DEV_HV, buf, (size_t)n);
		if (rc)
			goto out;
	}
out:
	free(buf);
	if (rc)
		ckpt_state_free(s);
	return rc;
}

int ckpt_state_write(struct sr_ctx *w, const struct ckpt_state *s)
{
	int rc;

	for (uint32_t i = 0; i < s->nr_vcpus; i++)
		if ((rc = sr_write_vcpu(w, i, s->vcpu[i].data, s->vcpu[i].len)))
			return rc;
	for (int i = 0; i < s->nr_dev; i++)
		if ((rc = sr_write_device(w, s->dev[i].kind, s->dev[i].name, s->dev[i].data, s->dev[i].len)))
			return rc;
	return 0;
}

static const struct ckpt_blob *find_dev(const struct ckpt_state *s, uint32_t kind, const char *name)
{
	for (int i = 0; i < s->nr_dev; i++)
		if (s->dev[i].kind == kind && !strcmp(s->dev[i].name, name))
			return &s->dev[i];
	return NULL;
}

int ckpt_state_apply(const struct ckpt_state *s, struct vm *vm, char *err, size_t errlen)
{
	const struct ckpt_blob *kvm = find_dev(s, CKPT_DEV_KVM, vm_platform_state_name(vm));
	int rc;

	/* Validate presence of everything before touching anything. */
	if (s->nr_vcpus != (uint32_t)vm_nr_vcpus(vm))
		return errf(err, errlen, -EINVAL, "state has %u vCPUs, VM has %d", s->nr_vcpus,
			    vm_nr_vcpus(vm));
	for (uint32_t i = 0; i < s->nr_vcpus; i++)
		if (!s->vcpu[i].data)
			return errf(err, errlen, -EINVAL, "state lacks vCPU %u", i);
	if (!kvm)
		return errf(err, errlen, -EINVAL, "state lacks the %s record", vm_platform_state_name(vm));
	for (int i = 0; i < vm_devstate_count(vm); i++)
		if (!find_dev(s, CKPT_DEV_HV, vm_devstate_get(vm, i)->name))
			return errf(err, errlen, -EINVAL, "state lacks device %s",
				    vm_devstate_get(vm, i)->name);
	for (uint32_t i = 0; i < s->nr_vcpus; i++) {
		rc = vm_vcpu_restore(vm, (int)i, s->vcpu[i].data, s->vcpu[i].len, err, errlen);
		if (rc)
			return rc;
	}
	for (int i = 0; i < vm_devstate_count(vm); i++) {
		const struct vm_devstate *d = vm_devstate_get(vm, i);
		const struct ckpt_blob *b = find_dev(s, CKPT_DEV_HV, d->name);
		rc = d->restore(d->opaque, b->data, b->len);
		if (rc)
			return errf(err, errlen, rc, "device %s rejected its state: %s", d->name,
				    strerror(-rc));
	}
	return vm_platform_restore(vm, kvm->data, kvm->len, err, errlen);
}

int ckpt_info_write(struct sr_ctx *w, const struct ckpt_info *info)
{
	return sr_write_device(w, CKPT_DEV_INFO, "info", info, sizeof(*info));
}

int ckpt_blob_set(struct ckpt_blob *b, const char *name, uint32_t kind, const void *data, size_t len)
{
	return blob_set(b, name, kind, data, len);
}

struct ckpt_blob *ckpt_state_find(const struct ckpt_state *s, uint32_t kind, const char *name)
{
	return (struct ckpt_blob *)find_dev(s, kind, name);
}
