"""`tkit <task> <verb> -e SPEC -r RESULTS [-m MODEL] [key=value ...]`: argument parsing only.

Also `tkit model {list,info,import,import-onnx}` and `tkit data demo NAME DIR`.
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from .errors import Terminated, TrainingInterrupted, TransferkitError

log = logging.getLogger("transferkit")

TASK_VERBS = ("default_spec", "train", "evaluate", "inference", "prune", "export", "automl")
MODEL_VERBS = ("inference", "prune", "export")  # evaluate may score predictions on disk instead


def _task_parser(task: str, verbs: tuple[str, ...]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"tkit {task}", description=f"{task}: {', '.join(verbs)}")
    p.add_argument("verb", choices=verbs)
    p.add_argument("-e", "--experiment_spec", dest="spec", help="spec YAML (defaults when omitted)")
    p.add_argument("-r", "--results_dir", dest="results", help="results folder; everything the run makes lands here")
    p.add_argument("-m", "--model", help="checkpoint (.ckpt) or exported .onnx the verb works on")
    p.add_argument("--gpus", type=int, help="number of GPUs (sets train.accelerator=gpu, train.num_devices)")
    p.add_argument("--num_nodes", type=int, help="machines for multi-node DDP (train.num_nodes)")
    p.add_argument("--use_amp", action="store_true", help="mixed precision (train.precision=bf16-mixed, 16-mixed on GPU)")
    p.add_argument("--log_file", help="also write the log here (default RESULTS/log.txt)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a results folder that holds an earlier training run or another verb's results")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted spec overrides, e.g. train.epochs=3")
    return p


def _tao_overrides(args) -> list[str]:
    extra = []
    if args.gpus is not None:
        extra += ["train.accelerator=gpu" if args.gpus > 0 else "train.accelerator=cpu",
                  f"train.num_devices={max(1, args.gpus)}"]
    if args.num_nodes is not None:
        extra.append(f"train.num_nodes={args.num_nodes}")
    if args.use_amp:
        import torch

        extra.append("train.precision=16-mixed" if torch.cuda.is_available() else "train.precision=bf16-mixed")
    return extra


def run_task(task: str, argv: list[str]) -> int:
    from . import api
    from .tasks import get_task

    extra = tuple(get_task(task).extra_verbs)  # unknown task -> clear error before parsing verbs
    args = _task_parser(task, TASK_VERBS + extra).parse_intermixed_args(argv)
    if args.verb == "default_spec":
        sys.stdout.write(api.default_spec(task))
        return 0
    if not args.results and args.verb not in extra:
        raise TransferkitError(f"tkit {task} {args.verb} needs a results folder: -r DIR")
    if args.verb in MODEL_VERBS and not args.model:
        raise TransferkitError(f"tkit {task} {args.verb} needs a model: -m PATH (best.ckpt, pruned.ckpt or .onnx)")
    overrides = list(args.overrides) + _tao_overrides(args)
    common = dict(log_file=args.log_file, overwrite=args.overwrite)
    try:
        if args.verb == "train":
            api.train(task, args.spec, args.results, overrides, **common)
        elif args.verb == "automl":
            api.automl(task, args.spec, args.results, overrides, **common)
        elif args.verb in extra:
            api.run_extra_verb(task, args.verb, args.spec, args.results, overrides, model=args.model, **common)
        else:
            getattr(api, args.verb)(task, args.spec, args.results, overrides, model=args.model, **common)
    except Exception as e:  # a full disk under a writer that is not transferkit's (TensorBoard, a library's cache)
        from .io import disk_full_error, is_disk_full

        if isinstance(e, TransferkitError) or not args.results or not is_disk_full(e):
            raise
        raise disk_full_error(getattr(e, "filename", None) or args.results, e) from e
    return 0


def run_model(argv: list[str]) -> int:
    import dataclasses

    from . import zoo
    from .zoo.checksums import transferkit_home

    p = argparse.ArgumentParser(prog="tkit model", description="the pretrained model zoo")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="every model and whether its weights are on disk")
    info = sub.add_parser("info", help="everything known about one model: a zoo name, or a model file")
    info.add_argument("name", help="a zoo name (tkit model list), or a .ckpt / .onnx file written by tkit")
    imp = sub.add_parser("import", help="add a weight file (or a Hugging Face model folder) you downloaded, checksum-verified")
    imp.add_argument("name")
    imp.add_argument("file", help="the weight file; for a Hugging Face model, its folder (recorded, not copied)")
    onx = sub.add_parser("import-onnx", help="bring your own ONNX classifier or backbone")
    onx.add_argument("name")
    onx.add_argument("file")
    onx.add_argument("--overwrite", action="store_true", help="replace an imported ONNX model of the same name")
    onx.add_argument("--features", metavar="NODE[,NODE...]",
                     help="node whose output is the feature map (default: before the classifier); several nodes "
                          "(one per stride) make a multi-stride encoder, e.g. for a UNet")
    onx.add_argument("--head", metavar="NODE|auto",
                     help="keep the whole segmentation network and mark its last layer (a Conv/ConvTranspose) "
                          "for replacement with the task's class count; 'auto' finds it")
    onx.add_argument("--mean", metavar="M[,M,M]", help="input normalisation of 0-1 pixels (default: the file's metadata, "
                                                       "else ImageNet's), e.g. 0.5")
    onx.add_argument("--std", metavar="S[,S,S]", help="as --mean, e.g. 0.5 for inputs scaled to [-1, 1]")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if args.cmd == "list":
        table = Table(title=f"transferkit model zoo (cache: {transferkit_home()})")
        for col in ("name", "family", "input", "licence", "weights on disk"):
            table.add_column(col)
        for entry in zoo.list_models():
            where = zoo.weights_status(entry.name)
            shown_input = str(entry.input_size) if entry.modality == "image" else entry.modality
            table.add_row(entry.name, entry.family, shown_input, entry.license or "-",
                          where.split(":")[0] if where else "[yellow]no[/] (download or tkit model import)")
        console.print(table)
        console.print("Any timm model works too as timm:<name> (weights from the Hugging Face hub, or imported).")
    elif args.cmd == "info" and _is_model_file(args.name):
        for key, value in _model_file_info(args.name).items():
            print(f"{key}: {value}")  # unwrapped: one line per fact, for scripts too
    elif args.cmd == "info":
        entry = zoo.get_entry(args.name)
        for key, value in dataclasses.asdict(entry).items():
            if key in ("input_size", "mean", "std") and entry.modality != "image":
                continue  # image facts: None for a text or audio model
            if key == "categories" and value:
                value = f"{len(value)} classes: {', '.join(value[:5])}, ..."
            console.print(f"[bold]{key}[/]: {value}")
        console.print(f"[bold]weights on disk[/]: {zoo.weights_status(entry.name) or 'no'}")
        for line in _onnx_summary(entry):
            console.print(line, markup=False, highlight=False)
    elif args.cmd == "import":
        path = zoo.import_weights(args.name, args.file)
        console.print(f"imported {args.file} as {args.name}: {path}")
    else:
        features = None
        if args.features is not None:
            features = [n.strip() for n in args.features.split(",")]
            if not all(features):
                raise TransferkitError(
                    f"--features {args.features!r} has an empty node name; give NODE or NODE,NODE,..."
                )
            features = features[0] if len(features) == 1 else features
        stats = {key: _floats(f"--{key}", getattr(args, key)) for key in ("mean", "std")}
        entry, report = zoo.import_onnx(args.name, args.file, features_node=features, head_node=args.head,
                                        overwrite=args.overwrite, **stats)
        console.print(f"imported {args.file} as backbone '{entry.name}': {report}")
        for line in _onnx_summary(entry):
            console.print(line, markup=False, highlight=False)
        task = "segmentation" if args.head or isinstance(features, list) else "classification"
        console.print(f"fine-tune it with: tkit {task} train ... model.backbone={entry.name}")
    return 0


def _is_model_file(name: str) -> bool:
    return Path(name).suffix.lower() in (".ckpt", ".onnx") or Path(name).is_file()


def _model_file_info(name: str) -> dict[str, str]:
    """What a checkpoint or exported .onnx is: its task's description of its metadata (Task.describe_model)."""
    from .api import read_model_meta
    from .tasks import get_task

    meta = read_model_meta(name)
    return {"file": name, **get_task(meta.task).describe_model(meta)}


