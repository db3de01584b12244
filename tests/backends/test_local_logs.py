"""Task logs: stdout and stderr captured to a file, read from a byte offset as `logs -f` does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelplane.backends.base import TaskPhase
from modelplane.backends.local import LocalBackend, _complete_utf8_prefix
from modelplane.core.errors import InvalidSpec, NotFound


def test_follow_a_running_task_from_offsets(local):
    go = local.go_file()
    code = (
        "import sys\nprint('first line')\nprint('to stderr', file=sys.stderr, flush=True)\n"
        + local.wait_until_file(go)
        + "print('after go')\n"
    )
    [status] = local.launch(local.task("logs", local.python_task(code)))

    seen = [""]
    offset = [0]

    def read_more() -> bool:
        text, offset[0] = local.backend.read_logs("logs", 0, offset[0])
        seen[0] += text
        return "to stderr\n" in seen[0]

    local.wait_for(read_more, "the first two lines")
    assert seen[0] == "first line\nto stderr\n"
    assert local.backend.poll("logs", [status])[0].phase is TaskPhase.RUNNING
    assert local.backend.read_logs("logs", 0, offset[0]) == ("", offset[0])

    go.touch()
    local.wait_done("logs", [status])
    rest, end = local.backend.read_logs("logs", 0, offset[0])
    assert rest == "after go\n"
    assert end == offset[0] + len(b"after go\n")
    assert local.backend.read_logs("logs", 0, end) == ("", end)
    # an offset past the end (a stale follower) is clamped, not an error
    assert local.backend.read_logs("logs", 0, end + 1000) == ("", end)


def test_chunked_reads_never_split_a_character(local):
    text = "héllo wörld ✓ 𝄞 done"
    backend = LocalBackend(local.state_dir, log_chunk_bytes=3)
    [status] = backend.launch([local.task("utf8", local.python_task(f"print({text!r})"))])
    local.wait_done("utf8", [status], backend=backend)
    pieces, offset = [], 0
    while True:
        piece, offset = backend.read_logs("utf8", 0, offset)
        if not piece:
            break
        assert "\ufffd" not in piece
        pieces.append(piece)
    assert "".join(pieces) == text + "\n"
    assert len(pieces) > 5


@given(st.text(), st.integers(min_value=0, max_value=200))
def test_complete_prefix_drops_only_a_cut_character(text, cut):
    data = text.encode("utf-8")[:cut]
    keep = _complete_utf8_prefix(data)
    data[:keep].decode("utf-8")  # strict: raises if a character was split
    assert len(data) - 3 <= keep <= len(data)


def test_unknown_task_and_bad_offset_are_clear_errors(local):
    with pytest.raises(NotFound, match="no log for rank 3 of job 'nope'"):
        local.backend.read_logs("nope", 3, 0)
    [status] = local.launch(local.task("neg", local.python_task("print(1)")))
    local.wait_done("neg", [status])
    with pytest.raises(InvalidSpec, match="offset"):
        local.backend.read_logs("neg", 0, -1)
