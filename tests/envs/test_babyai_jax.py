"""The JAX BabyAI-Text env against minigrid itself (the reference), and its level statistics.

* Agreement: states drawn from real minigrid episodes of every level and kind (random actions
  mixed with the BabyAI bot's, so missions get completed), converted with ``from_minigrid``; then
  every one of the six actions is applied in both envs and the next observation (image and
  sentences), the whole grid, the agent, what it carries, the reward and both end flags compared.
* Trajectories: one converted state then many steps in the JAX env alone, so the verifier's own
  state (sequence progress, preCarrying, tracked positions after drops) is checked as it evolves.
* Generation: JAX levels against minigrid's by statistics (kinds, object counts, types, colours,
  articles, filters, step limits).
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from londi_jax.envs.babyai_jax import convert, core, levels, phrases  # noqa: E402
from londi_jax.envs.babyai_jax import env as jenv  # noqa: E402
from londi_jax.envs.babyai_text import describe, make_babyai_text  # noqa: E402
from londi_jax.envs.babyai_text.levels import LevelParamError, MIXED_KINDS  # noqa: E402
from londi_jax.utils.errors import UnknownNameError  # noqa: E402

CONFIG = core.StaticConfig()
ACTION_NAMES = ("turn left", "turn right", "go forward", "pick up", "drop", "toggle")
# (level, kwargs): every Mixed kind on both filters, the sequence levels, minigrid's local levels
LEVELS = ([("BabyAI-MixedTrainLocal-v0", {"kind": k}) for k in MIXED_KINDS]
          + [("BabyAI-MixedTestLocal-v0", {"kind": k}) for k in MIXED_KINDS]
          + [(f"BabyAI-{n}-v0", {}) for n in ("PickUpThenGoToLocal", "GoToAfterPickUpLocal", "PickUpSeqPickUpLocal")]
          + [(f"BabyAI-{n}-v0", {}) for n in ("GoToLocal", "PickupLoc", "PutNextLocal")])
# minigrid's 3x3-room levels (22x22 grids, doors everywhere) need a larger static config
BIG_CONFIG = core.StaticConfig(height=22, width=22, max_objects=32)
BIG_LEVELS = [("BabyAI-OpenDoor-v0", {}), ("BabyAI-UnlockLocal-v0", {}), ("BabyAI-Open-v0", {})]


def _instr_nodes(instr):
    nodes = [instr]
    for attr in ("instr_a", "instr_b"):
        if hasattr(instr, attr):
            nodes += _instr_nodes(getattr(instr, attr))
    for attr in ("desc", "desc_move", "desc_fixed"):
        if hasattr(instr, attr):
            nodes.append(getattr(instr, attr))
    return nodes


def _snapshot(base):
    """What one minigrid step can change: the agent, the front cell and the objects in reach, the
    verifier's state (restored exactly instead of a 0.7 ms deepcopy per action)."""
    fx, fy = base.front_pos
    front = base.grid.get(fx, fy)
    objs = [o for o in (front, base.carrying) if o is not None]
    return (tuple(base.agent_pos), base.agent_dir, base.step_count, base.carrying, (fx, fy), front,
            [(o, dict(vars(o)), None if o.cur_pos is None else np.array(o.cur_pos)) for o in objs],
            [(n, {k: (list(v) if isinstance(v, list) else v) for k, v in vars(n).items()})
             for n in _instr_nodes(base.instrs)])


def _restore(base, snap):
    pos, d, steps, carrying, (fx, fy), front, objs, nodes = snap
    base.agent_pos, base.agent_dir, base.step_count, base.carrying = pos, d, steps, carrying
    base.grid.set(fx, fy, front)
    for o, attrs, cur in objs:
        vars(o).update(attrs)
        o.cur_pos = cur
    for n, attrs in nodes:
        vars(n).clear()
        vars(n).update(attrs)


def _outcome(base, image, reward, terminated, truncated):
    grid = base.grid.encode().transpose(1, 0, 2)  # [y, x, 3]
    carry = (0, 0) if base.carrying is None else (int(image[3, 6, 0]), int(image[3, 6, 1]))
    return dict(image=image, sentences=describe(image), reward=float(reward), terminated=bool(terminated),
                truncated=bool(truncated), grid=grid, agent=(*map(int, base.agent_pos), int(base.agent_dir)),
                carry=carry, steps=int(base.step_count))


