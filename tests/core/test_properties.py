from __future__ import annotations

import contextlib
import string
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from neon_connect import ConfigurationError, mask_url, parse_neon_host, parse_url, resolve

labels = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=12)
# A password drawn from characters the rest of the URL below never uses, so finding it in
# the output can only mean a leak.
secrets_ = st.text(
    alphabet=string.ascii_uppercase + "!$%&'()+,;=:@/?# \t\"\\[]{}~^`|<>", min_size=4, max_size=40
).filter(lambda s: any(c.isupper() for c in s))
TEMPLATE = "postgresql://user:{}@ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech:5432/neondb?sslmode=require"


@given(name=labels, id_=labels, region=labels, cell=st.booleans(), pooled=st.booleans())
def test_derivation_round_trips_are_stable(name, id_, region, cell, pooled):
    host = f"ep-{name}-{id_}{'-pooler' if pooled else ''}.{'c-2.' if cell else ''}{region}.aws.neon.tech"
    neon = parse_neon_host(host)
    assert neon is not None and neon.pooled is pooled
    for twin in (neon.pooled_host, neon.direct_host):
        again = parse_neon_host(twin)
        assert again is not None
        assert (again.pooled_host, again.direct_host) == (neon.pooled_host, neon.direct_host)
    assert "-pooler-pooler" not in neon.pooled_host


@given(secret=secrets_)
def test_masking_never_leaks_a_raw_or_quoted_password(secret):
    for url in (TEMPLATE.format(secret), TEMPLATE.format(quote(secret, safe=""))):
        masked = mask_url(url)
        assert secret not in masked
        assert quote(secret, safe="") not in masked


@given(secret=secrets_)
def test_parse_either_works_or_raises_our_error_without_the_password(secret):
    url = TEMPLATE.format(secret)
    try:
        endpoints = resolve(url)
    except ConfigurationError as exc:
        assert secret not in str(exc)
    else:
        assert secret not in repr(endpoints) and secret not in str(endpoints.app)
    assert parse_url(TEMPLATE.format(quote(secret, safe=""))).password == secret


@given(garbage=st.text(max_size=200))
def test_garbage_raises_only_our_error(garbage):
    with contextlib.suppress(ConfigurationError):
        resolve(garbage)  # anything but our error fails the test
