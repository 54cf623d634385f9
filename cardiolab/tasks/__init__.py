"""Per-model training code: build the model from a profile, its loss step for the engine, train/ensure/load."""
