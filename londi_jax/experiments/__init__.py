"""LONDI experiments on BabyAI-Text: typed configs and presets (``config``), the staged pipeline
(``pipeline``), logging (``logging``) and the report (``report``). Thin scripts live in the
repository's ``experiments/`` directory; ``londi-jax demo`` runs the pipeline."""
