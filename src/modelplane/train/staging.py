"""Host snapshot of a state dict for asynchronous checkpoints, and live reads in its place.

Why not DCP's DefaultStager: it walks the state dict in Python and copies tensor by tensor into
separately allocated host tensors. Here all tensors of a save live in one preallocated buffer
(pinned on CUDA), laid out once and reused from save to save, each tensor on pages of its own at
the same offset within a 4 KiB page as its source (zero padding between), so the writer can
switch from the source to the copy in the middle of a tensor and keep writing with O_DIRECT
(which needs address and file offset aligned alike). Taking the snapshot is a single
``torch._foreach_copy_`` into existing views (no allocation, no per-tensor Python work).

Cheaper still is no copy: :class:`LiveSource` lets the writer stream parameters and optimizer
state straight from training memory while nothing changes them (forward and backward only read
them), and at the next optimizer step copies into the buffer only what the writer has not yet
read. On a CPU-bound machine the copy was the bound of the whole save (~3 GB/s against a ~4 GB/s
disk).

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
    skeleton: Any = None

    def mixed(self, live: list[int]) -> Any:
        """The staged structure with the sources themselves at the indices in ``live``."""
        chosen = list(self.views)
        for i in live:
            chosen[i] = self.sources[i]
        return _fill(self.skeleton, chosen)


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
        key = tuple((t.dtype, tuple(t.shape), t.device.type, _page_offset(t)) for t in sources)
        if key != self._key:
            self._allocate(sources, key)
        staged = _fill(skeleton, self._views)
        return Prepared(staged, sources, self._views, skeleton)

    def _allocate(self, sources: list[Any], key: tuple[Any, ...]) -> None:
        import torch

        sizes = [t.numel() * t.element_size() for t in sources]
        starts = []
        end = 0
        for t, n in zip(sources, sizes, strict=True):
            starts.append(align_up(end) + _page_offset(t))  # fresh pages, same offset in the page
            end = starts[-1] + n
        total = max(ALIGN, align_up(end))
        pin = self.pin_memory
        if pin is None:
            pin = any(t.device.type == "cuda" for t in sources) and torch.cuda.is_available()
        self._base = self._buffer = None
        self._views = []
        base = torch.empty(total + ALIGN, dtype=torch.uint8, pin_memory=bool(pin))
        skip = (-int(base.data_ptr())) % ALIGN
        buffer = base[skip : skip + total]
        buffer.zero_()  # fault every page in now, not during the first blocking window; zero padding
        views = [
            buffer[s : s + n].view(t.dtype).view(t.shape)
            for t, s, n in zip(sources, starts, sizes, strict=True)
        ]
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


class LiveSource:
    """The writer's guard (see :class:`modelplane.train.storage.RawFileWriter`) for a save written
    from the live tensors ``indices`` of ``prepared`` until :meth:`fence`.

    Until the fence the writer reads the tensors themselves; the fence (called by the training
    thread right before the state changes: the optimizer step) waits for the read in flight,
    copies into the host buffer what the writer has not read yet, and from then on the writer
    reads those copies. The buffer's views sit at the same page offsets as their sources, so the
    write stays aligned across the switch.

    A tensor whose version moved before its bytes were read or staged changed outside the fence
    (something other than the optimizer step): it is listed in ``changed`` and the save must fail.
    """

    def __init__(self, prepared: Prepared, indices: list[int], versions: list[int]) -> None:
        self._cond = threading.Condition()
        self._sources = prepared.sources
        self._versions = dict(zip(indices, versions, strict=True))
        self._live = {i: _flat(prepared.sources[i]) for i in indices}
        self._host = {i: _flat(prepared.views[i]) for i in indices}
        self._by_ptr = {int(t.data_ptr()): i for i, t in self._live.items() if t.numel()}
        self._done = dict.fromkeys(indices, 0)  # bytes of each tensor already read by the writer
        self._busy = 0
        self._frozen = False  # no new live reads
        self._staged = False  # and the host copies are complete
        self.changed: set[int] = set()
        self.staged_bytes = 0  # copied at the fence
        self.error: str | None = None

    @staticmethod
    def usable(prepared: Prepared, indices: list[int]) -> bool:
        """True when every tensor is a contiguous CPU tensor and no two non-empty ones share an
        address (the writer identifies them by it)."""
        seen: set[int] = set()
        for i in indices:
            t = prepared.sources[i]
            if t.device.type != "cpu" or not t.is_contiguous():
                return False
            if t.numel():
                ptr = int(t.data_ptr())
                if ptr in seen:
                    return False
                seen.add(ptr)
        return True

    def acquire(self, flat: Any, lo: int, hi: int, wait: bool) -> tuple[Any, bool]:
        """The tensor to read ``flat``'s bytes from, and whether it is the live one (then
        :meth:`release` must follow). While the fence is copying, waits for it, or returns None
        when ``wait`` is false (the writer first releases the reads it holds)."""
        del lo, hi
        i = self._by_ptr.get(int(flat.data_ptr()))
        if i is None:
            return flat, False
        with self._cond:
            if self._frozen:
                if not self._staged and not wait:
                    return None, False
                while not self._staged:
                    self._cond.wait()
                return self._host[i], False
            self._busy += 1
            return flat, True

    def release(self, flat: Any, hi: int, live: bool) -> None:
        if not live:
            return
        i = self._by_ptr[int(flat.data_ptr())]
        with self._cond:
            self._done[i] = max(self._done[i], hi)
            if self._sources[i]._version != self._versions[i]:
                self.changed.add(i)
            self._busy -= 1
            self._cond.notify_all()

    def fence(self) -> None:
        """Stage what the writer has not read; after this the live tensors may change."""
        import torch

        with self._cond:
            if self._frozen:
                return
            self._frozen = True
            while self._busy and not self._staged:  # finish() also ends the wait
                self._cond.wait()
            if self._staged:
                return
            rest = [i for i, t in self._live.items() if self._done[i] < t.numel()]
            for i in rest:
                if self._sources[i]._version != self._versions[i]:
                    self.changed.add(i)
            dst = [self._host[i][self._done[i] :] for i in rest]
            src = [self._live[i][self._done[i] :] for i in rest]
            try:
                if dst:
                    torch._foreach_copy_(dst, src)
                self.staged_bytes = sum(int(t.numel()) for t in dst)
            except Exception as exc:  # the save fails; training goes on
                self.error = f"staging the unwritten rest failed: {exc!r}"
            finally:
                self._staged = True
                self._cond.notify_all()

    def finish(self) -> None:
        """The write is over (done or failed): later fences have nothing to do."""
        with self._cond:
            self._frozen = self._staged = True
            self._cond.notify_all()


def _flat(t: Any) -> Any:
    import torch

    return t.detach().reshape(-1).view(torch.uint8)


def _end_of(view: Any) -> int:
    return align_up(int(view.data_ptr()) + view.numel() * view.element_size())


def _page_offset(t: Any) -> int:
    """Where a CPU tensor starts within its 4 KiB page (0 for other devices, or a misaligned one)."""
    if t.device.type != "cpu":
        return 0
    off = int(t.data_ptr()) % ALIGN
    return off if off % max(1, t.element_size()) == 0 else 0


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
