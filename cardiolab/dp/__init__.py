"""The DP mechanism, beside the engine (below tasks): accounting (epsilon, sigma, delta, privacy.json, the checks of
`privacy check`) and mechanism (Opacus wiring: which parameters train, make_private, per-sample gradient norms)."""
