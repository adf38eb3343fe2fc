"""The only writer of SQL and files: the SQLite store (schema, migrations, jobs), hidden-state files,
shipped snapshots and the paper's published tables."""
