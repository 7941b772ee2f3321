"""The finite phrase set of BabyAI-Text as one piece vocabulary, for text built inside ``jit``.

Every string the JAX env and GLAM's prompt can contain is a concatenation of *pieces* from one
fixed list (``PIECES``): the observation sentences (``envs.babyai_text.text``'s tables, each written
as ``" {sentence},"``), the words of the missions, the prompt's headers and the six actions. A
state holds piece ids (int32), never strings; a tokenizer turns the list into a token table once
(``prompt_ids.PromptTables``) and prompts become gathers from that table.

Every piece but the first header starts with a space, and pieces are cut only before that space,
so a piece boundary is a word boundary: that is what lets most tokenizers encode pieces one by one
and concatenate (``prompt_ids`` checks it against the tokenizer's own encoding).

Piece 0 is the empty string: an unused slot.
"""

from __future__ import annotations

import numpy as np
from minigrid.core.constants import COLOR_TO_IDX, IDX_TO_COLOR, OBJECT_TO_IDX

from londi_jax.envs.babyai_text import text as _text
from londi_jax.envs.babyai_text.prompt import ACTIONS, HISTORY_OBS

VIEW = _text.VIEW
N_CELLS = VIEW * VIEW
AGENT_CELL = _text._AGENT_CELL
N_SLOTS = 1 + 3 + N_CELLS  # carry, three wall rays, every view cell (the agent's own stays empty)
N_TYPES, N_COLORS, N_STATES = _text._N_TYPES, _text._N_COLORS, _text._N_STATES

# minigrid's indices (identical in the GLAM fork): see ../shared/reference/babyai-text.md, section 2
UNSEEN, EMPTY, WALL, DOOR, KEY, BALL, BOX = (OBJECT_TO_IDX[k] for k in
                                             ("unseen", "empty", "wall", "door", "key", "ball", "box"))
GREY = COLOR_TO_IDX["grey"]
COLORS = tuple(IDX_TO_COLOR[i] for i in range(len(IDX_TO_COLOR)))  # by minigrid colour index
OPEN, CLOSED, LOCKED = 0, 1, 2  # door states

HEADER = "Possible action of the agent:" + ",".join(f" {a}" for a in ACTIONS)
GOAL = " \n Goal of the agent:"
TRAILING_SPACE = " "  # the prompt ends with "Action {k}: "
OBS_HEADERS = tuple(f" \n Observation {k}:" for k in range(HISTORY_OBS))
ACT_HEADERS = tuple(f" \n Action {k}:" for k in range(HISTORY_OBS))
ACTION_PIECES = tuple(f" {a}" for a in ACTIONS)

# Mission words (minigrid's verifier surfaces: "go to", "pick up", "open", "put X next to Y",
# "A, then B", "A after you B", "the"/"a", colours, types and location phrases).
VERBS = {"goto": " go to", "pickup": " pick up", "open": " open", "putnext": " put"}
LINKS = {"next to": " next to", "then": " then", "after you": " after you"}
ARTICLES = (" a", " the")  # index = exactly one matching object
TYPE_WORDS = {DOOR: " door", KEY: " key", BALL: " ball", BOX: " box"}
COLOR_WORDS = tuple(f" {c}" for c in COLORS)  # by colour index
LOC_NAMES = ("left", "right", "front", "behind")  # minigrid.envs.babyai.core.verifier.LOC_NAMES
LOC_WORDS = (" on your left", " on your right", " in front of you", " behind you")


def _piece_list() -> tuple[list[str], dict[str, int]]:
    pieces: list[str] = [""]
    index: dict[str, int] = {"": 0}

    def add(p: str) -> int:
        if p not in index:
            index[p] = len(pieces)
            pieces.append(p)
        return index[p]

    for p in (HEADER, GOAL, TRAILING_SPACE, *OBS_HEADERS, *ACT_HEADERS, *ACTION_PIECES, *VERBS.values(),
              *LINKS.values(), *ARTICLES, *TYPE_WORDS.values(), *COLOR_WORDS, *LOC_WORDS):
        add(p)
    # "A, then B": the comma is glued to A's last word (a type or location word), so that every
    # piece boundary stays before a space
    for p in (*TYPE_WORDS.values(), *LOC_WORDS):
        add(p + ",")
    start = len(pieces)
    for s in _text.all_sentences():
        add(f" {s},")
    return pieces, index, start


