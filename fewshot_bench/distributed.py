"""Scale-out of `bench run` over processes started by torchrun.

    torchrun --nproc_per_node=K -m fewshot_bench.cli run ...

torchrun sets WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `init` joins the
process group from them (gloo on CPU, NCCL on CUDA, one GPU per local rank). Without those
variables nothing is initialised and every helper answers as for one process (rank 0 of 1),
so a plain `bench run` takes the same code path as before.

The runner shards its fixed episode windows round-robin (window k to rank k % world), so
each episode is computed in exactly the group it would be in one process, and gathers the
rows of every round to all ranks; only rank 0 writes and prints.
"""

from __future__ import annotations

import datetime
import os
import socket

import torch
import torch.distributed as dist

_ENV = ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT")
_owned = False  # whether `init` created the process group (and `teardown` may end it)


def launched() -> bool:
    """Started by torchrun (or anything that sets its environment variables)."""
    return all(v in os.environ for v in _ENV)


def init(device: torch.device) -> None:
    """Join the process group described by torchrun's environment; no-op without it."""
    global _owned
    if not launched() or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    # A rank may wait a long time at a collective while another builds its bank or
    # fine-tunes a large window, so the timeout is generous.
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            timeout=datetime.timedelta(hours=2))
    _owned = True


def teardown() -> None:
    global _owned
    if _owned and dist.is_initialized():
        dist.destroy_process_group()
    _owned = False


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def broadcast(obj):
    """Rank 0's `obj` on every rank (a picklable object)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if not active():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def describe(device: torch.device) -> dict | None:
    """World size, backend and every rank's host, device and torch threads, for run.json
    (a collective: every rank calls it); None in one process."""
    if not active():
        return None
    me = {"rank": rank(), "host": socket.gethostname(),
          "local_rank": int(os.environ.get("LOCAL_RANK", 0)),
          "device": str(device), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        me["device"] = f"cuda:{torch.cuda.current_device()}"
        me["cuda"] = torch.cuda.get_device_name()
    return {"world_size": world_size(), "backend": dist.get_backend(), "ranks": all_gather(me)}


def shard(n_windows: int) -> list[int | None]:
    """This rank's window per round: in round r, rank i runs window r * world + i, so window
    k goes to rank k % world; None where the windows ran out (the rank still joins the
    round's gather). One process: every window, in order."""
    w, me = world_size(), rank()
    return [first + me if first + me < n_windows else None for first in range(0, n_windows, w)]
