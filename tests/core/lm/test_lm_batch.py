"""Batch mode on a language model, through the installed command: the report speaks perplexity, training shows
in it, and ``generate:prompt=`` prints its text where the user looks (stdout, report.md), not only report.json."""

import json

from tests.conftest import run_cli
from tests.core.lm.lm_helpers import make_corpus

MODEL = "zoo:tiny_llama:hidden=32,layers=2,heads=2,kv_heads=1"


def test_train_then_generate_in_batch_mode(tmp_path):
    corpus = make_corpus(tmp_path / "corpus.txt")
    out = tmp_path / "run"
    prompt = "The model"
    proc = run_cli("--batch", "--model", MODEL, "--dataset", f"text:{corpus}:seq_len=32", "--seed", "0",
                   "--job", "train:max_steps=40,batch_size=8,lr=0.01", "--job",
                   f"generate:prompt={prompt},max_new_tokens=12", "--out", str(out), timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "causal_lm"
    train, generate = report["steps"]
    assert {s["task"] for s in report["steps"]} == {"causal_lm"}
    assert "accuracy" not in train["metrics"]  # contract section 8: a language model has no top-1 accuracy
    root = next(v for v in report["variants"] if v["id"] == "v0001")["metrics"]
    assert train["metrics"]["perplexity"] < 0.5 * root["perplexity"], (root["perplexity"], train["metrics"])
    assert 0.0 <= train["metrics"]["token_accuracy"] <= 1.0 and train["metrics"]["decode_tokens_per_s"] > 0
    # the prefill speed-up against the parent, measured paired, with its interval (contract section 8)
    speedup = train["speedup"]
    assert speedup["vs"] == "v0001" and speedup["ci"][0] <= speedup["ratio"] <= speedup["ci"][1]
    assert isinstance(speedup["significant"], bool) and "speedup" not in train["metrics"]

    # generate makes no variant; its text is in the step's result ...
    assert generate["variant"] == "v0002" and generate["parent"] == "v0002"
    text = generate["result"]["text"]
    assert generate["result"]["prompt"] == prompt and generate["result"]["new_tokens"] >= 1 and text
    # ... and where a batch user reads: the console and report.md
    assert f"prompt {prompt!r}:" in proc.stdout and (prompt + text).rstrip() in proc.stdout
    md = (out / "report.md").read_text()
    assert "## Generated text" in md and (prompt + text).rstrip() in md
    assert "| seconds | perplexity | token_accuracy | loss |" in md and "| accuracy |" not in md
