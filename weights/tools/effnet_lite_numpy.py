#!/usr/bin/env python3
"""Reference forward pass of EfficientNet-Lite0 in pure numpy, reading the converted
.safetensors (original lukemelas/ml-illustrated tensor names). Used to sanity-check weights.
usage: effnet_lite_numpy.py WEIGHTS.safetensors LABELS.txt IMG [IMG...]
       (env SIZE=224|260, MODES=pm1,imagenet; LABELS.txt may be '-' for weights/imagenet_classes.txt)

Copied from the team's reference (shared/reference/weights-tools/effnet_lite_numpy.py).
Numerics unchanged. Changes: `preprocess` was split into `resize_crop` (PIL resize + centre
crop -> uint8 RGB image) and the normalisation, so the exact crop can be saved as a golden
input; `load_labels` / DEFAULT_LABELS added. The block plan is derived from tensor shapes,
so the same code runs lite0/lite1/lite2 (ARGS below is lite0's table, kept for reference).
NOTE: `resize_crop` uses Python's round() (banker's rounding) and PIL's BICUBIC filter on
purpose; it is the reference behaviour the golden files were made with. Do not "fix" it."""
import math, os, sys
import numpy as np
from PIL import Image
from safetensors.numpy import load_file

# (repeats, kernel, stride, expand, in, out) for lite0 (width=depth=1.0)
ARGS = [(1,3,1,1,32,16),(2,3,2,6,16,24),(2,5,2,6,24,40),(3,3,2,6,40,80),
        (3,5,1,6,80,112),(4,5,2,6,112,192),(1,3,1,6,192,320)]
EPS = 1e-3
DEFAULT_LABELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'imagenet_classes.txt')

def load_labels(path=DEFAULT_LABELS):
    """1000 lines, WordNet synonyms comma-separated; short label = part before the first comma."""
    labels = open(path, encoding='utf-8').read().splitlines()
    assert len(labels) == 1000, f'{path}: expected 1000 class names, got {len(labels)}'
    return labels

def same_pad(x, k, s):  # TF 'SAME' padding (asymmetric), x: C,H,W
    _, h, w = x.shape
    oh, ow = math.ceil(h / s), math.ceil(w / s)
    ph, pw = max((oh-1)*s + k - h, 0), max((ow-1)*s + k - w, 0)
    return np.pad(x, ((0,0),(ph//2, ph-ph//2),(pw//2, pw-pw//2))), oh, ow

def conv(x, W, s=1, groups=1):
    co, ci_g, k, _ = W.shape
    xp, oh, ow = same_pad(x, k, s)
    out = np.zeros((co, oh, ow), np.float32)
    for dy in range(k):
        for dx in range(k):
            patch = xp[:, dy:dy+s*oh:s, dx:dx+s*ow:s]            # C,oh,ow
            if groups == 1:
                out += np.einsum('oc,chw->ohw', W[:, :, dy, dx], patch, optimize=True)
            else:  # depthwise
                out += W[:, 0, dy, dx][:, None, None] * patch
    return out

def bn(x, p, w):
    g, b, m, v = (w[p+s] for s in ('.weight', '.bias', '.running_mean', '.running_var'))
    return (x - m[:, None, None]) / np.sqrt(v[:, None, None] + EPS) * g[:, None, None] + b[:, None, None]

relu6 = lambda x: np.clip(x, 0, 6)

STAGE_STRIDES = [1, 2, 2, 2, 1, 2, 1]   # EfficientNet(-Lite) stage strides, first block of each stage

def block_plan(w):
    """Derive (index, has_expand, cin, cout, stride) for every MBConv block from tensor shapes,
    so the same code serves lite0/lite1/lite2 (stages start where cin != cout)."""
    plan, b, stage = [], 0, -1
    while f'_blocks.{b}._project_conv.weight' in w:
        p = f'_blocks.{b}.'
        has_exp = p + '_expand_conv.weight' in w
        cin = w[p+'_expand_conv.weight'].shape[1] if has_exp else w[p+'_depthwise_conv.weight'].shape[0]
        cout = w[p+'_project_conv.weight'].shape[0]
        new_stage = cin != cout
        if new_stage: stage += 1
        plan.append((b, has_exp, cin, cout, STAGE_STRIDES[stage] if new_stage else 1)); b += 1
    return plan

def forward(w, x):
    x = relu6(bn(conv(x, w['_conv_stem.weight'], 2), '_bn0', w))
    for (b, has_exp, cin, co, stride) in block_plan(w):
            p = f'_blocks.{b}.'
            y = x
            if has_exp:
                y = relu6(bn(conv(y, w[p+'_expand_conv.weight']), p+'_bn0', w))
            y = relu6(bn(conv(y, w[p+'_depthwise_conv.weight'], stride, groups=y.shape[0]), p+'_bn1', w))
            y = bn(conv(y, w[p+'_project_conv.weight']), p+'_bn2', w)
            x = y + x if (stride == 1 and cin == co) else y
    x = relu6(bn(conv(x, w['_conv_head.weight']), '_bn1', w))
    x = x.mean(axis=(1, 2))
    return w['_fc.weight'] @ x + w['_fc.bias']

def resize_crop(path, size=224):
    """RGB, resize shorter side to round(size/0.875) (PIL bicubic), centre crop size x size.
    Returns the uint8 RGB PIL image fed to the network (before normalisation)."""
    img = Image.open(path).convert('RGB')
    # resize shorter side to size/0.875, centre crop size (standard eval transform)
    r = int(round(size / 0.875)); w0, h0 = img.size; sc = r / min(w0, h0)
    img = img.resize((max(size, round(w0*sc)), max(size, round(h0*sc))), Image.BICUBIC)
    w0, h0 = img.size; l, t = (w0-size)//2, (h0-size)//2
    return img.crop((l, t, l+size, t+size))

def preprocess(path, size=224, mode='pm1'):
    """-> float32 CHW array. mode 'pm1': (x-127)/128 (TF EfficientNet-Lite); else ImageNet mean/std."""
    return normalise(resize_crop(path, size), mode)

def normalise(crop, mode='pm1'):
    """uint8 RGB crop (PIL image or HWC array) -> float32 CHW network input."""
    a = np.asarray(crop, np.float32)
    if mode == 'pm1':   a = (a - 127.0) / 128.0          # TF EfficientNet-Lite convention
    else:               a = (a/255. - np.array([.485,.456,.406])) / np.array([.229,.224,.225])
    return a.transpose(2, 0, 1).astype(np.float32)

if __name__ == '__main__':
    w = load_file(sys.argv[1]); labels = load_labels(DEFAULT_LABELS if sys.argv[2] == '-' else sys.argv[2])
    size = int(os.environ.get('SIZE', '224')); modes = os.environ.get('MODES', 'pm1,imagenet').split(',')
    for path in sys.argv[3:]:
        for mode in modes:
            logits = forward(w, preprocess(path, size=size, mode=mode))
            pr = np.exp(logits - logits.max()); pr /= pr.sum()
            top = np.argsort(-pr)[:5]
            print(f'{path.split("/")[-1]:24s} [{mode:8s}] ' + ' | '.join(f'{labels[i].split(",")[0]} {pr[i]:.2f}' for i in top))
