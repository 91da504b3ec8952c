"""Inference: trajectory guidance, generation, reconstruction and metrics (see its issue)."""
