#!/bin/sh
# tls-certs.sh — make a CA and host certificates for doppel's --tls-dir (certtool, GnuTLS).
#
#   scripts/tls-certs.sh OUT NAME...        OUT/ca/{ca.pem,ca-key.pem}, OUT/NAME/{ca.pem,cert.pem,key.pem}
#
# Each host directory is what `--tls-dir` wants (the libvirt/QEMU layout). A host certificate is
# valid for TLS server and client use (a standby accepts, a primary connects; a VM can be either
# over its life), names the host in its CN and as a DNS SAN, and is signed by OUT/ca. An existing
# OUT/ca is reused, so hosts can be added later. Keys are ECDSA P-256, created mode 0600.
# Environment: DAYS (validity, default 365); ACTIVATION/EXPIRATION ("YYYY-MM-DD HH:MM:SS" UTC) to
# make a certificate valid in another time window (the tests make an expired one that way).
set -eu
[ $# -ge 2 ] || { echo "usage: $0 OUT NAME..." >&2; exit 2; }
out=$1; shift
days=${DAYS:-365}
umask 077
mkdir -p "$out/ca"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
if [ ! -f "$out/ca/ca.pem" ]; then
	certtool --generate-privkey --key-type=ecdsa --outfile "$out/ca/ca-key.pem" 2>/dev/null
	printf 'cn = "doppel CA %s"\nca\ncert_signing_key\nexpiration_days = %s\n' "$(basename "$out")" \
		"$((days * 2))" >"$tmp/ca.tmpl"
	certtool --generate-self-signed --load-privkey "$out/ca/ca-key.pem" --template "$tmp/ca.tmpl" \
		--outfile "$out/ca/ca.pem" 2>/dev/null
fi
for name in "$@"; do
	d="$out/$name"
	mkdir -p "$d"
	certtool --generate-privkey --key-type=ecdsa --outfile "$d/key.pem" 2>/dev/null
	{
		printf 'cn = "%s"\ndns_name = "%s"\ntls_www_server\ntls_www_client\nsigning_key\n' "$name" "$name"
		if [ -n "${EXPIRATION:-}" ]; then
			printf 'activation_date = "%s"\nexpiration_date = "%s"\n' "${ACTIVATION:-2020-01-01 00:00:00}" "$EXPIRATION"
		else
			printf 'expiration_days = %s\n' "$days"
		fi
	} >"$tmp/host.tmpl"
	certtool --generate-certificate --load-privkey "$d/key.pem" --load-ca-certificate "$out/ca/ca.pem" \
		--load-ca-privkey "$out/ca/ca-key.pem" --template "$tmp/host.tmpl" --outfile "$d/cert.pem" 2>/dev/null
	cp "$out/ca/ca.pem" "$d/ca.pem"
	echo "$d: ca.pem cert.pem key.pem (CN=$name)"
done
