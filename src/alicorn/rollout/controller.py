"""Deploy, update, roll back: the module's state machine (see :mod:`alicorn.rollout.model`'s
phases), journalled before each step so that an interrupted run is finished or undone.

An update: verify → pull → start the new replicas → wait until every one is ready (the
progress deadline) → shift the proxy to them, the old replicas kept as backups → soak (watch
the new ones; any failure sends traffic back to the old) → drain and remove the old replicas
and their image.  Every phase is written to the journal (``module_ops``) before it is acted
on; :meth:`Controller.resume` reads it after a reboot or a killed run.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from alicorn.chain.sigstore import split_reference
from alicorn.config import Settings
from alicorn.errors import BadInput, Error, NotFound
from alicorn.monitor import Monitor
from alicorn.rollout import replicas as rp
from alicorn.rollout import trust
from alicorn.rollout.haproxy import HAProxy
from alicorn.rollout.interface import (
    HealthError,
    ModuleBusy,
    NoSuchImage,
    Proxy,
    ProxyError,
    RolloutError,
)
from alicorn.rollout.model import (
    DEPLOY,
    DEPLOYED,
    DONE,
    DRAINING,
    FAILED,
    PULLING,
    R_DRAINING,
    R_FAILED,
    R_SERVING,
    R_STANDBY,
    R_STARTING,
    READY,
    ROLLBACK,
    ROLLED_BACK,
    ROLLING_BACK,
    SHIFTED,
    SOAKING,
    STARTING,
    UPDATE,
    UPDATED,
    VERIFYING,
    Backend,
    ContentSpec,
    HistoryEntry,
    ModuleSpec,
    Operation,
    Readiness,
    Replica,
    TrustedImage,
    check_module_name,
)
from alicorn.rollout.store import Module, ModuleStore, new_op_id

UNCHANGED = "unchanged"   # Outcome.result when the module already runs the target digest
PLANNED = "planned"       # Outcome.result of a dry run

#: How often the soak looks at the new replicas (and the readiness wait at pending ones).
POLL = 0.25
#: A probe during the soak waits at most this long: a hung replica must not hide the others.
SOAK_PROBE_TIMEOUT = 1.0


def short(digest: str | None) -> str:
    if not digest:
        return "-"
    return digest.split(":", 1)[-1][:12]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Outcome:
    """What one operation did.  ``result`` is one of model.RESULTS, UNCHANGED or PLANNED."""

    module: str
    kind: str                          # deploy | update | rollback | resume
    result: str
    digest: str | None                 # serving now
    from_digest: str | None = None
    to_digest: str | None = None
    op_id: str | None = None
    reason: str | None = None
    plan: tuple[str, ...] = ()         # a dry run's steps, in order
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"module": self.module, "kind": self.kind, "result": self.result,
                "digest": self.digest, "from": self.from_digest, "to": self.to_digest,
                "op": self.op_id, "reason": self.reason, "plan": list(self.plan),
                "seconds": round(self.seconds, 3), **self.extra}


class _Op:
    """One operation in progress: its journal entry, its events, its monitor steps."""

    def __init__(self, controller: Controller, op: Operation):
        self.c = controller
        self.op = op
        self.t0 = time.monotonic()

    @property
    def id(self) -> str:
        return self.op.id

    def phase(self, phase: str, message: str | None = None, **data: Any) -> None:
        """Journal ``phase`` before acting on it."""
        self.c.store.set_phase(self.op.id, phase, **data)
        self.c.monitor.step(phase)
        if message:
            self.event(phase, message)

    def event(self, kind: str, message: str) -> None:
        self.c.store.add_event(self.op.module, kind, message, self.op.id)
        self.c.monitor.message(f"{self.op.module}: {message}")

    def finish(self, result: str, *, digest: str, reason: str | None = None,
               phase: str = DONE, history: bool = True) -> None:
        if history:
            self.c.store.add_history(self.op.module, HistoryEntry(
                digest=digest, at=_utcnow(), result=result, from_digest=self.op.from_digest,
                reason=reason, op_id=self.op.id))
        self.c.store.finish_op(self.op.id, phase=phase, result=result, reason=reason)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    @property
    def seconds(self) -> float:
        """The progress deadline, in seconds from the operation's start."""
        return (self.op.deadline_at - self.op.started_at).total_seconds()

    @property
    def deadline(self) -> float:
        """The progress deadline as a monotonic time."""
        left = (self.op.deadline_at - _utcnow()).total_seconds()
        return time.monotonic() + left


