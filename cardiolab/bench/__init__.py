"""Measurements behind `python -m cardiolab bench` and benchmarks/*.py: speed (DiT training step and sampling,
peak memory in a fresh process) and highres (3D pipeline memory per MedLoRD switch)."""
