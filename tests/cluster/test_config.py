"""The queue settings: config.json's "queue" object, the environment's overrides, and the
errors that name what is wrong; and which queue a submission goes to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alicorn.cluster.config import QueueConfig, load_queue_config, queue_name
from alicorn.cluster.dispatch import _redacted, capability_of
from alicorn.config import load_settings
from alicorn.errors import BadInput
from alicorn.store.builds import Submission


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("ALICORN_QUEUE", "ALICORN_BROKER_URL", "ALICORN_QUEUE_LEASE",
                 "ALICORN_QUEUE_HEARTBEAT", "ALICORN_QUEUE_MAX_ATTEMPTS",
                 "ALICORN_QUEUE_REDISPATCH_AFTER", "ALICORN_QUEUE_RESULT_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "home"


def _write(home: Path, queue: object) -> None:
    settings = load_settings(home)
    path = settings.home / "config.json"
    data = json.loads(path.read_text())
    data["queue"] = queue
    path.write_text(json.dumps(data))


def test_the_default_is_the_embedded_worker(home: Path) -> None:
    config = load_queue_config(load_settings(home))
    assert config == QueueConfig() and not config.celery


def test_config_json_and_environment(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(home, {"backend": "celery", "broker": "redis://db:6379/0", "lease": 30})
    settings = load_settings(home)
    config = load_queue_config(settings)
    assert config.celery and config.broker == "redis://db:6379/0" and config.lease == 30.0
    assert config.result_url(settings) == "db+" + settings.database_url
    monkeypatch.setenv("ALICORN_BROKER_URL", "amqp://u:pw@mq/vh")
    monkeypatch.setenv("ALICORN_QUEUE_MAX_ATTEMPTS", "3")
    config = load_queue_config(settings)
    assert config.broker == "amqp://u:pw@mq/vh" and config.max_attempts == 3
    monkeypatch.setenv("ALICORN_QUEUE", "local")
    assert not load_queue_config(settings).celery


@pytest.mark.parametrize(("queue", "env", "message"), [
    ({"backend": "kafka"}, {}, "unknown queue backend 'kafka'"),
    ({"backend": "celery"}, {}, "the celery backend needs a broker URL"),
    ({"backend": "celery", "broker": "http://x"}, {}, "neither Redis nor RabbitMQ"),
    ({"lease": "soon"}, {}, "queue lease must be a number"),
    ({"lease": 10, "heartbeat": 6}, {}, "at most half the lease"),
    ({"max_attempts": 0}, {}, "max_attempts must be at least 1"),
    ({"leese": 10}, {}, "unknown queue setting 'leese'"),
    ([1, 2], {}, "the queue settings must be an object"),
    ({}, {"ALICORN_QUEUE_LEASE": "-1"}, "lease must be a positive number"),
])
def test_bad_settings_name_the_problem_and_where(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                  queue: object, env: dict[str, str],
                                                  message: str) -> None:
    _write(home, queue)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(BadInput, match=message) as info:
        load_queue_config(load_settings(home))
    assert info.value.where and ("config.json" in info.value.where
                                 or "ALICORN_QUEUE" in info.value.where)


def test_queue_names_and_capabilities() -> None:
    assert queue_name("deb", "x86_64") == "alicorn.deb.x86_64"
    with pytest.raises(BadInput, match="unknown capability 'svn'"):
        queue_name("svn")

    def sub(content: str | None, **options: object) -> Submission:
        return Submission(argv=["t"], source_kind="file" if content else "git",
                          recipe_path="r.yaml", recipe_content=content, options=dict(options))

    assert capability_of(sub("distribution: {type: rpm, release: '40'}\n")) == "rpm"
    assert capability_of(sub("distribution:\n  type: debian\n  release: bookworm\n")) == "deb"
    assert capability_of(sub("{not yaml")) == "any"
    assert capability_of(sub(None)) == "any"
    assert capability_of(sub(None, capability="deb")) == "deb"


def test_broker_passwords_are_not_shown() -> None:
    assert _redacted("amqp://user:secret@mq:5672/vh") == "amqp://user:***@mq:5672/vh"
    assert _redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
