"""Photos with known captions for the search and voice browser tests: drawn beach scenes (no sample
photo has a dog) beside the scikit-image samples, a collection of them captioned by hand, and a
captioner that knows each picture by its size."""

from __future__ import annotations

from pathlib import Path

import httpx
from PIL import Image as PILImage
from PIL import ImageDraw

from tests.browserkit import real_photos
from tests.conftest import photo_bytes

SAND, SEA, FOAM, SUN, DOG = (236, 213, 164), (46, 134, 171), (222, 240, 247), (255, 214, 102), (121, 72, 42)
# What photo_set captions the sample photos as (the beach's caption is each test's own).
CAPTIONS = {
    "rocket.jpg": "a red rocket on the launch pad",
    "pasta.jpg": "a plate of pasta",
    "coffee.png": "a cup of coffee on a saucer",
    "chelsea.png": "a tabby cat looking up",
}


def _dog(draw: ImageDraw.ImageDraw, x: int, y: int, scale: float, colour: tuple[int, int, int]) -> None:
    """A running dog, facing right, its feet at (x, y)."""

    def pt(dx: float, dy: float) -> tuple[int, int]:
        return int(x + dx * scale), int(y + dy * scale)

    def width(px: float) -> int:
        return max(2, int(px * scale))

    draw.ellipse((*pt(0, -52), *pt(78, -22)), fill=colour)  # body
    draw.ellipse((*pt(62, -74), *pt(96, -44)), fill=colour)  # head
    draw.polygon([pt(88, -64), pt(112, -58), pt(90, -48)], fill=colour)  # snout
    draw.polygon([pt(66, -70), pt(70, -88), pt(80, -72)], fill=colour)  # ear
    for x0, lean in ((8, -14), (20, 10), (52, -10), (64, 14)):  # legs, mid-stride
        draw.line([pt(x0, -30), pt(x0 + lean, 0)], fill=colour, width=width(7))
    draw.line([pt(2, -44), pt(-22, -66)], fill=colour, width=width(6))  # tail
    draw.ellipse((*pt(84, -66), *pt(89, -61)), fill=(30, 20, 15))  # eye


def beach(path: Path, size: tuple[int, int], dogs: int) -> Path:
    """A sunny beach with `dogs` dogs running on the sand, saved as JPEG."""
    w, h = size
    img = PILImage.new("RGB", size)
    draw = ImageDraw.Draw(img)
    horizon, shore = int(h * 0.42), int(h * 0.6)
    for y in range(horizon):  # sky: deep blue at the top, pale at the horizon
        t = y / horizon
        draw.line([(0, y), (w, y)], fill=(int(70 + 130 * t), int(150 + 80 * t), int(225 + 25 * t)))
    draw.ellipse((int(w * 0.74), int(h * 0.08), int(w * 0.74) + 70, int(h * 0.08) + 70), fill=SUN)
    draw.rectangle((0, horizon, w, shore), fill=SEA)
    for i, y in enumerate(range(horizon + 12, shore, 16)):
        draw.line([(20 + (i % 3) * 40, y), (w - 60 + (i % 2) * 30, y)], fill=(96, 170, 200), width=2)
    draw.polygon([(0, shore), (w, shore - 10), (w, h), (0, h)], fill=SAND)
    draw.line([(0, shore + 2), (w, shore - 8)], fill=FOAM, width=6)
    for i in range(dogs):
        _dog(
            draw,
            int(w * (0.22 + 0.36 * i)),
            int(h * (0.86 - 0.06 * i)),
            1.5 - 0.25 * i,
            (DOG, (58, 40, 30))[i % 2],
        )
    img.save(path, "JPEG", quality=92)
    return path


async def photo_set(api: httpx.AsyncClient, folder: Path, beach_caption: str) -> dict[str, int]:
    """Real sample photos, a drawn beach and a made-up plate, captioned by PATCH: file name → id."""
    photos = {p.name: p.read_bytes() for p in real_photos()}
    photos["beach.jpg"] = beach(folder / "beach.jpg", (640, 420), dogs=1).read_bytes()
    photos["pasta.jpg"] = photo_bytes(7, size=(480, 360))
    files = [
        ("files", (n, b, "image/png" if n.endswith(".png") else "image/jpeg")) for n, b in photos.items()
    ]
    r = await api.post("/api/images?wait=true", files=files)
    assert r.status_code == 201, r.text
    ids = {i["filename"]: i["image"]["id"] for i in r.json()["items"]}
    for name, caption in {**CAPTIONS, "beach.jpg": beach_caption}.items():
        assert (await api.patch(f"/api/images/{ids[name]}", json={"caption": caption})).status_code == 200
    return ids


class PhotoCaptioner:
    """`Model[PIL.Image, str]`: the caption of each known picture, recognised by its size (pictures of at
    most 640 px reach the model at their own size); anything else is "a photo"."""

    name = "captioner"
    model_id = "photo-captioner"

    def __init__(self, by_size: dict[tuple[int, int], str]) -> None:
        self.by_size = by_size

    def load(self) -> None:
        pass

    def predict(self, batch: list[PILImage.Image]) -> list[str]:
        return [self.by_size.get(im.size, "a photo") for im in batch]

    def close(self) -> None:
        pass
