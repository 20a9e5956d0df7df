from __future__ import annotations

import pytest

from neon_connect import parse_neon_host

POOLED = "ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech"
DIRECT = "ep-cool-darkness-123456.us-east-2.aws.neon.tech"


@pytest.mark.parametrize(
    ("host", "endpoint_id", "pooled", "region"),
    [
        (DIRECT, "ep-cool-darkness-123456", False, "aws-us-east-2"),
        (POOLED, "ep-cool-darkness-123456", True, "aws-us-east-2"),
        (
            "ep-quiet-forest-a1b2c3d4-pooler.c-2.eu-central-1.aws.neon.tech",
            "ep-quiet-forest-a1b2c3d4",
            True,
            "aws-eu-central-1",
        ),
        (
            "ep-quiet-forest-a1b2c3d4.c-3.us-east-1.aws.neon.tech",
            "ep-quiet-forest-a1b2c3d4",
            False,
            "aws-us-east-1",
        ),
        (
            "ep-snowy-bird-998877-pooler.eastus2.azure.neon.tech",
            "ep-snowy-bird-998877",
            True,
            "azure-eastus2",
        ),
        (
            "EP-COOL-DARKNESS-123456-POOLER.US-EAST-2.AWS.NEON.TECH.",
            "ep-cool-darkness-123456",
            True,
            "aws-us-east-2",
        ),
        (
            "ep-old-vercel-123-pooler.us-east-1.postgres.vercel-storage.com",
            "ep-old-vercel-123",
            True,
            "aws-us-east-1",
        ),
    ],
)
def test_neon_hosts_are_classified_by_the_host(host, endpoint_id, pooled, region):
    neon = parse_neon_host(host)
    assert neon is not None
    assert (neon.endpoint_id, neon.pooled, neon.region) == (endpoint_id, pooled, region)


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "127.0.0.1",
        "db.example.com",
        "ep-x.example.com",
        "neon.tech",
        "pooler.neon.tech",
        "",
        None,
        "aws-us-east-1.pooler.supabase.com",
        "ep-.us-east-2.aws.neon.tech",
    ],
)
def test_other_hosts_are_not_neon(host):
    assert parse_neon_host(host) is None


def test_twins_are_idempotent_and_never_double_the_suffix():
    for host in (POOLED, DIRECT, "ep-cool-darkness-123456-pooler-pooler.us-east-2.aws.neon.tech"):
        neon = parse_neon_host(host)
        assert neon is not None
        assert neon.pooled_host == POOLED
        assert neon.direct_host == DIRECT
        again = parse_neon_host(neon.pooled_host)
        assert again is not None and again.pooled_host == POOLED and again.direct_host == DIRECT
