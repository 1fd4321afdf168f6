"""Rollout: running modules, and moving them to a new image without dropping a request.

The last step of advisory → rebuild → test → gate → publish → **rollout**.  A *module* is a
named service on this host: N replicas of one image (each replica one podman container, or a
web server and its content container) behind a reverse proxy that Alicorn configures.

- :mod:`~alicorn.rollout.model` — the values: module specs, replicas, history, operations.
- :mod:`~alicorn.rollout.interface` — the extension points: :class:`Proxy` (HAProxy here;
  nginx would be another file) and their error base.
- :mod:`~alicorn.rollout.haproxy` — HAProxy in master-worker mode, changed through its runtime
  API (no reload, no dropped connection), its configuration kept on disk for a restart.
- :mod:`~alicorn.rollout.trust` — only images whose signature and provenance verify under the
  host's policy run.
- :mod:`~alicorn.rollout.replicas` — starting, probing and removing a replica's containers.
- :mod:`~alicorn.rollout.store` — modules, their history and events, and the journal of the
  operation in progress (migration 0007), so a run interrupted by a reboot is finished or
  rolled back by the next one.
- :mod:`~alicorn.rollout.controller` — deploy, update (start new → ready → shift → soak →
  drain), rollback, resume, status.
- :mod:`~alicorn.rollout.agent` — follows the registry and applies new signed images.
- :mod:`~alicorn.rollout.load` — a steady HTTP load that counts every failed request (the
  tests' and the benchmark's witness).
"""
