"""Baynet: root-cause analysis for microservice incidents with a dynamic Bayesian network.

Layers (imports go one way): ``flows`` -> ``tasks`` -> ``baynet``. Nothing here imports Prefect
except :mod:`baynet.cli` (which launches flows) — artifact publishing lives in ``tasks/``.
"""

__version__ = "0.1.0"
