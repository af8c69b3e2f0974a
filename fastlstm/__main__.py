"""Command line: `fastlstm demo [--quick] [--plot PATH]` (or `python -m fastlstm ...`).

The demo trains on data it makes or finds in Python itself (no download): noisy
sine forecasting, 8-bit binary addition, character-level text generation and
the adding problem (LSTM vs plain RNN over a 100-step lag), and ends in one
summary table.
"""
import argparse
import sys
import warnings

from sklearn.exceptions import ConvergenceWarning

from ._demo import demo

__all__ = ["demo", "main"]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastlstm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo_parser = sub.add_parser("demo", help="train on built-in data and print a summary")
    demo_parser.add_argument("--quick", action="store_true", help="a short smoke run")
    demo_parser.add_argument("--plot", default="fastlstm-demo-sine.png", metavar="PATH",
                             help="where to write the sine plot (PNG, needs matplotlib; "
                                  "default: %(default)s in the current folder)")
    demo_parser.add_argument("--no-plot", action="store_true", help="do not write the plot")
    demo_parser.add_argument("--no-progress", action="store_true",
                             help="no progress bars on stderr")
    demo_parser.add_argument("--blas-threads", type=int, default=0, metavar="N",
                             help="a BLAS thread limit for the demo (default: 0, no limit: "
                                  "fastlstm picks one thread or one slice per core)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        with warnings.catch_warnings():  # fixed epoch budgets: not-converged is expected
            warnings.simplefilter("ignore", category=ConvergenceWarning)
            demo(quick=args.quick, plot_path=None if args.no_plot else args.plot,
                 progress=not args.no_progress, blas_threads=args.blas_threads or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
