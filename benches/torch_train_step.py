#!/usr/bin/env python3
"""PyTorch + Hugging Face PEFT reference for peftspace's training step.

Two modes, on CPU with a fixed number of threads (or on a GPU with `--device cuda`):

  step   examples/s of one training step (forward, backward, AdamW) at a fixed sequence length and batch size, and
         the process's peak RSS; the same measurement `peftspace`'s `train_step` example prints. `--strategy lora`
         (PEFT LoRA on query and value), `bitfit`, or `design --layers "A12+L4 P8+B …"`: per layer, the modules a
         peftspace design builds at its budget (the `plan` line of `train_step --design`), written here as PEFT LoRA
         with per-layer ranks, prefix rows prepended to keys and values, Houlsby bottleneck adapters and BitFit.
  sst2   LoRA fine-tuning on a seeded SST-2 subsample, dev accuracy (calibrates the real-data tests).
  sick   LoRA fine-tuning on SICK relatedness (regression on standardised targets, the training set's mean and
         population sd; predictions mapped back), mean of Pearson and Spearman on the whole dev set.

Usage:
  python benches/torch_train_step.py step --model ../shared/models/all-MiniLM-L6-v2 [--threads 2] [--seq 128]
         [--batch 16] [--steps 20]
  python benches/torch_train_step.py sst2 --model DIR --data ../shared/data/glue [--train 4000] [--lr 1e-3]
  python benches/torch_train_step.py sick --model DIR --data ../shared/data/sick [--train 4000] [--lr 5e-4] [--seed 0]
"""
import argparse
import csv
import random
import resource
import time

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup


def lora_model(model_dir, rank, labels=2):
    # lora_alpha 8 is PEFT's default and peftspace's, so the scale is 8 / rank in both.
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=labels)
    config = LoraConfig(r=rank, lora_alpha=8, target_modules=["query", "value"], lora_dropout=0.0,
                        modules_to_save=["classifier"])
    return get_peft_model(model, config)


def bitfit_model(model_dir, labels=2):
    # Every bias of every encoder layer (projections and LayerNorms) and the classifier train, as peftspace's BitFit.
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=labels)
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("classifier.") or (".encoder.layer." in name and name.endswith(".bias"))
    return model


class Adapter(torch.nn.Module):
    """Bottleneck adapter `h + up(gelu(down(h)))` on a sub-layer's output, as peftspace's `adapter` (Houlsby)."""

    def __init__(self, hidden, width):
        super().__init__()
        self.down = torch.nn.Linear(hidden, width)
        self.up = torch.nn.Linear(width, hidden)
        torch.nn.init.normal_(self.up.weight, std=1e-3)
        torch.nn.init.zeros_(self.up.bias)

    def forward(self, h):
        return h + self.up(F.gelu(self.down(h)))


def add_adapter(linear, hidden, width):
    # The adapter rewrites the output projection's result (before dropout, residual and LayerNorm).
    linear.adapter = Adapter(hidden, width)
    linear.register_forward_hook(lambda module, inputs, out: module.adapter(out))


def add_prefix(attention, rows):
    """Prefix tuning: `rows` trainable key and value rows prepended in this self-attention (peftspace's `prefix`).

    Hugging Face's BERT has no per-layer prefix, so the self-attention's forward is replaced by one that computes
    the same projections with its own (possibly LoRA-wrapped) query/key/value modules and prepends the rows."""
    hidden = attention.all_head_size
    attention.prefix_keys = torch.nn.Parameter(torch.randn(rows, hidden) * 0.02)
    attention.prefix_values = torch.nn.Parameter(torch.randn(rows, hidden) * 0.02)
    heads, head_dim = attention.num_attention_heads, attention.attention_head_size

    def forward(hidden_states, attention_mask=None, *args, **kwargs):
        batch, length, _ = hidden_states.shape
        def split(x):
            return x.view(batch, -1, heads, head_dim).transpose(1, 2)
        query = split(attention.query(hidden_states))
        key = split(torch.cat([attention.prefix_keys.expand(batch, rows, hidden), attention.key(hidden_states)], 1))
        value = split(torch.cat([attention.prefix_values.expand(batch, rows, hidden),
                                 attention.value(hidden_states)], 1))
        mask = attention_mask
        if mask is not None:
            # Prefix columns are always attended: True in a boolean mask, 0 in an additive one.
            fill = torch.ones if mask.dtype == torch.bool else torch.zeros
            mask = torch.cat([fill(*mask.shape[:-1], rows, dtype=mask.dtype, device=mask.device), mask], -1)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask,
                                             dropout_p=attention.dropout.p if attention.training else 0.0)
        return out.transpose(1, 2).reshape(batch, length, hidden), None

    attention.forward = forward


