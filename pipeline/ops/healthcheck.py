"""The container image's HEALTHCHECK: GET /healthz of the process the container runs, exit 0 when it answers 200.

One image serves every role, so the check reads which role PID 1 runs (`minnow worker`, `minnow escalator`) and
asks that role's port; a role with no endpoint (`topics apply`, `review`) and a port set to 0 pass, as Docker
has nothing to ask them. Standard library only and no settings import: it runs every interval, and a slow
check would be counted against the timeout (docs/deploy.md, "The image").
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

# role -> (the variable naming its port, its default); kept equal to WorkerSettings / EscalationSettings
PORTS = {
    "worker": ("MINNOW_WORKER__METRICS_PORT", 9464),
    "escalator": ("MINNOW_ESCALATION__METRICS_PORT", 9465),
}
TIMEOUT_S = 3.0


def role_of(argv: Sequence[str]) -> str | None:
    """The role with an endpoint that a `minnow ...` command line runs: its subcommand, the first argument that is
    neither a path (the `minnow` script), `pipeline.cli` (`python -m`) nor an option; None for other subcommands."""
    command = next((a for a in argv[1:] if not a.startswith("-") and "/" not in a and a != "pipeline.cli"), None)
    return command if command in PORTS else None


def health_url(argv: Sequence[str], env: Mapping[str, str]) -> str | None:
    """The /healthz URL of the process with command line `argv`, or None when it serves none."""
    role = role_of(argv)
    if role is None:
        return None
    variable, default = PORTS[role]
    port = int(env.get(variable, default))
    return f"http://127.0.0.1:{port}/healthz" if port else None


def check(url: str | None, timeout_s: float = TIMEOUT_S) -> tuple[bool, str]:
    """(healthy, a line saying why) for one GET of `url`; no URL is healthy (nothing to ask)."""
    if url is None:
        return True, "no health endpoint for this role"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            return reply.status == 200, f"{url}: {reply.status}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{url}: {exc}"


def main(cmdline: Path = Path("/proc/1/cmdline")) -> int:
    argv = [part.decode(errors="replace") for part in cmdline.read_bytes().split(b"\0") if part]
    healthy, why = check(health_url(argv, os.environ))
    print(why)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
