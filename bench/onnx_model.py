#!/usr/bin/env python3
"""Build an EfficientNet-Lite ONNX graph straight from labeld's .safetensors weights (no torch).

The graph is the architecture of weights/tools/effnet_lite_numpy.py (the numpy reference),
written the way a production export would write it:

  * every Conv is bias-free in the weights; each BatchNorm (inference, eps 1e-3) is folded
    into the preceding conv at build time: W' = W * g/sqrt(v+eps), b' = beta - mean * g/sqrt(v+eps)
    (computed in float64, stored as float32);
  * TF "SAME" padding is turned into explicit, possibly asymmetric, Conv `pads` for the fixed
    input size (224 for Lite0, 260 for Lite2): pad = max((ceil(H/s)-1)*s + k - H, 0), floor(pad/2)
    before and the rest after, e.g. (0,1) for 3x3/s2 on 224;
  * ReLU6 is Clip(0, 6); depthwise convs are Conv with group = C; the head is
    GlobalAveragePool -> Flatten -> Gemm(transB=1) with `_fc.weight [1000,1280]` and `_fc.bias`;
  * input `input` float32 [N, 3, S, S], already normalised ((x-127)/128, NCHW); output `logits`
    float32 [N, 1000] (before softmax); N is a dynamic dimension.

The block layout is derived from tensor shapes exactly as the numpy reference does (a stage starts
where cin != cout; stage strides 1,2,2,2,1,2,1; residual when stride 1 and cin == cout), so the
same code builds Lite0 (16 blocks) and Lite2 (21 blocks).

usage: python bench/onnx_model.py --model lite0|lite2 [--weights PATH] [--size N] [--out model.onnx]
       (as a library: build_model(weights_path, size) -> onnx.ModelProto)
"""
import argparse
import hashlib
import math
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
# model key -> (weights file under weights/, input size, golden model name)
MODELS = {
    'lite0': ('efficientnet_lite0.safetensors', 224, 'efficientnet-lite0'),
    'lite2': ('efficientnet_lite2.safetensors', 260, 'efficientnet-lite2'),
}
BN_EPS = 1e-3
STAGE_STRIDES = [1, 2, 2, 2, 1, 2, 1]  # first block of each stage
OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; loads in any onnxruntime >= 1.13


def weights_path(model):
    return os.path.join(REPO, 'weights', MODELS[model][0])


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def block_plan(w):
    """(index, has_expand, cin, cout, stride) per MBConv block, derived from tensor shapes.
    Same rule as block_plan() in weights/tools/effnet_lite_numpy.py (copied: that module
    imports Pillow at the top, which this venv does not need)."""
    plan, b, stage = [], 0, -1
    while f'_blocks.{b}._project_conv.weight' in w:
        p = f'_blocks.{b}.'
        has_exp = p + '_expand_conv.weight' in w
        cin = w[p + '_expand_conv.weight'].shape[1] if has_exp else w[p + '_depthwise_conv.weight'].shape[0]
        cout = w[p + '_project_conv.weight'].shape[0]
        new_stage = cin != cout
        if new_stage:
            stage += 1
        plan.append((b, has_exp, cin, cout, STAGE_STRIDES[stage] if new_stage else 1))
        b += 1
    if not plan:
        raise ValueError('no _blocks.N._project_conv.weight tensors: not an EfficientNet-Lite weights file')
    return plan


def same_pads(h, w, k, s):
    """TF 'SAME' for an h x w input -> (ONNX pads [top, left, bottom, right], out_h, out_w)."""
    oh, ow = math.ceil(h / s), math.ceil(w / s)
    ph, pw = max((oh - 1) * s + k - h, 0), max((ow - 1) * s + k - w, 0)
    return [ph // 2, pw // 2, ph - ph // 2, pw - pw // 2], oh, ow


def fold_bn(conv_w, w, bn):
    """Fold inference BatchNorm `bn` (weight, bias, running_mean, running_var; eps 1e-3) into a
    bias-free conv weight [Cout, Cin/g, k, k] -> (float32 weight, float32 bias)."""
    g, beta, mean, var = (w[bn + s].astype(np.float64)
                          for s in ('.weight', '.bias', '.running_mean', '.running_var'))
    scale = g / np.sqrt(var + BN_EPS)
    wf = conv_w.astype(np.float64) * scale[:, None, None, None]
    bf = beta - mean * scale
    return wf.astype(np.float32), bf.astype(np.float32)


class _Builder:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, base):
        self.n += 1
        return f'{base}_{self.n}'

    def const(self, name, arr):
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def conv_bn(self, x, hw, w, conv, bn, stride=1, depthwise=False, relu6=True, tag=''):
        """Conv (BN folded, TF-SAME pads) [+ Clip(0,6)] -> (output name, (out_h, out_w))."""
        cw = w[conv + '.weight']
        k = cw.shape[2]
        assert cw.shape[2] == cw.shape[3], f'{conv}: non-square kernel {cw.shape}'
        pads, oh, ow = same_pads(hw[0], hw[1], k, stride)
        wf, bf = fold_bn(cw, w, bn)
        wn = self.const(conv + '.weight_folded', wf)
        bn_ = self.const(conv + '.bias_folded', bf)
        y = self.name(tag or conv)
        self.nodes.append(helper.make_node(
            'Conv', [x, wn, bn_], [y], name=y, kernel_shape=[k, k], strides=[stride, stride],
            pads=pads, dilations=[1, 1], group=cw.shape[0] if depthwise else 1))
        if relu6:
            z = self.name((tag or conv) + '_relu6')
            self.nodes.append(helper.make_node('Clip', [y, 'relu6_min', 'relu6_max'], [z], name=z))
            y = z
        return y, (oh, ow)


