"""Steps 4 and 5: re-estimate the DBN from the topology and span counts, then run inference."""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from baynet.analysis import infer, load_model, reestimate
from baynet.artifacts import make_store
from baynet.dbn import DBNModel
from baynet.events import AnomalyEvent
from baynet.settings import Settings
from baynet.topology import Topology
from tasks.validate import validated
from tasks.retry import IO_RETRIES, IO_RETRY_DELAYS, IO_RETRY_JITTER, retry_unless_rejected


@task(name="load-model", retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAYS,
      retry_jitter_factor=IO_RETRY_JITTER, retry_condition_fn=retry_unless_rejected, cache_policy=NO_CACHE)
def load_persisted_model(settings: Settings) -> DBNModel:
    return load_model(make_store(settings), settings.namespace)


@task(name="reestimate-dbn", cache_policy=NO_CACHE)
def reestimate_dbn(model: DBNModel, topology: Topology, edges: pd.DataFrame) -> tuple[DBNModel, dict]:
    """Update the structure in place (new services/edges get priors) and the parameters from spans."""
    changes = reestimate(model, topology, edges)
    return model, changes


@task(name="run-inference", cache_policy=NO_CACHE)
def run_inference(model: DBNModel, event: AnomalyEvent, evidence: pd.DataFrame, topology: Topology,
                  settings: Settings, prior_factor: dict[str, float] | None = None) -> tuple[list[dict], list[str]]:
    """Ranked posteriors (validated) and the most probable propagation path to the event's service;
    ``prior_factor`` raises the prior odds of recently changed services."""
    ranking, path = infer(model, event, evidence, topology, settings, prior_factor)
    validated("posteriors", pd.DataFrame(ranking, columns=["rank", "service", "posterior", "prior", "evidence"]))
    # Priors are not fed back from the model's own posteriors: without a confirmed root cause that loop
    # only reinforces whatever the model blamed before (measured: AC@1 0.93 -> 0.73 on Online Boutique).
    return ranking, path
