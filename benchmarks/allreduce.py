"""Flat vs hierarchical AllReduce across emulated nodes: network namespaces joined by veth links
through a bridge, each node's link shaped with ``tc tbf`` (default 200 Mbit/s); ranks inside a
node talk over loopback. Needs root (ip netns, tc); cleans up after itself.

For each node count and buffer size: median time of torch.distributed.all_reduce (gloo, flat)
and of modelplane's HierarchicalAllReduce, their ratio, results checked equal, and the achieved
inter-node bandwidth against the shaped link (bytes each node must send: flat ring 2(n-1)/n x S
per ring edge, hierarchical 2(N-1)/N x S per node).

    sudo PYTHONPATH=src .venv/bin/python benchmarks/allreduce.py [--nodes 2 4] [--mib 1 4 16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sh(cmd: str, check: bool = True) -> None:
    subprocess.run(cmd, shell=True, check=check, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class Fabric:
    """N namespaces on a bridge; egress of both veth ends shaped to ``mbit``."""

    def __init__(self, nodes: int, mbit: int) -> None:
        self.tag = f"mp{os.getpid() % 10000}"
        self.nodes, self.mbit = nodes, mbit
        self.sw = f"{self.tag}sw"

    def ns(self, i: int) -> str:
        return f"{self.tag}n{i}"

    def ip(self, i: int) -> str:
        return f"10.77.{os.getpid() % 200}.{i + 1}"

    def __enter__(self) -> Fabric:
        try:
            sh(f"ip netns add {self.sw}")
            sh(f"ip -n {self.sw} link add br0 type bridge && ip -n {self.sw} link set br0 up")
            shape = f"tbf rate {self.mbit}mbit burst 64kb latency 100ms"
            for i in range(self.nodes):
                ns, a, b = self.ns(i), f"{self.tag}a{i}", f"{self.tag}b{i}"
                sh(f"ip netns add {ns}")
                sh(f"ip link add {a} type veth peer name {b}")
                sh(f"ip link set {a} netns {ns} && ip link set {b} netns {self.sw}")
                sh(f"ip -n {self.sw} link set {b} master br0 && ip -n {self.sw} link set {b} up")
                sh(
                    f"ip -n {ns} addr add {self.ip(i)}/24 dev {a} && ip -n {ns} link set {a} up && ip -n {ns} link set lo up"
                )
                sh(f"ip netns exec {ns} tc qdisc add dev {a} root {shape}")
                sh(f"ip netns exec {self.sw} tc qdisc add dev {b} root {shape}")
        except subprocess.CalledProcessError as exc:
            self.__exit__()
            raise SystemExit(
                f"could not build the emulated fabric ({exc.stderr.decode().strip()}): run as root"
            ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        for i in range(self.nodes):
            sh(f"ip netns del {self.ns(i)}", check=False)
        sh(f"ip netns del {self.sw}", check=False)


def run_job(fabric: Fabric, per_node: int, sizes: list[int], reps: int, out: Path) -> dict:
    world = fabric.nodes * per_node
    procs = []
    for rank in range(world):
        node = rank // per_node
        env = dict(
            os.environ,
            RANK=str(rank),
            WORLD_SIZE=str(world),
            LOCAL_WORLD_SIZE=str(per_node),
            MASTER_ADDR=fabric.ip(0),
            MASTER_PORT="29533",
            GLOO_SOCKET_IFNAME=f"{fabric.tag}a{node}",
            OMP_NUM_THREADS="1",
            PYTHONPATH=str(REPO / "src"),
        )
        cmd = [
            "ip",
            "netns",
            "exec",
            fabric.ns(node),
            sys.executable,
            __file__,
            "--worker",
            str(out),
            "--reps",
            str(reps),
            "--mib",
            *map(str, sizes),
        ]
        procs.append(subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=900)
        if p.returncode:
            raise SystemExit(f"worker failed: {err[-2000:]}")
    return json.loads(out.read_text())


def worker(out: str, sizes: list[int], reps: int) -> None:
    import torch
    import torch.distributed as dist

    from modelplane.train.collectives import HierarchicalAllReduce, NodeLayout

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    per_node = int(os.environ["LOCAL_WORLD_SIZE"])
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
        rank=rank,
        world_size=world,
    )
    hier = HierarchicalAllReduce(NodeLayout.contiguous(world, per_node))
    results = {}
    for mib in sizes:
        n = mib * (1 << 20) // 4
        x = torch.randn(n, generator=torch.Generator().manual_seed(rank))
        times: dict[str, list[float]] = {"flat": [], "hierarchical": []}
        outs = {}
        for _ in range(reps):
            for name in ("flat", "hierarchical"):
                buf = x.clone()
                dist.barrier()
                t0 = time.perf_counter()
                if name == "flat":
                    dist.all_reduce(buf)
                else:
                    hier.all_reduce(buf)
                times[name].append(time.perf_counter() - t0)
                outs[name] = buf
        # every rank's time counts: the collective ends when the slowest rank is done
        med = {k: torch.tensor([statistics.median(v)]) for k, v in times.items()}
        for v in med.values():
            dist.all_reduce(v, op=dist.ReduceOp.MAX)
        equal = torch.allclose(outs["flat"], outs["hierarchical"], rtol=1e-4, atol=1e-4)
        results[mib] = {
            "flat_s": float(med["flat"]),
            "hierarchical_s": float(med["hierarchical"]),
            "equal": bool(equal),
        }
    if rank == 0:
        Path(out).write_text(json.dumps(results))
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", default=None)
    ap.add_argument("--nodes", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--per-node", type=int, default=2)
    ap.add_argument("--mib", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--mbit", type=int, default=200)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker, a.mib, a.reps)
        return
    link = a.mbit * 1e6 / 8
    report: dict = {
        "benchmark": "allreduce",
        "link_mbit_s": a.mbit,
        "ranks_per_node": a.per_node,
        "runs": [],
    }
    for nodes in a.nodes:
        with Fabric(nodes, a.mbit) as fabric, tempfile.TemporaryDirectory() as tmp:
            log(f"{nodes} nodes x {a.per_node} ranks, {a.mbit} Mbit/s links")
            res = run_job(fabric, a.per_node, a.mib, a.reps, Path(tmp) / "out.json")
        n, big_n = nodes * a.per_node, nodes
        for mib, r in res.items():
            s = int(mib) * (1 << 20)
            hier_link = 2 * (big_n - 1) / big_n * s / r["hierarchical_s"]  # bytes each node link carried / s
            flat_link = 2 * (n - 1) / n * s / r["flat_s"]
            report["runs"].append(
                {
                    "nodes": nodes,
                    "mib": int(mib),
                    "flat_s": round(r["flat_s"], 4),
                    "hierarchical_s": round(r["hierarchical_s"], 4),
                    "speedup": round(r["flat_s"] / r["hierarchical_s"], 3),
                    "equal": r["equal"],
                    "hierarchical_link_utilization": round(hier_link / link, 3),
                    "flat_link_utilization": round(flat_link / link, 3),
                }
            )
            log(f"  {mib} MiB: flat {r['flat_s']:.3f} s, hierarchical {r['hierarchical_s']:.3f} s")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
