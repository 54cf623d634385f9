"""Evaluation: read cohorts and runs, score them, write JSON (orchestration, above tasks and plots).

evaluate (fidelity, consistency, function and shape of a cohort; evaluator validation), function (cardiac function
and mask shape through the segmenter), utility (segmenters trained on real / synthetic / both), segment (labels of
every frame of a cohort), controllability (per conditioned group), rvip (RV insertion-point landmarks), reader_study.
"""
