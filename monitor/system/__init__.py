"""OS-level services the daemon uses, and nothing of vcmon's own: forked workers, the
garbage collector's pauses, systemd notification, logging, and dropping privileges."""
