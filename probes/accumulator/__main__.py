"""`python -m probes.accumulator`: detect and validate the matrix units' accumulator. See --help."""
import sys

from probes import cli, runner
from probes.accumulator.probe import AccumulatorProbe


def main(argv=None):
    return runner.main(AccumulatorProbe, argv)


if __name__ == "__main__":
    sys.exit(cli.guarded_main(main))
