"""The README runs as written: every ```python block and every documented command is executed.

README.md is parsed when the tests are collected, so a later README edit is covered without
touching this file. The steps run in document order in one temporary working directory (holding
copies of ``experiments/`` and ``benchmarks/``, so benchmark JSON lands there, not in the
repository), as a reader following the README top to bottom would run them: later steps use what
earlier ones made (``runs/cpu-small``).

What is a step:
- every ```python block (run as a script);
- every line of a ```bash block that starts like ``START`` (``londi-jax ...``, ``lm_eval ...``,
  ``python experiments/...``, ``python benchmarks/...``), and every inline code span that does
  (``### Switcher: `python benchmarks/switcher_throughput.py` ``) unless it holds a placeholder
  (``--out DIR``). Optional groups ``[--chat]`` are run included. Any other ```bash line must be
  listed in ``NOT_RUN`` with its reason, or the test fails.

Which interpreter: CLI commands, ``python experiments/...`` and the Python blocks run in the
runtime-only venv named by ``$LONDI_RUNTIME_VENV`` (``make test`` sets it to ``./.venv``, made by
``pip install -e .`` alone, exactly as ``make demo`` makes it), so a dependency missing from
pyproject's runtime list fails here even though the test extras (torch) would pull it in. Without
the variable (pytest run directly) this interpreter's venv is used, and a skip says so.
``python benchmarks/...`` needs PyTorch (the test extras) and runs with this interpreter.

Long jobs run on small settings through ``SUBSTITUTIONS``: one table, each row with its reason
and CPU budget. A step that no row covers must stay within ``DEFAULT_CPU_S`` CPU-seconds or the
test fails, so a new long command gets a conscious entry instead of a silent skip or a slow suite.
Time is counted in CPU-seconds (user + system of the step's processes), so the verdict does not
depend on what else loads the machine; a wall-clock limit of ``WALL_FACTOR`` times the budget only
catches hangs (a step waiting on the network, say).
"""

from __future__ import annotations

import dataclasses
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START = re.compile(r"^(londi-jax\s+\S|lm_eval\s+\S|python (experiments|benchmarks)/)")
# CPU-seconds an uncovered step may use (JAX's import alone takes ~3); more needs a row in SUBSTITUTIONS.
DEFAULT_CPU_S = 30.0
WALL_FACTOR = 10  # wall-clock limit = WALL_FACTOR x the CPU budget (a hang guard on a loaded machine)
RUNTIME_ENV_VAR = "LONDI_RUNTIME_VENV"
# An inline span with a placeholder (`londi-jax demo --out DIR`, `--set ...`) names a pattern, not a
# command: it is not run. In a ```bash block every line must run as written (placeholders fail).
PLACEHOLDER = re.compile(r"(^|\s)[A-Z][A-Z0-9_]*(=[A-Z][A-Z0-9_]*)?(\s|$)|\.\.\.")


@dataclasses.dataclass(frozen=True)
class Sub:
    """A rewrite of README steps: ``pattern`` (regex, searched in the step's text: the command line
    as ``shlex.join`` writes it, or the Python source) becomes ``repl`` (``None``: run as written).
    A step covered by a row may use the largest ``cpu_s`` of its rows (CPU-seconds)."""

    pattern: str
    repl: str | None
    cpu_s: float
    reason: str


