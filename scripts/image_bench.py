"""Measure the container image (docs/benchmarks.md, "Container image"): its size, what is installed in it (the
virtualenv, the model the wheel carries, the largest packages), cold start to ready, and the worker's RSS after
the demo mix.

Start to ready: seconds from `docker run -d` to the first 200 of /readyz (the worker holds its input partitions),
against a broker that already runs, with a new consumer group each time; the median of `--starts` runs. RSS: VmRSS
of the worker (PID 1 in its container) once the demo mix is accounted for.

Usage: python scripts/image_bench.py --image minnow:image-helper [--bootstrap-servers HOST:PORT] [--starts 3]
[--name image-bench]. Without --bootstrap-servers it starts a local broker of its own (minnow dev kafka, instance
NAME) and stops it after. Containers (named minnow-NAME-<random>) use host networking and are removed by id.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

from pipeline.ops import demo, devkafka
from pipeline.settings import KafkaSettings

READY_TIMEOUT_S = 120.0
SITE_PACKAGES = "/opt/minnow/venv/lib/python3.11/site-packages"


def docker(*args: str, timeout: float = 300.0) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=True).stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# Where the installed wheel carries the int8 graphs and tokenizer (pipeline/assets.py, docs/packaging.md).
MODEL_DIR = f"{SITE_PACKAGES}/pipeline/_assets/model"


def sizes(image: str) -> dict[str, Any]:
    """Image size, the virtualenv and model folders, and the ten largest installed packages (bytes)."""
    folders: dict[str, int] = {}
    for folder in ("/opt/minnow/venv", MODEL_DIR):  # one du each: du counts a folder inside another only once
        du = docker("run", "--rm", "--network", "none", "--entrypoint", "du", image, "-sb", folder)
        folders[folder] = int(du.split("\t", 1)[0])
    listing = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c", f"du -sb {SITE_PACKAGES}/*",
    )  # fmt: skip
    packages = sorted(
        ((path.rsplit("/", 1)[1], int(size)) for size, path in (line.split("\t") for line in listing.splitlines())),
        key=lambda item: -item[1],
    )
    return {
        "image_bytes": int(docker("image", "inspect", "--format", "{{.Size}}", image)),
        "venv_bytes": folders["/opt/minnow/venv"],
        "models_bytes": folders[MODEL_DIR],
        "largest_packages": dict(packages[:15]),
    }


def start_worker(image: str, bootstrap: str, prefix: str, port: int, name: str) -> tuple[str, float]:
    """A worker container on `prefix`'s topics with a fresh group; (its id, time.monotonic() before `docker run`)."""
    started = time.monotonic()
    cid = docker(
        "run", "-d", "--network", "host", "--name", f"minnow-{name}-{uuid.uuid4().hex[:8]}",
        "-e", f"MINNOW_KAFKA__BOOTSTRAP_SERVERS={bootstrap}", "-e", f"MINNOW_KAFKA__TOPIC_PREFIX={prefix}",
        "-e", f"MINNOW_KAFKA__GROUP_ID={prefix}{uuid.uuid4().hex[:8]}", "-e", f"MINNOW_WORKER__METRICS_PORT={port}",
        image, "worker",
    ).strip()  # fmt: skip
    return cid, started


def wait_ready(port: int, started: float) -> float:
    """Seconds from `started` to the first 200 of /readyz."""
    deadline = started + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as reply:
                if reply.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"no ready worker on port {port} within {READY_TIMEOUT_S} s")


class Container:
    """poll/returncode for demo._collect, from `docker inspect`."""

    def __init__(self, cid: str) -> None:
        self.cid = cid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        state = json.loads(docker("inspect", "--format", "{{json .State}}", self.cid))
        self.returncode = None if state["Running"] else int(state["ExitCode"])
        return self.returncode


async def feed_demo(kafka: KafkaSettings, prefix: str, worker: Container) -> int:
    """Send the demo mix and wait until every record is accounted for; the number accounted for."""
    families = await demo.feed(kafka, prefix)
    await demo.collect(kafka, prefix, families, worker)
    return sum(t.accounted for t in families.values())


def rss_bytes(cid: str) -> int:
    status = docker("exec", cid, "cat", "/proc/1/status")
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(kib) * 1024


def measure(image: str, bootstrap: str, starts: int, name: str = "image-bench") -> dict[str, Any]:
    report: dict[str, Any] = {"image": image, **sizes(image)}
    prefix = f"minnow-bench-{uuid.uuid4().hex[:8]}."
    env = ["-e", f"MINNOW_KAFKA__BOOTSTRAP_SERVERS={bootstrap}", "-e", f"MINNOW_KAFKA__TOPIC_PREFIX={prefix}"]
    docker("run", "--rm", "--network", "host", *env, image, "topics", "apply", "--yes")
    times = []
    for _ in range(starts):
        port = free_port()
        cid, started = start_worker(image, bootstrap, prefix, port, name)
        try:
            times.append(wait_ready(port, started))
        finally:
            docker("rm", "-f", cid)
    report["start_to_ready_s"] = [round(t, 2) for t in times]
    report["start_to_ready_median_s"] = round(statistics.median(times), 2)
    port = free_port()
    cid, started = start_worker(image, bootstrap, prefix, port, name)
    try:
        wait_ready(port, started)
        report["rss_ready_bytes"] = rss_bytes(cid)
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        report["demo_records_accounted"] = asyncio.run(feed_demo(kafka, prefix, Container(cid)))
        report["rss_after_demo_bytes"] = rss_bytes(cid)
        report["docker_stats_mem"] = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", cid).strip()
    finally:
        docker("rm", "-f", cid)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--image", default="minnow:image-helper")
    parser.add_argument("--bootstrap-servers", help="a running broker (default: start one, then stop it)")
    parser.add_argument("--starts", type=int, default=3, help="cold starts to time (median reported)")
    parser.add_argument(
        "--name",
        default="image-bench",
        help="the local broker's instance and the containers' name part (default %(default)s)",
    )
    args = parser.parse_args()
    if args.bootstrap_servers:
        print(json.dumps(measure(args.image, args.bootstrap_servers, args.starts, args.name), indent=2))
        return 0
    cache = devkafka.default_cache_dir()
    info = devkafka.start(cache, instance=args.name)
    try:
        print(json.dumps(measure(args.image, info.bootstrap_servers, args.starts, args.name), indent=2))
    finally:
        devkafka.stop(cache, instance=args.name, forget=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
