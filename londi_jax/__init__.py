"""londi_jax: LONDI (Chen, Du, Mguni 2024) in JAX/Flax.

Layers, lowest first (a layer never imports a higher one):
  utils -> lm, envs, switcher -> agents -> cli / experiments
"""

import logging as _logging

__version__ = "0.1.0"


class _NoTorchAdvice(_logging.Filter):
    """Drops transformers' import-time advice "PyTorch was not found. Models won't be available
    ...": londi_jax uses transformers only for tokenizers and configs, never its PyTorch models,
    so on a plain install (no torch) the message is noise. Every other transformers message
    passes. Installed here, before any submodule can import transformers; the filter sits on the
    "transformers" logger, which survives transformers' own logging set-up (it sets a level and
    a handler, never removes filters)."""

    def filter(self, record: _logging.LogRecord) -> bool:
        return not str(record.msg).startswith("PyTorch was not found")


_logging.getLogger("transformers").addFilter(_NoTorchAdvice())
