"""The FGD paper's placement replay (Weng et al., ATC'23), vectorised over nodes with numpy.

Protocol, as in the authors' simulator: shuffle the pod list with the seed, then draw pods at
random from it until the total GPU request would pass ``inflation`` x the cluster's GPUs; place the
pods one by one in that order, never removing any; record allocated GPU share against arrived GPU
requests. Each policy is a node score from ``scheduler.scores``; the node with the highest score
wins, ties going to the first node of a random order fixed per run, as in the authors' patched
kube-scheduler. The per-node scorers are what the live
scheduler runs; here the same formulas are evaluated for all nodes at once, and the devices on the
chosen node are picked by the same rules (tests check that scores and devices agree).

FGD's fragmentation is cached per node, and its score per request shape (CPU, device count and
share: 91 distinct shapes in the default list) and node: a placement changes one node, so only
nodes changed since a shape was last scored are recomputed (about 4x faster, same decisions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from modelplane.core.node import Node
from modelplane.core.workload import TaskRequest
from modelplane.scheduler.scores._common import (
    MAX_SPEC_CPU_MILLI,
    MAX_SPEC_GPU_MILLI,
    MILLI,
    best_fit_devices,
    exclusive_devices,
)
from modelplane.scheduler.scores.fgd import fgd_int_score
from modelplane.scheduler.scores.fgd_plus import TIE_SCALE
from modelplane.scheduler.scores.fragmentation import typical_mix

IntArr = npt.NDArray[np.int64]
FloatArr = npt.NDArray[np.float64]
BoolArr = npt.NDArray[np.bool_]

POLICIES = (
    "random", "dotprod", "gpuclustering", "gpupacking", "bestfit", "fgd", "fgd_plus", "fgd_cpu_pack",
    "fgd_cpu_aware", "fgd_cpu_excess", "fgd_fit_excess",
)
# policies that measure fragmentation and choose devices as FGD does
FGD_FAMILY = ("fgd", "fgd_plus", "fgd_cpu_pack", "fgd_cpu_aware", "fgd_cpu_excess", "fgd_fit_excess")
# policies whose measure reads the memory of the mix's shapes (the mix keeps memory in its shapes)
MEMORY_AWARE = ("fgd_fit_excess",)
# policies that judge a node opening a whole idle node by FGD's own measure
WHOLE_BY_FGD = ("fgd_cpu_excess", "fgd_fit_excess")
MAX_DEV = 8
MAX_TAGS = MAX_DEV + 1  # tag 0 = a share of one device, tag k = k whole devices


@dataclass
class ReplayResult:
    policy: str
    seed: int
    capacity_milli: int
    arrived_milli: IntArr
    allocated_milli: IntArr
    failed: int
    placed: int

    def ratio_at(self, arrived_pct: float) -> float:
        """Allocated share (%) when arrived requests reached ``arrived_pct`` % of capacity."""
        arrived = self.arrived_milli / self.capacity_milli * 100
        alloc = self.allocated_milli / self.capacity_milli * 100
        if arrived_pct >= arrived[-1]:
            return float(alloc[-1])
        return float(np.interp(arrived_pct, arrived, alloc))

    def curve(self, points: Sequence[int] = tuple(range(0, 131))) -> list[float]:
        return [round(self.ratio_at(p), 3) for p in points]


@dataclass
class ClusterState:
    """Free capacity of every node as arrays; ``gpu`` is padded with zeros beyond a node's devices."""

    nodes: list[Node]
    models: list[str]
    cpu: IntArr
    mem: IntArr
    gpu: IntArr  # (N, 8) free milli per device
    ngpu: IntArr
    model: IntArr  # index into models; len(models) for nodes without GPUs
    tags: IntArr = field(init=False)  # (N, 9) pods of each shape on the node

    def __post_init__(self) -> None:
        self.tags = np.zeros((len(self.nodes), MAX_TAGS), dtype=np.int64)

    @classmethod
    def of(cls, nodes: Sequence[Node]) -> ClusterState:
        models = sorted({n.gpu_model for n in nodes if n.gpu_model and n.gpu_count})
        index = {m: i for i, m in enumerate(models)}
        n = len(nodes)
        gpu = np.zeros((n, MAX_DEV), dtype=np.int64)
        for i, node in enumerate(nodes):
            if node.gpu_count > MAX_DEV:
                raise ValueError(f"node {node.name} has {node.gpu_count} devices; the replay supports up to {MAX_DEV}")
            gpu[i, : node.gpu_count] = MILLI
        return cls(
            nodes=list(nodes),
            models=models,
            cpu=np.array([x.cpu_milli for x in nodes], dtype=np.int64),
            mem=np.array([x.memory_mib for x in nodes], dtype=np.int64),
            gpu=gpu,
            ngpu=np.array([x.gpu_count for x in nodes], dtype=np.int64),
            model=np.array([index[x.gpu_model] if x.gpu_model and x.gpu_count else len(models) for x in nodes]),
        )

    def allowed_models(self, req: TaskRequest) -> BoolArr:
        """Per model index (plus 'no GPU' last): may the request use it."""
        out = np.ones(len(self.models) + 1, dtype=bool)
        if req.gpu_models:
            out[:] = False
            for i, m in enumerate(self.models):
                out[i] = m in req.gpu_models
        return out

    def device_list(self, i: int) -> list[int]:
        return [int(x) for x in self.gpu[i, : self.ngpu[i]]]


