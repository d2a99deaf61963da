"""The two flows, one module each: images (pipelines.images) and voice (pipelines.voice)."""
