#!/usr/bin/env python3
"""PyTorch yardstick for labeld's CUDA path: EfficientNet-Lite0/Lite2 on the very same .safetensors weights.

1. Builds the network from weights/efficientnet_<model>.safetensors with torch.nn.functional ops,
   mirroring bench/onnx_model.py (whose block_plan, same_pads and fold_bn it imports):
   BatchNorm (eps 1e-3) folded into each conv at load, TF "SAME" padding (output ceil(in/stride):
   the symmetric part as conv2d's padding, the odd extra pixel at the bottom/right by F.pad), depthwise convs as conv2d(groups=C), ReLU6 as
   clamp(0, 6), residual when stride 1 and c_in == c_out, global average pool, fc. Like labeld, the
   model takes float32 NCHW input (x = (pixel - 127) / 128), casts it to the compute precision on
   the device and returns float32 logits.
2. Correctness first: for each precision, the golden crops of tests/fixtures/golden
   (<stem>.<size>.crop.png) one at a time and then all together as one batch, against the numpy
   reference logits in <stem>.efficientnet-<model>.json. In f32 (IEEE: TF32 off) the max |logit
   diff| must be <= --tol (1e-3, as bench/ort_bench.py) with the same top-1, or nothing is timed
   and the exit status is 1. For tf32/f16/bf16 the diff and whether top-1/top-5 match are only
   reported. f32 is always checked, even when not timed.
3. Timing, per (model, precision, batch): the golden crops repeated to fill the batch; one first
   call (cuDNN autotune with cudnn.benchmark), a short warm-up, then back-to-back calls for
   --seconds, each timed on its own and ended by torch.cuda.synchronize(), under
   torch.inference_mode(). Two figures:
     host:   float32 batch in pinned host memory -> device, forward, float32 logits -> pinned host
             memory (what a service that receives images on the CPU pays);
     device: input already on the device, forward only (CUDA only).
   Reports images/s (images / wall time of the timed loop) and p50/p90/p99 ms per call as markdown
   tables, plus the max |logit diff| of the last timed batch's output against the golden logits;
   --json writes it all with machine info (torch, CUDA, cuDNN, GPU name).

Precisions: f32 (IEEE fp32 convs and matmuls), tf32 (f32 weights, TF32 tensor cores allowed: PyTorch's
default for cuDNN convs), f16, bf16. --channels-last stores weights and activations NHWC
(torch.channels_last); on CUDA that also routes depthwise convs to cuDNN instead of PyTorch's own
depthwise kernel. --compile wraps each model in torch.compile (default dynamic shapes: about three
compiles per model and precision, at batch 4, batch 1 and then a dynamic batch size, each tens of
seconds; they show in the check time and the "first call" column, and are not in the budget below).

On the GPU machine (torch 2.11.0+cu130, numpy, safetensors, onnx; no onnxruntime or Pillow needed),
from the repository root; the default sweep (lite0+lite2, f32+f16, 6 batch sizes, host and device:
96 s of timed loops with --seconds 2, plus autotune and warm-up) should take about 2 minutes:

  python bench/gpu/torch_bench.py --device cuda --seconds 2 --json torch-cuda.json
  python bench/gpu/torch_bench.py --device cuda --seconds 2 --channels-last --json torch-cuda-cl.json

and a CPU smoke test: python bench/gpu/torch_bench.py --device cpu --model lite0 --precisions f32 --batches 1,2 --seconds 1
"""
import argparse
import datetime
import json
import os
import platform
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
import golden  # noqa: E402  (the golden crops and logits, shared with bench/ort_bench.py)
import onnx_model  # noqa: E402  (MODELS, block_plan, same_pads, fold_bn; imports onnx, not onnxruntime)

# precision -> (torch dtype, TF32 allowed)
PRECISIONS = {'f32': (torch.float32, False), 'tf32': (torch.float32, True),
              'f16': (torch.float16, False), 'bf16': (torch.bfloat16, False)}


# ---- model ----------------------------------------------------------------------------------------

def frozen(array):
    return torch.nn.Parameter(torch.from_numpy(array), requires_grad=False)


class Conv(torch.nn.Module):
    """Conv with its BatchNorm folded in, TF-SAME padding, optional ReLU6."""

    def __init__(self, w, conv, bn, stride=1, depthwise=False, relu6=True):
        super().__init__()
        wf, bf = onnx_model.fold_bn(w[conv + '.weight'], w, bn)
        self.weight, self.bias = frozen(wf), frozen(bf)
        self.stride, self.groups, self.relu6 = stride, wf.shape[0] if depthwise else 1, relu6

    def forward(self, x):
        k = self.weight.shape[-1]
        (top, left, bottom, right), _, _ = onnx_model.same_pads(x.shape[2], x.shape[3], k, self.stride)
        # The symmetric part of the padding goes to conv2d; only an asymmetric extra (bottom/right,
        # stride-2 layers) costs an explicit F.pad.
        ph, pw = min(top, bottom), min(left, right)
        extra = (left - pw, right - pw, top - ph, bottom - ph)
        if any(extra):
            x = F.pad(x, extra)
        y = F.conv2d(x, self.weight, self.bias, self.stride, (ph, pw), 1, self.groups)
        return y.clamp_(0, 6) if self.relu6 else y


