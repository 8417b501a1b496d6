"""The upstream gray-failure detector: metric series -> TUNA-style denoising -> trend/cross/lag features
-> mRMR selection -> classifier (gradient boosting, or an LSTM with the ``torch`` extra) -> tuned threshold
-> anomaly events on the SQS queue the incident flow reads.

Modules: ``series`` (data model, metric-name maps, Prometheus ``query_range``), ``denoise``, ``features``,
``mrmr``, ``models`` (classifiers, threshold table, versioned model store), ``datasets`` (RCD Sock Shop and
Nezha adapters), ``evaluate`` (held-out evaluation), ``emit`` (CloudEvents, firing/resolved state).
"""
