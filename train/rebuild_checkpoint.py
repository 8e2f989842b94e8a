"""Rebuild a trainable checkpoint from an exported centre detector (an ONNX graph whose batch norms were folded into
its convolutions), so that ``vcorner train --init`` can fine-tune it when its training run is gone.

The convolutions take the folded weights; each batch norm is set to the identity in both modes: its running
statistics and its scale and shift are the mean and spread of its input on plain views of DATA, so that a training
batch normalizes and then restores them. Prints the parity with the ONNX graph (eval mode).

    python train/rebuild_checkpoint.py vcorner/models/detector.onnx DATA runs/namer-shipped
"""
import json, sys
from pathlib import Path
import numpy as np, onnx, torch
from onnx import numpy_helper
from vcorner.backends import open_detector
from vcorner.network.checkpoint import save_model
from vcorner.network.unet import UNet
from vcorner.training.detector_data import load_detector_images, epoch_views, channel_names
from vcorner.training.detector_recipe import AugmentSpec
src, data, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
_, card = open_detector(src)
m = onnx.load(str(src)); init = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
model = UNet(**card.model_args)
convs = [n for n in m.graph.node if n.op_type == 'Conv']
torch_convs = [model.down[i][j][0] for i in range(len(model.down)) for j in range(2)] + \
              [model.up[k][j][0] for k in range(len(model.up)) for j in range(2)] + [model.head]
assert len(convs) == len(torch_convs), (len(convs), len(torch_convs))
with torch.no_grad():
    for node, conv in zip(convs, torch_convs):
        w, b = init[node.input[1]], init[node.input[2]]
        assert tuple(conv.weight.shape) == w.shape, (node.input[1], conv.weight.shape, w.shape)
        conv.weight.copy_(torch.from_numpy(w)); conv.bias.copy_(torch.from_numpy(b))
    for k, up in enumerate(model.upsample):
        up.weight.copy_(torch.from_numpy(init[f'upsample.{k}.weight'])); up.bias.copy_(torch.from_numpy(init[f'upsample.{k}.bias']))
    bns = [mod for mod in model.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.weight.fill_(1.0); bn.bias.zero_(); bn.running_mean.zero_(); bn.running_var.fill_(1.0 - bn.eps)
model.eval()
# parity with the ONNX graph
import onnxruntime as ort
sess = ort.InferenceSession(str(src), providers=['CPUExecutionProvider'])
x = np.random.default_rng(0).standard_normal((2, 1, 128, 128)).astype(np.float32)
ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
with torch.no_grad(): got = model(torch.from_numpy(x)).numpy()
print('parity max abs diff', float(np.abs(ref - got).max()), 'peak', float(ref.max()))
# BN statistics on plain views: gamma = sd, beta = mean, so train-mode BN is about the identity too
images = load_detector_images(data, card.detection.input_shape, 1.0)[:256]
names = channel_names([im.record for im in images])
xs = np.concatenate([v[0] for v in epoch_views(images, names, card.detection, AugmentSpec(), None)])
stats = {}
hooks = [bn.register_forward_hook(lambda mod, inp, outp, key=i: stats.setdefault(key, []).append(inp[0].detach())) for i, bn in enumerate(bns)]
with torch.no_grad():
    for i in range(0, len(xs), 32): model(torch.from_numpy(xs[i:i + 32]))
for h in hooks: h.remove()
with torch.no_grad():
    for i, bn in enumerate(bns):
        a = torch.cat(stats[i]); mean = a.mean(dim=(0, 2, 3)); var = a.var(dim=(0, 2, 3), unbiased=False)
        bn.running_mean.copy_(mean); bn.running_var.copy_(var)
        bn.weight.copy_(torch.sqrt(var + bn.eps)); bn.bias.copy_(mean)
with torch.no_grad(): got2 = model(torch.from_numpy(x)).numpy()
print('after BN statistics, eval parity', float(np.abs(ref - got2).max()))
out.mkdir(parents=True, exist_ok=True)
save_model(out / 'model.safetensors', model, card)
print('wrote', out)
