"""The ``baynet`` command: every command group assembled. Prefect and the analysis stack are imported only
by the commands that need them, so ``baynet --help`` and the small commands start fast."""

from __future__ import annotations

import typer

from baynet.cli import bundle, detect, evaluate, local, operations

app = typer.Typer(help="Baynet: root-cause analysis for microservice incidents (SQS -> Prefect -> Tempo + "
                       "Istio -> dynamic Bayesian network).", no_args_is_help=True, add_completion=False)
app.add_typer(operations.app)      # analyse, listen, backfill, confirm, serve
app.add_typer(local.app)           # demo, generate
app.add_typer(operations.event_app, name="event")
app.add_typer(operations.tempo_app, name="tempo")
app.add_typer(local.loki_app, name="loki")
app.add_typer(local.stack_app, name="stack")
app.add_typer(bundle.bundle_app, name="bundle")
app.add_typer(evaluate.eval_app, name="eval")
app.add_typer(detect.detect_app, name="detect")

if __name__ == "__main__":
    app()
