"""Training throughput (patches/s) of the recipes on this machine: forward + backward + Adam step.

    python benchmarks/train_throughput.py [--steps 20] [--batch 32]

Appends a JSON line per recipe to benchmarks/results/train_throughput.jsonl (machine, date, numbers).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from vcorner.benchmark.machine import stamp
from vcorner.models.evidence import append_rows as append_jsonl
from vcorner.network.loss import bhattacharyya_loss
from vcorner.network.unet import count_parameters, create_model


def measure(recipe: str, steps: int, batch: int) -> dict:
    torch.manual_seed(0)
    model = create_model(recipe).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 1, 64, 64)
    y = torch.softmax(torch.randn(batch, 64 * 64), dim=1).reshape(batch, 1, 64, 64)
    for step in range(steps + 2):
        if step == 2:
            began = time.perf_counter()
        loss = bhattacharyya_loss(y, model(x))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - began
    return {"recipe": recipe, "parameters": count_parameters(model), "batch": batch, "steps": steps,
            "patches_per_s": round(steps * batch / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--recipes", nargs="+", default=["lite", "paper"])
    args = parser.parse_args()
    out = Path(__file__).parent / "results" / "train_throughput.jsonl"
    out.parent.mkdir(exist_ok=True)
    for recipe in args.recipes:
        row = {**measure(recipe, args.steps, args.batch), "threads": torch.get_num_threads(), **stamp()}
        print(json.dumps(row))
        append_jsonl(out, [row])


if __name__ == "__main__":
    main()
