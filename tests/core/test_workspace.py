import json
import sqlite3

import pytest

from workbench.core.workspace import Workspace


def _writer(fmt="torch"):
    def write(folder):
        (folder / "model.onnx").write_bytes(b"onnx")
        return fmt
    return write


def test_variants_lineage_and_reopen(tmp_path):
    ws = Workspace(tmp_path / "ws")
    a = ws.add_variant(_writer(), parent=None, job="load", params={}, source="zoo:x", dataset="digits",
                       metrics={"accuracy": 0.5})
    b = ws.add_variant(_writer(), parent=a.id, job="train", params={"epochs": 2}, source="zoo:x",
                       dataset="digits", metrics={"accuracy": 0.9}, marks=["m"], result={"k": 1})
    assert (a.id, b.id) == ("v0001", "v0002")
    assert [v.id for v in ws.lineage(b.id)] == ["v0002", "v0001"]
    meta = json.loads((b.path / "meta.json").read_text())
    assert meta["parent"] == "v0001" and meta["marks"] == ["m"]
    ws.close()
    again = Workspace(tmp_path / "ws")
    assert [v.id for v in again.variants()] == ["v0001", "v0002"]
    assert again.variant("v0002").metrics == {"accuracy": 0.9}
    c = again.add_variant(_writer(), parent=b.id, job="prune", params={}, source="", dataset="", metrics={})
    assert c.id == "v0003"
    assert again.integrity_ok()


def test_a_failing_writer_leaves_no_half_variant(tmp_path):
    ws = Workspace(tmp_path)

    def broken(folder):
        (folder / "model.onnx").write_bytes(b"partial")
        raise RuntimeError("killed half way")

    with pytest.raises(RuntimeError):
        ws.add_variant(broken, parent=None, job="x", params={}, source="", dataset="", metrics={})
    assert ws.variants() == []
    assert [p.name for p in ws.variants_dir.iterdir()] == []


def test_recovery_removes_temp_folders_and_adopts_complete_ones(tmp_path):
    ws = Workspace(tmp_path)
    v = ws.add_variant(_writer(), parent=None, job="load", params={}, source="s", dataset="d", metrics={})
    ws.close()
    # simulate a crash between the rename and the commit, and a crash while writing
    db = sqlite3.connect(tmp_path / "workspace.sqlite")
    db.execute("DELETE FROM variants")
    db.commit()
    db.close()
    (tmp_path / "variants" / ".tmp-v0002-abc").mkdir()
    (tmp_path / "variants" / "v0009").mkdir()  # no meta.json: not a variant
    ws = Workspace(tmp_path)
    assert [x.id for x in ws.variants()] == [v.id]
    names = sorted(p.name for p in ws.variants_dir.iterdir())
    assert "v0001" in names and ".tmp-v0002-abc" not in names and "v0009" not in names


def test_runs_and_metric_history(tmp_path):
    ws = Workspace(tmp_path)
    run = ws.start_run("train", {"epochs": 1}, None, "cpu")
    ws.add_metrics(run, [(1, {"loss": 2.0}), (2, {"loss": 1.0, "val_accuracy": 0.5})])
    ws.finish_run(run, "ok", "v0002", None, 1.5, {"note": "x"})
    assert ws.metric_history(run) == {"loss": [(1, 2.0), (2, 1.0)], "val_accuracy": [(2, 0.5)]}
    assert ws.runs()[0]["status"] == "ok"


def test_a_corrupt_database_is_an_input_error(tmp_path):
    from workbench.core.errors import InputError

    (tmp_path / "workspace.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(InputError):
        Workspace(tmp_path)


def test_recovery_keeps_a_live_writers_folder_and_removes_a_dead_or_zombie_ones(tmp_path):
    """A worker still writing keeps its folder; one that died (even unreaped, a zombie) loses it on the next open."""
    import subprocess
    import sys
    import time

    ws = Workspace(tmp_path)
    ws.close()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 30
        while open(f"/proc/{zombie.pid}/stat").read().rpartition(")")[2].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        for pid in (live.pid, zombie.pid):
            (tmp_path / "variants" / f".tmp-v0001-{pid}-abcd1234").mkdir()
        Workspace(tmp_path).close()
        left = sorted(p.name for p in (tmp_path / "variants").iterdir())
        assert left == [f".tmp-v0001-{live.pid}-abcd1234"]
    finally:
        live.kill()
        live.wait()
        zombie.wait()
