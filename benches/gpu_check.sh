#!/usr/bin/env bash
# The GPU checks of a CUDA build, in one short run on a machine with a GPU (no Rust needed there):
#   (a) tiny-fixture parity of every architecture on the GPU against the stored transformers references (≤ 1e-4)
#   (b) gradients of each strategy (alone and all four) on the GPU against the CPU ones (≤ 1e-4 relative)
#   (c) SST-2 LoRA, the real-data calibration protocol (8,000 examples, one epoch), on the GPU: dev accuracy
#   (d) examples/s of the MiniLM LoRA training step, seq 128, batch 16 and 128: ours and PyTorch + PEFT, same GPU
#   (e) the quickstart on the GPU, wall time
#   (f) population training on MiniLM at the quickstart settings, K = 1 and 16: designs·examples/s and peak RSS
# and prints a Markdown table for BENCHMARKS.md. About 8 minutes on an H100/H200.
#
# Usage (repository root): benches/gpu_check.sh BIN_DIR [SHARED_DIR]
#   BIN_DIR holds the CUDA builds of `peftspace` and of the examples `gradients`, `train_step` and `population`
#   (scripts/cuda-build.sh --release --bin peftspace --example gradients --example train_step --example population; then
#   target/release and target/release/examples). SHARED_DIR holds models/all-MiniLM-L6-v2 and data/glue.
# Environment: DEVICE (default cuda:0), PYTHON (with torch, transformers, peft, safetensors, numpy),
#   SKIP="c e" leaves parts out (e.g. on the CPU, to rehearse the script: DEVICE=cpu SKIP="d e" SST2_TRAIN=64).
set -uo pipefail
BIN=${1:?usage: benches/gpu_check.sh BIN_DIR [SHARED_DIR]}
SHARED=${2:-${PEFTSPACE_SHARED:-../shared}}
DEVICE=${DEVICE:-cuda:0}
PY=${PYTHON:-python3}
SKIP=${SKIP:-}
find_bin() { for d in "$BIN" "$BIN/examples"; do [ -x "$d/$1" ] && { echo "$d/$1"; return; }; done; echo "missing-$1"; }
PEFTSPACE=$(find_bin peftspace); GRADIENTS=$(find_bin gradients); TRAIN_STEP=$(find_bin train_step)
POPULATION=$(find_bin population)
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
ROWS=()
row() { ROWS+=("| $1 | $2 | $3 |"); echo "-- $1: $2 ($3)" >&2; }
skip() { [[ " $SKIP " == *" $1 "* ]]; }
status() { if [ "$1" = ok ]; then echo "pass"; else echo "FAIL"; fi; }

echo "== machine" >&2
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi" >&2
date -u +%Y-%m-%d >&2

if ! skip a; then
  echo "== (a) parity on $DEVICE" >&2
  for fixture in tiny-bert tiny-roberta t5-tiny-relu t5-tiny-gated bart-tiny; do
    dir=tests/fixtures/$fixture
    ids=$("$PY" benches/gpu_check.py ids "$dir")
    if "$PEFTSPACE" --offline --device "$DEVICE" encode --model "$dir" --ids "$ids" --out "$WORK/$fixture.st" \
        >/dev/null 2>"$WORK/err"; then
      diff=$("$PY" benches/gpu_check.py parity "$dir" "$WORK/$fixture.st")
      ok=$("$PY" -c "print('ok' if float('$diff') <= 1e-4 else 'no')")
      row "(a) parity $fixture" "max abs diff $diff" "$(status "$ok")"
    else
      row "(a) parity $fixture" "$(head -c 200 "$WORK/err" | tr '\n' ' ')" FAIL
    fi
  done
fi

if ! skip b; then
  echo "== (b) gradients, cpu against $DEVICE" >&2
  for fixture in tiny-bert t5-tiny-gated bart-tiny; do
    dir=tests/fixtures/$fixture
    if "$GRADIENTS" "$dir" "$WORK/g-cpu.st" --device cpu >/dev/null 2>"$WORK/err" \
      && "$GRADIENTS" "$dir" "$WORK/g-dev.st" --device "$DEVICE" >/dev/null 2>>"$WORK/err"; then
      diff=$("$PY" benches/gpu_check.py gradients "$WORK/g-cpu.st" "$WORK/g-dev.st")
      ok=$("$PY" -c "print('ok' if float('${diff%% *}') <= 1e-4 else 'no')")
      row "(b) gradients $fixture" "max relative Δ $diff" "$(status "$ok")"
    else
      row "(b) gradients $fixture" "$(head -c 200 "$WORK/err" | tr '\n' ' ')" FAIL
    fi
  done
