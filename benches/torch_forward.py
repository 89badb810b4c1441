#!/usr/bin/env python3
"""Times transformers' forward pass of a BERT-family model on a fixed batch and writes that batch (and the output) for
the Rust side (`backbones/examples/minilm_forward.rs`) to time on the very same input.

    python benches/torch_forward.py MODEL_DIR OUT.safetensors [--batch 32] [--seq 64] [--threads 2] [--repeats 10]
"""

import argparse
import statistics
import time

import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    config = AutoConfig.from_pretrained(a.model)
    gen = torch.Generator().manual_seed(0)
    # Ordinary word-piece ids (not special tokens), framed by [CLS] ... [SEP] as the tokenizer would.
    ids = torch.randint(1000, config.vocab_size, (a.batch, a.seq), generator=gen)
    ids[:, 0], ids[:, -1] = 101, 102
    mask = torch.ones_like(ids)
    types = torch.zeros_like(ids)

    model = AutoModel.from_pretrained(a.model).eval()
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        times = []
        for _ in range(a.repeats):
            start = time.perf_counter()
            model(input_ids=ids, attention_mask=mask, token_type_ids=types)
            times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    print(
        f"pytorch batch {a.batch}x{a.seq}  threads {torch.get_num_threads()}  median {statistics.median(times):.1f} ms"
        f"  mean {statistics.mean(times):.1f} ms  min {times[0]:.1f} ms  ({a.repeats} runs, torch {torch.__version__},"
        f" attention {model.config._attn_implementation})"
    )
    save_file(
        {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "last_hidden_state": out.contiguous()},
        a.out,
    )


if __name__ == "__main__":
    main()
