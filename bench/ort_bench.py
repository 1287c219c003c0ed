#!/usr/bin/env python3
"""ONNX Runtime yardstick for labeld: EfficientNet-Lite on the very same .safetensors weights.

1. Builds the ONNX graph in memory from weights/efficientnet_<model>.safetensors
   (bench/onnx_model.py: BatchNorm folded, TF-SAME pads explicit, no torch).
2. Correctness first: feeds the golden crops of tests/fixtures/golden (<stem>.<size>.crop.png,
   x = (pixel - 127) / 128, NCHW float32), one at a time and then all together as one batch, and
   compares with the numpy reference logits in <stem>.efficientnet-<model>.json: max |diff| must be
   <= --tol (1e-3) and the top-1 class must be the same. Any failure aborts (exit status 1)
   before timing anything.
3. Timing: for each thread count and batch size, an ORT session (CPUExecutionProvider,
   intra_op_num_threads=threads, inter_op_num_threads=1, ORT_ENABLE_ALL, sequential execution);
   a warm-up, then back-to-back run() calls for --seconds, each call timed. Reports images/s
   (images done / wall time of the timed loop) and p50/p90/p99 latency of one run() call in ms,
   as a markdown table, plus the best-batch images/s per thread count; --json writes it all with
   machine info (CPU model, cores, load average, versions).

The input of a timing run is the golden crops repeated to fill the batch (real pixels, not noise).

usage: python bench/ort_bench.py --model lite0|lite2 [--batches 1,4,8,16] [--threads 1,2]
                                 [--seconds 5] [--json OUT.json] [--labeld-ips N]
"""
import argparse
import datetime
import json
import os
import platform
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import onnx_model  # noqa: E402
from golden import load_golden  # noqa: E402


# ---- ORT ----------------------------------------------------------------------------------------

def make_session(model_bytes, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, sess_options=so, providers=['CPUExecutionProvider'])


def check_correctness(model_bytes, cases, tol, threads):
    """-> (ok, rows). Batch 1 per fixture, then all fixtures as one batch (dynamic N)."""
    sess = make_session(model_bytes, threads)
    rows, ok = [], True
    batch_out = sess.run(['logits'], {'input': np.stack([c[1] for c in cases])})[0]
    for i, (stem, x, gold, top5) in enumerate(cases):
        out = sess.run(['logits'], {'input': x[None]})[0][0]
        d1 = float(np.abs(out.astype(np.float64) - gold).max())
        dn = float(np.abs(batch_out[i].astype(np.float64) - gold).max())
        top1, top1_b = int(out.argmax()), int(batch_out[i].argmax())
        ort_top5 = [int(j) for j in np.argsort(-out)[:5]]
        good = d1 <= tol and dn <= tol and top1 == top5[0] and top1_b == top5[0]
        ok &= good
        rows.append({'fixture': stem, 'max_abs_diff_batch1': d1, f'max_abs_diff_batch{len(cases)}': dn,
                     'top1_ort': top1, 'top1_golden': top5[0], 'top5_same': ort_top5 == top5,
                     'pass': good})
    return ok, rows


def time_one(sess, x, seconds, warmup_s=0.5, warmup_min=3):
    feed = {'input': x}
    t0, n = time.perf_counter(), 0
    while n < warmup_min or time.perf_counter() - t0 < warmup_s:
        sess.run(['logits'], feed)
        n += 1
    lat = []
    start = time.perf_counter()
    end = start + seconds
    while True:
        a = time.perf_counter()
        sess.run(['logits'], feed)
        b = time.perf_counter()
        lat.append(b - a)
        if b >= end:
            break
    wall = time.perf_counter() - start
    lat_ms = np.array(lat) * 1e3
    return {'calls': len(lat), 'images': len(lat) * x.shape[0], 'wall_s': wall,
            'images_per_s': len(lat) * x.shape[0] / wall,
            'p50_ms': float(np.percentile(lat_ms, 50)), 'p90_ms': float(np.percentile(lat_ms, 90)),
            'p99_ms': float(np.percentile(lat_ms, 99)), 'mean_ms': float(lat_ms.mean()),
            'min_ms': float(lat_ms.min())}


# ---- machine info -------------------------------------------------------------------------------

def loadavg():
    try:
        return [float(v) for v in open('/proc/loadavg').read().split()[:3]]
    except OSError:
        return None


