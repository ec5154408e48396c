"""Each site's and service probe's label sets as exposition text, built once per
inventory (at start and at each reload) rather than at every scrape: at 20,000 sites
that is 40,000 strings a scrape does not have to build."""

from __future__ import annotations

from monitor.inventory import ProbeSettings, ServiceProbe, Site
from monitor.metrics.text import INFO_LABELS, SITE_LABELS, label_text
from monitor.status.services import ServiceTable
from monitor.status.sites import SiteTable

# (the labels every series of it carries, the ones its info series adds after those:
# only the addition is kept, the site's pair was 110 bytes longer, 2 MB at 20,000 sites)
Texts = tuple[str, str]


def site_texts(site: Site, settings: ProbeSettings) -> Texts:
    values = [site.id, site.tier, site.district or site.id, site.provision]
    contact, contract = site.contact, site.contract
    info = [site.name, site.parent or "", site.address,
            (contact and contact.name) or "", (contact and contact.phone) or "",
            (contract and contract.contractor) or "", (contract and contract.reference) or "",
            str(settings.dscp)]
    return label_text(SITE_LABELS, values), label_text(INFO_LABELS, info)


def probe_texts(site: Site, spec: ServiceProbe) -> Texts:
    values = [site.id, site.tier, site.district or site.id, site.provision]
    labels = f'{label_text(SITE_LABELS, values)},probe="{spec.label}"'
    port = getattr(spec, "port", None)
    return labels, f'kind="{spec.kind}",port="{port or ""}",dscp="{spec.dscp or 0}"'


class LabelCache:
    """Label texts by site id and by service probe key."""

    def __init__(self) -> None:
        self.sites: dict[str, Texts] = {}
        self.probes: dict[str, Texts] = {}

    def fill(self, table: SiteTable, services: ServiceTable) -> None:
        """The texts of the sites and probes in force; swapped in whole, so that a scrape
        rendered meanwhile reads the old set or the new one, never half of each."""
        sites = {state.site.id: site_texts(state.site, state.settings)
                 for state in table.sites.values()}
        probes = {key: probe_texts(state.site, state.spec)
                  for key, state in services.probes.items()}
        self.sites, self.probes = sites, probes