def build_model(path, size, name='efficientnet-lite'):
    """-> onnx.ModelProto for the weights at `path`, input [N, 3, size, size]."""
    w = load_file(path)
    bld = _Builder()
    bld.const('relu6_min', np.array(0.0, np.float32))
    bld.const('relu6_max', np.array(6.0, np.float32))

    x, hw = bld.conv_bn('input', (size, size), w, '_conv_stem', '_bn0', stride=2, tag='stem')
    for b, has_exp, cin, cout, stride in block_plan(w):
        p = f'_blocks.{b}.'
        y, yhw = x, hw
        if has_exp:
            y, yhw = bld.conv_bn(y, yhw, w, p + '_expand_conv', p + '_bn0', tag=f'b{b}_expand')
        dw = w[p + '_depthwise_conv.weight']
        assert dw.shape[1] == 1, f'{p}_depthwise_conv: expected [C,1,k,k], got {dw.shape}'
        y, yhw = bld.conv_bn(y, yhw, w, p + '_depthwise_conv', p + '_bn1', stride=stride,
                             depthwise=True, tag=f'b{b}_dw')
        y, yhw = bld.conv_bn(y, yhw, w, p + '_project_conv', p + '_bn2', relu6=False, tag=f'b{b}_project')
        if stride == 1 and cin == cout:
            z = bld.name(f'b{b}_add')
            bld.nodes.append(helper.make_node('Add', [y, x], [z], name=z))
            y = z
        x, hw = y, yhw
    x, hw = bld.conv_bn(x, hw, w, '_conv_head', '_bn1', tag='head')
    bld.nodes.append(helper.make_node('GlobalAveragePool', [x], ['pooled'], name='pool'))
    bld.nodes.append(helper.make_node('Flatten', ['pooled'], ['features'], name='flatten', axis=1))
    fc_w, fc_b = w['_fc.weight'].astype(np.float32), w['_fc.bias'].astype(np.float32)
    bld.const('_fc.weight', fc_w)
    bld.const('_fc.bias', fc_b)
    bld.nodes.append(helper.make_node('Gemm', ['features', '_fc.weight', '_fc.bias'], ['logits'],
                                      name='fc', transB=1))

    graph = helper.make_graph(
        bld.nodes, name,
        [helper.make_tensor_value_info('input', TensorProto.FLOAT, ['N', 3, size, size])],
        [helper.make_tensor_value_info('logits', TensorProto.FLOAT, ['N', fc_w.shape[0]])],
        initializer=bld.inits)
    model = helper.make_model(graph, producer_name='labeld-bench-onnx_model',
                              opset_imports=[helper.make_opsetid('', OPSET)])
    model.ir_version = IR_VERSION
    model.doc_string = (f'{name} from {os.path.basename(path)} (sha256 {sha256_file(path)}), '
                        f'input {size}x{size}, BatchNorm folded, TF-SAME pads explicit')
    onnx.checker.check_model(model, full_check=True)
    return model


def build_named(model_key, weights=None, size=None):
    fname, default_size, gname = MODELS[model_key]
    return build_model(weights or weights_path(model_key), size or default_size, gname)


def summary(model):
    ops = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    return ops, params


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--model', choices=sorted(MODELS), required=True)
    ap.add_argument('--weights', help='safetensors file (default: weights/efficientnet_<model>.safetensors)')
    ap.add_argument('--size', type=int, help='input size (default: 224 for lite0, 260 for lite2)')
    ap.add_argument('--out', help='write the model here (e.g. bench/lite0.onnx; bench/*.onnx is not committed)')
    args = ap.parse_args()
    model = build_named(args.model, args.weights, args.size)
    ops, params = summary(model)
    print(f'{args.model}: opset {OPSET}, {len(model.graph.node)} nodes '
          f'({", ".join(f"{k} {v}" for k, v in sorted(ops.items()))}), {params:,} parameters after BN folding')
    if args.out:
        onnx.save_model(model, args.out)
        print(f'wrote {args.out} ({os.path.getsize(args.out):,} bytes)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
