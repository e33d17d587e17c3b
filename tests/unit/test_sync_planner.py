"""The pure parts of sync: platform names, ignore rules, the three-way reconcile."""

from __future__ import annotations

import hashlib
import unicodedata

import pytest

from allset.sync.ignore import IgnoreRules
from allset.sync.names import LINUX, MACOS, WINDOWS, Unrepresentable, conflict_copy_name
from allset.sync.planner import Plan, plan
from allset.sync.scanner import LocalItem, Scan
from allset.sync.state import BaseEntry, RemoteEntry

STAMP, HOST = "2026-11-28 101500", "laptop"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def local(**files: str) -> Scan:
    """name=content; names with '__' stand for '/' (folders are implied)."""
    s = Scan(started_ns=10**19)
    for name, content in files.items():
        key = name.replace("__", "/")
        parts = key.split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            s.items[d] = LocalItem("dir", d)
        s.items[key] = LocalItem("file", key, len(content), 1, 1, sha(content))
    return s


def remote(**files: str) -> dict[str, RemoteEntry]:
    out: dict[str, RemoteEntry] = {}
    for name, content in files.items():
        key = name.replace("__", "/")
        parts = key.split("/")
        for i in range(1, len(parts)):
            out["/".join(parts[:i])] = RemoteEntry("dir")
        out[key] = RemoteEntry("file", len(content), sha(content), "v-" + sha(content)[:8])
    return out


def base(**files: str) -> dict[str, BaseEntry]:
    out: dict[str, BaseEntry] = {}
    for name, content in files.items():
        key = name.replace("__", "/")
        parts = key.split("/")
        for i in range(1, len(parts)):
            out["/".join(parts[:i])] = BaseEntry("dir")
        out[key] = BaseEntry(
            "file", len(content), 1, 1, 10**19, sha(content), "v-" + sha(content)[:8]
        )
    return out


def decide(b: dict[str, BaseEntry], s: Scan, r: dict[str, RemoteEntry], platform=LINUX) -> Plan:  # type: ignore[no-untyped-def]
    return plan(b, s, r, platform=platform, rules=IgnoreRules(), stamp=STAMP, host=HOST)


def test_unchanged_does_nothing() -> None:
    p = decide(base(a="1", d__b="2"), local(a="1", d__b="2"), remote(a="1", d__b="2"))
    assert p.empty and not p.agree


def test_local_edit_uploads_against_its_base_version() -> None:
    p = decide(base(a="1"), local(a="2"), remote(a="1"))
    assert [(u.key, u.base_version, u.if_absent) for u in p.uploads] == [
        ("a", "v-" + sha("1")[:8], False)
    ]
    assert not p.downloads and not p.remote_deletes


def test_new_local_file_is_created_only_if_absent() -> None:
    p = decide({}, local(n="x"), {})
    assert [(u.key, u.base_version, u.if_absent) for u in p.uploads] == [("n", None, True)]


def test_remote_edit_downloads_over_the_unchanged_local_file() -> None:
    p = decide(base(a="1"), local(a="1"), remote(a="2"))
    (d,) = p.downloads
    assert d.key == "a" and d.expect is not None and d.remote.sha256 == sha("2")


def test_deletes_go_to_the_side_that_did_not_delete() -> None:
    p = decide(base(a="1", b="2"), local(a="1"), remote(b="2"))
    assert [(d.key, d.version) for d in p.remote_deletes] == [("b", "v-" + sha("2")[:8])]
    assert [d.key for d in p.local_deletes] == ["a"]


def test_both_edited_differently_makes_a_conflict_copy() -> None:
    p = decide(base(r="1"), local(r="mine"), remote(r="theirs"))
    copy = conflict_copy_name("r", STAMP, HOST)
    assert copy == f"r (conflicted copy {STAMP} from {HOST})"
    assert [(x.side, x.key, x.to_key) for x in p.renames] == [("local", "r", copy)]
    assert [(u.key, u.if_absent) for u in p.uploads] == [(copy, True)]
    assert [(d.key, d.expect) for d in p.downloads] == [("r", None)]
    assert p.conflicts == ["r"]


def test_conflict_copy_keeps_the_extension() -> None:
    assert conflict_copy_name("q3.final.xlsx", STAMP, "pc") == (
        f"q3.final (conflicted copy {STAMP} from pc).xlsx"
    )


def test_same_edit_on_both_sides_is_an_agreement() -> None:
    p = decide(base(a="1"), local(a="2"), remote(a="2"))
    assert p.empty and [a.key for a in p.agree] == ["a"]


def test_edit_beats_delete_on_either_side() -> None:
    p = decide(base(a="1", b="1"), local(a="edited"), remote(b="edited"))
    assert [u.key for u in p.uploads] == ["a"] and p.uploads[0].if_absent
    assert [d.key for d in p.downloads] == ["b"]
    assert not p.remote_deletes and not p.local_deletes


