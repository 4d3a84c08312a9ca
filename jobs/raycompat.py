"""Every call whose form depends on the Ray version, in one place. Tested with Ray 2.60.

2.60 deprecates ``map_batches(concurrency=...)`` for ``compute=TaskPoolStrategy(...)``, and
enables token auth for local clusters; a laptop run keeps Ray on the loopback address.
"""

from __future__ import annotations

import os
import socket
import sys

import ray

__all__ = ["init", "map_batches", "nodes_missing"]

TESTED_RAY = "2.60.0"


def init(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to ``address`` (or ``RAY_ADDRESS``, as ``ray job submit`` sets it), or start a
    local Ray on 127.0.0.1 with ``num_cpus`` CPUs."""
    if ray.is_initialized():
        return
    env = {"RAY_USAGE_STATS_ENABLED": "0"}
    for key, value in env.items():
        os.environ.setdefault(key, value)
    quiet = {"log_to_driver": True, "logging_level": "WARNING", "include_dashboard": False}
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **quiet)
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    _keep_local_ray_on_loopback()
    # Workers find this package (a source checkout too) through PYTHONPATH, which the local
    # Ray's processes inherit from this one. A runtime_env with the same PYTHONPATH made the
    # first tasks wait for new workers instead of taking the ones Ray prestarts at init: the
    # first two tasks took 7.2 s instead of 0.8-1.8 s (2 CPUs, loaded machine).
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    # "local" always starts a new cluster, never attaches to one `ray start` left running.
    ray.init(address="local", num_cpus=num_cpus, _node_ip_address="127.0.0.1",
             _system_config={"num_workers_soft_limit": idle_workers_to_keep(num_cpus)}, **quiet)


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Refuse, with ``ConnectionError``, a ``host:port`` (or ``ray://host:port``) address, or
    ``RAY_ADDRESS``, where nothing accepts a connection within ``timeout`` seconds: ``ray.init``
    would retry for minutes, deaf to Ctrl-C. Other forms (``auto``, none) are Ray's to resolve."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        return
    if address.startswith(("http://", "https://")):
        raise ConnectionError(f"{address} is a Ray dashboard (job API) address, for `ray job "
                              f"submit`; a driver connects to the cluster's GCS address "
                              f"(host:port, port 6379 by default) or runs inside the job")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        raise ConnectionError(f"cannot reach a Ray cluster at {address}: {error}") from None


def nodes_missing(paths: list[str], timeout: float = 120.0) -> list[tuple[str, str]]:
    """``(node address, path)`` for each local ``path`` that a node able to run tasks does not
    see (one zero-CPU task per node, on the nodes alive now). When the only such node is the
    driver's own, it sees what the driver sees: ``[]``. ``ConnectionError`` when a node does not
    answer within ``timeout`` seconds."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [node for node in ray.nodes()
             if node["Alive"] and node["Resources"].get("CPU", 0) > 0]
    own = ray.get_runtime_context().get_node_id()
    if not paths or [node["NodeID"] for node in nodes] in ([], [own]):
        return []
    check = ray.remote(num_cpus=0, max_retries=0)(_missing_paths)
    try:
        results = ray.get([check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            node["NodeID"], soft=False)).remote(paths) for node in nodes], timeout=timeout)
    except (ray.exceptions.RayError, TimeoutError) as error:
        raise ConnectionError(f"could not ask every node whether it sees {paths[0]}: "
                              f"{str(error).splitlines()[0]}") from None
    return [(node["NodeManagerAddress"], path)
            for node, missing in zip(nodes, results, strict=True) for path in missing]


def _missing_paths(paths: list[str]) -> list[str]:
    return [path for path in paths if not os.path.exists(path)]


def idle_workers_to_keep(num_cpus: int | None) -> int:
    """Idle worker processes a node keeps (Ray's ``num_workers_soft_limit``, by default one per
    CPU). Ray Data's shuffle runs its map and reduce tasks in workers of their own (each kind
    has its own environment variables), so with one idle worker per CPU every pairing stage
    killed the last stage's workers and waited for new ones to start: 2-3 s a stage. Three
    kinds of worker per CPU keep them all (pairing 1M detections, 2 CPUs: 20-38 s -> 14.6 s).
    Clusters started with ``ray start`` take the same setting from ``RAY_num_workers_soft_limit``
    (cluster.yaml sets it)."""
    return 3 * (num_cpus or os.cpu_count() or 1)


def _keep_local_ray_on_loopback() -> None:
    """On Linux, Ray 2.60 swaps a loopback node address for the machine's external one unless
    its single-node mode is on; the flag is read from RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when Ray
    is first imported, so it is set on the constants module itself (private API, Ray pinned)."""
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def map_batches(dataset, fn, *, fn_kwargs: dict, batch_size: int, num_cpus: float,
                retry_errors: tuple[type[BaseException], ...] = (), max_task_retries: int = 0):
    """``Dataset.map_batches`` with Arrow batches and a task pool sized by Ray's scheduler.

    A task whose worker dies is retried by Ray Data without limit (its default). A task that
    raises one of ``retry_errors`` is run again ``max_task_retries`` times in its worker, after
    jittered exponential backoff (up to 2, 4, 8... s, at most 32 s); other exceptions fail it.
    """
    mapped = dataset.map_batches(
        fn,
        fn_kwargs=fn_kwargs,
        batch_size=batch_size,
        batch_format="pyarrow",
        num_cpus=num_cpus,
        compute=ray.data.TaskPoolStrategy(),
        zero_copy_batch=True,
    )
    # The job is one map after an in-memory input: Ray Data's per-operator reservation (on by
    # default) held it to about one busy task on a 2-CPU node (8 one-second CPU tasks took
    # 5.5 s instead of 4.2 s); without it every CPU runs a task.
    mapped.context.op_resource_reservation_enabled = False
    if retry_errors:
        # Ray Data 2.60 matches these patterns against "module.Class: message" of the error
        # (and its cause). The dataset's context is its own copy: other datasets are unaffected.
        # Ray core's retry_exceptions would share Ray Data's unlimited max_retries instead.
        mapped.context.retried_map_errors = [f"{e.__module__}.{e.__qualname__}"
                                             for e in retry_errors]
        mapped.context.max_map_retries = max_task_retries
    return mapped


def configure_progress(show_bars: bool, verbose: bool = False) -> None:
    """Progress bars on a terminal; otherwise only the job's own line per stage (Ray Data's
    execution logs come back with ``verbose``)."""
    import logging

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = show_bars
    context.enable_operator_progress_bars = show_bars
    if not verbose:
        logging.getLogger("ray.data").setLevel(logging.ERROR)
