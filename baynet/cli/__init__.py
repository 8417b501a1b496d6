"""The ``baynet`` command line, one module per command group: ``operations`` (what runs against a real
deployment), ``local`` (the demo and the local stack), ``bundle``, ``evaluate`` (``baynet eval``) and
``detect``; ``main`` assembles them; ``common`` holds what they share. The CLI is the one place that
imports the Prefect flows."""