def _floats(option: str, text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise TransferkitError(f"{option} {text!r} must be one number or three separated by commas, e.g. 0.5") from None


def _onnx_summary(entry) -> list[str]:
    """What an imported ONNX entry outputs: its feature nodes (stride, channels) and its replaceable head."""
    if entry.family != "onnx":
        return []
    meta = entry.meta
    if isinstance(meta.get("features"), list):
        nodes = meta.get("feature_nodes") or meta["features"]
        maps = ", ".join(f"{n} (stride {s}, {c} ch)" for n, s, c in zip(nodes, meta["strides"], meta["channels"]))
        lines = [f"feature maps: {maps}"]
    else:
        stride = f"stride {meta.get('stride')}" if meta.get("stride") is not None else "a vector"
        lines = [f"features: {meta.get('features')} ({stride}, {meta.get('channels')} ch)"]
    head = meta.get("head")
    if head:
        lines.append(f"replaceable head: {head['op']} {head['node']} ({head['in_channels']} -> {head['out_channels']} "
                     f"channels, kernel {head['kernel_shape']}, strides {head['strides']}); left out after it: "
                     f"{', '.join(head['activations']) or 'nothing'}")
    return lines


def run_data(argv: list[str]) -> int:
    from .data.demo import DEMO_DATASETS, build_demo

    p = argparse.ArgumentParser(prog="tkit data", description="built-in datasets")
    sub = p.add_subparsers(dest="cmd", required=True)
    demo = sub.add_parser("demo", help=f"build a demo dataset: {', '.join(DEMO_DATASETS)}")
    demo.add_argument("name", choices=list(DEMO_DATASETS))
    demo.add_argument("dir")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("options", nargs="*", metavar="key=value", help="builder options, e.g. per_class=20 size=96")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    options = {}
    for text in args.options:
        key, sep, value = text.partition("=")
        if not sep:
            raise TransferkitError(f"demo option '{text}' must look like key=value, e.g. per_class=20")
        options[key] = value
    summary = build_demo(args.name, args.dir, seed=args.seed, **options)
    print(f"built demo dataset '{args.name}' in {args.dir}: {summary.get('counts', summary)}")
    return 0


USAGE = """usage: tkit <task> <verb> [-e SPEC] [-r RESULTS] [-m MODEL] [key=value ...]
       tkit model {list,info,import,import-onnx} ...
       tkit data demo NAME DIR

tasks: %s
verbs: default_spec, train, evaluate, inference, prune, export, automl
"""


def setup_console_logging(debug: bool) -> None:
    from rich.logging import RichHandler

    root = logging.getLogger("transferkit")
    if not any(isinstance(h, RichHandler) for h in root.handlers):
        handler = RichHandler(show_path=False, show_time=False, markup=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    root.propagate = False
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _terminate(signum: int, frame) -> None:
    """SIGTERM outside training: unwind as Ctrl-C does (lock released, temp files removed), then exit 143.

    During training Lightning's handler owns SIGTERM and calls this one after its own: the run then
    ends at the next batch with a resumable checkpoint instead (engine.trainer.InterruptCheckpoint)."""
    if signal.getsignal(signal.SIGTERM) is _terminate:
        raise Terminated()


def _thread_error(args: threading.ExceptHookArgs) -> None:
    """A background writer (TensorBoard's event writer) that runs out of disk space: one line, not a traceback.

    The writer hands the same error to the main thread at its next write, which reports it as the
    run's error; this line says so even when no next write comes."""
    from .io import is_disk_full

    if args.exc_value is not None and is_disk_full(args.exc_value):
        name = args.thread.name if args.thread is not None else "?"
        print(f"tkit: warning: a background writer (thread {name}) stopped: no space left on device", file=sys.stderr)
        return
    threading.__excepthook__(args)


class _GuardedStdout:
    """Stands in for sys.stdout while a command runs. A write or flush that fails (a closed pipe, a full
    disk, /dev/full) is recorded and later output dropped, so the command ends normally and `main` reports
    it once, rather than a traceback from whichever print or log line hit it first."""

    def __init__(self, stream):
        self._stream = stream
        self.lost: OSError | None = None

    def write(self, text: str) -> int:
        if self.lost is None:
            try:
                return self._stream.write(text)
            except OSError as e:
                self.lost = e
        return len(text)

    def flush(self) -> None:
        if self.lost is None:
            try:
                self._stream.flush()
            except OSError as e:
                self.lost = e

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    def exit_code(self, code: int) -> int:
        """The command's exit code, or that of the lost output: 141 (as if killed by SIGPIPE, silent) for a
        closed pipe such as `| head -1`, else 2 with one line on stderr."""
        if self.lost is None:
            return code
        try:  # what is still buffered goes nowhere, instead of failing again when Python exits
            target = self._stream.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, target)
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # no file descriptor (e.g. captured output)
            pass
        if code != 0:  # the command's own error is already on stderr
            return code
        if self.lost.errno == errno.EPIPE:
            return 128 + 13  # SIGPIPE's number on Linux and macOS, as a shell reports a process it killed
        print(f"tkit: error: standard output could not be written ({self.lost.strerror or self.lost}); "
              "the output is incomplete", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    stdout = sys.stdout
    if stdout is None:  # no console at all (pythonw)
        return _main(argv)
    guard = sys.stdout = _GuardedStdout(stdout)
    try:
        code = _main(argv)
        guard.flush()
    finally:
        sys.stdout = stdout
    return guard.exit_code(code)


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    setup_console_logging(debug)
    from .tasks import task_names

    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE % ", ".join(task_names()))
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    # only where nobody else (an application embedding tkit) has a SIGTERM handler
    own_sigterm = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (
        signal.SIG_DFL, None)
    if own_sigterm:
        signal.signal(signal.SIGTERM, _terminate)
    thread_hook, threading.excepthook = threading.excepthook, _thread_error
    try:
        if command == "model":
            return run_model(rest)
        if command == "data":
            return run_data(rest)
        return run_task(command, rest)
    except TrainingInterrupted as e:
        print(f"tkit: {e}", file=sys.stderr)
        return e.exit_code
    except TransferkitError as e:
        if debug:
            raise
        print(f"tkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tkit: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("tkit: terminated (SIGTERM)", file=sys.stderr)
        return 128 + signal.SIGTERM
    except Exception as e:  # a full disk outside the atomic writers (which raise DiskFullError themselves)
        from .io import disk_full_error, is_disk_full

        if debug or not is_disk_full(e):
            raise
        print(f"tkit: error: {disk_full_error(getattr(e, 'filename', None), e)}", file=sys.stderr)
        return 2
    finally:
        threading.excepthook = thread_hook
        if own_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
