"""Small shared helpers (output formatting, errors); imports nothing else from londi_jax."""
