"""Sync as a state machine (hypothesis): three devices and one real server, random
creates, edits, deletes, renames, folder deletions, edits made on the server directly,
and concurrent edits of the same file, with syncs in between.

At the end every device syncs until nothing is left to do, and then:
- all devices and the server hold exactly the same files;
- every content a device held when it synced, or that was written on the server, still
  exists on the server: as a file, a conflict copy, an earlier version or in the trash
  (its SHA-256 is among the Client's versions) — nothing was lost;
- no partial download is left anywhere.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from _util import client, db_query, make_account
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test
from test_sync import Device, server_files

from allset.sync.engine import SyncRefused
from serverproc import ServerProcess

pytestmark = pytest.mark.system

FILES = ["a.txt", "b.txt", "d/a.txt", "d/c.bin", "d/e/f.txt"]
FOLDERS = ["d", "d/e"]
DEVICES = 3
_examples = itertools.count()
_writes = itertools.count()


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("model") / "srv")
    proc.start()
    yield proc
    proc.stop()


def test_random_histories_converge_and_lose_nothing(
    model_server: ServerProcess, tmp_path: Path
) -> None:
    tenant_id, email, password = make_account(model_server, "model", "me@model.example")
    with client(model_server, (email, password), timeout=60) as http:

        class Sync(RuleBasedStateMachine):
            @initialize()
            def setup(self) -> None:
                n = next(_examples)
                self.remote = f"/m{n}"
                assert http.post("/api/v1/mkdir", json={"path": self.remote}).status_code == 201
                self.devices = [
                    Device(http, tmp_path / f"ex{n}" / f"dev{i}", self.remote, host=f"pc{i}")
                    for i in range(DEVICES)
                ]
                for d in self.devices:
                    d.root.mkdir(parents=True)
                self.must_survive: set[str] = set()

            def content(self, size: int) -> bytes:
                tag = f"write {next(_writes)};".encode()
                return (tag * (size // len(tag) + 1))[: max(size, len(tag))]

            @rule(
                dev=st.integers(0, DEVICES - 1),
                path=st.sampled_from(FILES),
                size=st.sampled_from([0, 10, 3000, 300_000]),
            )
            def write(self, dev: int, path: str, size: int) -> None:
                self.devices[dev].write(path, self.content(size))

            @rule(dev=st.integers(0, DEVICES - 1), path=st.sampled_from(FILES))
            def delete(self, dev: int, path: str) -> None:
                (self.devices[dev].root / path).unlink(missing_ok=True)

            @rule(
                dev=st.integers(0, DEVICES - 1),
                src=st.sampled_from(FILES),
                dst=st.sampled_from(FILES),
            )
            def rename(self, dev: int, src: str, dst: str) -> None:
                root = self.devices[dev].root
                if src != dst and (root / src).is_file() and not (root / dst).exists():
                    (root / dst).parent.mkdir(parents=True, exist_ok=True)
                    (root / src).rename(root / dst)

            @rule(dev=st.integers(0, DEVICES - 1), folder=st.sampled_from(FOLDERS))
            def delete_folder(self, dev: int, folder: str) -> None:
                shutil.rmtree(self.devices[dev].root / folder, ignore_errors=True)

            @rule(path=st.sampled_from(FILES), size=st.sampled_from([5, 5000]))
            def edit_on_server(self, path: str, size: int) -> None:
                body = self.content(size)
                folder = (self.remote + "/" + path).rsplit("/", 1)[0]
                http.post("/api/v1/mkdir", json={"path": folder, "parents": True})
                r = http.put(f"/api/v1/files{self.remote}/{path}", content=body)
                if r.status_code in (200, 201):
                    self.must_survive.add(hashlib.sha256(body).hexdigest())

            @rule(dev=st.integers(0, DEVICES - 1))
            def sync(self, dev: int) -> None:
                d = self.devices[dev]
                self.must_survive.update(hashlib.sha256(b).hexdigest() for b in d.files().values())
                d.sync()

            @rule(
                a=st.integers(0, DEVICES - 1),
                b=st.integers(0, DEVICES - 1),
                path=st.sampled_from(FILES),
            )
            def concurrent_edit(self, a: int, b: int, path: str) -> None:
                """Both edit the same file before either syncs."""
                if a == b:
                    return
                for i in (a, b):
                    self.write(i, path, 100)
                self.sync(a)
                self.sync(b)

            def teardown(self) -> None:
                if not hasattr(self, "devices"):
                    return
                for _ in range(5):
                    quiet = True
                    for d in self.devices:
                        try:
                            res = d.sync()
                        except SyncRefused:
                            res = d.sync(allow_mass_delete=True)
                        quiet = quiet and res.plan.empty and not res.outcome.errors
                    if quiet:
                        break
                else:
                    pytest.fail("the devices did not settle in five rounds")
                on_server = server_files(http, self.remote)
                for d in self.devices:
                    assert d.files() == on_server, f"{d.host} differs from the server"
                    assert not list(d.root.rglob("*.allset-part"))
                stored = {
                    r[0]
                    for r in db_query(
                        model_server,
                        "SELECT sha256 FROM versions WHERE tenant_id = :t",
                        t=tenant_id,
                    )
                }
                lost = self.must_survive - stored
                assert not lost, f"{len(lost)} contents are nowhere on the server"

        run_state_machine_as_test(
            Sync,
            settings=settings(
                max_examples=12,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=False,
            ),
        )
