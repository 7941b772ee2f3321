"""Matching free text to a list of valid action strings."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

__all__ = ["nearest_action"]


def nearest_action(text: str, candidates: Sequence[str]) -> tuple[int, float]:
    """Index of the candidate closest to a generated ``text`` and its similarity in [0, 1]
    (``difflib.SequenceMatcher``'s ratio over the stripped, lower-cased strings; an exact match
    is 1.0, ties go to the earlier candidate). SwiftSage maps its generated actions to the valid
    ones by a sentence-embedding similarity; a character-level ratio needs no second model."""
    want = text.strip().lower()
    best, best_r = 0, -1.0
    matcher = difflib.SequenceMatcher(autojunk=False)
    matcher.set_seq2(want)  # the fixed side: difflib caches its index
    for k, c in enumerate(candidates):
        cand = c.strip().lower()
        if cand == want:
            return k, 1.0
        matcher.set_seq1(cand)
        if matcher.real_quick_ratio() <= best_r or matcher.quick_ratio() <= best_r:
            continue  # upper bounds: cannot beat the best so far
        r = matcher.ratio()
        if r > best_r:
            best, best_r = k, r
    return best, max(best_r, 0.0)
