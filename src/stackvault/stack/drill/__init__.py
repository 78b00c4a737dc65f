"""Restore drills (stack layer): restore a stack snapshot into an isolated copy of the stack
(or a job's databases into throwaway servers), start it, prove it works, measure how long that
took, and remove it again.

**Isolation.** The drill restores into a NEW Compose project, ``<project>-drill-<time>``
(`drill_project_name`), in its own directory ``<workdir>/<drill project>/<name of the
production directory>`` and with its own named volumes (``<drill project>_<volume>``):

- every service of the drill joins the network namespace of one **sandbox** container
  (``network_mode: "container:<sandbox>"``), and the sandbox itself runs with
  ``network_mode: none``: the namespace has nothing but loopback. So services keep
  production's ports (host networking included: a service that listens on
  127.0.0.1:5432 in production listens on 127.0.0.1:5432 of the sandbox, which clashes with
  nothing), nothing is published on the host, and nothing can reach production or the
  outside. Each service name resolves to 127.0.0.1 through the sandbox's ``/etc/hosts``
  (``extra_hosts``), which the services share.
- how it is done: the drill lets `restore_stack` restore the configuration into the drill's
  directory, then - before any container exists - reads the project as Compose resolves it
  (``docker compose config``), checks it and writes the drill's own compose file
  (`DRILL_COMPOSE`), the only one the restore's Compose is given (`for_drill`: if it were
  ever missing, nothing would start): ``network_mode`` set to the sandbox, ``ports``,
  ``expose``, ``networks``, ``links``, ``hostname``, ``extra_hosts`` and ``dns`` removed,
  ``container_name`` renamed into the drill project, the drill labels added.
- **production is never touched**: the drill refuses (`RestoreRefused`, before any container
  is created) a service with a writable bind mount outside the drill's directory, a mount of
  the Docker socket, ``volumes_from``, ``pid``/``ipc: host``, an external or fixed-name
  volume; `restore_stack` itself refuses a project, volume or file that exists. Production's
  containers, volumes and networks are only ever listed, never changed.
- everything the drill creates carries the label ``io.stackvault.drill=<drill id>`` and
  ``io.stackvault.drill.project=<drill project>`` (the sandbox and every service container);
  volumes and networks are found by the drill project's Compose label and name prefix. The
  next drill removes what an earlier one left behind (`remove_leftovers`) before it starts.

**Phases.** Timed from the drill's start (`stackvault.records.drill.DrillPhase`): removing
leftovers of earlier drills; reading the snapshot (every blob of every part indexed in a
pack that exists - `check_snapshot_data`, so a damaged snapshot fails before anything is
restored, naming the artifact and file - then the manifest, checks, images, version guard);
the restore's steps (configuration, directories, database services, databases, volumes,
data directories, other services until running and healthy, the restore's own validation);
the drill's probes; the cleanup. The RTO runs from reading the snapshot until the probes are
done (leftovers and cleanup not included) and is compared with the job's RTO; the restore
point's age at the start is the RPO achieved.

**Probes** (`DrillProbe`: pass, fail or skipped with its reason; a skipped probe never
counts as a pass): each database and Redis artifact loaded and matching the facts recorded
at capture (row counts, key counts), each volume's files against their SHA-256, the data
directories' files against their SHA-256, every service running and healthy, the Dify
preset's tenant keys; then, once every service is up, each database and Redis server
accepting a connection from inside the drill's namespace and answering a trivial query
(`connections`), the plan's HTTP probes sent from inside the drill's network namespace
(``docker exec`` in a container of the drill, with curl, wget, python3 or bash), and the
plan's ``probe_commands`` run in their service's container (`commands`: exit 0 passes,
anything else fails with the output's tail; given ``STACKVAULT_PROBE_HOST``,
``STACKVAULT_PROBE_PORT``, ``STACKVAULT_PROBE_SERVICE``).

**Outbound integrations.** The variables the preset lists as outbound (``OUTBOUND`` of its
module: Dify's mail, webhooks, code-execution egress, SSRF proxy, error reporting) are
emptied in every service of the drill's compose file (`outbound`), and listed in the
result's ``blanked``.

**Cleanup.** After the probes (or after ``keep_s`` seconds), every container, volume,
network and the directory the drill created are removed and the engine is listed again: a
leftover is a cleanup failure of its own. SIGINT/SIGTERM (`KeyboardInterrupt`) during a
drill stop it and clean up (signals are ignored while cleaning up).

**Jobs without a stack** (`source`, `run_source_drill`): their PostgreSQL and MySQL
artifacts are loaded into throwaway servers of this host (`throwaway`) and compared with
their facts; their paths and other artifacts are restored as files below the drill's
directory and read back against their SHA-256.

Entry points: `run_drill`, `run_source_drill`, `pick_drill_snapshot`, `remove_leftovers`,
`parse_span`.

**Modules.** `run` (one stack drill: its phases, the restore, the probes), `phases` (the
timed phases and the frame of a drill: work, cleanup, verdict), `snapshots` (the snapshot
picked, its data checked), `sandbox` (isolation: the compose file, the refusals), `outbound`
(the preset's outbound settings emptied), `probes` (the restore's validations as probes,
HTTP from inside), `connections` (databases accept connections), `commands` (the plan's
probe commands), `cleanup` (removing what a drill made, leftovers of earlier ones), `labels`
(the names and labels a drill gives what it creates), `source` (the drill of a job without a
stack), `throwaway` (its throwaway database servers), `containerserver` (one in a container of
the captured image).
"""

from stackvault.stack.drill.cleanup import drill_resources, remove_leftovers
from stackvault.stack.drill.labels import LABEL, LABEL_DRILL_PROJECT, LABEL_OWNER
from stackvault.stack.drill.outbound import blank_outbound, outbound_patterns
from stackvault.stack.drill.run import DrillOptions, drill_project_name, run_drill
from stackvault.stack.drill.sandbox import _Sandbox, host_names, shared_ports
from stackvault.stack.drill.snapshots import check_snapshot_data, parse_span, pick_drill_snapshot
from stackvault.stack.drill.source import run_source_drill

__all__ = [
    "LABEL",
    "LABEL_DRILL_PROJECT",
    "LABEL_OWNER",
    "DrillOptions",
    "_Sandbox",
    "blank_outbound",
    "check_snapshot_data",
    "drill_project_name",
    "drill_resources",
    "host_names",
    "outbound_patterns",
    "parse_span",
    "pick_drill_snapshot",
    "remove_leftovers",
    "run_drill",
    "run_source_drill",
    "shared_ports",
]
