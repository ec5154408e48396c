"""Each site's and service probe's label sets as exposition text, built once per
inventory (at start and at each reload) rather than at every scrape: at 20,000 sites
that is 20,000 strings a scrape does not have to build. A site's info labels are the
exception: that family is one line a site, and its text is mostly the site's own
strings, which are in memory anyway."""

from __future__ import annotations

from monitor.inventory import ProbeSettings, ServiceProbe, Site
from monitor.metrics.text import SITE_LABELS, escape, label_text
from monitor.status.services import ServiceTable
from monitor.status.sites import SiteTable

# (the labels every series of a service probe carries, the ones its info series adds)
Texts = tuple[str, str]


def site_labels(site: Site) -> str:
    """The labels every series of a site carries."""
    return label_text(SITE_LABELS, [site.id, site.tier, site.district or site.id,
                                    site.provision])


def site_info(site: Site, settings: ProbeSettings) -> str:
    """The labels ``vcmon_site_info`` adds after the site's own: the longer values, joined
    on ``site`` in PromQL; ``dscp`` that of its ICMP probes, 0..63 (0: unmarked). Made
    at each scrape, in one f-string rather than ``label_text``: it runs for every site
    of every page."""
    contact, contract = site.contact, site.contract
    name = escape((contact and contact.name) or "")
    phone = escape((contact and contact.phone) or "")
    contractor = escape((contract and contract.contractor) or "")
    reference = escape((contract and contract.reference) or "")
    return (f'name="{escape(site.name)}",parent="{escape(site.parent or "")}",'
            f'address="{escape(site.address)}",contact_name="{name}",'
            f'contact_phone="{phone}",contractor="{contractor}",'
            f'contract_reference="{reference}",dscp="{settings.dscp}"')


def probe_texts(site: Site, spec: ServiceProbe) -> Texts:
    labels = f'{site_labels(site)},probe="{spec.label}"'
    port = getattr(spec, "port", None)
    return labels, f'kind="{spec.kind}",port="{port or ""}",dscp="{spec.dscp or 0}"'


class LabelCache:
    """Label texts by site id and by service probe key."""

    def __init__(self) -> None:
        self.sites: dict[str, str] = {}
        self.probes: dict[str, Texts] = {}

    def fill(self, table: SiteTable, services: ServiceTable) -> None:
        """The texts of the sites and probes in force; swapped in whole, so that a scrape
        rendered meanwhile reads the old set or the new one, never half of each."""
        sites = {state.site.id: site_labels(state.site) for state in table.sites.values()}
        probes = {key: probe_texts(state.site, state.spec)
                  for key, state in services.probes.items()}
        self.sites, self.probes = sites, probes
