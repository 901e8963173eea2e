"""Models elk makes itself: synthetic checkpoints of real model shapes for tests and benchmarks
(`python -m elk.models.synth`). Never downloaded weights."""
