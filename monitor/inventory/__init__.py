"""The inventory: a file (YAML or CSV) into a frozen, validated model, with every problem
at once. No process, state or output here: the daemon and the commands read the model.

The main names are here; each section of the schema has its own module (thresholds,
calendar, mqtt, web, reports, shard, identity), and ``fields`` defines every field type
once.
"""

from monitor.inventory.fields import Provision, Tier
from monitor.inventory.load import default_config, load_config, parse_config
from monitor.inventory.problems import ConfigError, Problem
from monitor.inventory.schema import (
    Config,
    Contact,
    Contract,
    ProbeOverrides,
    ProbeSettings,
    ServiceProbe,
    Site,
)

__all__ = [
    "Config",
    "ConfigError",
    "Contact",
    "Contract",
    "ProbeOverrides",
    "ProbeSettings",
    "Problem",
    "Provision",
    "ServiceProbe",
    "Site",
    "Tier",
    "default_config",
    "load_config",
    "parse_config",
]
