"""The golden inputs the yardsticks check themselves against: the reference crops of
tests/fixtures/golden (<stem>.<size>.crop.png) and the numpy reference logits
(<stem>.efficientnet-<model>.json), read without Pillow or onnxruntime so that bench/ort_bench.py
and bench/gpu/torch_bench.py share one reader.
"""
import glob
import json
import os
import struct
import zlib

import numpy as np

import onnx_model

GOLDEN = os.path.join(onnx_model.REPO, 'tests', 'fixtures', 'golden')


# ---- PNG (8-bit RGB/RGBA, non-interlaced; what make_golden.py writes) without Pillow ----------

def read_png_rgb(path):
    """-> uint8 array [H, W, 3]. Supports bit depth 8, colour type 2 (RGB) or 6 (RGBA), no interlace."""
    data = open(path, 'rb').read()
    if data[:8] != b'\x89PNG\r\n\x1a\n':
        raise ValueError(f'{path}: not a PNG')
    pos, idat, hdr = 8, [], None
    while pos < len(data):
        n, = struct.unpack('>I', data[pos:pos + 4])
        typ, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if zlib.crc32(typ + body) != struct.unpack('>I', data[pos + 8 + n:pos + 12 + n])[0]:
            raise ValueError(f'{path}: bad CRC in {typ!r}')
        if typ == b'IHDR':
            hdr = struct.unpack('>IIBBBBB', body)
        elif typ == b'IDAT':
            idat.append(body)
        elif typ == b'IEND':
            break
        pos += 12 + n
    w, h, depth, ctype, _comp, _filt, interlace = hdr
    if depth != 8 or ctype not in (2, 6) or interlace != 0:
        raise ValueError(f'{path}: unsupported PNG (depth {depth}, colour type {ctype}, interlace {interlace})')
    bpp = 3 if ctype == 2 else 4
    stride = w * bpp
    raw = np.frombuffer(zlib.decompress(b''.join(idat)), np.uint8)
    if raw.size != h * (stride + 1):
        raise ValueError(f'{path}: {raw.size} bytes of image data, expected {h * (stride + 1)}')
    raw = raw.reshape(h, stride + 1)
    out = np.zeros((h, stride), np.uint8)
    prev = np.zeros(stride, np.uint8)
    for y in range(h):
        f, line = raw[y, 0], raw[y, 1:]
        if f == 0:      # None
            cur = line.copy()
        elif f == 1:    # Sub: running sum per channel, mod 256
            cur = (np.cumsum(line.reshape(w, bpp).astype(np.int64), axis=0) % 256).astype(np.uint8).reshape(-1)
        elif f == 2:    # Up
            cur = line + prev
        elif f in (3, 4):  # Average, Paeth: sequential, done in plain Python
            cur_l, ln, pv = bytearray(stride), line.tolist(), prev.tolist()
            for i in range(stride):
                a = cur_l[i - bpp] if i >= bpp else 0
                b = pv[i]
                if f == 3:
                    pred = (a + b) >> 1
                else:
                    c = pv[i - bpp] if i >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
                cur_l[i] = (ln[i] + pred) & 0xFF
            cur = np.frombuffer(bytes(cur_l), np.uint8)
        else:
            raise ValueError(f'{path}: bad filter type {f} in row {y}')
        out[y] = cur
        prev = cur
    return out.reshape(h, w, bpp)[:, :, :3]


def normalise(rgb):
    """uint8 [H,W,3] -> float32 [3,H,W], (x - 127) / 128 (as effnet_lite_numpy.normalise, mode pm1)."""
    return ((rgb.astype(np.float32) - 127.0) / 128.0).transpose(2, 0, 1).astype(np.float32)


def load_golden(model_key):
    """-> list of (stem, input [3,S,S] float32, golden logits float32 [1000], golden top5 indices)."""
    _, size, gname = onnx_model.MODELS[model_key]
    cases = []
    for jpath in sorted(glob.glob(os.path.join(GOLDEN, f'*.{gname}.json'))):
        g = json.load(open(jpath))
        stem = os.path.basename(jpath)[:-len(f'.{gname}.json')]
        assert g['model'] == gname and g['size'] == size, f'{jpath}: model/size mismatch'
        crop = read_png_rgb(os.path.join(GOLDEN, f'{stem}.{size}.crop.png'))
        assert crop.shape == (size, size, 3), f'{stem}: crop shape {crop.shape}'
        logits = np.array(g['logits'], np.float64).astype(np.float32)  # exact per the golden README
        cases.append((stem, normalise(crop), logits, [int(i) for i, _ in g['top5']]))
    if not cases:
        raise SystemExit(f'no golden files for {gname} in {GOLDEN}')
    return cases
