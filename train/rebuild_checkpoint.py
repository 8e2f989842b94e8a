"""Rebuild a trainable checkpoint from an exported centre detector or corner model (an ONNX graph whose batch norms
were folded into its convolutions), so that ``vcorner train --init`` can fine-tune it when its training run is gone.

The convolutions take the folded weights; each batch norm is set to the identity in both modes: its running
statistics and its scale and shift are the mean and spread of its input on plain views (detector) or unjittered
patches (corner model) of DATA, so that a training batch normalizes and then restores them. Prints the parity with
the ONNX graph (eval mode).

    python train/rebuild_checkpoint.py vcorner/models/detector.onnx DATA runs/namer-shipped
    python train/rebuild_checkpoint.py vcorner/models/default.onnx DATA runs/default-shipped
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper

from vcorner.models.modelfile import card_format, read_detector_card, read_model_card
from vcorner.network.checkpoint import save_model
from vcorner.network.unet import UNet
from vcorner.training.data import epoch_patches, load_dataset
from vcorner.training.detector_data import channel_names, epoch_views, load_detector_images
from vcorner.training.detector_recipe import AugmentSpec


def load_folded(model: UNet, graph: onnx.ModelProto) -> None:
    """Copy the graph's folded convolutions (in forward order) and transposed convolutions into ``model``, and set
    every batch norm to the identity (eval mode)."""
    weights = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    convs = [n for n in graph.graph.node if n.op_type == "Conv"]
    targets = ([model.down[i][j][0] for i in range(len(model.down)) for j in range(2)]
               + [model.up[k][j][0] for k in range(len(model.up)) for j in range(2)]
               + [m for m in model.head.modules() if isinstance(m, torch.nn.Conv2d)])  # one, or two with head_width
    if len(convs) != len(targets):
        raise SystemExit(f"the graph has {len(convs)} convolutions, the model {len(targets)}")
    with torch.no_grad():
        for node, conv in zip(convs, targets, strict=True):
            conv.weight.copy_(torch.from_numpy(weights[node.input[1]].copy()))
            conv.bias.copy_(torch.from_numpy(weights[node.input[2]].copy()))
        for k, up in enumerate(model.upsample):
            up.weight.copy_(torch.from_numpy(weights[f"upsample.{k}.weight"].copy()))
            up.bias.copy_(torch.from_numpy(weights[f"upsample.{k}.bias"].copy()))
        for bn in batch_norms(model):
            bn.weight.fill_(1.0)
            bn.bias.zero_()
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)


def batch_norms(model: UNet) -> list[torch.nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def fit_identity_norms(model: UNet, views: np.ndarray) -> None:
    """Set each batch norm's statistics, scale and shift to its input's mean and spread on ``views`` (N, 1, S, S)."""
    norms = batch_norms(model)
    inputs: dict[int, list[torch.Tensor]] = {}
    hooks = [bn.register_forward_hook(lambda _m, inp, _o, key=i: inputs.setdefault(key, []).append(inp[0].detach()))
             for i, bn in enumerate(norms)]
    with torch.no_grad():
        for start in range(0, len(views), 32):
            model(torch.from_numpy(views[start:start + 32]))
    for hook in hooks:
        hook.remove()
    with torch.no_grad():
        for i, bn in enumerate(norms):
            seen = torch.cat(inputs[i])
            mean, var = seen.mean(dim=(0, 2, 3)), seen.var(dim=(0, 2, 3), unbiased=False)
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.weight.copy_(torch.sqrt(var + bn.eps))
            bn.bias.copy_(mean)


def detector_inputs(card, data: Path) -> np.ndarray:
    """Plain letterboxed views of up to 256 films of ``data`` (N, 1, H, W)."""
    images = load_detector_images(data, card.detection.input_shape, 1.0)[:256]
    names = channel_names([im.record for im in images])
    return np.concatenate([v[0] for v in epoch_views(images, names, card.detection, AugmentSpec(), None)])


def corner_inputs(card, data: Path) -> np.ndarray:
    """Unjittered patches of up to 64 films of ``data`` (N, 1, S, S), cut as the card samples them."""
    _, images = load_dataset(data, card.ground_truth)
    return np.concatenate([x for x, _ in epoch_patches(images[:64], 4, card.sampling, card.ground_truth, None)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="An exported detector or corner model (.onnx with its card).")
    parser.add_argument("data", type=Path, help="Annotated films whose plain views or patches set the batch norms.")
    parser.add_argument("out", type=Path, help="Run folder to write model.safetensors into.")
    args = parser.parse_args()
    detector = "detector" in (card_format(args.model) or "")
    card = read_detector_card(args.model)[0] if detector else read_model_card(args.model)
    model = UNet(**card.model_args)
    load_folded(model, onnx.load(str(args.model)))
    model.eval()
    inputs = detector_inputs(card, args.data) if detector else corner_inputs(card, args.data)
    fit_identity_norms(model, inputs)
    session = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, *inputs.shape[1:])).astype(np.float32)
    reference = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        rebuilt = model(torch.from_numpy(x)).numpy()
    print(f"parity with the ONNX graph: max |difference| {float(np.abs(reference - rebuilt).max()):.2e}")
    args.out.mkdir(parents=True, exist_ok=True)
    save_model(args.out / "model.safetensors", model, card)
    print(f"wrote {args.out / 'model.safetensors'}")


if __name__ == "__main__":
    main()
