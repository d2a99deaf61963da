"""The OpenVINO captioner: the same greedy tokens as the torch backend (its conversion cache:
test_blip_cache.py).

Tiny random BLIPs only (a few seconds each conversion). The project's tiny BLIP captions every image
alike (its vision tower is initialised at std 1e-10), so the token checks also use a copy whose
vision tower and cross-attention are re-initialised: there the caption depends on the image.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from capsearch.bench.blip_fast import image_dependent
from capsearch.errors import ModelUnavailableError
from capsearch.ml.base import Model
from capsearch.ml.blip_ov import OpenVinoBlipCaptioner
from capsearch.ml.blip_ov import captioner as captioner_module
from capsearch.ml.blip_ov.decode import GreedyRules
from capsearch.ml.captioner import BlipCaptioner
from capsearch.ml.tiny import build_tiny_blip, tiny_blip_in_memory
from tests.imagefactory import photo_set

pytest.importorskip("openvino")


def _photos(count: int = 5) -> list[Image.Image]:
    return photo_set(count)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_blip(tmp_path_factory.mktemp("blip-fast") / "tiny-blip")


@pytest.fixture(scope="module")
def varied_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, processor = tiny_blip_in_memory()
    image_dependent(model, std=0.5)
    out = tmp_path_factory.mktemp("blip-fast") / "tiny-varied"
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _pair(directory: Path, tokens: int = 12) -> tuple[BlipCaptioner, OpenVinoBlipCaptioner]:
    reference = BlipCaptioner(str(directory), cache_dir=directory.parent, max_new_tokens=tokens)
    fast = OpenVinoBlipCaptioner(
        str(directory), cache_dir=directory.parent, max_new_tokens=tokens, convert_in_subprocess=False
    )
    reference.load()
    fast.load()
    return reference, fast


def _torch_ids(captioner: BlipCaptioner, images: list[Image.Image], **kwargs: Any) -> np.ndarray:
    pixels = captioner._processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
    with torch.inference_mode():
        out = captioner._model.generate(
            pixel_values=pixels["pixel_values"],
            max_new_tokens=captioner.max_new_tokens,
            num_beams=1,
            do_sample=False,
            **kwargs,
        )
    return np.asarray(out.numpy())


def _fast_ids(fast: OpenVinoBlipCaptioner, images: list[Image.Image]) -> np.ndarray:
    assert fast._prep is not None
    return fast.generate_ids(fast._prep(images))


@pytest.mark.parametrize("which", ["tiny", "varied"])
def test_same_token_ids_as_torch_one_by_one_and_batched(which: str, tiny_dir: Path, varied_dir: Path) -> None:
    reference, fast = _pair(tiny_dir if which == "tiny" else varied_dir)
    images = _photos()
    expected = _torch_ids(reference, images)
    if which == "varied":  # the check means something only if images get different captions
        assert len({tuple(row) for row in expected}) >= 3
    np.testing.assert_array_equal(_fast_ids(fast, images), expected)
    for i, image in enumerate(images[:3]):
        np.testing.assert_array_equal(_fast_ids(fast, [image]), _torch_ids(reference, [image]))
        assert fast.predict([image]) == reference.predict([image]), i
    assert fast.predict(images) == reference.predict(images)


@pytest.mark.parametrize("decode_batch", [1, 2, 4])
def test_rows_that_end_early_are_padded_like_generate(
    varied_dir: Path, decode_batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With eos = a token that some rows emit early, finished rows get pad while others go on, also
    when the batch is decoded a few images at a time (a part that ends early is padded to the rest)."""
    reference, fast = _pair(varied_dir, tokens=10)
    images = _photos()
    free = _torch_ids(reference, images)
    eos = int(free[0, 3])  # row 0 ends at its 3rd new token; rows without that token run to the end
    assert any(eos not in row[1:] for row in free), "need a row that never emits the chosen eos"
    text = reference._model.config.text_config
    pixels = reference._processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        embeds = reference._model.vision_model(pixel_values=pixels)[0]
        expected = reference._model.text_decoder.generate(
            input_ids=torch.full((len(images), 1), text.bos_token_id),
            encoder_hidden_states=embeds,
            eos_token_id=eos,
            pad_token_id=text.pad_token_id,
            max_new_tokens=10,
            do_sample=False,
            num_beams=1,
        ).numpy()
    fast._rules = GreedyRules(text.bos_token_id, eos, text.pad_token_id)
    monkeypatch.setattr(captioner_module, "DECODE_BATCH", decode_batch)
    got = fast.generate_ids(pixels.numpy(), max_new_tokens=10)
    np.testing.assert_array_equal(got, expected)
    assert fast._decoder._cross is None, "the batch's cross-attention buffer outlived it"
    assert (got == text.pad_token_id).any()


