"""utils.programs: one cache of per-config jitted programs, shared and clearable."""

from __future__ import annotations

import jax.numpy as jnp

import londi_jax.agents.calibration  # noqa: F401  (registers its builder)
import londi_jax.agents.routers  # noqa: F401
import londi_jax.switcher.host_loop  # noqa: F401
from londi_jax.utils.programs import clear_program_caches, program_cache, program_cache_info


def test_program_cache_shares_and_clears():
    built = []

    @program_cache(maxsize=2)
    def build(offset: int):
        built.append(offset)
        return lambda x: x + offset

    a, b = build(1), build(1)
    assert a is b and built == [1]
    build(2), build(3)  # maxsize 2: offset 1 is evicted
    assert build(1) is not a and built == [1, 2, 3, 1]
    clear_program_caches()
    build(1)
    assert built[-1] == 1 and len(built) == 5
    assert int(jnp.asarray(build(1)(1))) == 2


def test_every_program_builder_uses_the_one_cache():
    names = set(program_cache_info())
    for name in ("londi_jax.agents.routers._greedy_switch_program", "londi_jax.agents.calibration._rates_program",
                 "londi_jax.switcher.host_loop._compiled"):
        assert name in names
