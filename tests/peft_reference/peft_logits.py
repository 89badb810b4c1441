#!/usr/bin/env python3
"""Loads an adapter written by `peftspace export --format peft` with Hugging Face PEFT and writes its logits.

    python peft_logits.py MODEL_DIR ADAPTER_DIR INPUT.tsv OUT.csv [MAX_LEN]

MODEL_DIR is the backbone (a transformers folder), ADAPTER_DIR the exported adapter, INPUT.tsv a GLUE-style file
with a header whose `sentence` column is scored. OUT.csv gets one row per example: index, then the logits. The model
is `AutoModelForSequenceClassification` with as many labels as the adapter's classifier has rows, wrapped by
`PeftModel.from_pretrained`, in eval mode, one example at a time (no padding), inputs cut to MAX_LEN tokens
(default 128) as `peftspace predict` cuts them. `tests/real/saved_real.rs` compares these logits with `predict`'s.
"""

import csv
import os
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerFast


def main():
    model_dir, adapter_dir, input_path, out_path = sys.argv[1:5]
    max_len = int(sys.argv[5]) if len(sys.argv) > 5 else 128
    head = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))["base_model.model.classifier.weight"]
    base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=head.shape[0])
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"))
    # tokenizer.json may switch padding on (all-MiniLM-L6-v2 does); one example at a time needs none.
    tok._tokenizer.no_padding()
    with open(input_path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    with open(out_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index"] + [f"logit_{i}" for i in range(head.shape[0])])
        for i, row in enumerate(rows):
            enc = tok(row["sentence"], truncation=True, max_length=max_len, return_tensors="pt")
            with torch.no_grad():
                logits = model(**enc).logits[0]
            w.writerow([i] + [repr(float(x)) for x in logits])


if __name__ == "__main__":
    main()
