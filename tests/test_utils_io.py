"""utils.io: atomic writes keep the old file on a crash and get normal permissions under the
umask; JSONL readers skip only a torn last line; appends first cut a torn tail off; the
writable-directory check."""

from __future__ import annotations

import json
import os
import stat
import warnings

import pytest

from londi_jax.utils.io import (DataFileError, OutputDirError, TornWriteWarning, append_jsonl,
                                apply_default_permissions, atomic_write, atomic_write_json, check_writable_dir,
                                make_temp_dir, read_json, read_jsonl, umask)


@pytest.fixture
def mask():
    def set_mask(m):
        os.umask(m)
    old = os.umask(0o022)
    yield set_mask
    os.umask(old)


def test_a_crash_mid_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_json(path, {"v": 1})

    def half_then_die(fh):
        fh.write(b'{"v": 2, "pad')
        raise KeyboardInterrupt  # killed in the middle of the write
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_die)
    assert read_json(path) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


@pytest.mark.parametrize("m, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750), (0o077, 0o600, 0o700)])
def test_created_files_follow_the_umask(tmp_path, mask, m, file_mode, dir_mode):
    mask(m)
    assert umask() == m
    p = atomic_write_json(tmp_path / "x.json", [1])
    assert stat.S_IMODE(p.stat().st_mode) == file_mode  # mkstemp would give 0o600 whatever the umask
    d = make_temp_dir(tmp_path, ".t-")
    assert stat.S_IMODE(d.stat().st_mode) == dir_mode  # mkdtemp would give 0o700
    (d / "f").write_bytes(b"")
    os.chmod(d / "f", 0o600)
    os.chmod(d, 0o700)
    apply_default_permissions(d)
    assert stat.S_IMODE((d / "f").stat().st_mode) == file_mode and stat.S_IMODE(d.stat().st_mode) == dir_mode


def test_read_jsonl_skips_only_a_torn_last_line(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3, "b"')
    with pytest.warns(TornWriteWarning, match="skipped a torn last line"):
        assert read_jsonl(p) == [{"a": 1}, {"a": 2}]
    p.write_text('{"a": 1}\n{"a": 2}')  # complete, only its newline missing: kept, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_jsonl(p) == [{"a": 1}, {"a": 2}]
    p.write_text('{"a": 1}\n{"a": \n{"a": 3}\n')  # a bad line in the middle is not a crash's doing
    with pytest.raises(DataFileError, match="line 2 of .*r.jsonl is not valid JSON"):
        read_jsonl(p)
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_append_cuts_a_torn_tail_first(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_text('{"a": 1}\n{"a": 2, "tor')
    with pytest.warns(TornWriteWarning, match="cut off"):
        append_jsonl(p, {"a": 3})
    assert [json.loads(line) for line in p.read_text().splitlines()] == [{"a": 1}, {"a": 3}]
    p.write_text('{"a": 1}')  # a complete last record without its newline is kept
    append_jsonl(p, {"a": 2})
    assert p.read_text() == '{"a": 1}\n{"a": 2}\n'


def test_check_writable_dir(tmp_path):
    assert check_writable_dir(tmp_path / "new" / "run").is_dir()
    assert list((tmp_path / "new" / "run").iterdir()) == []  # the test file is gone
    (tmp_path / "f").write_text("")
    with pytest.raises(OutputDirError, match="is a file, not a directory"):
        check_writable_dir(tmp_path / "f" / "run")
