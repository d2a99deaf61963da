"""Check the OpenVINO captioner against the torch one on BLIP-base-size random weights: tokens, speed, memory.

Too slow for CI (minutes): `python -m capsearch.bench.blip_fast --out DIR [--tokens 20] [--repeats 2]`.
It saves the checkpoint(s) under DIR (0.9 GB each), then
- tokens: greedy ids of both backends over sample images at batch 1 and 8; where a row differs, the
  first differing position and both backends' logit margin there (is it a near-tie?);
- speed: each backend in a fresh child process (so peak RSS is its own), alternating torch and
  openvino `--repeats` times; seconds per image at batch 1/4/8, load (and first-load convert) time,
  peak RSS, and the load average beside each number (other processes share the cores).

"blip-base-random" is `build_random_blip_base()`. Its vision tower is initialised at std 1e-10
(BlipVisionConfig.initializer_range), so its image embeddings are ~0 and every image gets the same
caption: the token check also runs on "blip-base-varied", the same model with the vision tower and
cross-attention re-initialised at std 0.02 (the text weights' scale), where captions follow the image.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from capsearch.bench.offline import format_table, sample_images


def image_dependent(model: Any, *, std: float = 0.02, seed: int = 1) -> Any:
    """Re-initialise BLIP's vision tower and the decoder's cross-attention (in place) at `std`."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        params = [
            *(p for n, p in model.vision_model.named_parameters() if p.dim() > 1 or "embedding" in n),
            *(p for n, p in model.text_decoder.named_parameters() if "crossattention" in n and p.dim() > 1),
        ]
        for param in params:
            param.copy_(torch.randn(param.shape, generator=generator) * std)
    return model


def build_checkpoints(out: Path) -> dict[str, Path]:
    from capsearch.ml.tiny import build_random_blip_base

    dirs = {"blip-base-random": out / "blip-base-random", "blip-base-varied": out / "blip-base-varied"}
    for name, directory in dirs.items():
        if not (directory / "config.json").is_file():
            model, processor = build_random_blip_base()
            if name == "blip-base-varied":
                image_dependent(model)
            model.save_pretrained(directory)
            processor.save_pretrained(directory)
    return dirs


def _loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def compare_tokens(checkpoint: Path, cache_dir: Path, tokens: int) -> list[dict[str, Any]]:
    """Rows: one per (batch size, image) whose ids differ, else one summary row per batch size."""
    import torch

    from capsearch.ml.blip_ov import OpenVinoBlipCaptioner
    from capsearch.ml.captioner import BlipCaptioner

    reference = BlipCaptioner(str(checkpoint), cache_dir=cache_dir, max_new_tokens=tokens)
    fast = OpenVinoBlipCaptioner(str(checkpoint), cache_dir=cache_dir, max_new_tokens=tokens)
    reference.load()
    fast.load()
    images = sample_images(8)
    rows: list[dict[str, Any]] = []
    for batch in (1, 8):
        want, got = [], []
        for start in range(0, len(images), batch):
            pixels = reference._processor(images=images[start : start + batch], return_tensors="pt")
            with torch.inference_mode():
                ids = reference._model.generate(
                    pixel_values=pixels["pixel_values"], max_new_tokens=tokens, num_beams=1, do_sample=False
                )
            want += list(ids.numpy())
            got += list(fast.generate_ids(pixels["pixel_values"].numpy()))
        same = sum(np.array_equal(a, b) for a, b in zip(want, got, strict=True))
        distinct = len({tuple(a) for a in want})
        rows.append({"model": checkpoint.name, "batch": batch, "identical": f"{same}/{len(want)}"})
        rows[-1] |= {"distinct captions": distinct, "first divergence": "-", "margins": "-", "image": "-"}
        for i, (a, b) in enumerate(zip(want, got, strict=True)):
            if not np.array_equal(a, b):
                rows.append(_divergence(reference, fast, images[i], a, b) | {"batch": batch, "image": i})
    return rows


