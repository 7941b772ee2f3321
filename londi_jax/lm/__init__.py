"""londi_jax.lm"""
