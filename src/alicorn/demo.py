"""The main job end to end: pony from a git repository → build → publish → deploy → fetch.

It drives the real command line (so the build records hold real argv) against the embedded
default: SQLite under $ALICORN_HOME, the local registry and the local worker.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console

from alicorn.config import Settings, free_port
from alicorn.errors import BadInput, Error
from alicorn.proc import run

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def make_git_repo(example: Path, dest: Path) -> str:
    """Commit the example's files into the git repository ``dest``; returns the commit."""
    env = {"GIT_AUTHOR_NAME": "Alicorn demo", "GIT_AUTHOR_EMAIL": "demo@alicorn.invalid",
           "GIT_COMMITTER_NAME": "Alicorn demo", "GIT_COMMITTER_EMAIL": "demo@alicorn.invalid",
           "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}
    if not (dest / ".git").is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        run(["git", "init", "-q", "-b", "main", str(dest)], env=env)
    for item in dest.iterdir():
        if item.name != ".git":
            shutil.rmtree(item) if item.is_dir() else item.unlink()
    shutil.copytree(example, dest, dirs_exist_ok=True)
    run(["git", "-C", str(dest), "add", "-A"], env=env)
    if run(["git", "-C", str(dest), "status", "--porcelain"], env=env).stdout.strip():
        run(["git", "-C", str(dest), "commit", "-q", "-m", "pony recipe"], env=env)
    return run(["git", "-C", str(dest), "rev-parse", "HEAD"], env=env).stdout.strip()


def _build(args: list[str], console: Console) -> dict[str, Any]:
    argv = [sys.executable, "-m", "alicorn", "build", *args, "--json"]
    console.print(f"$ alicorn build {' '.join(args)}", highlight=False, style="bold")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    assert proc.stdout is not None
    last: dict[str, Any] = {}
    for line in proc.stdout:
        try:
            last = json.loads(line)
        except ValueError:
            continue
        if last.get("event") == "step":
            console.print(f"  {last['name']}", highlight=False)
        elif last.get("event") == "message":
            console.print(f"    {last['text']}", highlight=False)
    proc.wait()
    if last.get("state") != "done":
        raise Error(f"the demo build failed: {last.get('error')}",
                    hint=f"see the log: alicorn logs {last.get('build_id')}")
    return last


def run_demo(settings: Settings, *, port: int | None, example: Path | None,
             console: Console) -> None:
    example = example or EXAMPLES / "pony" / "debian"
    if not (example / "pony.yaml").is_file():
        raise BadInput(f"{example} holds no pony.yaml")
    console.soft_wrap = True
    repo = settings.home / "demo" / "pony-src"
    commit = make_git_repo(example, repo)
    console.print(f"pony recipe committed to {repo} at {commit[:12]}", highlight=False)

    first = _build([str(repo), "--ref", "main", "--recipe", "pony.yaml"], console)
    console.print(f"built {first['digest']}\n  published as {first['image']}", highlight=False)

    again = _build([str(repo), "--ref", "main", "--recipe", "pony.yaml", "--no-cache"], console)
    same = again["digest"] == first["digest"]
    console.print(f"rebuilt from scratch: {again['digest']} "
                  f"({'the same digest' if same else 'A DIFFERENT DIGEST'})", highlight=False)
    if not same:
        raise Error("the second build of the same inputs gave another digest")

    console.print(f"$ alicorn verify {first['digest']}", highlight=False, style="bold")
    verified = subprocess.run([sys.executable, "-m", "alicorn", "verify", first["digest"]])
    if verified.returncode != 0:
        raise Error("the pony's chain of identity does not verify")

    console.print(f"$ alicorn test {first['build_id']}", highlight=False, style="bold")
    tested = subprocess.run([sys.executable, "-m", "alicorn", "test", first["build_id"]])
    if tested.returncode != 0:
        raise Error("the pony's recipe tests failed against its image")

    # What in the image needs a security update: Debian's advisories for the sources the
    # image holds (from bookworm-security's signed index and changelogs), then a scan.
    console.print(f"$ alicorn advisories import-debian --for {first['digest']}",
                  highlight=False, style="bold")
    imported = subprocess.run([sys.executable, "-m", "alicorn", "advisories", "import-debian",
                               "--for", first["digest"]])
    if imported.returncode != 0:
        raise Error("Debian's advisories for the pony's packages could not be imported")
    console.print(f"$ alicorn scan {first['digest']} --summary", highlight=False, style="bold")
    scanned = subprocess.run([sys.executable, "-m", "alicorn", "scan", first["digest"],
                              "--summary"])
    if scanned.returncode not in (0, 1):  # 1: findings, an answer all the same
        raise Error("the pony's image could not be scanned")

    # Run it as a module: two replicas behind HAProxy, which `alicorn update pony` moves to a
    # new image without a failed request.  A demo run before this one left the module
    # running: then this is an update (to the same digest: nothing to do).
    shown = subprocess.run([sys.executable, "-m", "alicorn", "status", "pony", "--json"],
                           capture_output=True, text=True)
    if shown.returncode == 0:
        port = int(json.loads(shown.stdout.splitlines()[-1])["port"])
        command = ["update", "pony", "--to", first["digest"]]
    else:
        port = port or (80 if _port_free(80) else free_port())
        command = ["deploy", "pony", "--image", first["digest"], "--replicas", "2",
                   "--port", str(port)]
    console.print("$ alicorn " + " ".join(command), highlight=False, style="bold")
    ran = subprocess.run([sys.executable, "-m", "alicorn", *command])
    if ran.returncode != 0:
        raise Error("the pony module could not be " + ("updated" if shown.returncode == 0
                                                       else "deployed"))
    console.print("$ alicorn status pony", highlight=False, style="bold")
    subprocess.run([sys.executable, "-m", "alicorn", "status", "pony"], check=True)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
        body = resp.read().decode()
    console.print(f"$ curl http://127.0.0.1:{port}/", highlight=False, style="bold")
    console.print(body, highlight=False, markup=False)
    console.print(f"pony answers on port {port}: two replicas behind HAProxy. "
                  "Update it with `alicorn update pony`, remove it with "
                  "`alicorn undeploy pony`.", highlight=False)
    _web(settings, first, console)


def _web(settings: Settings, build: dict[str, Any], console: Console) -> None:
    """The pages and the HTTP API, in the background (a demo run before this one may have
    left them serving): the build found by its digest, verified, and its page."""
    from alicorn.web.model import load_api_config
    from alicorn.web.server import ApiServer

    url = ApiServer.detached_url(settings)
    if url is None:
        host, web_port = load_api_config(settings).address()
        listen = f"{host}:{web_port if _port_free(web_port) else free_port()}"
        console.print(f"$ alicorn serve --api-only --detach --listen {listen}",
                      highlight=False, style="bold")
        server = ApiServer.for_home(settings, listen=listen)
        server.spawn()
        url = server.url
    console.print(f"$ curl {url}api/v1/trace/{build['digest']}", highlight=False, style="bold")
    with urllib.request.urlopen(f"{url}api/v1/trace/{build['digest']}", timeout=60) as resp:
        trace = json.loads(resp.read())
    verification = trace.get("verification") or {}
    console.print(f"build {trace['id']}: {trace['state']}, provenance "
                  f"{'verified' if verification.get('verified') else 'NOT VERIFIED'}",
                  highlight=False)
    # The digest stands for the newest build that made it (the --no-cache rebuild above).
    if trace["digest"] != build["digest"] or not verification.get("verified"):
        raise Error("the API does not find the pony's build by its digest, verified")
    with urllib.request.urlopen(f"{url}builds/{trace['id']}", timeout=60) as resp:
        if build["digest"] not in resp.read().decode():
            raise Error("the build's page does not show its digest")
    console.print(f"the pages: {url} (the pony's build: {url}builds/{trace['id']}); "
                  "`alicorn api token create NAME --role submitter` makes a token to submit "
                  "builds there; `alicorn down` stops everything.", highlight=False)
