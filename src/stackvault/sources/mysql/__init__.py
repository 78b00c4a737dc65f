"""A MySQL or MariaDB server as a source (sources layer): `source` (`MySQLSource`: capture with
``mariadb-dump`` / ``mysqldump``, facts), `restore` (loading an artifact with the client),
`tools` (how the client tools are called, catalog queries, reading a dump as it streams past,
error sentences).
"""
