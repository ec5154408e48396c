"""Readiness reports: the state of every site at a moment, and its history since the last one.

``model`` gathers (the daemon's API for now, Prometheus for history), ``render`` writes
Markdown, HTML, CSV or JSON, ``i18n`` holds the Vietnamese and English words.
"""
