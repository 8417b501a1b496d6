"""Incident bundles: one neutral directory format to keep, replay, share and evaluate an incident.

``format`` defines and checks the format (its docstring is the specification).
"""

from baynet.bundles.format import FORMAT, BundleError, BundleSummary, check_bundle

__all__ = ["FORMAT", "BundleError", "BundleSummary", "check_bundle"]
