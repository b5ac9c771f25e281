#!/usr/bin/env bash
# Builds the small images the Docker runtime's tests run, on the local engine, from nothing a
# registry serves (the machines that run weir's CI reach no image registry):
#
#   weir-test/busybox:1   Debian's statically linked busybox as /bin/busybox, a symlink in /bin
#                         for each of its applets (sh, cat, echo, sleep, dd, awk, ...) and /tmp,
#                         made with `docker import` of a tarball built here.
#   weir-test/entrypoint:1  the same with an ENTRYPOINT, to show that a step's command replaces
#                         it (made with `docker commit --change`).
#
# Idempotent: an image that already exists is left alone unless --force is given. The tests in
# worker/tests/docker.rs call this script themselves when the image is missing, so a plain
# `cargo test` works on a machine with Docker and busybox-static.
set -euo pipefail

IMAGE=weir-test/busybox:1
ENTRYPOINT_IMAGE=weir-test/entrypoint:1
force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h | --help)
            echo "usage: $0 [--force]   build $IMAGE on the local Docker engine (--force: rebuild)"
            exit 0
            ;;
        *)
            echo "test-images.sh: unknown argument $arg (usage: $0 [--force])" >&2
            exit 2
            ;;
    esac
done

command -v docker >/dev/null || { echo "test-images.sh: no docker command: install Docker (docker.io)" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "test-images.sh: no Docker engine answers: start dockerd, or set DOCKER_HOST" >&2; exit 1; }

if [ "$force" = 0 ] && docker image inspect "$IMAGE" "$ENTRYPOINT_IMAGE" >/dev/null 2>&1; then
    echo "test-images.sh: $IMAGE and $ENTRYPOINT_IMAGE already exist (--force rebuilds them)"
    exit 0
fi

# Debian's busybox-static puts the binary at /bin/busybox; the dynamic `busybox` package would
# need its libraries in the image too, so only a static binary will do.
BUSYBOX=${BUSYBOX:-/bin/busybox}
if [ ! -x "$BUSYBOX" ] || ! "$BUSYBOX" true 2>/dev/null; then
    echo "test-images.sh: no busybox at $BUSYBOX: run \`apt-get install busybox-static\` (or set BUSYBOX to a static busybox)" >&2
    exit 1
fi
if command -v ldd >/dev/null && ldd "$BUSYBOX" >/dev/null 2>&1; then
    echo "test-images.sh: $BUSYBOX is dynamically linked: run \`apt-get install busybox-static\` (the static build)" >&2
    exit 1
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/tmp" "$root/etc"
chmod 1777 "$root/tmp"
cp "$BUSYBOX" "$root/bin/busybox"
for applet in $("$BUSYBOX" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
# Enough for tools that look up users; steps run as the worker's uid:gid, which need not be here.
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"

tar -C "$root" --numeric-owner --owner=0 --group=0 -c . |
    docker import --change 'ENV PATH=/bin' --change 'CMD ["sh"]' - "$IMAGE" >/dev/null
cid=$(docker create "$IMAGE")
docker commit --change 'ENTRYPOINT ["echo", "the entrypoint ran"]' "$cid" "$ENTRYPOINT_IMAGE" >/dev/null
docker rm "$cid" >/dev/null
echo "test-images.sh: built $IMAGE and $ENTRYPOINT_IMAGE"
