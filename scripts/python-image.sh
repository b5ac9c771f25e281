#!/usr/bin/env bash
# Builds `weir-test/python:3`, a small Python 3 image for running the ml-retrain example in
# containers on a machine with no image registry (CI, air-gapped hosts). It holds this machine's
# own Debian python3 (the interpreter, its standard library without tests, the shared libraries
# they load) and a static busybox for `sh` and the usual tools, imported with `docker import`.
# Where a registry is reachable, use `python:3.12-slim` instead (README).
#
# Usage: scripts/python-image.sh [--force] [TAG]
# Idempotent: does nothing when TAG exists, unless --force.
set -euo pipefail

force=0
if [ "${1:-}" = "--force" ]; then force=1; shift; fi
tag="${1:-weir-test/python:3}"

if [ "$force" = 0 ] && docker image inspect "$tag" >/dev/null 2>&1; then
  exit 0
fi
python=$(command -v python3.11 || command -v python3 || true)
python=$(readlink -f "/usr/bin/$(basename "${python:-python3}")" 2>/dev/null || true)
if [ -z "$python" ] || [ ! -x "$python" ] || [ "${python#/usr/bin/}" = "$python" ]; then
  echo "error: Debian's python3 (/usr/bin/python3.*) is needed: apt-get install -y python3-minimal" >&2
  exit 1
fi
if [ ! -x /bin/busybox ] || ! /bin/busybox --list | grep -qx sh; then
  echo "error: a static busybox is needed at /bin/busybox: apt-get install -y busybox-static" >&2
  exit 1
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
version=$(basename "$python")          # python3.11
mkdir -p "$stage/bin" "$stage/usr/bin" "$stage/usr/lib" "$stage/tmp" "$stage/etc"
chmod 1777 "$stage/tmp"
cp /bin/busybox "$stage/bin/busybox"
for tool in $(/bin/busybox --list); do
  [ -e "$stage/bin/$tool" ] || ln -s busybox "$stage/bin/$tool"
done
cp "$python" "$stage/usr/bin/$version"
ln -s "$version" "$stage/usr/bin/python3"
ln -s "$version" "$stage/usr/bin/python"
# The standard library, without its test suite and caches (about 40 MB).
tar -C /usr/lib --exclude="$version/test" --exclude='__pycache__' --exclude='site-packages' \
    --exclude='dist-packages' -cf - "$version" | tar -C "$stage/usr/lib" -xf -
# Every shared library the interpreter and its extension modules load, with the loader.
libs=$( { ldd "$python"; find "$stage/usr/lib/$version/lib-dynload" -name '*.so' -exec ldd {} \; ; } 2>/dev/null \
        | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }' | sort -u)
for lib in $libs; do
  mkdir -p "$stage$(dirname "$lib")"
  cp -L "$lib" "$stage$lib"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$stage/etc/passwd"
echo 'root:x:0:' > "$stage/etc/group"

tar -C "$stage" -cf - . | docker import \
  -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
  -c 'ENV LANG=C.UTF-8' \
  -c 'WORKDIR /' \
  - "$tag" >/dev/null
docker run --rm "$tag" python3 -c 'import csv, json, math, random, hashlib, argparse' \
  || { echo "error: the built image $tag cannot run python3" >&2; exit 1; }
echo "built $tag"
