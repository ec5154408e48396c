"""What probe results mean: each site's and service's state, window statistics, health
with its hysteresis and root cause, and the records every sink shares. Sinks read it
through one ``Source`` protocol (``monitor.status.source``)."""
