"""Faults under load. ``SLOW_COMMIT``: a deferred trigger makes each COMMIT take 1 s, so a
fault lands inside it (used here and by the Django tests)."""

from __future__ import annotations

SLOW_COMMIT = """
CREATE TABLE IF NOT EXISTS slow_commits (k text);
CREATE OR REPLACE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN PERFORM pg_sleep(1.0); RETURN NULL; END $$;
DROP TRIGGER IF EXISTS slow_commit ON slow_commits;
CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON slow_commits
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();
CREATE TABLE IF NOT EXISTS deferred_unique (k int UNIQUE DEFERRABLE INITIALLY DEFERRED);
"""
