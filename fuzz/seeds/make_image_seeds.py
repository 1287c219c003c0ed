#!/usr/bin/env python3
"""Writes the image_decode seeds (fuzz/seeds/image_decode/). Needs Pillow; not run by CI: the
seeds are committed. Small on purpose: libFuzzer mutates faster with small inputs, and each seed
covers one decoder path (baseline, progressive, grey, CMYK, restart markers, EXIF rotation,
subsampling, scaled-IDCT sizes; PNG colour types, bit depths, interlacing, transparency), plus
broken ones (truncated, lying headers, other formats)."""
import io
import os
import struct
import zlib

from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "image_decode")


def gradient(w, h, mode="RGB"):
    img = Image.new("RGB", (w, h))
    img.putdata([((x * 255) // max(w - 1, 1), (y * 255) // max(h - 1, 1), ((x ^ y) * 7) & 255)
                 for y in range(h) for x in range(w)])
    return img.convert(mode) if mode != "RGB" else img


def save(name, img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    write(name, buf.getvalue())
    return buf.getvalue()


def write(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


def exif_orientation(o):
    exif = Image.Exif()
    exif[0x0112] = o
    return exif.tobytes()


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def main():
    os.makedirs(OUT, exist_ok=True)
    g = gradient(16, 12)
    # JPEG
    base = save("baseline_444.jpg", g, "JPEG", quality=80, subsampling=0)
    save("baseline_420.jpg", gradient(17, 13), "JPEG", quality=50, subsampling=2)
    save("progressive.jpg", g, "JPEG", quality=70, progressive=True)
    save("grey.jpg", g.convert("L"), "JPEG", quality=70)
    save("cmyk.jpg", g.convert("CMYK"), "JPEG", quality=70)
    save("restart.jpg", gradient(32, 16), "JPEG", quality=60, restart_marker_blocks=1)
    save("exif_o6.jpg", gradient(12, 8), "JPEG", quality=60, exif=exif_orientation(6))
    save("exif_o3.jpg", gradient(8, 8), "JPEG", quality=60, exif=exif_orientation(3))
    save("one_pixel.jpg", gradient(1, 1), "JPEG", quality=90)
    # Big enough for the scaled IDCT (shorter side >= 512) but tiny on disk: flat blocks.
    flat = Image.new("RGB", (1040, 520), (90, 140, 200))
    save("scaled_1040x520.jpg", flat, "JPEG", quality=20, subsampling=2)
    save("scaled_grey_520x1600.jpg", Image.new("L", (520, 1600), 128), "JPEG", quality=20)
    write("truncated.jpg", base[: len(base) // 2])
    write("no_eoi.jpg", base[:-2])
    # PNG
    save("rgb.png", g, "PNG")
    save("rgba.png", g.convert("RGBA"), "PNG")
    save("grey.png", g.convert("L"), "PNG")
    save("grey_alpha.png", g.convert("LA"), "PNG")
    save("palette.png", g.convert("P", palette=Image.Palette.ADAPTIVE, colors=8), "PNG")
    save("palette_trns.png", g.convert("P", palette=Image.Palette.ADAPTIVE, colors=4), "PNG",
         transparency=0)
    save("bilevel.png", g.convert("1"), "PNG")
    save("grey16.png", g.convert("I;16"), "PNG")
    rgb = save("one_pixel.png", gradient(1, 1), "PNG")
    # 16-bit RGB and Adam7 interlacing, written by hand (Pillow writes neither).
    w, h = 9, 7
    raw = b"".join(b"\0" + b"".join(struct.pack(">HHH", x * 7000, y * 9000, (x * y) * 900)
                                    for x in range(w)) for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    write("rgb16.png", b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
          + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))
    write("interlaced.png", adam7_png(8, 8))
    # Lying or broken
    write("truncated.png", rgb[: len(rgb) - 20])
    big = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    write("header_60000x60000.png", b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", big)
          + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))
    lie = struct.pack(">IIBBBBB", 1000, 1000, 8, 6, 0, 0, 0)
    write("header_1000x1000_tiny_data.png", b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", lie)
          + png_chunk(b"IDAT", zlib.compress(b"\0" * 100)) + png_chunk(b"IEND", b""))
    write("gif.gif", save_bytes(g, "GIF"))
    write("bmp_head.bmp", save_bytes(gradient(2, 2), "BMP"))


def save_bytes(img, fmt):
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def adam7_png(w, h):
    """An 8-bit RGB Adam7-interlaced PNG: each pass's sub-image, filter type 0."""
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
              (0, 1, 1, 2)]
    raw = b""
    for x0, y0, dx, dy in passes:
        xs = list(range(x0, w, dx))
        ys = list(range(y0, h, dy))
        if not xs or not ys:
            continue
        for y in ys:
            raw += b"\0" + b"".join(bytes((x * 30, y * 30, (x + y) * 15)) for x in xs)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b""))


if __name__ == "__main__":
    main()
