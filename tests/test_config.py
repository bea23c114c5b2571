"""Override parsing, schema binding and type coercion."""

from typing import Literal

import pytest

from uqbench.config import bind, coerce, parse_overrides, schema
from uqbench.errors import ConfigError


def test_parse_overrides_splits_top_level_and_prefixed_keys():
    cfg = parse_overrides(
        [
            "method=msp",
            "data=digits",
            "backbone=digits-cnn",
            "seed=17",
            "trainer.max_epochs=30",
            "method.lr=1e-3",
            "data.batch_size=32",
        ]
    )
    assert (cfg.method, cfg.data, cfg.backbone, cfg.seed) == ("msp", "digits", "digits-cnn", 17)
    assert cfg.trainer_args == {"max_epochs": "30"}
    assert cfg.method_args == {"lr": "1e-3"}
    assert cfg.data_args == {"batch_size": "32"}


@pytest.mark.parametrize(
    "override,message",
    [
        ("methodmsp", "malformed override 'methodmsp'"),
        ("=msp", "malformed override"),
        ("mehtod=msp", "unknown key 'mehtod'"),
        ("optim.lr=1", "unknown key 'optim.lr'"),
        ("seed=abc", "seed: expected int, got 'abc'"),
        ("logger=tensorbored", "give one or more of csv, tensorboard, wandb, mlflow"),
        ("logger=[csv,csv]", "each once, or logger=none"),
    ],
)
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ConfigError, match=message):
        parse_overrides([override])


class _Base:
    def __init__(self, backbone, lr: float = 1e-3, optimizer: Literal["adam", "sgd"] = "adam"):
        pass


class _Child(_Base):
    def __init__(self, backbone, rank: int = 64, taps: tuple[str, ...] = ("mid",), **kwargs):
        super().__init__(backbone, **kwargs)


def test_schema_follows_kwargs_up_the_mro():
    params = schema(_Child, skip=("backbone",))
    assert list(params) == ["rank", "taps", "lr", "optimizer"]


def test_bind_coerces_and_fills_defaults():
    bound = bind(
        _Child,
        {"rank": "32", "lr": "5e-4", "taps": "[mid,penultimate]"},
        "method",
        skip=("backbone",),
    )
    assert bound == {"rank": 32, "lr": 5e-4, "taps": ("mid", "penultimate"), "optimizer": "adam"}
    assert bind(_Child, {"rank": "8"}, "method", skip=("backbone",), fill_defaults=False) == {
        "rank": 8
    }


def test_bind_errors_list_valid_keys_and_types():
    with pytest.raises(ConfigError, match=r"unknown key method\.rnk .*method\.rank \(int\)"):
        bind(_Child, {"rnk": "3"}, "method", skip=("backbone",))
    with pytest.raises(ConfigError, match=r"method\.rank: expected int, got '3\.5'"):
        bind(_Child, {"rank": "3.5"}, "method", skip=("backbone",))
    with pytest.raises(ConfigError, match=r"method\.optimizer: expected one of adam, sgd"):
        bind(_Child, {"optimizer": "lbfgs"}, "method", skip=("backbone",))


@pytest.mark.parametrize(
    "raw,annotation,expected",
    [
        ("1e-3", float, 1e-3),
        ("3", float, 3.0),
        ("true", bool, True),
        ("off", bool, False),
        ("none", str | None, None),
        ("7", int | None, 7),
        ("none", Literal["logistic", "isotonic", "none"], "none"),
        ("[1,2]", list[int], [1, 2]),
        ("0.5", float | str, 0.5),
        ("auto", int | str, "auto"),
    ],
)
def test_coerce(raw, annotation, expected):
    assert coerce(raw, annotation, "k") == expected


def test_coerce_rejects_bool_for_numbers_and_garbage_bools():
    with pytest.raises(ConfigError, match="expected bool"):
        coerce("maybe", bool, "k")
    with pytest.raises(ConfigError, match="expected int"):
        coerce(True, int, "k")


def test_method_groups_parse_with_or_without_brackets():
    from uqbench.runner import method_names

    assert method_names("snapuq") == ["snapuq"]
    assert method_names("msp,energy") == ["msp", "energy"]
    assert method_names("[msp, energy,react]") == ["msp", "energy", "react"]
    with pytest.raises(ConfigError, match="names no method"):
        method_names("[]")
