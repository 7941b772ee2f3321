"""Only what pyproject.toml cannot say: a wheel also puts ``londi_jax_lm_eval.pth`` into
site-packages, so lm-eval's own ``lm_eval --model londi-jax`` finds the model (see
londi_jax_lm_eval_hook.py; the editable install gets it from the Makefile)."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = Path("londi_jax_lm_eval.pth")


class BuildPyWithPth(build_py):
    def run(self):
        super().run()
        self.copy_file(str(PTH), str(Path(self.build_lib) / PTH.name))


setup(cmdclass={"build_py": BuildPyWithPth})
