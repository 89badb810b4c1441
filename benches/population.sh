#!/usr/bin/env bash
# Population training on MiniLM at the quickstart's settings: designs·examples/s and peak RSS for K = 1, 4, 8, 16,
# in interleaved rounds (each round runs every K once, in turn, so a change of load hits all of them alike).
#
# Usage (repository root): benches/population.sh EXAMPLE_BIN [SHARED_DIR]
#   EXAMPLE_BIN: the built example (cargo build --release --example population; target/release/examples/population)
# Environment: ROUNDS (default 2), KS (default "1 4 8 16"), TRAIN (training examples, default 64), THREADS (default 2),
#   DEVICE (default cpu).
set -euo pipefail
BIN=${1:?usage: benches/population.sh EXAMPLE_BIN [SHARED_DIR]}
SHARED=${2:-${PEFTSPACE_SHARED:-../shared}}
ROUNDS=${ROUNDS:-2}
KS=${KS:-1 4 8 16}
TRAIN=${TRAIN:-64}
THREADS=${THREADS:-2}
DEVICE=${DEVICE:-cpu}
echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs; load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for round in $(seq 1 "$ROUNDS"); do
  for k in $KS; do
    line=$(RAYON_NUM_THREADS=$THREADS "$BIN" "$SHARED/models/all-MiniLM-L6-v2" "$SHARED/data/glue" \
      --population "$k" --train "$TRAIN" --device "$DEVICE")
    echo "round $round $line"
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
