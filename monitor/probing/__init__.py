"""When probes go out and through which engine: the scheduler, the plan of targets and
engines, and the runner of service probes. Results go to a ``record`` callback: this
layer knows nothing of what they mean."""