SUBSTITUTIONS: tuple[Sub, ...] = (
    # --- the main job ---------------------------------------------------------------------------
    Sub(r"^londi-jax demo$", "londi-jax demo --preset tiny --out runs/cpu-small", 450,
        "the cpu-small pipeline takes ~13 min; the tiny preset runs every stage (compile-bound: 325 CPU-s "
        "measured) into runs/cpu-small, which later README steps read"),
    Sub(r"^londi-jax demo --preset tiny --out \S+$", r"\g<0> --fork-from runs/cpu-small", 60,
        "the same tiny configuration already ran into runs/cpu-small (row above): forked from it, every "
        "finished stage reused, instead of a second identical pipeline"),
    Sub(r"^(londi-jax demo --preset jax-online --out \S+)$", r"\1 --stages demos", 60,
        "the jax-online preset takes 44 min on 2 cores (its numbers are in the README): its options are checked "
        "and its first stage runs; the online stage itself is tested in tests/agents/test_online.py (training, "
        "exact resume) and tests/experiments/test_pipeline_online.py (the stage's store, the evaluation's restore)"),
    Sub(r"^(londi-jax demo)(?!.*--preset)(?!.*--fork-from)(?=.*--set)(.*)$", r"\1 --preset tiny\2", 60,
        "a new run of the default (cpu-small) preset with overrides: on the tiny preset"),
    Sub(r"^(londi-jax demo (?!.*--(fork-from|force-stages|stages)).*(--set|--preset gpu).*)$", r"\1 --stages demos",
        60, "a new run's options are parsed and checked (that happens before any work) and its first stage "
        "runs; the whole pipeline already ran for `londi-jax demo`"),
    Sub(r"^(londi-jax demo .*--preset sw-(small|gpu)(?!.*--stages).*)$", r"\1 --stages demos --set env.demo_episodes=1",
        90, "the ScienceWorld pipeline takes 30 min (sw-small; sw-gpu needs an accelerator): its options are checked "
        "and its first stage runs on one gold path per task"),
    Sub(r"^(londi-jax demo .*--preset gpu.*)$", r"\1 --set env.demo_episodes=4", 60,
        "SmolLM2 + LoRA cloning needs an accelerator (hours on 2 cores); 4 of the preset's 5000 demos"),
    Sub(r"^londi-jax demo .*--(force-stages|fork-from)", None, 150,
        "as written: reruns the tiny run's evaluation and report (70-115 CPU-s with a cold compile cache)"),
    # --- switcher toys ------------------------------------------------------------------------------
    Sub(r"^(londi-jax toy(-sweep)? .*)$", r"\1 --updates 100 --eval-episodes 100", 120,
        "3000 updates and 10k/2k evaluation episodes take 30-60 s; 100 run the same compiled programs"),
    # --- environments -----------------------------------------------------------------------------
    Sub(r"(--env scienceworld .*)--max-variations \d+", r"\1--max-variations 1", 120,
        "each ScienceWorld variation replays a gold path in the JVM (5-15 s); one per task"),
    Sub(r"env\.reset_batch\(k, params, 64\)", None, 60,
        "as written: compiles GLAM's level generator and the prompt builder for 64 envs (31 CPU-s measured "
        "on CI's 2 cores); nothing to shrink that would still show the API"),
    # --- the real SmolLM2 weights -------------------------------------------------------------------
    Sub(r"^londi-jax lm (score|generate)\b", None, 120,
        "as written: loads the real SmolLM2-135M and compiles it (15-25 CPU-s); nothing to shrink"),
    Sub(r"^(londi-jax lm demo)(?!.*--(deep|model))(.*)$",
        r"\1 --deep smollm2-135m-instruct --max-new-tokens 8\3", 90,
        "DEEPTHINK defaults to the largest installed model (the 1.5B where it was fetched: 165 CPU-s); the "
        "real SmolLM2 + Qwen2.5-0.5B pair runs (and is checked) in tests/lm/test_lm_demo_pair.py, so here the "
        "command runs end to end with SmolLM2 in both roles (half the CPU time); 8 chat tokens, not 32"),
    Sub(r'load_lm\("smollm2-135m-instruct"\)', None, 120, "as written: the real SmolLM2-135M, as above"),
    Sub(r"^londi-jax --local-devices \d+ lm (score|generate)\b", None, 120,
        "as written: the real SmolLM2-135M split over 8 virtual CPU devices (about 10 CPU-s more than one)"),
    Sub(r"^(londi-jax lm fetch (?!qwen2\.5-coder-0\.5b-instruct$)\S+.*?)( --dry-run)?$", r"\1 --dry-run", 60,
        "other models are 0.25-1.1 GB downloads (and Gemma's licence is the user's to accept): the command's "
        "name and options are checked and its plan printed; the 0.5B line runs as written, a no-op since "
        "`make test` installed it"),
    # --- evaluation through lm-eval ------------------------------------------------------------------
    Sub(r"^(londi-jax eval --model \S+ --tasks \S+)$", r"\1 --limit 10", 150,
        "the 399 items of tinyMMLU + ARC-Challenge take minutes on 2 cores (their scores are in the README's "
        "table); the first 10 of each run the same programs end to end"),
    Sub(r"^(lm_eval .*--include_path )londi_jax/evaluation/tasks(.*)$",
        rf"\g<1>{ROOT / 'londi_jax' / 'evaluation' / 'tasks'}\2 --limit 5", 150,
        "lm-eval's own command through the installed hook: the steps run in a scratch folder, so the "
        "repository-relative task folder is given absolute; 5 items of tinyMMLU"),
    Sub(r"^(londi-jax fslm experiment (?!.*babyai).*)$", r"\1 --out runs/fslm-readme --set models=base --set tasks=tinymmlu "
        r"--set eval_limit=5 --set train_questions=8", 120,
        "the fslm-small experiment takes about 40 min on 2 cores (its table is in the README): the command builds "
        "its training questions and evaluates the base on 5 items end to end; distillation and the stack's "
        "evaluation run on a tiny model in tests/experiments/test_fslm_experiment.py"),
    # --- Python API -----------------------------------------------------------------------------
    Sub(r'toy_trainer\("dqn", use_budget=True\)', 'toy_trainer("dqn", use_budget=True, num_updates=100)', 120,
        "48 switchers x 3000 updates take about a minute; 100 run the same single compiled program"),
    Sub(r'preset\("cpu-small"\)', 'preset("tiny")', 180, "the tiny preset, as for `londi-jax demo`"),
    Sub(r'^(Pipeline\(cfg, "runs/mine"\))\.run\(\)', r'\1.run(["demos"])', 180,
        "as for the CLI variants: the configuration is built and checked and its first stage runs"),
    Sub(r'Pipeline\.from_run_dir\("runs/mine"\)', 'Pipeline.from_run_dir("runs/cpu-small")', 180,
        "a finished run: the tiny run `londi-jax demo` made"),
    Sub(r'episode_specs\("BabyAI-MixedTestLocal-v0", \d+,', 'episode_specs("BabyAI-MixedTestLocal-v0", 8,', 180,
        "8 episodes instead of 64 with the tiny models"),
    # --- benchmarks -----------------------------------------------------------------------------------
    Sub(r"^(python benchmarks/\w+\.py)( .*)?$", r"\1 --help", 60,
        "1.5-7 min each on 2 cores (even --quick takes minutes there); measured by hand, their results "
        "recorded in benchmarks/results/: here the script's imports and argument parser are checked"),
)

