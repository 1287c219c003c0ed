#!/usr/bin/env python3
"""libjpeg-turbo yardstick for labeld's decoding: the same files, the same work, one thread.

For each file, as labeld does before its model (examples/decode.rs measures labeld's side):
  1. decode with Pillow (libjpeg-turbo), asking `draft()` for the smallest DCT-domain scale
     (1/2, 1/4, 1/8) that still covers the resize target (round(size / 0.875) on the shorter
     side), which is libjpeg-turbo's scaled IDCT, the fastest decode it offers;
  2. resize (bicubic) so that the shorter side is the target, computing only the centre
     size x size crop (Pillow's `box`), as labeld's windowed resize does;
  3. the crop's 8-bit levels channel-major (CHW), where labeld's decode ends since 2026-12-06
     (the model normalises them as it reads them; before that both sides ended in float32
     (pixel - 127) / 128, NCHW).
Files are taken round-robin for --seconds; reports ms per image (mean, and the decode alone),
p50/p90, and the images/s one core sustains, as text and --json.

usage: python bench/decode_bench.py --images a.jpg,b.jpg [--size 224] [--seconds 3] [--json OUT]
"""
import argparse
import io
import json
import time

import numpy as np
import PIL
from PIL import Image, features


def target(size):
    return round(size / 0.875)


def decode(data, short_target):
    img = Image.open(io.BytesIO(data))
    w, h = img.size
    s = short_target / min(w, h)
    if s < 1:
        img.draft('RGB', (max(1, int(w * s + 0.999)), max(1, int(h * s + 0.999))))
    img = img.convert('RGB')
    img.load()
    return img


def prepare(img, size, short_target):
    w, h = img.size
    s = short_target / min(w, h)
    rw, rh = max(size, round(w * s)), max(size, round(h * s))
    left, top = (rw - size) // 2, (rh - size) // 2
    # The crop's window in source pixels: Pillow resizes just that box to size x size.
    box = (left / rw * w, top / rh * h, (left + size) / rw * w, (top + size) / rh * h)
    crop = img.resize((size, size), Image.BICUBIC, box=box)
    return np.asarray(crop, dtype=np.uint8).transpose(2, 0, 1).copy()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--images', required=True, help='comma-separated files')
    ap.add_argument('--size', type=int, default=224, help='model input size (224 lite0, 260 lite2)')
    ap.add_argument('--seconds', type=float, default=3.0)
    ap.add_argument('--json')
    args = ap.parse_args()
    files = args.images.split(',')
    blobs = [open(f, 'rb').read() for f in files]
    short_target = target(args.size)
    sizes = [decode(b, short_target).size for b in blobs]  # warm-up, and what the draft gave
    decodes, totals = [], []
    started = time.perf_counter()
    while time.perf_counter() - started < args.seconds or len(totals) < len(blobs):
        data = blobs[len(totals) % len(blobs)]
        t0 = time.perf_counter()
        img = decode(data, short_target)
        t1 = time.perf_counter()
        prepare(img, args.size, short_target)
        t2 = time.perf_counter()
        decodes.append(t1 - t0)
        totals.append(t2 - t0)
    wall = time.perf_counter() - started
    ms = lambda v: 1e3 * v  # noqa: E731
    ordered = sorted(totals)
    pct = lambda p: ms(ordered[round((len(ordered) - 1) * p)])  # noqa: E731
    report = {
        'what': 'decode (draft to the smallest covering DCT scale) + bicubic crop to CHW levels, one thread',
        'engine': f'Pillow {PIL.__version__} / libjpeg-turbo {features.version("libjpeg_turbo")}',
        'input_size': args.size,
        'files': files,
        'mean_file_bytes': sum(map(len, blobs)) / len(blobs),
        'decoded_sizes': sizes,
        'images': len(totals),
        'mean_ms': ms(sum(totals) / len(totals)),
        'decode_mean_ms': ms(sum(decodes) / len(decodes)),
        'p50_ms': pct(0.5),
        'p90_ms': pct(0.9),
        'images_per_s_one_core': len(totals) / wall,
    }
    print(f'{report["engine"]}, one thread, {len(files)} file(s) of '
          f'{report["mean_file_bytes"] / 1024:.0f} KiB on average, decoded to {sizes}')
    print(f'{len(totals)} images: {report["mean_ms"]:.2f} ms per image (decode '
          f'{report["decode_mean_ms"]:.2f}), p50 {report["p50_ms"]:.2f}, p90 {report["p90_ms"]:.2f}; '
          f'{report["images_per_s_one_core"]:.1f} images/s on one core')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=1)


if __name__ == '__main__':
    main()
