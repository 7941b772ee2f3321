"""FSLM stacks: templates, hand-offs, parsing, cost sums, the LM surface, saved stacks, the
``fslm show`` command and bad input. A scripted model makes the plumbing exact; a real (tiny,
random) model checks that a stack's answer equals running its stages by hand."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from londi_jax.fslm import Stack, StackError, Stage, load_stack, save_stack_spec
from londi_jax.lm.interface import CallCost, CostReport, GenerateResult, ScoreResult

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))  # the LM tests' helpers
from lm_core_helpers import save_tiny  # noqa: E402


class Scripted:
    """A model whose generation is a function of the prompt; every call costs 1 s and 10 FLOPs
    per prompt, so a stack's summed cost is known exactly."""

    def __init__(self, name, write):
        self.name, self.write, self.prompts, self.tokenizer = name, write, [], None
        self.hidden_size, self.context_window = 4, 64

    def _cost(self, kind, n):  # n prompts; a generation writes n tokens, a score scores n
        return CallCost(kind, 1.0, False, n, n * (kind == "score"), n * (kind == "generate"), 10.0 * n)

    def generate(self, prompts, max_new_tokens, *, temperature=0.0, top_k=None, top_p=None, stop=(), seed=0):
        self.prompts.append(list(prompts))
        texts = [self.write(p)[:max_new_tokens] for p in prompts]
        return GenerateResult(texts, [[0]] * len(texts), ["stop"] * len(texts), self._cost("generate", len(prompts)))

    def score(self, prompts, candidates, *, with_embedding=False):
        self.prompts.append(list(prompts))
        lps = [np.array([-float(len(c)) for c in cs]) for cs in candidates]
        return ScoreResult(lps, [np.ones(len(cs), int) for cs in candidates], [[np.zeros(1)] * len(cs) for cs in candidates],
                           cost=self._cost("score", len(prompts)))

    def cost(self):
        return CostReport(self.name, 100, 90, 8.0, 1.0, 2.0, None, 0.0, 0.0, 0)


def _three_stages():
    facts = Scripted("facts", lambda p: " key is red; door is blue \n")
    plan = Scripted("plan", lambda p: "open the door" if "blue" in p else "")
    act = Scripted("act", lambda p: "go")
    stages = [Stage("facts", facts, "Observation: {input}\nFacts:"),
              Stage("plan", plan, "Facts: {facts}\nGoal from: {input}\nPlan:"),
              Stage("act", act, "{input}\nFacts: {facts}\nPlan: {plan}\nAction:")]
    return Stack(stages, name="three"), (facts, plan, act)


def test_stages_run_in_order_and_hand_on_text():
    stack, (facts, plan, act) = _three_stages()
    res = stack.score(["you see a red key", "a blue door ahead"], [["go forward", "turn left"], ["pick up"]])
    assert facts.prompts == [["Observation: you see a red key\nFacts:", "Observation: a blue door ahead\nFacts:"]]
    assert plan.prompts == [[f"Facts: key is red; door is blue\nGoal from: {x}\nPlan:"
                             for x in ("you see a red key", "a blue door ahead")]]
    assert act.prompts == [[f"{x}\nFacts: key is red; door is blue\nPlan: open the door\nAction:"
                            for x in ("you see a red key", "a blue door ahead")]]
    assert res.handoffs[1] == {"input": "a blue door ahead", "facts": "key is red; door is blue",
                               "plan": "open the door", "prompt": act.prompts[0][1]}
    np.testing.assert_array_equal(res.logprobs[0], [-10.0, -9.0])
    # one call per stage for the whole batch; the cost is the three calls' sum
    assert res.cost == CallCost("score", 3.0, False, 6, 2, 4, 60.0)
    rep = stack.cost()
    assert (rep.num_params, rep.total_seconds, rep.total_flops, rep.num_calls) == (300, 3.0, 60.0, 1)


