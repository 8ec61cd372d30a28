#!/bin/sh
# tls_overhead.sh — Remus and migration with TLS vs plaintext, interleaved (bench/tls_overhead.py), and the
# GnuTLS vs OpenSSL bulk comparison (bench/tls_bench.c) that chose the library. ~3 minutes.
# Env: RUNS=3.
set -e
cd "$(dirname "$0")/.."
make -s binaries
cc -O2 -o build/tls_bench bench/tls_bench.c $(pkg-config --cflags --libs gnutls openssl)
d=$(mktemp -d); trap 'rm -rf "$d"' EXIT
scripts/tls-certs.sh "$d" hosta >/dev/null
build/tls_bench "$d/hosta" 1024 | tee bench/results/tls_lib.json
/usr/bin/python3 bench/tls_overhead.py "$@"
/usr/bin/python3 bench/render.py
