"""Every hostile input, fuzz target, fault and kill the reliability tests try, as data.

The tests parametrize over these lists and assert each ``outcome``; ``make_table.py`` renders the same lists
into docs/RELIABILITY.md, and ``test_reliability_doc.py`` fails when the document and the lists disagree.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    """One thing tried: ``match`` is the regex the one-line error must match (empty: it must succeed)."""

    id: str
    area: str
    tried: str
    outcome: str
    match: str = ""
    via: str = "library"


def _bad(id: str, area: str, tried: str, match: str, via: str = "library") -> Case:
    where = "exit 2, one line on stderr" if via == "CLI" else "InputError"
    return Case(id, area, tried, f"{where}: `{match}`", match, via)


HOSTILE: list[Case] = [
    # model files
    _bad("pt_pickle_runs_code", "model file", ".pt whose pickle calls os.system (would create a marker file)",
         "would run code", "CLI"),
    _bad("pt_pickle_as_weights", "model file", "the same pickle given as --weights for zoo:mlp", "would run code"),
    _bad("pt_garbage", "model file", ".pt of random bytes", "not a readable PyTorch file"),
    _bad("pt2_garbage", "model file", ".pt2 of random bytes", "not a readable torch.export", "CLI"),
    _bad("pt2_truncated", "model file", ".pt2 cut to its first 1000 bytes (zip directory lost)",
         "not a readable torch.export"),
    _bad("safetensors_header_len_huge", "model file", ".safetensors whose header length says 2^62 bytes",
         "corrupt safetensors", "CLI"),
    _bad("safetensors_header_len_short", "model file", ".safetensors whose header length cuts the JSON short",
         "corrupt safetensors"),
    _bad("safetensors_truncated", "model file", ".safetensors missing its last 10 bytes", "corrupt safetensors"),
    _bad("safetensors_bad_offsets", "model file", ".safetensors whose tensor offsets run to 10^12",
         "corrupt safetensors"),
    _bad("safetensors_absurd_shape", "model file", ".safetensors declaring a 10^6 x 10^6 tensor in 4 bytes",
         "corrupt safetensors"),
    _bad("onnx_garbage", "model file", ".onnx of random bytes", "not a readable ONNX model"),
    _bad("onnx_truncated", "model file", "a real .onnx cut in half", "not a readable ONNX model"),
    _bad("onnx_empty", "model file", "an empty .onnx", "invalid ONNX model"),
    _bad("onnx_external_dotdot", "model file", "ONNX external data at ../outside.bin", "points outside", "CLI"),
    _bad("onnx_external_absolute", "model file", "ONNX external data at an absolute path", "points outside"),
    _bad("onnx_external_symlink", "model file", "ONNX external data through a symlink that leads outside",
         "points outside"),
    _bad("onnx_external_missing", "model file", "ONNX external data file that does not exist", "is missing"),
    _bad("onnx_external_too_long", "model file", "ONNX external tensor of 10^12 floats in a 64-byte file",
         "declares 4000000000000 bytes"),
    _bad("onnx_absurd_initializer", "model file", "ONNX initializer with dims 10^6 x 10^6 and 16 bytes of data",
         "invalid ONNX model"),
    _bad("onnx_dims_overflow", "model file", "ONNX initializer with dims 2^62 x 2^62 (int64 overflow)",
         "overflow"),
    _bad("onnx_absurd_constant_of_shape", "model file", "ONNX ConstantOfShape making a 10^6 x 10^6 tensor",
         "declares shape"),
    _bad("keras_lambda_runs_code", "model file", ".keras whose Lambda layer's stored bytecode would create a marker file",
         "holds Python code; refused", "CLI"),
    _bad("keras_h5_lambda", "model file", "Keras 2 .h5 whose model_config holds a marshalled Lambda",
         "holds Python code; refused"),
    _bad("keras_custom_object", "model file", ".keras naming a layer class from another module (evil.layers)",
         "not Keras; refused"),
    _bad("keras_archive_dotdot", "model file", ".keras with an archive member ../outside.txt",
         "points outside the archive"),
    _bad("keras_archive_symlink", "model file", ".keras with a symbolic-link member", "symbolic link"),
    _bad("keras_garbage", "model file", ".keras of random bytes", "not a Keras 3 archive"),
    # datasets
    _bad("folder_corrupt_image", "dataset", "folder: a .png of random bytes among good images",
         "cannot read image"),
    _bad("folder_truncated_image", "dataset", "folder: a .png cut in half", "cannot read image"),
    _bad("folder_decompression_bomb", "dataset", "folder: a 100000 x 100000 PNG of 100 bytes",
         "cannot read image.*decompression bomb"),
    _bad("csv_ragged", "dataset", "csv: a row with fewer columns", "line 2: 2 columns, expected 3"),
    _bad("csv_nan", "dataset", "csv: a NaN feature", "line 2, column 2: 'nan' is not finite"),
    _bad("csv_inf", "dataset", "csv: an inf feature", "'inf' is not finite"),
    _bad("csv_float32_overflow", "dataset", "csv: 1e300 (finite, but infinite as float32)", "too large for float32"),
    _bad("csv_not_a_number", "dataset", "csv: a word in a feature column", "'abc' is not a number"),
    _bad("csv_too_few_rows", "dataset", "csv: two rows only", "too few to split"),
    _bad("text_invalid_utf8", "dataset", "text_csv: bytes 0xff 0xfe inside a text", "not valid UTF-8", "CLI"),
    _bad("text_ragged", "dataset", "text_csv: a row without its label", "1 columns, expected 2"),
    _bad("idx_truncated", "dataset", "mnist: IDX image file missing its last bytes", "corrupt IDX file"),
    _bad("idx_bad_magic", "dataset", "mnist: IDX label file with the image magic number", "magic number"),
    # pipeline files
    _bad("pipeline_unknown_key", "pipeline", "TOML with a top-level key `modle`", "unknown key 'modle'", "CLI"),
    _bad("pipeline_wrong_type", "pipeline", "TOML with seed = \"zero\"", "seed must be a int"),
    _bad("pipeline_not_toml", "pipeline", "a pipeline that is not TOML", "not a valid TOML pipeline"),
    _bad("pipeline_invalid_utf8", "pipeline", "a pipeline with invalid UTF-8", "not a valid TOML pipeline"),
    _bad("pipeline_step_without_job", "pipeline", "a [[step]] without job =", "step 1 needs a job"),
    _bad("pipeline_step_unknown_param", "pipeline", "a train step with `epochz = 3`",
         "unknown parameter 'epochz'"),
    _bad("pipeline_step_wrong_type", "pipeline", "a train step with epochs = [1, 2]", "not a valid int"),
    # job parameters
    _bad("param_below_min", "job parameters", "train:epochs=0", "0 is below the minimum 1", "CLI"),
    _bad("param_above_max", "job parameters", "train:lr=1e9", "above the maximum"),
    _bad("param_nan", "job parameters", "train:lr=nan", "'nan' is not a valid float"),
    _bad("param_bad_choice", "job parameters", "train:optimizer=magic", "not one of adam, adamw, sgd"),
    _bad("param_not_kv", "job parameters", "train:epochs", "expected k=v"),
    _bad("job_unknown", "job parameters", "--job nosuchjob", "unknown job 'nosuchjob'"),
]

FUZZ: list[Case] = [
    Case("fuzz_onnx", "fuzz", "random and mutated .onnx bytes -> load_model_file",
         "InputError or a model, never another exception"),
    Case("fuzz_pt2", "fuzz", "random and mutated .pt2 bytes -> load_model_file",
         "InputError or a model, never another exception"),
    Case("fuzz_pt", "fuzz", "random and mutated .pt bytes -> load_model_file (weights_only)",
         "InputError, never another exception, never code run"),
    Case("fuzz_safetensors", "fuzz", "random and mutated .safetensors bytes -> load_weights",
         "InputError or weights loaded, never another exception"),
    Case("fuzz_idx", "fuzz", "random and mutated IDX bytes -> read_idx",
         "InputError or an array of the declared shape"),
    Case("fuzz_csv", "fuzz", "random bytes and generated ragged/non-numeric CSVs -> load_dataset(csv:)",
         "InputError or a dataset with finite features"),
    Case("fuzz_text_csv", "fuzz", "random bytes and generated CSVs -> load_dataset(text_csv:)",
         "InputError or a dataset"),
    Case("fuzz_pipeline", "fuzz", "random text and generated TOML -> load_pipeline_file + validate_steps",
         "InputError or a validated pipeline"),
]

FAULTS: list[Case] = [
    Case("job_raises", "fault", "a plugin job raising ValueError", "step failed: `raised ValueError: boom`; "
         "runner runs the next job; no new variant"),
    Case("nan_loss", "fault", "train:lr=1e6,optimizer=sgd,diverge_factor=0 (loss becomes inf/NaN)",
         "step failed: `non-finite loss ... at epoch 1, step N`; no new variant; runner runs the next job"),
    Case("diverging_loss", "fault", "train:lr=1e6 (Adam; the loss explodes, finite or not)",
         "step failed: `the loss diverged at epoch 1, step N: smoothed ..., over 100x its start`; no new variant"),
    Case("non_model_return", "fault", "a plugin returning a str", "step failed: `returned a str, not a model`"),
    Case("wrong_shape_return", "fault", "a plugin returning a model with the wrong output",
         "step failed: `output is (4, 3), expected (4, 10)`"),
    Case("cuda_oom", "fault", "torch.cuda.OutOfMemoryError raised inside a job",
         "step failed: `out of GPU memory (try a smaller batch_size or auto_batch=true)`; runner survives"),
    Case("host_oom", "fault", "MemoryError raised inside a job", "step failed: `out of memory`; runner survives"),
    Case("oom_auto_batch", "fault", "CUDA OOM at batch size 32 in train:auto_batch=true",
         "warning `batch size halved to 16`; the job finishes and saves a variant"),
    Case("disk_full_on_save", "fault", "OSError(ENOSPC) from the atomic write of meta.json",
         "step failed: `No space left on device`; no half variant, no temp folder; earlier variants load"),
    Case("readonly_on_save", "fault", "OSError(EROFS) while writing model.safetensors",
         "step failed: `Read-only file system`; no half variant; earlier variants load"),
    Case("hang_cancel", "fault", "a plugin that loops forever calling check_cancelled, then cancel",
         "step cancelled at its next check; the runner runs the next job"),
]

KILLS: list[Case] = [
    Case("kill_train_1", "crash", "SIGKILL during train:epochs=30 (after the first checkpoint)",
         "workspace opens; integrity ok; every variant complete; no .tmp folder"),
    Case("kill_train_2", "crash", "SIGKILL during train:resume=true (a later epoch)",
         "same; the checkpoint epoch only grows"),
    Case("kill_train_3", "crash", "SIGKILL at a random moment of train:resume=true",
         "same"),
    Case("kill_export", "crash", "SIGKILL during the export job (training resumed and finished first)",
         "same; the resumed train run's history starts at the checkpoint epoch + 1"),
    Case("kill_quantize_1", "crash", "SIGKILL during the quantize job", "same"),
    Case("kill_quantize_2", "crash", "SIGKILL at a later random moment of the quantize job", "same"),
    Case("rerun_after_kills", "crash", "the same batch run to the end on the killed workspace",
         "exit 0; variants of every earlier run intact"),
]

ALL: list[Case] = HOSTILE + FUZZ + FAULTS + KILLS
