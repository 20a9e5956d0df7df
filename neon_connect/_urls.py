"""Parse PostgreSQL connection strings and mask the secrets in them.

Parsing never echoes the input: a malformed string is most often malformed exactly at the
password (an unquoted ``@``, ``/`` or ``:``, a stray space, a truncated paste), so errors
describe the problem and name the variable, and nothing else. libpq is the reference: a
string is accepted only when libpq would read it the same way, and keys and values that
libpq would refuse at connect are refused here, when the application is configured.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from ._secret import MASK, Secret, is_secret_key, scrubbed
from .errors import InvalidURLError

_SCHEMES = ("postgres", "postgresql")
_QUOTE_HINT = "percent-encode it, e.g. urllib.parse.quote(password, safe='')"
_OWN_KEYS = frozenset({"pgbouncer"})
"""Query keys neon-connect reads itself and never passes to libpq (Prisma's marker)."""
_PRISMA_KEYS = frozenset(
    {
        "schema",
        "connection_limit",
        "pool_timeout",
        "socket_timeout",
        "sslaccept",
        "sslidentity",
        "statement_cache_size",
    }
)
_CHOICES: dict[str, tuple[str, ...]] = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "channel_binding": ("disable", "prefer", "require"),
    "gssencmode": ("disable", "prefer", "require"),
    "sslcertmode": ("disable", "allow", "require"),
    "sslnegotiation": ("postgres", "direct"),
    "load_balance_hosts": ("disable", "random"),
    "target_session_attrs": (
        "any",
        "read-write",
        "read-only",
        "primary",
        "standby",
        "prefer-standby",
    ),
    "sslcompression": ("0", "1"),
    "sslsni": ("0", "1"),
}
_INTEGERS = frozenset(
    {
        "connect_timeout",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
    }
)
_ASYNCPG_SSL = {
    "true": "require",
    "1": "require",
    "require": "require",
    "verify-ca": "verify-ca",
    "verify-full": "verify-full",
    "prefer": "prefer",
    "allow": "allow",
    "disable": "disable",
    "false": "disable",
    "0": "disable",
}
_PASTE_RESIDUE = "\"'`;,>)\u201c\u201d\u2018\u2019"
_QUOTES = "'\"`\u201c\u201d\u2018\u2019\u00ab\u00bb"
_ENV_PREFIX = re.compile(
    r"^(?:(?:export|set|setenv)\s+|\$env:)?([A-Za-z_][A-Za-z0-9_]*)\s*([=:])\s*['\"]?[A-Za-z+]+://"
)
_SCHEME_AGAIN = re.compile(r"(?i)postgres(?:ql)?(?:\+\w+)?://")
_KEYWORD_START = re.compile(r"^[A-Za-z_]+\s*=")
_SAFE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,40}")


@dataclass(frozen=True)
class ParsedURL:
    """The parts of a connection string, percent-decoded. ``repr`` masks every secret."""

    host: str | None
    port: int | None
    user: str | None
    password: str | None = field(repr=False)
    database: str | None
    params: dict[str, str] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        params = {k: (MASK if is_secret_key(k) else v) for k, v in self.params.items()}
        return (
            f"ParsedURL(host={self.host!r}, port={self.port!r}, user={self.user!r}, "
            f"password={MASK if self.password else None!r}, database={self.database!r}, "
            f"params={params!r})"
        )


# libpq 17's keywords: used when psycopg 3 (which can ask libpq itself) is not importable.
_LIBPQ_17_KEYWORDS = frozenset(
    [
        "application_name",
        "channel_binding",
        "client_encoding",
        "connect_timeout",
        "dbname",
        "fallback_application_name",
        "gssdelegation",
        "gssencmode",
        "gsslib",
        "host",
        "hostaddr",
        "keepalives",
        "keepalives_count",
        "keepalives_idle",
        "keepalives_interval",
        "krbsrvname",
        "load_balance_hosts",
        "max_protocol_version",
        "min_protocol_version",
        "options",
        "passfile",
        "password",
        "port",
        "replication",
        "require_auth",
        "requirepeer",
        "service",
        "ssl_max_protocol_version",
        "ssl_min_protocol_version",
        "sslcert",
        "sslcertmode",
        "sslcompression",
        "sslcrl",
        "sslcrldir",
        "sslkey",
        "sslmode",
        "sslnegotiation",
        "sslpassword",
        "sslrootcert",
        "sslsni",
        "target_session_attrs",
        "tcp_user_timeout",
        "user",
    ]
)


