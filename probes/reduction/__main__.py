"""`python -m probes.reduction`: the first thing to run on a new GPU (or CPU). See --help."""
import sys

from probes import cli, runner
from probes.reduction.probe import ReductionProbe


def main(argv=None):
    return runner.main(ReductionProbe, argv)


if __name__ == "__main__":
    sys.exit(cli.guarded_main(main))
