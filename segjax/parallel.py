"""Devices and processes: multi-host start-up, the mesh, shardings, host batches on devices.

One mesh over all devices of all processes with a ``data`` axis: batches are split along it,
the train state is replicated. jit with these shardings makes BatchNorm statistics, losses and
confusion matrices reductions over the global batch, whatever the number of devices.
"""

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def multi_process_requested(coordinator: str | None = None) -> bool:
    """Whether this job was started as several processes: explicit coordinator, SLURM, or a
    multi-host TPU VM."""
    if coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return True
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return True
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return len([h for h in hosts.split(",") if h]) > 1


def initialize_distributed(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
    """``jax.distributed.initialize`` when the job has several processes; nothing otherwise."""
    if multi_process_requested(coordinator):
        # CPU processes need a collectives backend to exchange data (GPUs and TPUs have theirs).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
        )


def make_mesh() -> Mesh:
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def to_global(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, Any]:
    """This process's rows of a batch -> global arrays split over the mesh's data axis."""
    return {
        key: jax.make_array_from_process_local_data(sharding, value) for key, value in batch.items()
    }
