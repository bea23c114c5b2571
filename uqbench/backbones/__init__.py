"""Backbones: classifiers whose intermediate activations are exposed as named taps.

The contract and cost counting live in ``uqbench.backbones.base``. This package imports nothing
on its own, so that finding a backbone plugin does not import torch.
"""
