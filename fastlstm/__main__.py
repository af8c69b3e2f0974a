"""Command line: `fastlstm demo [--quick] [--plot PATH]` (or `python -m fastlstm ...`).

The demo trains on data it makes or finds in Python itself (no download): noisy
sine forecasting, 8-bit binary addition, character-level text generation and
the adding problem (LSTM vs plain RNN over a 100-step lag), and ends in one
summary table.
"""
import argparse
import os
import sys
import warnings

from sklearn.exceptions import ConvergenceWarning

from . import __version__
from ._demo import demo

__all__ = ["demo", "main"]


def _thread_count(text):
    """--blas-threads: 0 (no limit) or a positive count."""
    try:
        count = int(text)
    except ValueError:
        count = -1
    if count < 0:
        raise argparse.ArgumentTypeError(f"expected 0 (no limit) or a positive integer, "
                                         f"got {text!r}")
    return count


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastlstm", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"fastlstm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo_parser = sub.add_parser("demo", help="train on built-in data and print a summary")
    demo_parser.add_argument("--quick", action="store_true", help="a short smoke run")
    demo_parser.add_argument("--plot", default="fastlstm-demo-sine.png", metavar="PATH",
                             help="where to write the sine plot (PNG, needs matplotlib; "
                                  "default: %(default)s in the current folder)")
    demo_parser.add_argument("--no-plot", action="store_true", help="do not write the plot")
    demo_parser.add_argument("--no-progress", action="store_true",
                             help="no progress bars on stderr")
    demo_parser.add_argument("--blas-threads", type=_thread_count, default=0, metavar="N",
                             help="a BLAS thread limit for the demo (default: 0, no limit: "
                                  "fastlstm picks one thread or one slice per core)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        plot_path = None if args.no_plot else args.plot
        folder = os.path.dirname(os.path.abspath(plot_path)) if plot_path else None
        if folder is not None and not os.path.isdir(folder):  # found out now, not after a fit
            demo_parser.error(f"--plot {plot_path}: there is no folder {folder}")
        with warnings.catch_warnings():  # fixed epoch budgets: not-converged is expected
            warnings.simplefilter("ignore", category=ConvergenceWarning)
            try:
                demo(quick=args.quick, plot_path=plot_path, progress=not args.no_progress,
                     blas_threads=args.blas_threads or None)
            except BrokenPipeError:  # `fastlstm demo | head`: the reader left, not an error
                # Python's advice: point stdout at devnull so the exit's flush is quiet
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
