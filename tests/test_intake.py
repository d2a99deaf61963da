"""Image intake: every refusal with a real file of that kind, and the normalisation of accepted ones."""

from __future__ import annotations

import hashlib
import io
import warnings

import pytest
from PIL import Image, ImageFile, PngImagePlugin

from capsearch.config import LimitSettings
from capsearch.errors import IntakeError
from capsearch.intake import normalise_image, sniff_mime
from tests import imagefactory as make

LIMITS = LimitSettings()


def refuse(data: bytes, limits: LimitSettings = LIMITS) -> IntakeError:
    with pytest.raises(IntakeError) as info:
        normalise_image(data, limits)
    return info.value


def close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


# ---- refusals ---------------------------------------------------------------------------------


def test_empty_file() -> None:
    err = refuse(b"")
    assert (err.code, err.status_code) == ("empty_file", 422)


def test_too_large_real_jpeg() -> None:
    data = make.encode(make.noise((128, 128)), "JPEG", quality=95)
    err = refuse(data, LimitSettings(max_image_bytes=4096))
    assert (err.code, err.status_code) == ("too_large", 413)
    assert err.message == f"This file is {len(data) / 1024:.1f} KB; the limit is 4 KB."


def test_too_large_message_never_shows_equal_sizes() -> None:
    err = refuse(b"x" * (5 * 1024 * 1024 + 1))
    assert err.message == "This file is 5,242,881 bytes; the limit is 5,242,880 bytes."


def test_text_file_named_png() -> None:
    err = refuse(b"holiday photos, see attached\n")
    assert (err.code, err.status_code) == ("unsupported_type", 415)
    assert "text file" in err.message
    assert "JPEG, PNG, WebP or GIF" in err.message


def test_svg() -> None:
    err = refuse(make.svg())
    assert err.code == "unsupported_type"
    assert "SVG" in err.message


def test_tiff_is_named() -> None:
    data = make.tiff_that_says_webp()
    # filetype 1.2's WebP matcher also requires "RIFF" at offset 0, so it is not fooled by bytes 8..11.
    assert sniff_mime(data) == "image/tiff"
    assert Image.open(io.BytesIO(data)).format == "TIFF"
    err = refuse(data)
    assert err.code == "unsupported_type"
    assert err.message == "This file is a TIFF image; only JPEG, PNG, WebP or GIF images are accepted."


def test_bmp_is_named() -> None:
    err = refuse(make.encode(Image.new("RGB", (4, 4)), "BMP"))
    assert err.code == "unsupported_type"
    assert "a BMP image" in err.message


def test_type_not_allowed_by_config() -> None:
    err = refuse(make.animated_gif(), LimitSettings(allowed_types=["image/jpeg", "image/png"]))
    assert err.code == "unsupported_type"
    assert err.message == "This file is a GIF image; only JPEG or PNG images are accepted."


def test_type_mismatch_jpeg_magic_photocd() -> None:
    data = make.jpeg_magic_photocd()
    assert sniff_mime(data) == "image/jpeg"
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PCD"
        im.load()  # a genuine, decodable picture, not just a confused header
    err = refuse(data)
    assert (err.code, err.status_code) == ("type_mismatch", 415)
    assert "JPEG" in err.message and "Kodak PhotoCD" in err.message


