"""The `tinygrad-mnist` command line."""
import argparse

from . import __version__


def build_parser():
    parser = argparse.ArgumentParser(prog="tinygrad-mnist",
                                     description="Autograd over NumPy, and MNIST with it.")
    parser.add_argument("--version", action="version", version=f"tinygrad_mnist {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return 0
