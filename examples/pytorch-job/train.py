#!/usr/bin/env python3
"""FLIP example job: logistic regression in PyTorch under the FLIP job contract.

Reads $FLIP_INPUT_DIR/task.json, model.safetensors and data/dataframe.csv;
writes $FLIP_OUTPUT_DIR/metrics.json and, for a train task,
$FLIP_OUTPUT_DIR/model.safetensors with the same tensor names, shapes and
dtypes as the given model. The model and the metrics are those of FLIP's
built-in job flip/logistic-regression:

  tensors   weight (shape [F]) and bias (shape [1])
  params    {"features": [{"column": "age", "center": 60, "scale": 15}, ...],
             "label": "outcome", "epochs": 5, "learning_rate": 0.5, "l2": 0}
  features  standardised as (x - center) / scale
  training  full-batch gradient descent on the mean log loss, `epochs` steps
  metrics   loss, auc, accuracy, tp, fp, tn, fn of the given model (p >= 0.5
            is positive), sample_count, rows_skipped and, for train,
            train_loss of the trained model

A row whose label or any feature is empty or not a number is skipped.
Messages name columns and counts only, never a value from the data.
"""

import csv
import json
import math
import os
import sys

import torch
from safetensors.torch import load_file, save_file

TRAIN, EVALUATE = "train", "evaluate"
TRUE, FALSE = {"true", "t"}, {"false", "f"}


class JobError(Exception):
    """A problem with the job's inputs, reported without data."""


def parse_params(raw):
    problems = []
    for key in sorted(raw):
        if key not in ("features", "label", "epochs", "learning_rate", "l2"):
            problems.append(f"params.{key}: unknown field")
    features = raw.get("features")
    if not isinstance(features, list) or not features:
        problems.append("params.features: must be a non-empty array")
        features = []
    parsed, seen = [], set()
    for i, f in enumerate(features):
        if not isinstance(f, dict) or not isinstance(f.get("column"), str) or not f["column"].strip():
            problems.append(f"params.features[{i}].column: must be a column name")
            continue
        center, scale = f.get("center", 0), f.get("scale", 1)
        if not _number(center):
            problems.append(f"params.features[{i}].center: must be a finite number")
        if not _number(scale) or scale == 0:
            problems.append(f"params.features[{i}].scale: must be a finite, non-zero number")
        if f["column"] in seen:
            problems.append(f"params.features[{i}].column: column {f['column']!r} appears twice")
        seen.add(f["column"])
        parsed.append((f["column"], float(center) if _number(center) else 0.0,
                       float(scale) if _number(scale) and scale != 0 else 1.0))
    label = raw.get("label")
    if not isinstance(label, str) or not label.strip():
        problems.append("params.label: must be a non-empty column name")
    epochs = raw.get("epochs", 5)
    if not isinstance(epochs, int) or isinstance(epochs, bool) or not 0 <= epochs <= 100_000:
        problems.append("params.epochs: must be a whole number between 0 and 100000")
    lr = raw.get("learning_rate", 0.5)
    if not _number(lr) or lr <= 0:
        problems.append("params.learning_rate: must be a positive number")
    l2 = raw.get("l2", 0.0)
    if not _number(l2) or l2 < 0:
        problems.append("params.l2: must be a number >= 0")
    if problems:
        raise JobError("invalid params: " + "; ".join(problems))
    return parsed, label, epochs, float(lr), float(l2)


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_value(s):
    s = s.strip()
    if s.lower() in TRUE:
        return 1.0
    if s.lower() in FALSE:
        return 0.0
    try:
        v = float(s)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def parse_label(s):
    v = parse_value(s)
    return v if v in (0.0, 1.0) else None


def read_dataframe(path, features, label):
    """Standardised features (n x F) and labels (n), and the skipped row count."""
    xs, ys, skipped = [], [], 0
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise JobError("data/dataframe.csv is empty")
        index = {name.strip(): i for i, name in enumerate(header)}
        missing = [c for c in [col for col, _, _ in features] + [label] if c not in index]
        if missing:
            raise JobError("data/dataframe.csv has no column " + ", ".join(repr(c) for c in missing))
        cols = [(index[col], center, scale) for col, center, scale in features]
        label_col = index[label]
        need = max([label_col] + [c for c, _, _ in cols])
        for row in reader:
            if len(row) <= need:
                skipped += 1
                continue
            y = parse_label(row[label_col])
            x = [parse_value(row[c]) for c, _, _ in cols]
            if y is None or any(v is None for v in x):
                skipped += 1
                continue
            z = [(v - center) / scale for v, (_, center, scale) in zip(x, cols)]
            if not all(math.isfinite(v) for v in z):
                skipped += 1
                continue
            xs.append(z)
            ys.append(y)
    return xs, ys, skipped


