"""Background work on threads that end with their task.

PyTorch's CPU thread pool (OpenMP) belongs to the thread that first runs a parallel operation and lives as long
as that thread. A long-lived helper thread that once measured a model keeps an idle pool; with more pool threads
than cores, OpenMP stops spinning between parallel regions and the job worker's training slows by about a third
(measured on 2 cores). A thread per task frees its pool when the task ends.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any


class ThreadPerTask:
    """The part of ``concurrent.futures.Executor`` the app uses (``submit``, ``shutdown``), each task on a new
    daemon thread, at most ``max_workers`` at a time, taken from the queue in submission order."""

    def __init__(self, max_workers: int, name: str) -> None:
        self._slots = threading.Semaphore(max_workers)
        self._name = name
        self._lock = threading.Lock()
        self._waiting: list[tuple[concurrent.futures.Future, Callable[[], Any]]] = []
        self._threads: set[threading.Thread] = set()
        self._closed = False
        _executors.add(self)

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit after shutdown")
            self._waiting.append((future, fn))
        self._start_next()
        return future

    def _start_next(self) -> None:
        while self._slots.acquire(blocking=False):
            with self._lock:
                if not self._waiting:
                    self._slots.release()
                    return
                future, fn = self._waiting.pop(0)
                thread = threading.Thread(target=self._run, args=(future, fn), name=self._name, daemon=True)
                self._threads.add(thread)
            thread.start()

    def _run(self, future: concurrent.futures.Future, fn: Callable[[], Any]) -> None:
        try:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # noqa: BLE001 - handed to the future, as an executor does
                    future.set_exception(exc)
        finally:
            self._slots.release()
            self._start_next()  # after a shutdown without cancel_futures, queued tasks still run
            with self._lock:  # only now: shutdown(wait=True) never sees no thread while work is queued
                self._threads.discard(threading.current_thread())

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            waiting, self._waiting = (self._waiting, []) if cancel_futures else ([], self._waiting)
            threads = list(self._threads)
        for future, _fn in waiting:
            future.cancel()
        while wait and threads:  # tasks still queued start as running ones end: wait for those too
            for thread in threads:
                thread.join()
            with self._lock:
                threads = list(self._threads)


_executors: weakref.WeakSet[ThreadPerTask] = weakref.WeakSet()


def join_all(timeout: float, executors: Iterable[ThreadPerTask] | None = None) -> bool:
    """Wait up to ``timeout`` seconds for every running task thread to end; True when none is left.

    Called at exit. Interpreter shutdown freezes daemon threads where they stand; one frozen inside an import
    (the jobs' torch import takes seconds, so quitting during start-up catches it there) keeps that module's
    import lock, and a finalizer that imports after it hangs the exit or crashes it."""
    deadline = time.monotonic() + timeout
    chosen = list(_executors if executors is None else executors)
    for executor in chosen:
        with executor._lock:
            threads = list(executor._threads)
        for thread in threads:
            if thread is threading.current_thread():
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            thread.join(left)
    return all(not t.is_alive() for ex in chosen for t in list(ex._threads))