def design_model(model_dir, layers_text, labels=2):
    """The modules of a peftspace design, per layer, from its sizes text (`A12+L4 P8+B -`: A adapter width,
    L LoRA rank on query and value, P prefix rows, B BitFit, `-` untuned)."""
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=labels)
    bert_layers = model.bert.encoder.layer
    layers = []
    for token in layers_text.split():
        parts = {} if token == "-" else {p[0]: int(p[1:] or 0) for p in token.split("+")}
        unknown = set(parts) - set("ALPB")
        if unknown:
            raise SystemExit(f"--layers: unknown strategy code {sorted(unknown)} in `{token}` (known: A, L, P, B)")
        layers.append(parts)
    if len(layers) != len(bert_layers):
        raise SystemExit(f"--layers names {len(layers)} layers; the model has {len(bert_layers)}")
    ranks = {i: parts["L"] for i, parts in enumerate(layers) if "L" in parts}
    if ranks:
        pattern = {f"layer.{i}.attention.self.{m}": r for i, r in ranks.items() for m in ("query", "value")}
        config = LoraConfig(r=max(ranks.values()), lora_alpha=8, target_modules=["query", "value"],
                            layers_to_transform=sorted(ranks), rank_pattern=pattern, lora_dropout=0.0,
                            modules_to_save=["classifier"])
        model = get_peft_model(model, config)
    else:
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith("classifier.")
    hidden = bert_layers[0].output.dense.out_features
    for layer, parts in zip(bert_layers, layers):
        if "B" in parts:
            for name, p in layer.named_parameters():
                if name.endswith(".bias") and "lora_" not in name:
                    p.requires_grad = True
        if "A" in parts:
            add_adapter(layer.attention.output.dense, hidden, parts["A"])
            add_adapter(layer.output.dense, hidden, parts["A"])
        if "P" in parts:
            add_prefix(layer.attention.self, parts["P"])
    return model


def step_benchmark(args):
    torch.manual_seed(0)
    device = torch.device(args.device)
    if args.strategy == "lora":
        model = lora_model(args.model, args.rank)
    elif args.strategy == "bitfit":
        model = bitfit_model(args.model)
    else:
        if not args.layers:
            raise SystemExit("--strategy design needs --layers (the `plan` line of peftspace's train_step --design)")
        model = design_model(args.model, args.layers)
    model = model.to(device)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    # The very batch peftspace's `train_step` example builds: ids 1000 + (i · 7919 mod 19000), labels alternating.
    ids = (1000 + (torch.arange(args.batch * args.seq) * 7919) % 19000).reshape(args.batch, args.seq).to(device)
    mask = torch.ones_like(ids)
    token_types = torch.zeros_like(ids)
    labels = (torch.arange(args.batch) % 2).to(device)
    def sync():
        # GPU kernels run asynchronously: wait for them before reading the clock.
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    params = [p for p in model.parameters() if p.requires_grad]
    phases = [0.0, 0.0, 0.0]
    def one_step(phases):
        # Forward, backward and update timed apart, as peftspace's example does (clipping included in the update).
        t = time.perf_counter()
        out = model(input_ids=ids, attention_mask=mask, token_type_ids=token_types, labels=labels)
        sync()
        phases[0] += time.perf_counter() - t
        t = time.perf_counter()
        out.loss.backward()
        sync()
        phases[1] += time.perf_counter() - t
        t = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        sync()
        phases[2] += time.perf_counter() - t
    for _ in range(args.warmup):
        one_step([0.0, 0.0, 0.0])
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        one_step(phases)
    sync()
    seconds = time.perf_counter() - start
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"torch {torch.__version__} {args.strategy} device {device} threads {torch.get_num_threads()} seq {args.seq} batch {args.batch} "
          f"rank {args.rank} trainable {trainable}: {args.steps * args.batch / seconds:.1f} examples/s "
          f"({seconds / args.steps * 1000:.0f} ms/step), peak RSS {rss_mib:.0f} MiB; per step: "
          f"forward {phases[0] / args.steps * 1000:.0f} ms, backward {phases[1] / args.steps * 1000:.0f} ms, "
          f"update {phases[2] / args.steps * 1000:.0f} ms")


