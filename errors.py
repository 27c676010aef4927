"""Errors a user can fix: the CLI prints them as one line and exits 2."""

from __future__ import annotations


class ActivestreamError(Exception):
    """Base for every error caused by input the user controls (config, data, flags)."""


class ConfigError(ActivestreamError, ValueError):
    """A config key or value is wrong; the message names the key."""


class DataError(ActivestreamError, ValueError):
    """A data source is unreadable, empty or misses a column; the message names the file."""


class StorageError(ActivestreamError):
    """Storage cannot be used: missing bucket, denied access, unreachable endpoint, full disk.

    The message names the URI and the cause, because the fix (credentials, bucket name, a stopped
    server) lies with whoever runs the service, not in the code.
    """


class ClusterError(ActivestreamError):
    """Ray's cluster cannot be started or reached; the message is Ray's reason in one line.

    The fix lies with the machine or the cluster (load, a stopped head node), not the code.
    """
