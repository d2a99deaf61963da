"""Decide whether uploaded bytes are an image we accept, and turn them into one predictable RGB picture.

Pure and synchronous (the service runs it in a worker thread); nothing here writes files.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import threading
import unicodedata
import warnings
from dataclasses import dataclass

import filetype
from PIL import Image, ImageCms, ImageOps

from capsearch.config import LimitSettings
from capsearch.errors import IntakeError

# The four formats this service knows how to store and show; config may narrow them, never widen them.
_EXT_BY_MIME = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif"}
_LABEL_BY_MIME = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WebP", "image/gif": "GIF"}
# MPO is a JPEG with extra pictures appended (many phone cameras write it); the first one is a plain JPEG.
_MIME_BY_PIL_FORMAT = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
}
_REFUSED_LABELS = {
    "image/tiff": "a TIFF image",
    "image/bmp": "a BMP image",
    "image/heic": "a HEIC photo",
    "image/avif": "an AVIF image",
    "image/jpx": "a JPEG 2000 image",
    "image/vnd.ms-photo": "a JPEG XR image",
    "image/x-icon": "an icon file",
    "image/vnd.adobe.photoshop": "a Photoshop document",
    "image/x-canon-cr2": "a Canon raw photo",
    "image/x-xcf": "a GIMP document",
    "image/vnd.dwg": "a DWG drawing",
    "application/pdf": "a PDF document",
    "application/zip": "a ZIP archive",
}
# warnings.catch_warnings swaps process-wide state; serialising our own callers stops two threads
# from restoring each other's filters out of order. Only the header parse runs under it.
_WARNINGS_LOCK = threading.Lock()


@dataclass(frozen=True)
class NormalisedImage:
    sha256: str  # hex digest of the original bytes, so duplicates are found whatever we re-encode
    mime: str
    ext: str
    width: int  # after EXIF orientation, in pixels of the original (not the display copy)
    height: int
    size_bytes: int
    display: Image.Image  # RGB, sRGB, oriented, alpha flattened on white, longest side <= thumbnail_size
    thumbnail_jpeg: bytes  # `display` as JPEG quality 85 without any metadata (sRGB implied)


def describe_size(n: int) -> str:
    if n < 1024:
        return f"{n} byte" if n == 1 else f"{n} bytes"
    if n < 1024 * 1024:
        return f"{_trim(n / 1024)} KB"
    return f"{_trim(n / (1024 * 1024))} MB"


def too_large_error(size: int, limit: int) -> IntakeError:
    shown, allowed = describe_size(size), describe_size(limit)
    if shown == allowed:  # rounding made them look equal; exact counts avoid a nonsensical sentence
        shown, allowed = f"{size:,} bytes", f"{limit:,} bytes"
    return IntakeError("too_large", f"This file is {shown}; the limit is {allowed}.")


def sniff_mime(head: bytes) -> str | None:
    kind = filetype.guess(head)
    if kind is None:
        return None
    mime = str(kind.mime)
    # An animated PNG is still a PNG to every decoder we use.
    return "image/png" if mime == "image/apng" else mime


def normalise_image(
    data: bytes, limits: LimitSettings, thumbnail_size: int = 640, *, sha256: str | None = None
) -> NormalisedImage:
    """`sha256`: the bytes' digest when the caller already has it (a socket upload hashes as it
    receives), so the bytes are not hashed twice."""
    if not data:
        raise IntakeError("empty_file", "This file is empty.")
    if len(data) > limits.max_image_bytes:
        raise too_large_error(len(data), limits.max_image_bytes)
    mime = _check_type(data, limits)
    label = _LABEL_BY_MIME[mime]
    im = _open(data, label, limits)
    try:
        pil_mime = _MIME_BY_PIL_FORMAT.get(im.format or "")
        if pil_mime != mime:
            found = im.format_description or im.format or "something else"
            raise IntakeError(
                "type_mismatch",
                f"This file starts like a {label} image, but its contents are a different format ({found}), "
                "so it was refused.",
            )
        width, height = im.size
        if width * height > limits.max_pixels:
            raise IntakeError(
                "too_many_pixels",
                f"This image is {width:,} × {height:,} pixels ({_count(width * height)}); "
                f"the limit is {_count(limits.max_pixels)} pixels.",
            )
        image, swapped = _decode_display(im, label, limits, thumbnail_size)
    finally:
        im.close()
    if swapped:
        width, height = height, width
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return NormalisedImage(
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
        mime=mime,
        ext=_EXT_BY_MIME[mime],
        width=width,
        height=height,
        size_bytes=len(data),
        display=image,
        thumbnail_jpeg=out.getvalue(),
    )


def _check_type(data: bytes, limits: LimitSettings) -> str:
    accepted = [m for m in limits.allowed_types if m in _EXT_BY_MIME]
    mime = sniff_mime(data[:8192])
    if mime is not None and mime in accepted:
        return mime
    if mime is None:
        what = _describe_unknown(data)
    elif mime in _LABEL_BY_MIME:
        what = f"a {_LABEL_BY_MIME[mime]} image"
    else:
        what = _REFUSED_LABELS.get(mime, f"of type {mime}")
    allowed = _join_or([_LABEL_BY_MIME[m] for m in accepted])
    raise IntakeError("unsupported_type", f"This file is {what}; only {allowed} images are accepted.")


def _describe_unknown(data: bytes) -> str:
    try:
        # final=False: a multi-byte character cut by the 4 KiB slice is still text.
        text = codecs.getincrementaldecoder("utf-8")().decode(data[:4096], final=False)
    except UnicodeDecodeError:
        return "not an image we recognise"
    if text.strip() and not any(unicodedata.category(c) == "Cc" and c not in "\t\r\n\f" for c in text):
        return "an SVG drawing" if "<svg" in text.lower() else "a text file, not an image"
    return "not an image we recognise"


def _open(data: bytes, label: str, limits: LimitSettings) -> Image.Image:
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; we want a refusal there too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _bomb(limits) from None
    except Exception as exc:
        # UnidentifiedImageError mostly, but some plugins let struct.error, EOFError etc. escape.
        raise _corrupt(label) from exc


def _decode_display(
    im: Image.Image, label: str, limits: LimitSettings, thumbnail_size: int
) -> tuple[Image.Image, bool]:
    """Decode fully, then build the display copy. Returns it and whether orientation swapped the axes."""
    icc = im.info.get("icc_profile")
    if im.format in ("JPEG", "MPO"):
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale: the display copy is all we keep, so this bounds
        # memory for huge photos. Every byte is still read, so truncation is still caught.
        im.draft("RGB", (thumbnail_size, thumbnail_size))
    try:
        im.seek(0)  # animated GIF/WebP/PNG: the first frame is the picture we show
        im.load()
    except Image.DecompressionBombError:
        raise _bomb(limits) from None
    except Exception as exc:
        # Pillow reports damaged data with many exception types (OSError, ValueError, struct.error,
        # IndexError...); at this boundary they all mean the same thing to the person uploading.
        raise _corrupt(label) from exc
    try:
        oriented = ImageOps.exif_transpose(im) or im.copy()
    except Exception:
        # EXIF is only metadata: a damaged block should not cost anyone their upload.
        oriented = im.copy()
    swapped = oriented.size != im.size
    work = _working_mode(oriented)
    work.thumbnail((thumbnail_size, thumbnail_size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    rgb = _flatten(_to_srgb(work, icc if isinstance(icc, bytes) else None))
    rgb.info = {}  # no EXIF/ICC may leak into the re-encoded thumbnail
    return rgb, swapped


def _working_mode(im: Image.Image) -> Image.Image:
    """Bring exotic modes to one of RGB, RGBA, L, LA, CMYK, which both resizing and LittleCMS handle."""
    if im.mode == "P" or im.mode == "PA":
        return im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    if im.mode.startswith("I"):
        # 16-bit greyscale PNGs: Pillow's plain convert clips at 255 instead of scaling, turning most
        # of the picture white.
        return im.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    if im.mode in ("RGB", "RGBA", "L", "LA", "CMYK"):
        if im.mode in ("RGB", "L") and "transparency" in im.info:
            return im.convert("RGBA")
        return im
    return im.convert("RGBA" if "A" in im.getbands() else "RGB")


def _to_srgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    alpha = im.getchannel("A") if "A" in im.getbands() else None
    colour = im.convert(im.mode.rstrip("A") or "L") if alpha is not None else im
    converted = None
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            space = src.profile.xcolor_space.strip()
            if (space, colour.mode) in (("RGB", "RGB"), ("CMYK", "CMYK"), ("GRAY", "L")):
                # A fresh sRGB profile per call: LittleCMS profile handles are not safe to share
                # between the worker threads this runs on.
                srgb = ImageCms.createProfile("sRGB")
                converted = ImageCms.profileToProfile(colour, src, srgb, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            # A broken or unusual profile: show the pixels as if they were sRGB rather than refuse a
            # picture that decodes fine.
            converted = None
    rgb = converted if converted is not None else colour.convert("RGB")
    if alpha is not None:
        rgb.putalpha(alpha)
    return rgb


def _flatten(im: Image.Image) -> Image.Image:
    if im.mode != "RGBA":
        return im.convert("RGB")
    white = Image.new("RGB", im.size, (255, 255, 255))
    white.paste(im, mask=im.getchannel("A"))
    return white


def _corrupt(label: str) -> IntakeError:
    return IntakeError(
        "corrupt_image", f"This {label} image could not be read; the file may be damaged or incomplete."
    )


def _bomb(limits: LimitSettings) -> IntakeError:
    # Pillow's own guard fired, so its ceiling may be the lower one.
    limit = min(limits.max_pixels, Image.MAX_IMAGE_PIXELS or limits.max_pixels)
    return IntakeError(
        "too_many_pixels",
        f"This image has too many pixels to process safely; the limit is {_count(limit)} pixels.",
    )


def _count(n: int) -> str:
    return f"{_trim(n / 1_000_000)} million" if n >= 1_000_000 else f"{n:,}"


def _trim(x: float) -> str:
    return f"{x:.1f}".removesuffix(".0")


def _join_or(items: list[str]) -> str:
    if len(items) <= 1:
        return items[0] if items else "no"
    return ", ".join(items[:-1]) + " or " + items[-1]
