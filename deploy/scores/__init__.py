"""First-party device scores, one kind per class (see :mod:`uqbench.deploy.device_score`),
each registered in the ``uqbench.device_scores`` entry-point group."""
