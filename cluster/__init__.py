"""Scale-out on Ray: whole prompts placed on worker actors that each run Loom's own executor,
output cache and model manager; the head keeps the server, the durable queue, history and files.

Imported only under `--ray-address` (main.py), so a single-process Loom never imports Ray.
`enable(runtime)` joins the cluster and makes the server build a `ClusterDispatcher` in place
of its local worker thread, and adds GET /loom/cluster. Modules: `connect` (ray.init, actors),
`actor` (the worker process), `slot` (one worker seen from the head), `dispatcher` (placement,
faults), `routing` (the affinity policy, Ray-free), `files` (inputs out, outputs back), `routes`.
See docs/cluster.md.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cluster import connect

if TYPE_CHECKING:
    from runtime import Runtime


def enable(runtime: Runtime) -> None:
    """Join the cluster `runtime.config.ray_address` names and route prompts to its workers."""
    from cluster.dispatcher import ClusterDispatcher
    from cluster.routes import cluster_routes_hook

    config = runtime.config
    started_here = connect.connect(config.ray_address, config.ray_workers)
    workers = config.ray_workers or connect.default_worker_count()

    made: list[ClusterDispatcher] = []

    def make_dispatcher(queue: Any, sink: Any) -> ClusterDispatcher:
        made.append(ClusterDispatcher(queue, sink, folders=runtime.folders, config=config, workers=workers,
                                      kill_workers_on_stop=started_here))
        return made[-1]

    runtime.worker_factory = make_dispatcher
    runtime.server_hooks.append(cluster_routes_hook(lambda: made[-1]))
