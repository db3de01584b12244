"""GPU fragmentation of a node, measured against the expected mix of task shapes (FGD, ATC'23).

For each expected task shape (weight = how often it occurs), the node's idle GPU share counts as
fragmented when that task could not run there (wrong model, too little CPU, too few devices with
enough free share); when it could, only the devices too small for it count. The node's
fragmentation is the weighted sum. CPU-only shapes count all idle GPU share as fragment: a
CPU-only task never uses it. Memory is not part of FGD's measure, as in the paper; the excess
measure of ``fit_excess_fragmentation`` tests and feeds it like CPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from modelplane.core.workload import TaskRequest
from modelplane.scheduler.scores._common import MILLI, model_allowed

POPULARITY = 0.95  # the shapes that together make up 95% of tasks form the mix (authors' setting)


def shape_of(request: TaskRequest) -> TaskRequest:
    """The part of a request that matters for fragmentation: CPU, device count and share, models."""
    if request.gpu_count == 0:
        return TaskRequest(cpu_milli=request.cpu_milli)
    return TaskRequest(
        cpu_milli=request.cpu_milli,
        gpu_count=request.gpu_count,
        gpu_milli=request.gpu_milli,
        gpu_models=request.gpu_models,
    )


def typical_mix(
    requests: Iterable[TaskRequest],
    popularity: float = POPULARITY,
    gpu_weight: float = 0.0,
    memory: bool = False,
) -> list[tuple[TaskRequest, float]]:
    """The most frequent shapes that together cover ``popularity`` of the tasks, weights summing to 1.

    ``gpu_weight`` > 0 counts a task of k whole devices as 1 + k x gpu_weight tasks (the reference's
    ``gpuResWeight``; 0 there and here by default). ``memory`` gives each shape (still keyed without
    memory, so the same shapes and weights) the least memory any of its tasks asks, for measures
    that test memory (``fit_excess_fragmentation``): memory then counts against a shape only where
    none of its tasks would fit.
    """
    counts: dict[TaskRequest, float] = {}
    least_memory: dict[TaskRequest, int] = {}
    for r in requests:
        s = shape_of(r)
        extra = r.gpu_count * gpu_weight if r.gpu_milli >= 1000 else 0.0
        counts[s] = counts.get(s, 0) + 1 + extra
        least_memory[s] = min(least_memory.get(s, r.memory_mib), r.memory_mib)
    total = sum(counts.values())
    if total == 0:
        return []

    def order(item: tuple[TaskRequest, float]) -> tuple[float, int, int, int, str]:
        s, n = item
        return (n, s.cpu_milli, s.gpu_milli, s.gpu_count, "|".join(s.gpu_models))

    ranked = sorted(counts.items(), key=order, reverse=True)
    chosen: list[tuple[TaskRequest, float]] = []
    covered = 0.0
    for s, n in ranked:
        if covered >= popularity * total:
            break
        chosen.append((s, n))
        covered += n
    if memory:
        chosen = [(replace(s, memory_mib=least_memory[s]), n) for s, n in chosen]
    return [(s, n / covered) for s, n in chosen]


def node_fragmentation(
    cpu_left: int, device_free: Sequence[int], gpu_model: str | None, mix: Sequence[tuple[TaskRequest, float]]
) -> float:
    """Expected fragmented GPU milli-units on a node with this free capacity."""
    total = sum(device_free)
    frag = 0.0
    for shape, weight in mix:
        if shape.gpu_count == 0 or shape.gpu_milli == 0 or not model_allowed(gpu_model, shape):
            frag += weight * total
            continue
        fitting = sum(1 for f in device_free if f >= shape.gpu_milli)
        if fitting >= shape.gpu_count and cpu_left >= shape.cpu_milli:
            frag += weight * sum(f for f in device_free if f < shape.gpu_milli)
        else:
            frag += weight * total
    return frag


def cpu_aware_fragmentation(
    cpu_left: int, device_free: Sequence[int], gpu_model: str | None, mix: Sequence[tuple[TaskRequest, float]]
) -> float:
    """``node_fragmentation`` with a look-ahead on CPU: GPU share that the node's CPU cannot feed.

    FGD asks whether one task of a shape still fits. A node with 8 idle GPUs and CPU for one more
    typical GPU task passes that test, yet 7 of its GPUs can never be used by that shape. Here a
    shape can use at most ``free CPU // its CPU`` copies' worth of the fitting devices (one copy
    per device, ``gpu_count`` devices per copy, largest devices first); the fitting devices beyond
    that count as fragment too. With CPU to spare the value equals ``node_fragmentation``.
    """
    return excess_fragmentation(cpu_left, None, device_free, gpu_model, mix, cpu_capacity=None, gpu_count=0)


def _fitting_and_fed(
    cpu_left: int,
    device_free: Sequence[int],
    gpu_model: str | None,
    shape: TaskRequest,
    mem_left: int | None = None,
) -> tuple[int, int] | None:
    """(devices with room for the shape, how many of them the free CPU can feed), or None when no
    copy of the shape can run on the node (CPU-only shape, wrong model, too few devices or CPU).
    With ``mem_left``, free memory must fit and feed the copies too."""
    if shape.gpu_count == 0 or shape.gpu_milli == 0 or not model_allowed(gpu_model, shape):
        return None
    fitting = sum(1 for f in device_free if f >= shape.gpu_milli)
    if fitting < shape.gpu_count or cpu_left < shape.cpu_milli:
        return None
    if mem_left is not None and mem_left < shape.memory_mib:
        return None
    copies = _copies(cpu_left, mem_left, shape)
    fed = fitting if copies is None else min(fitting, copies * shape.gpu_count)
    return fitting, fed


def _copies(cpu: int, mem: int | None, shape: TaskRequest) -> int | None:
    """Copies of the shape that this much CPU (and memory, when given) can feed; None: unbounded."""
    bounds = []
    if shape.cpu_milli > 0:
        bounds.append(cpu // shape.cpu_milli)
    if mem is not None and shape.memory_mib > 0:
        bounds.append(mem // shape.memory_mib)
    return min(bounds) if bounds else None


def structural_stranding(
    cpu_capacity: int, gpu_count: int, shape: TaskRequest, mem_capacity: int | None = None
) -> int:
    """Whole devices (milli) of an idle node that its full CPU could never feed with copies of ``shape``.

    A 96-CPU, 8-GPU node runs at most five copies of a 1-GPU task asking 18.7 CPUs: three of its
    GPUs are stranded for that shape before anything is placed. That is a property of the node's
    build, not of any placement. With ``mem_capacity`` the node's memory bounds the copies too.
    """
    if shape.gpu_count == 0 or shape.gpu_milli == 0:
        return 0
    copies = _copies(cpu_capacity, mem_capacity, shape)
    if copies is None:
        return 0
    return max(gpu_count - min(copies * shape.gpu_count, gpu_count), 0) * MILLI


def cpu_excess_fragmentation(
    cpu_left: int,
    device_free: Sequence[int],
    gpu_model: str | None,
    mix: Sequence[tuple[TaskRequest, float]],
    *,
    cpu_capacity: int,
    gpu_count: int,
) -> float:
    """``cpu_aware_fragmentation`` counting only the stranding placements add to the node's own.

    The look-ahead of ``cpu_aware_fragmentation`` counts GPU the node's free CPU cannot feed. Part
    of that is structural (``structural_stranding``): a node with little CPU per GPU strands GPUs
    for CPU-heavy shapes while still idle, and every placement on it that uses CPU keeps it there
    or adds to it, whereas a CPU-rich node never shows any, so the plain look-ahead pulls tasks to
    the CPU-richest nodes. Here a shape's stranded share counts only beyond its structural amount
    on this node; the devices too small for the shape count as in FGD.
    """
    return excess_fragmentation(
        cpu_left, None, device_free, gpu_model, mix, cpu_capacity=cpu_capacity, gpu_count=gpu_count
    )


def fit_excess_fragmentation(
    cpu_left: int,
    mem_left: int,
    device_free: Sequence[int],
    gpu_model: str | None,
    mix: Sequence[tuple[TaskRequest, float]],
    *,
    cpu_capacity: int,
    mem_capacity: int,
    gpu_count: int,
) -> float:
    """``cpu_excess_fragmentation`` with memory as a second resource that feeds devices.

    A shape fits only where the free memory holds one copy, and feeds only as many fitting devices
    as free CPU and free memory both allow; stranding counts beyond what the idle node's CPU and
    memory strand (``structural_stranding``). The openb G2 nodes (96 CPUs, 384 GiB, 8 GPUs) have
    48 GiB per GPU while the commonest 1-GPU pod asks 48-77 GiB, the 8-GPU pods 257-320 GiB and the
    shares 30-46 GiB each: memory, which FGD does not look at, runs out before the GPUs there.
    """
    return excess_fragmentation(
        cpu_left,
        mem_left,
        device_free,
        gpu_model,
        mix,
        cpu_capacity=cpu_capacity,
        mem_capacity=mem_capacity,
        gpu_count=gpu_count,
    )


def excess_fragmentation(
    cpu_left: int,
    mem_left: int | None,
    device_free: Sequence[int],
    gpu_model: str | None,
    mix: Sequence[tuple[TaskRequest, float]],
    *,
    cpu_capacity: int | None,
    gpu_count: int,
    mem_capacity: int | None = None,
) -> float:
    """The look-ahead measures in one: memory is tested and feeds devices only when ``mem_left`` is
    given; stranding counts beyond the idle node's own (``structural_stranding``) only when
    ``cpu_capacity`` is given, else all of it counts (``cpu_aware_fragmentation``)."""
    total = sum(device_free)
    largest_first = sorted(device_free, reverse=True)
    frag = 0.0
    for shape, weight in mix:
        usable = _fitting_and_fed(cpu_left, device_free, gpu_model, shape, mem_left)
        if usable is None:
            frag += weight * total
            continue
        fitting, fed = usable
        fitting_free = sum(largest_first[:fitting])
        stranded = fitting_free - sum(largest_first[:fed])
        if cpu_capacity is not None:
            stranded = max(stranded - structural_stranding(cpu_capacity, gpu_count, shape, mem_capacity), 0)
        frag += weight * (total - fitting_free + stranded)
    return frag
