"""`torchrun --nproc-per-node N -m probes.collective`: collective reduction orders. See --help."""
import sys

from probes import cli
from probes.collective.probe import main

if __name__ == "__main__":
    sys.exit(cli.guarded_main(main))