fi

if ! skip c; then
  echo "== (c) SST-2 LoRA calibration run on $DEVICE" >&2
  cat > "$WORK/sst2.ron" <<RON
ExperimentSpec(
    name: "gpu-check-sst2",
    backbone: (path: Some("$(cd "$SHARED" && pwd)/models/all-MiniLM-L6-v2")),
    data_dir: Some("$(cd "$SHARED" && pwd)/data/glue"),
    tasks: [(id: "sst2", max_train: Some(${SST2_TRAIN:-8000}))],
    // LoRA r = 12 on q and v in every layer (110,592 parameters), as in the real-data test.
    budget: 0.004869,
    strategies: [(name: "lora", learning_rate: Some(5e-4))],
    seeds: [1],
    training: (epochs: 1, batch_size: 32, learning_rate: 5e-4, max_seq_len: 128),
)
RON
  start=$(date +%s)
  if "$PEFTSPACE" --offline --device "$DEVICE" train "$WORK/sst2.ron" --baseline lora --quiet \
      >"$WORK/sst2.out" 2>"$WORK/err"; then
    acc=$(grep -oE '= [0-9.]+' "$WORK/sst2.out" | awk '{print $2}' | head -1)
    row "(c) SST-2 LoRA, ${SST2_TRAIN:-8000} examples, 1 epoch" "dev accuracy $acc in $(( $(date +%s) - start )) s (CPU: 0.7924)" \
      "$("$PY" -c "print('pass' if abs(float('${acc:-0}') - 0.7924) <= 0.015 else 'FAIL')")"
  else
    row "(c) SST-2 LoRA" "$(tail -c 200 "$WORK/err" | tr '\n' ' ')" FAIL
  fi
fi

if ! skip d; then
  echo "== (d) training step, ours and PyTorch + PEFT on $DEVICE" >&2
  torch_device=${DEVICE/cuda:*/cuda}
  for batch in 16 128; do
    ours=$("$TRAIN_STEP" "$SHARED/models/all-MiniLM-L6-v2" --device "$DEVICE" --seq 128 --batch "$batch" --steps 20 \
      2>"$WORK/err" | grep -oE '[0-9.]+ examples/s' | head -1)
    theirs=$("$PY" benches/torch_train_step.py step --model "$SHARED/models/all-MiniLM-L6-v2" --device "$torch_device" \
      --seq 128 --batch "$batch" --steps 20 2>>"$WORK/err" | grep -oE '[0-9.]+ examples/s' | head -1)
    row "(d) LoRA step, seq 128, batch $batch" "peftspace ${ours:-?}, PyTorch + PEFT ${theirs:-?}" \
      "$([ -n "$ours" ] && [ -n "$theirs" ] && echo measured || echo FAIL)"
  done
fi

if ! skip e; then
  echo "== (e) quickstart on $DEVICE" >&2
  start=$(date +%s)
  if PEFTSPACE_MODEL="$SHARED/models/all-MiniLM-L6-v2" PEFTSPACE_DATA="$SHARED/data/glue" \
      "$PEFTSPACE" --offline --device "$DEVICE" run experiments/quickstart.ron --out "$WORK/quickstart" \
      >"$WORK/quickstart.out" 2>"$WORK/err"; then
    row "(e) quickstart (51 trials)" "$(( $(date +%s) - start )) s wall time" measured
  else
    row "(e) quickstart" "$(tail -c 200 "$WORK/err" | tr '\n' ' ')" FAIL
  fi
fi

if ! skip f; then
  echo "== (f) population training on $DEVICE" >&2
  for k in 1 16; do
    line=$("$POPULATION" "$SHARED/models/all-MiniLM-L6-v2" "$SHARED/data/glue" --population "$k" --train 256 \
      --device "$DEVICE" 2>"$WORK/err") || line=""
    rate=$(echo "$line" | grep -oE '[0-9.]+ designs·examples/s' | head -1)
    rss=$(echo "$line" | grep -oE 'peak RSS [0-9]+ MiB' | head -1)
    row "(f) population K = $k, quickstart settings" "${rate:-$(head -c 200 "$WORK/err" | tr '\n' ' ')}, ${rss:-?}" \
      "$([ -n "$rate" ] && echo measured || echo FAIL)"
  done
fi

echo
echo "| check | result | status |"
echo "|---|---|---|"
printf '%s\n' "${ROWS[@]}"
