"""Host snapshot of a state dict for asynchronous checkpoints.

Why not DCP's DefaultStager: it walks the state dict in Python and copies tensor by tensor into
separately allocated host tensors. Here all tensors of a save live in one preallocated buffer,
page-aligned (pinned on CUDA), laid out once and reused from save to save, each tensor at a
4 KiB boundary with zero padding between. Taking the snapshot is then a single
``torch._foreach_copy_`` into existing views (no allocation, no per-tensor Python work), and the
writer streams the buffer to disk as one run, straight from memory (O_DIRECT needs the alignment).

The snapshot is consistent at the step: :meth:`HostSnapshot.copy` returns only when every byte is
in host memory (a CUDA copy is synchronized), unless the caller runs it beside training and fences
the next change of the state itself (the manager's ``overlap_staging`` does, at the optimizer step).
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import Any

from modelplane.train.storage import ALIGN, align_up

GROUP_BYTES = 64 << 20  # copy granularity: how far the writer may trail the snapshot


class Progress:
    """How far the snapshot has filled the host buffer: the writer streams bytes below the
    watermark to disk while the rest is still being copied, so a save's total time is about the
    longer of the copy and the write instead of their sum."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._upto = 0
        self._error: BaseException | None = None

    def advance(self, upto: int) -> None:
        with self._cond:
            self._upto = max(self._upto, upto)
            self._cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        with self._cond:
            self._error = exc
            self._cond.notify_all()

    def wait_for(self, upto: int) -> None:
        with self._cond:
            while self._upto < upto and self._error is None:
                self._cond.wait()
            if self._error is not None and self._upto < upto:
                raise RuntimeError(f"the snapshot failed before it was complete: {self._error!r}")


class Unsupported(Exception):
    """The state holds a tensor subclass (DTensor, ShardedTensor) this buffer cannot stand in for."""


@dataclass
class _Slot:
    index: int


@dataclass
class Prepared:
    """A staged state dict (same structure, tensors replaced by views of the host buffer) and the
    copies that fill it."""

    state: Any
    sources: list[Any]
    views: list[Any]


@dataclass
class HostSnapshot:
    pin_memory: bool | None = None  # None: pin when a source tensor is on CUDA
    _key: tuple[Any, ...] | None = field(default=None, init=False, repr=False)
    _base: Any = field(default=None, init=False, repr=False)
    _buffer: Any = field(default=None, init=False, repr=False)
    _views: list[Any] = field(default_factory=list, init=False, repr=False)
    allocations: int = field(default=0, init=False)

    @property
    def regions(self) -> list[tuple[int, int]]:
        """Address ranges whose padding is owned zeroed memory (for the raw writer)."""
        if self._buffer is None:
            return []
        start = int(self._buffer.data_ptr())
        return [(start, start + int(self._buffer.numel()))]

    @property
    def nbytes(self) -> int:
        return 0 if self._buffer is None else int(self._buffer.numel())

    def prepare(self, state: Any) -> Prepared:
        """Lay the state out in the host buffer (allocating only when its shapes changed) and
        return the staged structure; nothing is copied yet."""
        sources: list[Any] = []
        skeleton = _strip(state, sources)
        key = tuple((t.dtype, tuple(t.shape), t.device.type) for t in sources)
        if key != self._key:
            self._allocate(sources, key)
        staged = _fill(skeleton, self._views)
        return Prepared(staged, sources, self._views)

    def _allocate(self, sources: list[Any], key: tuple[Any, ...]) -> None:
        import torch

        sizes = [t.numel() * t.element_size() for t in sources]
        total = max(ALIGN, sum(align_up(n) for n in sizes))
        pin = self.pin_memory
        if pin is None:
            pin = any(t.device.type == "cuda" for t in sources) and torch.cuda.is_available()
        self._base = self._buffer = None
        self._views = []
        base = torch.empty(total + ALIGN, dtype=torch.uint8, pin_memory=bool(pin))
        skip = (-int(base.data_ptr())) % ALIGN
        buffer = base[skip : skip + total]
        buffer.zero_()  # fault every page in now, not during the first blocking window; zero padding
        views = []
        offset = 0
        for t, n in zip(sources, sizes, strict=True):
            views.append(buffer[offset : offset + n].view(t.dtype).view(t.shape))
            offset += align_up(n)
        self._base, self._buffer, self._views, self._key = base, buffer, views, key
        self.allocations += 1

    @staticmethod
    def copy(prepared: Prepared, which: list[int] | None = None, progress: Progress | None = None) -> None:
        """Copy the sources (all, or the indices in ``which``) into the buffer; returns when done.

        With ``progress``, copies in buffer order in groups of about GROUP_BYTES and raises the
        watermark after each group (the end of the group's last view, padding included)."""
        idx = list(range(len(prepared.sources))) if which is None else list(which)
        if progress is None:
            _copy_group(prepared, idx)
            return
        idx.sort(key=lambda i: int(prepared.views[i].data_ptr()))
        try:
            group: list[int] = []
            size = 0
            for i in idx:
                group.append(i)
                size += prepared.views[i].numel() * prepared.views[i].element_size()
                if size >= GROUP_BYTES:
                    _copy_group(prepared, group)
                    progress.advance(_end_of(prepared.views[group[-1]]))
                    group, size = [], 0
            if group:
                _copy_group(prepared, group)
            progress.advance(1 << 62)  # complete
        except BaseException as exc:
            progress.fail(exc)
            raise

    def close(self) -> None:
        self._base = self._buffer = self._key = None
        self._views = []


def _end_of(view: Any) -> int:
    return int(view.data_ptr()) + align_up(view.numel() * view.element_size())


def _copy_group(prepared: Prepared, idx: list[int]) -> None:
    import torch

    by_device: dict[Any, tuple[list[Any], list[Any]]] = {}
    for i in idx:
        src = prepared.sources[i]
        dst, srcs = by_device.setdefault(src.device, ([], []))
        dst.append(prepared.views[i])
        srcs.append(src)
    for device, (dst, srcs) in by_device.items():
        if device.type == "cuda":
            torch._foreach_copy_(dst, srcs, non_blocking=True)
            torch.cuda.current_stream(device).synchronize()
        else:
            torch._foreach_copy_(dst, srcs)


def _strip(obj: Any, out: list[Any]) -> Any:
    """The structure of ``obj`` with every tensor replaced by a slot; tensors appended to ``out``."""
    import torch

    if isinstance(obj, torch.Tensor):
        if type(obj) not in (torch.Tensor, torch.nn.Parameter):
            raise Unsupported(type(obj).__name__)
        out.append(obj.detach())
        return _Slot(len(out) - 1)
    if isinstance(obj, dict):
        return {k: _strip(v, out) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_strip(v, out) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_strip(v, out) for v in obj)
    if isinstance(obj, (int, float, str, bool, bytes, type(None))):
        return obj
    return copy.deepcopy(obj)  # a small non-tensor leaf: its value as of the snapshot


def _fill(skeleton: Any, views: list[Any]) -> Any:
    if isinstance(skeleton, _Slot):
        return views[skeleton.index]
    if isinstance(skeleton, dict):
        return {k: _fill(v, views) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [_fill(v, views) for v in skeleton]
    if isinstance(skeleton, tuple):
        return tuple(_fill(v, views) for v in skeleton)
    return skeleton
