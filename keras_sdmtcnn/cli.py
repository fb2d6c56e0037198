"""The ``sdmtcnn`` console script and the one error handler every command shares.

``sdmtcnn COMMAND ...`` is the same as ``python -m keras_sdmtcnn.COMMAND ...``
(``sdmtcnn data check ...`` as ``python -m keras_sdmtcnn.data check ...``):
each command module gives its argument parser (``build_parser``) and what it
runs (``run``). Bad input raised as :class:`~keras_sdmtcnn.errors.UserError`
ends a command with one ``error: ...`` line on stderr and exit status 2.

Commands are quiet: TensorFlow's informational and warning log lines
(oneDNN notices, CUDA probing, absl's start-up warning) and the Python
warnings named in ``process/logs.py`` are not shown; the runtime's error
lines are. ``--verbose`` anywhere on the command line (or
``SDMTCNN_VERBOSE=1``) shows everything. ``fit`` and ``experiments`` run
their work in a supervised child process (``process/supervisor.py``).
"""

import argparse
import atexit
import errno
import gc
import importlib
import os
import sys
import threading

# Quieter TensorFlow start-up for command-line use (the user can override).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_sdmtcnn.errors import UserError  # noqa: E402
from keras_sdmtcnn.process import logs, memory, supervisor  # noqa: E402

# Subcommand -> command module (each has build_parser(parser) and run(args)).
COMMANDS = {
    "fit": ("keras_sdmtcnn.fit", "train a recipe into a run directory"),
    "evaluate": ("keras_sdmtcnn.evaluate", "Teacher and Student metrics of a run or export"),
    "export": ("keras_sdmtcnn.export", "export a branch as SavedModel, TFLite or ONNX"),
    "predict": ("keras_sdmtcnn.predict", "prediction panels for images"),
    "bench": ("keras_sdmtcnn.bench", "benchmark every path of a recipe"),
    "experiments": ("keras_sdmtcnn.experiments", "run a plan of recipes and tabulate it"),
    "data": ("keras_sdmtcnn.data.__main__", "check datasets, measure the input pipeline"),
    "baselines": ("keras_sdmtcnn.baselines", "scores of constant predictors"),
    "model_size": ("keras_sdmtcnn.model_size", "parameters and FLOPs per branch"),
    "latency": ("keras_sdmtcnn.latency", "TFLite latency of Teacher vs Student"),
}


def _quiet(argv):
    """Unless ``--verbose`` (removed from ``argv``), hide what the user cannot act on."""
    args = sys.argv if argv is None else argv
    if "--verbose" in args[1 if argv is None else 0:]:
        args.remove("--verbose")
        os.environ["SDMTCNN_VERBOSE"] = "1"  # for a supervised child too
        return argv
    if os.environ.get("SDMTCNN_VERBOSE"):
        return argv
    logs.quiet()
    return argv


_OS_ADVICE = {
    errno.ENOSPC: "The disk is full: free space (or choose another output folder) and run "
                  "the command again; a run resumes from its last checkpoint.",
    errno.EDQUOT: "The disk quota is exceeded: free space and run the command again.",
    errno.EROFS: "That file system is read-only: choose an output folder you can write to.",
    errno.EACCES: "Permission denied: choose a folder you can write to, or fix its permissions.",
    errno.EPERM: "Operation not permitted: choose a folder you can write to.",
    errno.EEXIST: "A file is in the way where a folder is needed: remove it or choose "
                  "another path.",
    errno.ENOTDIR: "A file is in the way where a folder is needed: remove it or choose "
                   "another path.",
    errno.EISDIR: "A folder is where a file is needed: choose a file path.",
    errno.ENAMETOOLONG: "A name in that path is longer than the file system allows: choose a "
                        "shorter one.",
}


def run(main_fn, argv=None):
    """Runs ``main_fn(argv)`` as the program, then ends the process.

    ``main_fn`` may return an exit status (``None`` is 0). A UserError
    prints ``error: ...`` and exits with 2; a refused file operation (full
    disk, read-only folder, ...) likewise. Quiet by default
    (see the module docstring). The process ends through :func:`end_process`.
    """
    argv = _quiet(argv)
    collect_garbage_less_often()
    if supervisor.in_child():
        supervisor.become_child()
    try:
        code = main_fn(argv) or 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    except OSError as e:
        # The operating system refused a file operation: a full disk, a
        # read-only or permission-denied folder, a file where a folder must
        # be. Every write goes to a temporary name first, so nothing
        # complete was replaced by a partial file.
        if memory.ran_out(e):
            print(f"error: {memory.out_of_memory_line(e)}", file=sys.stderr)
            end_process(2)
        if e.errno is None:  # not a file operation the system refused
            raise
        advice = _OS_ADVICE.get(e.errno, "Check that path, or choose another one.")
        where = e.filename or "a file"
        print(f"error: {where}: {e.strerror}. {advice}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    except Exception as e:  # a bug shows its traceback; memory running out, one line
        if not memory.ran_out(e):
            raise
        print(f"error: {memory.out_of_memory_line(e)}", file=sys.stderr)
        code = 2
    end_process(code)


def collect_garbage_less_often():
    """Python's cyclic garbage collector, set for processes that trace graphs.

    Tracing allocates hundreds of thousands of Python objects (graph ops,
    tensors, layers) that live as long as the process, and the collector's
    defaults (a young collection every 700 allocations, a full one whenever
    the survivors grow by a quarter) rescan them again and again: 1.7 s of
    collections in a 2-epoch demo ``fit``, 16 s in three of the test files
    run in one process. With these thresholds the same ``fit`` spent 0.5 s
    and the three files 9 s (docs/benchmarks.md). Garbage is still
    collected, only in larger batches. Used by every command and by the
    test suite.
    """
    gc.set_threshold(20_000, 10, 10)


def end_process(code):
    """Ends the process with ``code`` once everything it wrote is out, without teardown.

    The interpreter's own exit frees every object one by one, and a command
    that traced TensorFlow graphs holds over half a million (about 550,000
    tracked by the collector after a 1-epoch demo ``fit``): after that
    ``fit`` the teardown took 2.3 s (a full garbage collection, then
    TensorFlow's graphs freed node by node; docs/benchmarks.md). Nothing is
    left to save by then: every file was written and closed (and renamed
    into place) before ``main`` returned. So this runs the exit handlers
    (``atexit``: flushing logs, restoring stderr), flushes the standard
    streams and leaves with ``os._exit``. Where a non-daemon thread still
    runs, which a normal exit would wait for, it exits the normal way.
    """
    others = [t for t in threading.enumerate()
              if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if others:
        sys.exit(code)
    try:
        atexit._run_exitfuncs()  # what a normal exit runs first; no public name
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # closed, or its reader is gone
                pass
        os._exit(code)


def _main(argv=None):
    parser = argparse.ArgumentParser(
        prog="sdmtcnn", description="Self-distilled multi-task CNNs: train, evaluate, export.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(module=module)
        importlib.import_module(module).build_parser(command)
    args = parser.parse_args(argv)
    return importlib.import_module(args.module).run(args)


def main(argv=None):
    """Entry point of the ``sdmtcnn`` console script."""
    run(_main, argv)


if __name__ == "__main__":
    main()
