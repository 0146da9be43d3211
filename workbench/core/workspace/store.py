"""The workspace: an SQLite index (variants, lineage, job runs, metric history) beside the variant folders.

A variant folder is written under a temporary name and renamed into place before its row is committed, so a
job that is cancelled, fails or is killed leaves no half variant. On opening, leftover temporary folders are
removed and complete folders whose row never got committed are adopted from their ``meta.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workbench.core.errors import InputError
from workbench.core.workspace.atomic import atomic_write_text

SCHEMA = """
CREATE TABLE IF NOT EXISTS variants(
    id TEXT PRIMARY KEY, parent TEXT, job TEXT, params TEXT, created REAL, format TEXT,
    source TEXT, dataset TEXT, metrics TEXT, marks TEXT, result TEXT);
CREATE TABLE IF NOT EXISTS runs(
    id INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT, params TEXT, input TEXT, output TEXT, status TEXT,
    error TEXT, started REAL, seconds REAL, device TEXT, result TEXT);
CREATE TABLE IF NOT EXISTS metrics(run_id INTEGER, step INTEGER, name TEXT, value REAL);
CREATE INDEX IF NOT EXISTS metrics_run ON metrics(run_id);
CREATE TABLE IF NOT EXISTS info(key TEXT PRIMARY KEY, value TEXT);
"""
META_FILES = ("meta.json", "model.onnx")


@dataclass
class Variant:
    """One model in the workspace; ``format`` is "torch" (safetensors/pt2 + ONNX) or "onnx" (ONNX only)."""

    id: str
    parent: str | None
    job: str
    params: dict[str, Any]
    created: float
    format: str
    source: str
    dataset: str
    metrics: dict[str, Any] = field(default_factory=dict)
    marks: list[str] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    path: Path = Path()

    def meta(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("path")
        return data


class Workspace:
    """Opens (or creates) a workspace folder. Thread-safe: one connection guarded by a lock."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"{self.root}: exists and is not a folder")
        self.variants_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._reserved: set[str] = set()
        try:
            self._db = sqlite3.connect(self.root / "workspace.sqlite", check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)
            self._db.commit()
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{self.root / 'workspace.sqlite'}: not a usable workspace database ({exc})") from None
        self._recover()

    @property
    def variants_dir(self) -> Path:
        return self.root / "variants"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._db
                self._db.commit()
            except BaseException:
                self._db.rollback()
                raise

    def _recover(self) -> None:
        for tmp in self.variants_dir.glob(".tmp-*"):
            if not _writer_alive(tmp.name):
                shutil.rmtree(tmp, ignore_errors=True)
        known = {v.id for v in self.variants()}
        for folder in sorted(self.variants_dir.iterdir()):
            if folder.name.startswith(".") or folder.name in known or not folder.is_dir():
                continue
            try:
                meta = json.loads((folder / "meta.json").read_text())
                if all((folder / f).exists() for f in META_FILES) and meta.get("id") == folder.name:
                    self._insert(Variant(**{**meta, "path": folder}))
                    continue
            except (OSError, ValueError, TypeError):
                pass
            shutil.move(str(folder), str(self.variants_dir / f".broken-{folder.name}-{uuid.uuid4().hex[:6]}"))

    def integrity_ok(self) -> bool:
        with self._lock:
            return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # variants -------------------------------------------------------------------------------------------
    def variants(self) -> list[Variant]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM variants ORDER BY id").fetchall()
        return [self._row_to_variant(r) for r in rows]

    def variant(self, variant_id: str) -> Variant:
        with self._lock:
            row = self._db.execute("SELECT * FROM variants WHERE id=?", (variant_id,)).fetchone()
        if row is None:
            raise InputError(f"no variant {variant_id!r} in {self.root}")
        return self._row_to_variant(row)

    def _row_to_variant(self, row: tuple) -> Variant:
        vid, parent, job, params, created, fmt, source, dataset, metrics, marks, result = row
        return Variant(vid, parent, job, json.loads(params or "{}"), created, fmt, source or "", dataset or "",
                       json.loads(metrics or "{}"), json.loads(marks or "[]"), json.loads(result or "{}"),
                       self.variants_dir / vid)

    def _next_id(self) -> str:
        """The next free id; the caller holds ``_id_lock``. Ids being written by any process (their temporary
        folders) count as used, so two worker processes never pick the same one."""
        with self._lock:
            used = {v.id for v in self.variants()} | self._reserved
            for p in self.variants_dir.iterdir():
                name = p.name[len(".tmp-"):] if p.name.startswith(".tmp-") else p.name
                if not name.startswith("."):
                    used.add(name.split("-")[0])
            n = 1 + max((int(u[1:]) for u in used if u[1:].isdigit()), default=0)
            vid = f"v{n:04d}"
            self._reserved.add(vid)
            return vid

    @contextmanager
    def _id_lock(self) -> Iterator[None]:
        """Across processes: choosing an id and creating its temporary folder happen under one file lock."""
        try:
            import fcntl
        except ImportError:  # Windows: one process writes at a time there (one worker per device)
            yield
            return
        with open(self.root / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def remove_leftovers_of(self, pid: int) -> None:
        """What a dead process was writing: its temporary variant folders and its jobs' scratch folders."""
        for tmp in self.variants_dir.glob(f".tmp-*-{pid}-*"):
            shutil.rmtree(tmp, ignore_errors=True)
        for tmp in (self.root / ".scratch").glob(f"run*-{pid}-*"):
            shutil.rmtree(tmp, ignore_errors=True)

    def _insert(self, v: Variant) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO variants VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (v.id, v.parent, v.job, json.dumps(v.params, default=str), v.created, v.format, v.source,
                 v.dataset, json.dumps(v.metrics), json.dumps(v.marks), json.dumps(v.result, default=str)),
            )

    def add_variant(self, write_files: Callable[[Path], str], *, parent: str | None, job: str,
                    params: dict[str, Any], source: str, dataset: str, metrics: dict[str, Any],
                    marks: list[str] | None = None, result: dict[str, Any] | None = None) -> Variant:
        """Create a variant atomically. ``write_files(folder)`` writes the model files and returns the format."""
        with self._id_lock():
            vid = self._next_id()
            tmp = self.variants_dir / f".tmp-{vid}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
        try:
            fmt = write_files(tmp)
            variant = Variant(vid, parent, job, params, time.time(), fmt, source, dataset, metrics,
                              list(marks or []), dict(result or {}), self.variants_dir / vid)
            atomic_write_text(tmp / "meta.json", json.dumps(variant.meta(), indent=1, default=str))
            missing = [f for f in META_FILES if not (tmp / f).exists()]
            if missing:
                raise RuntimeError(f"variant files missing: {missing}")
            tmp.rename(variant.path)
            self._insert(variant)
            return variant
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            with self._lock:
                self._reserved.discard(vid)

    def update_metrics(self, variant_id: str, metrics: dict[str, Any]) -> None:
        v = self.variant(variant_id)
        v.metrics.update(metrics)
        atomic_write_text(v.path / "meta.json", json.dumps(v.meta(), indent=1, default=str))
        with self._tx() as db:
            db.execute("UPDATE variants SET metrics=? WHERE id=?", (json.dumps(v.metrics), variant_id))

    def lineage(self, variant_id: str) -> list[Variant]:
        """The variant and its ancestors, root last."""
        chain, seen = [], set()
        current: str | None = variant_id
        while current and current not in seen:
            seen.add(current)
            v = self.variant(current)
            chain.append(v)
            current = v.parent
        return chain

    # runs and metric history ------------------------------------------------------------------------------
    def start_run(self, job: str, params: dict[str, Any], input_id: str | None, device: str) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO runs(job, params, input, status, started, device) VALUES (?,?,?,?,?,?)",
                (job, json.dumps(params, default=str), input_id, "running", time.time(), device),
            )
            return int(cur.lastrowid)

    def finish_run(self, run_id: int, status: str, output: str | None, error: str | None, seconds: float,
                   result: dict[str, Any] | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE runs SET status=?, output=?, error=?, seconds=?, result=? WHERE id=?",
                       (status, output, error, seconds, json.dumps(result or {}, default=str), run_id))

    def runs(self) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._db.execute("SELECT * FROM runs ORDER BY id")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def add_metrics(self, run_id: int, rows: list[tuple[int, dict[str, float]]]) -> None:
        flat = [(run_id, step, k, v) for step, metrics in rows for k, v in metrics.items()]
        if flat:
            with self._tx() as db:
                db.executemany("INSERT INTO metrics VALUES (?,?,?,?)", flat)

    def metric_history(self, run_id: int) -> dict[str, list[tuple[int, float]]]:
        with self._lock:
            rows = self._db.execute("SELECT step, name, value FROM metrics WHERE run_id=? ORDER BY rowid",
                                    (run_id,)).fetchall()
        out: dict[str, list[tuple[int, float]]] = {}
        for step, name, value in rows:
            out.setdefault(name, []).append((step, value))
        return out

    def set_info(self, key: str, value: Any) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO info VALUES (?,?)", (key, json.dumps(value)))

    def info(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM info WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default


def _writer_alive(tmp_name: str) -> bool:
    """Whether the process that named a temporary folder ``.tmp-<id>-<pid>-<hex>`` still runs (another worker
    writing a variant right now); folders of dead processes, and of older names without a pid, are leftovers."""
    parts = tmp_name.split("-")
    if len(parts) < 4 or not parts[2].isdigit():
        return False
    pid = int(parts[2])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A killed worker whose parent died too stays a zombie until init reaps it; it writes nothing any more."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # not Linux, or gone in between: os.kill said it was there
    return stat.rpartition(")")[2].split()[:1] in (["Z"], ["X"])
