"""transformers imported for offline use: nothing is downloaded at run time, and no progress bars."""

from __future__ import annotations

import os
from typing import Any


def quiet_transformers() -> Any:
    """Import transformers offline, without its progress bars and advisory warnings; returns the module."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:  # an older hub: the bars are transformers' own, disabled above
        pass
    return transformers
