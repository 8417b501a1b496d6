"""How the flow reads its evidence sources (:func:`baynet.sources.gather`): all at once, kept in their order,
a source that is down noted and the others carrying the analysis."""

import threading

import pandas as pd
import pytest

from baynet.sources import gather
from baynet.sources.base import Observed


class Source:
    """A source that waits at ``barrier`` before answering: read one after another, the first one's wait
    would time out."""

    unavailable = (ConnectionError,)

    def __init__(self, name, kind, barrier, fails=None):
        self.name, self.kind, self.barrier, self.fails = name, kind, barrier, fails

    def fetch(self, event, windows):
        self.barrier.wait(timeout=5)
        if self.fails:
            raise self.fails
        return Observed(self.kind, {"t": pd.DataFrame({"service": [self.name]})}, {self.name: "read"})


def test_the_sources_are_read_at_once_and_kept_in_their_order():
    barrier = threading.Barrier(3)
    sources = [Source("tempo", "traces", barrier), Source("prometheus", "metrics", barrier),
               Source("loki", "logs", barrier)]
    observations = gather(None, None, sources)  # read one after another, the barrier breaks: an error
    assert [p.kind for p in observations.parts] == ["traces", "metrics", "logs"]


def test_a_source_that_is_down_is_noted_and_one_that_rejects_the_request_fails_the_read():
    barrier = threading.Barrier(2)
    observations = gather(None, None, [Source("tempo", "traces", barrier, ConnectionError("refused")),
                                       Source("prometheus", "metrics", barrier)])
    assert [p.kind for p in observations.parts] == ["metrics"]
    assert observations.failed == {"traces": "refused"}
    barrier = threading.Barrier(2)
    with pytest.raises(ValueError, match="400"):
        gather(None, None, [Source("tempo", "traces", barrier, ValueError("400 bad query")),
                            Source("prometheus", "metrics", barrier)])
