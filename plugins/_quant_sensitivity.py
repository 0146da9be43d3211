"""Per-node quantization sensitivity: SQNR of each node's output, int8 (QDQ) against fp32, on real inputs.

Uses onnxruntime's own QDQ debugging tools (``qdq_loss_debug``), so the figures match what the runtime does.
Two numbers per node, in dB (higher is better, ~40 dB is near lossless, below ~15 dB hurts):
``sqnr_db`` compares the int8 model's output of the node with the fp32 model's (the error that reaches it);
``local_sqnr_db`` is the node's own output before vs after its QuantizeLinear/DequantizeLinear pair. The
local figure reads low where onnxruntime folds a Relu into the quantization range (the pre-Q tensor then
still holds negatives), so nodes are ranked by ``sqnr_db``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from workbench_plugins._quant_ort import BatchReader, input_name, quiet

CAP_DB = 99.0


def _finite(value: float | None) -> float | None:
    """JSON-safe dB: identical tensors (infinite SQNR) are capped; a missing comparison is None."""
    if value is None or math.isnan(value):
        return None
    return round(CAP_DB if math.isinf(value) else min(value, CAP_DB), 2)


def node_sensitivity(float_path: Path, qdq_path: Path, batches: Sequence[np.ndarray], workdir: Path) -> list[dict]:
    """One row per quantized node output, worst (lowest ``sqnr_db``) first.

    ``float_path`` must be the pre-processed model ``qdq_path`` was quantized from (same tensor names).
    """
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    name = input_name(float_path)
    aug_float, aug_qdq = workdir / "sens_float.onnx", workdir / "sens_qdq.onnx"
    with quiet():
        modify_model_output_intermediate_tensors(str(float_path), str(aug_float))
        modify_model_output_intermediate_tensors(str(qdq_path), str(aug_qdq))
        float_acts = collect_activations(str(aug_float), BatchReader(name, batches))
        qdq_acts = collect_activations(str(aug_qdq), BatchReader(name, batches))
    errors = compute_activation_error(create_activation_matching(qdq_acts, float_acts))
    producer: dict[str, Any] = {}
    for node in onnx.load(str(float_path), load_external_data=False).graph.node:
        for out in node.output:
            producer[out] = node
    rows = []
    for tensor, err in errors.items():
        node = producer.get(tensor)
        if node is None:
            continue  # a graph input: not a node's output
        rows.append({"node": node.name, "op": node.op_type, "output": tensor, "sqnr_db": _finite(err.get("xmodel_err")),
                     "local_sqnr_db": _finite(err["qdq_err"])})
    for path in (aug_float, aug_qdq):
        path.unlink(missing_ok=True)
    rows.sort(key=lambda r: (r["sqnr_db"] if r["sqnr_db"] is not None else CAP_DB,
                             r["local_sqnr_db"] if r["local_sqnr_db"] is not None else CAP_DB))
    return rows


def worst_nodes(rows: Sequence[dict], count: int) -> list[str]:
    """The ``count`` most sensitive node names (distinct), for ``nodes_to_exclude``."""
    names: list[str] = []
    for row in rows:
        if row["node"] not in names:
            names.append(row["node"])
        if len(names) >= count:
            break
    return names
