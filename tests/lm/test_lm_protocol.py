"""The LM protocol is what the rest of londi_jax uses, the engine implements it exactly, and
every result carries the measured cost of its own call."""

from __future__ import annotations

import inspect
import typing

import numpy as np
import pytest
from lm_core_helpers import load_tiny

from londi_jax.agents.policy import LMPolicy
from londi_jax.lm.engine import LanguageModel
from londi_jax.lm.interface import LM, CallCost, ScoreResult

MEMBERS = ("name", "tokenizer", "hidden_size", "score", "score_tokens", "generate", "embed", "cost")


def test_protocol_members_are_what_policies_use():
    members = getattr(typing, "get_protocol_members", None) or typing._get_protocol_attrs  # 3.13+ / 3.11
    assert set(members(LM)) == set(MEMBERS)

    class Empty:
        pass

    assert not isinstance(Empty(), LM)


def test_engine_signatures_match_the_protocol():
    for name in MEMBERS:
        proto = inspect.getattr_static(LM, name, None)
        if not callable(proto) or isinstance(proto, property):
            continue
        ours = inspect.signature(getattr(LanguageModel, name))
        want = inspect.signature(proto)
        names = list(ours.parameters)
        assert names[:len(want.parameters)] == list(want.parameters), name
        for extra in names[len(want.parameters):]:  # extensions (adapters=): keyword-only, optional
            q = ours.parameters[extra]
            assert q.kind is inspect.Parameter.KEYWORD_ONLY and q.default is not inspect.Parameter.empty, (name, extra)
        for p in want.parameters.values():  # same kinds and defaults: callers may rely on either
            q = ours.parameters[p.name]
            assert (q.kind, q.default) == (p.kind, p.default), (name, p.name)


class _TableLM:
    """An LM that implements only the protocol, in numpy: candidate k's score is -(k + 1) * len(prompt)."""

    name = "table"
    hidden_size = 3

    def __init__(self):
        import tempfile

        from lm_core_helpers import make_tokenizer

        self.tokenizer = make_tokenizer(tempfile.mkdtemp())

    def score_tokens(self, prompt_ids, candidate_ids, *, with_embedding=False):
        n = len(prompt_ids)
        lps = [np.array([-(k + 1.0) * len(p) for k in range(len(c))]) for p, c in zip(prompt_ids, candidate_ids)]
        emb = np.tile(np.arange(3, dtype=np.float32), (n, 1))
        return ScoreResult(lps, [np.array([len(x) for x in c]) for c in candidate_ids],
                           [[np.array([v]) for v in lp] for lp in lps], emb if with_embedding else None,
                           -emb if with_embedding else None,
                           CallCost("score", 0.25, False, sum(map(len, prompt_ids)), 0, 0, 1000.0 * n))

    score = generate = embed = cost = None  # not used by a policy


def test_a_policy_runs_on_any_protocol_implementation():
    lm = _TableLM()
    pol = LMPolicy(lm)
    out = pol.score(["go", "go there now"], [("left", "right", "stop")] * 2)
    assert out.logprobs.shape == (2, 3) and out.action_strings(out.actions()) == ["left", "left"]
    assert out.embedding.shape == (2, pol.embedding_dim) == (2, 6)
    np.testing.assert_array_equal(out.embedding[0], [0, 1, 2, 0, -1, -2])
    assert (out.seconds, out.flops) == (0.25, 2000.0)  # the cost the result carried, not lm.cost()
    assert (pol.calls, pol.prompts, pol.flops) == (1, 2, 2000.0)


@pytest.fixture(scope="module")
def lm():
    return load_tiny("llama")[0]


def test_results_carry_their_own_call_cost(lm):
    s = lm.score(["hello there", "a b"], [["x", "yz"], ["q"]])
    g = lm.generate(["hello"], 3)
    e = lm.embed(["hello"])
    assert e.shape == (1, lm.hidden_size)
    assert s.cost.kind == "score" and g.cost.kind == "generate"
    assert s.cost.prompt_tokens == sum(len(lm.tokenizer.encode(p)) for p in ["hello there", "a b"])
    assert s.cost.scored_tokens == sum(len(lm.tokenizer.encode(c, add_special_tokens=False)) for c in ["x", "yz", "q"])
    assert g.cost.generated_tokens == len(g.token_ids[0])
    assert s.cost.flops > 0 and g.cost.flops > 0
    assert s.cost.seconds > 0 and g.cost.seconds > 0
    # the running totals are the sum of what the results carried (the embed call included)
    before = lm.cost()
    s2 = lm.score(["hello"], [["x"]])
    after = lm.cost()
    assert after.num_calls == before.num_calls + 1
    assert after.total_flops == pytest.approx(before.total_flops + s2.cost.flops)
    assert after.last_call == s2.cost