class Block(torch.nn.Module):
    """MBConv: [1x1 expand] -> depthwise -> 1x1 project [+ input]."""

    def __init__(self, w, b, has_exp, cin, cout, stride):
        super().__init__()
        p = f'_blocks.{b}.'
        self.expand = Conv(w, p + '_expand_conv', p + '_bn0') if has_exp else None
        self.depthwise = Conv(w, p + '_depthwise_conv', p + '_bn1', stride, depthwise=True)
        self.project = Conv(w, p + '_project_conv', p + '_bn2', relu6=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.project(self.depthwise(self.expand(x) if self.expand is not None else x))
        return y + x if self.residual else y


class EfficientNetLite(torch.nn.Module):
    """float32 [N, 3, S, S] -> float32 logits [N, 1000]; computes in the dtype of its parameters.
    With channels_last weights, cuDNN/oneDNN make every activation channels_last too."""

    def __init__(self, path):
        super().__init__()
        w = load_file(path)
        self.stem = Conv(w, '_conv_stem', '_bn0', stride=2)
        self.blocks = torch.nn.Sequential(*(Block(w, *plan) for plan in onnx_model.block_plan(w)))
        self.head = Conv(w, '_conv_head', '_bn1')
        self.fc_weight = frozen(w['_fc.weight'].astype(np.float32))
        self.fc_bias = frozen(w['_fc.bias'].astype(np.float32))

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x.to(self.fc_weight.dtype))))
        return F.linear(x.mean((2, 3)), self.fc_weight, self.fc_bias).float()


def set_tf32(allowed):
    """cuDNN convs and cuBLAS matmuls in TF32 or IEEE fp32 (new-style flags only: mixing them with
    the legacy allow_tf32 flags is an error in torch 2.9+)."""
    mode = 'tf32' if allowed else 'ieee'
    torch.backends.cudnn.conv.fp32_precision = mode
    torch.backends.cuda.matmul.fp32_precision = mode


# ---- golden inputs -----------------------------------------------------------------------------

def load_golden(model_key):
    """-> (inputs float32 [n, 3, S, S], golden logits float32 [n, 1000], stems, golden top-5 lists)."""
    stems, xs, logits, top5s = zip(*golden.load_golden(model_key))
    return np.ascontiguousarray(np.stack(xs)), np.stack(logits), list(stems), list(top5s)


# ---- correctness -----------------------------------------------------------------------------------

def check(model, golden, device, precision, tol):
    """Each crop alone, then all crops as one batch -> (ok, rows). ok only means something for f32."""
    xs, gold, stems, top5s = golden
    x = torch.from_numpy(xs)
    batch = model(x.to(device)).cpu().double().numpy()
    ok, rows = True, []
    for i, stem in enumerate(stems):
        one = model(x[i:i + 1].to(device)).cpu().double().numpy()[0]
        d1, dn = (float(np.abs(o - gold[i]).max()) for o in (one, batch[i]))
        top1 = int(one.argmax()) == top5s[i][0] and int(batch[i].argmax()) == top5s[i][0]
        top5 = all([int(j) for j in np.argsort(-o)[:5]] == top5s[i] for o in (one, batch[i]))
        good = d1 <= tol and dn <= tol and top1
        ok &= good
        rows.append({'fixture': stem, 'max_abs_diff_batch1': d1, f'max_abs_diff_batch{len(stems)}': dn,
                     'top1_same': top1, 'top5_same': top5,
                     'result': ('ok' if good else 'FAIL') if precision == 'f32' else 'info'})
    return ok, rows


# ---- timing ----------------------------------------------------------------------------------------

def time_calls(call, sync, batch, seconds, warmup_s=0.25, warmup_min=3):
    """First call (autotune), warm-up, then back-to-back calls for `seconds`, each timed."""
    t0 = time.perf_counter()
    call()
    sync()
    first = time.perf_counter() - t0
    t0, n = time.perf_counter(), 0
    while n < warmup_min or time.perf_counter() - t0 < warmup_s:
        call()
        sync()
        n += 1
    lat = []
    start = time.perf_counter()
    while True:
        a = time.perf_counter()
        call()
        sync()
        b = time.perf_counter()
        lat.append(b - a)
        if b - start >= seconds:
            break
    wall = time.perf_counter() - start
    ms = np.array(lat) * 1e3
    return {'calls': len(lat), 'images_per_s': len(lat) * batch / wall, 'wall_s': wall,
            'first_call_s': first, 'p50_ms': float(np.percentile(ms, 50)),
            'p90_ms': float(np.percentile(ms, 90)), 'p99_ms': float(np.percentile(ms, 99)),
            'mean_ms': float(ms.mean()), 'min_ms': float(ms.min())}


