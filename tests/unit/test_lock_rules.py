"""The pure lock rules of ``files/locks.py``, which the WebDAV adapter and every other
protocol share: they must agree with WsgiDAV's own helpers (the adapter used those
before), read lock tokens out of an ``If`` header, and match a lock to a path the way
WsgiDAV does, with the one documented difference for the API (``below_passes``)."""

from __future__ import annotations

import unicodedata
from typing import Any
from urllib.parse import quote

import pytest
from wsgidav.lock_man.lock_manager import normalize_lock_root
from wsgidav.util import get_uri_parent, is_child_uri

from allset.core.paths import parse_path
from allset.files.locks import (
    NO_TOKENS,
    covers,
    is_child_url,
    lineage,
    lock_conflicts,
    normalize_root,
    parent_url,
    proof_from_if,
    root_of,
    spellings,
    write_conflicts,
)

URLS = ["/", "/a", "/a/", "/a/b", "/a/b/", "/a/bc", "//a//b//", "/d%C3%A9j%C3%A0/x%20y", "/a/b/c/d"]


@pytest.mark.parametrize("url", URLS)
def test_the_url_helpers_are_wsgidavs(url: str) -> None:
    assert normalize_root(url) == normalize_lock_root(url)
    assert parent_url(url) == get_uri_parent(url)
    for other in URLS:
        assert is_child_url(url, other) == bool(is_child_uri(url, other)), (url, other)


def test_lineage_goes_up_to_the_root() -> None:
    assert lineage("/a/b/c") == ["/a/b/c", "/a/b", "/a", "/"]
    assert lineage("/") == ["/"]


def test_root_of_is_what_the_dav_provider_locks() -> None:
    """WsgiDAV's ``get_ref_url``: the path quoted with ``quote`` (see provider.py)."""
    rp = parse_path("/Projets été/plan v2 (final)#1.docx")
    assert root_of(rp) == quote("/Projets été/plan v2 (final)#1.docx")
    assert root_of(parse_path("/")) == "/"


def test_spellings_add_the_nfd_form_only_when_it_differs() -> None:
    assert spellings(parse_path("/plain/name.txt")) == ["/plain/name.txt"]
    nfc, nfd = spellings(parse_path("/été.txt"))
    assert nfc == quote("/été.txt")
    assert nfd == quote(unicodedata.normalize("NFD", "/été.txt"))


@pytest.mark.parametrize(
    ("header", "tokens"),
    [
        (None, set()),
        ("", set()),
        ('(["etag"])', set()),
        ("(<opaquelocktoken:1234-abcd>)", {"opaquelocktoken:1234-abcd"}),
        (
            '<https://h/dav/doc.txt> (<opaquelocktoken:a>) (Not <opaquelocktoken:b> ["e"])',
            {"opaquelocktoken:a", "opaquelocktoken:b"},
        ),
        ("(< opaquelocktoken:spaced >)", {"opaquelocktoken:spaced"}),
        ("(<urn:uuid:not-ours>)", set()),
    ],
)
def test_tokens_of_an_if_header(header: str | None, tokens: set[str]) -> None:
    proof = proof_from_if(header)
    assert set(proof.tokens) == tokens and not proof.checked
    if not tokens:
        assert proof == NO_TOKENS


def lk(
    root: str, depth: str = "0", token: str = "t1", who: str = "a@x", scope: str = "exclusive"
) -> dict[str, Any]:
    return {"root": root, "depth": depth, "token": token, "principal": who, "scope": scope}


def test_covers_the_path_and_depth_infinity_parents_only() -> None:
    assert covers(lk("/a/b"), "/a/b")
    assert covers(lk("/a", "infinity"), "/a/b/c")
    assert not covers(lk("/a", "0"), "/a/b")  # a depth-0 folder lock: its membership
    assert not covers(lk("/a/b"), "/a/bc")
    assert not covers(lk("/a/b/c"), "/a/b")


def test_write_conflicts_holder_token_and_below() -> None:
    on_doc = lk("/a/doc")
    below = lk("/a/sub/doc", token="t2")
    assert write_conflicts([on_doc], "/a/doc", "0", [], "a@x") == ["/a/doc"]
    assert write_conflicts([on_doc], "/a/doc", "0", ["t1"], "a@x") == []
    assert write_conflicts([on_doc], "/a/doc", "0", ["t1"], "b@x") == ["/a/doc"]  # not theirs
    # A folder operation: WsgiDAV refuses a lock below whatever the tokens ...
    assert write_conflicts([below], "/a", "infinity", ["t2"], "a@x") == ["/a/sub/doc"]
    # ... the API lets its holder pass it with the token, and nobody else.
    assert write_conflicts([below], "/a", "infinity", ["t2"], "a@x", below_passes=True) == []
    assert write_conflicts([below], "/a", "infinity", ["t2"], "b@x", below_passes=True) == [
        "/a/sub/doc"
    ]
    assert write_conflicts([below], "/a", "0", [], "b@x") == []  # depth 0: not below


def test_lock_conflicts_shared_and_exclusive() -> None:
    shared = lk("/a", scope="shared")
    assert lock_conflicts([shared], "/a", "shared", "0") == []
    assert lock_conflicts([shared], "/a", "exclusive", "0") == ["/a"]
    assert lock_conflicts([lk("/a/b")], "/a", "exclusive", "infinity") == ["/a/b"]