def test_generate_and_a_custom_parser():
    stack, (_, _, act) = _three_stages()
    first = stack.stages[0]
    stack = Stack([Stage("facts", first.model, first.template, parse=lambda t: t.split(";")[1].strip()),
                   *stack.stages[1:]])
    res = stack.generate(["x"], 5)
    assert res.texts == ["go"] and res.handoffs[0]["facts"] == "door is blue"
    assert res.cost.generated_tokens == 3


def test_bad_stacks_are_refused_with_what_to_do():
    m = Scripted("m", lambda p: "ok")
    with pytest.raises(StackError, match="at least one stage"):
        Stack([])
    with pytest.raises(StackError, match=r"stage 'b': its template reads \{c\}, which is not \{input\} or an "
                                         r"earlier stage \(a later stage: stages run in order\); it may read: input, a"):
        Stack([Stage("a", m, "{input}"), Stage("b", m, "{a} {c}"), Stage("c", m, "{b}")])
    with pytest.raises(StackError, match=r"reads \{plan\}.*it may read: input$"):
        Stack([Stage("a", m, "{plan}")])
    with pytest.raises(StackError, match="two stages are named 'a'"):
        Stack([Stage("a", m, "{input}"), Stage("a", m, "{a}")])
    with pytest.raises(StackError, match="must be an identifier other than 'input'"):
        Stack([Stage("input", m, "{input}")])
    with pytest.raises(StackError, match=r"field \{input:>10\} is not a plain name"):
        Stack([Stage("a", m, "{input:>10}")])
    with pytest.raises(StackError, match="not valid format text"):
        Stack([Stage("a", m, "{input")])
    with pytest.raises(StackError, match="max_new_tokens must be a whole number >= 1, got 0"):
        Stack([Stage("a", m, "{input}", max_new_tokens=0)])
    empty = Stack([Stage("a", Scripted("e", lambda p: "  \n"), "{input}"), Stage("b", m, "{a}")])
    with pytest.raises(StackError, match=r"stage 'a' handed on an empty text for input 0 \(it generated '  \\n'\); "
                                         r"raise its max_new_tokens.*allow_empty=True"):
        empty.generate(["x"], 4)
    tolerant = Stack([Stage("a", Scripted("e", lambda p: ""), "{input}", allow_empty=True), Stage("b", m, "[{a}]")])
    assert tolerant.generate(["x"], 4).handoffs[0]["prompt"] == "[]"
    with pytest.raises(Exception, match="not one string"):
        tolerant.generate("x", 4)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d, _ = save_tiny(tmp_path_factory.mktemp("fslm"), "llama")
    return d


def test_a_stack_of_real_models_equals_its_stages_run_by_hand(tiny_dir):
    from londi_jax.lm.registry import load_lm

    lm = load_lm(str(tiny_dir), progress=False)
    stack = Stack([Stage("notes", lm, "{input} notes:", max_new_tokens=6, stop=(), allow_empty=True),
                   Stage("answer", lm, "{input} | {notes} | answer:")])
    inputs, cands = ["go forward", "open the door"], [["turn left", "go"], ["pick up the key"]]
    res = stack.score(inputs, cands)
    notes = lm.generate([f"{x} notes:" for x in inputs], 6).texts
    ref = lm.score([f"{x} | {n.strip()} | answer:" for x, n in zip(inputs, notes)], cands)
    for a, b in zip(res.logprobs, ref.logprobs):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert [h["notes"] for h in res.handoffs] == [n.strip() for n in notes]
    # through lm-eval's interface too: the stack is a model like any other
    from lm_eval.api.instance import Instance

    from londi_jax.evaluation.harness import LondiJaxLM

    harness = LondiJaxLM(pretrained=stack)
    ll = harness.loglikelihood([Instance("loglikelihood", {}, ("go forward", " turn left"), 0)], disable_tqdm=True)
    ctx_ids = lm.tokenizer.encode("go forward")
    final = f"{lm.tokenizer.decode(ctx_ids, skip_special_tokens=True)} | {notes[0].strip()} | answer:"
    cont = harness.tok_encode("go forward turn left")[len(harness.tok_encode("go forward")):]
    manual = lm.score_tokens([lm.tokenizer.encode(final)], [[cont]]).logprobs[0][0]
    assert ll[0][0] == pytest.approx(manual, abs=1e-5)


