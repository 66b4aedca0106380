"""`python -m probes.gemm`: cuBLAS kernel choice and batch invariance. See --help."""
import sys

from probes import cli, runner
from probes.gemm.probe import GemmProbe


def main(argv=None):
    return runner.main(GemmProbe, argv)


if __name__ == "__main__":
    sys.exit(cli.guarded_main(main))
