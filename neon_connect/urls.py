"""Parse PostgreSQL connection strings and mask the secrets in them.

Parsing never echoes the input: a malformed string is most often malformed exactly at the
password (an unquoted ``@``, ``/`` or ``:``, a stray space, a truncated paste), so errors
describe the problem and name the variable, and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote

from .errors import InvalidURLError

__all__ = ["MASK", "ParsedURL", "mask_url", "parse_port", "parse_url"]

MASK = "****"
_SCHEMES = ("postgres", "postgresql")
_QUOTE_HINT = "percent-encode it, e.g. urllib.parse.quote(password, safe='')"


@dataclass(frozen=True)
class ParsedURL:
    """The parts of a connection string, percent-decoded."""

    host: str | None
    port: int | None
    user: str | None
    password: str | None = field(repr=False)
    database: str | None
    params: dict[str, str] = field(default_factory=dict)


def parse_url(value: str, *, name: str = "the connection string") -> ParsedURL:
    """Parse a ``postgresql://`` URL or a libpq ``key=value`` string.

    ``name`` is how errors refer to the input (a variable or argument name). Raises
    :class:`~neon_connect.InvalidURLError`; the message never contains the input.
    """
    if not isinstance(value, str):
        raise InvalidURLError(f"{name} must be a string, not {type(value).__name__}.")
    text = value.strip()
    if not text:
        raise InvalidURLError(f"{name} is empty: set it to a postgresql:// connection string.")
    if "://" not in text:
        if "=" in text:
            return _parse_keyword_dsn(text, name)
        raise InvalidURLError(
            f"{name} is not a PostgreSQL connection string: expected "
            "postgresql://user:password@host/dbname."
        )
    scheme, rest = text.split("://", 1)
    base_scheme = scheme.lower().split("+", 1)[0]
    if base_scheme not in _SCHEMES:
        shown = scheme if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,30}", scheme) else "?"
        raise InvalidURLError(
            f"{name} has the scheme {shown!r}; neon-connect needs postgresql://user:password@host/dbname."
        )
    if any(ch.isspace() for ch in rest):
        raise InvalidURLError(
            f"{name} contains a space or line break: remove stray whitespace from the pasted "
            f"string; if the password itself contains a space, {_QUOTE_HINT}."
        )
    return _parse_url_rest(rest, name)


def _parse_url_rest(rest: str, name: str) -> ParsedURL:
    end = len(rest)
    for sep in "/?#":
        pos = rest.find(sep)
        if pos != -1:
            end = min(end, pos)
    netloc, tail = rest[:end], rest[end:]
    if "@" not in netloc and "@" in tail:
        raise InvalidURLError(
            f"{name}: the user name or password contains an unquoted '/', '?' or '#'; {_QUOTE_HINT}."
        )
    userinfo, at, hostport = netloc.rpartition("@")
    if not at:
        userinfo, hostport = "", netloc
    user, colon, password = userinfo.partition(":")
    path, _, query = tail.split("#", 1)[0].partition("?")
    host, port = _split_hostport(hostport, name)
    params: dict[str, str] = {}
    for key, val in parse_qsl(query, keep_blank_values=True):
        params[key] = val
    database = unquote(path[1:]) if path.startswith("/") and len(path) > 1 else None
    # libpq also accepts the connection's own parts as query parameters.
    host = params.pop("host", None) or host
    if "port" in params:
        port = parse_port(params.pop("port"), name)
    user_value = params.pop("user", None) or (unquote(user) if user else None)
    password_value = params.pop("password", None) or (unquote(password) if colon else None)
    database = params.pop("dbname", None) or database
    if not host:
        raise InvalidURLError(
            f"{name} has no host name: expected postgresql://user:password@host/dbname "
            "(was the string cut short when it was copied?)."
        )
    return ParsedURL(
        host=host,
        port=port,
        user=user_value,
        password=password_value or None,
        database=database,
        params=params,
    )


def _split_hostport(hostport: str, name: str) -> tuple[str | None, int | None]:
    if hostport.startswith("["):  # IPv6 literal
        close = hostport.find("]")
        if close == -1:
            raise InvalidURLError(f"{name} has an unterminated IPv6 address in its host.")
        host, after = hostport[1:close], hostport[close + 1 :]
        if after and not after.startswith(":"):
            raise InvalidURLError(f"{name} has text after its IPv6 host address.")
        return unquote(host) or None, parse_port(after[1:], name) if after else None
    host, colon, port = hostport.rpartition(":")
    if not colon:
        return unquote(hostport) or None, None
    if "," in port:  # multi-host lists such as h1:5432,h2:5432 are kept as libpq sees them
        return unquote(hostport), None
    return unquote(host) or None, parse_port(port, name)


def parse_port(port: str, name: str) -> int | None:
    if port == "":
        return None
    if not port.isdigit() or not 0 < int(port) < 65536:
        # Never show the text: after a truncated paste or an unquoted ':' it is the password.
        raise InvalidURLError(
            f"{name} has a port that is not a number from 1 to 65535. If the password "
            f"contains ':' or '@', {_QUOTE_HINT}; if the string was cut short, copy it again."
        )
    return int(port)


def _parse_keyword_dsn(text: str, name: str) -> ParsedURL:
    from psycopg.conninfo import conninfo_to_dict

    try:
        values = {k: str(v) for k, v in conninfo_to_dict(text).items() if v is not None}
    except Exception:
        raise InvalidURLError(
            f"{name} is not a valid key=value connection string; quote values that contain "
            "spaces or quotes with single quotes."
        ) from None
    port = values.pop("port", None)
    host = values.pop("host", None) or values.pop("hostaddr", None)
    if not host:
        raise InvalidURLError(f"{name} has no host: add host=<name> to the connection string.")
    return ParsedURL(
        host=host,
        port=parse_port(port, name) if port else None,
        user=values.pop("user", None),
        password=values.pop("password", None),
        database=values.pop("dbname", None),
        params=values,
    )


_KEYWORD_SECRET = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)", re.IGNORECASE)
_QUERY_SECRET = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def mask_url(text: str) -> str:
    """Return ``text`` with any password replaced by ``****``.

    Works on malformed strings too: everything between the user name and the last ``@``
    is hidden, and a string with no ``@`` keeps only what cannot be a password.
    """
    if "://" not in text:
        return _KEYWORD_SECRET.sub(lambda m: m.group(1) + MASK, text)
    scheme, rest = text.split("://", 1)
    at = rest.rfind("@")
    if at == -1:
        end = min((p for p in (rest.find(s) for s in "/?#") if p != -1), default=len(rest))
        netloc = rest[:end]
        _, colon, maybe_port = netloc.rpartition(":")
        if colon and not maybe_port.isdigit():
            # "user:secret" from a truncated paste: keep the user, drop the rest.
            return f"{scheme}://{netloc.split(':', 1)[0]}:{MASK}"
        return f"{scheme}://{_QUERY_SECRET.sub(lambda m: m.group(1) + MASK, rest)}"
    userinfo, hostpart = rest[:at], rest[at + 1 :]
    user, colon, _ = userinfo.partition(":")
    masked_user = f"{user}:{MASK}" if colon else user
    hostpart = _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, hostpart)
    return f"{scheme}://{masked_user}@{hostpart}"


def build_url(
    *,
    host: str,
    port: int | None,
    user: str | None,
    password: str | None,
    database: str | None,
    params: dict[str, str] | None = None,
    scheme: str = "postgresql",
) -> str:
    """Build a URL from parts, percent-encoding each one."""
    auth = ""
    if user:
        auth = quote(user, safe="")
        if password:
            auth += ":" + (password if password == MASK else quote(password, safe=""))
        auth += "@"
    hostpart = f"[{host}]" if ":" in host and "," not in host else host
    url = f"{scheme}://{auth}{hostpart}"
    if port:
        url += f":{port}"
    url += "/" + quote(database, safe="") if database else "/"
    if params:
        url += "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params.items())
    return url
