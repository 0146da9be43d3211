"""The evaluate job measures without making a variant; with record=true its figures replace the stored ones."""

from workbench.core.execution.runner import JobRequest
from workbench.core.jobs.registry import registry
from workbench.plugin import Job, JobContext


class EnergyJob(Job):
    """A third-party measuring job: stores a figure of its own on the variant."""

    name = "test_energy"
    produces_variant = False

    def run(self, ctx: JobContext) -> None:
        ctx.record_metrics(energy_mj=3.25, latency_ms=7)
        return None


def test_evaluate_alone_changes_nothing_stored(make_session, runner_for):
    session, root = make_session()
    before = dict(session.workspace.variant(root).metrics)
    session.workspace.update_metrics(root, {"latency_ms": 999.0})
    out = runner_for(session).run(JobRequest("evaluate", {}, root, "cpu"))
    assert out.status == "ok" and out.metrics["accuracy"] == before["accuracy"]
    assert session.workspace.variant(root).metrics["latency_ms"] == 999.0
    assert len(session.workspace.variants()) == 1


def test_record_replaces_the_noisy_figures_and_keeps_the_rest(make_session, runner_for):
    session, root = make_session()
    session.workspace.update_metrics(root, {"latency_ms": 999.0, "latency_torch_ms": 999.0, "note": "kept"})
    out = runner_for(session).run(JobRequest("evaluate", {"record": True}, root, "cpu"))
    assert out.status == "ok", out.error
    stored = session.workspace.variant(root).metrics
    assert 0 < stored["latency_ms"] < 999 and 0 < stored["latency_torch_ms"] < 999
    assert stored["note"] == "kept" and out.metrics["latency_ms"] == stored["latency_ms"]
    import json

    on_disk = json.loads((session.workspace.variant(root).path / "meta.json").read_text())
    assert on_disk["metrics"]["latency_ms"] == stored["latency_ms"]


def test_record_on_another_split_leaves_the_test_accuracy(make_session, runner_for):
    session, root = make_session()
    session.workspace.update_metrics(root, {"accuracy": 0.5, "size_bytes": 1})
    out = runner_for(session).run(JobRequest("evaluate", {"record": True, "split": "train"}, root, "cpu"))
    assert out.status == "ok", out.error
    stored = session.workspace.variant(root).metrics
    assert stored["accuracy"] == 0.5 and stored["size_bytes"] > 1


def test_a_plugin_records_its_own_figure(make_session, runner_for):
    registry().register(EnergyJob)
    try:
        session, root = make_session()
        out = runner_for(session).run(JobRequest("test_energy", {}, root, "cpu"))
        assert out.status == "ok", out.error
        stored = session.workspace.variant(root).metrics
        assert stored["energy_mj"] == 3.25 and stored["latency_ms"] == 7.0
        assert out.metrics["energy_mj"] == 3.25
    finally:
        registry().unregister(EnergyJob.name)
