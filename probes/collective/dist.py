"""The process group of a collective run: who this rank is, the backend, NCCL's variant, and an in-process
launcher for tests.

Under torchrun (or `spawn`) every rank has RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in its
environment; `init(device)` makes the default process group from them: gloo on a CPU, NCCL on GPUs (rank r
on cuda:LOCAL_RANK). NCCL reads NCCL_ALGO / NCCL_PROTO when a communicator is made, so a variant is one
launch with those set; NCCL_NVLS_ENABLE is always set to 0 first (NVLink multicast off on shared machines).

    spawn(2, module.function, arg, ...)     # tests: W processes, gloo on the CPU, function(*args) in each
"""
from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass

from probes.errors import UsageError

__all__ = ["World", "world_from_env", "init", "finish", "variant", "nccl_env", "spawn", "free_port",
           "NCCL_VARS", "DIST_VARS"]

DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
#: The NCCL variables a report records (what selects the algorithm, the protocol and the channels).
NCCL_VARS = ("NCCL_ALGO", "NCCL_PROTO", "NCCL_NVLS_ENABLE", "NCCL_MIN_NCHANNELS", "NCCL_MAX_NCHANNELS",
             "NCCL_P2P_DISABLE", "NCCL_SHM_DISABLE", "NCCL_IB_DISABLE", "NCCL_CUMEM_ENABLE")


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int


def world_from_env(what: str = "this program") -> World:
    """This process's place in the launch (RANK, WORLD_SIZE, LOCAL_RANK). UsageError when it was not
    launched by torchrun (or `spawn`)."""
    missing = [k for k in DIST_VARS if k not in os.environ]
    if missing:
        raise UsageError(f"{what} runs on several processes: launch it with torchrun, e.g. "
                         f"`torchrun --standalone --nproc-per-node 2 -m {what}` (missing {', '.join(missing)})")
    try:
        w = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    except ValueError:
        raise UsageError("RANK, WORLD_SIZE and LOCAL_RANK must be integers: "
                         + ", ".join(f"{k}={os.environ[k]!r}" for k in DIST_VARS[:3])) from None
    if not (0 <= w.rank < w.size):
        raise UsageError(f"RANK={w.rank} is outside WORLD_SIZE={w.size}")
    return w


def nccl_env() -> dict:
    """The NCCL variables that are set (after `init`, NCCL_NVLS_ENABLE=0 among them)."""
    return {k: os.environ[k] for k in NCCL_VARS if k in os.environ}


def variant(device: str) -> str:
    """The collective implementation in one word: "gloo" on a CPU, "nccl-ALGO-PROTO" on GPUs (NCCL_ALGO and
    NCCL_PROTO as set, "default" where not: NCCL then picks per message size)."""
    if not str(device).startswith("cuda"):
        return "gloo"
    algo = os.environ.get("NCCL_ALGO", "").strip() or "default"
    proto = os.environ.get("NCCL_PROTO", "").strip() or "default"
    return f"nccl-{algo}-{proto}".replace(",", "+").replace("/", "+")


def init(device: str, world: World, timeout_s: float = 300.0) -> str:
    """Make the default process group for `device` ("cpu" or "cuda[:N]") unless one exists; returns this
    rank's device (cuda:LOCAL_RANK on GPUs)."""
    import torch
    import torch.distributed as dist

    if str(device).startswith("cuda"):
        os.environ["NCCL_NVLS_ENABLE"] = "0"          # always: NVLink multicast off (shared machines)
        n = torch.cuda.device_count()
        if world.local_rank >= n:
            raise UsageError(f"LOCAL_RANK={world.local_rank} but this machine has {n} GPU(s): "
                             f"launch at most {n} processes per node")
        torch.cuda.set_device(world.local_rank)
        device, backend = f"cuda:{world.local_rank}", "nccl"
    else:
        device, backend = "cpu", "gloo"
    if not dist.is_initialized():
        kw = {"device_id": torch.device(device)} if backend == "nccl" else {}
        dist.init_process_group(backend, rank=world.rank, world_size=world.size,
                                timeout=datetime.timedelta(seconds=timeout_s), **kw)
    return device


def finish(sync: bool = False) -> None:
    """Destroy the default process group (if any). `sync`: first wait at a barrier for every rank, so that
    no rank tears its connections down while a peer still uses them (gloo then aborts the process with
    "terminate called without an active exception"); pass it on the normal path only, where every rank
    reaches finish()."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        if sync:
            dist.barrier()
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(rank: int, world: int, port: int, fn, args) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), DRIFTSCOPE_NO_PROGRESS="1")
    import torch
    torch.set_num_threads(1)
    status = fn(*args)
    if status:
        raise SystemExit(status)


def spawn(world: int, fn, *args, port: int | None = None) -> None:
    """Run `fn(*args)` in `world` new processes (torch.multiprocessing, start method spawn) with torchrun's
    environment (one thread each): what tests use instead of torchrun. `fn` must be importable (a module-level
    function); a process that raises or returns a nonzero status makes this raise."""
    import torch.multiprocessing as mp
    if world < 1:
        raise UsageError(f"spawn: world must be >= 1, got {world}")
    mp.spawn(_child, args=(world, port or free_port(), fn, args), nprocs=world, join=True)
