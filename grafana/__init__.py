"""vcmon's Grafana dashboards as code: ``python -m grafana.build`` writes grafana/dashboards/.

A small typed generator of Grafana 11 dashboard JSON (schemaVersion 41). Colours, units
and thresholds come from vcmon itself (``monitor.status.health.Status``,
``monitor.inventory.thresholds.Thresholds``), so the dashboards cannot drift from the alert
defaults.
"""
