"""What the task YAMLs here name with ``!function londi.NAME`` (lm-eval imports this file by path):
the datasets and formatting of ``londi_jax.evaluation.docs``."""

from londi_jax.evaluation.docs import (  # noqa: F401
    arc_challenge,
    arc_easy,
    hellaswag,
    hellaswag_docs,
    mmlu,
    tinymmlu,
    winogrande,
    winogrande_choices,
    winogrande_target,
    winogrande_text,
)
