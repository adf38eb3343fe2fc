"""Ray cluster addresses: their form, checked when a spec is read, and whether anything answers at
one, checked before a run writes to the store — so an unreachable cluster fails in seconds with one
line instead of hanging in ``ray.init``.

Forms (Ray's own): ``auto`` (the cluster ``ray start`` left on this machine), ``host:port`` (a
cluster's GCS, from a machine of the cluster) and ``ray://host:port`` (Ray Client, from anywhere;
needs the ``ray[client]`` extra, which MergeLab's ``ray`` extra installs).
"""

from __future__ import annotations

import re
import socket

#: seconds to wait for a cluster to answer before saying it does not
CONNECT_TIMEOUT_S = 5.0

_HOST_PORT = re.compile(r"^(?:ray://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")
FORMS = "auto, host:port (the cluster's GCS) or ray://host:port (Ray Client)"


def parse_address(address: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an address, scheme ``gcs`` or ``client``; None for ``auto``.
    ValueError naming the forms for anything else."""
    text = address.strip()
    if text == "auto":
        return None
    match = _HOST_PORT.match(text)
    port = int(match.group(2)) if match else 0
    if not match or not 0 < port < 65536:
        raise ValueError(f"not a Ray address; give {FORMS}")
    return ("client" if text.startswith("ray://") else "gcs", match.group(1).strip("[]"), port)


def check_reachable(address: str | None, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """ValueError (its message follows the address), within about ``timeout`` seconds, if nothing
    answers at ``address`` (None: Ray starts a local cluster, nothing to check), if ``auto`` finds
    no cluster, or if a ``ray://`` address is given without the Ray Client installed."""
    if not address:
        return
    parsed = parse_address(address)
    if parsed is None:
        parsed = ("gcs", *_auto_address())
    scheme, host, port = parsed
    if scheme == "client":
        try:
            import grpc  # noqa: F401  (what ray[client] adds)
        except ImportError:
            raise ValueError(
                "ray:// needs the Ray Client; pip install 'ray[client]' (MergeLab's ray extra includes it)"
            ) from None
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        why = f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc)).lower()
        raise ValueError(
            f"no Ray cluster answers at {host}:{port} ({why}); start one with "
            "`ray start --head`, or give --address of a running cluster (none: a local one)"
        ) from None


def _auto_address() -> tuple[str, int]:
    """The address ``auto`` means, found as Ray finds it (``RAY_ADDRESS``, else the cluster ``ray
    start`` recorded on this machine)."""
    from ray._private.services import canonicalize_bootstrap_address

    try:
        found = canonicalize_bootstrap_address("auto")
    except ConnectionError:
        found = None
    parsed = parse_address(found) if found and found != "auto" else None
    if parsed is None:
        raise ValueError("no Ray cluster was started on this machine (`ray start --head` starts one)")
    return parsed[1], parsed[2]
