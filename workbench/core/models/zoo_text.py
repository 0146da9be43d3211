"""Text models of the zoo: they read int64 token ids (0 = padding) of a fixed sequence length.

Pooling is a padding-masked mean over time written with plain tensor arithmetic, so the models
have no data-dependent control flow and export to ONNX with a dynamic batch axis.
"""

from __future__ import annotations

import torch
from torch import nn

from workbench.core.errors import InputError
from workbench.core.models.zoo_vision import check_width, describe_shape, scaled


def require_tokens(name: str, input_shape: tuple[int, ...], vocab_size: int) -> int:
    """Check the input is a token sequence and the vocabulary is usable; returns the sequence length."""
    if len(input_shape) != 1:
        raise InputError(
            f"{name} needs token sequences (a text dataset); the dataset gives {describe_shape(input_shape)}"
        )
    if vocab_size < 2:
        raise InputError(f"{name}: vocab_size must be at least 2 (id 0 is padding); got {vocab_size}")
    return input_shape[0]


def masked_mean(values: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean over time of ``values`` (N, T, D) ignoring padding positions (token id 0)."""
    mask = (tokens != 0).unsqueeze(-1).to(values.dtype)
    return (values * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class LSTMClassifier(nn.Module):
    """Embedding, LSTM, masked mean over time, classifier."""

    def __init__(self, vocab_size: int, num_classes: int, width: float, num_layers: int) -> None:
        super().__init__()
        embed, hidden = scaled(64, width), scaled(128, width)
        self.embedding = nn.Embedding(vocab_size, embed, padding_idx=0)
        self.lstm = nn.LSTM(embed, hidden, num_layers=num_layers, batch_first=True)
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embedding(tokens))
        return self.classifier(masked_mean(out, tokens))


def lstm_classifier(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    width: float = 1.0,
    vocab_size: int = 20000,
    num_layers: int = 1,
) -> nn.Module:
    """An LSTM text classifier: the recurrent baseline for sentiment/topic datasets and dynamic quantization."""
    check_width("lstm_classifier", width)
    require_tokens("lstm_classifier", input_shape, vocab_size)
    if num_layers < 1:
        raise InputError(f"lstm_classifier: num_layers must be at least 1 (got {num_layers})")
    return LSTMClassifier(vocab_size, num_classes, width, num_layers)


class TransformerClassifier(nn.Module):
    """Embedding plus learned positions, TransformerEncoder, masked mean over time, classifier."""

    def __init__(
        self, vocab_size: int, seq_len: int, num_classes: int, width: float, nhead: int, num_layers: int
    ) -> None:
        super().__init__()
        d_model = max(nhead, round(64 * width / nhead) * nhead)
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.position = nn.Parameter(torch.zeros(1, seq_len, d_model))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward=2 * d_model, dropout=0.1, batch_first=True
        )
        # No nested tensors and no padding mask: keeps the plain (exportable) code path.
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.classifier = nn.Linear(d_model, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.encoder(self.embedding(tokens) + self.position)
        return self.classifier(masked_mean(x, tokens))


def transformer_encoder(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    width: float = 1.0,
    vocab_size: int = 20000,
    nhead: int = 4,
    num_layers: int = 2,
) -> nn.Module:
    """A small Transformer encoder text classifier: the attention model to quantize, distill and export."""
    check_width("transformer_encoder", width)
    seq_len = require_tokens("transformer_encoder", input_shape, vocab_size)
    if nhead < 1 or num_layers < 1:
        raise InputError(
            f"transformer_encoder: nhead and num_layers must be at least 1 (got {nhead}, {num_layers})"
        )
    return TransformerClassifier(vocab_size, seq_len, num_classes, width, nhead, num_layers)