class _Rollback(Exception):
    """Internal: the new replicas failed; roll back with this reason."""

    def __init__(self, reason: str, *, detected: float | None = None,
                 first_failure: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.detected = detected
        self.first_failure = first_failure


class Controller:
    """Every rollout operation on this host's modules (one ALICORN_HOME)."""

    def __init__(self, settings: Settings, *, monitor: Monitor | None = None,
                 keys: Sequence[Path] = ()):
        """``keys``: trust only these public keys (PEM) instead of the host's keyring."""
        self.settings = settings
        self.monitor = monitor or Monitor()
        self.keys = tuple(keys)
        self.store = ModuleStore(settings.database_url, settings.modules_dir)
        #: The label value that tells this home's containers from another home's module of
        #: the same name (see :data:`alicorn.rollout.replicas.LABEL_HOME`).
        self.home = str(Path(settings.modules_dir).resolve())

    # -- helpers --------------------------------------------------------------------------

    def proxy(self, module: Module | ModuleSpec, readiness: Readiness | None = None) -> Proxy:
        """The module's proxy (its files under ``modules_dir/NAME/proxy``)."""
        spec = module.spec if isinstance(module, Module) else module
        if readiness is None:
            readiness = module.readiness if isinstance(module, Module) else Readiness()
        return HAProxy(self.settings.modules_dir / spec.name / "proxy", module=spec.name,
                       address=spec.address, port=spec.port, readiness=readiness)

    def _verify(self, ref: str, repository: str | None = None) -> TrustedImage:
        return trust.verify_image(self.settings, ref, repository=repository, keys=self.keys)

    def _open(self, name: str, kind: str, from_digest: str | None, to_digest: str,
              deadline: float, *, announce: bool = True, **data: Any) -> _Op:
        started = _utcnow()
        op = Operation(id=new_op_id(), module=name, kind=kind, from_digest=from_digest,
                       to_digest=to_digest, phase=VERIFYING, started_at=started,
                       deadline_at=started + timedelta(seconds=deadline))
        self.store.open_op(op, data)
        run = _Op(self, op)
        if announce:
            self.monitor.step(VERIFYING)
        return run

    def _backends(self, replicas: Sequence[Replica]) -> list[Backend]:
        return [Backend(name=r.name, host="127.0.0.1", port=r.host_port) for r in replicas]

    def _taken_names(self, name: str) -> set[str]:
        """Replica names in use: the database's, podman's, and the proxy's (a name the proxy
        still has for a vanished container must not come back on another port)."""
        taken = {r.name for r in self.store.replicas(name)}
        taken |= {r.name for r in rp.podman_replicas(name)}   # any home's: names are podman-wide
        module = self.store.get(name)
        if module is not None:
            with contextlib.suppress(Error):
                taken |= {s.name for s in self.proxy(module).servers()}
        return taken

    def _start_replicas(self, run: _Op | None, module: Module, image: TrustedImage,
                        facts: rp.ImageFacts, count: int, content_image: str | None, *,
                        journal: bool = True) -> list[Replica]:
        """Start ``count`` replicas; each is in the database (and, with ``journal``, in the
        journal's ``new`` of the STARTING phase) before podman runs it, so a kill leaves
        nothing unknown.  ``journal=False`` for a resume, whose phase must stay what it is."""
        started: list[Replica] = []
        taken = self._taken_names(module.name)
        content = module.spec.content
        for _ in range(count):
            rname = rp.replica_name(module.name, image.digest, taken)
            taken.add(rname)
            holders = (f"{rname}-content",) if content_image and content.image else ()
            placeholder = Replica(name=rname, digest=image.digest, host_port=0,
                                  containers=(rname, *holders), state=R_STARTING)
            self.store.put_replica(module.name, placeholder, image=image.ref)
            if run and journal:
                self.store.set_phase(run.id, STARTING,
                                     new=[*(r.name for r in started), rname])
            replica = rp.start_replica(module.name, image.digest, facts, name=rname,
                                       content=content, content_image=content_image,
                                       home=self.home)
            self.store.put_replica(module.name, replica, image=image.ref)
            started.append(replica)
            if run:
                run.event("start", f"replica {rname} started ({short(image.digest)}, "
                                   f"127.0.0.1:{replica.host_port})")
        return started

    def _wait_ready(self, run: _Op | None, replicas: Sequence[Replica], readiness: Readiness,
                    deadline: float) -> None:
        """Until every replica passed one readiness check; :class:`_Rollback` naming the
        replica and its last answer at ``deadline`` (monotonic) or when one stops."""
        pending = {r.name: r for r in replicas}
        last: dict[str, str] = {}
        # Consecutive client errors (4xx) per replica.  A server still starting refuses
        # connections or answers 503; one that answers 404 for the readiness path `retries`
        # times in a row is up and wrong, and waiting out the deadline will not change it.
        client_errors: dict[str, int] = {}
        t0 = time.monotonic()
        next_state_check = t0 + 1.0
        while pending:
            for name, r in list(pending.items()):
                left = max(0.2, deadline - time.monotonic())
                result = rp.probe(r, readiness, timeout=min(readiness.timeout, left))
                last[name] = result.detail
                if result.status is not None and 400 <= result.status < 500:
                    client_errors[name] = client_errors.get(name, 0) + 1
                    if client_errors[name] >= max(3, readiness.retries):
                        raise _Rollback(f"replica {name} did not pass its readiness check: "
                                        f"{result.detail}, {client_errors[name]} times in "
                                        "a row (a client error does not go away by waiting)")
                else:
                    client_errors.pop(name, None)
                if result.ok:
                    del pending[name]
                    self.store.set_replicas([name], healthy=True)
                    if run:
                        run.event("ready", f"replica {name} ready after "
                                           f"{time.monotonic() - t0:.1f} s ({result.detail})")
            if not pending:
                return
            now = time.monotonic()
            if now >= next_state_check:
                next_state_check = now + 1.0
                states = rp.container_states(list(pending))
                for name, state in states.items():
                    if state != "running":
                        raise _Rollback(f"replica {name} stopped before it passed its "
                                        f"readiness check (container {state or 'gone'}; "
                                        f"last check: {last.get(name, 'none')})")
            if now >= deadline:
                name = sorted(pending)[0]
                allowed = (f"the {run.seconds:g} s deadline" if run
                           else f"{now - t0:.0f} s")
                raise _Rollback(f"replica {name} did not pass its readiness check within "
                                f"{allowed}: {last.get(name, 'no check')}")
            time.sleep(POLL)

    def _wait_proxy_up(self, proxy: Proxy, replicas: Sequence[Replica],
                       deadline: float) -> None:
        """Until the proxy's own health checks have every replica UP (a server it was just
        given starts DOWN until its checks pass); :class:`_Rollback` at ``deadline``."""
        names = {r.name for r in replicas}
        last: dict[str, str] = {}
        while True:
            up = set()
            for s in proxy.servers():
                if s.name in names and not s.backup:
                    if s.status.upper() == "UP":
                        up.add(s.name)
                    last[s.name] = f"{s.status}" + (f" ({s.check})" if s.check else "")
            if up >= names:
                return
            if time.monotonic() >= deadline:
                name = sorted(names - up)[0]
                raise _Rollback(f"the proxy's health checks did not pass for replica {name} "
                                f"in time: {last.get(name, 'not in the proxy')}")
            time.sleep(0.1)

    def _soak(self, run: _Op, proxy: Proxy, new: Sequence[Replica], readiness: Readiness,
              seconds: float) -> None:
        """Watch the new replicas for ``seconds``: ``retries`` failed probes in a row, the
        proxy marking one DOWN, or its container stopping raise :class:`_Rollback`."""
        end = time.monotonic() + seconds
        fails = {r.name: 0 for r in new}
        first: dict[str, float] = {}
        names = set(fails)
        by_name = {r.name: r for r in new}
        seen_up: set[str] = set()   # a server the proxy had UP, then DOWN, failed
        threshold = max(1, readiness.retries)
        next_state_check = time.monotonic() + 1.0
        while time.monotonic() < end:
            for r in new:
                result = rp.probe(r, readiness, timeout=min(readiness.timeout,
                                                            SOAK_PROBE_TIMEOUT))
                if result.ok:
                    fails[r.name] = 0
                    first.pop(r.name, None)
                    continue
                fails[r.name] += 1
                first.setdefault(r.name, time.monotonic())
                if fails[r.name] >= threshold:
                    raise _Rollback(f"replica {r.name} failed {fails[r.name]} health checks "
                                    f"in a row during the soak: {result.detail}",
                                    detected=time.monotonic(), first_failure=first[r.name])
            try:
                servers = proxy.servers()
            except ProxyError:
                servers = []
            for s in servers:
                if s.name not in names or s.backup:
                    continue
                if s.status.upper() == "UP":
                    seen_up.add(s.name)
                elif s.status.upper() == "DOWN" and s.name in seen_up:
                    # One failed real request takes a server out (on-error mark-down), and
                    # under a heavy load a healthy replica may refuse one connection: that
                    # is a rollback only when the replica's own readiness check fails too.
                    confirm = rp.probe(by_name[s.name], readiness,
                                       timeout=min(readiness.timeout, SOAK_PROBE_TIMEOUT))
                    if confirm.ok:
                        seen_up.discard(s.name)
                        run.event(SOAKING, f"the proxy took {s.name} out"
                                           + (f" ({s.check})" if s.check else "")
                                           + "; it passes its readiness check, so the soak "
                                             "goes on")
                        continue
                    raise _Rollback(f"replica {s.name} is DOWN in the proxy during the soak"
                                    + (f" ({s.check})" if s.check else "")
                                    + f" and fails its readiness check: {confirm.detail}",
                                    detected=time.monotonic(),
                                    first_failure=first.get(s.name))
            now = time.monotonic()
            if now >= next_state_check:
                next_state_check = now + 1.0
                for cname, state in rp.container_states([r.name for r in new]).items():
                    if state != "running":
                        raise _Rollback(f"replica {cname} stopped during the soak "
                                        f"(container {state or 'gone'})",
                                        detected=now, first_failure=first.get(cname))
            time.sleep(POLL)

    def _drain(self, run: _Op, proxy: Proxy, old: Sequence[Replica], new: Sequence[Replica],
               seconds: float) -> None:
        names = [r.name for r in old]
        if names:
            self.store.set_replicas(names, state=R_DRAINING)
            proxy.drain(names)
            end = time.monotonic() + seconds
            left = -1
            while time.monotonic() < end:
                try:
                    left = sum(s.sessions for s in proxy.servers() if s.name in names)
                except ProxyError:
                    break
                if left == 0:
                    break
                time.sleep(POLL)
            if left > 0:
                run.event(DRAINING, f"{left} connection(s) still open to the old replicas "
                                    f"after {seconds:g} s; closing them")
        proxy.set_backends(self._backends(new))
        self._remove_replicas(old, run)

    def _remove_replicas(self, replicas: Sequence[Replica], run: _Op | None = None) -> None:
        images = {self.store.replica_image(r.name) for r in replicas}
        for r in replicas:
            rp.remove_replica(r)
        self.store.delete_replicas([r.name for r in replicas])
        for image in sorted(i for i in images if i):
            users = rp.remove_image(image)
            if run is None:
                continue
            if users:
                run.event("image", f"kept {image} in podman's storage: {', '.join(users)} "
                                   f"still use(s) it")
            else:
                run.event("image", f"removed {image} from podman's storage")

    def _forget(self, name: str) -> None:
        """Nothing of the module left running or stored (a deploy that did not finish)."""
        module = self.store.get(name)
        if module is not None:
            with contextlib.suppress(Error):
                self.proxy(module).stop()
        known = {r.name: r for r in self.store.replicas(name)}
        for r in rp.podman_replicas(name, self.home):
            known.setdefault(r.name, r)
        images = {self.store.replica_image(n) for n in known}
        if module is not None and module.content_image:
            images.add(module.content_image)
        for r in known.values():
            rp.remove_replica(r)
        for image in images:
            if image:
                rp.remove_image(image)
        self.store.delete(name)
        shutil.rmtree(self.settings.modules_dir / name / "proxy", ignore_errors=True)

    # -- deploy ---------------------------------------------------------------------------

    def deploy(self, name: str, image: str, *, port: int, replicas: int = 2,
               address: str = "0.0.0.0", content: ContentSpec | None = None,
               deadline: float = 120.0, soak: float = 10.0, drain: float = 10.0,
               dry_run: bool = False) -> Outcome:
        """Run ``image`` (a reference, ``sha256:…`` of a build here, or a build id) as
        module ``name``: verify it, start the proxy on ``address:port`` and ``replicas``
        replicas, wait until they are ready.  BadInput when the module exists."""
        check_module_name(name)
        if replicas < 1:
            raise BadInput(f"--replicas {replicas}: a module needs at least one replica")
        if self.store.get(name) is not None:
            raise BadInput(f"module {name} is deployed already",
                           hint=f"alicorn update {name} moves it to another image")
        content = content or ContentSpec()
        with self.store.lock(name):
            if self.store.get(name) is not None:
                raise BadInput(f"module {name} is deployed already")
            t0 = time.monotonic()
            self.monitor.step(VERIFYING)
            trusted = self._verify(image)
            content_ref = self._verify(content.image).ref if content.image else None
            tag = _tag_of(image) or "latest"
            spec = ModuleSpec(name=name, repository=trusted.repository, port=port,
                              address=address, replicas=replicas, tag=tag, content=content,
                              deadline=deadline, soak=soak, drain=drain)
            if dry_run:
                return Outcome(module=name, kind=DEPLOY, result=PLANNED, digest=None,
                               to_digest=trusted.digest, seconds=time.monotonic() - t0,
                               plan=self._plan(spec, trusted, None, [], content_ref,
                                               deploy=True))
            module = self.store.create(spec, content_image=content_ref)
            # Verified already (and said so above): the step is not announced twice.
            run = self._open(name, DEPLOY, None, trusted.digest, deadline, announce=False,
                             ref=trusted.ref)
            run.event(VERIFYING, f"{trusted.ref} verified (signed by {trusted.key_id})")
            try:
                return self._deploy(run, module, trusted, content_ref)
            except BaseException as e:
                reason = e.diagnostics() if isinstance(e, Error) else repr(e)
                self.monitor.message(f"{name}: deploy failed, removing what it started: "
                                     f"{reason}")
                self._forget(name)
                if isinstance(e, _Rollback):
                    raise HealthError(f"module {name} was not deployed: {e.reason}",
                                      hint="alicorn deploy again once the image is fixed, "
                                           "or give a longer --deadline") from None
                raise

    def _deploy(self, run: _Op, module: Module, trusted: TrustedImage,
                content_ref: str | None) -> Outcome:
        spec = module.spec
        run.phase(PULLING, f"pulling {trusted.ref}")
        rp.pull_image(trusted.ref)
        if content_ref:
            rp.pull_image(content_ref)
        facts = rp.image_facts(trusted.ref)
        self.store.set_serving(spec.name, digest=None, image=None, previous_digest=None,
                               readiness=facts.readiness)
        proxy = self.proxy(spec, facts.readiness)
        run.phase(STARTING, f"starting the proxy on {spec.address}:{spec.port} and "
                            f"{spec.replicas} replica(s)")
        proxy.start()
        new = self._start_replicas(run, module, trusted, facts, spec.replicas, content_ref)
        run.phase(READY)
        self._wait_ready(run, new, facts.readiness, run.deadline)
        run.phase(SHIFTED, f"the proxy sends {spec.address}:{spec.port} to "
                           f"{', '.join(r.name for r in new)}")
        proxy.set_backends(self._backends(new))
        self._wait_proxy_up(proxy, new, max(run.deadline, time.monotonic() + 10))
        self.store.set_replicas([r.name for r in new], state=R_SERVING, healthy=True)
        self.store.set_serving(spec.name, digest=trusted.digest, image=trusted.ref,
                               previous_digest=None, readiness=facts.readiness)
        run.finish(DEPLOYED, digest=trusted.digest)
        run.event(DONE, f"deployed {short(trusted.digest)} with {len(new)} replica(s) in "
                        f"{run.elapsed:.1f} s")
        return Outcome(module=spec.name, kind=DEPLOY, result=DEPLOYED, digest=trusted.digest,
                       to_digest=trusted.digest, op_id=run.id, seconds=run.elapsed,
                       extra={"replicas": [r.name for r in new], "port": spec.port})

    # -- update ---------------------------------------------------------------------------

    def update(self, name: str, *, to: str | None = None, deadline: float | None = None,
               soak: float | None = None, dry_run: bool = False) -> Outcome:
        """Move ``name`` to ``to`` (a digest or reference; default: what the module's tag
        names in the registry now).  Rolls back by itself on failed readiness before the
        deadline or failed health in the soak window (result ROLLED_BACK, reason why)."""
        self.store.require(name)
        with self.store.lock(name):
            if not dry_run:
                self._resume_first(name)
            module = self.store.require(name)
            spec = module.spec
            ref = to or f"{spec.repository}:{spec.tag}"
            t0 = time.monotonic()
            deadline = spec.deadline if deadline is None else deadline
            soak = spec.soak if soak is None else soak
            try:
                _repository, digest = trust.resolve(self.settings, ref,
                                                    repository=spec.repository)
            except Error as e:   # no such image, the registry down, …
                if not dry_run:
                    self._refused(module, UPDATE, ref, e)
                raise
            if digest == module.digest:
                return Outcome(module=name, kind=UPDATE, result=UNCHANGED,
                               digest=module.digest, from_digest=module.digest,
                               to_digest=digest, seconds=time.monotonic() - t0)
            if dry_run:
                trusted = self._verify(ref, spec.repository)
                return Outcome(module=name, kind=UPDATE, result=PLANNED, digest=module.digest,
                               from_digest=module.digest, to_digest=trusted.digest,
                               seconds=time.monotonic() - t0,
                               plan=self._plan(spec, trusted, module,
                                               self.store.replicas(name, digest=module.digest),
                                               module.content_image, soak=soak))
            run = self._open(name, UPDATE, module.digest, digest, deadline, ref=ref,
                             previous=module.previous_digest)
            trusted = self._verified(run, module, ref)
            return self._replace(run, module, trusted, soak=soak, ok=UPDATED, bad=ROLLED_BACK)

    def _verified(self, run: _Op, module: Module, ref: str) -> TrustedImage:
        """Verify and pull ``ref`` for ``run``; FAILED in the history (and re-raised) when
        either fails: nothing was started, the old digest keeps serving."""
        try:
            trusted = self._verify(ref, module.spec.repository)
            run.event(VERIFYING, f"{trusted.ref} verified (signed by {trusted.key_id})")
            run.phase(PULLING, f"pulling {trusted.ref}", ref=trusted.ref)
            rp.pull_image(trusted.ref)
        except Error as e:
            reason = e.message
            run.event("error", f"refused {ref}: {reason}; {short(module.digest)} keeps serving")
            run.finish(FAILED, digest=run.op.to_digest, reason=reason)
            raise
        return trusted

    def _refused(self, module: Module, kind: str, ref: str, e: Error) -> None:
        """An image that could not even be resolved: an operation that FAILED at once."""
        run = self._open(module.name, kind, module.digest, ref, 0)
        run.event("error", f"refused {ref}: {e.message}; {short(module.digest)} keeps serving")
        run.finish(FAILED, digest=ref, reason=e.message)

    def _replace(self, run: _Op, module: Module, trusted: TrustedImage, *, soak: float,
                 ok: str, bad: str) -> Outcome:
        """Start → ready → shift → soak → drain, or roll back to what serves now."""
        spec = module.spec
        facts = rp.image_facts(trusted.ref)
        old = self.store.replicas(spec.name, digest=module.digest)
        proxy = self.proxy(module)
        new: list[Replica] = []
        shifted = False
        try:
            run.phase(STARTING, f"starting {spec.replicas} replica(s) of "
                                f"{short(trusted.digest)}", old=[r.name for r in old])
            new = self._start_replicas(run, module, trusted, facts, spec.replicas,
                                       module.content_image)
            run.phase(READY)
            self._wait_ready(run, new, facts.readiness, run.deadline)
            run.phase(SHIFTED, f"traffic shifted to {', '.join(r.name for r in new)}; "
                               f"{', '.join(r.name for r in old) or 'nothing'} on standby")
            shifted = True
            proxy.set_backends(self._backends(new), self._backends(old))
            self.store.set_replicas([r.name for r in new], state=R_SERVING, healthy=True)
            self.store.set_replicas([r.name for r in old], state=R_STANDBY)
            self.store.set_serving(spec.name, digest=trusted.digest, image=trusted.ref,
                                   previous_digest=module.digest, readiness=facts.readiness)
            self._wait_proxy_up(proxy, new, max(run.deadline, time.monotonic() + 10))
            if soak > 0:
                run.phase(SOAKING, f"soaking {soak:g} s: watching the new replicas")
                self._soak(run, proxy, new, facts.readiness, soak)
                run.event(SOAKING, f"the new replicas stayed healthy for {soak:g} s")
        except _Rollback as e:
            return self._roll_back(run, module, proxy, new, old, e, shifted=shifted, bad=bad)
        except Error as e:
            return self._roll_back(run, module, proxy, new, old, _Rollback(e.message),
                                   shifted=shifted, bad=bad)
        except BaseException as e:
            self._roll_back(run, module, proxy, new, old,
                            _Rollback(f"interrupted ({type(e).__name__})"), shifted=shifted,
                            bad=bad)
            raise
        run.phase(DRAINING, f"draining {', '.join(r.name for r in old) or 'nothing'} "
                            f"(up to {spec.drain:g} s)")
        self._drain(run, proxy, old, new, spec.drain)
        run.finish(ok, digest=trusted.digest)
        run.event(DONE, f"{short(module.digest)} → {short(trusted.digest)} in "
                        f"{run.elapsed:.1f} s")
        return Outcome(module=spec.name, kind=run.op.kind, result=ok, digest=trusted.digest,
                       from_digest=module.digest, to_digest=trusted.digest, op_id=run.id,
                       seconds=run.elapsed, extra={"replicas": [r.name for r in new]})

    def _roll_back(self, run: _Op, module: Module, proxy: Proxy, new: Sequence[Replica],
                   old: Sequence[Replica], why: _Rollback, *, shifted: bool,
                   bad: str) -> Outcome:
        """Traffic back to ``old`` (first: it is what stops the failures), then remove the
        new replicas and their image."""
        spec = module.spec
        self.store.set_phase(run.id, ROLLING_BACK)
        self.monitor.step(ROLLING_BACK)
        switch_s: float | None = None
        extra: dict[str, Any] = {}
        if shifted:
            try:
                proxy.set_backends(self._backends(old))
            except ProxyError as e:
                run.event("error", f"the proxy refused to go back to the old replicas: "
                                   f"{e.message}")
            switched = time.monotonic()
            self.store.set_replicas([r.name for r in old], state=R_SERVING)
            if why.detected is not None:
                switch_s = switched - why.detected
                extra["detected_to_switch_s"] = round(switch_s, 3)
            if why.first_failure is not None:
                extra["failure_to_switch_s"] = round(switched - why.first_failure, 3)
        self.store.set_replicas([r.name for r in new], state=R_FAILED, healthy=False)
        message = (f"rolled back to {short(module.digest)}: {why.reason}"
                   + (f"; traffic back on {short(module.digest)} {switch_s:.2f} s after the "
                      f"failure was detected" if switch_s is not None else ""))
        run.event("rollback", message)
        # Also the replicas of the new digest a kill left behind (not in ``new``).
        leftovers = [r for r in self.store.replicas(spec.name) if r.name not in
                     {o.name for o in old}]
        self._remove_replicas([*new, *[r for r in leftovers if r not in new]], run)
        self.store.set_serving(spec.name, digest=module.digest, image=module.image,
                               previous_digest=module.previous_digest,
                               readiness=module.readiness)
        run.finish(bad, digest=run.op.to_digest, reason=why.reason)
        return Outcome(module=spec.name, kind=run.op.kind, result=bad, digest=module.digest,
                       from_digest=module.digest, to_digest=run.op.to_digest, op_id=run.id,
                       reason=why.reason, seconds=run.elapsed, extra=extra)

    # -- rollback -------------------------------------------------------------------------

    def rollback(self, name: str, *, to: str | None = None, dry_run: bool = False) -> Outcome:
        """Move ``name`` back to the digest it ran before (or ``to``, one of its history)."""
        self.store.require(name)
        with self.store.lock(name):
            if not dry_run:
                self._resume_first(name)
            module = self.store.require(name)
            spec = module.spec
            t0 = time.monotonic()
            # The digests that served: deployed or updated to, and the one an update that
            # rolled back returned to (its entry's own digest is the one that failed).
            ran = [d for h in self.store.history(name)
                   for d in ((h.digest,) if h.result in (DEPLOYED, UPDATED)
                             else (h.from_digest,) if h.result == ROLLED_BACK else ())
                   if d and d.startswith("sha256:")]
            if to is not None:
                _repo, target = trust.resolve(self.settings, to, repository=spec.repository)
                if target not in ran and target != module.previous_digest:
                    raise BadInput(f"{short(target)} never served module {name}",
                                   hint=f"alicorn status {name} lists its digests; "
                                        f"alicorn update {name} --to moves to a new one")
            else:
                target = module.previous_digest or next(
                    (d for d in reversed(ran) if d != module.digest), None) or ""
                if not target:
                    raise BadInput(f"module {name} has no previous digest to roll back to",
                                   hint=f"alicorn status {name} shows its history")
            if target == module.digest:
                return Outcome(module=name, kind=ROLLBACK, result=UNCHANGED,
                               digest=module.digest, from_digest=module.digest,
                               to_digest=target, seconds=time.monotonic() - t0)
            ref = f"{spec.repository}@{target}"
            if dry_run:
                trusted = self._verify(ref, spec.repository)
                return Outcome(module=name, kind=ROLLBACK, result=PLANNED, digest=module.digest,
                               from_digest=module.digest, to_digest=target,
                               seconds=time.monotonic() - t0,
                               plan=self._plan(spec, trusted, module,
                                               self.store.replicas(name, digest=module.digest),
                                               module.content_image, soak=0))
            run = self._open(name, ROLLBACK, module.digest, target, spec.deadline, ref=ref,
                             previous=module.previous_digest)
            trusted = self._verified(run, module, ref)
            return self._replace(run, module, trusted, soak=0, ok=ROLLED_BACK, bad=FAILED)

    # -- dry runs -------------------------------------------------------------------------

    def _plan(self, spec: ModuleSpec, trusted: TrustedImage, module: Module | None,
              old: Sequence[Replica], content_ref: str | None, *, deploy: bool = False,
              soak: float | None = None) -> tuple[str, ...]:
        facts: rp.ImageFacts | None = None
        try:
            facts = rp.image_facts(trusted.ref)   # only when podman has it already
        except Error:
            facts = None
        port = (f"container port {facts.container_port}" if facts
                else "the image's container port")
        check = (" ".join(facts.readiness.command) if facts and facts.readiness.command
                 else f"GET {facts.readiness.path if facts else '/'} → 2xx/3xx")
        steps = [f"verified {trusted.ref} (signed by {trusted.key_id})",
                 f"pull {trusted.ref}"]
        if content_ref:
            steps.append(f"pull the content image {content_ref}")
        if deploy:
            steps.append(f"start the proxy on {spec.address}:{spec.port}")
        steps.append(f"start {spec.replicas} replica(s) of {short(trusted.digest)}, each on "
                     f"a free port of 127.0.0.1 → {port}")
        steps.append(f"wait until each is ready ({check}) within {spec.deadline:g} s")
        if deploy:
            steps.append(f"send {spec.address}:{spec.port} to the new replicas")
            return tuple(steps)
        names = ", ".join(f"{r.name} (127.0.0.1:{r.host_port})" for r in old) or "none"
        steps.append(f"shift {spec.address}:{spec.port} to the new replicas; the old ones "
                     f"({names}) stay as backups")
        soak = spec.soak if soak is None else soak
        if soak > 0:
            steps.append(f"soak {soak:g} s: back to {short(module.digest if module else None)}"
                         f" if a new replica fails its checks")
        steps.append(f"drain the old replicas (up to {spec.drain:g} s), remove them and "
                     f"{module.image if module and module.image else 'their image'}")
        return tuple(steps)

    # -- resume ---------------------------------------------------------------------------

    def resume(self, name: str | None = None) -> list[Outcome]:
        """After a reboot or a killed run: start the proxy and the serving replicas that are
        not running, and finish (draining) or roll back (anything before it) the operation the
        journal has open.  Every module when ``name`` is None."""
        if name is not None:
            self.store.require(name)
            with self.store.lock(name):
                return [self._resume_locked(name, always=True)]
        outcomes = []
        for module in self.store.all():
            # Every module: one that another run holds is that run's to finish, and one that
            # cannot be brought back must not keep the others down.
            try:
                with self.store.lock(module.name):
                    outcomes.append(self._resume_locked(module.name, always=True))
            except ModuleBusy:
                continue
            except Error as e:
                self.monitor.message(f"{module.name}: resume failed: {e.message}")
                outcomes.append(Outcome(module=module.name, kind="resume", result=FAILED,
                                        digest=module.digest, reason=e.message))
        return outcomes

    def _resume_first(self, name: str) -> None:
        """Before an update or rollback: close what the journal has open, and bring the
        module back up if it was stopped (the new replicas need a proxy to shift to)."""
        module = self.store.require(name)
        self._resume_locked(name, always=not self.proxy(module).is_running())

    def _resume_locked(self, name: str, *, always: bool = False) -> Outcome:
        """Close the journal's open operation (if any), then make what should serve run."""
        t0 = time.monotonic()
        found = self.store.open_operation(name)
        module = self.store.require(name)
        if found is None and not always:
            return Outcome(module=name, kind="resume", result=UNCHANGED, digest=module.digest)
        result, reason, op_id = UNCHANGED, None, None
        from_digest = to_digest = None
        if found is not None:
            op, data = found
            op_id, from_digest, to_digest = op.id, op.from_digest, op.to_digest
            run = _Op(self, op)
            if op.kind == DEPLOY and op.phase not in (SHIFTED, SOAKING, DRAINING, DONE):
                reason = f"the deploy was interrupted while {op.phase}; nothing of it kept"
                self.monitor.message(f"{name}: {reason}")
                self._forget(name)
                return Outcome(module=name, kind="resume", result=FAILED, digest=None,
                               to_digest=op.to_digest, op_id=op.id, reason=reason,
                               seconds=time.monotonic() - t0)
            finish = op.kind == DEPLOY or op.phase in (DRAINING, DONE)
            target = op.to_digest if finish else (op.from_digest or op.to_digest)
            ref = (data.get("ref") if finish else None) or \
                f"{module.spec.repository}@{target}"
            if finish:
                result = {DEPLOY: DEPLOYED, UPDATE: UPDATED, ROLLBACK: ROLLED_BACK}[op.kind]
                reason = None
                run.phase(DRAINING, f"resuming: the {op.kind} was interrupted while "
                                    f"{op.phase}; finishing it")
                previous = op.from_digest
            else:
                result = ROLLED_BACK if op.kind == UPDATE else FAILED
                reason = (f"interrupted while {op.phase} (the controller stopped); "
                          f"rolled back to {short(target)} by resume")
                run.phase(ROLLING_BACK, f"resuming: the {op.kind} was interrupted while "
                                        f"{op.phase}; rolling back to {short(target)}")
                previous = data.get("previous")
            image = ref if ref.split("@")[-1] == target else f"{module.spec.repository}@{target}"
            self.store.set_serving(name, digest=target, image=image,
                                   previous_digest=previous)
            module = self.store.require(name)
            try:
                self._ensure_serving(module, run)
            except Error as e:
                run.event("error", f"resume could not bring {short(target)} back: "
                                   f"{e.message}")
                raise
            run.finish(result, digest=target if finish else op.to_digest, reason=reason)
            run.event(DONE, f"resumed: {short(target)} serves" +
                      (f" ({reason})" if reason else ""))
        else:
            self._ensure_serving(module, None)
        module = self.store.require(name)
        return Outcome(module=name, kind="resume", result=result, digest=module.digest,
                       from_digest=from_digest, to_digest=to_digest, op_id=op_id,
                       reason=reason, seconds=time.monotonic() - t0)

    def _ensure_serving(self, module: Module, run: _Op | None) -> None:
        """The module's serving digest runs ``spec.replicas`` ready replicas behind a running
        proxy; every other replica of it is removed (after the proxy left it)."""
        name, spec = module.name, module.spec
        if not module.digest or not module.image:
            raise RolloutError(f"module {name} has no digest to serve",
                               hint=f"alicorn undeploy {name}, then deploy it again")
        digest = module.digest
        if not rp.image_exists(module.image):
            # Verified when it was first deployed; pinned by digest, and podman checks the
            # host's signature policy again on the pull.
            rp.pull_image(module.image)
        facts = rp.image_facts(module.image)
        if facts.readiness != module.readiness:
            self.store.set_serving(name, digest=module.digest, image=module.image,
                                   previous_digest=module.previous_digest,
                                   readiness=facts.readiness)
            module = self.store.require(name)
        serving = self.store.replicas(name, digest=module.digest)
        states = rp.container_states([r.name for r in serving])
        keep: list[Replica] = []
        for r in serving:
            state = states.get(r.name)
            if state is not None and state != "running" and len(keep) < spec.replicas:
                try:
                    rp.start_existing(r)
                    state = "running"
                    if run:
                        run.event("start", f"replica {r.name} started again")
                except Error as e:
                    # Its port taken meanwhile, its content gone, …: a new one replaces it.
                    if run:
                        run.event("start", f"replica {r.name} does not start again "
                                           f"({e.message}); replacing it")
                    state = None
            if state != "running" or len(keep) >= spec.replicas:
                rp.remove_replica(r)
                self.store.delete_replicas([r.name])
                continue
            keep.append(r)
        if len(keep) < spec.replicas:
            trusted = TrustedImage(ref=facts.ref, digest=digest, repository=spec.repository,
                                   key_id="")
            keep += self._start_replicas(run, module, trusted, facts,
                                         spec.replicas - len(keep), module.content_image,
                                         journal=False)
        self._wait_ready_or_raise(module, keep)
        proxy = self.proxy(module)
        proxy.start()
        proxy.set_backends(self._backends(keep))
        try:
            self._wait_proxy_up(proxy, keep, time.monotonic() + module.spec.deadline)
        except _Rollback as e:
            raise HealthError(f"module {name}: {e.reason}") from None
        self.store.set_replicas([r.name for r in keep], state=R_SERVING, healthy=True)
        # What else podman or the database has of this module goes, now the proxy left it.
        keep_names = {r.name for r in keep}
        others = [r for r in self.store.replicas(name) if r.name not in keep_names]
        others += [r for r in rp.podman_replicas(name, self.home)
                   if r.name not in keep_names and r.name not in {o.name for o in others}]
        if others:
            self._remove_replicas(others, run)
            if run:
                run.event("cleanup", f"removed {', '.join(r.name for r in others)}")

    def _wait_ready_or_raise(self, module: Module, replicas: Sequence[Replica]) -> None:
        try:
            self._wait_ready(None, replicas, module.readiness,
                             time.monotonic() + module.spec.deadline)
        except _Rollback as e:
            raise HealthError(f"module {module.name}: {e.reason}",
                              hint=f"alicorn status {module.name}; podman logs "
                                   f"{replicas[0].name if replicas else ''}") from None

    # -- status ---------------------------------------------------------------------------

    def status(self, name: str) -> dict[str, Any]:
        """``alicorn status --json``: at least module, digest, replicas [{name, digest,
        healthy}], history [{digest, at, result}] (oldest first), operation, events."""
        module = self.store.require(name)
        spec = module.spec
        replicas = []
        stored = self.store.replicas(name)
        states = rp.container_states([r.name for r in stored])
        for r in stored:
            entry = r.as_json()
            entry["container_state"] = states.get(r.name)
            if states.get(r.name) == "running" and r.host_port:
                check = rp.probe(r, module.readiness, timeout=1.0)
                entry["healthy"], entry["check"] = check.ok, check.detail
            else:
                entry["healthy"] = False
                entry["check"] = f"container {states.get(r.name) or 'gone'}"
            replicas.append(entry)
        proxy = self.proxy(module)
        proxy_json: dict[str, Any] = {"address": spec.address, "port": spec.port}
        try:
            proxy_json["running"] = proxy.is_running()
            proxy_json["servers"] = ([asdict(s) for s in proxy.servers()]
                                     if proxy_json["running"] else [])
        except Error as e:
            proxy_json["running"], proxy_json["error"] = False, e.message
        op = self.store.last_op(name)
        op_json = _op_json(op) if op else None
        if op is not None and op_json is not None and op.finished_at is None:
            # Unfinished and nobody holds the lock: the run that had it was killed.
            op_json["interrupted"] = not self.store.locked(name)
        return {
            "module": name, "digest": module.digest, "image": module.image,
            "previous_digest": module.previous_digest, "repository": spec.repository,
            "tag": spec.tag, "port": spec.port, "address": spec.address,
            "spec": spec.to_json(), "content_image": module.content_image,
            "replicas": replicas,
            "healthy": sum(1 for r in replicas if r["healthy"] and r["state"] == R_SERVING),
            "history": [h.as_json() for h in self.store.history(name)],
            "operation": op_json,
            "events": [e.as_json() for e in self.store.events(name, op.id)] if op else [],
            "proxy": proxy_json,
            "updated_at": module.updated_at.isoformat(),
        }

    def modules(self) -> list[dict[str, Any]]:
        """One short status per module (name, digest, replicas, port, healthy count)."""
        out = []
        for module in self.store.all():
            serving = [r for r in self.store.replicas(module.name) if r.state == R_SERVING]
            healthy = sum(1 for r in serving if r.host_port
                          and rp.probe(r, module.readiness, timeout=1.0).ok)
            out.append({"name": module.name, "digest": module.digest, "image": module.image,
                        "port": module.spec.port, "address": module.spec.address,
                        "replicas": len(serving), "healthy": healthy})
        return out

    def latest(self, name: str) -> str | None:
        """The digest the module's repository's tag names in the registry now."""
        spec = self.store.require(name).spec
        try:
            return trust.resolve(self.settings, f"{spec.repository}:{spec.tag}",
                                 repository=spec.repository)[1]
        except NoSuchImage:
            return None

    # -- stop and remove ------------------------------------------------------------------

    def stop(self, name: str | None = None) -> None:
        """Stop the proxy and the containers (state kept; resume starts them again)."""
        if name is not None:
            module = self.store.require(name)
            with self.store.lock(name):
                self._stop(module)
            return
        for module in self.store.all():
            # Every module: one that an operation holds is left to it (stopping its proxy
            # under it would drop requests that operation is careful not to drop).
            try:
                with self.store.lock(module.name):
                    self._stop(module)
            except ModuleBusy as e:
                self.monitor.message(f"{module.name}: not stopped: {e.message}")

    def _stop(self, module: Module) -> None:
        self.proxy(module).stop()
        for r in self.store.replicas(module.name):
            rp.stop_replica(r)

    def remove(self, name: str) -> None:
        """Stop and forget the module (its history goes too)."""
        if self.store.get(name) is None:
            raise NotFound(f"no module named {name} on this host",
                           hint="alicorn modules lists them")
        with self.store.lock(name):
            self._forget(name)


def _op_json(op: Operation) -> dict[str, Any]:
    return {"id": op.id, "kind": op.kind, "from": op.from_digest, "to": op.to_digest,
            "phase": op.phase, "started_at": op.started_at.isoformat(),
            "deadline_at": op.deadline_at.isoformat(),
            "finished_at": op.finished_at.isoformat() if op.finished_at else None,
            "result": op.result, "reason": op.reason}


def _tag_of(ref: str) -> str | None:
    """The tag of ``addr/name:tag`` (None for digests, build ids and untagged names)."""
    if "@" in ref or ref.startswith("sha256:"):
        return None
    return split_reference(ref)[1]


__all__ = ["PLANNED", "UNCHANGED", "Controller", "Outcome"]
