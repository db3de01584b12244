"""The notice pollers against a metadata server that speaks the AWS IMDSv2 and GCP protocols."""

from __future__ import annotations

import pytest

from modelplane.agent.errors import AgentError
from modelplane.agent.spot import AwsSpotNotice, GcpPreemptedNotice, notice_source
from tests.agent.conftest import Metadata


def test_aws_notice_appears_only_once_announced_with_its_action_and_time(metadata: Metadata):
    poller = AwsSpotNotice(metadata.url)
    assert poller.poll() is None
    metadata.announce("stop")
    notice = poller.poll()
    assert notice is not None and (notice.provider, notice.action, notice.time) == ("aws", "stop", metadata.time)
    assert ("PUT", "/latest/api/token") in metadata.requests  # IMDSv2, not the v1 token-less GET


def test_aws_expired_token_is_replaced(metadata: Metadata):
    poller = AwsSpotNotice(metadata.url)
    assert poller.poll() is None
    metadata.revoke_tokens()
    metadata.announce()
    notice = poller.poll()
    assert notice is not None and notice.action == "terminate"
    assert sum(1 for r in metadata.requests if r[0] == "PUT") == 2


def test_gcp_preempted_flag(metadata: Metadata):
    poller = GcpPreemptedNotice(metadata.url)
    assert poller.poll() is None
    metadata.announce()
    notice = poller.poll()
    assert notice is not None and (notice.provider, notice.action) == ("gcp", "preempt")


def test_a_server_that_is_not_the_metadata_service_is_an_error_not_a_notice(metadata: Metadata):
    with pytest.raises(AgentError, match="not a GCP metadata server"):
        GcpPreemptedNotice(metadata.url + "/latest").poll()  # answers 404 without Metadata-Flavor
    with pytest.raises(AgentError, match="did not answer"):
        AwsSpotNotice("http://127.0.0.1:9", timeout_s=0.5).poll()


def test_unknown_provider_names_the_choices():
    with pytest.raises(AgentError, match="aws, gcp, none"):
        notice_source("azure")
    assert notice_source("none") is None
