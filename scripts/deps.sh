#!/usr/bin/env bash
# deps.sh — install the Debian packages doppel builds and tests with; quiet and fast when all are present.
set -euo pipefail
PKGS=(gcc make pkg-config clang clang-format libclang-rt-14-dev
      libzstd-dev libev-dev libnl-3-dev libnl-route-3-dev libjson-c-dev libxxhash-dev libcmocka-dev
      python3-pytest iproute2 qemu-system-x86 zstd redis-tools apache2-utils wrk curl
      etcd-server etcd-client libcurl4-openssl-dev
      libmicrohttpd-dev libsystemd-dev prometheus chromium
      libgnutls28-dev gnutls-bin libssl-dev openssl libseccomp-dev libcap-ng-dev util-linux
      scdoc resource-agents bash-completion)
missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
