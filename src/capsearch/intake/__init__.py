"""Checking and normalising uploaded images before anything is stored."""

from capsearch.intake.images import (
    NormalisedImage,
    describe_size,
    normalise_image,
    sniff_mime,
    too_large_error,
)

__all__ = ["NormalisedImage", "describe_size", "normalise_image", "sniff_mime", "too_large_error"]