def time_batch(model, golden, batch, device, seconds):
    """-> {'host': ..., 'device': ... (CUDA only), 'max_abs_diff': ..., 'top1_same': ...}."""
    xs, gold = golden[0], golden[1]
    idx = np.arange(batch) % len(xs)
    cuda = device.type == 'cuda'
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    x_host = torch.from_numpy(np.ascontiguousarray(xs[idx]))
    out_host = torch.empty(batch, gold.shape[1])
    if cuda:
        x_host, out_host = x_host.pin_memory(), out_host.pin_memory()

    def host_call():
        out_host.copy_(model(x_host.to(device, non_blocking=True)), non_blocking=True)

    r = {'host': time_calls(host_call, sync, batch, seconds)}
    if cuda:
        x_dev = x_host.to(device)
        r['device'] = time_calls(lambda: model(x_dev), sync, batch, seconds)
    out = out_host.double().numpy()
    r['max_abs_diff'] = float(np.abs(out - gold[idx]).max())
    r['top1_same'] = bool((out.argmax(1) == gold[idx].argmax(1)).all())
    return r


# ---- machine info ----------------------------------------------------------------------------------

def machine_info(device):
    cpu = platform.processor()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    info = {'cpu_model': cpu, 'logical_cpus': os.cpu_count(), 'torch_threads': torch.get_num_threads(),
            'platform': platform.platform(), 'python': platform.python_version(), 'torch': torch.__version__,
            'torch_cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version(), 'numpy': np.__version__}
    if device.type == 'cuda':
        p = torch.cuda.get_device_properties(device)
        info.update({'gpu': torch.cuda.get_device_name(device), 'gpu_capability': f'{p.major}.{p.minor}',
                     'gpu_memory_gib': round(p.total_memory / 2**30, 1), 'gpu_sms': p.multi_processor_count})
    return info


# ---- main ------------------------------------------------------------------------------------------

def csv(text, cast=str):
    return [cast(v) for v in text.split(',') if v]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--device', default='cuda', help='cuda, cuda:N or cpu (default cuda)')
    ap.add_argument('--model', default='lite0,lite2', help='comma-separated: lite0, lite2 (default both)')
    ap.add_argument('--precisions', default='f32,f16', help='comma-separated: f32, tf32, f16, bf16 (default f32,f16)')
    ap.add_argument('--batches', default='1,8,32,64,128,256', help='comma-separated batch sizes')
    ap.add_argument('--seconds', type=float, default=3.0, help='timed seconds per (precision, batch) and figure (default 3)')
    ap.add_argument('--channels-last', action='store_true', help='weights and activations in torch.channels_last')
    ap.add_argument('--compile', nargs='?', const='default', metavar='MODE',
                    help='torch.compile the model (MODE: default, reduce-overhead, max-autotune-no-cudagraphs, ...)')
    ap.add_argument('--tol', type=float, default=1e-3, help='f32: max |logit diff| vs golden (default 1e-3)')
    ap.add_argument('--json', help='write results and machine info to this file')
    args = ap.parse_args()
    models, precisions, batches = csv(args.model), csv(args.precisions), csv(args.batches, int)
    if not set(models) <= set(onnx_model.MODELS) or not set(precisions) <= set(PRECISIONS):
        ap.error(f'--model from {sorted(onnx_model.MODELS)}, --precisions from {list(PRECISIONS)}')
    if not models or not precisions or not batches or min(batches) < 1:
        ap.error('--model, --precisions and --batches must not be empty; batches positive')
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    if args.compile:  # every model instance and batch-size regime recompiles the same forward()s
        torch._dynamo.config.recompile_limit = 64
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    t_start = time.perf_counter()
    info = machine_info(device)
    print(f'# PyTorch yardstick: {", ".join(models)} on {device} '
          f'({info.get("gpu", info["cpu_model"])}), torch {torch.__version__}, CUDA {torch.version.cuda}, '
          f'cuDNN {info["cudnn"]}; channels_last {args.channels_last}, compile {args.compile or "off"}')
    weights = {key: {'file': os.path.relpath(onnx_model.weights_path(key), onnx_model.REPO),
                     'sha256': onnx_model.sha256_file(onnx_model.weights_path(key)),
                     'size': onnx_model.MODELS[key][1]} for key in models}
    result = {'machine': info, 'weights': weights, 'results': [], 'correctness': [],
              'settings': {'device': str(device), 'seconds': args.seconds, 'channels_last': args.channels_last,
                           'compile': args.compile, 'cudnn_benchmark': True, 'tol': args.tol,
                           'warmup': 'first call + >= 3 calls and >= 0.25 s',
                           'figures': {'host': 'pinned f32 input H2D + forward + f32 logits D2H, synchronize',
                                       'device': 'forward only, input on device, synchronize'}}}

    def finish(status):
        result['elapsed_s'] = round(time.perf_counter() - t_start, 1)
        result['finished_utc'] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
        print(f'\ntotal {result["elapsed_s"]} s')
        if args.json:
            with open(args.json, 'w') as f:
                json.dump(result, f, indent=1)
            print(f'wrote {args.json}')
        return status

    with torch.inference_mode():
        # ---- build and check every (model, precision); f32 always, as the gate ------------------------
        built, ok = {}, True
        for key in models:
            golden = load_golden(key)
            for prec in dict.fromkeys(['f32'] + precisions):
                dtype, tf32 = PRECISIONS[prec]
                model = EfficientNetLite(onnx_model.weights_path(key)).to(device, dtype, memory_format=fmt)
                if args.compile:
                    model = torch.compile(model, mode=None if args.compile == 'default' else args.compile)
                set_tf32(tf32)
                t0 = time.perf_counter()
                good, rows = check(model, golden, device, prec, args.tol)
                ok &= good or prec != 'f32'
                result['correctness'].append({'model': key, 'precision': prec, 'pass': good, 'fixtures': rows})
                n = len(rows)
                print(f'\n## correctness: {key} {prec} vs numpy golden logits'
                      f'{f" (tol {args.tol:g}, top-1 equal)" if prec == "f32" else " (report only)"}; '
                      f'{time.perf_counter() - t0:.1f} s\n')
                print(f'| fixture | max abs diff (batch 1) | max abs diff (batch {n}) | top-1 same | top-5 same | result |')
                print('|---|---|---|---|---|---|')
                for r in rows:
                    print(f'| {r["fixture"]} | {r["max_abs_diff_batch1"]:.3g} | {r[f"max_abs_diff_batch{n}"]:.3g} | '
                          f'{"yes" if r["top1_same"] else "no"} | {"yes" if r["top5_same"] else "no"} | {r["result"]} |')
                if prec in precisions:
                    built[key, prec] = model, golden
        if not ok:
            print('\nCORRECTNESS FAILED (f32): not timing anything', file=sys.stderr)
            return finish(1)
        print('\ncorrectness: f32 passes for every model and fixture')

        # ---- timing ----------------------------------------------------------------------------------
        cuda = device.type == 'cuda'
        print(f'\n## timing ({args.seconds:g} s per figure; '
              f'{"host = pinned H2D + forward + D2H, device = forward only" if cuda else "host = forward + logits copy"}'
              f'; ms per call)\n')
        print('| model | precision | batch | host images/s | p50 | p90 | p99 | device images/s | p50 | p90 | p99 '
              '| first call s | max abs diff |')
        print('|---|---|---|---|---|---|---|---|---|---|---|---|---|')
        sys.stdout.flush()
        for (key, prec), (model, golden) in built.items():
            set_tf32(PRECISIONS[prec][1])
            for bs in batches:
                r = time_batch(model, golden, bs, device, args.seconds)
                r.update({'model': key, 'precision': prec, 'batch': bs})
                result['results'].append(r)
                h, d = r['host'], r.get('device')
                dev_cols = f'{d["images_per_s"]:.1f} | {d["p50_ms"]:.2f} | {d["p90_ms"]:.2f} | {d["p99_ms"]:.2f}' \
                    if d else '- | - | - | -'
                print(f'| {key} | {prec} | {bs} | {h["images_per_s"]:.1f} | {h["p50_ms"]:.2f} | {h["p90_ms"]:.2f} | '
                      f'{h["p99_ms"]:.2f} | {dev_cols} | {h["first_call_s"]:.2f} | {r["max_abs_diff"]:.3g}'
                      f'{"" if r["top1_same"] else " (top-1 differs)"} |')
                sys.stdout.flush()
        print('\n## best batch per model and precision\n')
        for key, prec in built:
            rows = [r for r in result['results'] if r['model'] == key and r['precision'] == prec]
            line = []
            for fig in ('host', 'device') if cuda else ('host',):
                best = max(rows, key=lambda r: r[fig]['images_per_s'])
                line.append(f'{fig} {best[fig]["images_per_s"]:.1f} images/s (batch {best["batch"]})')
            print(f'- {key} {prec}: {"; ".join(line)}')
    return finish(0)


if __name__ == '__main__':
    sys.exit(main())