def read_sst2(path):
    with open(path, encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [(r[0], int(r[1])) for r in rows[1:]]


def sst2(args):
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    train = read_sst2(f"{args.data}/SST-2/train.tsv")
    dev = read_sst2(f"{args.data}/SST-2/dev.tsv")
    train = random.sample(train, args.train) if args.train < len(train) else train
    tok = AutoTokenizer.from_pretrained(args.model)
    model = lora_model(args.model, args.rank)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    steps = args.epochs * ((len(train) + args.batch - 1) // args.batch)
    schedule = get_linear_schedule_with_warmup(optimizer, int(0.06 * steps + 0.999), steps)
    start = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        random.shuffle(train)
        for i in range(0, len(train), args.batch):
            chunk = train[i:i + args.batch]
            enc = tok([t for t, _ in chunk], padding=True, truncation=True, max_length=args.max_len,
                      return_tensors="pt")
            out = model(**enc, labels=torch.tensor([l for _, l in chunk]))
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
    seconds = time.perf_counter() - start
    model.eval()
    right = 0
    with torch.no_grad():
        for i in range(0, len(dev), 64):
            chunk = dev[i:i + 64]
            enc = tok([t for t, _ in chunk], padding=True, truncation=True, max_length=args.max_len,
                      return_tensors="pt")
            pred = model(**enc).logits.argmax(-1)
            right += sum(int(p) == l for p, (_, l) in zip(pred, chunk))
    print(f"sst2 train {len(train)} epochs {args.epochs} lr {args.lr} rank {args.rank} seed {args.seed}: "
          f"dev accuracy {right / len(dev):.4f}, {seconds:.0f} s training")


def read_sick(path):
    with open(path, newline="") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(r["sentence_A"], r["sentence_B"], float(r["relatedness_score"])) for r in rows]


def ranks(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def pearson(x, y):
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / (sxx * syy) ** 0.5


def sick(args):
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    train = read_sick(f"{args.data}/train.tsv")
    dev = read_sick(f"{args.data}/dev.tsv")
    train = random.sample(train, args.train) if args.train < len(train) else train
    targets = [t for _, _, t in train]
    mean = sum(targets) / len(targets)
    sd = (sum((t - mean) ** 2 for t in targets) / len(targets)) ** 0.5
    tok = AutoTokenizer.from_pretrained(args.model)
    model = lora_model(args.model, args.rank, labels=1)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    steps = args.epochs * ((len(train) + args.batch - 1) // args.batch)
    schedule = get_linear_schedule_with_warmup(optimizer, int(0.06 * steps + 0.999), steps)
    start = time.perf_counter()
    losses = []
    for _ in range(args.epochs):
        model.train()
        random.shuffle(train)
        for i in range(0, len(train), args.batch):
            chunk = train[i:i + args.batch]
            enc = tok([a for a, _, _ in chunk], [b for _, b, _ in chunk], padding=True, truncation=True,
                      max_length=args.max_len, return_tensors="pt")
            z = torch.tensor([(t - mean) / sd for _, _, t in chunk])
            loss = F.mse_loss(model(**enc).logits.squeeze(-1), z)
            loss.backward()
            losses.append(loss.item())
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
    seconds = time.perf_counter() - start
    model.eval()
    predictions = []
    with torch.no_grad():
        for i in range(0, len(dev), 64):
            chunk = dev[i:i + 64]
            enc = tok([a for a, _, _ in chunk], [b for _, b, _ in chunk], padding=True, truncation=True,
                      max_length=args.max_len, return_tensors="pt")
            predictions += (model(**enc).logits.squeeze(-1) * sd + mean).tolist()
    gold = [t for _, _, t in dev]
    p = pearson(predictions, gold)
    s = pearson(ranks(predictions), ranks(gold))
    print(f"sick train {len(train)} epochs {args.epochs} lr {args.lr} rank {args.rank} seed {args.seed}: "
          f"pearson {p:.4f} spearman {s:.4f} mean {(p + s) / 2:.4f}, train loss {sum(losses) / len(losses):.3f}, "
          f"{seconds:.0f} s training")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["step", "sst2", "sick"])
    p.add_argument("--model", required=True)
    p.add_argument("--data")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rank", type=int, default=12)
    p.add_argument("--strategy", choices=["lora", "bitfit", "design"], default="lora",
                   help="step mode: LoRA (q, v), BitFit, or a design's modules (--layers)")
    p.add_argument("--layers", help="step mode, --strategy design: per-layer sizes, e.g. \"A12+L4 P8+B -\"")
    p.add_argument("--train", type=int, default=4000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda (step mode)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.mode == "step":
        step_benchmark(args)
    else:
        if args.batch == 16 and "--batch" not in __import__("sys").argv:
            args.batch = 32
        if args.mode == "sick":
            sick(args)
        else:
            sst2(args)


if __name__ == "__main__":
    main()