# ```bash lines that are not run, with the reason. A bash line neither run nor listed here fails.
NOT_RUN: dict[str, str] = {
    r"^make demo$": "= `londi-jax demo` in .venv, which runs (tiny preset) through its own line",
    r"^make test$": "the command that runs this test",
    r"^\.venv/bin/pip install -U .*jax\[(cuda\d*|tpu)\]": "needs a GPU / TPU and its wheels; none here",
}


@dataclasses.dataclass(frozen=True)
class Step:
    line: int  # README line number (1-based)
    kind: str  # "cli", "python" or "unlisted" (a bash line neither run nor in NOT_RUN)
    text: str  # as written: the command line (shlex-joined, comment dropped) or the Python source

    @property
    def id(self) -> str:
        head = self.text.splitlines()[0] if self.text else ""
        return f"L{self.line}-{self.kind}-{re.sub(r'[^A-Za-z0-9_.=-]+', '_', head)[:60]}"


def _command(raw: str) -> str | None:
    """One shell line -> canonical text (comment dropped, optional ``[...]`` groups included)."""
    tokens = shlex.split(raw, comments=True)
    if not tokens:
        return None
    out = []
    for t in tokens:
        if t.startswith("[") and not t.startswith("[["):
            t = t[1:]
        if t.endswith("]") and not t.endswith("]]") and "[" not in t:
            t = t[:-1]
        if t:
            out.append(t)
    return shlex.join(out)


