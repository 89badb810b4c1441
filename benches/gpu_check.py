"""Helpers of benches/gpu_check.sh (numpy and the safetensors package only).

  gpu_check.py ids FIXTURE_DIR                 row 0 of the fixture's reference batch without padding, comma-separated
  gpu_check.py parity FIXTURE_DIR OUT          max |Δ| of `peftspace encode` output against the stored reference
  gpu_check.py gradients CPU.st GPU.st         largest relative difference over every gradient (and count)
"""
import sys

import numpy as np
from safetensors.numpy import load_file


def reference(fixture):
    return load_file(f"{fixture}/reference.safetensors")


def real_length(ref):
    if "attention_mask" in ref:
        return int(ref["attention_mask"][0].sum())
    return ref["input_ids"].shape[1]


def ids(fixture):
    ref = reference(fixture)
    n = real_length(ref)
    print(",".join(str(int(i)) for i in ref["input_ids"][0][:n]))


def parity(fixture, out):
    ref = reference(fixture)
    ours = load_file(out)
    n = real_length(ref)
    pairs = []
    if "last_hidden_state" in ref:
        pairs.append((ours["encoder_hidden"], ref["last_hidden_state"][0][:n]))
    else:
        pairs.append((ours["encoder_hidden"], ref["encoder_hidden"][0]))
        pairs.append((ours["decoder_hidden"], ref["decoder_hidden"][0]))
    worst = max(float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) for a, b in pairs)
    print(f"{worst:.2e}")


def gradients(cpu_file, gpu_file):
    cpu, gpu = load_file(cpu_file), load_file(gpu_file)
    if sorted(cpu) != sorted(gpu):
        print(f"different variables: {sorted(set(cpu) ^ set(gpu))[:5]}")
        sys.exit(1)
    worst = 0.0
    for name in cpu:
        a, b = cpu[name].astype(np.float64), gpu[name].astype(np.float64)
        scale = max(float(np.abs(a).max()), 1e-12)
        worst = max(worst, float(np.abs(a - b).max()) / scale)
    print(f"{worst:.2e} over {len(cpu)} tensors")


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"ids": ids, "parity": parity, "gradients": gradients}[command](*args)
