"""First-party datamodule plugins, corruption engines and OOD sets."""
