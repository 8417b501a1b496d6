"""``baynet demo --from-metrics``: a gray failure found from metrics alone, then explained from traces.

1. Generate Sock Shop incidents (training, each in its own namespace) and the PetClinic incident to be
   detected, all over the same half hour; write their container, latency and Istio series into one
   OpenMetrics file and backfill Debian's Prometheus with it.
2. Train the detector on the Sock Shop namespaces, read through Prometheus exactly as the scheduled flow
   reads (``query_range`` with the metric map), and store the model version.
3. Run the detect-anomalies flow over the PetClinic namespace: its events go to the SQS queue.
4. The consumer runs the incident flow on the firing event; the injected service should rank first.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from baynet.detector.series import Case, Fault, ServiceSeries
from baynet.settings import Settings

TRAINING = (("carts", "gray"), ("catalogue", "latency"), ("orders", "gray"), ("user", "latency"),
            ("payment", "gray"), ("carts-db", "latency"))
STEP_S = 15
BEFORE_S, AFTER_S = 900, 240
REFERENCE_S = 480  # the first 8 minutes of each run are the reference


def merge_openmetrics(texts: list[str]) -> str:
    """One OpenMetrics exposition from several: each family once, its samples from every text."""
    types: dict[str, str] = {}
    samples: dict[str, list[str]] = defaultdict(list)
    for text in texts:
        family = None
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, family, kind = line.split(" ", 3)
                types.setdefault(family, kind)
            elif line.startswith("#") or not line.strip():
                continue
            elif family is not None:
                samples[family].append(line)
    out = []
    for family, kind in types.items():
        out.append(f"# TYPE {family} {kind}")
        out.extend(samples[family])
    out.append("# EOF")
    return "\n".join(out) + "\n"


def training_cases(prometheus_url: str, metric_map: dict[str, str], incidents: list[Any]) -> list[Case]:
    """Read each training namespace back from Prometheus and label it from the generator's record."""
    from baynet.families import fetch_series
    from baynet.prometheus import PrometheusClient

    cases = []
    for inc in incidents:
        start = inc.fault_start - BEFORE_S
        with PrometheusClient(prometheus_url) as prometheus:
            frames = fetch_series(prometheus, metric_map, start, inc.fault_start + AFTER_S, STEP_S,
                                  namespace=inc.namespace)
        split = start + REFERENCE_S
        services, faults = [], []
        for svc, df in frames.items():
            ref, obs = df[df.index < split], df[df.index >= split]
            t = obs.index.to_numpy(float)
            after = t >= inc.fault_start
            labels = np.where(after, 1 if svc == inc.fault_service else -1, 0)
            services.append(ServiceSeries(svc, ref, obs, labels))
            if svc == inc.fault_service and after.any():
                first = int(np.flatnonzero(after)[0])
                faults.append(Fault(svc, first, len(t), inc.fault))
        cases.append(Case(inc.namespace, inc.namespace, STEP_S, services, faults))
    return cases


def prepare(workdir: Path, *, mesh: str, service: str, fault: str, step: Callable[[str], None]
            ) -> tuple[Any, list[Any], dict[str, Path]]:
    """Generate the incident to detect and the training incidents; write traces, event and one
    OpenMetrics file with every namespace's series."""
    from baynet.lab.generator import container_openmetrics, generate, istio_openmetrics, write_incident

    fault_start = time.time() - AFTER_S - 30
    target = generate(mesh, service, fault, fault_start=fault_start, before_s=BEFORE_S, after_s=AFTER_S)
    train = [generate("sock-shop", svc, kind, fault_start=fault_start, before_s=BEFORE_S, after_s=AFTER_S,
                      namespace=f"train-{i}", seed=100 + i, rate_per_s=1.0)
             for i, (svc, kind) in enumerate(TRAINING)]
    paths = write_incident(target, workdir / "incident")
    texts = [istio_openmetrics(target.spans, target.namespace), container_openmetrics(target)]
    for i, inc in enumerate(train):
        texts += [istio_openmetrics(inc.spans, inc.namespace), container_openmetrics(inc, seed=200 + i)]
    metrics = workdir / "incident" / "metrics.om"
    metrics.write_text(merge_openmetrics(texts))
    step(f"generated a {fault} fault in {service} of {mesh} and {len(train)} Sock Shop training incidents "
         f"({metrics.stat().st_size / 1e6:.1f} MB of OpenMetrics)")
    return target, train, {**paths, "openmetrics": metrics}


def train_from_prometheus(prometheus_url: str, store: Any, incidents: list[Any], step: Callable[[str], None],
                          settings: Settings) -> Any:
    """Train gradient boosting on the training namespaces as Prometheus returns them; store the version."""
    from baynet.detector.models import blocks_from_cases, save_model, train_detector
    from baynet.families import load_metric_map

    cases = training_cases(prometheus_url, load_metric_map("istio-cadvisor"), incidents)
    model = train_detector(blocks_from_cases(cases), "gbm", ks=(4, 8, 12), inner_folds=3, progress=step,
                           false_budget=settings.detector_false_incidents_per_hour)
    save_model(store, model)
    step(f"model {model.version}: {len(model.features)} features ({', '.join(model.features)}), "
         f"threshold {model.threshold:.2f}")
    return model
