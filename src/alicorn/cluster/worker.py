"""``alicorn worker`` with the Celery backend: a builder host joining its queues.

A builder listens on the queues of its capabilities (``alicorn.deb.x86_64``,
``alicorn.rpm.x86_64``), on its architecture's ``any`` queue, and on the service queue (scans,
rebuild rounds).  A build from git reaches the ``any`` queue (its kind is known once its recipe is
fetched): a worker that cannot build it sends it on to the right queue without claiming it.
Its ALICORN_HOME is its own (scratch space, caches, its signing keys); what
others read goes to the shared database and the registry.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

from alicorn.cluster.config import SERVICE_QUEUE, QueueConfig, machine_arch, queue_name
from alicorn.config import Settings


def queues_for(capabilities: Sequence[str], arch: str | None = None) -> list[str]:
    arch = arch or machine_arch()
    names = [queue_name(c, arch) for c in capabilities if c != "any"]
    return [*names, queue_name("any", arch), SERVICE_QUEUE]


def run_celery_worker(settings: Settings, config: QueueConfig, *, concurrency: int,
                      capabilities: Sequence[str], arch: str | None = None,
                      listen: str | None = None, loglevel: str = "INFO") -> None:
    """Run a Celery worker of this home's application until it is stopped; with ``listen``,
    its health and metrics endpoints there; a janitor thread reaps dead workers' builds and
    sends lost messages again (alicorn.cluster.reaper)."""
    from alicorn.cluster.metrics import serve_worker_endpoints
    from alicorn.cluster.reaper import Janitor
    from alicorn.cluster.tasks import ARCH_CONF, CAPABILITIES_CONF, celery_app

    app = celery_app(settings, config)
    # What a build task checks before claiming a build from the ``any`` queue (a build from
    # git, whose kind was not known when it was submitted): one this worker cannot build is
    # sent on to its queue (alicorn.cluster.tasks.forward_to).
    app.conf.update({CAPABILITIES_CONF: [c for c in capabilities if c != "any"],
                     ARCH_CONF: arch or machine_arch()})
    queues = queues_for(capabilities, arch)
    serve_worker_endpoints(settings, config, listen, queues=queues)
    Janitor(settings, config).start()
    argv = ["worker", f"--concurrency={concurrency}", "--pool=prefork",
            "-Q", ",".join(queues), f"--hostname=alicorn-{os.getpid()}@{socket.gethostname()}",
            f"--loglevel={loglevel}", "--without-gossip", "--without-mingle"]
    app.worker_main(argv)
