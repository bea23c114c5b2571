"""One colour and marker per method, the same in every figure of every leaderboard.

The first-party methods and SNAP-UQ's variant scores have fixed styles: the baselines take the
ten colours of matplotlib's ``tab10`` with circles, SNAP-UQ is black and its variants grey, each
with its own marker; any other label (a plugin's method) gets a style from a hash of its name,
so it keeps it from one leaderboard to the next.
"""

from __future__ import annotations

import hashlib

TAB10 = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:gray",
    "tab:olive",
    "tab:cyan",
)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")

FIXED: dict[str, tuple[str, str]] = {
    "msp": ("tab:blue", "o"),
    "entropy": ("tab:orange", "o"),
    "temperature": ("tab:green", "o"),
    "energy": ("tab:red", "o"),
    "mahalanobis": ("tab:purple", "o"),
    "react": ("tab:brown", "o"),
    "ash": ("tab:pink", "o"),
    "odin": ("tab:gray", "o"),
    "evidential": ("tab:olive", "o"),
    "mc_dropout": ("tab:cyan", "o"),
    "deep_ensemble": ("tab:blue", "s"),
    "early_exit": ("tab:orange", "s"),
    "snapuq": ("black", "*"),
    "snapuq (surprisal)": ("0.35", "^"),
    "snapuq (confidence)": ("0.35", "v"),
    "snapuq (tap_mid)": ("0.6", "<"),
    "snapuq (tap_penultimate)": ("0.6", ">"),
}


def style(label: str) -> tuple[str, str]:
    """(matplotlib colour, marker) of a method's label."""
    if label in FIXED:
        return FIXED[label]
    digest = int.from_bytes(hashlib.sha256(label.encode()).digest()[:4], "big")
    taken = set(FIXED.values())
    for step in range(len(TAB10) * len(MARKERS)):
        slot = (digest + step) % (len(TAB10) * len(MARKERS))
        candidate = (TAB10[slot % len(TAB10)], MARKERS[slot // len(TAB10)])
        if candidate not in taken:
            return candidate
    return TAB10[digest % len(TAB10)], MARKERS[digest % len(MARKERS)]
