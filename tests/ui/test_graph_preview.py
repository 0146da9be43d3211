"""Opening an ONNX file shows its graph at once, even when the model does not fit the dataset."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _chain(path, blocks=10, d=8):
    nodes, inits, prev = [], [], "x"
    for i in range(blocks):
        inits.append(numpy_helper.from_array(np.full((d, d), 0.01, np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"], name=f"matmul_{i}"))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"r{i}"], name=f"relu_{i}"))
        prev = f"r{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", d])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["n", d])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return len(nodes)


def test_an_onnx_file_that_does_not_fit_the_dataset_still_shows_its_graph(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    from workbench.app import create_main_window

    path = tmp_path / "chain.onnx"
    n = _chain(path)
    w = create_main_window(workspace=tmp_path / "ws", model=str(path), dataset="digits:size=8")
    qtbot.addWidget(w)
    w.show()
    items = lambda: len(w.graph_view.node_items())  # noqa: E731
    qtbot.waitUntil(lambda: items() >= n, timeout=60_000)
    qtbot.waitUntil(lambda: "error:" in w.log_view.toPlainText(), timeout=60_000)  # the misfit is reported
    assert w.notifications.toasts()
    w.controller.shutdown(wait=True)
    assert w.isVisible() and w.variants == []
