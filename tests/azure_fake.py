"""A fake Azure on loopback over HTTPS: Entra ID sign-in, Azure Monitor metrics, Log Analytics.

The real azure-identity (MSAL) and azure-monitor clients talk to it, so what the tests check is
what those libraries send and how the exporter copes with what comes back. The answers follow the
documented JSON shapes: the OpenID configuration and the v2.0 token endpoint of the client-secret
flow, ``POST /subscriptions/{sub}/metrics:getBatch`` (``{"values": [{"resourceid", "value":
[{"id", "name", "unit", "timeseries": [{"data": [{"timeStamp", "average", ...}]}]}]}]}``) and
``POST /v1/workspaces/{id}/query`` (``{"tables": [{"name", "columns", "rows"}]}``), and Azure
Resource Manager's ``GET {resource id}?api-version=...`` for the resources registered with
:meth:`FakeAzure.add_resource` (``location``, and a site's ``properties.serverFarmId``).

Metrics have App Service instances: asked with ``filter=Instance eq '*'`` the answer holds one
time series per instance (at most ``top``, 10 unless given), each naming its instance in
``metadatavalues``; asked without, one series aggregated over the instances as Azure does (the
average of an average metric: 40, 45 and 95 % read 60 %).

A query is answered from :attr:`FakeAzure.tables` when a test put its text there; one over a
workspace's Application Insights table (``AppEvents``, ...) is run over the rows given with
:meth:`FakeAzure.add_log_rows` by the little KQL of ``tests/helpers/kql.py``.

Like the real services it answers what does not exist with an error: a plan's metrics asked of a
site (App Service keeps CpuPercentage and MemoryPercentage on the plan), a split by Instance of a
metric without that dimension, an unknown resource from ARM. Like Log Analytics it serves a
query's answer from a cache for 2 minutes (with an ``Age`` header) unless the request says
``Cache-Control: no-cache`` or ``no-store``.

The CA is made with trustme; a test points ``REQUESTS_CA_BUNDLE`` and ``SSL_CERT_FILE`` at
:attr:`FakeAzure.ca_file` so both MSAL and azure-core trust the server.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme

from tests.conftest import free_port
from tests.helpers import kql

TENANT = "00000000-0000-0000-0000-00000000ten7"
CLIENT_ID = "11111111-1111-1111-1111-1111111client"
CLIENT_SECRET = "s3cr3t-Value~that.must-never_appear"
SUBSCRIPTION = "22222222-2222-2222-2222-222222222222"
WORKSPACE = "33333333-3333-3333-3333-333333333333"
RATELIMIT_HEADER = "x-ms-ratelimit-remaining-subscription-reads"

UNITS = {
    "CpuPercentage": "Percent",
    "MemoryPercentage": "Percent",
    "CpuTime": "Seconds",
    "MemoryWorkingSet": "Bytes",
    "Requests": "Count",
    "Http5xx": "Count",
    "HttpResponseTime": "Seconds",
    "FileSystemUsage": "Bytes",
    "BytesReceived": "Bytes",
    "HttpQueueLength": "Count",
}
# Metrics Azure keeps without an Instance dimension (a 400 when split by it).
NO_INSTANCE_DIMENSION = frozenset({"FileSystemUsage", "InstanceCount"})
# The one instance a resource has unless a test gives it others (set_instances).
DEFAULT_INSTANCE = "pl0sdlwk000001"
INSTANCE_FILTER = "Instance eq '*'"

# Faults a test can switch on, per API ("metrics" or "logs"):
#   throttle     429 with Retry-After
#   error        500
#   slow         answer after `delay` seconds (the client's read timeout fires first)
#   malformed    200 whose body is not JSON
#   bad_shape    200 with JSON that is not the documented shape
#   unauthorized 401 from the API itself (token refused there)
FAULTS = {"throttle", "error", "slow", "malformed", "bad_shape", "unauthorized"}


def resource_id(name: str, kind: str = "serverfarms", subscription: str = SUBSCRIPTION) -> str:
    return (
        f"/subscriptions/{subscription}/resourceGroups/pixcrawler-rg/providers/Microsoft.Web/"
        f"{kind}/{name}"
    )


# Plan-level metrics: asked of a Microsoft.Web/sites resource, Azure Monitor answers 400.
PLAN_ONLY_METRICS = frozenset({"CpuPercentage", "MemoryPercentage"})
LOGS_CACHE_SECONDS = 120.0  # Log Analytics' default response cache


@dataclass
class Request:
    api: str  # "openid", "token", "metrics", "logs", "arm" or "other"
    path: str
    query: dict[str, list[str]]
    body: Any
    at: float  # time.monotonic() when it arrived
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased


@dataclass
class Fault:
    kind: str
    times: int | None  # None: until cleared
    retry_after: float = 1.0
    delay: float = 5.0


@dataclass
class FakeAzure:
    ca_file: Path
    url: str
    requests: list[Request] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    reject_token: bool = False
    token_lifetime: int = 3600
    ratelimit_remaining: int | None = 11999
    error_message: str = "boom"  # what the "error" fault's 500 says
    # (resource id lower-cased or "*", metric name) -> newest value; older points differ from it.
    values: dict[tuple[str, str], float] = field(default_factory=dict)
    # (resource id lower-cased or "*", metric name) -> {instance: newest value}.
    instances: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    # KQL text -> the tables answered for it.
    # Workspace table (AppEvents, ...) -> its records, which KQL over that table runs on.
    log_rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Resource id lower-cased -> what ARM answers for it.
    arm: dict[str, dict[str, Any]] = field(default_factory=dict)
    # KQL text -> (time.monotonic() answered, tables): Log Analytics' response cache.
    _logs_cache: dict[str, tuple[float, list[dict[str, Any]]]] = field(default_factory=dict)
    _faults: dict[str, Fault] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    # --- switches -------------------------------------------------------------------------

    def exporter_env(self, resource: str, refresh_seconds: int = 5) -> dict[str, str]:
        """The environment that points an exporter process at this fake, in mode azure."""
        return {
            "PIXCRAWLER_MODE": "azure",
            "PIXCRAWLER_AZURE_RESOURCE_ID": resource,
            "PIXCRAWLER_AZURE_METRICS_ENDPOINT": self.url,
            "PIXCRAWLER_AZURE_ARM_ENDPOINT": self.url,
            "PIXCRAWLER_AZURE_REFRESH_INTERVAL_SECONDS": str(refresh_seconds),
            "AZURE_AUTHORITY_HOST": self.url,
            "AZURE_TENANT_ID": TENANT,
            "AZURE_CLIENT_ID": CLIENT_ID,
            "AZURE_CLIENT_SECRET": CLIENT_SECRET,
            "REQUESTS_CA_BUNDLE": str(self.ca_file),
            "SSL_CERT_FILE": str(self.ca_file),
        }

    def fault(
        self,
        kind: str | None,
        api: str = "metrics",
        times: int | None = None,
        retry_after: float = 1.0,
        delay: float = 5.0,
    ) -> None:
        """Make the next ``times`` requests to ``api`` fail as ``kind`` (None clears)."""
        with self._lock:
            if kind is None:
                self._faults.pop(api, None)
                return
            assert kind in FAULTS, kind
            self._faults[api] = Fault(kind, times, retry_after, delay)

    def set_value(self, metric: str, value: float, resource: str = "*") -> None:
        with self._lock:
            self.values[(resource.lower(), metric)] = value

    def set_instances(self, metric: str, values: Mapping[str, float], resource: str = "*") -> None:
        """The metric's newest value on each instance, by instance name."""
        with self._lock:
            self.instances[(resource.lower(), metric)] = dict(values)

    def add_log_rows(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Records of a workspace table; a column the table does not have is a test's mistake."""
        schema = kql.SCHEMAS[table]
        for row in rows:
            assert set(row) <= set(schema), (
                f"{table} has no column {sorted(set(row) - set(schema))}"
            )
        with self._lock:
            self.log_rows.setdefault(table, []).extend(rows)

    def add_resource(
        self, rid: str, location: str = "West Europe", server_farm_id: str | None = None
    ) -> None:
        """Make ARM know the resource. App Service answers its location as a display name
        ("West Europe"), other providers as a region name ("westeurope")."""
        provider_type = rid.split("/providers/", 1)[1].rsplit("/", 1)[0]
        doc: dict[str, Any] = {
            "id": rid,
            "name": rid.rsplit("/", 1)[1],
            "type": provider_type,
            "location": location,
            "properties": {},
        }
        if server_farm_id is not None:
            doc["properties"]["serverFarmId"] = server_farm_id
        with self._lock:
            self.arm[rid.lower()] = doc

    def calls(self, api: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.api == api]

    def count(self, api: str) -> int:
        with self._lock:
            return self.counts[api]

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.counts.clear()

    # --- answers --------------------------------------------------------------------------

    def _take_fault(self, api: str) -> Fault | None:
        with self._lock:
            fault = self._faults.get(api)
            if fault is None:
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del self._faults[api]
            return fault

    def _value(self, resource: str, metric: str) -> float:
        with self._lock:
            for key in ((resource.lower(), metric), ("*", metric)):
                if key in self.values:
                    return self.values[key]
        return 42.0

    def _instances(self, resource: str, metric: str) -> dict[str, float]:
        with self._lock:
            for key in ((resource.lower(), metric), ("*", metric)):
                if key in self.instances:
                    return dict(self.instances[key])
        return {DEFAULT_INSTANCE: self._value(resource, metric)}

    def metrics_answer(self, query: Mapping[str, list[str]], body: Any) -> dict[str, Any]:
        names = query["metricnames"][0].split(",")
        asked = query.get("aggregation", ["average"])[0]
        aggregations = [a.strip().lower() for a in asked.split(",")]
        split = "filter" in query
        top = int(query.get("top", ["10"])[0])
        start = _parse_time(query["starttime"][0])
        end = _parse_time(query["endtime"][0])
        minute = end.replace(second=0, microsecond=0)
        # The newest grain has no data yet, as in Azure (metrics arrive late); older ones carry
        # other values, so a client that picks the wrong point reads the wrong number.
        stamps = [minute - timedelta(minutes=k) for k in (3, 2, 1)]

        def series(newest: dict[str, float], instance: str | None) -> dict[str, Any]:
            data: list[dict[str, Any]] = []
            for i, ts in enumerate(stamps):
                point: dict[str, Any] = {"timeStamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ")}
                if i < 2:
                    point.update({a: newest[a] if i == 1 else newest[a] + 7 for a in aggregations})
                data.append(point)
            metadata = (
                []
                if instance is None
                else [
                    {"name": {"value": "instance", "localizedValue": "instance"}, "value": instance}
                ]
            )
            return {"metadatavalues": metadata, "data": data}

        values = []
        for rid in body["resourceids"]:
            metrics = []
            for name in names:
                per_instance = self._instances(rid, name)
                if split:
                    timeseries = [
                        series(dict.fromkeys(aggregations, v), instance)
                        for instance, v in list(per_instance.items())[:top]
                    ]
                else:
                    combined = {a: _combine(a, list(per_instance.values())) for a in aggregations}
                    timeseries = [series(combined, None)]
                metrics.append(
                    {
                        "id": f"{rid}/providers/Microsoft.Insights/metrics/{name}",
                        "type": "Microsoft.Insights/metrics",
                        "name": {"value": name, "localizedValue": name},
                        "displayDescription": f"{name} of the resource.",
                        "errorCode": "Success",
                        "unit": UNITS.get(name, "Count"),
                        "timeseries": timeseries,
                    }
                )
            values.append(
                {
                    "starttime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "endtime": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "interval": query.get("interval", ["PT1M"])[0],
                    "namespace": query["metricnamespace"][0],
                    "resourceregion": "westeurope",
                    "resourceid": rid,
                    "value": metrics,
                }
            )
        return {"values": values}

    def logs_answer(self, body: Any, cache_control: str) -> tuple[dict[str, Any], float | None]:
        """The tables for the query, and the age of the cached answer when one was served."""
        bypass = {"no-cache", "no-store"} & {d.strip() for d in cache_control.lower().split(",")}
        now = time.monotonic()
        with self._lock:
            cached = self._logs_cache.get(body["query"])
            if cached is not None and not bypass and now - cached[0] < LOGS_CACHE_SECONDS:
                return {"tables": cached[1]}, now - cached[0]
            tables = self.tables.get(body["query"])
            if tables is None and kql.table_of(body["query"]) in {
                *kql.SCHEMAS,
                *kql.CLASSIC_TABLES,
            }:
                tables = [kql.run(body["query"], self.log_rows)]  # KqlError: a 400
            if tables is None:
                tables = [{"name": "PrimaryResult", "columns": [], "rows": []}]
            self._logs_cache[body["query"]] = (now, tables)
        return {"tables": tables}, None

    def arm_answer(self, path: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            doc = self.arm.get(path.rstrip("/").lower())
        if doc is None:
            return 404, {
                "error": {
                    "code": "ResourceNotFound",
                    "message": f"The Resource '{path}' was not found.",
                }
            }
        return 200, doc

    @staticmethod
    def unsupported(query: Mapping[str, list[str]], body: Any) -> str | None:
        """Azure Monitor's 400 for a plan's metric asked of a site, or for a split by a dimension
        a metric does not have, else None."""
        names = set(query["metricnames"][0].split(","))
        if "filter" in query:
            if query["filter"][0].lower() != INSTANCE_FILTER.lower():
                return f"Invalid filter: {query['filter'][0]}"
            for metric in sorted(names & NO_INSTANCE_DIMENSION):
                return (
                    f"Metric: {metric} does not support requested dimension combination: "
                    "instance, supported ones are: "
                )
        for rid in body["resourceids"]:
            kind = rid.lower().split("/providers/", 1)[-1]
            if kind.startswith("microsoft.web/sites/") and names & PLAN_ONLY_METRICS:
                metric = sorted(names & PLAN_ONLY_METRICS)[0]
                return (
                    "Failed to find metric configuration for provider: Microsoft.Web, resource "
                    f"Type: sites, metric: {metric}, Valid metrics: CpuTime,Requests,"
                    "MemoryWorkingSet,Http5xx,HttpResponseTime"
                )
        return None

    # --- life -----------------------------------------------------------------------------

    def start(self) -> None:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        ca.cert_pem.write_to_path(str(self.ca_file))
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        fake = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request: Any, client_address: Any) -> None:
                # The handshake runs in the connection's own thread, so one stuck client cannot
                # hold up the accept loop.
                try:
                    tls = ctx.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError):
                    return
                super().finish_request(tls, client_address)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

        server = Server(("127.0.0.1", 0), Handler)
        self._server = server
        self.url = f"https://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, name="fake-azure", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parsed = urllib.parse.urlsplit(h.path)
        query = urllib.parse.parse_qs(parsed.query)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        path = parsed.path
        if path.endswith("/.well-known/openid-configuration"):
            api = "openid"
        elif path.endswith("/oauth2/v2.0/token"):
            api = "token"
        elif path.endswith("/metrics:getBatch"):
            api = "metrics"
        elif "/workspaces/" in path and path.endswith("/query"):
            api = "logs"
        elif method == "GET" and path.startswith("/subscriptions/") and "api-version" in query:
            api = "arm"
        else:
            api = "other"
        body: Any
        if api == "token":
            body = urllib.parse.parse_qs(raw.decode())
        else:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw
        req = Request(
            api,
            path,
            query,
            body,
            time.monotonic(),
            0,
            {k.lower(): v for k, v in h.headers.items()},
        )
        with self._lock:
            self.requests.append(req)
            self.counts[api] += 1
        status, headers, payload = self._answer(api, path, query, body, req.headers)
        req.status = status
        try:
            h.send_response(status)
            for k, v in headers.items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)
        except (OSError, ssl.SSLError):
            pass  # the client gave up (a timeout test)

    def _answer(
        self,
        api: str,
        path: str,
        query: Mapping[str, list[str]],
        body: Any,
        request_headers: Mapping[str, str],
    ) -> tuple[int, dict[str, str], bytes]:
        js = {"Content-Type": "application/json; charset=utf-8"}
        authorization = request_headers.get("authorization", "")
        if api == "openid":
            tenant = path.strip("/").split("/")[0]
            base = f"{self.url}/{tenant}"
            doc = {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "issuer": f"{base}/v2.0",
                "token_endpoint_auth_methods_supported": ["client_secret_post"],
                "response_types_supported": ["code", "id_token", "token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
            }
            return 200, js, json.dumps(doc).encode()
        if api == "token":
            form = body if isinstance(body, dict) else {}
            ok = (
                not self.reject_token
                and form.get("client_id") == [CLIENT_ID]
                and form.get("client_secret") == [CLIENT_SECRET]
                and form.get("grant_type") == ["client_credentials"]
            )
            if not ok:
                err: dict[str, object] = {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                    "error_codes": [7000215],
                }
                return 401, js, json.dumps(err).encode()
            token = {
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
                "ext_expires_in": self.token_lifetime,
                "access_token": f"fake-token-{time.monotonic_ns()}",
            }
            return 200, js, json.dumps(token).encode()
        if api not in ("metrics", "logs", "arm"):
            return 404, js, b'{"error": {"code": "NotFound", "message": "no such path"}}'

        headers = dict(js)
        if self.ratelimit_remaining is not None:
            headers[RATELIMIT_HEADER] = str(self.ratelimit_remaining)
        fault = self._take_fault(api)
        if fault is not None:
            if fault.kind == "throttle":
                headers["Retry-After"] = f"{fault.retry_after:g}"
                err = {"error": {"code": "TooManyRequests", "message": "throttled"}}
                return 429, headers, json.dumps(err).encode()
            if fault.kind == "error":
                err = {"error": {"code": "InternalServerError", "message": self.error_message}}
                return 500, headers, json.dumps(err).encode()
            if fault.kind == "unauthorized":
                err = {"error": {"code": "InvalidAuthenticationToken", "message": "no"}}
                return 401, headers, json.dumps(err).encode()
            if fault.kind == "malformed":
                return 200, headers, b'{"values": [ {"resourceid": '
            if fault.kind == "bad_shape":
                return 200, headers, b'{"values": 17, "tables": "none"}'
            if fault.kind == "slow":
                time.sleep(fault.delay)
        if not authorization.startswith("Bearer fake-token-"):
            err = {"error": {"code": "AuthenticationFailed", "message": "no bearer token"}}
            return 401, headers, json.dumps(err).encode()
        if api == "arm":
            status, doc = self.arm_answer(path)
            return status, headers, json.dumps(doc).encode()
        if api == "metrics":
            problem = self.unsupported(query, body)
            if problem is not None:
                err = {"error": {"code": "BadRequest", "message": problem}}
                return 400, headers, json.dumps(err).encode()
            return 200, headers, json.dumps(self.metrics_answer(query, body)).encode()
        try:
            answer, age = self.logs_answer(body, request_headers.get("cache-control", ""))
        except kql.KqlError as exc:
            # Log Analytics' answer to a query it cannot run.
            err = {
                "error": {
                    "code": "BadArgumentError",
                    "message": "The request had some invalid properties",
                    "innererror": {"code": "SemanticError", "message": str(exc)},
                }
            }
            return 400, headers, json.dumps(err).encode()
        if age is not None:
            headers["Age"] = str(int(age))
        return 200, headers, json.dumps(answer).encode()


def _combine(aggregation: str, values: list[float]) -> float:
    """One value over the instances, as Azure aggregates a series that is not split."""
    if aggregation in ("total", "count"):
        return sum(values)
    if aggregation == "maximum":
        return max(values)
    if aggregation == "minimum":
        return min(values)
    return sum(values) / len(values)


def _parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def start_fake(tmp_path: Path) -> FakeAzure:
    fake = FakeAzure(ca_file=tmp_path / "fake-azure-ca.pem", url="")
    fake.start()
    return fake


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def closed_port() -> int:
    """A loopback port nothing listens on (connection refused): one of this worker's."""
    return free_port()