def shape_tag_index(req: TaskRequest) -> int:
    if req.gpu_count == 0:
        return -1
    return 0 if req.gpu_count == 1 and req.gpu_milli < MILLI else req.gpu_count


class Fragmentation:
    """Vectorised ``scores.fragmentation.node_fragmentation`` for a fixed mix of task shapes."""

    def __init__(self, state: ClusterState, mix: Sequence[tuple[TaskRequest, float]]) -> None:
        self.tc = np.array([s.cpu_milli for s, _ in mix], dtype=np.int64)
        self.tm = np.array([s.gpu_milli if s.gpu_count else 0 for s, _ in mix], dtype=np.int64)
        self.tg = np.array([s.gpu_count for s, _ in mix], dtype=np.int64)
        self.w = np.array([w for _, w in mix], dtype=np.float64)
        self.isgpu = (self.tg > 0) & (self.tm > 0)
        # Shapes share few distinct device shares: compare against each distinct share once.
        self.shares, self.share_of = np.unique(self.tm, return_inverse=True)
        # access[k, model]: may shape k use a node of that model ('no GPU' last: only shapes with no list)
        self.access = np.stack([state.allowed_models(s) for s, _ in mix]) if mix else np.zeros((0, 1), bool)
        for k, (s, _) in enumerate(mix):
            if s.gpu_models:
                self.access[k, -1] = False

    def of(self, cpu: IntArr, gpu: IntArr, model: IntArr, node: IntArr, mem: IntArr) -> FloatArr:
        """Fragmentation of M hypothetical nodes: cpu (M,), gpu (M, 8), model (M,), which node (M,),
        memory (M,; only the memory-aware measure reads it)."""
        total = gpu.sum(axis=1)
        g32 = gpu.astype(np.int32)
        fits = g32[:, None, :] >= self.shares[None, :, None].astype(np.int32)  # (M, distinct shares, 8)
        count = fits.sum(axis=2)[:, self.share_of]
        small = (g32[:, None, :] * ~fits).sum(axis=2)[:, self.share_of]
        q3 = self.isgpu[None, :] & self.access[:, model].T & (count >= self.tg[None, :]) & (cpu[:, None] >= self.tc[None, :])
        frag = np.where(q3, small, total[:, None]).astype(np.float64)
        out: FloatArr = frag @ self.w
        return out