def readme_steps(text: str) -> list[Step]:
    """Every step of the README in document order, identical commands once (their first place)."""
    steps: list[Step] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^\s*```\s*([\w+-]*)\s*$", lines[i])
        if not fence:
            for span in re.findall(r"`([^`\n]+)`", lines[i]):
                if START.match(span.strip()) and not PLACEHOLDER.search(span):
                    steps.append(Step(i + 1, "cli", _command(span)))
            i += 1
            continue
        lang, start = fence.group(1).lower(), i + 1
        i += 1
        body: list[tuple[int, str]] = []
        while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
            body.append((i + 1, lines[i]))
            i += 1
        i += 1
        if lang == "python":
            steps.append(Step(start, "python", "\n".join(b for _, b in body) + "\n"))
        elif lang in ("bash", "sh", "shell", "console"):
            pending, first = "", 0
            for n, b in body:  # backslash continuations join
                if not pending:
                    first = n
                pending += b.rstrip()
                if pending.endswith("\\"):
                    pending = pending[:-1] + " "
                    continue
                cmd, pending = _command(pending), ""
                if cmd is None:
                    continue
                if START.match(cmd):
                    steps.append(Step(first, "cli", cmd))
                elif not any(re.search(p, cmd) for p in NOT_RUN):
                    steps.append(Step(first, "unlisted", cmd))
    seen: set[str] = set()
    unique = []
    for s in steps:
        if s.text not in seen:
            seen.add(s.text)
            unique.append(s)
    return unique


def substitute(text: str) -> tuple[str, float, list[Sub]]:
    """Apply every matching row of SUBSTITUTIONS; return the text to run, its CPU budget and the rows used."""
    used = [s for s in SUBSTITUTIONS if re.search(s.pattern, text, flags=re.M)]
    for s in used:
        if s.repl is not None:
            text = re.sub(s.pattern, s.repl, text, flags=re.M)
    return text, max((s.cpu_s for s in used), default=DEFAULT_CPU_S), used


def needs_main_run(step: Step) -> bool:
    """Whether the step is the README's main run (``londi-jax demo``, made into runs/cpu-small) or
    reads it or its tiny copies (runs/cpu-small, runs/tiny)."""
    return step.text == "londi-jax demo" or bool(re.search(r"runs/(cpu-small|tiny)\b", substitute(step.text)[0]))


# The steps that need no run go first (document order within each group): they keep this worker busy
# while the other makes the session's tiny run, whose compiled programs the README's own run then
# finds in the shared XLA cache (waiting for it idled a core for about 110 s).
STEPS = sorted(readme_steps(README.read_text()), key=needs_main_run)


# ---------------------------------------------------------------------------------------------
# Where and with what the steps run.

@dataclasses.dataclass(frozen=True)
class Runtime:
    bin: Path  # the runtime venv's bin/ (londi-jax, python)
    runtime_only: bool  # False: fell back to this interpreter's venv (test extras installed)


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    venv = os.environ.get(RUNTIME_ENV_VAR)
    if venv:
        bin_dir = Path(venv) / "bin"
        if not (bin_dir / "londi-jax").exists():
            pytest.fail(f"{RUNTIME_ENV_VAR}={venv} has no bin/londi-jax; `make install` builds the runtime venv")
        return Runtime(bin_dir, True)
    bin_dir = Path(sys.executable).parent
    sys.stderr.write(f"\ntest_readme: {RUNTIME_ENV_VAR} is not set, README commands run with {bin_dir}/londi-jax "
                     f"(this venv has the test extras, so a missing runtime dependency would not show; "
                     f"`make test` runs them in the runtime-only .venv)\n")
    return Runtime(bin_dir, False)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The working directory (copies of experiments/ and benchmarks/) and the steps' environment."""
    ws = tmp_path_factory.mktemp("readme")
    for d in ("experiments", "benchmarks"):
        shutil.copytree(ROOT / d, ws / d, ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ)
    # The steps inherit the session's XLA compilation cache (conftest.py): the same programs (SmolLM2
    # scoring, the tiny pipeline's BC and switcher steps) recur across the tests and these processes.
    # A cold cache of their own made the README's tiny run compile all of it again (154 s of 1,694).
    assert env.get("JAX_COMPILATION_CACHE_DIR"), "tests/conftest.py sets the session's compilation cache"
    env["MPLBACKEND"] = "Agg"
    return ws, env


def _argv(step: Step, text: str, runtime: Runtime) -> list[str]:
    if step.kind == "python":
        return [str(runtime.bin / "python"), "-c", text]
    argv = shlex.split(text)
    if argv[0] in ("londi-jax", "lm_eval"):  # lm_eval: lm-eval's own command, with our model through its hook
        return [str(runtime.bin / argv[0]), *argv[1:]]
    if argv[1].startswith("benchmarks/"):  # needs PyTorch for its baselines: the test extras
        return [sys.executable, *argv[1:]]
    return [str(runtime.bin / "python"), *argv[1:]]


def _run(argv: list[str], cwd: Path, env: dict[str, str], cpu_s: float) -> tuple[int | None, str, float, float]:
    """Run in its own process group (JVMs and workers die with it) under an RLIMIT_CPU of ``cpu_s``;
    return (exit status, None if killed at the wall limit; output; wall s; CPU-s of it and its children)."""
    limit = int(cpu_s) + 1

    def cap_cpu():  # in the child: SIGXCPU past the budget (each process it starts gets its own)
        resource.setrlimit(resource.RLIMIT_CPU, (limit, limit + 10))

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, preexec_fn=cap_cpu)
    try:
        out, _ = proc.communicate(timeout=WALL_FACTOR * cpu_s)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        rc = None
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return rc, out, time.monotonic() - t0, cpu


@pytest.mark.parametrize("step", STEPS, ids=[s.id for s in STEPS])
def test_readme_step(step: Step, runtime: Runtime, workspace, request):
    where = f"README.md line {step.line}"
    if needs_main_run(step):  # the session's tiny run first (conftest.py): its programs fill the XLA cache
        request.getfixturevalue("tiny_run")
    if step.kind == "unlisted":
        pytest.fail(f"{where}: `{step.text}` is in a bash block but neither run (it does not start like "
                    f"{START.pattern}) nor listed in NOT_RUN in {Path(__file__).name}: add it to one of them")
    ws, env = workspace
    text, cpu_s, used = substitute(step.text)
    rc, out, secs, cpu = _run(_argv(step, text, runtime), ws, env, cpu_s)
    print(f"{where}: {secs:.1f} s wall, {cpu:.1f} CPU-s (budget {cpu_s:.0f}): {text.splitlines()[0]}")
    shown = text if step.kind == "cli" else f"the ```python block:\n{text}"
    if rc is None or rc == -signal.SIGXCPU or cpu > cpu_s:
        what = (f"still running after {secs:.0f} s wall (a hang?)" if rc is None
                else f"used {cpu:.0f} CPU-seconds, over its budget of {cpu_s:.0f}")
        hint = ("no row of SUBSTITUTIONS covers it: add one (small settings, with the reason) "
                if not used else "raise its row's cpu_s or shrink its settings ")
        pytest.fail(f"{where}: {what}, killed: {shown}\n{hint}in {Path(__file__).name}\n"
                    f"--- output tail ---\n{out[-3000:]}")
    assert rc == 0 and "Traceback (most recent call last)" not in out, (
        f"{where} fails as written (exit {rc}, {secs:.0f} s, runtime venv {runtime.bin.parent}): {shown}\n"
        f"--- output tail ---\n{out[-4000:]}")


def test_every_substitution_is_used():
    """A row no README step matches any more is stale (the README changed): remove or fix it."""
    texts = [s.text for s in STEPS]
    stale = [s.pattern for s in SUBSTITUTIONS if not any(re.search(s.pattern, t, flags=re.M) for t in texts)]
    assert not stale, f"SUBSTITUTIONS rows that match no README step: {stale}"


def test_runtime_venv_is_runtime_only(runtime: Runtime):
    """The venv the README commands ran in must hold the runtime install alone: with the test extras
    (pytest, torch, and through torch jinja2 and more) a missing runtime dependency stays hidden."""
    if not runtime.runtime_only:
        pytest.skip(f"{RUNTIME_ENV_VAR} unset: README commands ran in this interpreter's venv (test extras "
                    f"installed); `make test` runs them in the runtime-only .venv")
    probe = "import importlib.util as u; print(*[m for m in ('pytest', 'torch') if u.find_spec(m)])"
    found = subprocess.run([str(runtime.bin / "python"), "-c", probe], capture_output=True, text=True,
                           check=True).stdout.split()
    assert not found, (f"{runtime.bin.parent} has test-only packages installed ({', '.join(found)}): it is not the "
                       f"runtime-only venv `make demo` builds; remove it (rm -rf {runtime.bin.parent}) and rerun "
                       f"`make test`")


def test_cpu_budget_is_enforced(tmp_path):
    """A step past its CPU budget is stopped (SIGXCPU) and its CPU time is measured."""
    rc, _, _, cpu = _run([sys.executable, "-c", "while True: pass"], tmp_path, dict(os.environ), 1.0)
    assert rc == -signal.SIGXCPU and cpu >= 1.0
    rc, out, _, _ = _run([sys.executable, "-c", "print('ok')"], tmp_path, dict(os.environ), 5.0)
    assert (rc, out) == (0, "ok\n")


def test_parser_finds_the_documented_steps():
    """The parser itself: fences, bash comments, optional groups, inline spans, NOT_RUN, duplicates."""
    text = "\n".join([
        "Run `londi-jax demo` or `make demo`; `londi-jax: error:` is a message, `londi-jax demo --out DIR` a pattern.",
        "```bash",
        "make test   # everything",
        "londi-jax lm generate --prompt \"Name three:\" [--chat] [--temperature 0.7 --top-p 0.9]",
        "londi-jax demo            # again: run once",
        "rm -rf /",
        "```",
        "```python",
        "print(1)",
        "```",
        "```",
        "londi-jax not-a-command-in-an-untyped-block",
        "```",
    ])
    steps = readme_steps(text)
    assert [(s.line, s.kind, s.text) for s in steps] == [
        (1, "cli", "londi-jax demo"),
        (4, "cli", "londi-jax lm generate --prompt 'Name three:' --chat --temperature 0.7 --top-p 0.9"),
        (6, "unlisted", "rm -rf /"),
        (8, "python", "print(1)\n"),
    ]
    assert substitute("londi-jax demo")[0] == "londi-jax demo --preset tiny --out runs/cpu-small"
    assert substitute("londi-jax env levels") == ("londi-jax env levels", DEFAULT_CPU_S, [])