def _jax_grid(st, h, w):
    """The whole grid's ``(type, colour, state)`` encoding ``[h, w, 3]`` (traceable)."""
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return jnp.stack(core.cell_encoding(st, jnp.asarray(xs), jnp.asarray(ys)), -1)


def _sample_states(n_states: int, seed: int):
    """(state, python outcomes of the 6 actions, grid size) for states from real episodes."""
    rng = np.random.default_rng(seed)
    per_level = -(-n_states // len(LEVELS))
    rows = []
    for li, (level, kw) in enumerate(LEVELS):
        got, ep = 0, 0
        while got < per_level:
            env = make_babyai_text(level, seed=int(seed * 1000 + li * 100 + ep), **kw)
            env.reset()
            ep += 1
            base = env.unwrapped
            bot_rate = rng.uniform(0.3, 0.9)
            for _ in range(base.max_steps):
                if got >= per_level:
                    break
                state = convert.from_minigrid(env, CONFIG)
                snap = _snapshot(base)
                outs = []
                for a in range(6):
                    obs, r, te, tr, _ = base.step(a)
                    outs.append(_outcome(base, obs["image"], r, te, tr))
                    _restore(base, snap)
                rows.append((state, outs, (base.grid.height, base.grid.width), level))
                got += 1
                advice = env.expert_action() if rng.random() < bot_rate else None
                ts = env.step(advice or ACTION_NAMES[int(rng.integers(6))])
                if ts.terminated or ts.truncated:
                    break
    return rows


@pytest.mark.slow
def test_every_action_agrees_with_minigrid_on_10k_states():
    rows = _sample_states(10_000, seed=1)
    assert len(rows) >= 10_000
    states = jax.tree.map(lambda *x: np.stack(x), *[r[0] for r in rows])
    rep = jax.tree.map(lambda x: np.repeat(x, 6, axis=0), states)
    actions = np.tile(np.arange(6, dtype=np.int32), len(rows))
    obs, nxt, reward, term, trunc = jax.jit(jax.vmap(jenv.step_env))(rep, actions)
    grids = np.asarray(jax.jit(jax.vmap(lambda st: _jax_grid(st, CONFIG.height, CONFIG.width)))(nxt))
    obs, nxt = jax.tree.map(np.asarray, obs), jax.tree.map(np.asarray, nxt)
    reward, term, trunc = np.asarray(reward), np.asarray(term), np.asarray(trunc)
    carry_t = np.where(nxt.carry >= 0, np.take_along_axis(nxt.obj_type, np.maximum(nxt.carry, 0)[:, None], 1)[:, 0], 0)
    carry_c = np.where(nxt.carry >= 0, np.take_along_axis(nxt.obj_color, np.maximum(nxt.carry, 0)[:, None], 1)[:, 0], 0)
    successes, changed = 0, 0
    for i, (_, outs, (h, w), level) in enumerate(rows):
        for a in range(6):
            k = 6 * i + a
            want = outs[a]
            where = f"{level} state {i} action {ACTION_NAMES[a]}"
            assert np.array_equal(obs.image[k], want["image"]), where
            assert phrases.sentences_of(obs.slots[k]) == want["sentences"], where
            assert abs(float(reward[k]) - want["reward"]) < 1e-6, where
            assert (bool(term[k]), bool(trunc[k])) == (want["terminated"], want["truncated"]), where
            assert (*map(int, nxt.agent_pos[k]), int(nxt.agent_dir[k])) == want["agent"], where
            assert int(nxt.step_count[k]) == want["steps"], where
            assert (int(carry_t[k]), int(carry_c[k])) == want["carry"], where
            assert np.array_equal(grids[k, :h, :w], want["grid"]), where
            successes += want["terminated"]
            changed += a >= 3 and not np.array_equal(want["grid"], outs[0]["grid"])
    assert successes >= 200 and changed >= 500  # missions completed, objects moved, doors toggled


@pytest.mark.slow
def test_trajectories_keep_the_verifier_state():
    """Convert once, then follow a whole minigrid episode in the JAX env alone."""
    rng = np.random.default_rng(7)
    step = jax.jit(jenv.step_env)
    ends = {"success": 0, "timeout": 0}
    for li, (level, kw) in enumerate(LEVELS + BIG_LEVELS):
        config = BIG_CONFIG if (level, kw) in BIG_LEVELS else CONFIG
        for ep in range(4):
            env = make_babyai_text(level, seed=5000 + 10 * li + ep, **kw)
            env.reset()
            for _ in range(int(rng.integers(0, 4))):
                env.step(ACTION_NAMES[int(rng.integers(6))])
            state = jax.tree.map(jnp.asarray, convert.from_minigrid(env, config))
            assert core.mission_text(np.asarray(state.mission)) == env.unwrapped.mission
            bot_rate = 0.85 if ep % 2 else 0.5
            for _ in range(200):
                advice = env.expert_action() if rng.random() < bot_rate else None
                a = advice or ACTION_NAMES[int(rng.integers(6))]
                ts = env.step(a)
                obs, state, r, te, tr = step(state, jnp.int32(ACTION_NAMES.index(a)))
                assert phrases.sentences_of(obs.slots) == ts.info["descriptions"], (level, ep)
                assert (abs(float(r) - ts.reward) < 1e-6, bool(te), bool(tr)) == (True, ts.terminated, ts.truncated)
                if ts.terminated or ts.truncated:
                    ends["success" if ts.terminated else "timeout"] += 1
                    break
    assert ends["success"] >= 30, ends


def test_converted_mission_text_and_first_sentences():
    for level, kw in LEVELS:
        env = make_babyai_text(level, seed=3, **kw)
        r = env.reset()
        state = convert.from_minigrid(env, CONFIG)
        assert core.mission_text(state.mission) == r.mission
        obs = core.observe(jax.tree.map(jnp.asarray, state))
        assert phrases.sentences_of(obs.slots) == r.info["descriptions"]


def test_conversion_refuses_what_it_cannot_hold():
    env = make_babyai_text("BabyAI-OpenDoor-v0", seed=0)
    env.reset()
    with pytest.raises(convert.ConversionError, match="larger StaticConfig"):
        convert.from_minigrid(env, CONFIG)
    with pytest.raises(convert.ConversionError, match="after reset"):
        convert.from_minigrid(object(), CONFIG)


# --------------------------------------------------------------------------------------------
# generation


def _python_stats(level: str, kind: str, n: int) -> dict[str, np.ndarray]:
    rows = []
    for s in range(n):
        env = make_babyai_text(level, seed=s, kind=kind)
        r = env.reset()
        base = env.unwrapped
        st = convert.from_minigrid(env, CONFIG)
        rows.append(_stats_row(st, r.mission))
        del base
    return {k: np.array([row[k] for row in rows]) for k in rows[0]}


def _stats_row(st, mission: str) -> dict[str, float]:
    types = np.asarray(st.obj_type)
    movable = (types >= phrases.KEY) & (types <= phrases.BOX)
    agent = np.asarray(st.agent_pos)
    cell = np.asarray(st.cell)
    ys, xs = np.nonzero(cell >= 0)
    dist = np.abs(xs - agent[0]) + np.abs(ys - agent[1])
    colors = np.asarray(st.obj_color)[movable]
    return {"objects": movable.sum(), "keys": (types == phrases.KEY).sum(), "balls": (types == phrases.BALL).sum(),
            "red": (colors == 0).sum(), "the": mission.count("the "), "words": len(mission.split()),
            "max_steps": int(st.max_steps), "dist": dist.mean(), "dir": int(st.agent_dir),
            "after": "after you" in mission, "x": int(agent[0])}


@pytest.mark.slow
@pytest.mark.parametrize("level,filt", [("BabyAI-MixedTrainLocal-v0", "train"), ("BabyAI-MixedTestLocal-v0", "test")])
def test_generated_levels_match_minigrid_in_distribution(level, filt):
    n = 200
    gen = jax.jit(lambda k, p: levels.generate_batch(k, p, n))  # params are traced: one compile
    for kind in MIXED_KINDS:
        py = _python_stats(level, kind, n)
        params = levels.make_params(kinds=(kind,), phrase_filter=filt)
        states, attempts = gen(jax.random.key(11), params)
        assert int(np.asarray(attempts).max()) <= levels.MAX_ATTEMPTS
        rows = []
        for i in range(n):
            st = jax.tree.map(lambda x: np.asarray(x)[i], states)
            mission = core.mission_text(st.mission)
            rows.append(_stats_row(st, mission))
            excluded = levels.py_levels.TRAIN_EXCLUDED if filt == "train" else levels.py_levels.TEST_EXCLUDED
            assert not any(p in mission for p in excluded), mission
        jx = {k: np.array([row[k] for row in rows]) for k in rows[0]}
        for key in py:
            a, b = py[key].astype(float), jx[key].astype(float)
            se = np.sqrt(a.var() / n + b.var() / n) + 1e-9
            # 4.5 standard errors: a wrong rule (count, placement, article, filter) moves these by far more
            assert abs(a.mean() - b.mean()) <= 4.5 * se + 1e-6, (kind, key, a.mean(), b.mean())


def test_params_are_traced_and_checked():
    f = jax.jit(lambda k, p: jenv.reset(k, p)[1].max_steps)
    p6 = levels.make_params(kinds=("goto",), room_size=6, num_dists=2)
    p8 = levels.make_params(kinds=("goto",), room_size=8, num_dists=8)
    assert int(f(jax.random.key(0), p6)) == 36 and int(f(jax.random.key(0), p8)) == 64
    assert f._cache_size() == 1  # a different room size or distractor count does not recompile
    assert int(f(jax.random.key(0), levels.make_params(kinds=("putnext",)))) == 128
    assert int(f(jax.random.key(0), levels.make_params(kinds=("open",)))) == 128
    with pytest.raises(UnknownNameError, match="goto"):
        levels.make_params(kinds=("gotoo",))
    with pytest.raises(UnknownNameError, match="train"):
        levels.make_params(phrase_filter="val")
    with pytest.raises(LevelParamError, match="StaticConfig"):
        levels.make_params(room_size=9)
    with pytest.raises(LevelParamError, match="room_size"):
        levels.make_params(room_size=4, num_dists=8)


def test_step_batch_auto_resets_and_counts_shortfall():
    params = levels.make_params(kinds=("goto",), room_size=5, num_dists=1, max_steps=3)
    # start from converted minigrid levels (no second compiled program for the first reset)
    starts = []
    for s in range(8):
        env = make_babyai_text("BabyAI-MixedTrainLocal-v0", seed=s, kind="goto", room_size=5, num_dists=1, max_steps=3)
        env.reset()
        starts.append(convert.from_minigrid(env, CONFIG))
    st = jax.tree.map(lambda *x: jnp.asarray(np.stack(x)), *starts)
    step = jax.jit(lambda k, s, a: jenv.step_batch(k, s, a, params, resets=4))
    first = st
    for t in range(3):
        obs, st, r, te, tr, info = step(jax.random.key(t + 1), st, jnp.zeros(8, jnp.int32))
        assert int(info["reset_shortfall"]) == (4 if t == 2 else 0)
    # three left turns never succeed: every episode is truncated at step 3 and restarted
    assert np.asarray(tr).all() and not np.asarray(te).any()
    assert (np.asarray(st.step_count) == 0).all()
    assert not np.array_equal(np.asarray(st.cell), np.asarray(first.cell))  # new layouts
    # 8 ended, 4 fresh layouts: env k and env k + 4 share one (the documented shortfall)
    cells = np.asarray(st.cell)
    assert all(np.array_equal(cells[k], cells[k + 4]) for k in range(4))
    assert len({cells[k].tobytes() for k in range(4)}) == 4
    assert np.array_equal(np.asarray(obs.slots), np.asarray(jax.vmap(core.observe)(st).slots))


def test_single_env_step_auto_resets():
    params = levels.make_params(kinds=("pickup",), room_size=5, num_dists=1, max_steps=2)
    obs, st = jax.jit(jenv.reset)(jax.random.key(3), params)
    step = jax.jit(jenv.step)
    obs1, st1, r, te, tr, info = step(jax.random.key(4), st, jnp.int32(0), params)
    assert int(st1.step_count) == 1 and not bool(info["done"])
    obs2, st2, r, te, tr, info = step(jax.random.key(5), st1, jnp.int32(0), params)
    # the step limit ends the episode: the returned state is the next episode's first
    assert bool(tr) and bool(info["done"]) and int(st2.step_count) == 0
    assert np.array_equal(np.asarray(obs2.slots), np.asarray(core.observe(st2).slots))
    assert core.mission_text(np.asarray(st2.mission)).startswith("pick up ")


def test_bad_input_gives_clear_errors(tmp_path):
    from londi_jax.utils.errors import LondiError

    for kinds, msg in [((), "non-empty tuple"), (None, "non-empty tuple"), (("goto", "goto"), "repeats a kind")]:
        with pytest.raises(LevelParamError, match=msg):
            levels.make_params(kinds=kinds)
    with pytest.raises(LevelParamError, match="below 2\\*\\*31"):
        levels.make_params(max_steps=2**40)
    with pytest.raises(LevelParamError, match="max_objects=200 exceeds"):
        core.StaticConfig(max_objects=200)
    params = levels.make_params(kinds=("open",))
    with pytest.raises(LevelParamError, match="checked for StaticConfig"):
        levels.generate(jax.random.key(0), params, core.StaticConfig(width=8))
    with pytest.raises(LevelParamError, match="int >= 1"):
        jenv.reset_batch(jax.random.key(0), params, 0)
    state = jax.tree.map(lambda x: np.stack([x, x]), convert.from_minigrid(_env_at_reset(), CONFIG))
    for action, msg in [(np.array([1.7, 0.2]), "integer ids"), (np.array([0, 6]), "in \\[0, 6\\)"),
                        (np.array([0, 1, 2]), "shape \\(2,\\)"), (3, "shape \\(2,\\)")]:
        with pytest.raises(LondiError, match=msg):
            jenv.step_batch(jax.random.key(0), state, action, params)
    with pytest.raises(LondiError, match="resets must be an int >= 1"):
        jenv.step_batch(jax.random.key(0), state, np.array([0, 1]), params, resets=0)
    env = make_babyai_text("BabyAI-GoToLocal-v0", seed=0)
    env.reset()
    for _ in range(64):
        env.step("turn left")
    with pytest.raises(convert.ConversionError, match="episode is over"):
        convert.from_minigrid(env, CONFIG)


def _env_at_reset():
    env = make_babyai_text("BabyAI-MixedTrainLocal-v0", seed=0, kind="goto")
    env.reset()
    return env


def test_sentence_piece_arithmetic_equals_the_table():
    """``describe_slots`` computes object sentence ids by arithmetic; the table built from
    ``text.py``'s sentences is the reference, for every (type, colour, state, cell)."""
    keys = np.arange(len(phrases.OBJ_SENTENCE))
    k = keys % phrases.N_CELLS
    s = (keys // phrases.N_CELLS) % phrases.N_STATES
    c = (keys // (phrases.N_CELLS * phrases.N_STATES)) % phrases.N_COLORS
    t = keys // (phrases.N_CELLS * phrases.N_STATES * phrases.N_COLORS)
    image = np.zeros((len(keys), 7, 7, 3), np.int32)
    image[np.arange(len(keys)), k // 7, k % 7] = np.stack([t, c, s], -1)
    slots = np.asarray(jax.jit(jax.vmap(core.describe_slots))(jnp.asarray(image)))[:, 4:]
    got = slots[np.arange(len(keys)), k]
    real = np.isin(t, [phrases.DOOR, phrases.KEY, phrases.BALL, phrases.BOX]) & (k != phrases.AGENT_CELL) \
        & ((s == 0) | (t == phrases.DOOR))
    assert real.sum() == 1_728 and (got[real] == phrases.OBJ_SENTENCE[real]).all() and (got[real] > 0).all()


def test_conversion_refuses_a_mission_longer_than_the_config():
    env = make_babyai_text("BabyAI-PutNextLocal-v0", seed=0)
    env.reset()
    # "put the green ball next to the green key": put, the, green, ball, next to, the, green, key
    with pytest.raises(convert.ConversionError, match="needs 8 pieces"):
        convert.from_minigrid(env, core.StaticConfig(mission_pieces=3))
    assert core.mission_text(convert.from_minigrid(env, core.StaticConfig(mission_pieces=40)).mission) == env.unwrapped.mission
