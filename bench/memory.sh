#!/bin/sh
# Peak RSS of load + plan per shape and size, one fresh process per measurement (VmHWM only
# grows). Usage: bench/memory.sh   (from anywhere; honours CARGO_TARGET_DIR)
set -eu
cd "$(dirname "$0")/.."
cargo build --release -q -p weir-engine --example plan_memory
bin="${CARGO_TARGET_DIR:-target}/release/examples/plan_memory"

printf '| shape | steps | text bytes | baseline peak KiB | final peak KiB | growth KiB | growth bytes/step |\n'
printf '|---|---:|---:|---:|---:|---:|---:|\n'
for run in "chain 1000" "chain 10000" "chain 100000" \
           "fanout 1000" "fanout 10000" "fanout 100000" \
           "matrix 10002"; do
    # shellcheck disable=SC2086 # word splitting of "$run" is intended
    "$bin" $run | awk -F '\t' '{ printf "| %s | %d | %d | %d | %d | %d | %d |\n", $1, $2, $3, $4, $5, $5 - $4, $6 }'
done
