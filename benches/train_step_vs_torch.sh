#!/usr/bin/env bash
# One training step of MiniLM + LoRA (q, v), BitFit or a design, peftspace against PyTorch + PEFT, interleaved on one
# machine.
#
#   benches/train_step_vs_torch.sh MODEL_DIR PYTHON [ROUNDS]
#
# Each round runs peftspace's `train_step` example (release build), then `benches/torch_train_step.py step`, both on
# the same model folder, the same batch (ids 1000 + (i · 7919 mod 19000), all attended, labels alternating), the same
# shape and the same thread count; with UNFUSED=1 each round also runs peftspace with its fused CPU kernels switched
# off (PEFTSPACE_FUSED_KERNELS=0), and with UNTUNED=1 with glibc's default malloc settings (PEFTSPACE_MALLOC_TUNING=0,
# see backbones/src/ops/heap.rs). Interleaving spreads a shared machine's load over both sides. The load average is
# printed before every run; at the end a Markdown table: examples/s (median, min–max), ms per phase (medians), peak
# RSS (largest) and the ratio of the medians.
#
# Environment: THREADS (2), SEQ (128), BATCH (16), STEPS (10), STRATEGY (lora, bitfit or design),
# BIN (target/release/examples/train_step). STRATEGY=design trains DESIGN (default: the paper's design
# `g=1,2,2,1 a=… t=1111 s=AL|AP|ABP|BLP`) at BUDGET (0.005); peftspace solves its per-layer sizes once and the
# PyTorch side builds the same modules from them (`torch_train_step.py --layers`).
set -euo pipefail

model=${1:?usage: train_step_vs_torch.sh MODEL_DIR PYTHON [ROUNDS]}
python=${2:?usage: train_step_vs_torch.sh MODEL_DIR PYTHON [ROUNDS]}
rounds=${3:-3}
threads=${THREADS:-2}
seq=${SEQ:-128}
batch=${BATCH:-16}
steps=${STEPS:-10}
strategy=${STRATEGY:-lora}
design=${DESIGN:-g=1,2,2,1 a=0.1667,0.3333,0.3333,0.1667 t=1111 s=AL|AP|ABP|BLP}
budget=${BUDGET:-0.005}
bin=${BIN:-target/release/examples/train_step}
here=$(cd "$(dirname "$0")" && pwd)

if [[ ! -x $bin ]]; then
    echo "no $bin: build it with cargo build --release --example train_step" >&2
    exit 1
fi
export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads

log=$(mktemp)
trap 'rm -f "$log"' EXIT
run() {
    local side=$1
    shift
    local load
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    local line
    line=$("$@" | tail -n 1)
    echo "$side|$load|$line" | tee -a "$log"
}

# What each side trains: the same strategy, or for a design peftspace's solved sizes, handed to PyTorch.
ours=(--strategy "$strategy")
theirs=(--strategy "$strategy")
if [[ $strategy == design ]]; then
    ours=(--design "$design" --budget "$budget")
    layers=$("$bin" "$model" --seq 8 --batch 1 --steps 1 "${ours[@]}" | sed -n 's/^plan //p')
    if [[ -z $layers ]]; then
        echo "train_step printed no plan for the design \`$design\`" >&2
        exit 1
    fi
    echo "design $design at budget $budget: per-layer sizes $layers" >&2
    theirs=(--strategy design --layers "$layers")
fi

for ((r = 1; r <= rounds; r++)); do
    echo "round $r of $rounds" >&2
    run peftspace "$bin" "$model" --seq "$seq" --batch "$batch" --steps "$steps" "${ours[@]}"
    run pytorch "$python" "$here/torch_train_step.py" step --model "$model" --threads "$threads" \
        --seq "$seq" --batch "$batch" --steps "$steps" "${theirs[@]}"
    if [[ ${UNTUNED:-0} == 1 ]]; then
        run "peftspace, malloc tuning off" env PEFTSPACE_MALLOC_TUNING=0 "$bin" "$model" --seq "$seq" \
            --batch "$batch" --steps "$steps" "${ours[@]}"
    fi
    if [[ ${UNFUSED:-0} == 1 ]]; then
        run "peftspace, fused kernels off" env PEFTSPACE_FUSED_KERNELS=0 "$bin" "$model" --seq "$seq" \
            --batch "$batch" --steps "$steps" "${ours[@]}"
    fi
done

python3 - "$log" "$threads" "$seq" "$batch" "$steps" "$rounds" "$strategy" <<'EOF'
import re
import statistics
import sys

path, threads, seq, batch, steps, rounds, strategy = sys.argv[1:]
runs = {}
for line in open(path, encoding="utf-8"):
    side, load, text = line.rstrip("\n").split("|", 2)
    number = lambda pattern: float(re.search(pattern, text).group(1))
    runs.setdefault(side, []).append({
        "load": load,
        "eps": number(r"([\d.]+) examples/s"),
        "rss": number(r"peak RSS ([\d.]+) MiB"),
        "forward": number(r"forward ([\d.]+) ms"),
        "backward": number(r"backward ([\d.]+) ms"),
        "update": number(r"update ([\d.]+) ms"),
    })
median = lambda side, key: statistics.median(r[key] for r in runs[side])
print(f"\n{strategy}: threads {threads}, seq {seq}, batch {batch}, {steps} timed steps per run, {rounds} interleaved rounds")
print("load averages (1, 5, 15 min) before each run: " + "; ".join(
    f"{side}: " + ", ".join(r["load"] for r in rs) for side, rs in runs.items()))
print()
print("| side | examples/s median (min–max) | forward / backward / update ms (median) | peak RSS MiB | ratio to PyTorch |")
print("|---|---|---|---|---|")
torch = median("pytorch", "eps") if "pytorch" in runs else float("nan")
for side, rs in runs.items():
    eps = [r["eps"] for r in rs]
    print(f"| {side} | {median(side, 'eps'):.1f} ({min(eps):.1f}–{max(eps):.1f}) | "
          f"{median(side, 'forward'):.0f} / {median(side, 'backward'):.0f} / {median(side, 'update'):.0f} | "
          f"{max(r['rss'] for r in rs):.0f} | {median(side, 'eps') / torch:.2f} |")
EOF
