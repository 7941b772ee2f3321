"""Make ``--model londi-jax`` known to lm-evaluation-harness's own ``lm_eval`` command.

lm-eval finds models only in its registry and has no plugin entry point, so a package cannot add
a model to the ``lm_eval`` command by being installed. The install puts ``londi_jax_lm_eval.pth``
into site-packages (``setup.py`` for wheels, the Makefile for the editable install); its one line
calls ``install()`` at interpreter start. That only adds a finder to ``sys.meta_path``: nothing
is imported until ``lm_eval.api.registry`` is, and then the name ``londi-jax`` is registered as a
lazy placeholder (``londi_jax.evaluation.harness:LondiJaxLM``), so JAX and the model code load
only when that model is asked for. This module sits outside the ``londi_jax`` package so that
start-up does not import the package (or ``logging``): it costs well under a millisecond.
"""

from __future__ import annotations

import importlib.abc
import sys

REGISTRY = "lm_eval.api.registry"
MODEL = "londi-jax"
TARGET = "londi_jax.evaluation.harness:LondiJaxLM"
PTH_NAME = "londi_jax_lm_eval.pth"


def register(registry) -> None:
    """Register ``londi-jax`` in lm-eval's model registry (idempotent)."""
    import lm_eval.models  # noqa: F401  lm-eval fills its registry lazily only while it is empty: fill it first

    if MODEL not in registry.model_registry:
        registry.model_registry.register(MODEL, target=TARGET)


class _RegisterAfterExec(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        register(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != REGISTRY:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _RegisterAfterExec(spec.loader)
                return spec
        return None


def install() -> None:
    """Register now if lm-eval's registry is already imported, else when it is (once per process)."""
    if REGISTRY in sys.modules:
        register(sys.modules[REGISTRY])
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def install_pth(site_packages: str | None = None) -> str:
    """Copy the shipped ``.pth`` file into ``site_packages`` (default: this interpreter's purelib, the
    editable install's case); return its path."""
    import os
    import shutil
    import sysconfig

    dest = os.path.join(site_packages or sysconfig.get_paths()["purelib"], PTH_NAME)
    shutil.copyfile(os.path.join(os.path.dirname(os.path.abspath(__file__)), PTH_NAME), dest)
    return dest


if __name__ == "__main__":  # python -m londi_jax_lm_eval_hook (the Makefile's editable install)
    print(install_pth())
