"""The BLIP captioner on OpenVINO: converted once from the checkpoint, cached, greedy-decoded in numpy."""

from capsearch.ml.blip_ov.captioner import OpenVinoBlipCaptioner

__all__ = ["OpenVinoBlipCaptioner"]
