"""Ids and secrets: unguessable, URL-safe, and never taken for a command-line option."""

from __future__ import annotations

from allset.core.ids import is_id, new_id, new_secret


def test_ids_and_secrets_never_start_with_a_dash() -> None:
    """One token in 64 used to start with "-", and `allset-server link history -2J_5dQ…`
    failed with "No such option '-2'" (a fresh-clone run, 2026-11-29). 4,000 draws of
    each: the old generator would have made ~125 such, the chance of none below 10^-50."""
    ids = [new_id() for _ in range(4000)]
    tokens = [new_secret(24) for _ in range(4000)]
    assert not [t for t in ids + tokens if t.startswith("-")]
    assert all(len(i) == 22 and is_id(i) for i in ids)
    assert all(len(t) == 32 for t in tokens)
    assert len(set(ids)) == len(ids) and len(set(tokens)) == len(tokens)
    # still drawn from the whole alphabet after the first character, "-" included
    assert any("-" in t for t in tokens) and any("_" in t for t in tokens)