@pytest.mark.parametrize("size", [(256, 256), (2000, 1500)])  # the second is decoded at reduced scale
def test_truncated_jpeg(size: tuple[int, int]) -> None:
    data = make.encode(Image.linear_gradient("L").resize(size).convert("RGB"), "JPEG", quality=90)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    err = refuse(data[: len(data) * 2 // 3])
    assert (err.code, err.status_code) == ("corrupt_image", 422)
    assert "JPEG" in err.message


@pytest.mark.parametrize(
    "magic", [b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8\xff\xe0", b"RIFF\x10\x00\x00\x00WEBPVP8 "]
)
def test_garbage_after_valid_magic(magic: bytes) -> None:
    err = refuse(magic + b"\x13\x37garbage" * 50)
    assert err.code == "corrupt_image"


def test_png_bomb_20000_square() -> None:
    data = make.png_bomb(20_000, 20_000)
    assert len(data) < 64 * 1024  # 400 million pixels in a small file: the point of a bomb
    err = refuse(data)
    assert (err.code, err.status_code) == ("too_many_pixels", 413)
    assert "50 million" in err.message


def test_png_bomb_in_pillow_warning_range_is_refused_not_warned() -> None:
    # 100 M pixels: above Pillow's MAX_IMAGE_PIXELS (warning only), below our configured limit.
    data = make.png_bomb(10_000, 10_000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filters_before = list(warnings.filters)
        err = refuse(data, LimitSettings(max_pixels=200_000_000))
        assert warnings.filters == filters_before
    assert err.code == "too_many_pixels"
    assert "89.5 million" in err.message  # Pillow's ceiling, the lower of the two
    assert not caught


def test_pixel_limit_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decode(self: Image.Image) -> None:
        raise AssertionError("pixels were decoded before the size check")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", no_decode)
    err = refuse(make.png_bomb(3000, 3000), LimitSettings(max_pixels=1_000_000))
    assert err.code == "too_many_pixels"
    expected = "This image is 3,000 × 3,000 pixels (9 million); the limit is 1 million pixels."
    assert err.message == expected


# ---- accepted images ----------------------------------------------------------------------------


def test_plain_jpeg() -> None:
    data = make.jpeg((64, 48))
    img = normalise_image(data, LIMITS)
    assert (img.mime, img.ext, img.width, img.height) == ("image/jpeg", "jpg", 64, 48)
    assert img.size_bytes == len(data)
    assert img.sha256 == hashlib.sha256(data).hexdigest()
    assert img.display.mode == "RGB" and img.display.size == (64, 48)
    assert close(img.display.getpixel((5, 5)), (200, 30, 30))


def test_exif_orientation_6_swaps_width_and_height() -> None:
    img = normalise_image(make.jpeg_with_orientation(6, (80, 40)), LIMITS)
    assert (img.width, img.height) == (40, 80)
    assert img.display.size == (40, 80)
    # Rotated 90° clockwise: the red left half is now on top.
    assert close(img.display.getpixel((20, 5)), (255, 0, 0))
    assert close(img.display.getpixel((20, 75)), (0, 0, 255))


def test_exif_orientation_3_keeps_size() -> None:
    img = normalise_image(make.jpeg_with_orientation(3, (80, 40)), LIMITS)
    assert (img.width, img.height) == (80, 40)
    assert close(img.display.getpixel((75, 20)), (255, 0, 0))


def test_png_alpha_is_flattened_on_white() -> None:
    im = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
    im.paste((0, 128, 0, 255), (20, 0, 40, 20))
    img = normalise_image(make.encode(im, "PNG"), LIMITS)
    assert (img.mime, img.ext) == ("image/png", "png")
    assert img.display.mode == "RGB"
    assert img.display.getpixel((5, 5)) == (255, 255, 255)
    assert img.display.getpixel((35, 5)) == (0, 128, 0)


def test_palette_png_with_transparency() -> None:
    im = Image.new("P", (10, 10), 1)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.paste(0, (0, 0, 5, 10))
    img = normalise_image(make.encode(im, "PNG", transparency=0), LIMITS)
    assert img.display.getpixel((1, 1)) == (255, 255, 255)
    assert img.display.getpixel((8, 8)) == (255, 0, 0)


def test_16_bit_greyscale_png_is_scaled_not_clipped() -> None:
    img = normalise_image(make.encode(Image.new("I;16", (8, 8), 32768), "PNG"), LIMITS)
    assert close(img.display.getpixel((0, 0)), (128, 128, 128), tol=1)


def test_animated_gif_uses_first_frame() -> None:
    data = make.animated_gif()
    with Image.open(io.BytesIO(data)) as im:
        assert im.n_frames == 3
    img = normalise_image(data, LIMITS)
    assert (img.mime, img.ext) == ("image/gif", "gif")
    assert close(img.display.getpixel((16, 16)), (255, 0, 0))


def test_webp() -> None:
    img = normalise_image(make.encode(Image.new("RGB", (30, 20), (0, 0, 200)), "WEBP", quality=90), LIMITS)
    assert (img.mime, img.ext, img.width, img.height) == ("image/webp", "webp", 30, 20)
    assert close(img.display.getpixel((10, 10)), (0, 0, 200))


def test_cmyk_jpeg() -> None:
    data = make.encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=95)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "CMYK"
    img = normalise_image(data, LIMITS)
    assert img.display.mode == "RGB"
    assert close(img.display.getpixel((16, 16)), (255, 0, 0))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_embedded_icc_profile_is_converted_to_srgb(fmt: str) -> None:
    # Under this profile the stored value (255, 0, 0) means sRGB green.
    im = Image.new("RGB", (16, 16), (255, 0, 0))
    img = normalise_image(make.encode(im, fmt, icc_profile=make.swapped_rg_icc_profile()), LIMITS)
    assert close(img.display.getpixel((8, 8)), (0, 255, 0))
    assert "icc_profile" not in img.display.info


def test_broken_icc_profile_is_ignored_not_fatal() -> None:
    im = Image.new("RGB", (16, 16), (255, 0, 0))
    img = normalise_image(make.encode(im, "PNG", icc_profile=b"not a profile at all"), LIMITS)
    assert img.display.getpixel((8, 8)) == (255, 0, 0)


def test_big_image_is_downscaled_and_thumbnail_has_no_metadata() -> None:
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    data = make.encode(make.noise((2000, 1200)), "JPEG", quality=80, exif=exif.tobytes())
    img = normalise_image(data, LIMITS)
    assert (img.width, img.height) == (2000, 1200)
    assert img.display.size == (640, 384)
    with Image.open(io.BytesIO(img.thumbnail_jpeg)) as thumb:
        assert thumb.format == "JPEG" and thumb.size == (640, 384) and thumb.mode == "RGB"
        assert not thumb.getexif()
        assert "exif" not in thumb.info and "icc_profile" not in thumb.info


def test_thumbnail_size_is_respected() -> None:
    img = normalise_image(make.png((900, 300)), LIMITS, thumbnail_size=150)
    assert img.display.size == (150, 50)
    assert (img.width, img.height) == (900, 300)


def test_sniff_mime_maps_apng_to_png() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    apng = make.encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    assert sniff_mime(apng) == "image/png"
    assert sniff_mime(b"plain words") is None
