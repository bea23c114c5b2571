"""Backbones: classifiers whose intermediate activations are exposed as named taps."""

from uqbench.backbones.base import Backbone, BackboneOutput, count_macs, count_parameters

__all__ = ["Backbone", "BackboneOutput", "count_macs", "count_parameters"]