PIECES, PIECE_INDEX, SENTENCE_START = _piece_list()
"""Every piece (index 0: the empty string); the observation sentences from ``SENTENCE_START`` on."""


def piece(text: str) -> int:
    return PIECE_INDEX[text]


COMMA_VARIANT = np.arange(len(PIECES), dtype=np.int32)
"""``COMMA_VARIANT[p]``: the piece of ``PIECES[p] + ","`` for mission words that can end clause A."""
for _w in (*TYPE_WORDS.values(), *LOC_WORDS):
    COMMA_VARIANT[PIECE_INDEX[_w]] = PIECE_INDEX[_w + ","]


def _sentence_lookup() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Piece ids of the observation sentences, keyed as ``text.py`` keys them.

    obj[((t * 6 + c) * 3 + s) * 49 + k]: an object of type t, colour c, state s in view cell k
    (0 where no sentence exists); carry[t * 6 + c]; wall[ray, d] for rays forward/left/right."""
    obj = np.zeros(len(_text._OBJ_SENT), np.int32)
    for key, sent in enumerate(_text._OBJ_SENT):
        t = key // (N_COLORS * N_STATES * N_CELLS)
        if t in TYPE_WORDS:
            obj[key] = PIECE_INDEX.get(f" {sent},", 0)
    carry = np.zeros(len(_text._CARRY_SENT), np.int32)
    for key, sent in enumerate(_text._CARRY_SENT):
        if key // N_COLORS in (KEY, BALL, BOX):
            carry[key] = PIECE_INDEX[f" {sent},"]
    wall = np.zeros((3, VIEW), np.int32)
    for r, table in enumerate((_text._WALL_FWD, _text._WALL_LEFT, _text._WALL_RIGHT)):
        for d, sent in enumerate(table):
            if sent:
                wall[r, d] = PIECE_INDEX[f" {sent},"]
    return obj, carry, wall


OBJ_SENTENCE, CARRY_SENTENCE, WALL_SENTENCE = _sentence_lookup()

# The object sentences are added in ``text.all_sentences``' order (type door, key, ball, box; colour;
# door state; view cell, the agent's skipped), so their piece ids are arithmetic in (t, c, s, k):
# ``SENTENCE_START + OBJ_TYPE_OFFSET[t] + (c * OBJ_TYPE_STATES[t] + s) * 48 + k - (k > AGENT_CELL)``
# (``core.describe_slots`` computes them so, with no gather from the 9,702-entry table; a test checks
# the two agree on every key).
OBJ_TYPE_OFFSET = np.zeros(N_TYPES, np.int32)
OBJ_TYPE_STATES = np.ones(N_TYPES, np.int32)
_off = 0
for _t in (DOOR, KEY, BALL, BOX):
    OBJ_TYPE_OFFSET[_t] = _off
    OBJ_TYPE_STATES[_t] = N_STATES if _t == DOOR else 1
    _off += N_COLORS * int(OBJ_TYPE_STATES[_t]) * (N_CELLS - 1)
RAY_CELLS = np.array([list(ray) + [ray[-1]] * (VIEW - 1 - len(ray)) for _, ray in _text._RAYS], np.int32)
"""Flat view cells (``i * 7 + j``) of the forward/left/right rays, nearest first (left/right padded)."""
RAY_LENGTHS = np.array([len(ray) for _, ray in _text._RAYS], np.int32)


def color_name(c: int) -> str:
    return IDX_TO_COLOR[int(c)]


def render_pieces(ids) -> str:
    """Host-side text of a sequence of piece ids (0 skipped)."""
    return "".join(PIECES[int(i)] for i in np.asarray(ids).reshape(-1) if int(i))


def sentences_of(slots) -> list[str]:
    """The observation's sentence list (``info["descriptions"]``) from its piece slots."""
    return [PIECES[int(i)][1:-1] for i in np.asarray(slots).reshape(-1) if int(i)]
