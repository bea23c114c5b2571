"""The stages of a run, each with one job; :mod:`uqbench.runner` strings them together.

``resolve`` (check everything the user typed, before any data is loaded or folder made) ->
``base_model`` (train or load the cached base classifier) -> ``train`` (Lightning) ->
``calibrate`` (the post-training hook and the tuning loop) -> ``evaluate`` (one pass per
evaluation set, on the training device) -> ``write`` (the run folder, atomically).
"""
