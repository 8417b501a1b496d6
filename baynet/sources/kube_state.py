"""Changes a Kubernetes cluster records, from kube-state-metrics series in Prometheus (kind ``changes``).

Three families, each optional (a cluster without kube-state-metrics simply gives no rows):

* ``kube_replicaset_created`` (the ReplicaSet's creation time, unix seconds) joined on
  ``kube_replicaset_owner{owner_kind="Deployment"}``: a ReplicaSet created in the analysis' windows is a
  rollout of its Deployment, counted from its creation -- the first step of a rollout still in progress.
* ``kube_deployment_metadata_generation``: a Deployment whose generation rose without a new ReplicaSet
  (a scale, a paused rollout, a strategy change) changed its spec.
* ``kube_pod_container_info``: a container whose ``image`` label takes a value it did not have when the
  windows began got a new image (the detail says which).

Rows are ``changes.csv`` rows (``time, service, kind, detail``) plus ``source``. A Deployment's service is
its name without a trailing version (``reviews-v2`` -> ``reviews``), as Istio's canonical service names
it by default. Changes after the incident window are read but ignored by the evidence
(:func:`baynet.evidence.changes.prior_factors` counts changes up to the anomaly).
"""

from __future__ import annotations

import re
from typing import ClassVar

import pandas as pd

from baynet.events import AnomalyEvent
from baynet.prometheus import PrometheusClient
from baynet.settings import Settings
from baynet.sources.base import Observed
from baynet.sources.prometheus import UNAVAILABLE
from baynet.windows import Windows

SOURCE = "kube-state-metrics"
_VERSION = re.compile(r"-v\d+$")


def service_of(workload: str) -> str:
    return _VERSION.sub("", workload)


def queries(namespace: str) -> dict[str, str]:
    ns = f'namespace="{namespace}"'
    return {
        "replicasets": (f"kube_replicaset_created{{{ns}}} * on (namespace, replicaset) group_left (owner_name) "
                        f'kube_replicaset_owner{{{ns},owner_kind="Deployment"}}'),
        "generations": f"kube_deployment_metadata_generation{{{ns}}}",
        "images": f"max by (container, image) (kube_pod_container_info{{{ns}}})",
    }


class KubeStateChanges:
    """The live change source reading kube-state-metrics through Prometheus."""

    name: ClassVar[str] = SOURCE
    kind: ClassVar[str] = "changes"
    unavailable: ClassVar[tuple[type[BaseException], ...]] = UNAVAILABLE

    def __init__(self, settings: Settings):
        self.settings = settings

    def fetch(self, event: AnomalyEvent, windows: Windows) -> Observed:
        rows = fetch_changes(windows, self.settings)
        return Observed("changes", {"changes": rows}, {"kube_state_changes": 0 if rows is None else len(rows)},
                        origin=str(self.settings.prometheus_url))


def fetch_changes(windows: Windows, settings: Settings) -> pd.DataFrame | None:
    """Deployments' rollouts, spec changes and new container images in the windows (None: none)."""
    start, end = windows.baseline[0], windows.incident[1]
    step = settings.metrics_step_s
    q = queries(settings.namespace)
    with PrometheusClient.from_settings(settings) as prometheus:
        answers = {name: prometheus.query_range(promql, start, end, step) for name, promql in q.items()}
    return changes_from_series(answers, start, end, step)


def changes_from_series(answers: dict[str, list[dict]], start: float, end: float, step: float
                        ) -> pd.DataFrame | None:
    """The change rows the three range answers (:func:`queries`, Prometheus' ``result`` lists) show."""
    rows: list[tuple[float, str, str, str, str]] = []
    rollouts: dict[str, list[float]] = {}
    for item in answers.get("replicasets") or []:
        m, values = item.get("metric") or {}, item.get("values") or []
        owner, rs = m.get("owner_name", ""), m.get("replicaset", "")
        if not owner or not values:
            continue
        created = float(values[-1][1])
        if start <= created <= end:
            rollouts.setdefault(owner, []).append(created)
            rows.append((created, service_of(owner), "deploy", f"ReplicaSet {rs} of Deployment {owner} created",
                         SOURCE))
    for item in answers.get("generations") or []:
        m, values = item.get("metric") or {}, item.get("values") or []
        deployment = m.get("deployment", "")
        for (_, a), (t, b) in zip(values, values[1:]):
            if float(b) > float(a) and not any(abs(float(t) - c) <= 2 * step for c in rollouts.get(deployment, [])):
                rows.append((float(t), service_of(deployment), "spec",
                             f"Deployment {deployment} generation {float(a):.0f} -> {float(b):.0f}", SOURCE))
    first_seen: dict[str, dict[str, float]] = {}
    for item in answers.get("images") or []:
        m, values = item.get("metric") or {}, item.get("values") or []
        if m.get("container") and m.get("image") and values:
            first_seen.setdefault(m["container"], {})[m["image"]] = float(values[0][0])
    for container, images in first_seen.items():
        earliest = min(images.values())
        for image, t in images.items():
            if t > earliest and t > start + step:  # an image the container did not run when the windows began
                before = sorted(i for i, s in images.items() if s < t)
                said = f"container {container} runs image {image}" + (f" (was {before[-1]})" if before else "")
                svc = service_of(container)
                same = [k for k, r in enumerate(rows) if r[1] == svc and r[2] == "deploy" and abs(r[0] - t) <= 2 * step]
                if same:  # the rollout that brought the image: one change, said once
                    r = rows[same[0]]
                    rows[same[0]] = (r[0], r[1], r[2], f"{r[3]}; {said}", r[4])
                else:
                    rows.append((t, svc, "image", said, SOURCE))
    if not rows:
        return None
    return pd.DataFrame(rows, columns=["time", "service", "kind", "detail", "source"]).sort_values(
        "time", kind="stable").reset_index(drop=True)
