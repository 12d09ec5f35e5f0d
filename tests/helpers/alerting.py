"""A real Prometheus and Alertmanager for the end-to-end alert tests, and a webhook receiver.

:func:`start_alertmanager` routes every alert to a :class:`Webhook` run in the test process,
grouped by alert name and instance and sent at once (1 s waits, resolved ones too).
:func:`start_prometheus` scrapes the given targets every second, evaluates the given rules file
every second and sends to that Alertmanager, re-sending firing alerts every second. Both bind
127.0.0.1 on free ports, log to files in the test's directory, and are :func:`stop`-ped by the
caller (tests/helpers/processes.py). :class:`AlertStack` holds the three with an exporter;
:func:`assert_pages` and :func:`assert_pages_and_resolves` drive a breach through them to the
webhook.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import Exporter, free_port, http_get, need_tool
from tests.helpers.processes import spawn, wait_ready
from tests.helpers.wait import wait_until


@dataclass
class Webhook:
    """Alertmanager's webhook receiver: every notification, with the time it arrived."""

    notifications: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def start(self) -> str:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hook.lock:
                    hook.notifications.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def settle(self, timeout: float = 30) -> None:
        """Wait until every alert notified firing so far has been notified resolved, then forget
        them all: what the tests see starts from a quiet stack.

        The scaled ``for:`` (2m becomes 2s) is shorter than Prometheus's start on a loaded
        machine: PixCrawlerExporterDown's ``absent(up{job=...})`` fired once before its first
        scrape, and a test then read it as its own alert firing before its breach.
        """

        def unresolved() -> list[str]:
            with self.lock:
                alerts = [a for n in self.notifications for a in n["alerts"]]
            done = {
                (json.dumps(a["labels"], sort_keys=True), a["startsAt"])
                for a in alerts
                if a["status"] == "resolved"
            }
            return [
                a["labels"]["alertname"]
                for a in alerts
                if a["status"] == "firing"
                and (json.dumps(a["labels"], sort_keys=True), a["startsAt"]) not in done
            ]

        wait_until(
            "start-up alerts resolved", lambda: not unresolved(), timeout, lambda: str(unresolved())
        )
        with self.lock:
            self.notifications.clear()

    def alerts(self, name: str, status: str) -> list[dict[str, Any]]:
        """Alerts named ``name`` in notifications received so far, as Alertmanager sent them."""
        with self.lock:
            return [
                a
                for n in self.notifications
                for a in n["alerts"]
                if a["labels"].get("alertname") == name and a["status"] == status
            ]

    def summary(self) -> str:
        with self.lock:
            return "\n".join(
                f"{n['status']}: {[a['labels']['alertname'] for a in n['alerts']]}"
                for n in self.notifications
            )


@dataclass(frozen=True)
class Server:
    """A started Prometheus or Alertmanager."""

    proc: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path


def start_alertmanager(tmp: Path, hook_url: str) -> Server:
    binary = need_tool("prometheus-alertmanager")
    port = free_port()
    config = tmp / "alertmanager.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "route": {
                    "receiver": "test",
                    "group_by": ["alertname", "instance"],
                    "group_wait": "1s",
                    "group_interval": "1s",
                    "repeat_interval": "1h",
                },
                "receivers": [
                    {
                        "name": "test",
                        "webhook_configs": [{"url": hook_url, "send_resolved": True}],
                    }
                ],
            }
        )
    )
    return _serve(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # no gossip port: one instance
            "--log.level=warn",
        ],
        port,
        tmp / "alertmanager.log",
    )


def write_prometheus_config(
    tmp: Path, rules_file: Path, job: str, targets: list[str], alertmanager: Server
) -> Path:
    config = tmp / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "evaluation_interval": "1s",
                },
                "rule_files": [str(rules_file)],
                "alerting": {
                    "alertmanagers": [
                        {"static_configs": [{"targets": [f"127.0.0.1:{alertmanager.port}"]}]}
                    ]
                },
                "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}],
            }
        )
    )
    return config


def start_prometheus(tmp: Path, config: Path) -> Server:
    """Prometheus on ``config`` (:func:`write_prometheus_config`), its data in ``tmp/prom-data``
    (backfill blocks there before starting it)."""
    binary = need_tool("prometheus")
    port = free_port()
    return _serve(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--rules.alert.resend-delay=1s",
            "--log.level=warn",
        ],
        port,
        tmp / "prometheus.log",
    )


def _serve(args: list[str], port: int, log: Path) -> Server:
    """Start ``args`` and wait until it says it is ready on ``port``; killed if it never is."""
    proc = spawn(args, log)
    server = Server(proc, f"http://127.0.0.1:{port}", port, log)
    try:
        wait_ready(f"{server.url}/-/ready", proc, log)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return server


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    """An instant query's result vector."""
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    status, _, body = http_get(url)
    assert status == 200, body
    return json.loads(body)["data"]["result"]  # type: ignore[no-any-return]


