"""All run-time settings in one place, read from the environment (prefix ``BAYNET_``)."""

from __future__ import annotations

import functools
import ssl
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# The detector's defaults, shared with its evaluation (baynet.detector.incidents imports them from here).
DEFAULT_BUDGET = 1.0      # false incidents per mesh-hour the threshold is chosen for
DEFAULT_GAP_WINDOWS = 3   # firings closer than this many windows apart are one incident


class Settings(BaseSettings):
    """Baynet settings. Every field can be set as ``BAYNET_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="BAYNET_", extra="ignore")

    # --- queue -----------------------------------------------------------------------------------
    sqs_queue_url: str = Field("", description="URL of the SQS queue anomaly events arrive on.")
    sqs_dlq_url: str = Field(
        "", description="URL of the dead-letter queue; unparseable messages are moved there with a reason."
    )
    aws_endpoint_url: str | None = Field(
        None, description="Override for AWS endpoints (moto server in tests and the demo)."
    )
    aws_region: str = Field("us-east-1", description="AWS region for SQS and S3 clients.")
    sqs_wait_seconds: int = Field(20, ge=0, le=20, description="SQS long-poll wait (WaitTimeSeconds).")
    sqs_visibility_timeout: int = Field(
        300, ge=10, le=43200, description="Seconds a received message stays hidden while it is analysed."
    )
    concurrency: int = Field(1, ge=1, le=64, description="Analyses `baynet listen` runs at once.")

    # --- traces ----------------------------------------------------------------------------------
    tempo_url: str = Field("http://127.0.0.1:3200", description="Base URL of Grafana Tempo's HTTP API.")
    tempo_org_id: str | None = Field(None, description="X-Scope-OrgID header for multi-tenant Tempo.")
    tempo_token: SecretStr | None = Field(None, description="Bearer token for Tempo (never logged).")
    tempo_username: str | None = Field(None, description="Basic-auth user for Tempo.")
    tempo_password: SecretStr | None = Field(None, description="Basic-auth password for Tempo (never logged).")
    tempo_search_limit: int = Field(200, ge=1, le=10000, description="Traces per Tempo search request.")
    tempo_timeout_s: float = Field(30.0, gt=0, le=600, description="HTTP timeout for Tempo requests.")
    tempo_max_retries: int = Field(
        3, ge=0, le=10, description="Retries of one Tempo request on 429/5xx/network errors (backoff with jitter)."
    )
    tempo_budget_s: float = Field(
        300.0, gt=0, le=3600, description="Time budget of one retrieval: past it, retries stop and the traces "
        "not yet fetched are skipped (the evidence is then reported partial, with why)."
    )
    tempo_concurrency: int = Field(8, ge=1, le=64, description="Trace fetches in flight at once.")
    traces_per_slice: int = Field(
        1000, ge=0, le=100000, description="Bounded retrieval: at most this many traces read per time slice "
        "(each incident slice and each window_s piece of the baseline), spread evenly over it, error traces "
        "first; the evidence weighs each trace by its sampling rate. 0 reads every matching trace."
    )
    traces_sample_per_slice: int = Field(
        100, ge=0, le=100000, description="Where Prometheus holds Tempo's metrics-generator series (request rates, "
        "errors and latencies over all traffic), read traces only as a sample for what only traces show (own "
        "work, call shapes, where an error began): at most this many per slice instead of traces_per_slice, so "
        "the cost stops following traffic. 100 keeps every fault type of both trace meshes (Online Boutique "
        "0.95, Train-Ticket 0.89, as with every trace; a sample of 50 cost Online Boutique 0.95 -> 0.88); 0 "
        "reads traces_per_slice even where the series are there (README)."
    )
    traces_per_service: int = Field(
        30, ge=0, le=10000, description="Bounded retrieval: a sampled slice in which a service appears in "
        "fewer traces than this is topped up with traces through that service (so a rarely called service "
        "keeps enough spans to be judged); 0 turns top-ups off."
    )
    ca_bundle: Path | None = Field(None, description="CA bundle for TLS to Tempo/Prometheus/Kiali.")
    trace_url_template: str | None = Field(
        None, description="Link for an exemplar trace, with {trace_id} in it (e.g. Grafana Explore on Tempo: "
        "https://grafana.example/explore?...{trace_id}...); exemplars are listed without links when unset."
    )

    # --- logs ------------------------------------------------------------------------------------
    loki_url: str | None = Field(None, description="Base URL of Grafana Loki's HTTP API; log evidence is read "
                                 "from it when set.")
    loki_org_id: str | None = Field(None, description="X-Scope-OrgID header for a multi-tenant Loki.")
    loki_token: SecretStr | None = Field(None, description="Bearer token for Loki (never logged).")
    loki_username: str | None = Field(None, description="Basic-auth user for Loki.")
    loki_password: SecretStr | None = Field(None, description="Basic-auth password for Loki (never logged).")
    loki_selector: str = Field(
        '{namespace="$namespace"}', description="LogQL stream selector of the mesh's logs ($namespace is "
        "replaced), e.g. {k8s_namespace_name=\"$namespace\"} for OpenTelemetry-shipped logs.")
    loki_service_label: str = Field(
        "service_name", description="The label (or structured metadata) naming the service that wrote a line; "
        "app, container and job are tried after it.")
    loki_timeout_s: float = Field(30.0, gt=0, le=600, description="HTTP timeout for Loki requests.")
    loki_max_retries: int = Field(3, ge=0, le=10, description="Retries of one Loki request on 429/5xx/network "
                                  "errors (backoff with jitter, Retry-After honoured).")
    logs_per_slice: int = Field(
        5000, ge=100, le=1_000_000, description="Log lines read per time slice (each incident slice and each "
        "window_s piece of the baseline), WARN/ERROR lines first; past it the evidence is reported partial.")

    # --- topology --------------------------------------------------------------------------------
    prometheus_url: str | None = Field(
        None, description="Prometheus with Istio metrics; the topology source when set."
    )
    kiali_graph_file: Path | None = Field(
        None, description="A saved Kiali /api/namespaces/graph body to read the topology from instead."
    )
    prometheus_token: SecretStr | None = Field(None, description="Bearer token for Prometheus (never logged).")
    prometheus_timeout_s: float = Field(30.0, gt=0, le=600, description="HTTP timeout for Prometheus queries.")
    prometheus_max_retries: int = Field(
        3, ge=0, le=10, description="Retries of one Prometheus query on 429/5xx/network errors (backoff with jitter)."
    )
    namespace: str = Field("default", description="Mesh namespace the services live in.")
    topology_window_s: int = Field(600, ge=60, le=86400, description="Rate window for topology queries.")

    # --- analysis --------------------------------------------------------------------------------
    window_s: int = Field(60, ge=10, le=3600, description="Length of one DBN time slice, seconds.")
    slices: int = Field(3, ge=1, le=10, description="Incident slices ending at the anomaly time.")
    baseline_s: int = Field(600, ge=60, le=86400, description="Baseline window length before the incident.")
    settle_s: int = Field(
        0, ge=0, le=3600, description="Seconds after the alert the incident window runs on: Tempo and Prometheus "
        "ingest with a delay, so data about the alert's last minute lands after it. An event that arrives "
        "before alert + settle waits on the queue (its visibility is set to the remaining time; with "
        "--deployment its run is scheduled for then): no worker is held while it waits.")
    look_again_max_s: int = Field(
        300, ge=0, le=3600, description="Where the top-ranked service's evidence is a new version compared in "
        "fewer than three of the data's windows (too soon to tell a fresh pod's warm-up from a lasting "
        "slowdown), the analysis reads and ranks again when it has three (and again while the new top-ranked "
        "service's version is that young) -- as long as the whole wait is at most this many seconds (0: never). "
        "Where no service's own work looked anomalous in any slice, it reads once more a slice (window_s) later "
        "and keeps that look only where it saw some. The incident run waits for it (a task in the Prefect UI).")
    baseline_gap_s: int = Field(
        120, ge=0, le=86400, description="Gap between the baseline window and the first incident slice (kept "
        "out of the baseline so a slow onset is not the norm; a trace baseline whose spans cover less than one "
        "slice runs on through it)."
    )
    metrics_evidence: bool = Field(
        True, description="Read Istio/cAdvisor metrics from Prometheus (when prometheus_url is set) as evidence "
        "beside the traces; with Tempo down or empty the analysis then completes on metrics, marked partial."
    )
    aggregates: Literal["auto", "istio"] = Field(
        "auto", description="Where request rates, errors and latencies come from: auto = Tempo's metrics-generator "
        "series (span metrics, service graph) when Prometheus has them, else Istio's; istio = Istio's only."
    )
    metrics_step_s: int = Field(15, ge=1, le=3600, description="Step of the metric series the RCA reads, seconds.")
    blast_radius_hops: int = Field(
        3, ge=0, le=10, description="Downstream hops from the affected service included in the model."
    )

    # --- detector (flows/detect.py) -------------------------------------------------------------------
    detector_metric_map: str = Field(
        "istio-cadvisor", description="Metric names the detector and the RCA's metrics evidence read: a preset "
        "(istio-cadvisor, gala-gopher) or a JSON file of family -> PromQL."
    )
    detector_step_s: int = Field(60, ge=1, le=3600, description="Scrape window the detector scores, seconds.")
    detector_lookback_s: int = Field(900, ge=60, le=86400, description="Recent span scored on each run.")
    detector_baseline_s: int = Field(3600, ge=300, le=7 * 86400, description="Reference (normal) span before it.")
    detector_warmup_windows: int = Field(10, ge=0, le=100, description="Windows scored for context only.")
    detector_clear_windows: int = Field(3, ge=1, le=100, description="Unflagged windows in a row that resolve.")
    detector_false_incidents_per_hour: float = Field(
        DEFAULT_BUDGET, gt=0, le=100, description="False-incident budget the detector's threshold is chosen for on training "
        "data (incidents per mesh-hour that start outside every fault), instead of the best F1.")
    detector_group_windows: int = Field(
        DEFAULT_GAP_WINDOWS, ge=1, le=100, description="Services that start firing within this many windows of an open incident "
        "join it: one event per incident, named after its most upstream firing service.")

    # --- artifacts -------------------------------------------------------------------------------
    artifacts_dir: Path = Field(Path("artifacts"), description="Local artifact directory.")
    s3_bucket: str | None = Field(None, description="Store artifacts in this S3 bucket instead of locally.")
    s3_prefix: str = Field("baynet", description="Key prefix for artifacts in S3.")
    s3_sse: str | None = Field(None, description="S3 server-side encryption, e.g. AES256 or aws:kms.")


@functools.lru_cache(maxsize=8)
def tls_context(ca_bundle: Path | str | None = None) -> ssl.SSLContext:
    """The TLS context the HTTP clients verify servers with: ``ca_bundle`` (``BAYNET_CA_BUNDLE``) when set,
    else httpx's own default (``SSL_CERT_FILE``, ``SSL_CERT_DIR``, else certifi's bundle). Built once per
    bundle and shared: httpx builds one per client otherwise, ~25 ms of CPU for loading the bundle each time,
    and an incident's sources open about seven clients."""
    if ca_bundle:
        return ssl.create_default_context(cafile=str(ca_bundle))
    import httpx

    return httpx.create_ssl_context()
