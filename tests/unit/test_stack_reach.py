"""How discovery reads the way each database server was started (`stackvault.stack.reach`),
without Docker: PostgreSQL from its ``postmaster.pid``, its command line (direct, through an
entrypoint, through ``sh -c``), its ``postgresql.conf`` and ``PGPORT``; MySQL from ``--port`` /
``--socket`` and its option files; Redis' port and password source from ``--port`` /
``--requirepass`` and its ``redis.conf`` - never the password itself; the source URL a backup
opens with what the plan says; a paused database refused in a plan file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from stackvault.errors import UsageError
from stackvault.records.plan import SourcePlan, plan_from_dict
from stackvault.sources.redis.container import parse_conf
from stackvault.stack.reach import (
    Reach,
    mysql_reach,
    postgres_reach,
    redis_reach,
    source_url,
)


@dataclass
class View:
    command: list[str]
    env: Mapping[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    def read(self, path: str) -> str | None:
        return self.files.get(path)

    def output(self, argv: list[str]) -> str | None:
        return self.outputs.get(argv[0])


PID = "42\n/data/pg\n1700000000\n5433\n/tmp/pgsock\n127.0.0.1\n  5433001    0\nready   \n"


def test_postgres_is_reached_where_its_postmaster_pid_says() -> None:
    view = View(
        ["sh", "-c", 'exec postgres -D "$PGDATA" -p 9999'],
        {"PGDATA": "/data/pg", "POSTGRES_PASSWORD": "s3cret"},
        {"/data/pg/postmaster.pid": PID},
    )
    reach = postgres_reach(view)
    assert reach == Reach(
        5433,
        "/tmp/pgsock",
        "env:POSTGRES_PASSWORD",
        "postmaster.pid of the running server in /data/pg",
    )


@pytest.mark.parametrize(
    ("command", "env", "files", "expected"),
    [
        (
            ["docker-entrypoint.sh", "postgres", "-p", "5440", "-k", "/sock"],
            {},
            {},
            (5440, "/sock"),
        ),
        (
            ["postgres", "-c", "port=5441", "-c", "unix_socket_directories=/a,/b"],
            {},
            {},
            (5441, "/a"),
        ),
        (["sh", "-c", 'exec postgres -p "$PORT"'], {"PORT": "5442"}, {}, (5442, None)),
        (["docker-entrypoint.sh", "postgres"], {"PGPORT": "5443"}, {}, (5443, None)),
        (
            ["docker-entrypoint.sh", "postgres"],
            {},
            {
                "/var/lib/postgresql/data/postgresql.conf": "port = 5444  # here\n"
                "unix_socket_directories = '/run/pg'\n"
            },
            (5444, "/run/pg"),
        ),
        (["docker-entrypoint.sh", "postgres"], {}, {}, (5432, None)),
    ],
)
def test_postgres_without_a_pid_file_is_read_from_how_it_was_started(
    command: list[str], env: dict[str, str], files: dict[str, str], expected: tuple[object, ...]
) -> None:
    reach = postgres_reach(View(command, env, files))
    assert (reach.port, reach.socket) == expected
    assert reach.password_from == "none"


def test_mysql_port_and_socket_from_its_command_line_or_option_files() -> None:
    view = View(
        ["docker-entrypoint.sh", "mariadbd", "--port=3310", "-S", "/run/m.sock"],
        {"MARIADB_ROOT_PASSWORD": "x"},
    )
    assert mysql_reach(view) == Reach(
        3310, "/run/m.sock", "env:MARIADB_ROOT_PASSWORD", "its command line"
    )
    view = View(
        ["mysqld"],
        {"MYSQL_PASSWORD": "x"},
        outputs={"my_print_defaults": "--port=3311\n--socket=/s/my.sock\n"},
    )
    assert mysql_reach(view) == Reach(3311, "/s/my.sock", "env:MYSQL_PASSWORD", "its option files")


def test_redis_password_source_is_named_and_never_kept() -> None:
    reach = redis_reach(View(["redis-server", "--requirepass", "hunter2", "--port", "6390"]))
    assert reach == Reach(6390, None, "arg", "its command line")
    assert "hunter2" not in repr(reach)
    reach = redis_reach(
        View(["sh", "-c", "redis-server --requirepass $REDIS_PASSWORD"], {"REDIS_PASSWORD": "x"})
    )
    assert reach.password_from == "env:REDIS_PASSWORD" and reach.port == 6379
    conf = '# cfg\nport 6391\nrequirepass "hunter2"\nbind 127.0.0.1\n'
    reach = redis_reach(
        View(["redis-server", "/etc/redis/redis.conf"], files={"/etc/redis/redis.conf": conf})
    )
    assert reach == Reach(6391, None, "file:/etc/redis/redis.conf", "/etc/redis/redis.conf")
    assert "hunter2" not in repr(reach)
    assert parse_conf(conf)["requirepass"] == "hunter2"
    assert redis_reach(View(["redis-server"], {"REDISCLI_AUTH": "x"})).password_from == (
        "env:REDISCLI_AUTH"
    )
    assert redis_reach(View(["redis-server"])).password_from == "none"


def test_the_source_url_carries_what_the_plan_says() -> None:
    src = SourcePlan(
        name="db",
        url="postgres+docker://p-db-1/?name=db",
        service="db",
        port=5433,
        socket="/tmp/pgsock",
        password_from="env:POSTGRES_PASSWORD",
    )
    assert source_url(src) == (
        "postgres+docker://p-db-1:5433/?name=db&socket=/tmp/pgsock"
        "&password_from=env:POSTGRES_PASSWORD"
    )
    assert source_url(src, "q-db-1", restore=True) == (
        "postgres+docker://q-db-1:5433/?socket=/tmp/pgsock&password_from=env:POSTGRES_PASSWORD"
    )
    redis = SourcePlan(
        name="r",
        url="redis+docker://p-r-1:6380?name=r",
        service="r",
        password_from="file:/etc/redis/redis.conf",
    )
    assert source_url(redis, "q-r-1", restore=True) == (
        "redis+docker://q-r-1:6380?password_from=file:/etc/redis/redis.conf"
    )
    volume = SourcePlan(name="v", url="docker-volume://v?mode=hot", service="v", port=1)
    assert source_url(volume) == "docker-volume://v?mode=hot"


def test_a_plan_file_refuses_to_pause_a_database_and_a_bad_password_source() -> None:
    doc = {
        "version": 1,
        "project": "p",
        "preset": "generic",
        "consistency": "strict",
        "services": {
            "db": {"role": "postgres", "image": "postgres:16", "quiesce": "pause"},
            "api": {"role": "app", "image": "a", "stop": True, "quiesce": "freeze"},
            "vec": {"role": "vector-store", "image": "w", "stop": True, "quiesce": "pause"},
        },
        "sources": [
            {
                "name": "db",
                "url": "postgres+docker://c/",
                "service": "db",
                "password_from": "hunter2",
                "port": 70000,
            }
        ],
    }
    with pytest.raises(UsageError) as err:
        plan_from_dict(doc)
    text = str(err.value)
    assert "services.db.quiesce must be stop for a database service" in text
    assert "services.api.quiesce must be stop or pause" in text
    assert "sources[0].password_from must be env:NAME, arg, file:PATH, none or null" in text
    assert "sources[0].port must be a port number" in text
    assert "vec" not in text and "hunter2" not in text


def test_stack_backup_prints_one_line_per_stopped_or_paused_service() -> None:
    from stackvault.cli.commands.stack import downtime_line
    from stackvault.records.stack import ServiceDowntime

    def record(mode: str, killed: bool, down: float | None) -> ServiceDowntime:
        return ServiceDowntime(
            containers=["p-api-1"],
            level=1,
            mode=mode,
            timeout_s=3.0,
            stop_s=3.01,
            killed=killed,
            downtime_s=down,
        )

    assert downtime_line("api", record("stop", True, 4.256)) == (
        "  api: stop, level 1, down 4.26 s, killed after 3 s"
    )
    assert downtime_line("vec", record("pause", False, 0.5)) == "  vec: pause, level 1, down 0.50 s"
    assert downtime_line("w", record("stop", False, None)) == (
        "  w: stop, level 1, down not started again"
    )


def test_a_password_file_is_recorded_by_its_path_never_read() -> None:
    pg = postgres_reach(
        View(["postgres"], {"POSTGRES_PASSWORD_FILE": "/run/secrets/db", "PGPORT": "5440"})
    )
    assert (pg.port, pg.password_from) == (5440, "file:/run/secrets/db")
    both = {"POSTGRES_PASSWORD": "s3cret", "POSTGRES_PASSWORD_FILE": "/run/secrets/db"}
    assert postgres_reach(View(["postgres"], both)).password_from == "env:POSTGRES_PASSWORD"
    root = {"MARIADB_ROOT_PASSWORD_FILE": "/run/secrets/root", "MYSQL_PASSWORD": "app"}
    assert mysql_reach(View(["mariadbd"], root)).password_from == "file:/run/secrets/root"
    app = {"MYSQL_PASSWORD_FILE": "/run/secrets/app"}
    assert mysql_reach(View(["mysqld"], app)).password_from == "file:/run/secrets/app"
    assert mysql_reach(View(["mysqld"], {"MYSQL_PASSWORD_FILE": "relative"})).password_from == (
        "none"
    )


def test_a_password_file_is_read_inside_the_container() -> None:
    from stackvault.errors import SourceError
    from stackvault.sources.docker.exec import shell_env_exports

    script = shell_env_exports({"PGPASSWORD": "file:/run/secrets/my db"})
    assert script == "export PGPASSWORD=\"$(cat -- '/run/secrets/my db' 2>/dev/null)\""
    with pytest.raises(SourceError):
        shell_env_exports({"PGPASSWORD": "file:relative/path"})
