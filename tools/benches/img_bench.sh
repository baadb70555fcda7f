#!/usr/bin/env bash
# rvmm-img bench vs qemu-img bench (same flags, same image, same run) and convert vs qemu-img
# convert. Prints IOPS / MiB/s for both and the ratio ours/theirs.
#
# Usage: tools/benches/img_bench.sh [workdir]     (needs qemu-img; builds rvmm-img --release)
# Env:   COUNT (4K requests per case, default 200000), SIZE (image size, default 1G),
#        REPEAT (runs per case, best kept, default 3), RVMM_IMG (use this binary, no build)
#
# Fairness: both tools run under the same conditions. Before every timed write or convert run
# the previous target is deleted and the page cache's dirty data is written back (`sync`)
# outside the timed region, so neither tool pays for writeback or truncation the other (or an
# earlier case) left behind. Read cases run on images already in the page cache for both.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
if [ -n "${RVMM_IMG:-}" ]; then
  OURS=$RVMM_IMG
else
  cargo build -q --release -p tools --bin rvmm-img 2>/dev/null || cargo build --release -p tools --bin rvmm-img
  OURS=$CARGO_TARGET_DIR/release/rvmm-img
fi
W=${1:-$(mktemp -d)}
COUNT=${COUNT:-200000}
SIZE=${SIZE:-1G}
mkdir -p "$W"
trap '[ -z "${1:-}" ] && rm -rf "$W"' EXIT

echo "preparing $SIZE images in $W" >&2
qemu-img create -q -f raw "$W/data.raw" "$SIZE"
qemu-io -f raw -c "write -P 0x5a 0 $SIZE" "$W/data.raw" >/dev/null
qemu-img convert -O qcow2 "$W/data.raw" "$W/data.qcow2"

# seconds [--before CMD] <cmd...>: best wall time of $REPEAT runs of a command, in seconds
# (the machine is shared; the best run is the least disturbed one). CMD (a shell snippet: undo
# the previous run, e.g. delete its target) runs before each run, followed by `sync`; neither
# is timed.
REPEAT=${REPEAT:-3}
seconds() {
  local t0 t1 d best="" before=:
  if [ "$1" = --before ]; then before=$2; shift 2; fi
  for _ in $(seq "$REPEAT"); do
    eval "$before"
    sync
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    t1=$(date +%s.%N)
    d=$(echo "$t1 - $t0" | bc -l)
    if [ -z "$best" ] || [ "$(echo "$d < $best" | bc -l)" = 1 ]; then best=$d; fi
  done
  echo "$best"
}

printf '%-34s %12s %12s %8s\n' case ours qemu-img ratio
row() { # name unit ours theirs
  printf '%-34s %12.0f %12.0f %8.2f\n' "$1 ($2)" "$3" "$4" "$(echo "$3 / $4" | bc -l)"
}

