"""The credential and the Azure SDK clients: made on first use, kept across refreshes.

The SDK is imported inside the functions, not at the top: it takes a while to import, and local
mode (the collector module is always imported by the registry) never needs it.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

from pixcrawler_exporter.collectors.azure.model import LogQuery
from pixcrawler_exporter.collectors.azure.parse import MalformedError
from pixcrawler_exporter.collectors.azure.plan import INSTANCE_FILTER, Batch
from pixcrawler_exporter.collectors.azure.resolve import (
    PUBLIC_ARM_ENDPOINT,
    ArmInfo,
    api_version,
    arm_info,
)
from pixcrawler_exporter.collectors.azure.settings import AzureSettings

if TYPE_CHECKING:
    from azure.core import PipelineClient
    from azure.core.rest import HttpRequest, HttpResponse
    from azure.identity import ClientSecretCredential, DefaultAzureCredential
    from azure.monitor.query import LogsQueryClient, LogsQueryPartialResult, LogsQueryResult
    from azure.monitor.querymetrics import MetricsClient, MetricsQueryResult

    Credential = ClientSecretCredential | DefaultAzureCredential

log = logging.getLogger(__name__)

PUBLIC_METRICS_AUDIENCE = "https://metrics.monitor.azure.com"
_REGIONAL_HOST = re.compile(r"^[a-z0-9-]+\.(metrics\.monitor\..+)$")


class _Headers(Protocol):
    @property
    def headers(self) -> Mapping[str, str]: ...


class _Answered(Protocol):
    """What the response hook reads of the SDK's PipelineResponse, whichever request and
    response types its pipeline carries (the REST ones for Resource Manager, the transport
    ones inside the Monitor clients)."""

    @property
    def http_response(self) -> _Headers: ...


def metrics_audience(endpoint: str) -> str:
    """Token audience for a metrics endpoint: the regional host minus its region, so sovereign
    clouds (metrics.monitor.azure.us, ...) get theirs; anything else the public cloud's."""
    host = urllib.parse.urlsplit(endpoint).hostname or ""
    match = _REGIONAL_HOST.match(host.lower())
    return f"https://{match[1]}" if match else PUBLIC_METRICS_AUDIENCE