class CpuExcessFragmentation(Fragmentation):
    """Vectorised ``scores.fragmentation.cpu_excess_fragmentation``: the look-ahead's stranded share
    counts only beyond what each node's build strands while idle (``structural_stranding``)."""

    reads_memory = False  # memory-aware subclass: the shapes' memory is tested and feeds devices
    structural = True  # False: all stranding counts, none is the node's build (the CPU-aware measure)

    def __init__(self, state: ClusterState, mix: Sequence[tuple[TaskRequest, float]]) -> None:
        super().__init__(state, mix)
        # a shape asking no memory is never bounded by it: the CPU-only measure is the case tmem = 0
        self.tmem = np.array([s.memory_mib if self.reads_memory else 0 for s, _ in mix], dtype=np.int64)
        cap_cpu = np.array([n.cpu_milli for n in state.nodes], dtype=np.int64)
        cap_mem = np.array([n.memory_mib for n in state.nodes], dtype=np.int64)
        fed = np.minimum(self.copies(cap_cpu, cap_mem) * self.tg[None, :], MAX_DEV)
        self.base: IntArr = (np.maximum(state.ngpu[:, None] - fed, 0) * MILLI).astype(np.int64)  # (N, shapes)
        if not self.structural:
            self.base[:] = 0

    def copies(self, cpu: IntArr, mem: IntArr) -> IntArr:
        """(M, shapes): copies of each shape that free CPU (and memory) could feed, at most MAX_DEV."""
        by_cpu = np.where(self.tc[None, :] > 0, cpu[:, None] // np.maximum(self.tc, 1)[None, :], MAX_DEV)
        by_mem = np.where(self.tmem[None, :] > 0, mem[:, None] // np.maximum(self.tmem, 1)[None, :], MAX_DEV)
        out: IntArr = np.minimum(np.minimum(by_cpu, by_mem), MAX_DEV)
        return out

    def of(self, cpu: IntArr, gpu: IntArr, model: IntArr, node: IntArr, mem: IntArr) -> FloatArr:
        total = gpu.sum(axis=1)
        largest_first = -np.sort(-gpu, axis=1)
        zero = np.zeros((len(gpu), 1), dtype=np.int64)
        prefix = np.concatenate([zero, np.cumsum(largest_first, axis=1)], axis=1)
        fits = largest_first.astype(np.int32)[:, None, :] >= self.shares[None, :, None].astype(np.int32)
        count = fits.sum(axis=2)[:, self.share_of]
        fed = np.minimum(count, np.minimum(self.copies(cpu, mem) * self.tg[None, :], MAX_DEV))
        fitting_free = np.take_along_axis(prefix, count, axis=1)
        stranded = fitting_free - np.take_along_axis(prefix, fed, axis=1)
        excess = np.maximum(stranded - self.base[node], 0)
        fit = self.isgpu[None, :] & self.access[:, model].T & (count >= self.tg[None, :])
        fit &= (cpu[:, None] >= self.tc[None, :]) & (mem[:, None] >= self.tmem[None, :])
        frag = np.where(fit, total[:, None] - fitting_free + excess, total[:, None]).astype(np.float64)
        out: FloatArr = frag @ self.w
        return out


class FitExcessFragmentation(CpuExcessFragmentation):
    """Vectorised ``scores.fragmentation.fit_excess_fragmentation``: ``CpuExcessFragmentation`` with
    memory as a second resource that feeds devices, both in the fit test and in the look-ahead."""

    reads_memory = True


class CpuAwareFragmentation(CpuExcessFragmentation):
    """Vectorised ``scores.fragmentation.cpu_aware_fragmentation``: a shape feeds at most
    (free CPU // its CPU) x its device count of the fitting devices, largest first; every device it
    cannot feed counts, structural or not."""

    structural = False


class Replay:
    """One placement replay of one policy on one ordered pod sequence."""

    def __init__(self, nodes: Sequence[Node], policy: str, mix: Sequence[tuple[TaskRequest, float]], seed: int) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
        self.state = ClusterState.of(nodes)
        self.policy = policy
        self.mix = list(mix)
        self.rng = np.random.default_rng(seed)
        # The reference breaks ties by the lexicographically smallest node name, and names every
        # node with a random index prefix: ties go to the first node of a random fixed order.
        self.rank = self.rng.permutation(len(nodes))
        self.frag: Fragmentation | None = None
        self.frag_now: FloatArr | None = None
        # FGD deltas depend on the request's shape (CPU, device count and share) and the node's free
        # capacity alone; a placement changes one node, so per shape only changed nodes are recomputed.
        self.version = np.zeros(len(nodes), dtype=np.int64)
        self._delta_cache: dict[tuple[int, int, int, int], tuple[FloatArr, IntArr]] = {}
        # fgd_cpu_excess judges nodes that would open a whole idle node by FGD's own measure
        self.whole_frag: Fragmentation | None = None
        self.whole_frag_now: FloatArr | None = None
        self.largest_task = max((shape.gpu_count for shape, _ in self.mix), default=0)
        if policy in FGD_FAMILY:
            measures: dict[str, type[Fragmentation]] = {
                "fgd_cpu_aware": CpuAwareFragmentation,
                "fgd_cpu_excess": CpuExcessFragmentation,
                "fgd_fit_excess": FitExcessFragmentation,
            }
            measure = measures.get(policy, Fragmentation)
            s = self.state
            everyone = np.arange(len(nodes))
            self.frag = measure(s, self.mix)
            self.frag_now = self.frag.of(s.cpu, s.gpu, s.model, everyone, s.mem)
            if policy in WHOLE_BY_FGD:
                self.whole_frag = Fragmentation(s, self.mix)
                self.whole_frag_now = self.whole_frag.of(s.cpu, s.gpu, s.model, everyone, s.mem)
        self._scorers: dict[str, Callable[[TaskRequest, IntArr], IntArr | FloatArr]] = {
            "random": self._random,
            "bestfit": self._bestfit,
            "dotprod": self._dotprod,
            "gpupacking": self._gpupacking,
            "gpuclustering": self._gpuclustering,
            "fgd": self._fgd,
            "fgd_plus": self._fgd_plus,
            "fgd_cpu_pack": self._fgd_cpu_pack,
            "fgd_cpu_aware": self._fgd_cpu_pack,  # the same scores over the CPU-aware measure (self.frag)
            "fgd_cpu_excess": self._fgd_cpu_pack,  # ... over the excess measure, FGD's for whole idle nodes
            "fgd_fit_excess": self._fgd_cpu_pack,  # ... over the excess measure with memory
        }

    # -- feasibility -------------------------------------------------------------------------
    def feasible(self, req: TaskRequest) -> IntArr:
        s = self.state
        ok = (s.cpu >= req.cpu_milli) & (s.mem >= req.memory_mib)
        if req.gpu_count:
            ok &= s.ngpu > 0
            ok &= s.allowed_models(req)[s.model]
            ok &= (s.gpu >= req.gpu_milli).sum(axis=1) >= req.gpu_count
        return np.flatnonzero(ok)

    # -- scores over candidate nodes (same formulas as scheduler.scores) ----------------------
    def _random(self, req: TaskRequest, idx: IntArr) -> IntArr:
        return np.zeros(len(idx), dtype=np.int64)

    def _bestfit(self, req: TaskRequest, idx: IntArr) -> IntArr:
        s = self.state
        left = (s.cpu[idx] - req.cpu_milli) / MAX_SPEC_CPU_MILLI * 0.5
        left = 0.0 + left
        left = left + (s.gpu[idx].sum(axis=1) - req.total_gpu_milli) / MAX_SPEC_GPU_MILLI * 0.5
        return np.asarray(((1.0 - left) * 100).astype(np.int64), dtype=np.int64)

    def _dotprod(self, req: TaskRequest, idx: IntArr) -> IntArr:
        s = self.state
        dot = 0.0 + (s.cpu[idx] / MAX_SPEC_CPU_MILLI) * (req.cpu_milli / MAX_SPEC_CPU_MILLI)
        dot = dot + (s.gpu[idx].sum(axis=1) / MAX_SPEC_GPU_MILLI) * (req.total_gpu_milli / MAX_SPEC_GPU_MILLI)
        return np.asarray((100 * (1.0 - dot / 2.0)).astype(np.int64), dtype=np.int64)

    def _gpupacking(self, req: TaskRequest, idx: IntArr) -> IntArr:
        if req.total_gpu_milli <= 0:
            return np.zeros(len(idx), dtype=np.int64)
        s = self.state
        gpu = s.gpu[idx]
        ngpu = s.ngpu[idx]
        whole = (gpu == MILLI).sum(axis=1)
        idle = np.maximum(100 // 3 - whole, whole)
        if req.gpu_milli >= MILLI:
            used = np.full(len(idx), max(100 // 2 - req.gpu_count, 100 // 3))
        else:
            fit = np.where(gpu >= req.gpu_milli, gpu, MILLI + 1).min(axis=1)
            shared = np.maximum(100 - (fit * 100 // MILLI) // 10, 100 // 2)
            used = np.where(fit == MILLI, max(100 // 2 - 1, 100 // 3), shared)
        return np.where(whole == ngpu, idle, used).astype(np.int64)

    def _gpuclustering(self, req: TaskRequest, idx: IntArr) -> IntArr:
        tag = shape_tag_index(req)
        if tag < 0:
            return np.zeros(len(idx), dtype=np.int64)
        s = self.state
        fullness = 25 * (MAX_SPEC_GPU_MILLI - s.gpu[idx].sum(axis=1)) // MAX_SPEC_GPU_MILLI
        present = s.tags[idx] > 0
        kinds = present.sum(axis=1)
        has = present[:, tag]
        band = np.where(has, np.where(kinds == 1, 75, 50), np.where(kinds == 0, 25, 0))
        return np.asarray((fullness + band).astype(np.int64), dtype=np.int64)

    def _fgd_deltas(self, req: TaskRequest, idx: IntArr) -> FloatArr:
        """Best (fragmentation before - after) per candidate node, from the per-shape cache."""
        memory = req.memory_mib if self.policy in MEMORY_AWARE else 0
        key = (req.cpu_milli, req.gpu_count, req.gpu_milli, memory)
        if key not in self._delta_cache:
            n = len(self.state.nodes)
            self._delta_cache[key] = (np.zeros(n, dtype=np.float64), np.full(n, -1, dtype=np.int64))
        values, seen = self._delta_cache[key]
        stale = idx[seen[idx] != self.version[idx]]
        if len(stale):
            values[stale] = self._fgd_deltas_now(req, stale)
            seen[stale] = self.version[stale]
        out: FloatArr = values[idx]
        return out

    def _fgd_deltas_now(self, req: TaskRequest, idx: IntArr) -> FloatArr:
        """Best (fragmentation before - after) per candidate node, computed afresh."""
        assert self.frag is not None and self.frag_now is not None
        if self.whole_frag is None or self.whole_frag_now is None or not req.wants_gpu:
            return self._deltas_by(self.frag, self.frag_now, req, idx)
        opens = self.opens_whole_node(idx)  # judged by FGD's own measure (scores.fgd_cpu_excess)
        out = np.empty(len(idx), dtype=np.float64)
        if (~opens).any():
            out[~opens] = self._deltas_by(self.frag, self.frag_now, req, idx[~opens])
        if opens.any():
            out[opens] = self._deltas_by(self.whole_frag, self.whole_frag_now, req, idx[opens])
        return out

    def opens_whole_node(self, idx: IntArr) -> BoolArr:
        """``scores.fgd_cpu_excess.opens_whole_node``: all devices free, as many as the mix's largest task."""
        s = self.state
        idle = (s.gpu[idx] == MILLI).sum(axis=1) == s.ngpu[idx]
        out: BoolArr = idle & (s.ngpu[idx] > 0) & (s.ngpu[idx] >= self.largest_task)
        return out

    def _deltas_by(self, frag: Fragmentation, frag_now: FloatArr, req: TaskRequest, idx: IntArr) -> FloatArr:
        s = self.state
        gpu = np.sort(s.gpu[idx], axis=1)  # fragmentation is symmetric in the devices
        cpu_after = s.cpu[idx] - req.cpu_milli
        mem_after = s.mem[idx] - req.memory_mib
        before = frag_now[idx]
        if req.gpu_count == 1 and req.gpu_milli < MILLI:
            first = np.ones_like(gpu, dtype=bool)
            first[:, 1:] = gpu[:, 1:] != gpu[:, :-1]
            rows, cols = np.nonzero(first & (gpu >= req.gpu_milli))
            after = gpu[rows].copy()
            after[np.arange(len(rows)), cols] -= req.gpu_milli
            f_after = frag.of(cpu_after[rows], after, s.model[idx][rows], idx[rows], mem_after[rows])
            delta = np.full(len(idx), -np.inf)
            np.maximum.at(delta, rows, before[rows] - f_after)
            return delta
        after = gpu.copy()
        if req.gpu_count:
            after[:, MAX_DEV - req.gpu_count :] -= MILLI  # sorted ascending: whole free devices are last
        out: FloatArr = before - frag.of(cpu_after, after, s.model[idx], idx, mem_after)
        return out

    def _fgd(self, req: TaskRequest, idx: IntArr) -> IntArr:
        d = np.round(self._fgd_deltas(req, idx), 6)
        return (1.0 / (1.0 + np.exp(-d / 1000.0)) * 100).astype(np.int64)

    def _fgd_plus(self, req: TaskRequest, idx: IntArr) -> FloatArr:
        s = self.state
        left = (s.gpu[idx].sum(axis=1) - req.total_gpu_milli) / MAX_SPEC_GPU_MILLI
        tie = np.clip(1.0 - left, 0.0, 1.0) * TIE_SCALE
        out: FloatArr = self._fgd(req, idx) + tie
        return out

    def _fgd_cpu_pack(self, req: TaskRequest, idx: IntArr) -> IntArr | FloatArr:
        return self._fgd(req, idx) if req.wants_gpu else self._fgd_plus(req, idx)

    # -- placement -----------------------------------------------------------------------------
    def devices_on(self, i: int, req: TaskRequest) -> tuple[int, ...]:
        s = self.state
        free = s.device_list(i)
        if self.policy == "random" and req.gpu_count == 1 and req.gpu_milli < MILLI:
            fitting = [d for d, f in enumerate(free) if f >= req.gpu_milli]
            return (fitting[int(self.rng.integers(len(fitting)))],)
        if self.policy in FGD_FAMILY and req.gpu_count:
            return self.fgd_devices(i, req)
        return best_fit_devices(free, req)

    def fgd_devices(self, i: int, req: TaskRequest) -> tuple[int, ...]:
        """``scores.fgd``'s device choice on node i (first device of the best integer score),
        with the fragmentation after each option evaluated by the vectorised measure."""
        assert self.frag is not None and self.frag_now is not None
        s = self.state
        if not (req.gpu_count == 1 and req.gpu_milli < MILLI):
            return exclusive_devices(s.device_list(i), req.gpu_count)
        frag, frag_now = self.frag, self.frag_now
        if self.whole_frag is not None and self.whole_frag_now is not None and self.opens_whole_node(np.array([i]))[0]:
            frag, frag_now = self.whole_frag, self.whole_frag_now
        options = np.flatnonzero(s.gpu[i, : s.ngpu[i]] >= req.gpu_milli)
        after = np.repeat(s.gpu[i : i + 1], len(options), axis=0)
        after[np.arange(len(options)), options] -= req.gpu_milli
        cpu_after = np.full(len(options), s.cpu[i] - req.cpu_milli)
        mem_after = np.full(len(options), s.mem[i] - req.memory_mib)
        same = np.full(len(options), i)
        deltas = frag_now[i] - frag.of(cpu_after, after, s.model[same], same, mem_after)
        scores = [fgd_int_score(float(d)) for d in deltas]
        return (int(options[scores.index(max(scores))]),)

    def place(self, req: TaskRequest) -> int | None:
        """Place one task; returns the node index or None when no node fits."""
        idx = self.feasible(req)
        if len(idx) == 0:
            return None
        if self.policy == "random":
            i = int(idx[self.rng.integers(len(idx))])
        else:
            scores = self._scorers[self.policy](req, idx)
            top = idx[scores == scores.max()]
            i = int(top[np.argmin(self.rank[top])])
        self.take(i, req, self.devices_on(i, req))
        return i

    def take(self, i: int, req: TaskRequest, devices: tuple[int, ...]) -> None:
        s = self.state
        s.cpu[i] -= req.cpu_milli
        s.mem[i] -= req.memory_mib
        for d in devices:
            if s.gpu[i, d] < req.gpu_milli:
                raise AssertionError(f"device {d} of node {s.nodes[i].name} over-allocated")
            s.gpu[i, d] -= req.gpu_milli
        tag = shape_tag_index(req)
        if tag >= 0:
            s.tags[i, tag] += 1
        self.version[i] += 1
        one = np.array([i])
        if self.frag is not None and self.frag_now is not None:
            self.frag_now[i] = self.frag.of(s.cpu[one], s.gpu[one], s.model[one], one, s.mem[one])[0]
        if self.whole_frag is not None and self.whole_frag_now is not None:
            self.whole_frag_now[i] = self.whole_frag.of(s.cpu[one], s.gpu[one], s.model[one], one, s.mem[one])[0]


def inflated_order(requests: Sequence[TaskRequest], capacity_milli: int, ratio: float, seed: int) -> list[int]:
    """Shuffle the list, then add random draws from it until GPU requests would pass ratio x capacity.

    A list that already requests more loses pods at random until it is within the target, as the
    reference's tune-down does.
    """
    if not any(r.wants_gpu for r in requests):
        raise ValueError("no pod in the list requests a GPU; the protocol inflates GPU requests")
    rng = np.random.default_rng(seed)
    order = [int(x) for x in rng.permutation(len(requests))]
    total = sum(r.total_gpu_milli for r in requests)
    target = ratio * capacity_milli
    if total > target:
        while total > target:
            k = int(rng.integers(len(order)))
            total -= requests[order.pop(k)].total_gpu_milli
        return order
    while True:
        j = int(rng.integers(len(requests)))
        # The reference compares with the per-device share before adding the whole request; kept as is.
        if total + requests[j].gpu_milli > target:
            break
        total += requests[j].total_gpu_milli
        order.append(j)
    return order


def replay(
    nodes: Sequence[Node],
    requests: Sequence[TaskRequest],
    policy: str,
    seed: int,
    ratio: float = 1.3,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """The FGD protocol for one policy and seed; the mix of shapes comes from the original list
    (for memory-aware policies each shape carries the least memory its pods ask)."""
    capacity = sum(n.gpu_count for n in nodes) * MILLI
    order = inflated_order(requests, capacity, ratio, seed)
    mix = typical_mix(requests, memory=policy in MEMORY_AWARE)
    r = Replay(nodes, policy, mix, seed)
    arrived = np.zeros(len(order) + 1, dtype=np.int64)
    allocated = np.zeros(len(order) + 1, dtype=np.int64)
    failed = placed = 0
    for k, j in enumerate(order, start=1):
        req = requests[j]
        got = r.place(req)
        arrived[k] = arrived[k - 1] + req.total_gpu_milli
        allocated[k] = allocated[k - 1] + (req.total_gpu_milli if got is not None else 0)
        if got is None:
            failed += 1
        else:
            placed += 1
        if progress is not None and k % 500 == 0:
            progress(k, len(order))
    return ReplayResult(policy, seed, capacity, arrived, allocated, failed, placed)


__all__ = [
    "POLICIES",
    "ClusterState",
    "CpuAwareFragmentation",
    "CpuExcessFragmentation",
    "FitExcessFragmentation",
    "Fragmentation",
    "Replay",
    "ReplayResult",
    "inflated_order",
    "replay",
]