def test_generation_rules_match_generate(varied_dir: Path) -> None:
    """min_new_tokens, (begin_)suppress_tokens and repetition_penalty, as generate applies them."""
    reference, fast = _pair(varied_dir, tokens=8)
    images = _photos()[:4]
    free = _torch_ids(reference, images)
    settings: dict[str, Any] = {
        "min_new_tokens": 6,
        "suppress_tokens": [int(free[0, 2])],
        "begin_suppress_tokens": [int(free[1, 1])],
        "repetition_penalty": 1.5,
    }
    gen = reference._model.text_decoder.generation_config
    for name, value in settings.items():
        setattr(gen, name, value)
    try:
        expected = _torch_ids(reference, images)
        rules = GreedyRules.from_model(reference._model)
    finally:
        for name in settings:
            setattr(gen, name, None if name != "repetition_penalty" else 1.0)
    assert not np.array_equal(expected, free)
    assert rules.min_new_tokens == 6 and rules.repetition_penalty == 1.5
    fast._rules = rules
    np.testing.assert_array_equal(fast.generate_ids(fast.pixel_values(images), max_new_tokens=8), expected)


def test_preprocessing_and_decoding_match_blip_processor(tiny_dir: Path) -> None:
    """numpy/PIL pixels within 1e-5 of BlipProcessor's, and the same text as its batch_decode."""
    reference, fast = _pair(tiny_dir)
    assert fast._prep is not None and fast._text is not None
    images = [*_photos(), Image.new("RGBA", (300, 17), (10, 200, 30, 90)), Image.new("RGB", (32, 32), 7)]
    for image in images:
        want = reference._processor(images=[image.convert("RGB")], return_tensors="np")["pixel_values"]
        np.testing.assert_allclose(fast._prep([image]), want, rtol=0, atol=1e-5)
    tokenizer = reference._processor.tokenizer
    rows = np.random.default_rng(0).integers(0, len(tokenizer), size=(64, 12))
    assert fast._text(rows) == tokenizer.batch_decode(rows, skip_special_tokens=True)


def test_serving_does_not_import_torch(tiny_dir: Path) -> None:
    """Once converted, loading and captioning need neither torch nor transformers."""
    OpenVinoBlipCaptioner(str(tiny_dir), cache_dir=tiny_dir.parent, convert_in_subprocess=False).convert()
    script = (
        "import sys; from pathlib import Path; from PIL import Image;"
        "from capsearch.ml.blip_ov import OpenVinoBlipCaptioner as C;"
        f"c = C({str(tiny_dir)!r}, cache_dir=Path({str(tiny_dir.parent)!r}), max_new_tokens=5); c.load();"
        "print(c.predict([Image.new('RGB', (40, 30), 90)]));"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


def test_model_contract(tiny_dir: Path) -> None:
    fast = OpenVinoBlipCaptioner(str(tiny_dir), cache_dir=tiny_dir.parent, max_new_tokens=5)
    assert isinstance(fast, Model)
    assert fast.name == "captioner" and fast.model_id == str(tiny_dir)
    with pytest.raises(RuntimeError, match="load"):
        fast.predict(_photos(1))
    fast.load()
    assert fast.predict([]) == []
    images = _photos(3)
    captions = fast.predict(images)
    assert len(captions) == len(images) and all(isinstance(c, str) and c for c in captions)
    fast.close()
    assert not fast.loaded


def test_missing_checkpoint_is_model_unavailable(tmp_path: Path) -> None:
    fast = OpenVinoBlipCaptioner(str(tmp_path / "nothing-here"), cache_dir=tmp_path)
    with pytest.raises(ModelUnavailableError, match="capsearch models download"):
        fast.load()
