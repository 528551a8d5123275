"""Small tensor operations shared across the pipeline (no Lightning, no Hydra): see :mod:`sgseg.ops.boxes`."""
