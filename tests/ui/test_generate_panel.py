"""The Generate panel submits the generate job through the controller and shows each continuation it gets back."""

from __future__ import annotations

from types import SimpleNamespace

from PySide6.QtCore import QObject

from workbench.ui.generate_panel import GeneratePanel


class FakeController(QObject):
    """Records submissions and hands back run handles, like Controller.submit."""

    def __init__(self) -> None:
        super().__init__()
        self.submitted: list[tuple[str, dict, str | None]] = []

    def submit(self, job, params, variant, callback=None):
        self.submitted.append((job, params, variant))
        callback(SimpleNamespace(run_id=len(self.submitted)))


def finished(run_id: int, variant: str, text: str, status: str = "ok", error: str = ""):
    data = {"status": status, "variant": variant, "error": error,
            "result": {"prompt": "The ", "text": text, "new_tokens": 5, "tokens_per_s": 50.0}}
    return SimpleNamespace(kind="finished", job="generate", run_id=run_id, data=data)


def test_contract_object_names(qtbot):
    panel = GeneratePanel(FakeController())
    qtbot.addWidget(panel)
    assert panel.objectName() == "generatePanel"
    for name in ("promptEdit", "generateButton", "generatedText"):
        assert panel.findChild(QObject, name) is not None, name


def test_generate_submits_the_job_for_the_selected_variant_and_shows_the_text(qtbot):
    controller = FakeController()
    panel = GeneratePanel(controller)
    qtbot.addWidget(panel)
    panel.set_variant("v0002")
    panel.prompt.setPlainText("The ")
    panel.max_tokens.setValue(12)
    panel.button.click()
    assert controller.submitted == [("generate", {"prompt": "The ", "max_new_tokens": 12, "temperature": 0.0},
                                     "v0002")]
    panel.on_event(SimpleNamespace(kind="finished", job="train", run_id=1, data={"status": "ok"}))  # not ours
    assert panel.output.toPlainText() == ""
    panel.on_event(finished(1, "v0002", "model reads"))
    assert panel.output.toPlainText() == "The model reads"
    assert "5 tokens" in panel.status.text()


def test_two_variants_continue_the_same_prompt(qtbot):
    controller = FakeController()
    panel = GeneratePanel(controller)
    qtbot.addWidget(panel)
    variants = [SimpleNamespace(id="v0001", job="load"), SimpleNamespace(id="v0002", job="train")]
    panel.set_variants(variants)
    panel.set_variant("v0002")
    panel.compare_with.setCurrentIndex(panel.compare_with.findData("v0001"))
    panel.set_variants(variants)  # a refresh keeps the choice
    assert panel.compare_with.currentData() == "v0001"
    panel.prompt.setPlainText("The ")
    panel.button.click()
    assert [s[2] for s in controller.submitted] == ["v0002", "v0001"]
    panel.on_event(finished(2, "v0001", "untrained noise"))
    panel.on_event(finished(1, "v0002", "trained text"))
    shown = panel.output.toPlainText()
    assert "── v0001 ──\nThe untrained noise" in shown and "── v0002 ──\nThe trained text" in shown


def test_a_failed_run_says_why_without_writing_text(qtbot):
    controller = FakeController()
    panel = GeneratePanel(controller)
    qtbot.addWidget(panel)
    panel.set_variant("v0001")
    panel.button.click()
    panel.on_event(finished(1, "v0001", "", status="failed", error="generate needs a language model"))
    assert panel.output.toPlainText() == ""
    assert "needs a language model" in panel.status.text()


def test_a_language_model_opened_into_a_classifier_workspace_gets_its_own(qtbot, tmp_path):
    """File > Open model with an HF folder (or its config.json) in the demo's digits workspace: the folder is the
    model, and it opens in a new workspace on a corpus rather than failing against digits."""
    import json

    from PySide6.QtCore import QSettings

    from workbench.ui import file_actions

    QSettings.setDefaultFormat(QSettings.Format.IniFormat)  # the recent-files list goes to the test's folder
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    from workbench.core.models.loading import default_dataset_for
    from workbench.ui.controller import needs_own_workspace

    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert needs_own_workspace(str(folder), "digits") and needs_own_workspace("zoo:tiny_llama", "digits:size=8")
    assert needs_own_workspace("zoo:mlp", "pydocs")
    assert not needs_own_workspace("zoo:mlp", "digits") and not needs_own_workspace(str(folder), "text:a.txt")
    assert default_dataset_for(str(folder)) == "pydocs" and default_dataset_for("zoo:seed_cnn") == "digits"

    added: list[str] = []
    window = SimpleNamespace(controller=SimpleNamespace(add_model=added.append),
                             log_view=SimpleNamespace(add=lambda _line: None))
    file_actions.load_model_path(window, str(folder / "config.json"))
    assert added == [str(folder.resolve())]
