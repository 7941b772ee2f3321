"""PyTorch reference implementations for benchmarks (test/benchmark-only; londi_jax never imports torch)."""