def test_folder_deleted_locally_keeps_what_changed_on_the_server() -> None:
    b = base(d__x="1", d__y="2")
    p = decide(b, local(), remote(d__x="1", d__y="changed"))
    assert [d.key for d in p.downloads] == ["d/y"]
    assert [d.key for d in p.remote_deletes] == ["d/x"]
    assert [k for k, _ in p.local_mkdirs] == ["d"]


def test_folder_deleted_locally_unchanged_remotely_is_one_delete() -> None:
    b = base(d__x="1", d__e__y="2")
    p = decide(b, local(), remote(d__x="1", d__e__y="2"))
    assert [(d.key, d.kind, d.files) for d in p.remote_deletes] == [("d", "dir", 2)]


def test_folder_deleted_remotely_keeps_local_additions() -> None:
    b = base(d__x="1")
    p = decide(b, local(d__x="1", d__new="n"), {})
    assert [u.key for u in p.uploads] == ["d/new"]
    assert [d.key for d in p.local_deletes] == ["d/x"]
    assert "d" in p.remote_mkdirs


def test_mass_delete_counts_files_under_deleted_folders() -> None:
    files = {f"d__f{i}": str(i) for i in range(30)}
    p = decide(base(**files), local(), remote(**files))
    assert p.files_deleted == 30


def test_unreadable_folder_is_never_taken_as_deleted() -> None:
    s = local()
    s.frozen.add("d")
    p = decide(base(d__x="1"), s, remote(d__x="1"))
    assert p.empty and not p.remote_deletes


@pytest.mark.parametrize("platform", [LINUX, MACOS, WINDOWS])
def test_nfd_local_name_is_the_nfc_remote_file(platform) -> None:  # type: ignore[no-untyped-def]
    nfc = unicodedata.normalize("NFC", "café.txt")
    assert platform.to_remote(unicodedata.normalize("NFD", "café.txt")) == nfc


def test_case_insensitive_platform_keeps_both_remote_names() -> None:
    r = remote(**{"Report.txt": "A", "report.txt": "B"})
    p = decide({}, local(), r, platform=MACOS)
    names = sorted(d.local for d in p.downloads)
    assert names == ["Report.txt", "report (case conflict).txt"]
    assert "report.txt" in p.notices
    # on Linux both names can live side by side
    assert sorted(d.local for d in decide({}, local(), r).downloads) == [
        "Report.txt",
        "report.txt",
    ]


def test_case_insensitive_download_never_lands_on_a_local_file() -> None:
    p = decide({}, local(**{"README.md": "mine"}), remote(**{"readme.md": "theirs"}), MACOS)
    assert [d.local for d in p.downloads] == ["readme (case conflict).md"]
    assert [u.key for u in p.uploads] == ["README.md"]


@pytest.mark.parametrize(
    "name",
    ["CON", "aux.txt", "a:b", "trailing.", "trailing ", 'q"uote', "pipe|star*", "com1.log", "ok"],
)
def test_windows_escaping_is_reversible_and_legal(name: str) -> None:
    spelled = WINDOWS.to_local(name)
    assert WINDOWS.to_remote(spelled) == name
    assert not any(c in spelled for c in '<>:"\\|?*')
    assert not spelled.endswith((".", " "))
    assert spelled.split(".")[0].upper() not in {"CON", "AUX", "COM1"}
    assert (spelled == name) == (name == "ok")


def test_windows_refuses_names_it_could_not_give_back() -> None:
    with pytest.raises(Unrepresentable):
        WINDOWS.to_local("odd\uf03a")
    p = decide({}, local(), remote(**{"odd\uf03a": "x"}), WINDOWS)
    assert not p.downloads and "odd\uf03a" in p.notices


def test_builtin_and_user_ignores() -> None:
    rules = IgnoreRules(["*.log", "build/", "!keep.log"])
    assert rules.ignored("~$report.docx") and rules.ignored("a/.DS_Store")
    assert rules.ignored("x.allset-part") and rules.ignored("Thumbs.db")
    assert rules.ignored("a/b.log") and not rules.ignored("keep.log")
    assert rules.ignored("build", is_dir=True) and not rules.ignored("report.docx")


def test_ignored_remote_files_are_not_downloaded_nor_deleted() -> None:
    rules = IgnoreRules(["*.log"])
    b = base(**{"x.log": "1"})
    p = plan(
        b,
        local(),
        remote(**{"x.log": "1", ".DS_Store": "j"}),
        platform=LINUX,
        rules=rules,
        stamp=STAMP,
        host=HOST,
    )
    assert p.empty
