"""The ``workbench`` command: opens the desktop app, or runs jobs headless with ``--batch``.

Kept light: torch, Qt and the plugins are imported only by the branch that needs them, so ``--version``
and ``--list-plugins`` answer at once.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from workbench import __version__
from workbench.core.errors import InputError, WorkbenchError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="workbench",
        description="See, train, prune, quantize, distill and fuse neural networks; export them to ONNX.",
        epilog="Examples:\n  workbench\n  workbench --batch --model zoo:seed_cnn --dataset digits "
               "--job train:epochs=15 --job prune:amount=0.5 --out runs/demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model_arg", nargs="?", metavar="MODEL", help="open the app with this model loaded")
    p.add_argument("--version", action="version", version=f"workbench {__version__}")
    p.add_argument("--batch", action="store_true", help="run the jobs headless and write a report")
    p.add_argument("--model", help="zoo:NAME[:k=v,...] | FILE (.onnx .pt2 .pt .pth .keras .h5) | variant DIR | "
                   "py:FILE.py:NAME | stack:LAYER;LAYER;... (docs/BUILDING.md)")
    p.add_argument("--weights", help="trained weights for a zoo: or py: model (.safetensors or state-dict .pt)")
    p.add_argument("--dataset", help="digits[:size=8|28] | synthetic[:k=v] | mnist:DIR | fashion_mnist:DIR | "
                                     "cifar10:DIR | folder:DIR | csv:FILE | text_csv:FILE | text:FILE | pydocs "
                                     "(default: a reopened workspace's own, pydocs for a language model, else "
                                     "digits)")
    p.add_argument("--job", action="append", default=[], metavar="NAME[:k=v,...]", help="a job step; repeatable")
    p.add_argument("--pipeline", help="a TOML pipeline file (flags override it)")
    p.add_argument("--out", help="workspace and report folder (default ./runs/<timestamp>)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--seed", type=int, help="random seed (deterministic on CPU)")
    p.add_argument("--bench-batch", type=int, help="batch size for latency measurements (default 64)")
    p.add_argument("--nproc-per-node", type=int, default=1, help="data-parallel training processes")
    p.add_argument("--nnodes", type=int, default=1, help="nodes of a multi-node data-parallel run (torchrun)")
    p.add_argument("--node-rank", type=int, default=0, help="this node's rank in a multi-node run (0 = writes)")
    p.add_argument("--master-addr", help="address of node 0 in a multi-node run (default 127.0.0.1)")
    p.add_argument("--master-port", type=int, help="a free port on node 0 in a multi-node run (default 29500)")
    p.add_argument("--trust", action="store_true", help="allow unpickling a full-model .pt/.pth (runs its code)")
    p.add_argument("--json", action="store_true", help="print the final report as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars or table")
    p.add_argument("--verbose", action="store_true", help="tracebacks on errors")
    p.add_argument("--inline", action="store_true",
                   help="run jobs in this process instead of a worker process (debugging; a crash takes it down)")
    p.add_argument("--list-plugins", action="store_true", help="list the installed jobs")
    p.add_argument("--list-models", action="store_true", help="list the zoo models")
    p.add_argument("--list-datasets", action="store_true", help="list the dataset kinds")
    p.add_argument("--new-plugin", metavar="NAME", help="scaffold an installable plugin package")
    p.add_argument("--dir", default=".", help="where --new-plugin writes the package")
    p.add_argument("--plugin-path", action="append", default=[], metavar="DIR",
                   help="also load plugins from this development folder (as do the folders in "
                        "WORKBENCH_PLUGIN_PATH, separated by os.pathsep)")
    p.add_argument("--workspace", help="open the app on this workspace folder")
    p.add_argument("--smoke-test", action="store_true",
                   help="check the install: open the window offscreen, train the demo one epoch, exit 0")
    return p


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    if raw[:1] == ["--worker"]:  # a job worker process of the frozen app (see core.execution.process)
        from workbench.core.execution.worker import main as worker_main

        return worker_main(raw[1:])
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except WorkbenchError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, InputError) else 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (``workbench --list-models | head -1``): not an error of ours. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again (the Python docs' recipe, signal module)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # what a shell reports for a command ended by SIGPIPE
    except Exception as exc:  # noqa: BLE001 - one line for the user, the traceback under --verbose
        if args.verbose:
            traceback.print_exc()
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    if args.plugin_path or os.environ.get("WORKBENCH_PLUGIN_PATH"):
        from workbench.core.jobs.devplugins import load_plugin_path

        load_plugin_path([Path(p) for p in args.plugin_path])  # also exported for the job worker processes
    if args.list_plugins:
        return _list_plugins()
    if args.list_models:
        from workbench.core.models import list_models

        for entry in list_models():
            print(f"{entry.name:22s} {'/'.join(entry.input_kinds):14s} {entry.description}")
        return 0
    if args.list_datasets:
        from workbench.core.data import list_datasets

        for spec, text in list_datasets():
            print(f"{spec:45s} {text}")
        return 0
    if args.new_plugin:
        from workbench.core.scaffold import scaffold_plugin

        path = scaffold_plugin(args.new_plugin, Path(args.dir))
        print(f"wrote {path}; install it with: pip install -e {path}")
        return 0
    if args.smoke_test:
        import importlib

        return importlib.import_module("workbench.smoke").run_smoke_test()  # imports Qt, like _app
    if args.batch:
        return _batch(args)
    return _app(args)


def _list_plugins() -> int:
    from workbench.core.jobs.registry import registry

    for p in registry().plugins():
        status = p.status if p.status != "not loaded" else "available"
        line = f"{p.job:22s} {p.distribution} {p.version:10s} {p.origin:10s} {status}"
        print(line + (f": {p.error}" if p.error else ""))
    return 0


def _batch(args: argparse.Namespace) -> int:
    from workbench.core.pipeline import Pipeline, load_pipeline_file, parse_job_flag

    pipe = load_pipeline_file(Path(args.pipeline)) if args.pipeline else Pipeline()
    for key in ("model", "weights", "dataset", "device", "seed", "out"):
        value = getattr(args, key)
        if value is not None:
            setattr(pipe, key, value)
    if args.model is None and args.model_arg:
        pipe.model = args.model_arg
    if args.bench_batch is not None:
        if args.bench_batch < 1:
            raise InputError("--bench-batch must be at least 1")
        pipe.bench_batch = args.bench_batch
    if args.job:
        pipe.steps = [parse_job_flag(j) for j in args.job]
    if pipe.model is None and not (pipe.out and Path(pipe.out, "workspace.sqlite").exists()):
        raise InputError("--batch needs --model (or an existing workspace in --out)")
    if args.nproc_per_node > 1 or args.nnodes > 1:
        from workbench.core.batch import run_distributed_batch

        return run_distributed_batch(pipe, args)
    from workbench.core.batch import run_batch

    return run_batch(pipe, trust=args.trust, as_json=args.json, quiet=args.quiet, inline=args.inline)


def _app(args: argparse.Namespace) -> int:
    import importlib

    from workbench.platform_check import explain_unusable

    if code := explain_unusable():  # no display, or a system library Qt needs: one line, not Qt's abort
        return code
    os.environ.setdefault("QT_API", "pyside6")
    if args.inline:
        os.environ["WORKBENCH_INLINE"] = "1"  # the app's runner then runs jobs in its own process
    app_module = importlib.import_module("workbench.app")  # Qt is imported only here
    return app_module.main(model=args.model or args.model_arg, dataset=args.dataset, workspace=args.workspace,
                           trust=args.trust)


if __name__ == "__main__":
    sys.exit(main())