def test_saved_stack_shares_its_base_and_shows_its_handoffs(tiny_dir, tmp_path, capsys):
    from londi_jax.cli import main

    path = save_stack_spec(tmp_path / "stack.json", [
        {"name": "notes", "model": str(tiny_dir), "template": "{input} notes:", "max_new_tokens": 4, "stop": [],
         "allow_empty": True},
        {"name": "answer", "model": str(tiny_dir), "template": "{input} | {notes} | answer:"}], name="two")
    stack = load_stack(path)
    assert stack.stages[0].model is stack.stages[1].model and len(stack.models()) == 1
    code = main(["fslm", "show", "--stack", str(path), "--input", "go forward", "--candidate", "turn left",
                 "--candidate", "go", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["stages"] == ["notes", "answer"] and [c for c, _ in out["scores"]] == ["turn left", "go"]
    assert out["handoffs"]["prompt"] == f"go forward | {out['handoffs']['notes']} | answer:"
    code = main(["fslm", "show", "--stack", str(path), "--input", "go", "--max-new-tokens", "3"])
    text = capsys.readouterr().out
    assert code == 0 and "[input] go" in text and "[notes]" in text and "cost:" in text
    # bad files
    (tmp_path / "bad.json").write_text(json.dumps({"format": "londi_jax-fslm-stack", "stages": [
        {"name": "a", "model": "no-such-model", "template": "{input}"}]}))
    code = main(["fslm", "show", "--stack", str(tmp_path / "bad.json"), "--input", "x"])
    err = capsys.readouterr().err
    assert code == 2 and "stage 'a'" in err and "no-such-model" in err and "smollm2-135m-instruct" in err
    (tmp_path / "typo.json").write_text(json.dumps({"format": "londi_jax-fslm-stack", "stages": [
        {"name": "a", "model": str(tiny_dir), "template": "{input}", "max_tokens": 3}]}))
    with pytest.raises(StackError, match=r"unknown key\(s\) \['max_tokens'\]"):
        load_stack(tmp_path / "typo.json")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(StackError, match="is not a stack file"):
        load_stack(tmp_path / "other.json")


def test_saved_stack_with_adapters_runs_one_bank_and_equals_each_adapter_alone(tiny_dir, tmp_path):
    """Stages with their own LoRA adapters on one base load as one adapter bank (shared weights and
    programs); each stage computes what its adapter computes alone."""
    from test_lora import randomize_b

    from londi_jax.lm.engine import LanguageModel
    from londi_jax.lm.lora import LoRAConfig, add_lora, save_lora
    from londi_jax.lm.registry import load_lm

    lm = load_lm(str(tiny_dir), progress=False)
    alone = {}
    for k, name in enumerate(["notes", "answer"]):
        adapted = randomize_b(add_lora(lm.model, LoRAConfig(rank=4, targets=("q_proj", "v_proj", "down_proj")),
                                       seed=k), seed=20 + k)
        save_lora(adapted, tmp_path / "adapters" / name)
        alone[name] = LanguageModel(lm.config, adapted, lm.tokenizer, name=name)
    path = save_stack_spec(tmp_path / "stack.json", [
        {"name": "notes", "model": str(tiny_dir), "adapter": "adapters/notes", "template": "{input} notes:",
         "max_new_tokens": 6, "stop": [], "allow_empty": True},
        {"name": "check", "model": str(tiny_dir), "template": "{input} ({notes}) check:", "max_new_tokens": 3,
         "stop": [], "allow_empty": True},
        {"name": "answer", "model": str(tiny_dir), "adapter": "adapters/answer",
         "template": "{input} | {notes} | {check} | answer:"}], name="lora")
    stack = load_stack(path)
    notes_m, check_m, answer_m = (st.model for st in stack.stages)
    assert notes_m.bank is answer_m.bank and notes_m.bank.adapter_names == ("notes", "answer")
    assert not hasattr(check_m, "bank") and check_m.num_adapters == 0  # the plain base, loaded once
    inputs, cands = ["go forward", "open the door", "pick up"], [["turn left", "go"], ["pick up the key"], ["drop"]]
    res = stack.score(inputs, cands)
    notes = [t.strip() for t in alone["notes"].generate([f"{x} notes:" for x in inputs], 6).texts]
    checks = [t.strip() for t in check_m.generate([f"{x} ({n}) check:" for x, n in zip(inputs, notes)], 3).texts]
    ref = alone["answer"].score([f"{x} | {n} | {c} | answer:" for x, n, c in zip(inputs, notes, checks)], cands)
    assert [h["notes"] for h in res.handoffs] == notes
    for a, b in zip(res.logprobs, ref.logprobs):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_stack_files_with_wrong_types_are_refused_before_any_model_loads(tmp_path):
    def write(**stage):
        base = {"name": "a", "model": "no-such-model-is-loaded", "template": "{input}"}
        (tmp_path / "s.json").write_text(json.dumps({"format": "londi_jax-fslm-stack", "stages": [{**base, **stage}]}))
        return tmp_path / "s.json"

    cases = {
        "stop must be a list of strings": {"stop": "END"},
        "stop must be a list of non-empty strings": {"stop": [1, 2]},
        "allow_empty must be true or false": {"allow_empty": "false"},
        "max_new_tokens must be a whole number >= 1, got 2.9": {"max_new_tokens": 2.9},
        "max_new_tokens must be a whole number >= 1, got 'abc'": {"max_new_tokens": "abc"},
        "temperature must be a finite number >= 0, got 'hot'": {"temperature": "hot"},
        "temperature must be a finite number >= 0, got -1": {"temperature": -1},
        "its template must be text, not int": {"template": 5},
        "its name 5 must be an identifier": {"name": 5},
        "adapter must be a name or a path": {"adapter": 5},
        "model must be a name or a path": {"model": None},
        "its name 'prompt' must be an identifier other than 'input' or 'prompt'": {"name": "prompt"},
        r"reads \{a\}.*\(its own name: a stage reads only earlier stages\)": {"template": "{a}"},
    }
    for message, stage in cases.items():
        with pytest.raises(StackError, match=message):
            load_stack(write(**stage))  # the model named is never loaded: the checks come first
    with pytest.raises(StackError, match="stop must be a list"):
        save_stack_spec(tmp_path / "t.json", [{"name": "a", "model": "m", "template": "{input}", "stop": "x"}])
    with pytest.raises(StackError, match="temperature must be a finite number"):
        save_stack_spec(tmp_path / "t.json", [{"name": "a", "model": "m", "template": "{input}",
                                               "temperature": float("nan")}])
    assert not (tmp_path / "t.json").exists()


def test_fslm_show_generates_with_the_final_stages_own_settings(tiny_dir, tmp_path, capsys):
    from londi_jax.cli import main

    path = save_stack_spec(tmp_path / "stack.json", [
        {"name": "notes", "model": str(tiny_dir), "template": "{input} notes:", "max_new_tokens": 3, "stop": [],
         "allow_empty": True},
        {"name": "answer", "model": str(tiny_dir), "template": "{input} | {notes} | answer:", "max_new_tokens": 2,
         "stop": []}])
    assert main(["fslm", "show", "--stack", str(path), "--input", "go", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cost"]["generated_tokens"] <= 3 + 2  # the notes stage's 3 + the final stage's own 2
