"""A PostgreSQL server as a source (sources layer): `source` (`PostgresSource`: capture with
``pg_dump``, facts), `restore` (loading an artifact with ``pg_restore``), `tools` (how the client
tools are called, a ``psql`` session, server info and database facts, version checks,
error sentences), `sql` (the SQL text).
"""
