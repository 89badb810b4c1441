#!/usr/bin/env bash
# Forward pass of all-MiniLM-L6-v2 on 32 sequences of 64 tokens: PyTorch, then candle, same input, same thread count.
# Usage: benches/minilm_forward.sh [MODEL_DIR] [PYTHON]   (run from the repository root)
set -euo pipefail
MODEL=${1:-${PEFTSPACE_SHARED:-../shared}/models/all-MiniLM-L6-v2}
PYTHON=${2:-python3}
THREADS=${THREADS:-2}
REPEATS=${REPEATS:-10}
BATCH=$(mktemp --suffix=.safetensors)
trap 'rm -f "$BATCH"' EXIT
lscpu | grep 'Model name' || true
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS
cargo build -q --release -p peftspace-backbones --example minilm_forward
"$PYTHON" benches/torch_forward.py "$MODEL" "$BATCH" --threads "$THREADS" --repeats "$REPEATS"
target/release/examples/minilm_forward "$MODEL" "$BATCH" "$REPEATS"
