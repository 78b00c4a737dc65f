"""What the database-dump sources share (sources layer): `source` (URL parts, restore plan,
refusals, restore result of the PostgreSQL and MySQL sources) and `load` (feeding a dump from an
artifact into a restore tool, so that both fail alike).
"""
