#!/usr/bin/env python3
"""Makes the end-to-end benchmark inputs from the four photos in tests/fixtures.

Two sets of JPEGs, one file per fixture (chelsea, coffee, astronaut, rocket):

* imagenet/<stem>.jpg: ImageNet-size photos. Each fixture is resized (Lanczos) so that its shorter
  side is --imagenet-short pixels (default 375, as the typical 500x375 ImageNet val photo; the
  longer side follows the aspect ratio), saved as baseline JPEG quality 90, 4:2:0.
* 12mp/<stem>.jpg: 12-megapixel camera-like JPEGs, 4000x3000. Each fixture is centre-cropped to
  4:3, upscaled (Lanczos) and given sensor-like detail so that it does not compress unrealistically
  small: grain (luminance noise at full and half resolution, plus weaker chroma noise) with a fixed
  seed per file. Saved as baseline JPEG quality 92, 4:2:0, as a phone or camera writes it; each is
  about 3-6 MB (a smooth 7x upscale alone would be well under 1 MB).

Deterministic for a given Pillow/numpy. A manifest.json records the settings; files are remade only
when it or a file is missing or the settings changed (or with --force). Prints each file's size and
dimensions.

usage: python bench/make_images.py [--out bench/.images] [--force] [--imagenet-short 375]
                                   [--grain 7.0] [--only imagenet|12mp]
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import PIL
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = ['chelsea.png', 'coffee.png', 'astronaut.png', 'rocket.jpg']
CAMERA = (4000, 3000)


def imagenet_size(img, short):
    w, h = img.size
    if w <= h:
        return short, round(h * short / w)
    return round(w * short / h), short


def camera_like(img, seed, grain):
    """Crop to 4:3 (landscape), upscale to 4000x3000, add grain. -> PIL RGB image."""
    w, h = img.size
    tw, th = CAMERA
    if w * th > h * tw:            # too wide: crop width
        cw = round(h * tw / th)
        box = ((w - cw) // 2, 0, (w - cw) // 2 + cw, h)
    else:                          # too tall: crop height
        ch = round(w * th / tw)
        box = (0, (h - ch) // 2, w, (h - ch) // 2 + ch)
    big = img.crop(box).resize(CAMERA, Image.LANCZOS)
    rng = np.random.default_rng(seed)
    x = np.asarray(big, dtype=np.float32)
    # Luminance grain: fine (per pixel) plus coarser (2x2 blocks, upsampled), same in R, G, B.
    fine = rng.standard_normal((th, tw), dtype=np.float32)
    coarse = rng.standard_normal((th // 2, tw // 2), dtype=np.float32).repeat(2, 0).repeat(2, 1)
    luma = grain * (0.8 * fine + 0.6 * coarse)
    x += luma[:, :, None]
    del fine, coarse, luma
    # Chroma grain, weaker and per channel.
    x += (grain * 0.35) * rng.standard_normal((th, tw, 3), dtype=np.float32)
    np.clip(x, 0, 255, out=x)
    return Image.fromarray(x.astype(np.uint8), 'RGB')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', default=os.path.join(REPO, 'bench', '.images'),
                    help='output folder (default bench/.images)')
    ap.add_argument('--force', action='store_true', help='remake the files even when up to date')
    ap.add_argument('--imagenet-short', type=int, default=375, help='shorter side of the ImageNet-size set (default 375)')
    ap.add_argument('--grain', type=float, default=7.0, help='grain strength of the 12-MP set, in 8-bit levels (default 7)')
    ap.add_argument('--only', choices=['imagenet', '12mp'], help='make one set only')
    args = ap.parse_args()

    settings = {'fixtures': FIXTURES, 'imagenet_short': args.imagenet_short, 'imagenet_quality': 90,
                'camera_size': list(CAMERA), 'camera_quality': 92, 'grain': args.grain,
                'pillow': PIL.__version__, 'numpy': np.__version__, 'version': 1}
    sets = ['imagenet', '12mp'] if args.only is None else [args.only]
    manifest_path = os.path.join(args.out, 'manifest.json')
    try:
        old = json.load(open(manifest_path))
    except (OSError, ValueError):
        old = {}
    fresh = not args.force and old.get('settings') == settings
    files = dict(old.get('files', {})) if fresh else {}

    print(f'# benchmark images in {os.path.relpath(args.out, REPO)} (Pillow {PIL.__version__}, numpy {np.__version__})')
    print('| set | file | width | height | bytes |')
    print('|---|---|---:|---:|---:|')
    for s in sets:
        os.makedirs(os.path.join(args.out, s), exist_ok=True)
        for i, name in enumerate(FIXTURES):
            stem = os.path.splitext(name)[0]
            rel = f'{s}/{stem}.jpg'
            path = os.path.join(args.out, rel)
            if not (fresh and rel in files and os.path.isfile(path)
                    and os.path.getsize(path) == files[rel]['bytes']):
                t0 = time.perf_counter()
                src = Image.open(os.path.join(REPO, 'tests', 'fixtures', name)).convert('RGB')
                if s == 'imagenet':
                    out = src.resize(imagenet_size(src, args.imagenet_short), Image.LANCZOS)
                    out.save(path, 'JPEG', quality=90, subsampling='4:2:0', optimize=False)
                else:
                    out = camera_like(src, seed=1000 + i, grain=args.grain)
                    out.save(path, 'JPEG', quality=92, subsampling='4:2:0', optimize=False)
                files[rel] = {'width': out.size[0], 'height': out.size[1], 'bytes': os.path.getsize(path),
                              'made_s': round(time.perf_counter() - t0, 2)}
            f = files[rel]
            print(f'| {s} | {rel} | {f["width"]} | {f["height"]} | {f["bytes"]:,} |')
            sys.stdout.flush()
    with open(manifest_path, 'w') as fh:
        json.dump({'settings': settings, 'files': files}, fh, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
