"""What every ``pyfast`` subcommand shares: the exit codes, the two errors that map onto
them, the argument types and options of more than one subcommand, and the device check.

cli.py (the parser and info/bench/demo) and cli_train.py (``pyfast train``) both import
this module and neither imports the other at module level, so the errors ``main()``
catches are the very classes the subcommands raise, however pyfast.cli was started.
"""

from __future__ import annotations

import argparse

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad command-line input found after parsing (exit code 2)."""


class CommandFailed(Exception):
    """The command could not do its job (exit code 1)."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage block
        raise UsageError(f"{message} (see {self.prog} --help)")


def number_type(convert, accept, expected):
    """An argparse ``type``: ``convert(text)`` when ``accept`` holds for the value, else an
    error saying what was ``expected``."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return parse


positive_int = number_type(int, lambda v: v >= 1, "a positive integer")
non_negative_int = number_type(int, lambda v: v >= 0, "an integer >= 0")
positive_float = number_type(float, lambda v: 0 < v < float("inf"), "a positive number")


def add_kernel_options(parser):
    """--backend, --device and --threads: how ``demo`` and ``train`` run their kernels."""
    from pyfast import backends

    parser.add_argument("--backend", choices=backends.NAMES,
                        help="pyfast backend for every kernel (default: the fastest that loads)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda needs CuPy and an NVIDIA GPU (default: %(default)s)")
    parser.add_argument("--threads", type=positive_int, metavar="N",
                        help="CPU threads of the native kernels (default: all usable cores)")


def check_device(device):
    """``device`` ("cpu" or "cuda") when it can run here, else CommandFailed saying why."""
    if device == "cuda":
        from pyfast.bench import cuda_unavailable
        why = cuda_unavailable()
        if why:
            raise CommandFailed(f"--device cuda: {why}")
    return device
