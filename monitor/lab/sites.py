"""The lab's inventory: a synthetic 3-tier tree or an existing inventory, on lab addresses.

The inventory ``vcmon lab up`` writes is an ordinary one (``vcmon check-config``
accepts it, ``vcmon run --config`` probes it); only the addresses are the lab's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from monitor.inventory import Config, load_config, parse_config
from monitor.lab.netlab import Lab
from monitor.lab.profiles import LabError

# The province's proportions: 1 hall, 11 district-level points, 228 communes of 240.
_DISTRICTS_PER_SITE = 11 / 239

Document = dict[str, Any]


def synthetic_inventory(count: int) -> Document:
    """A province → district → commune tree of ``count`` sites in the real proportions."""
    if count < 1:
        raise LabError(f"--sites {count}: a lab needs at least one site")
    sites: list[dict[str, Any]] = [
        {"id": "lab-province", "name": "Lab province hall", "tier": "province"}]
    districts = min(count - 1, max(1, round((count - 1) * _DISTRICTS_PER_SITE)))
    for d in range(1, districts + 1):
        sites.append({"id": f"lab-d{d:02d}", "name": f"Lab district {d:02d}", "tier": "district",
                      "parent": "lab-province"})
    for c in range(count - 1 - districts):
        d = c % districts + 1
        sites.append({"id": f"lab-d{d:02d}-c{c // districts + 1:03d}",
                      "name": f"Lab commune {d:02d}.{c // districts + 1:03d}",
                      "tier": "commune", "parent": f"lab-d{d:02d}"})
    return {"sites": sites}


def inventory_document(path: str) -> Document:
    """An existing inventory as plain data, after checking it loads.

    YAML is taken as written (its defaults, thresholds and schedule stay as they are);
    a CSV site list becomes the sites it describes.
    """
    config = load_config(path)
    if Path(path).suffix.lower() == ".csv":
        return {"sites": [site.model_dump(mode="json", exclude_none=True)
                          for site in config.sites]}
    document: Document = yaml.safe_load(Path(path).read_text(encoding="utf-8-sig"))
    return document


class _PlainDumper(yaml.SafeDumper):
    # Merge keys resolve into shared dicts, which PyYAML would write back as anchors.
    def ignore_aliases(self, data: Any) -> bool:
        return True


def relocate(document: Document, lab: Lab) -> tuple[str, Config]:
    """Give each site the next lab address; the inventory as YAML, and as loaded."""
    sites = document["sites"]
    addresses = lab.site_addresses(len(sites))
    moved = {**document,
             "sites": [{**site, "address": address} for site, address in zip(sites, addresses,
                                                                              strict=True)]}
    header = (f"# Lab inventory written by vcmon lab up: every address is a site simulated in\n"
              f"# network namespace {lab.namespace} ({lab.network}, the RFC 2544 benchmarking\n"
              f"# range). Probe it with: vcmon run --config THIS_FILE\n")
    text = header + yaml.dump(moved, Dumper=_PlainDumper, allow_unicode=True, sort_keys=False)
    return text, parse_config(text, "<lab inventory>")
