"""Joining (or starting) the Ray cluster and creating the worker actors.

Security (why these options): `local` starts a cluster whose every process binds 127.0.0.1
(`_node_ip_address`), without the dashboard, so nothing listens on a network interface; `auto`
and `HOST:PORT` join a cluster the operator started (its own authentication and network
policy apply; see docs/cluster.md). Work reaches the actors only through Ray calls from this
driver, and files travel in Ray's object store, so Loom opens no port of its own for them.

Workers are named detached actors (`loom-worker-<n>` in the `loom` namespace): a head that
restarts re-attaches to the same processes, with their models still loaded.
"""
from __future__ import annotations

import logging
import os
from typing import Any

from config import REPO_ROOT

log = logging.getLogger(__name__)

NAMESPACE = "loom"
LOOPBACK = "127.0.0.1"
ACTOR_THREADS = 4  # run + interrupt + free + info at once
LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024


def connect(address: str, workers: int | None, *, namespace: str = NAMESPACE) -> bool:
    """`ray.init` for `--ray-address` (`local`, `auto` or `HOST:PORT`); True when this call
    started a local cluster (which ends with this process). Does nothing when Ray is initialised."""
    import ray

    if ray.is_initialized():
        return False
    runtime_env = {"env_vars": {"PYTHONPATH": str(REPO_ROOT)}}
    if address == "local":
        _loopback_only()
        ray.init(num_cpus=max(workers or 1, 1), _node_ip_address=LOOPBACK, include_dashboard=False,
                 namespace=namespace, runtime_env=runtime_env, object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                 log_to_driver=False, configure_logging=False)
    else:
        ray.init(address=address, namespace=namespace, runtime_env=runtime_env, log_to_driver=False,
                 configure_logging=False)
    log.info("joined Ray cluster %s: %s", address, ray.cluster_resources())
    return address == "local"


def _loopback_only() -> None:
    """Make the local cluster's node address 127.0.0.1, so Ray's servers bind only loopback.

    `ray.init(_node_ip_address="127.0.0.1")` is not enough: Ray replaces a loopback address by
    the machine's network address unless multi-machine clusters are off, which is its switch
    `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` (read when ray is imported, hence also the constant;
    the variable is inherited by the raylet and the worker processes)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def default_worker_count() -> int:
    """One worker per GPU of the cluster, else one per alive node."""
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        return gpus
    return max(1, sum(1 for node in ray.nodes() if node.get("Alive")))


def actor_class() -> Any:
    """`WorkerActor` wrapped as a Ray actor class (done here so that importing cluster.actor
    needs no Ray)."""
    import ray

    from cluster.actor import WorkerActor

    return ray.remote(WorkerActor)


def spawn(actor_cls: Any, index: int, config: Any, *, namespace: str = NAMESPACE) -> Any:
    """The actor `loom-worker-<index>`: re-attached when it exists, else created (one GPU each
    where the cluster has GPUs, else one CPU)."""
    import ray

    resources: dict[str, Any] = {"num_gpus": 1} if ray.cluster_resources().get("GPU") else {"num_cpus": 1}
    return actor_cls.options(name=f"loom-worker-{index}", namespace=namespace, get_if_exists=True,
                             lifetime="detached", max_restarts=0, max_concurrency=ACTOR_THREADS,
                             **resources).remote(str(index), config)


def kill(actor: Any) -> None:
    import ray

    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # already gone
        pass