def machine_info():
    cpu, flags = None, ''
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name') and cpu is None:
                cpu = line.split(':', 1)[1].strip()
            elif line.startswith('flags') and not flags:
                flags = line.split(':', 1)[1]
    except OSError:
        pass
    simd = [f for f in ('avx', 'avx2', 'fma', 'avx512f', 'avx512_vnni', 'amx_tile') if f' {f} ' in f' {flags} ']
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {'cpu_model': cpu or platform.processor(), 'logical_cpus': os.cpu_count(), 'usable_cpus': usable,
            'simd': simd, 'loadavg_start': loadavg(), 'platform': platform.platform(),
            'python': platform.python_version(), 'onnxruntime': ort.__version__, 'onnx': onnx.__version__,
            'numpy': np.__version__, 'ort_providers': ort.get_available_providers()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--model', choices=sorted(onnx_model.MODELS), required=True)
    ap.add_argument('--batches', default='1,4,8,16', help='comma-separated batch sizes (default 1,4,8,16)')
    ap.add_argument('--threads', default='1,2', help='comma-separated intra-op thread counts (default 1,2)')
    ap.add_argument('--seconds', type=float, default=5.0, help='timed seconds per (threads, batch) (default 5)')
    ap.add_argument('--json', help='write results and machine info to this file')
    ap.add_argument('--tol', type=float, default=1e-3, help='max |logit diff| vs golden (default 1e-3)')
    ap.add_argument('--check-only', action='store_true', help='only build the graph and run the correctness check')
    ap.add_argument('--weights', help='safetensors file (default: weights/efficientnet_<model>.safetensors)')
    ap.add_argument('--labeld-ips', type=float,
                    help="labeld's images/s measured in the same run: print labeld/ORT against the best ORT figure")
    args = ap.parse_args()
    batches = [int(v) for v in args.batches.split(',') if v]
    threads = [int(v) for v in args.threads.split(',') if v]
    if not batches or not threads or min(batches + threads) < 1:
        ap.error('--batches and --threads need positive integers')

    fname, size, gname = onnx_model.MODELS[args.model]
    wpath = args.weights or onnx_model.weights_path(args.model)
    info = machine_info()
    print(f'# ORT yardstick: {gname} ({size}x{size}), {os.path.relpath(wpath, onnx_model.REPO)}')
    print(f'cpu: {info["cpu_model"]} ({info["usable_cpus"]} usable of {info["logical_cpus"]} logical; '
          f'{" ".join(info["simd"])}); load {info["loadavg_start"]}; onnxruntime {ort.__version__}, '
          f'onnx {onnx.__version__}, numpy {np.__version__}, python {info["python"]}')

    t0 = time.perf_counter()
    model = onnx_model.build_model(wpath, size, gname)
    model_bytes = model.SerializeToString()
    print(f'graph built in {time.perf_counter() - t0:.1f} s: {len(model.graph.node)} nodes, '
          f'{len(model_bytes):,} bytes, opset {onnx_model.OPSET}')

    # ---- correctness --------------------------------------------------------------------------
    cases = load_golden(args.model)
    ok, rows = check_correctness(model_bytes, cases, args.tol, max(threads))
    nb = len(cases)
    print(f'\n## correctness vs numpy golden logits (tol {args.tol:g}, top-1 equal)\n')
    print(f'| fixture | max abs diff (batch 1) | max abs diff (batch {nb}) | top-1 ORT | top-1 golden | top-5 same | result |')
    print('|---|---|---|---|---|---|---|')
    for r in rows:
        print(f'| {r["fixture"]} | {r["max_abs_diff_batch1"]:.3g} | {r[f"max_abs_diff_batch{nb}"]:.3g} | '
              f'{r["top1_ort"]} | {r["top1_golden"]} | {"yes" if r["top5_same"] else "no"} | '
              f'{"ok" if r["pass"] else "FAIL"} |')
    result = {'model': gname, 'size': size, 'weights': os.path.relpath(wpath, onnx_model.REPO),
              'weights_sha256': onnx_model.sha256_file(wpath), 'opset': onnx_model.OPSET,
              'settings': {'inter_op_num_threads': 1, 'graph_optimization_level': 'ORT_ENABLE_ALL',
                           'execution_mode': 'ORT_SEQUENTIAL', 'provider': 'CPUExecutionProvider',
                           'seconds': args.seconds, 'warmup': '>= 3 calls and >= 0.5 s'},
              'machine': info, 'correctness': {'tol': args.tol, 'pass': ok, 'fixtures': rows},
              'results': [], 'best': {}}
    if not ok:
        print('\nCORRECTNESS FAILED: not timing anything', file=sys.stderr)
        if args.json:
            json.dump(result, open(args.json, 'w'), indent=1)
        return 1
    print(f'\ncorrectness: all {nb} fixtures pass')
    if args.check_only:
        if args.json:
            json.dump(result, open(args.json, 'w'), indent=1)
        return 0

    # ---- timing -------------------------------------------------------------------------------
    print(f'\n## timing ({args.seconds:g} s per row, float32, CPUExecutionProvider)\n')
    print('| threads | batch | calls | images/s | p50 ms | p90 ms | p99 ms | load (1 min) |')
    print('|---|---|---|---|---|---|---|---|')
    sys.stdout.flush()
    inputs = np.stack([c[1] for c in cases])
    for th in threads:
        sess = make_session(model_bytes, th)
        for bs in batches:
            x = np.ascontiguousarray(inputs[np.arange(bs) % len(inputs)])
            r = time_one(sess, x, args.seconds)
            la = loadavg()
            r.update({'threads': th, 'batch': bs, 'loadavg_after': la})
            result['results'].append(r)
            print(f'| {th} | {bs} | {r["calls"]} | {r["images_per_s"]:.1f} | {r["p50_ms"]:.2f} | '
                  f'{r["p90_ms"]:.2f} | {r["p99_ms"]:.2f} | {la[0] if la else "?"} |')
            sys.stdout.flush()
        del sess
    print('\n## best batch per thread count\n')
    for th in threads:
        best = max((r for r in result['results'] if r['threads'] == th), key=lambda r: r['images_per_s'])
        result['best'][str(th)] = {'batch': best['batch'], 'images_per_s': best['images_per_s']}
        print(f'- threads {th}: {best["images_per_s"]:.1f} images/s (batch {best["batch"]})')
    if args.labeld_ips:
        th = max(threads)
        ref = result['best'][str(th)]['images_per_s']
        result['labeld_images_per_s'] = args.labeld_ips
        result['ratio_labeld_over_ort'] = args.labeld_ips / ref
        print(f'\nlabeld / ORT (threads {th}, best batch): {args.labeld_ips:.1f} / {ref:.1f} = '
              f'{args.labeld_ips / ref:.3f}')
    info['loadavg_end'] = loadavg()
    info['finished_utc'] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
    print(f'\nload average at end: {info["loadavg_end"]}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
        print(f'wrote {args.json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
