"""Privacy: DP-SGD accounting (`accounting`), Opacus wiring for the engine (`dp`), and the privacy.json record."""
