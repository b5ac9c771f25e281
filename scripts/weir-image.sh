#!/usr/bin/env bash
# Builds the container image of weir itself, `weir:local`, on the local Docker engine from the
# release binaries, pulling nothing (no registry is needed or reached):
#   /usr/local/bin/weir, /usr/local/bin/weir-worker   the binaries (glibc, dynamically linked)
#   the shared libraries `ldd` lists for them and the dynamic loader, copied from this host
#   /bin/busybox (static) and its applets: the process runtime runs `run:` steps with `sh -c`
# The root file system is scripts/node-image.sh's (the image tests/hosts.rs runs); this adds
# what a deployment wants: `weir server` as the default command, listening on 0.0.0.0:7070 in plain text
# (`--insecure`: give the command --tls-cert/--tls-key for TLS, docs/tls.md),
# its data folder /data (a volume), its token file at /run/secrets/weir-tokens (WEIR_TOKEN_FILE,
# which the `weir` client in the image reads too), port 7070. `weir-worker` runs with a command
# override (deploy/compose.yaml starts a server and two workers).
#
# Usage: scripts/weir-image.sh [--build] [--tag TAG] [WEIR WEIR_WORKER]
#   --build      run `cargo build --release --locked` for the two binaries first
#   --tag TAG    the image's name (default weir:local)
#   WEIR WEIR_WORKER   other binaries than target/release/{weir,weir-worker} (the tests pass
#                their debug build)
# Prints the tag. Needs docker and a static busybox (Debian's busybox-static).
set -euo pipefail
cd "$(dirname "$0")/.."

tag=weir:local
build=0
bins=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=1 ;;
    --tag) [ $# -ge 2 ] || { echo "weir-image.sh: --tag needs a value" >&2; exit 2; }; tag=$2; shift ;;
    -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "weir-image.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) bins+=("$1") ;;
  esac
  shift
done
case ${#bins[@]} in
  0)
    target=${CARGO_TARGET_DIR:-target}
    bins=("$target/release/weir" "$target/release/weir-worker")
    if [ "$build" = 1 ]; then
      cargo build --release --locked -p weir-cli --bin weir -p weir-worker --bin weir-worker >&2
    fi
    for bin in "${bins[@]}"; do
      [ -x "$bin" ] || {
        echo "weir-image.sh: no $bin: run \`cargo build --release --locked -p weir-cli -p weir-worker\` (or pass --build)" >&2
        exit 1
      }
    done
    ;;
  2) ;;
  *) echo "weir-image.sh: give both binaries, WEIR and WEIR_WORKER, or neither (see --help)" >&2; exit 2 ;;
esac
command -v docker >/dev/null || { echo "weir-image.sh: no docker command: install Docker (docker.io)" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "weir-image.sh: no Docker engine answers: start dockerd, or set DOCKER_HOST" >&2; exit 1; }

base=$(bash scripts/node-image.sh "${bins[0]}" "${bins[1]}")
cid=$(docker create "$base" true)
trap 'docker rm "$cid" >/dev/null 2>&1 || true' EXIT
docker commit \
  --change 'ENV PATH=/usr/local/bin:/bin' \
  --change 'ENV WEIR_LISTEN=0.0.0.0:7070' \
  --change 'ENV WEIR_DATA_DIR=/data' \
  --change 'ENV WEIR_TOKEN_FILE=/run/secrets/weir-tokens' \
  --change 'VOLUME /data' \
  --change 'WORKDIR /data' \
  --change 'EXPOSE 7070' \
  --change 'LABEL org.opencontainers.image.title=weir' \
  --change 'CMD ["weir", "server", "--insecure"]' \
  "$cid" "$tag" >/dev/null
echo "weir-image.sh: built $tag from ${bins[0]} and ${bins[1]}" >&2
echo "$tag"
