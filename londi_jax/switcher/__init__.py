"""londi_jax.switcher"""