class Clients:
    """One credential, one metrics client per regional endpoint and one logs client."""

    def __init__(
        self,
        cfg: AzureSettings,
        timeout: float,
        on_headers: Callable[[Mapping[str, str]], None],
    ) -> None:
        """``on_headers`` sees the headers of every answer (rate-limit counters)."""
        self.cfg = cfg
        self.timeout = timeout
        self._on_headers = on_headers
        self._credential: Credential | None = None
        self._metrics: dict[str, MetricsClient] = {}
        self._logs: LogsQueryClient | None = None
        self._arm: PipelineClient[HttpRequest, HttpResponse] | None = None

    def ensure(self, endpoints: tuple[str, ...], logs: bool) -> None:
        """Make what is missing; raises what the SDK raises for a bad authority or endpoint."""
        if self._credential is None:
            self._credential = make_credential(self.cfg, self.timeout)
        # SDK keyword arguments, passed on to its pipeline untyped.
        common: dict[str, object] = {
            # Our loop retries, counts and waits; the SDK's would hide calls from both.
            "retry_total": 0,
            "raw_response_hook": self._hook,
        }
        for endpoint in endpoints:
            if endpoint not in self._metrics:
                from azure.monitor.querymetrics import MetricsClient

                self._metrics[endpoint] = MetricsClient(
                    endpoint, self._credential, audience=metrics_audience(endpoint), **common
                )
        if logs and self._logs is None:
            from azure.monitor.query import LogsQueryClient

            if self.cfg.logs_endpoint:
                common["endpoint"] = self.cfg.logs_endpoint
            self._logs = LogsQueryClient(self._credential, **common)

    def query_batch(self, batch: Batch, lookback: float) -> list[MetricsQueryResult]:
        """The raw ``metrics:getBatch`` results, one-minute grains over ``lookback`` seconds;
        one time series per instance when the batch is split by instance."""
        split = batch.by_instance
        return self._metrics[batch.endpoint].query_resources(
            resource_ids=[r.id for r in batch.resources],
            metric_namespace=batch.resource_type,
            metric_names=list(batch.metric_names),
            timespan=timedelta(seconds=lookback),
            granularity=timedelta(minutes=1),
            aggregations=list(batch.aggregations),
            connection_timeout=self.timeout,
            read_timeout=self.timeout,
            filter=INSTANCE_FILTER if split else None,
            max_results=batch.max_series if split else None,
        )

    def query_logs(self, query: LogQuery) -> LogsQueryResult | LogsQueryPartialResult:
        """The raw answer of a KQL query on the configured workspace."""
        if self._logs is None or not self.cfg.workspace_id:
            raise RuntimeError("no logs client: ensure() makes one when there are queries")
        return self._logs.query_workspace(
            self.cfg.workspace_id,
            query.query,
            timespan=timedelta(seconds=query.timespan) if query.timespan else None,
            connection_timeout=self.timeout,
            read_timeout=self.timeout,
            # Log Analytics answers a repeated query from its cache for 2 minutes; a gauge must
            # be as fresh as its refresh interval.
            headers={"Cache-Control": "no-cache"},
        )

    def arm_lookup(self, resource_id: str) -> ArmInfo:
        """Resource Manager's GET of the resource: its region and, for a web app, its plan."""
        if self._credential is None:
            raise RuntimeError("no credential: ensure() makes one")
        endpoint = (self.cfg.arm_endpoint or PUBLIC_ARM_ENDPOINT).rstrip("/")
        if self._arm is None:
            from azure.core import PipelineClient
            from azure.core.pipeline.policies import BearerTokenCredentialPolicy, CustomHookPolicy

            self._arm = PipelineClient(
                endpoint,
                policies=[
                    BearerTokenCredentialPolicy(self._credential, f"{endpoint}/.default"),
                    CustomHookPolicy(raw_response_hook=self._hook),
                ],
            )
        from azure.core.exceptions import HttpResponseError
        from azure.core.rest import HttpRequest

        request = HttpRequest(
            "GET", endpoint + resource_id, params={"api-version": api_version(resource_id)}
        )
        response = self._arm.send_request(
            request, connection_timeout=self.timeout, read_timeout=self.timeout
        )
        if response.status_code != 200:
            raise HttpResponseError(response=response)
        doc = response.json()
        if not isinstance(doc, dict):
            raise MalformedError("Resource Manager's answer is not a JSON object")
        return arm_info(doc)

    def close(self) -> None:
        for client in [*self._metrics.values(), self._logs, self._arm, self._credential]:
            if client is not None:
                try:
                    client.close()
                except Exception:  # closing is best effort
                    log.debug("closing an Azure client failed", exc_info=True)

    def _hook(self, pipeline_response: _Answered) -> None:
        self._on_headers(pipeline_response.http_response.headers)


def make_credential(cfg: AzureSettings, timeout: float) -> Credential:
    from azure.identity import ClientSecretCredential, DefaultAzureCredential

    kwargs: dict[str, object] = {"connection_timeout": timeout, "read_timeout": timeout}
    if cfg.authority_host:
        kwargs["authority"] = cfg.authority_host
        # Otherwise MSAL asks the public cloud to vouch for the authority: a custom one
        # (sovereign, Azure Stack, a test) fails that, and offline it cannot be reached.
        kwargs["disable_instance_discovery"] = True
    if cfg.client_secret and cfg.tenant_id and cfg.client_id:
        return ClientSecretCredential(cfg.tenant_id, cfg.client_id, cfg.client_secret, **kwargs)
    if cfg.client_id:
        kwargs["managed_identity_client_id"] = cfg.client_id
    return DefaultAzureCredential(**kwargs)


def quiet_sdk_loggers() -> None:
    # azure-core logs every request at INFO and azure-identity warns on every failed token
    # request; our own lines say the same once per change. Left alone when the operator asked
    # for debug output, or configured these loggers themselves.
    if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        return
    for name in ("azure", "msal"):
        sdk = logging.getLogger(name)
        if sdk.level == logging.NOTSET:
            sdk.setLevel(logging.ERROR)