# A stride coprime with the number of 4K blocks visits them in a scattered order in both tools
# (qemu-img bench has no random mode; rvmm-img's --random is shown against the pread reference).
STRIDE=$((4096 * 104729))
bench_case() { # name img count extra-flags...
  local name=$1 img=$2 n=$3 fmt=${2##*.}
  shift 3
  set -- -f "$fmt" "$@"
  local a b run=$img write=
  # Writes go to a fresh copy for each tool so both start from the same image (its repeats
  # rewrite the same offsets); seconds' sync leaves no dirty pages from the previous run.
  if [[ " $* " == *" -w "* ]]; then write=1; run=$W/run.img; fi
  if [ -n "$write" ]; then rm -f "$run"; cp --reflink=auto "$img" "$run"; fi
  a=$(seconds "$OURS" bench -q -t writeback -c "$n" "$@" "$run")
  if [ -n "$write" ]; then rm -f "$run"; cp --reflink=auto "$img" "$run"; fi
  b=$(seconds qemu-img bench -t writeback -c "$n" "$@" "$run")
  row "$name" "req/s" "$(echo "$n / $a" | bc -l)" "$(echo "$n / $b" | bc -l)"
}

for fmt in qcow2 raw; do
  img="$W/data.$fmt"
  bench_case "$fmt 4K seq read d1" "$img" "$COUNT" -d 1 -s 4k
  bench_case "$fmt 4K seq read d32" "$img" "$COUNT" -d 32 -s 4k
  bench_case "$fmt 4K strided read d1" "$img" "$COUNT" -d 1 -s 4k -S $STRIDE
  bench_case "$fmt 4K strided read d32" "$img" "$COUNT" -d 32 -s 4k -S $STRIDE
  bench_case "$fmt 4K seq write d1" "$img" "$COUNT" -d 1 -s 4k -w
  bench_case "$fmt 4K seq write d32" "$img" "$COUNT" -d 32 -s 4k -w
  bench_case "$fmt 4K strided write d1" "$img" "$COUNT" -d 1 -s 4k -w -S $STRIDE
  bench_case "$fmt 4K strided write d32" "$img" "$COUNT" -d 32 -s 4k -w -S $STRIDE
  bench_case "$fmt 1M seq read d1" "$img" $((COUNT / 100)) -d 1 -s 1M
  bench_case "$fmt 1M seq write d1" "$img" $((COUNT / 100)) -d 1 -s 1M -w
done

# Allocating writes into an empty qcow2.
qemu-img create -q -f qcow2 "$W/empty.qcow2" "$SIZE"
REPEAT=1 bench_case "qcow2 4K seq write d1, allocating" "$W/empty.qcow2" "$COUNT" -d 1 -s 4k -w

# Against the raw pread reference (the same requests straight to the raw file).
ref() { # name flags...
  local name=$1
  shift
  local a b
  a=$(seconds "$OURS" bench -q -c "$COUNT" "$@" "$W/data.qcow2")
  b=$(seconds "$OURS" bench -q --pread -c "$COUNT" "$@" "$W/data.raw")
  row "$name vs raw pread" "req/s" "$(echo "$COUNT / $a" | bc -l)" "$(echo "$COUNT / $b" | bc -l)"
}
ref "qcow2 4K random read d1" -d 1 -s 4k --random
ref "qcow2 4K random read d32" -d 32 -s 4k --random
ref "qcow2 4K seq read d1" -d 1 -s 4k

# convert. Each tool's previous target is deleted before each of its runs (untimed, then sync),
# so no run pays for truncating or writing back an earlier output.
bytes=$(stat -c %s "$W/data.raw")
convert_case() { # name src out-fmt out-ext extra-flags...
  local name=$1 src=$2 ofmt=$3 ext=$4 a b
  shift 4
  rm -f "$W/out1.$ext" "$W/out2.$ext"
  a=$(seconds --before "rm -f '$W/out1.$ext'" \
    "$OURS" convert "$@" -O "$ofmt" "$src" "$W/out1.$ext")
  b=$(seconds --before "rm -f '$W/out2.$ext'" \
    qemu-img convert "$@" -O "$ofmt" "$src" "$W/out2.$ext")
  # Both outputs exist now (each tool's last run): they must hold the same data.
  qemu-img compare -q "$W/out1.$ext" "$W/out2.$ext"
  row "$name" "MiB/s" "$(echo "$bytes / 1048576 / $a" | bc -l)" "$(echo "$bytes / 1048576 / $b" | bc -l)"
}
convert_case "convert qcow2->raw" "$W/data.qcow2" raw raw
convert_case "convert raw->qcow2" "$W/data.raw" qcow2 qcow2
convert_case "convert qcow2->qcow2" "$W/data.qcow2" qcow2 qcow2
convert_case "convert qcow2->qcow2 -W" "$W/data.qcow2" qcow2 qcow2 -W
# Compression is CPU-bound: 64 MiB of text (decimal numbers, about 4:1 compressible; a
# constant pattern would measure nothing), both tools on the same file.
(seq 1 20000000 || true) | head -c 64M >"$W/small.raw"
bytes=$(stat -c %s "$W/small.raw")
convert_case "convert raw->qcow2 -c (64M)" "$W/small.raw" qcow2 qcow2 -c
