"""Privacy: DP-SGD accounting (`accounting`) and Opacus wiring for the engine (`dp`); the audits: copy detection
(`copies`), membership inference (`mia`), planted copies (`plant`), embeddings, and the release export (`export`)."""
