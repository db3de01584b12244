"""Where each rank's checkpoint copy lives, and the redis-server that holds it."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from modelplane.agent.errors import AgentError
from modelplane.agent.peers import peer_urls, with_password
from modelplane.agent.redis_tier import PeerMemoryServer

NODES = [f"n{i}" for i in range(5)]


@given(rank_nodes=st.lists(st.sampled_from(NODES), min_size=1, max_size=12),
       serving=st.sets(st.sampled_from(NODES)))
def test_a_copy_lives_off_its_ranks_node_whenever_another_node_of_the_job_serves(rank_nodes, serving):
    published = {n: f"redis://{n}:6390/0" for n in serving}
    urls = peer_urls(rank_nodes, published)
    if not serving & set(rank_nodes):
        assert urls == []
        return
    n = len(rank_nodes)
    assert len(urls) == n and set(urls) <= set(published.values())
    for r, node in enumerate(rank_nodes):
        peer = urls[(r + 1) % n]  # what the training runtime (PeerMemoryTier.peer_url) picks
        others = (serving & set(rank_nodes)) - {node}
        if others:
            assert peer != published.get(node) and peer in {published[m] for m in others}
        else:
            assert peer == published[node]


def test_peer_is_the_next_node_of_the_placement():
    published = {"a": "redis://a:1/0", "b": "redis://b:1/0", "c": "redis://c:1/0"}
    urls = peer_urls(["a", "a", "b", "c"], published)
    assert [urls[(r + 1) % 4] for r in range(4)] == ["redis://b:1/0", "redis://b:1/0", "redis://c:1/0",
                                                      "redis://a:1/0"]


def test_password_goes_into_the_url_quoted():
    assert with_password("redis://10.0.0.5:6390/0", "p@ss/w:rd") == "redis://:p%40ss%2Fw%3Ard@10.0.0.5:6390/0"
    assert peer_urls(["a"], {"a": "redis://a:1/0"}, "s") == ["redis://:s@a:1/0"]


def test_server_is_bounded_volatile_private_and_restarted_on_its_port(tmp_path: Path):
    server = PeerMemoryServer(tmp_path / "pm", maxmemory="8mb", password="cluster-secret")
    try:
        assert server.ensure_running() is True
        conf = tmp_path / "pm" / "redis.conf"
        assert stat.S_IMODE(conf.stat().st_mode) == 0o600  # holds the password
        client = redis.Redis.from_url(with_password(server.url, "cluster-secret"))
        cfg = client.config_get("*")
        assert (cfg["maxmemory"], cfg["maxmemory-policy"], cfg["save"], cfg["appendonly"]) == (
            str(8 * 1024 * 1024), "noeviction", "", "no")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(server.url).ping()
        with pytest.raises(redis.ResponseError, match="maxmemory"):  # a copy that does not fit fails loudly
            client.set("big", b"x" * (16 * 1024 * 1024))
        url, pid = server.url, server.pid
        assert pid is not None and server.ensure_running() is False
        os.kill(pid, signal.SIGKILL)
        assert server.ensure_running() is True
        assert server.url == url and server.pid not in (None, pid) and server.answers()
    finally:
        server.stop()
    assert not server.answers()


def test_a_new_run_reuses_the_port_it_published(tmp_path: Path):
    first = PeerMemoryServer(tmp_path / "pm")
    first.start()
    url = first.url
    first.stop()
    second = PeerMemoryServer(tmp_path / "pm")
    assert second.previous_url == url
    try:
        second.start()
        assert second.url == url
    finally:
        second.stop()


def test_missing_binary_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    with pytest.raises(AgentError, match="redis-server") as info:
        PeerMemoryServer(tmp_path / "pm").start()
    assert "apt-get install redis-server" in info.value.hint
