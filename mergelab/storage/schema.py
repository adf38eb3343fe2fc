"""The store's one schema, its version, and the migrations from older stores.

Version 1 is the schema of the first releases (no version table); version 2 drops the tables
nobody read (``models``, ``tasks``, ``runs``, ``hidden_distances``), keeps a failed unit's whole
traceback and each unit's start and finish time, and records its own version. Version 3 keeps
every evaluation's per-row records (``row_records``: what lm-evaluation-harness calls
``--log_samples``) and gives swap groups a role of their own with their parent, removed and added
task (``task_groups.meta``), where earlier stores knew a swap only by its name. Version 4 says how each
score reads: whether higher is better (``results.higher_is_better``) and how the rows make it
(``results.aggregation`` of the rows' weighted mean, their weights in ``row_records.weight``: 1, a
word or byte count for lm-eval's perplexities, 1 / rows of a subtask in an lm-eval group); every
earlier row is a higher-is-better mean. A store opened by
newer code is migrated in one transaction; rows are never lost.
"""

from __future__ import annotations

import sqlite3
import uuid

SCHEMA_VERSION = 4

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS studies (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL,
    description TEXT DEFAULT '', spec TEXT DEFAULT '', created_at REAL NOT NULL
);
-- a study's task groups, by role (storage/roles.py): 'group' (drawn or declared: merged and analysed),
-- 'swap' (a group with one task replaced, meta holding parent, removed, added), 'pair' (a pairwise merge),
-- 'pool' (the spare tasks for swapping in: one row, not a group)
CREATE TABLE IF NOT EXISTS task_groups (
    study_id TEXT NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    name TEXT NOT NULL, tasks TEXT NOT NULL, role TEXT DEFAULT 'group', meta TEXT DEFAULT '',
    PRIMARY KEY (study_id, name)
);
CREATE TABLE IF NOT EXISTS results (
    study_id TEXT NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    group_name TEXT NOT NULL, model TEXT NOT NULL, task TEXT NOT NULL, method TEXT NOT NULL,
    params_hash TEXT NOT NULL DEFAULT '', seed INTEGER NOT NULL DEFAULT 0,
    metric TEXT NOT NULL DEFAULT 'score', score REAL, expert_score REAL, loss REAL,
    source TEXT NOT NULL DEFAULT 'computed', created_at REAL NOT NULL,
    higher_is_better INTEGER NOT NULL DEFAULT 1, aggregation TEXT NOT NULL DEFAULT 'mean',
    PRIMARY KEY (study_id, group_name, model, task, method, params_hash, seed, metric)
);
-- one row per eval row of a result: keyed like the result it belongs to (less the metric), with the
-- row's position among the task's eval rows, a hash of its prompt (to pair rows across models), its
-- score (0–100: correct or not, or rougeL, or the log-likelihood per word for perplexities), the
-- reference and prediction, each label's log-likelihood, and the row's weight in its task's score
-- (NULL = 1, or the word or byte count for lm-eval's weighted perplexities, or 1 / its subtask's rows
-- in an lm-eval group scored as the mean of its tasks). No semicolons in these comments: the
-- schema is split on them
CREATE TABLE IF NOT EXISTS row_records (
    study_id TEXT NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    group_name TEXT NOT NULL, model TEXT NOT NULL, task TEXT NOT NULL, method TEXT NOT NULL,
    params_hash TEXT NOT NULL DEFAULT '', seed INTEGER NOT NULL DEFAULT 0,
    row INTEGER NOT NULL, row_id TEXT NOT NULL, score REAL, reference TEXT, prediction TEXT,
    label_logprobs TEXT, weight REAL,
    PRIMARY KEY (study_id, group_name, model, task, method, params_hash, seed, row)
);
CREATE TABLE IF NOT EXISTS task_metrics (
    study_id TEXT NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    group_name TEXT NOT NULL, task TEXT NOT NULL, name TEXT NOT NULL, value REAL,
    source TEXT NOT NULL DEFAULT 'computed',
    PRIMARY KEY (study_id, group_name, task, name, source)
);
CREATE TABLE IF NOT EXISTS pair_metrics (
    study_id TEXT NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    task_a TEXT NOT NULL, task_b TEXT NOT NULL, name TEXT NOT NULL, value REAL,
    PRIMARY KEY (study_id, task_a, task_b, name)
);
CREATE TABLE IF NOT EXISTS published_stats (
    study_id TEXT NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    ref TEXT NOT NULL, key TEXT NOT NULL, value REAL,
    PRIMARY KEY (study_id, ref, key)
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_id TEXT NOT NULL, kind TEXT NOT NULL, unit_key TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL DEFAULT '{}', status TEXT NOT NULL DEFAULT 'queued',
    progress REAL NOT NULL DEFAULT 0, message TEXT DEFAULT '', worker TEXT,
    heartbeat REAL, attempts INTEGER NOT NULL DEFAULT 0, error TEXT, traceback TEXT,
    started_at REAL, finished_at REAL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
"""


def _v1_to_v2(con: sqlite3.Connection) -> None:
    for table in ("models", "tasks", "runs", "hidden_distances"):
        con.execute(f"DROP TABLE IF EXISTS {table}")
    have = {r[1] for r in con.execute("PRAGMA table_info(jobs)")}
    for column in ("traceback TEXT", "started_at REAL", "finished_at REAL"):
        if column.split()[0] not in have:
            con.execute(f"ALTER TABLE jobs ADD COLUMN {column}")


def _v2_to_v3(con: sqlite3.Connection) -> None:
    import json

    from .roles import SWAP, parse_swap_name

    have = {r[1] for r in con.execute("PRAGMA table_info(task_groups)")}
    if "meta" not in have:
        con.execute("ALTER TABLE task_groups ADD COLUMN meta TEXT DEFAULT ''")
    for study_id, name in con.execute("SELECT study_id, name FROM task_groups WHERE role='group'").fetchall():
        swap = parse_swap_name(name)
        if swap is not None:
            con.execute(
                "UPDATE task_groups SET role=?, meta=? WHERE study_id=? AND name=?",
                (
                    SWAP,
                    json.dumps({"parent": swap.parent, "removed": swap.removed, "added": swap.added}),
                    study_id,
                    name,
                ),
            )


def _v3_to_v4(con: sqlite3.Connection) -> None:
    added = {
        "results": ("higher_is_better INTEGER NOT NULL DEFAULT 1", "aggregation TEXT NOT NULL DEFAULT 'mean'"),
        "row_records": ("weight REAL",),
    }
    for table, columns in added.items():
        have = {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
        if not have:
            continue  # a table this store never had is created whole after the migrations
        for column in columns:
            if column.split()[0] not in have:
                con.execute(f"ALTER TABLE {table} ADD COLUMN {column}")


#: from version → the step that brings a store to the next version
MIGRATIONS = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}


def version(con: sqlite3.Connection) -> int:
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "meta" in tables:
        row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else SCHEMA_VERSION
    return 1 if "studies" in tables else 0


def upgrade(con: sqlite3.Connection) -> int:
    """Bring the store to :data:`SCHEMA_VERSION` inside the caller's transaction; returns the
    version it had. A store from newer code is refused rather than altered."""
    found = version(con)
    if found > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"it was written by a newer MergeLab (schema {found}, this one reads {SCHEMA_VERSION}); upgrade MergeLab"
        )
    step = found
    while 0 < step < SCHEMA_VERSION:
        MIGRATIONS[step](con)
        step += 1
    for statement in SCHEMA.split(";"):  # not executescript(): it would commit the caller's transaction
        if statement.strip():
            con.execute(statement)  # IF NOT EXISTS: creates what a new store lacks
    # what the store's content is known by (Store.content_stamp): an id of its own and a revision
    # every write transaction advances
    con.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('store_id', ?)", (uuid.uuid4().hex,))
    con.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('revision', '0')")
    con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    return found
