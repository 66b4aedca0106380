"""`python -m probes.dequant`: dequantisation formulas, GGUF blocks and FP8 through every backend."""
import sys

from probes import cli, runner
from probes.dequant.probe import DequantProbe


def main(argv=None):
    return runner.main(DequantProbe, argv)


if __name__ == "__main__":
    sys.exit(cli.guarded_main(main))
