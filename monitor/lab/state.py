"""The lab's state file: every lab site's address, parent and profile.

``vcmon lab up`` writes it, ``vcmon lab set`` rewrites it, and the responder re-reads
it on SIGHUP; it is the one place the profiles live.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from monitor.lab.profiles import LabError, Profile


class LabSite(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    address: str
    parent: str | None = None
    profile: Profile = Profile()

    @field_validator("address")
    @classmethod
    def _ipv4(cls, address: str) -> str:
        # the responder answers IPv4 echo requests only
        return str(ipaddress.IPv4Address(address))


class LabState(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "lab"
    network: str = ""
    scenario: str = "custom"
    # per-site random streams (jitter, loss) derive from it: a run can be repeated
    seed: int = 1
    sites: list[LabSite]

    def find(self, key: str) -> LabSite:
        """The site with id or address ``key``; LabError naming the choices otherwise."""
        for site in self.sites:
            if key in (site.id, site.address):
                return site
        sample = ", ".join(site.id for site in self.sites[:5])
        more = ", …" if len(self.sites) > 5 else ""
        raise LabError(f"the lab has no site {key!r}; give a site id or address ({sample}{more})")

    def behind(self, site_id: str) -> list[str]:
        """The ids of every site whose path to the province passes through ``site_id``."""
        children: dict[str, list[str]] = {}
        for site in self.sites:
            if site.parent is not None:
                children.setdefault(site.parent, []).append(site.id)
        found, todo = [], list(children.get(site_id, []))
        while todo:
            current = todo.pop()
            found.append(current)
            todo.extend(children.get(current, []))
        return found

    def with_profile(self, site_id: str, profile: Profile) -> LabState:
        sites = [site.model_copy(update={"profile": profile}) if site.id == site_id else site
                 for site in self.sites]
        return self.model_copy(update={"sites": sites})


def read_state(path: Path) -> LabState:
    try:
        return LabState.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise LabError(f"{path} does not exist: the lab is not up, or only half; run "
                       "vcmon lab down, then vcmon lab up") from None
    except (OSError, ValidationError) as exc:
        raise LabError(f"cannot read the lab state {path}: {exc}; vcmon lab down clears it") \
            from None


def write_state(path: Path, state: LabState) -> None:
    """Replace the file in one step: the responder never reads half a file."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(state.model_dump_json(indent=1), encoding="utf-8")
    os.replace(temporary, path)
