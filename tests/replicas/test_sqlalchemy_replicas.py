"""RoutingSession against a real streaming replica."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, String, func, select, text
from sqlalchemy.exc import InternalError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import neon_sqlalchemy
from neon_local.pytest_plugin import NeonLocal
from neon_local.replica import REPLICA_VAR, Replica
from neon_sqlalchemy._replicas import RoutingSession, create_replica_engines

pytestmark = pytest.mark.integration


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "replica_notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


@pytest.fixture(scope="module")
def engines(
    neon_local: NeonLocal, neon_local_replica: Replica
) -> Iterator[tuple[Engine, list[Engine]]]:
    env = {**neon_local.env(), REPLICA_VAR: neon_local_replica.pooled_url}
    primary = neon_sqlalchemy.create_engine(env=env)
    replicas = create_replica_engines(env=env)
    Base.metadata.create_all(primary)
    yield primary, replicas
    Base.metadata.drop_all(primary)
    for engine in (primary, *replicas):
        engine.dispose()


@pytest.fixture
def Session(
    engines: tuple[Engine, list[Engine]], neon_local: NeonLocal, neon_local_replica: Replica
) -> sessionmaker[RoutingSession]:  # noqa: N802
    neon_local_replica.catch_up(neon_local.state.superuser_url)
    primary, replicas = engines
    return sessionmaker(class_=RoutingSession, primary=primary, replicas=replicas)


IN_RECOVERY = select(func.pg_is_in_recovery())


def _name() -> str:
    return f"note-{uuid.uuid4().hex[:8]}"


def test_one_replica_engine_on_the_replicas_pooler(
    engines: tuple[Engine, list[Engine]], neon_local_replica: Replica
) -> None:
    (replica,) = engines[1]
    assert replica.url.port == neon_local_replica.pooler_port
    assert replica.pool.__class__.__name__ == "NullPool"  # PgBouncer pools


def test_plain_selects_read_the_replica_and_flushes_write_the_primary(
    Session: sessionmaker[RoutingSession],
) -> None:
    name = _name()
    with Session() as session:
        assert session.scalar(IN_RECOVERY) is True  # a plain SELECT: the replica
        session.add(Note(name=name))
        session.flush()  # the primary
        assert session.wrote
        # the same transaction reads its own write, on the primary
        assert session.scalar(IN_RECOVERY) is False
        assert session.scalar(select(Note.name).where(Note.name == name)) == name
        session.commit()
    with Session() as session:
        assert session.scalar(IN_RECOVERY) is True  # a new transaction reads replicas again


def test_for_update_goes_to_the_primary(
    Session: sessionmaker[RoutingSession], engines: tuple[Engine, list[Engine]]
) -> None:
    locking = select(Note.id, func.pg_is_in_recovery()).with_for_update()
    with (
        engines[1][0].connect() as replica,
        pytest.raises((InternalError, OperationalError), match="read-only"),
    ):
        replica.execute(locking)  # control: the replica refuses it
    with Session() as session:
        session.add(Note(name=_name()))
        session.commit()
    with Session() as session:
        rows = session.execute(locking).all()
        assert rows and {r[1] for r in rows} == {False}


def test_text_sql_goes_to_the_primary(Session: sessionmaker[RoutingSession]) -> None:
    with Session() as session:
        assert session.scalar(text("SELECT pg_is_in_recovery()")) is False


def test_a_lagging_replica_is_stale_but_the_writing_transaction_reads_its_write(
    Session: sessionmaker[RoutingSession], neon_local: NeonLocal, neon_local_replica: Replica
) -> None:
    name = _name()
    with neon_local_replica.lagging():
        with Session() as writer:
            writer.add(Note(name=name))
            writer.flush()
            assert writer.scalar(select(func.count()).where(Note.name == name)) == 1
            writer.commit()
        with Session() as reader:
            assert reader.scalar(IN_RECOVERY) is True
            assert reader.scalar(select(func.count()).where(Note.name == name)) == 0  # stale
    neon_local_replica.catch_up(neon_local.state.superuser_url)
    with Session() as reader:
        assert reader.scalar(select(func.count()).where(Note.name == name)) == 1


def test_after_commit_the_session_still_reads_its_own_write(
    Session: sessionmaker[RoutingSession], neon_local: NeonLocal, neon_local_replica: Replica
) -> None:
    """expire_on_commit: touching the object after commit() refreshes it; that read must go
    to the primary, or a lagging replica would not find the row it just wrote."""
    with neon_local_replica.lagging(), Session() as session:
        note = Note(name=_name())
        session.add(note)
        session.commit()
        assert session.scalar(IN_RECOVERY) is False  # still on the primary
        assert note.name  # the refresh SELECT finds the row
    neon_local_replica.catch_up(neon_local.state.superuser_url)


def test_a_replica_that_is_down_is_skipped_with_a_log_line(
    Session: sessionmaker[RoutingSession],
    neon_local_replica: Replica,
    neon_local: NeonLocal,
    caplog: pytest.LogCaptureFixture,
) -> None:
    neon_local_replica.stop()
    try:
        caplog.set_level(logging.WARNING, logger="neon_sqlalchemy.replicas")
        started = time.monotonic()
        with Session() as session:
            assert session.scalar(IN_RECOVERY) is False  # the primary answered
        elapsed = time.monotonic() - started
        assert elapsed < 2.0 + 5  # the replica's retry budget, plus the read
        warned = [r.getMessage() for r in caplog.records if r.name == "neon_sqlalchemy.replicas"]
        assert len(warned) == 1 and str(neon_local_replica.pooler_port) in warned[0], warned
        assert neon_local.state.password not in caplog.text
    finally:
        neon_local_replica.start()
        RoutingSession._down.clear()
    neon_local_replica.catch_up(neon_local.state.superuser_url)
    with Session() as session:
        assert session.scalar(IN_RECOVERY) is True


def test_without_replicas_everything_goes_to_the_primary(
    engines: tuple[Engine, list[Engine]], neon_local: NeonLocal
) -> None:
    assert create_replica_engines(env=neon_local.env()) == []
    with RoutingSession(primary=engines[0]) as session:
        assert session.scalar(IN_RECOVERY) is False
