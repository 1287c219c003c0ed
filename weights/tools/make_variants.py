#!/usr/bin/env python3
"""Write small decoder-edge-case fixtures to tests/fixtures/variants/ from tests/fixtures/chelsea.png.

Every file is derived from one `base` image: chelsea.png -> RGB (ICC/XMP/dpi dropped) -> resize to
240x160 with PIL BICUBIC. The files exercise JPEG flavours (baseline 4:2:0, progressive, CMYK,
grayscale, EXIF orientations 1..8), PNG colour types / bit depths (L, LA, RGBA, P, 16-bit RGB,
16-bit gray), degenerate 1x1 images and truncated files. See tests/fixtures/variants/README.md.

Output is deterministic for a given Pillow / libjpeg-turbo / zlib build: running the script twice
gives identical bytes (the script checks that each file it writes re-encodes to the same bytes).
It also checks, before writing anything:
  * exif_o{1..8}.jpg: PIL.ImageOps.exif_transpose(decoded) matches base (mean abs diff < 3 levels),
    and an independent numpy implementation of the EXIF 2.3 orientation table agrees;
  * rgb16.png (written by the hand-rolled PNG writer below) decodes, by an independent pure-Python
    unfilter, to exactly base * 257, and Pillow reads it (as 8-bit) as exactly base;
  * gray16.png reads back as mode I;16 with values gray * 257; lossless PNGs read back exactly.

usage (repo root, any venv with pillow + numpy):
  python3 weights/tools/make_variants.py [--fixtures tests/fixtures] [--check]
    --check  regenerate in memory and compare with the files on disk; write nothing, exit 1 on a
             mismatch.
"""
import argparse, io, os, struct, sys, zlib
import numpy as np
import PIL
from PIL import Image, ImageOps

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
BASE_SIZE = (240, 160)      # (width, height)
JPEG_Q = 90
EXIF_Q = 95
EXIF_MAX_MAD = 3.0          # mean absolute difference, 0..255 levels, after exif_transpose
TRUNCATE_FRACTION = 0.6

# Pillow transpose that produces the STORED pixels for orientation o, i.e. the inverse of the
# transform a viewer applies to display it (PIL.ImageOps.exif_transpose uses
# {2: FLIP_LEFT_RIGHT, 3: ROTATE_180, 4: FLIP_TOP_BOTTOM, 5: TRANSPOSE, 6: ROTATE_270,
#  7: TRANSVERSE, 8: ROTATE_90}; all are self-inverse except 6 and 8, which swap).
T = Image.Transpose
STORE = {1: None, 2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM,
         5: T.TRANSPOSE, 6: T.ROTATE_90, 7: T.TRANSVERSE, 8: T.ROTATE_270}


def make_base(fixtures):
    src = Image.open(os.path.join(fixtures, 'chelsea.png'))
    src.load()
    base = src.convert('RGB').resize(BASE_SIZE, Image.Resampling.BICUBIC)
    base.info = {}          # drop icc_profile / xmp / dpi so no variant carries them
    return base


def alpha_ramp(w, h):
    """Horizontal alpha ramp: 0 (fully transparent) at x=0 to 255 (opaque) at x=w-1."""
    row = np.round(np.linspace(0, 255, w)).astype(np.uint8)
    return np.tile(row, (h, 1))


