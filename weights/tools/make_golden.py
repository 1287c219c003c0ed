#!/usr/bin/env python3
"""Write golden reference outputs for the Rust tests, using the numpy reference model.

For every photo in tests/fixtures/ (*.png, *.jpg, *.jpeg; not recursing into golden/) and
every model (efficientnet-lite0 @ 224, efficientnet-lite2 @ 260) this writes

  tests/fixtures/golden/<stem>.<model>.json
      {"image": "chelsea.png", "model": "efficientnet-lite0", "size": 224,
       "logits": [1000 float32 values, printed as the shortest double repr of each float32, so
                  parsing as f64 and casting to f32 is exact],
       "top5": [[class_index, softmax_prob], ...]}          (prob: float64 softmax of the logits)
  tests/fixtures/golden/<stem>.<size>.crop.png
      the exact uint8 RGB network input before normalisation (PIL open -> RGB -> resize shorter
      side to round(size/0.875) with PIL BICUBIC -> centre crop size x size), lossless PNG,
      so model-only tests can feed exactly the same pixels: x = (pixel - 127) / 128, NCHW f32.

Preprocessing mode is 'pm1' ((x-127)/128). The script checks that the saved crop re-reads to
the same pixels and that normalising it reproduces the network input bit for bit, and it checks
the top-3 against the table in the team's weights-provenance notes (EXPECTED below).

usage (repo root, venv with numpy/pillow/safetensors, see tests/fixtures/golden/README.md):
  python3 weights/tools/make_golden.py [--weights-dir weights] [--fixtures tests/fixtures]
"""
import argparse, glob, json, os, sys, time
import numpy as np
from PIL import Image
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import effnet_lite_numpy as ref  # noqa: E402

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
MODELS = [('efficientnet-lite0', 'efficientnet_lite0.safetensors', 224),
          ('efficientnet-lite2', 'efficientnet_lite2.safetensors', 260)]
MODE = 'pm1'

# Top-3 (short label, prob rounded to 2 decimals) from the "Evidence" table of
# shared/reference/weights-provenance.md (numpy reference, (x-127)/128 preprocessing).
EXPECTED = {
    ('chelsea.png', 'efficientnet-lite0'): [('tiger cat', .39), ('Egyptian cat', .36), ('tabby', .17)],
    ('chelsea.png', 'efficientnet-lite2'): [('Egyptian cat', .62), ('tiger cat', .14), ('tabby', .10)],
    ('coffee.png', 'efficientnet-lite0'): [('espresso', .95), ('cup', .01), ('consomme', .01)],
    ('coffee.png', 'efficientnet-lite2'): [('espresso', .89), ('cup', .01), ('consomme', .01)],
    ('rocket.jpg', 'efficientnet-lite0'): [('missile', .30), ('projectile', .20), ('drilling platform', .09)],
    ('rocket.jpg', 'efficientnet-lite2'): [('drilling platform', .10), ('missile', .09), ('projectile', .07)],
}


def softmax64(logits):
    z = logits.astype(np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--weights-dir', default=os.path.join(REPO, 'weights'))
    ap.add_argument('--fixtures', default=os.path.join(REPO, 'tests', 'fixtures'))
    ap.add_argument('--labels', default=ref.DEFAULT_LABELS)
    args = ap.parse_args()

    out_dir = os.path.join(args.fixtures, 'golden')
    os.makedirs(out_dir, exist_ok=True)
    labels = ref.load_labels(args.labels)
    short = [l.split(',')[0] for l in labels]
    photos = sorted(p for ext in ('png', 'jpg', 'jpeg') for p in glob.glob(os.path.join(args.fixtures, '*.' + ext)))
    if not photos:
        sys.exit(f'no photos in {args.fixtures}')

    failures = []
    for model, wfile, size in MODELS:
        w = load_file(os.path.join(args.weights_dir, wfile))
        for path in photos:
            name = os.path.basename(path)
            stem = os.path.splitext(name)[0]
            t0 = time.time()

            crop = ref.resize_crop(path, size)
            pixels = np.asarray(crop, np.uint8)
            assert pixels.shape == (size, size, 3), pixels.shape
            x = ref.preprocess(path, size=size, mode=MODE)

            # exact input image, lossless, no ancillary chunks (fresh image drops icc/exif info)
            crop_path = os.path.join(out_dir, f'{stem}.{size}.crop.png')
            Image.fromarray(pixels, 'RGB').save(crop_path, format='PNG')
            back = np.asarray(Image.open(crop_path).convert('RGB'), np.uint8)
            assert np.array_equal(back, pixels), f'{crop_path} does not round-trip'
            assert np.array_equal(ref.normalise(back, MODE), x), 'crop PNG does not reproduce the network input'

            logits = ref.forward(w, x)
            assert logits.dtype == np.float32 and logits.shape == (1000,), (logits.dtype, logits.shape)
            pr = softmax64(logits)
            top = [int(i) for i in np.argsort(-pr, kind='stable')[:5]]
            doc = {
                'image': name,
                'model': model,
                'size': size,
                'logits': [float(v) for v in logits],   # float32 -> exact double; json uses repr
                'top5': [[i, float(pr[i])] for i in top],
            }
            gpath = os.path.join(out_dir, f'{stem}.{model}.json')
            with open(gpath, 'w', encoding='utf-8') as f:
                json.dump(doc, f)
                f.write('\n')
            # the written floats must parse back to the very same float32 logits
            with open(gpath, encoding='utf-8') as f:
                assert np.array_equal(np.asarray(json.load(f)['logits'], np.float64).astype(np.float32), logits)

            got3 = [(short[i], float(pr[i])) for i in top[:3]]
            print(f'{name:16s} {model:19s} {size}  ' + ' | '.join(f'{l} {p:.2f}' for l, p in got3)
                  + f'   [{time.time() - t0:.1f}s]', flush=True)
            exp = EXPECTED.get((name, model))
            if exp is not None:
                ok = all(gl == el and abs(gp - ep) <= 0.0051 for (gl, gp), (el, ep) in zip(got3, exp))
                if not ok:
                    failures.append(f'{name} {model}: got {got3}, expected {exp}')
                print(f'{"":16s} expected (provenance table): ' + ' | '.join(f'{l} {p:.2f}' for l, p in exp)
                      + ('   OK' if ok else '   MISMATCH'))

    if failures:
        print('\nMISMATCHES vs provenance table:\n  ' + '\n  '.join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == '__main__':
    main()