@functools.cache
def libpq_keywords() -> frozenset[str]:
    """The connection keywords the installed libpq knows (its own list, via psycopg)."""
    try:
        import psycopg
    except ImportError:  # psycopg2 only: it cannot list them
        return _LIBPQ_17_KEYWORDS
    return frozenset(opt.keyword.decode() for opt in psycopg.pq.Conninfo.get_defaults())


@scrubbed(InvalidURLError)
def parse_url(value: str | Secret, *, name: str = "the connection string") -> ParsedURL:
    """Parse a ``postgresql://`` URL or a libpq ``key=value`` string.

    ``name`` is how errors refer to the input (a variable or argument name). Raises
    :class:`~neon_connect.InvalidURLError`; neither the message, nor its chained context,
    nor the local variables of the frames it passes through contain the input.
    """
    given: object = value  # callers outside the typed world pass anything
    del value
    if isinstance(given, Secret):
        return _parse(given, name)
    if not isinstance(given, str):
        raise InvalidURLError(f"{name} must be a string, not {type(given).__name__}.")
    secret = Secret(given)
    del given
    return _parse(secret, name)


def _parse(secret: Secret, name: str) -> ParsedURL:
    text = secret.reveal()
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidURLError(
            f"{name} contains bytes that are not valid UTF-8 (often a password saved in "
            "another encoding): set it again as UTF-8 text, percent-encoding the password."
        ) from None
    text = text.strip()
    if not text:
        raise InvalidURLError(f"{name} is empty: set it to a postgresql:// connection string.")
    _refuse_paste_accidents(text, name)
    if "://" not in text:
        if _KEYWORD_START.match(text):
            return _refuse_unsendable(_parse_keyword_dsn(text, name), name)
        raise InvalidURLError(
            f"{name} has no scheme: it must start with postgresql:// "
            "(postgresql://user:password@host/dbname)."
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
    return _refuse_unsendable(_parse_url_rest(rest, name), name)


def _refuse_unsendable(parsed: ParsedURL, name: str) -> ParsedURL:
    """libpq takes C strings: a NUL (``%00``) would cut a value short at connect."""
    parts = (parsed.host, parsed.user, parsed.password, parsed.database, *parsed.params.values())
    if any("\x00" in part for part in parts if part):
        raise InvalidURLError(f"{name} contains a NUL character (%00), which libpq cannot send.")
    if parsed.database and ("://" in parsed.database or "=" in parsed.database):
        # libpq reads such a dbname as a second connection string: never guess which wins.
        raise InvalidURLError(
            f"{name} has a database name that looks like a connection string ('=' or '://'), "
            "which libpq would read as a second connection string: use a plain database name."
        )
    return parsed


def _refuse_paste_accidents(text: str, name: str) -> None:
    """Name the usual copy-and-paste mistakes instead of calling them a bad scheme."""
    lowered = text.lower()
    if any(unicodedata.category(ch) in ("Cf", "Cc") and not ch.isspace() for ch in text):
        raise InvalidURLError(
            f"{name} contains an invisible character (a byte-order mark, a zero-width space or "
            "a control character from a copied page): type it again, or percent-encode it if "
            "the password itself contains it."
        )
    if text[0] in _QUOTES:
        raise InvalidURLError(
            f"{name} is wrapped in quotes: remove them; a shell or .env file needs "
            "quotes around the value, not inside it."
        )
    if text[0] == "<" and text[-1] == ">":
        raise InvalidURLError(
            f"{name} is wrapped in angle brackets (as chat apps show links): remove them."
        )
    if lowered.startswith("psql ") or lowered.startswith("psql\t"):
        raise InvalidURLError(
            f"{name} holds a psql command line: set it to the connection string alone, "
            "without 'psql' and the quotes around the URL."
        )
    if lowered.startswith("jdbc:"):
        raise InvalidURLError(
            f"{name} is a JDBC URL: remove the 'jdbc:' prefix (postgresql://user:password@host/dbname)."
        )
    prefix = _ENV_PREFIX.match(text)
    if prefix:
        raise InvalidURLError(
            f"{name} starts with '{prefix.group(1)}{prefix.group(2)}': set it to the value "
            f"after the '{prefix.group(2)}' only (the connection string itself)."
        )
    if lowered.startswith(("http://", "https://")):
        raise InvalidURLError(
            f"{name} is a web address, not a connection string: copy the postgresql:// string "
            "from Neon Console > Connect."
        )
    if len(_SCHEME_AGAIN.findall(text)) > 1:
        raise InvalidURLError(
            f"{name} holds two connection strings run together: keep one (the other belongs "
            "in its own variable)."
        )
    if re.match(r"(?i)postgres(?:ql)?(?:\+\w+)?:(?!//)", text):
        raise InvalidURLError(f"{name} needs '://' after postgresql: (two slashes).")
    if text.startswith("//"):
        raise InvalidURLError(f"{name} has no scheme: put postgresql: before the '//'.")


def _parse_url_rest(rest: str, name: str) -> ParsedURL:
    end = len(rest)
    for sep in "/?#":
        pos = rest.find(sep)
        if pos != -1:
            end = min(end, pos)
    netloc, tail = rest[:end], rest[end:]
    if "@" in tail:
        # libpq ends the user:password part at the first '/': an '@' after it means the
        # password has an unquoted '/', '?' or '#', and parts of it would become the host
        # or database. Never guess.
        raise InvalidURLError(
            f"{name} has an '@' after the host: the password (or user name) contains an "
            f"unquoted '/', '?', '#' or '@'; {_QUOTE_HINT}."
        )
    userinfo, at, hostport = netloc.rpartition("@")
    if not at:
        userinfo, hostport = "", netloc
    user, colon, password = userinfo.partition(":")
    before_fragment, hash_, _ = tail.partition("#")
    path, _, query = before_fragment.partition("?")
    if hash_:
        raise InvalidURLError(
            f"{name} contains '#': a PostgreSQL URL has no fragment. If the password or "
            f"database name contains '#', {_QUOTE_HINT}."
        )
    host, port = _split_hostport(hostport, name)
    if at and not hostport and not tail:
        raise InvalidURLError(
            f"{name} ends right after the '@': the host and database are missing (was the "
            "string cut short when it was copied?). For a Unix socket write postgresql://user@/db."
        )
    params = _query_params(query, name)
    raw_db = path[1:] if path.startswith("/") else ""
    if "/" in raw_db:
        raise InvalidURLError(
            f"{name} has a '/' in its database name; if the database name or password "
            f"contains '/', {_QUOTE_HINT}."
        )
    _refuse_residue(query or raw_db or hostport, name)
    database = unquote(raw_db) or None
    # libpq also accepts the connection's own parts as query parameters.
    if "host" in params:
        host = params.pop("host") or None
    if "port" in params:
        port = parse_port(params.pop("port"), name)
    user_value = params.pop("user", None) or (unquote(user) if user else None)
    password_value = params.pop("password", None) or (unquote(password) if colon else None)
    database = params.pop("dbname", None) or database
    check_host(host, name)
    check_params(params, name)
    return ParsedURL(
        host=host,
        port=port,
        user=user_value,
        password=password_value or None,
        database=database,
        params=params,
    )


def _refuse_residue(last: str, name: str, chars: str = _PASTE_RESIDUE) -> None:
    if last[-1:] == ")" and "(" in last:
        return  # balanced, as in application_name=web(1)
    if last and last[-1] in chars:
        raise InvalidURLError(
            f"{name} ends with a stray {last[-1]!r} (left over from a paste, e.g. a closing "
            "quote or a semicolon): remove it."
        )


def _query_params(query: str, name: str) -> dict[str, str]:
    params: dict[str, str] = {}
    if not query:
        return params
    for item in query.split("&"):
        if not item:
            continue
        key, eq, val = item.partition("=")
        key = unquote(key)
        if not eq:
            raise InvalidURLError(
                f"{name} has text after '?' that is not key=value. If the database name "
                "contains '?', percent-encode it as %3F; otherwise use ?key=value&key=value."
            )
        if key == "ssl":  # asyncpg's spelling, often copied from its docs
            mode = _ASYNCPG_SSL.get(unquote(val).lower())
            if mode is None:
                raise InvalidURLError(
                    f"{name} sets ssl=...: libpq's key is sslmode (sslmode=require)."
                )
            key, val = "sslmode", mode
            if params.get("sslmode", mode) != mode:
                raise InvalidURLError(f"{name} sets both ssl and sslmode, to different modes.")
        params[key] = unquote(val)
    return params


def check_params(params: dict[str, str], name: str) -> None:
    """Refuse keys and values that libpq would refuse at connect (case-sensitive, as libpq)."""
    known = libpq_keywords()
    for key, value in params.items():
        if key in _OWN_KEYS:
            continue
        if key not in known:
            lower = key.lower()
            shown = f"the parameter {key!r}" if _SAFE_KEY.fullmatch(key) else "a parameter"
            if lower in known or lower in _OWN_KEYS:
                raise InvalidURLError(
                    f"{name} has {shown} in upper case; libpq's keywords are "
                    f"case-sensitive: write it as {lower!r}."
                )
            hint = (
                "; it is a Prisma setting, which libpq does not read: remove it"
                if lower in _PRISMA_KEYS
                else ": remove it or correct its spelling"
            )
            raise InvalidURLError(f"{name} has {shown}, which libpq does not know{hint}.")
        if key in _CHOICES and value not in _CHOICES[key]:
            lower_ok = value.lower() in _CHOICES[key]
            raise InvalidURLError(
                f"{name} sets {key} to a value libpq does not accept"
                + (" (values are lower case)" if lower_ok else "")
                + f": use one of {', '.join(_CHOICES[key])}."
            )
        if key in _INTEGERS and not re.fullmatch(r"-?\d{1,9}", value.strip()):
            raise InvalidURLError(f"{name} sets {key} to something that is not a whole number.")
        if key == "sslrootcert" and value != "system" and not os.path.exists(value):
            raise InvalidURLError(
                f"{name} sets sslrootcert to a file that does not exist; give the path of "
                "the CA certificate, or sslrootcert=system for the system's CAs."
            )
        if key in ("sslcert", "sslkey", "passfile") and value and not os.path.exists(value):
            raise InvalidURLError(f"{name} sets {key} to a file that does not exist.")
        if key == "hostaddr":
            check_host(value, name)
    if params.get("sslmode") in ("verify-ca", "verify-full") and "sslrootcert" not in params:
        default = os.path.expanduser(os.path.join("~", ".postgresql", "root.crt"))
        if not os.path.exists(default) and not os.environ.get("PGSSLROOTCERT"):
            raise InvalidURLError(
                f"{name} sets sslmode={params['sslmode']} without sslrootcert, and libpq's "
                "default ~/.postgresql/root.crt does not exist: add sslrootcert=system."
            )


def check_host(host: str | None, name: str) -> None:
    """One host name, IP address or socket directory (never shown: it may be a password part)."""
    if not host:
        return
    if "," in host:
        raise InvalidURLError(
            f"{name} lists several hosts; neon-connect needs one host per connection string "
            "(Neon serves each endpoint from one host name)."
        )
    if host.startswith("/"):  # a Unix socket directory
        return
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise InvalidURLError(f"{name} has a host that is not a valid IPv6 address.") from None
        return
    if not all(ch.isalnum() or ch in "-._" for ch in host):
        raise InvalidURLError(
            f"{name} has a host name with characters no host name has. If the password "
            f"contains '@' or another special character, {_QUOTE_HINT}."
        )


def _split_hostport(hostport: str, name: str) -> tuple[str | None, int | None]:
    if "," in hostport:
        check_host(hostport, name)
    if hostport.startswith("["):  # IPv6 literal
        close = hostport.find("]")
        if close == -1:
            raise InvalidURLError(f"{name} has an unterminated IPv6 address in its host.")
        host, after = hostport[1:close], hostport[close + 1 :]
        if after and not after.startswith(":"):
            raise InvalidURLError(f"{name} has text after its IPv6 host address.")
        return unquote(host) or None, parse_port(after[1:], name) if after else None
    if hostport.count(":") > 1:
        raise InvalidURLError(
            f"{name} has more than one ':' in its host part. An IPv6 address goes in "
            f"brackets (postgresql://user@[::1]:5432/db); if the password contains '@', {_QUOTE_HINT}."
        )
    host, colon, port = hostport.rpartition(":")
    if not colon:
        return unquote(hostport) or None, None
    return unquote(host) or None, parse_port(port, name)


def parse_port(port: str, name: str) -> int | None:
    if port == "":
        return None
    if not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        # Never show the text: after a truncated paste or an unquoted ':' it is the password.
        raise InvalidURLError(
            f"{name} has a port that is not a number from 1 to 65535. If the password "
            f"contains ':' or '@', {_QUOTE_HINT}; if the string was cut short, copy it again."
        )
    return int(port)


def _conninfo_to_dict(text: str) -> dict[str, Any]:
    """libpq's own parser (``PQconninfoParse``), through psycopg 3 or else psycopg2."""
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        from psycopg2.extensions import parse_dsn  # type: ignore[import-untyped]

        return dict(parse_dsn(text))
    return conninfo_to_dict(text)


def _refuse_run_together(values: dict[str, str], name: str) -> None:
    """``user= password=x`` gives libpq the user ``password=x``: refuse what it would misread."""
    known = libpq_keywords()
    for key, value in values.items():
        if is_secret_key(key):
            continue  # a secret may contain anything; it is never shown
        inner = next((k for k in sorted(known) if f"{k}=" in value), None)
        if inner is None and not (
            key in ("host", "hostaddr", "port", "user", "dbname") and "=" in value
        ):
            continue
        shown = f"'{inner}='" if inner else "'='"
        raise InvalidURLError(
            f"{name}: the value of {key!r} contains {shown} (an empty value or a missing "
            "space before it?). Write empty values as key='' and quote values that contain "
            "spaces or '=' with single quotes."
        )


_SSL_KEY = re.compile(r"(?:^|\s)ssl\s*=", re.IGNORECASE)


def _sets_asyncpg_ssl(text: str) -> bool:
    """``ssl=require`` in a key=value string: a URL's ``?ssl=`` is read as ``sslmode``, but
    here libpq's own parser refuses the key before we see the values."""
    return bool(_SSL_KEY.search(text))


def _parse_keyword_dsn(text: str, name: str) -> ParsedURL:
    values: dict[str, str] | None
    try:
        values = {k: str(v) for k, v in _conninfo_to_dict(text).items() if v is not None}
    except Exception:
        values = None  # the driver's message quotes the input: build ours outside `except`
    if values is None and _sets_asyncpg_ssl(text):
        raise InvalidURLError(
            f"{name} sets ssl=..., asyncpg's spelling, which libpq rejects: write "
            "sslmode=require (or verify-full) instead."
        )
    if values is None:
        raise InvalidURLError(
            f"{name} is not a valid key=value connection string: keys must be libpq "
            "keywords (host, port, user, password, dbname, sslmode, ...), and values "
            "that contain spaces or quotes go in single quotes."
        )
    _refuse_run_together(values, name)
    port = values.pop("port", None)
    host = values.pop("host", None) or None
    check_host(host, name)
    if port and "," in port:
        check_host(port, name)
    password = values.pop("password", None)
    _refuse_residue(text, name, chars='"`;')
    params = values
    check_params(params, name)
    return ParsedURL(
        host=host,
        port=parse_port(port, name) if port else None,
        user=params.pop("user", None),
        password=password,
        database=params.pop("dbname", None),
        params=params,
    )


_SECRET_NAMES = r"(?:ssl)?password|oauth_client_secret|scram_(?:client|server)_key"
_KEYWORD_SECRET = re.compile(
    rf"((?<![A-Za-z_])(?:{_SECRET_NAMES})\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)", re.IGNORECASE
)
_QUERY_SECRET = re.compile(rf"([?&](?:{_SECRET_NAMES})=)[^&#]*", re.IGNORECASE)


def mask_url(text: str) -> str:
    """Return ``text`` with any password (and other secret parameter) replaced by ``****``.

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
    masked_user = f"{user.split('/', 1)[0]}:{MASK}" if colon else user
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
    if host.startswith("/"):  # a Unix socket directory, as libpq spells it in a URL
        hostpart = quote(host, safe="")
    else:
        hostpart = f"[{host}]" if ":" in host else host
    url = f"{scheme}://{auth}{hostpart}"
    if port:
        url += f":{port}"
    url += "/" + quote(database, safe="") if database else "/"
    if params:
        url += "?" + "&".join(
            f"{quote(k, safe='')}={v if v == MASK else quote(v, safe='')}"
            for k, v in params.items()
        )
    return url