def save(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Minimal 16-bit RGB PNG writer (Pillow cannot write 16-bit RGB): colour type 2, bit depth 16,
# no interlace, per-row adaptive filter (minimum sum of |signed residual|, as libpng does).

def _chunk(typ, data):
    return struct.pack('>I', len(data)) + typ + data + struct.pack('>I', zlib.crc32(typ + data) & 0xffffffff)


def _filter_rows(raw, bpp):
    """raw: (h, stride) uint8. Returns filtered scanlines (h, 1 + stride) uint8."""
    h, stride = raw.shape
    out = np.empty((h, 1 + stride), np.uint8)
    zero = np.zeros(stride, np.int16)
    for y in range(h):
        x = raw[y].astype(np.int16)
        b = raw[y - 1].astype(np.int16) if y else zero
        a = np.concatenate([np.zeros(bpp, np.int16), x[:-bpp]])
        c = np.concatenate([np.zeros(bpp, np.int16), b[:-bpp]])
        p = a + b - c
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        cands = [x, x - a, x - b, x - ((a + b) >> 1), x - paeth]
        cands = [(v & 0xff).astype(np.uint8) for v in cands]
        costs = [int(np.abs(v.astype(np.int8).astype(np.int32)).sum()) for v in cands]
        ft = int(np.argmin(costs))
        out[y, 0] = ft
        out[y, 1:] = cands[ft]
    return out


def png_rgb16(arr16):
    """arr16: (h, w, 3) uint16 -> PNG bytes (colour type 2, bit depth 16)."""
    h, w, _ = arr16.shape
    raw = np.ascontiguousarray(arr16.astype('>u2')).view(np.uint8).reshape(h, w * 6)
    idat = zlib.compress(_filter_rows(raw, 6).tobytes(), 9)
    ihdr = struct.pack('>IIBBBBB', w, h, 16, 2, 0, 0, 0)
    return b'\x89PNG\r\n\x1a\n' + _chunk(b'IHDR', ihdr) + _chunk(b'IDAT', idat) + _chunk(b'IEND', b'')


def decode_png_rgb16_independent(data):
    """Pure-Python PNG decode (IHDR/IDAT/IEND only, 16-bit RGB) used to verify png_rgb16."""
    assert data[:8] == b'\x89PNG\r\n\x1a\n'
    pos, idat, ihdr = 8, b'', None
    while pos < len(data):
        n, = struct.unpack('>I', data[pos:pos + 4])
        typ, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        crc, = struct.unpack('>I', data[pos + 8 + n:pos + 12 + n])
        assert crc == zlib.crc32(typ + body) & 0xffffffff, typ
        if typ == b'IHDR':
            ihdr = struct.unpack('>IIBBBBB', body)
        elif typ == b'IDAT':
            idat += body
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = ihdr
    assert (depth, ctype, interlace) == (16, 2, 0)
    bpp, stride = 6, w * 6
    flat = zlib.decompress(idat)
    assert len(flat) == h * (stride + 1)
    prev = bytearray(stride)
    rows = []
    for y in range(h):
        ft, line = flat[y * (stride + 1)], bytearray(flat[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ft == 0: pred = 0
            elif ft == 1: pred = a
            elif ft == 2: pred = b
            elif ft == 3: pred = (a + b) // 2
            elif ft == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            else: raise ValueError(ft)
            line[i] = (line[i] + pred) & 0xff
        rows.append(bytes(line))
        prev = line
    return np.frombuffer(b''.join(rows), '>u2').reshape(h, w, 3).astype(np.uint16)


# ---------------------------------------------------------------------------------------------

def display_by_spec(stored, o):
    """Independent of Pillow: EXIF 2.3 table 'the 0th row / 0th column of the stored image is the
    visual ...'. Returns the upright (displayed) array from the stored (h, w, c) array."""
    s = stored
    return {1: lambda: s,                          # top / left
            2: lambda: s[:, ::-1],                 # top / right
            3: lambda: s[::-1, ::-1],              # bottom / right
            4: lambda: s[::-1, :],                 # bottom / left
            5: lambda: s.transpose(1, 0, 2),       # row0 = left side, col0 = top
            6: lambda: s.transpose(1, 0, 2)[:, ::-1],        # row0 = right side, col0 = top
            7: lambda: s.transpose(1, 0, 2)[::-1, ::-1],     # row0 = right side, col0 = bottom
            8: lambda: s.transpose(1, 0, 2)[::-1, :],        # row0 = left side, col0 = bottom
            }[o]()


def mad(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).mean())


def encode(fixtures):
    """Returns (dict name -> bytes in write order, base, pal, px)."""
    base = make_base(fixtures)
    b = np.asarray(base)
    gray = base.convert('L')
    g = np.asarray(gray)
    alpha = alpha_ramp(*BASE_SIZE)
    out = {}

    # --- JPEG flavours
    out['rgb.jpg'] = save(base, 'JPEG', quality=JPEG_Q, subsampling='4:2:0')
    out['progressive.jpg'] = save(base, 'JPEG', quality=JPEG_Q, subsampling='4:2:0', progressive=True)
    out['cmyk.jpg'] = save(base.convert('CMYK'), 'JPEG', quality=JPEG_Q)
    out['gray.jpg'] = save(gray, 'JPEG', quality=JPEG_Q)

    # --- PNG colour types / depths
    out['gray.png'] = save(gray, 'PNG')
    out['gray_alpha.png'] = save(Image.merge('LA', (gray, Image.fromarray(alpha, 'L'))), 'PNG')
    rgba = Image.fromarray(np.dstack([b, alpha]), 'RGBA')
    out['rgba.png'] = save(rgba, 'PNG')
    pal = base.convert('P', palette=Image.Palette.ADAPTIVE, colors=256)
    out['palette.png'] = save(pal, 'PNG')
    b16 = b.astype(np.uint16) * 257
    out['rgb16.png'] = png_rgb16(b16)
    g16 = Image.fromarray(g.astype(np.uint16) * 257)
    assert g16.mode == 'I;16', g16.mode
    out['gray16.png'] = save(g16, 'PNG')

    # --- EXIF orientations
    for o in range(1, 9):
        stored = base if STORE[o] is None else base.transpose(STORE[o])
        ex = Image.Exif()
        ex[0x0112] = o
        out[f'exif_o{o}.jpg'] = save(stored, 'JPEG', quality=EXIF_Q, exif=ex.tobytes())

    # --- degenerate sizes
    px = base.getpixel((BASE_SIZE[0] // 2, BASE_SIZE[1] // 2))
    one = Image.new('RGB', (1, 1), px)
    out['one_pixel.png'] = save(one, 'PNG')
    out['one_pixel.jpg'] = save(one, 'JPEG', quality=JPEG_Q)

    # --- truncated files
    for name, src in (('truncated.jpg', 'rgb.jpg'), ('truncated.png', 'rgba.png')):
        out[name] = out[src][:int(len(out[src]) * TRUNCATE_FRACTION)]
    return out, base, pal, px


def build(fixtures):
    """Encode, check, and return (dict name -> bytes, report lines). AssertionError on a failure."""
    out, base, pal, px = encode(fixtures)
    b = np.asarray(base)
    g = np.asarray(base.convert('L'))
    alpha = alpha_ramp(*BASE_SIZE)
    b16 = b.astype(np.uint16) * 257
    rep = []

    def op(name):
        im = Image.open(io.BytesIO(out[name]))
        im.load()
        return im

    # lossless PNGs read back exactly
    im = op('gray.png'); assert im.mode == 'L' and np.array_equal(np.asarray(im), g)
    im = op('gray_alpha.png'); assert im.mode == 'LA' and np.array_equal(np.asarray(im), np.dstack([g, alpha]))
    im = op('rgba.png'); assert im.mode == 'RGBA' and np.array_equal(np.asarray(im), np.dstack([b, alpha]))
    im = op('palette.png'); assert im.mode == 'P' and np.array_equal(np.asarray(im), np.asarray(pal))
    assert len(im.getpalette()) // 3 == 256, len(im.getpalette())
    rep.append(f'palette.png: {len(im.getpalette()) // 3} palette entries, {len(np.unique(np.asarray(im)))} used, '
               f'MAD vs base {mad(im.convert("RGB"), b):.2f}')
    im = op('gray16.png'); assert im.mode == 'I;16' and np.array_equal(np.asarray(im), g.astype(np.uint16) * 257)
    assert np.array_equal(decode_png_rgb16_independent(out['rgb16.png']), b16)
    im = op('rgb16.png'); assert im.mode == 'RGB' and np.array_equal(np.asarray(im), b)   # Pillow reads >> 8
    im = op('one_pixel.png'); assert im.mode == 'RGB' and im.size == (1, 1) and im.getpixel((0, 0)) == px

    # lossy JPEGs: modes, sizes, closeness to base
    for name, mode, ref in (('rgb.jpg', 'RGB', b), ('progressive.jpg', 'RGB', b),
                            ('cmyk.jpg', 'CMYK', b), ('gray.jpg', 'L', g)):
        im = op(name)
        assert im.mode == mode and im.size == BASE_SIZE, (name, im.mode, im.size)
        rgbish = np.asarray(im.convert('RGB')) if mode == 'CMYK' else np.asarray(im)
        rep.append(f'{name}: mode {im.mode}, MAD vs base {mad(rgbish, ref):.2f}')
    assert op('progressive.jpg').info.get('progressive') and not op('rgb.jpg').info.get('progressive')
    im = op('one_pixel.jpg'); assert im.size == (1, 1)
    rep.append(f'one_pixel: {px} -> jpg decodes to {im.getpixel((0, 0))}')

    # EXIF
    for o in range(1, 9):
        name = f'exif_o{o}.jpg'
        im = op(name)
        assert im.getexif().get(0x0112) == o
        up = ImageOps.exif_transpose(im)
        d_pil = mad(up, b)
        d_spec = mad(display_by_spec(np.asarray(im), o), b)
        rep.append(f'{name}: stored {im.size[0]}x{im.size[1]}, exif_transpose MAD vs base {d_pil:.3f}, '
                   f'spec-table MAD {d_spec:.3f}')
        assert d_pil < EXIF_MAX_MAD and d_spec < EXIF_MAX_MAD, (name, d_pil, d_spec)

    # truncated files really are broken
    for name in ('truncated.jpg', 'truncated.png'):
        try:
            Image.open(io.BytesIO(out[name])).load()
        except (OSError, SyntaxError) as e:
            rep.append(f'{name}: {len(out[name])} bytes, Pillow load fails: {type(e).__name__}: {e}')
        else:
            raise AssertionError(f'{name} decoded without error')

    # determinism: encoding again from scratch gives the same bytes
    again = encode(fixtures)[0]
    assert list(again) == list(out)
    for k in out:
        assert again[k] == out[k], f'{k}: not deterministic'
    return out, rep


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--fixtures', default=os.path.join(REPO, 'tests', 'fixtures'))
    ap.add_argument('--check', action='store_true', help='compare with files on disk, write nothing')
    args = ap.parse_args()
    outdir = os.path.join(args.fixtures, 'variants')
    out, rep = build(args.fixtures)
    print(f'Pillow {PIL.__version__}, numpy {np.__version__}, zlib {zlib.ZLIB_RUNTIME_VERSION}')
    for line in rep:
        print('  ' + line)
    bad = 0
    if not args.check:
        os.makedirs(outdir, exist_ok=True)
    for name, data in out.items():
        path = os.path.join(outdir, name)
        if args.check:
            same = os.path.exists(path) and open(path, 'rb').read() == data
            bad += not same
            print(f'{"ok  " if same else "DIFF"} {name} {len(data)}')
        else:
            with open(path, 'wb') as f:
                f.write(data)
            print(f'wrote {os.path.relpath(path, REPO)} ({len(data)} bytes)')
    sys.exit(1 if bad else 0)


if __name__ == '__main__':
    main()
