"""ThreadPerTask: executor semantics, at most max_workers at once, and no thread outliving its task."""

import threading
import time

import pytest

from workbench.ui.threads import ThreadPerTask


def test_results_and_exceptions_reach_the_futures():
    pool = ThreadPerTask(2, name="t")
    assert pool.submit(lambda: 6 * 7).result(timeout=5) == 42
    with pytest.raises(ZeroDivisionError):
        pool.submit(lambda: 1 / 0).result(timeout=5)
    pool.shutdown(wait=True)


def test_each_task_gets_a_thread_that_ends_with_it():
    pool = ThreadPerTask(1, name="t")
    threads = [pool.submit(threading.current_thread).result(timeout=5) for _ in range(3)]
    pool.shutdown(wait=True)
    assert len({id(t) for t in threads}) == 3 and threading.main_thread() not in threads
    for t in threads:
        t.join(timeout=5)
        assert not t.is_alive()


def test_at_most_max_workers_run_and_the_queue_is_first_in_first_out():
    pool = ThreadPerTask(2, name="t")
    gate, lock = threading.Event(), threading.Lock()
    running, peak, order = [0], [0], []

    def task(i):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            order.append(i)
        gate.wait(5)
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return i

    futures = [pool.submit(lambda i=i: task(i)) for i in range(6)]
    time.sleep(0.2)
    assert running[0] == 2  # two started, four queued
    gate.set()
    assert [f.result(timeout=5) for f in futures] == list(range(6))
    assert peak[0] == 2 and set(order[:2]) == {0, 1} and sorted(order) == list(range(6))
    pool.shutdown(wait=True)


def test_shutdown_cancels_queued_work_and_refuses_new():
    pool = ThreadPerTask(1, name="t")
    gate = threading.Event()
    first = pool.submit(lambda: gate.wait(5))
    queued = pool.submit(lambda: "never")
    pool.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)
    gate.set()
    assert first.result(timeout=5) is True


def test_shutdown_without_cancel_still_runs_queued_work():
    pool = ThreadPerTask(1, name="t")
    gate = threading.Event()
    pool.submit(lambda: gate.wait(5))
    queued = pool.submit(lambda: "ran")
    pool.shutdown(wait=False)
    gate.set()
    assert queued.result(timeout=5) == "ran"


def test_shutdown_with_wait_waits_for_queued_work_too():
    pool = ThreadPerTask(1, name="t")
    done = []
    for i in range(3):
        pool.submit(lambda i=i: (time.sleep(0.05), done.append(i)))
    pool.shutdown(wait=True)
    assert done == [0, 1, 2]


def test_join_all_waits_for_running_tasks_within_its_deadline():
    """At exit the app waits (bounded) for its helper threads, so none is frozen inside an import."""
    from workbench.ui.threads import join_all

    pool = ThreadPerTask(2, name="test-join")
    release = threading.Event()
    short = pool.submit(lambda: time.sleep(0.2) or "done")
    assert join_all(timeout=5.0, executors=[pool]) and short.result(timeout=0) == "done"
    blocked = pool.submit(release.wait)
    started = time.monotonic()
    assert not join_all(timeout=0.3, executors=[pool])  # a task that does not end: the deadline holds
    assert time.monotonic() - started < 2.0
    release.set()
    assert join_all(timeout=5.0, executors=[pool]) and blocked.result(timeout=0) is True
    pool.shutdown()
