"""The built-in policies (config layer): ``tier1``, ``tier2``, ``tier3``.

=====  =====  =====  ==================  ===========================================  =========
tier   rpo    rto    schedule (derived)  retention (every repository)                 check
=====  =====  =====  ==================  ===========================================  =========
tier1  5min   30min  */2 * * * *         keep-within 1d, keep-within-hourly 7d,       every 1d,
                                         keep-within-daily 30d, keep-within-weekly    1/7 of
                                         3m                                           the data
tier2  2h     2h     0 * * * *           keep-within 2d, keep-within-daily 14d,       every 7d,
                                         keep-within-weekly 2m, keep-within-monthly   1/14
                                         1y
tier3  24h    8h     0 */12 * * *        keep-within-daily 14d, keep-within-weekly    every 7d,
                                         2m, keep-within-monthly 1y,                  1/28
                                         keep-within-yearly 3y
=====  =====  =====  ==================  ===========================================  =========

No tier names a schedule or a window: both follow the RPO (`stackvault.config.schedule`: the
largest usual interval at most half the RPO; the window is what is left of the RPO after the
interval), so a policy that changes a tier's ``rpo`` gets a schedule that meets it. The
retention rules are under ``default``: they apply to every repository of a job that has no
rules of its own.
"""

from __future__ import annotations

from stackvault.config.model import PolicyEntry

DEFAULT_RETENTION = "default"
"""The retention key for every repository without its own rules (no repository has the name)."""

_SPECS: dict[str, dict[str, object]] = {
    "tier1": {
        "rpo": "5min",
        "rto": "30min",
        "retention": {
            DEFAULT_RETENTION: {
                "keep-within": "1d",
                "keep-within-hourly": "7d",
                "keep-within-daily": "30d",
                "keep-within-weekly": "3m",
            }
        },
        "check": {"every": "1d", "read_data_subset": "1/7"},
    },
    "tier2": {
        "rpo": "2h",
        "rto": "2h",
        "retention": {
            DEFAULT_RETENTION: {
                "keep-within": "2d",
                "keep-within-daily": "14d",
                "keep-within-weekly": "2m",
                "keep-within-monthly": "1y",
            }
        },
        "check": {"every": "7d", "read_data_subset": "1/14"},
    },
    "tier3": {
        "rpo": "24h",
        "rto": "8h",
        "retention": {
            DEFAULT_RETENTION: {
                "keep-within-daily": "14d",
                "keep-within-weekly": "2m",
                "keep-within-monthly": "1y",
                "keep-within-yearly": "3y",
            }
        },
        "check": {"every": "7d", "read_data_subset": "1/28"},
    },
}

TIERS: dict[str, PolicyEntry] = {
    name: PolicyEntry.model_validate(spec) for name, spec in _SPECS.items()
}
"""The built-in policies by name, as a file would write them."""
