"""The entry-point registry: first-party plugins are found like third-party ones."""

import pytest

from uqbench import registry
from uqbench.errors import UnknownNameError


def test_first_party_plugins_are_entry_points():
    assert "msp" in registry.names("method")
    assert "digits" in registry.names("data")
    assert {"digits-cnn", "resnet8", "ds-cnn"} <= set(registry.names("backbone"))
    entries = {(e.kind, e.name): e for e in registry.entries()}
    assert entries[("method", "msp")].distribution.startswith("uqbench ")
    assert not any(e.broken for e in entries.values())


def test_unknown_name_lists_valid_names_and_suggests_the_closest():
    with pytest.raises(UnknownNameError) as info:
        registry.load("method", "mps")
    message = str(info.value)
    assert "Did you mean 'msp'?" in message and "Valid method names: " in message
    with pytest.raises(UnknownNameError, match="timm/<model>"):
        registry.load("backbone", "resnet9")


def test_timm_names_are_checked():
    with pytest.raises(UnknownNameError, match="timm has no model 'resnet_does_not_exist'"):
        registry.load("backbone", "timm/resnet_does_not_exist")
    assert callable(registry.load("backbone", "timm/resnet10t"))


def test_list_statuses_are_cached_until_a_plugin_file_changes(monkeypatch, tmp_path):
    import os
    from importlib import metadata

    first = registry.entries()
    calls = []

    def counting_load(self):
        calls.append(self.name)
        raise RuntimeError("imported")

    monkeypatch.setattr(metadata.EntryPoint, "load", counting_load)
    assert registry.entries() == first and calls == []  # answered from the cache
    # Touching a plugin's file changes the fingerprint: every plugin is imported again.
    plugin_file = registry._find_spec("uqbench.methods.msp").origin
    stat = os.stat(plugin_file)
    os.utime(plugin_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000))
    try:
        again = registry.entries()
    finally:
        os.utime(plugin_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert calls and all(e.broken and "imported" in e.error for e in again)
    assert len(registry.entries(use_cache=False)) == len(first)
