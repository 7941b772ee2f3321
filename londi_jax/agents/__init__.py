"""londi_jax.agents"""