def load_model(path, n_features):
    tensors = load_file(path)
    w, b = tensors.get("weight"), tensors.get("bias")
    if w is None or b is None:
        raise JobError("model.safetensors must hold tensors weight and bias")
    if tuple(w.shape) != (n_features,):
        raise JobError(f"model weight has shape {list(w.shape)}, want [{n_features}] (one per feature)")
    if tuple(b.shape) != (1,):
        raise JobError(f"model bias has shape {list(b.shape)}, want [1]")
    if not (w.is_floating_point() and b.is_floating_point()):
        raise JobError("model tensors must be floating point")
    return tensors


def auc(scores, labels):
    """Area under the ROC curve with tied scores at their average rank; None for one class."""
    pos = sum(1 for y in labels if y == 1.0)
    neg = len(labels) - pos
    if pos == 0 or neg == 0:
        return None
    pairs = sorted(zip(scores, labels), key=lambda p: p[0])
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j, tied_pos = i, 0
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            tied_pos += int(pairs[j][1] == 1.0)
            j += 1
        rank_sum += (i + 1 + j) / 2 * tied_pos
        i = j
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def evaluate(x, y, w, b):
    with torch.no_grad():
        z = x @ w + b
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y).item()
        p = torch.sigmoid(z)
        pred = (p >= 0.5).to(y.dtype)
        tp = int(((pred == 1) & (y == 1)).sum().item())
        fp = int(((pred == 1) & (y == 0)).sum().item())
        tn = int(((pred == 0) & (y == 0)).sum().item())
        fn = int(((pred == 0) & (y == 1)).sum().item())
        metrics = {"loss": loss, "accuracy": (tp + tn) / len(y), "tp": tp, "fp": fp, "tn": tn, "fn": fn}
        a = auc(p.cpu().tolist(), y.cpu().tolist())
        if a is not None:
            metrics["auc"] = a
    return metrics


def train(x, y, w, b, epochs, lr, l2):
    w = w.clone().requires_grad_(True)
    b = b.clone().requires_grad_(True)
    opt = torch.optim.SGD([w, b], lr=lr)
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y) + l2 / 2 * (w * w).sum()
        loss.backward()
        opt.step()
    w, b = w.detach(), b.detach()
    if not (torch.isfinite(w).all() and torch.isfinite(b).all()):
        raise JobError("the weights diverged; lower params.learning_rate")
    return w, b


def main():
    in_dir = os.environ.get("FLIP_INPUT_DIR", "/flip/input")
    out_dir = os.environ.get("FLIP_OUTPUT_DIR", "/flip/output")
    with open(os.path.join(in_dir, "task.json"), encoding="utf-8") as f:
        task = json.load(f)
    kind = task.get("kind")
    if kind not in (TRAIN, EVALUATE):
        raise JobError(f"task.json: kind {kind!r} is neither train nor evaluate")
    features, label, epochs, lr, l2 = parse_params(task.get("params") or {})

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device: {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""), flush=True)
    print(f"task: {kind}, round {task.get('round')} of {task.get('rounds')}", flush=True)

    given = load_model(os.path.join(in_dir, "model.safetensors"), len(features))
    xs, ys, skipped = read_dataframe(os.path.join(in_dir, "data", "dataframe.csv"), features, label)
    if not xs:
        raise JobError(f"no usable rows ({skipped} skipped)")
    print(f"rows: {len(xs)} used, {skipped} skipped", flush=True)

    # Compute in float64 whatever the model's dtype; write back in its dtype.
    x = torch.tensor(xs, dtype=torch.float64, device=device)
    y = torch.tensor(ys, dtype=torch.float64, device=device)
    w = given["weight"].to(device=device, dtype=torch.float64)
    b = given["bias"].to(device=device, dtype=torch.float64)

    metrics = evaluate(x, y, w, b)
    metrics["sample_count"] = len(xs)
    metrics["rows_skipped"] = skipped
    if kind == TRAIN:
        w2, b2 = train(x, y, w, b, epochs, lr, l2)
        with torch.no_grad():
            metrics["train_loss"] = torch.nn.functional.binary_cross_entropy_with_logits(x @ w2 + b2, y).item()
        trained = dict(given)
        trained["weight"] = w2.to(device="cpu", dtype=given["weight"].dtype).contiguous()
        trained["bias"] = b2.to(device="cpu", dtype=given["bias"].dtype).contiguous()
        save_file(trained, os.path.join(out_dir, "model.safetensors"))
        print(f"trained {epochs} epochs: loss {metrics['loss']:.4f} -> {metrics['train_loss']:.4f}", flush=True)

    with open(os.path.join(out_dir, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(metrics, f)
    print("metrics written", flush=True)


if __name__ == "__main__":
    try:
        main()
    except (JobError, OSError, json.JSONDecodeError) as e:
        print(f"job failed: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
