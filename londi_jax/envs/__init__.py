"""londi_jax.envs"""
