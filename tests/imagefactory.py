"""Real image files built in memory at test time, so no binaries live in the repository."""

from __future__ import annotations

import io
import random
import struct
import zlib

from PIL import Image

SRGB_D50 = {  # sRGB colorants adapted to D50, as in the standard sRGB ICC profile
    "r": (0.4361, 0.2225, 0.0139),
    "g": (0.3851, 0.7169, 0.0971),
    "b": (0.1431, 0.0606, 0.7141),
}


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **params)
    return out.getvalue()


def noise(size: tuple[int, int], mode: str = "RGB", seed: int = 1) -> Image.Image:
    """Incompressible content, so encoded files have a predictable, non-trivial size."""
    rng = random.Random(seed)
    bands = len(Image.new(mode, (1, 1)).getbands())
    return Image.frombytes(mode, size, rng.randbytes(size[0] * size[1] * bands))


def jpeg(
    size: tuple[int, int] = (64, 48), colour: tuple[int, int, int] = (200, 30, 30), **params: object
) -> bytes:
    return encode(Image.new("RGB", size, colour), "JPEG", **params)


def png(
    size: tuple[int, int] = (64, 48), colour: tuple[int, ...] = (30, 200, 30), mode: str = "RGB"
) -> bytes:
    return encode(Image.new(mode, size, colour), "PNG")


def jpeg_with_orientation(orientation: int, size: tuple[int, int] = (80, 40)) -> bytes:
    """Left half red, right half blue, tagged with the given EXIF orientation."""
    im = Image.new("RGB", size, (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, size[0] // 2, size[1]))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(im, "JPEG", exif=exif.tobytes(), quality=95)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of the given size, streamed row by row so it is never held in memory."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed pixels, all black
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def tiff_that_says_webp() -> bytes:
    """Valid 2×2 8-bit greyscale TIFF whose pixel bytes (offsets 8..11) spell "WEBP"."""
    entries = [
        (256, 3, 1, 2),  # ImageWidth
        (257, 3, 1, 2),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # Photometric: black is zero
        (273, 4, 1, 8),  # StripOffsets
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 3, 1, 2),  # RowsPerStrip
        (279, 4, 1, 4),  # StripByteCounts
    ]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries)
    return b"II*\x00" + struct.pack("<I", 12) + b"WEBP" + ifd + b"\x00\x00\x00\x00"


def jpeg_magic_photocd() -> bytes:
    """A valid Kodak PhotoCD (768×512) whose first bytes are the JPEG signature FF D8 FF.

    PhotoCD has no signature at offset 0 (Pillow looks for "PCD_" at 2048), so magic-byte sniffing says
    JPEG while Pillow, after its JPEG reader gives up, decodes a PhotoCD picture.
    """
    buf = bytearray(96 * 2048 + 768 * 512 * 3 // 2)
    buf[0:3] = b"\xff\xd8\xff"
    buf[2048:2052] = b"PCD_"
    return bytes(buf)


def svg() -> bytes:
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b'<rect width="10" height="10" fill="red"/></svg>\n'
    )


def swapped_rg_icc_profile() -> bytes:
    """An ICC v2 RGB matrix/TRC display profile whose red and green colorants are swapped.

    A pixel stored as (255, 0, 0) under this profile is sRGB green, so a colour-managed conversion is
    unmistakable in a test.
    """
    colorants = {"r": SRGB_D50["g"], "g": SRGB_D50["r"], "b": SRGB_D50["b"]}

    def xyz(*values: float) -> bytes:
        return b"XYZ \x00\x00\x00\x00" + b"".join(struct.pack(">i", round(v * 65536)) for v in values)

    desc_text = b"Swapped RG test profile\x00"
    desc = b"desc\x00\x00\x00\x00" + struct.pack(">I", len(desc_text)) + desc_text
    desc += struct.pack(">II", 0, 0) + struct.pack(">HB", 0, 0) + b"\x00" * 67
    trc = b"curv\x00\x00\x00\x00" + struct.pack(">IH", 1, 0x0233) + b"\x00\x00"  # gamma 2.2
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(*colorants["r"])),
        (b"gXYZ", xyz(*colorants["g"])),
        (b"bXYZ", xyz(*colorants["b"])),
        (b"rTRC", trc),
        (b"gTRC", trc),
        (b"bTRC", trc),
        (b"cprt", b"text\x00\x00\x00\x00No copyright\x00"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        data += b"\x00" * (-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    total = offset + len(body)
    header = struct.pack(">I", total) + b"\x00" * 4 + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
    header += struct.pack(">6H", 2024, 1, 1, 0, 0, 0) + b"acsp" + b"\x00" * 24
    header += struct.pack(">I", 0) + xyz(0.9642, 1.0, 0.8249)[8:] + b"\x00" * 4
    header += b"\x00" * (128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + body


def photo_set(count: int = 5) -> list[Image.Image]:
    """`count` distinct photos (conftest's photo_bytes) and one greyscale image, which every captioner
    must convert to RGB itself."""
    from tests.conftest import photo_bytes

    images = [Image.open(io.BytesIO(photo_bytes(seed))) for seed in range(count)]
    images.append(Image.new("L", (50, 90), 128))
    return images
