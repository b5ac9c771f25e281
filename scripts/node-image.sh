#!/usr/bin/env bash
# Builds the "node" image that tests/hosts.rs runs the engine and the workers in, from the
# binaries as built (no registry is needed: nothing is pulled). The image is a bare root file
# system, imported with `docker import`:
#   /usr/local/bin/weir, /usr/local/bin/weir-worker   the two binaries given as arguments
#   the shared libraries `ldd` lists for them, and the dynamic loader, at their host paths
#   /bin/busybox (static, Debian's busybox-static) and a symlink per applet: sh, sleep, ps, ...
#                (the process runtime runs `run:` steps with `sh -c`)
#   /tmp (1777)
# Usage: scripts/node-image.sh WEIR WEIR_WORKER
# Prints the image's tag, weir-node:<hash of the binaries, busybox and this script>; an image
# with that tag is reused as it is, so only a rebuilt binary costs a new image. Images of
# earlier builds are removed once no container uses them and none was asked for in an hour.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 WEIR WEIR_WORKER" >&2
  exit 2
fi
weir=$1
worker=$2
busybox=${WEIR_BUSYBOX:-/bin/busybox}
repo=weir-node

for bin in "$weir" "$worker"; do
  [ -x "$bin" ] || { echo "error: $bin is not an executable (build it first)" >&2; exit 1; }
done
if [ ! -x "$busybox" ] || ldd "$busybox" 2>/dev/null | grep -q '=>'; then
  echo "error: no static busybox at $busybox: install Debian's busybox-static package" \
       "(apt-get install -y busybox-static), or point WEIR_BUSYBOX at a static busybox" >&2
  exit 1
fi
command -v docker >/dev/null || { echo "error: no docker command" >&2; exit 1; }

hash=$(cat "$0" "$weir" "$worker" "$busybox" | sha1sum | cut -c1-16)
tag="$repo:$hash"
# When each image was last asked for: the pruning below spares images in recent use.
uses="${TMPDIR:-/tmp}/weir-node-image-uses"
mkdir -p "$uses" && touch "$uses/$hash"
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "$tag"
  exit 0
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/local/bin" "$root/bin" "$root/tmp" "$root/etc"
chmod 1777 "$root/tmp"
cp "$weir" "$root/usr/local/bin/weir"
cp "$worker" "$root/usr/local/bin/weir-worker"
# Every library either binary needs, and the loader, at the path the binary asks for it.
# Lines look like `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or
# `/lib64/ld-linux-x86-64.so.2 (0x...)`; linux-vdso has no file.
for lib in $( (ldd "$weir"; ldd "$worker") | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u); do
  cp -L --parents "$lib" "$root"
done
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
# Names for uid 0, so that `ps` and `id` print them.
echo 'root:x:0:0:root:/tmp:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"

tar -C "$root" --numeric-owner --owner=0 --group=0 -c . |
  docker import \
    --change 'ENV PATH=/usr/local/bin:/bin' \
    --change 'LABEL org.weir.node-image=1' \
    --change 'WORKDIR /tmp' \
    - "$tag" >/dev/null
echo "built $tag" >&2

# Earlier builds: removed when no container uses them and nobody asked for them for an hour
# (another checkout's test may be about to start containers from one).
now=$(date +%s)
docker image ls "$repo" --format '{{.Tag}}' | while read -r old; do
  [ "$old" = "$hash" ] && continue
  if [ -f "$uses/$old" ]; then
    last=$(stat -c %Y "$uses/$old")
  else
    last=$(date -d "$(docker image inspect -f '{{.Created}}' "$repo:$old" 2>/dev/null || echo now)" +%s)
  fi
  if [ $((now - last)) -gt 3600 ] && docker image rm "$repo:$old" >/dev/null 2>&1; then
    rm -f "$uses/$old"
  fi
done
echo "$tag"