def _divergence(reference: Any, fast: Any, image: Any, want: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    """Where two greedy runs part, and how close each backend's top two logits were there."""
    import torch

    n = min(len(want), len(got))
    at = next((i for i in range(n) if want[i] != got[i]), n)
    prefix = want[:at]
    pixels = reference._processor(images=[image], return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        embeds = reference._model.vision_model(pixel_values=pixels)[0]
        ids = torch.tensor(prefix[None, :])
        ref_logits = reference._model.text_decoder(input_ids=ids, encoder_hidden_states=embeds).logits[0, -1]
    step = fast._encoder.start(pixels.numpy(), fast._decoder)
    for position, token in enumerate(prefix):
        fast_logits = step(np.array([[token]]), position)[0]
    ref = ref_logits.numpy()
    pair = [int(want[at]), int(got[at])] if at < n else []
    margins = "length"
    if pair:  # each backend's lead of its own choice over the other's, in its own logits
        margins = f"torch {ref[pair[0]] - ref[pair[1]]:.2e}, "
        margins += f"openvino {fast_logits[pair[1]] - fast_logits[pair[0]]:.2e}"
    return {
        "model": "  differs",
        "identical": "no",
        "first divergence": f"new token {at} of {n - 1}",
        "margins": margins,
    }


def _child(args: argparse.Namespace) -> None:
    """One backend in this process: load, one warm-up, timed batches; prints one JSON line."""
    import dataclasses

    started = time.perf_counter()
    if args.backend == "torch":
        import torch

        from capsearch.ml.captioner import BlipCaptioner

        torch.set_num_threads(args.threads)
        captioner: Any = BlipCaptioner(
            args.checkpoint, cache_dir=Path(args.cache), max_new_tokens=args.tokens
        )
        captioner.load()
        # Every caption exactly `tokens` long (random weights might stop early): same work for both.
        captioner._model.text_decoder.generation_config.min_new_tokens = args.tokens
    else:
        from capsearch.ml.blip_ov import OpenVinoBlipCaptioner

        captioner = OpenVinoBlipCaptioner(
            args.checkpoint,
            cache_dir=Path(args.cache),
            max_new_tokens=args.tokens,
            int8=args.backend == "openvino-int8",
            num_threads=args.threads,
            performance_hint=args.hint,
        )
        captioner.load()
        captioner._rules = dataclasses.replace(captioner._rules, min_new_tokens=args.tokens)
    result: dict[str, Any] = {"backend": args.backend, "load_s": time.perf_counter() - started}
    images = sample_images(8)
    captioner.predict(images[:1])
    for batch in (1, 4, 8):
        times = []
        for _ in range(args.inner):
            tick = time.perf_counter()
            captioner.predict(images[:batch])
            times.append(time.perf_counter() - tick)
        result[f"b{batch}"] = statistics.median(times) / batch
        result[f"load{batch}"] = _loadavg()
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result), flush=True)


def compare_speed(checkpoint: Path, cache_dir: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for _ in range(args.repeats):
        for backend in args.backends.split(","):
            command = [sys.executable, "-m", "capsearch.bench.blip_fast", "child", backend, str(checkpoint)]
            command += ["--cache", str(cache_dir), "--tokens", str(args.tokens), "--inner", str(args.inner)]
            command += ["--threads", str(args.threads), "--hint", args.hint]
            out = subprocess.run(command, check=True, capture_output=True, text=True, env=os.environ).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(format_table(rows[-1:]), file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m capsearch.bench.blip_fast")
    parser.add_argument("mode", nargs="?", default="all", choices=["all", "tokens", "speed", "child"])
    parser.add_argument("backend", nargs="?", default="openvino")
    parser.add_argument("checkpoint", nargs="?", default="")
    parser.add_argument("--out", default="bench-blip", help="checkpoints and converted graphs go here")
    parser.add_argument("--cache", default="")
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2, help="child processes per backend, alternating")
    parser.add_argument("--inner", type=int, default=2, help="timed batches per size in each child")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--hint", default="LATENCY")
    parser.add_argument("--backends", default="torch,openvino")
    args = parser.parse_args(argv)
    if args.mode == "child":
        _child(args)
        return
    out = Path(args.out)
    dirs = build_checkpoints(out)
    if args.mode in ("all", "tokens"):
        rows = [r for d in dirs.values() for r in compare_tokens(d, out, args.tokens)]
        print(format_table(rows), flush=True)
    if args.mode in ("all", "speed"):
        print(format_table(compare_speed(dirs["blip-base-varied"], out, args)), flush=True)


if __name__ == "__main__":
    main()
