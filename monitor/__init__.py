"""vcmon: network monitoring for video-conference endpoints."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vcmon")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
