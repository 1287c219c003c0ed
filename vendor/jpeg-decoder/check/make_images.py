"""JPEGs of every kind Pillow (libjpeg-turbo) writes, for the differential check (run.sh).

From the repository's test photos (tests/fixtures), at three sizes each: 4:4:4, 4:2:2 and 4:2:0
baseline, optimised Huffman tables, progressive, restart markers every 7 blocks and every MCU
row, greyscale and CMYK. Usage: python make_images.py OUT_DIR
"""

import pathlib
import sys

from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[3]
PHOTOS = ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg"]
KINDS = [
    dict(quality=95, subsampling=0),
    dict(quality=75, subsampling=1),
    dict(quality=90, subsampling=2),
    dict(quality=100, subsampling=2, optimize=True),
    dict(quality=60, progressive=True),
    dict(quality=92, subsampling=2, restart_marker_blocks=7),
    dict(quality=85, restart_marker_rows=1, optimize=True),
]


def main(out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for name in PHOTOS:
        photo = Image.open(ROOT / "tests" / "fixtures" / name).convert("RGB")
        for size in [photo.size, (photo.width * 2 + 3, photo.height * 2 + 5), (97, 61)]:
            image = photo.resize(size)
            for kind in KINDS:
                image.save(out / f"{count:03d}.jpg", **kind)
                count += 1
            image.convert("L").save(out / f"{count:03d}.jpg", quality=88)
            image.convert("CMYK").save(out / f"{count:03d}.jpg", quality=88)
            count += 2
    print(f"{count} JPEGs in {out}")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
