"""`python -m probes.moe`: MoE routing under batching (see probes/moe/__init__.py and --help)."""
import sys

from probes import cli, runner
from probes.moe.probe import MoEProbe


def main(argv=None):
    return runner.main(MoEProbe, argv)


if __name__ == "__main__":
    sys.exit(cli.guarded_main(main))
