"""What the database-dump sources share (sources layer): `source` (URL parts, restore plan,
refusals, the manifest reader, server facts and restore result of the PostgreSQL and MySQL
sources), `load` (feeding a dump from an artifact into a restore tool, so that both fail alike)
and `errortext` (finding a known error in a tool's output).
"""
