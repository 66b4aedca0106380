"""`python -m probes.fma`: fused vs unfused multiply-add in every backend. See --help."""
import sys

from probes import cli, runner
from probes.fma.probe import FmaProbe


def main(argv=None):
    return runner.main(FmaProbe, argv)


if __name__ == "__main__":
    sys.exit(cli.guarded_main(main))