def prometheus_alerts(prometheus: str) -> list[dict[str, Any]] | str:
    """Prometheus's pending and firing alerts, or its answer when it has none to give."""
    status, _, body = http_get(f"{prometheus}/api/v1/alerts")
    if status != 200:
        return body.decode(errors="replace")
    return json.loads(body)["data"]["alerts"]  # type: ignore[no-any-return]


@dataclass
class AlertStack:
    """An exporter scraped by a Prometheus that sends to an Alertmanager and its webhook."""

    exporter: Exporter
    prometheus: str
    alertmanager: str
    webhook: Webhook
    rules_text: str  # the rules Prometheus evaluates
    logs: dict[str, Path]  # name -> log file, for :meth:`detail`
    job: str

    @property
    def instance(self) -> str:
        return self.exporter.url.removeprefix("http://")

    def query(self, expr: str) -> list[dict[str, Any]]:
        return query(self.prometheus, expr)

    def detail(self) -> str:
        logs = "\n".join(
            f"--- {name}:\n{path.read_text(errors='replace')[-3000:]}"
            for name, path in self.logs.items()
        )
        return (
            f"Prometheus alerts: {prometheus_alerts(self.prometheus)}\n"
            f"notifications:\n{self.webhook.summary()}\n"
            f"--- exporter:\n{self.exporter.log()[-3000:]}\n{logs}"
        )

    def expected_annotations(self, name: str, value: str) -> dict[str, str]:
        """The rule's annotations as Prometheus expands them for this exporter and ``value``."""
        out = {}
        for key, text in self._annotations(name).items():
            text = text.replace("{{ $labels.instance }}", self.instance)
            out[key] = re.sub(r"\{\{ \$value[^}]*\}\}", value, text)
        return out

    def annotations_match(self, name: str, found: dict[str, str]) -> bool:
        """Whether ``found`` are the rule's annotations for this exporter and some value (one
        that cannot be known exactly, such as an extrapolated ``increase()``)."""
        if set(found) != set(self._annotations(name)):
            return False
        for key, text in self._annotations(name).items():
            text = text.replace("{{ $labels.instance }}", self.instance)
            parts = re.split(r"\{\{ \$value[^}]*\}\}", text)
            if not re.fullmatch(r"\S+".join(re.escape(p) for p in parts), found[key]):
                return False
        return True

    def _annotations(self, name: str) -> dict[str, str]:
        rule = next(
            r
            for g in yaml.safe_load(self.rules_text)["groups"]
            for r in g["rules"]
            if r.get("alert") == name
        )
        return rule["annotations"]  # type: ignore[no-any-return]


def assert_pages(
    stack: AlertStack,
    name: str,
    labels: dict[str, str],
    value: str | None,
    breach: Callable[[], None],
    annotations: dict[str, str] | None = None,
    timeout: float = 30,
) -> dict[str, Any]:
    """``breach`` must bring a firing notification of ``name`` with exactly ``labels`` and the
    annotations for ``value`` (any one value when None, or exactly ``annotations``); the alert
    as Alertmanager sent it."""
    assert not stack.webhook.alerts(name, "firing"), f"{name} fired before the breach"
    breach()
    (fired, *_) = wait_until(
        f"a firing {name} notification",
        lambda: stack.webhook.alerts(name, "firing"),
        timeout,
        stack.detail,
    )
    expected = {"alertname": name, "job": stack.job, "instance": stack.instance, **labels}
    assert fired["labels"] == expected
    if annotations is None and value is None:
        assert stack.annotations_match(name, fired["annotations"]), fired["annotations"]
    else:
        assert fired["annotations"] == (
            annotations or stack.expected_annotations(name, value or "")
        )
    return fired  # type: ignore[no-any-return]


def assert_resolves(
    stack: AlertStack,
    name: str,
    fired: dict[str, Any],
    recover: Callable[[], None],
    timeout: float = 30,
) -> None:
    """``recover`` must bring the resolved notification of the alert that ``fired``."""
    recover()
    (resolved, *_) = wait_until(
        f"a resolved {name} notification",
        lambda: stack.webhook.alerts(name, "resolved"),
        timeout,
        stack.detail,
    )
    assert resolved["labels"] == fired["labels"]
    assert resolved["startsAt"] == fired["startsAt"]


def assert_pages_and_resolves(
    stack: AlertStack,
    name: str,
    labels: dict[str, str],
    value: str,
    breach: Callable[[], None],
    recover: Callable[[], None],
    annotations: dict[str, str] | None = None,
    companions: tuple[str, ...] = (),
    timeout: float = 30,
) -> None:
    """:func:`assert_pages`, then ``recover`` must bring the resolved notification. Companions
    are alerts the same breach fires with a longer ``for:``: they must fire and resolve too."""
    fired = assert_pages(stack, name, labels, value, breach, annotations, timeout)
    for other in companions:
        wait_until(
            f"a firing {other} notification",
            partial(stack.webhook.alerts, other, "firing"),
            timeout,
            stack.detail,
        )
    assert_resolves(stack, name, fired, recover, timeout)
    for other in companions:
        wait_until(
            f"a resolved {other} notification",
            partial(stack.webhook.alerts, other, "resolved"),
            timeout,
            stack.detail,
        )
