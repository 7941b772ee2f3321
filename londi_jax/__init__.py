"""londi_jax: LONDI (Chen, Du, Mguni 2024) in JAX/Flax.

Layers, lowest first (a layer never imports a higher one):
  utils -> lm, envs, switcher -> agents -> cli / experiments
"""

__version__ = "0.1.0"
