"""Classifiers, the threshold table and the versioned model.

Three models, evaluated side by side: gradient boosting (scikit-learn's ``HistGradientBoostingClassifier``)
on the window's features, an LSTM (PyTorch, the ``torch`` extra) over the last ``SEQ_LEN`` windows, and
``zmax``, which learns nothing: a window's score is the service's largest deviation from its own reference
over every family it publishes (``max_abs_z``, in robust z units). The learnt two weight the classes
inversely to their frequency (positives are rare; missing a gray failure costs more than a false alarm).
``zmax`` is the one whose scale means the same on every mesh -- a deviation in the service's own spreads --
so a threshold calibrated on the watched mesh's reference carries over to its faults; the learnt models'
probabilities do not (1 s data saturate them). Training (``train_detector``; ``zmax`` skips 1, 2 and 4 and
chooses its threshold on ``Z_THRESHOLDS`` from all the training windows):

1. mRMR orders the features on the training rows;
2. K, the number kept, is chosen by grouped cross-validation inside the training data (average precision
   of a gradient-boosting probe; groups = experiment runs / services, so no run is in both sides);
3. the threshold comes from the same inner folds' out-of-fold scores: by default, as an alert source, the
   lowest threshold whose firings, grouped into incidents, make at most ``false_budget`` false incidents
   per mesh-hour (``baynet.detector.incidents``); without a budget, the row of the threshold table
   ``Thresh | Prec | Rec | F1 | Acc`` with the best F1 (within 0.01 of it: the lowest, for recall);
4. the model is refitted on all training rows. Scalers (LSTM) are fitted on training rows only.

Training drops feature families at random (``family_dropout``): a family one mesh does not publish reads
as zeros there, and a model that leaned on it would be blind on that mesh.
"""

from __future__ import annotations

import hashlib
import pickle
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import average_precision_score
from sklearn.model_selection import GroupKFold
from threadpoolctl import threadpool_limits

from baynet.detector.features import FEATURES, PER_FAMILY, summaries
from baynet.detector.mrmr import mrmr_order
from baynet.detector.series import FAMILIES

SEQ_LEN = 8
K_CHOICES = (4, 8, 12, 16, 24)
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 1.0, 0.05))
Z_THRESHOLDS = (3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 150.0,
                200.0, 300.0, 500.0, 1000.0)  # zmax: deviations in robust spreads
MAX_TRAIN_ROWS = 40000
FAMILY_DROPOUT = 0.3  # chance that a training copy of a block loses one of its families
PROBE_ROWS = 12000  # rows per fit of the gradient-boosting probe that picks K


@dataclass
class Block:
    """Consecutive windows of one service in one case: features ``X`` (rows x FEATURES) and labels."""

    X: np.ndarray
    y: np.ndarray
    service: str
    case: str
    group: str
    t: np.ndarray | None = None   # window times (unix s), for judging firings as incidents
    step_s: float = 0.0           # the case's window step


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# --- threshold table ---------------------------------------------------------------------------------

def threshold_table(y: np.ndarray, p: np.ndarray, thresholds: tuple[float, ...] = THRESHOLDS) -> pd.DataFrame:
    """Point-wise precision, recall, F1 and accuracy at each threshold (rows with label 0/1 only)."""
    y = np.asarray(y)
    p = np.asarray(p, float)
    keep = y >= 0
    y, p = y[keep].astype(bool), p[keep]
    rows = []
    for t in thresholds:
        pred = p >= t
        tp = int(np.sum(pred & y))
        fp = int(np.sum(pred & ~y))
        fn = int(np.sum(~pred & y))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        acc = float(np.mean(pred == y)) if len(y) else 0.0
        rows.append({"Thresh": t, "Prec": prec, "Rec": rec, "F1": f1, "Acc": acc})
    return pd.DataFrame(rows)


F1_TOLERANCE = 0.01


def choose_threshold(table: pd.DataFrame, tolerance: float = F1_TOLERANCE) -> float:
    """The lowest threshold whose F1 is within ``tolerance`` of the best. Out-of-fold F1 differences under
    0.01 are noise — a model whose scores sit near 0 and 1 gives a flat table, where the "best" row is
    chance (0.95 beating 0.05 by 0.001 once made a held-out service go unflagged) — and among equals the
    lower threshold favours recall."""
    best = table["F1"].max()
    return float(table.loc[table["F1"] >= best - tolerance - 1e-12, "Thresh"].min())


def format_table(table: pd.DataFrame, chosen: float | None = None) -> str:
    lines = ["| Thresh | Prec | Rec | F1 | Acc |", "|---|---|---|---|---|"]
    for r in table.itertuples():
        mark = " ←" if chosen is not None and abs(r.Thresh - chosen) < 1e-9 else ""
        lines.append(f"| {r.Thresh:.2f}{mark} | {r.Prec:.3f} | {r.Rec:.3f} | {r.F1:.3f} | {r.Acc:.3f} |")
    return "\n".join(lines)


# --- estimators ----------------------------------------------------------------------------------------

def _rows(blocks: list[Block], cols: list[int]) -> tuple[np.ndarray, np.ndarray]:
    X = np.vstack([b.X[:, cols] for b in blocks])
    y = np.concatenate([b.y for b in blocks])
    return X, y


def _cap(y: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of labelled rows, at most ``limit`` (all positives kept while they fit)."""
    labelled = np.flatnonzero(y >= 0)
    if labelled.size <= limit:
        return labelled
    pos, neg = labelled[y[labelled] == 1], labelled[y[labelled] == 0]
    pos = pos if pos.size <= limit // 2 else rng.choice(pos, limit // 2, replace=False)
    neg = rng.choice(neg, min(neg.size, limit - pos.size), replace=False)
    return np.sort(np.concatenate([pos, neg]))


class _BalancedHGB(HistGradientBoostingClassifier):
    """``HistGradientBoostingClassifier`` with fast weighted bin edges. With class weights, scikit-learn
    1.9 computes each of the 254 edges of each feature by a separate weighted percentile in Python: 16 of
    the 18 s a small training took. Class weights take two values, so the weighted quantiles are the plain
    quantiles of the rows repeated in proportion to their weight (the rarer class repeated n_common/n_rare
    times, rounded) — nearly the same edges (the rounding moves them slightly), computed vectorised, 25x
    faster. The weights still weight the loss."""

    def _bin_data(self, X, sample_weight, is_training_data):
        if not is_training_data or sample_weight is None:
            return super()._bin_data(X, sample_weight, is_training_data)
        reps = np.rint(sample_weight / sample_weight[sample_weight > 0].min()).astype(np.int64)
        if reps.sum() > 4 * len(X):  # not class-balancing weights: scikit-learn's own (slow) way
            return super()._bin_data(X, sample_weight, is_training_data)
        self._bin_mapper.fit(np.repeat(X, reps, axis=0))
        return self._bin_mapper.transform(X)


class GradientBoosting:
    kind = "gbm"

    def __init__(self, random_state: int = 0, max_rows: int = MAX_TRAIN_ROWS, max_iter: int = 150):
        self.random_state, self.max_rows, self.max_iter = random_state, max_rows, max_iter
        self.model: HistGradientBoostingClassifier | None = None

    def fit(self, blocks: list[Block], cols: list[int]) -> "GradientBoosting":
        X, y = _rows(blocks, cols)
        idx = _cap(y, self.max_rows, np.random.default_rng(self.random_state))
        self.model = _BalancedHGB(max_iter=self.max_iter, learning_rate=0.1, max_leaf_nodes=15,
                                  l2_regularization=1.0, class_weight="balanced", random_state=self.random_state)
        with threadpool_limits(1):  # small trees: OpenMP threads cost more than they give (12x under load)
            self.model.fit(X[idx], y[idx])
        return self

    def predict(self, blocks: list[Block], cols: list[int]) -> list[np.ndarray]:
        assert self.model is not None
        with threadpool_limits(1):
            return [self.model.predict_proba(b.X[:, cols])[:, 1] if len(b.y) else np.array([]) for b in blocks]

    def state(self) -> dict[str, Any]:
        return {"model": self.model}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "GradientBoosting":
        obj = cls()
        obj.model = state["model"]
        return obj


def _sequences(X: np.ndarray, seq_len: int, rows: np.ndarray | None = None,
               block_start: np.ndarray | None = None) -> np.ndarray:
    """For each of ``rows`` (default: all) of ``X``, the windows t-seq_len+1 .. t as one sequence; before
    the start of its block (``block_start`` per row, default 0) the block's first row is repeated.
    Only the sequences asked for are built (training takes a sample of the rows)."""
    rows = np.arange(len(X)) if rows is None else rows
    idx = rows[:, None] - (seq_len - 1) + np.arange(seq_len)
    floor = np.zeros(len(rows), np.int64) if block_start is None else block_start[rows]
    return X[np.maximum(idx, floor[:, None])].astype(np.float32)


class LSTM:
    """One-layer LSTM over the last ``SEQ_LEN`` windows, a linear head on the last hidden state."""

    kind = "lstm"

    def __init__(self, random_state: int = 0, hidden: int = 32, epochs: int = 10, batch: int = 512,
                 lr: float = 3e-3):
        self.random_state, self.hidden, self.epochs, self.batch, self.lr = random_state, hidden, epochs, batch, lr
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.lo: np.ndarray | None = None
        self.hi: np.ndarray | None = None
        self.weights: dict[str, np.ndarray] | None = None
        self.n_features = 0

    def _net(self):
        import torch

        class Net(torch.nn.Module):
            def __init__(self, n_in: int, hidden: int):
                super().__init__()
                self.lstm = torch.nn.LSTM(n_in, hidden, batch_first=True)
                self.head = torch.nn.Linear(hidden, 1)

            def forward(self, x):
                out, _ = self.lstm(x)
                return self.head(out[:, -1, :]).squeeze(-1)

        return Net(self.n_features, self.hidden)

    def fit(self, blocks: list[Block], cols: list[int]) -> "LSTM":
        import torch

        torch.manual_seed(self.random_state)
        rng = np.random.default_rng(self.random_state)
        X, y = _rows(blocks, cols)
        labelled = y >= 0
        seen = X[labelled]
        self.lo, self.hi = seen.min(axis=0), seen.max(axis=0)
        self.mean, self.std = seen.mean(axis=0), seen.std(axis=0) + 1e-6
        idx = _cap(y, MAX_TRAIN_ROWS, rng)
        lengths = [len(b.y) for b in blocks]
        block_start = np.repeat(np.cumsum([0] + lengths[:-1]), lengths)
        seqs = _sequences(self._scaled(X), SEQ_LEN, idx, block_start)
        target = y[idx].astype(np.float32)
        self.n_features = len(cols)
        net = self._net()
        pos = max(float(target.sum()), 1.0)
        loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(target) - pos) / pos))
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        xs, ts = torch.from_numpy(seqs), torch.from_numpy(target)
        net.train()
        for _ in range(self.epochs):
            order = torch.from_numpy(rng.permutation(len(ts)))
            for start in range(0, len(ts), self.batch):
                sel = order[start:start + self.batch]
                opt.zero_grad()
                loss = loss_fn(net(xs[sel]), ts[sel])
                loss.backward()
                opt.step()
        self.weights = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
        return self

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        """Clipped to the range seen in training, then standardised. A network extrapolates arbitrarily:
        a deviation larger than any in training (a CPU pinned at 100 % on a service that idles at 1 %)
        must read as the largest one seen, not as an input the gates were never fitted on."""
        if self.lo is not None and self.hi is not None:
            X = np.clip(X, self.lo, self.hi)
        return (X - self.mean) / self.std

    def predict(self, blocks: list[Block], cols: list[int]) -> list[np.ndarray]:
        import torch

        net = self._net()
        net.load_state_dict({k: torch.from_numpy(v) for k, v in self.weights.items()})
        net.eval()
        out = []
        with torch.no_grad():
            for b in blocks:
                if not len(b.y):
                    out.append(np.array([]))
                    continue
                seqs = torch.from_numpy(_sequences(self._scaled(b.X[:, cols]), SEQ_LEN))
                out.append(torch.sigmoid(net(seqs)).numpy().astype(float))
        return out

    def state(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "lo": self.lo, "hi": self.hi, "weights": self.weights,
                "n_features": self.n_features, "hidden": self.hidden}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "LSTM":
        obj = cls(hidden=state["hidden"])
        obj.mean, obj.std, obj.weights, obj.n_features = (state["mean"], state["std"], state["weights"],
                                                          state["n_features"])
        obj.lo, obj.hi = state.get("lo"), state.get("hi")  # absent in models stored before clipping
        return obj


class RobustZ:
    """``zmax``: no fitting; the score is the window's ``max_abs_z`` back on the robust-z scale."""

    def __init__(self, random_state: int = 0):
        self.random_state = random_state

    def fit(self, blocks: list[Block], cols: list[int]) -> "RobustZ":
        return self

    def predict(self, blocks: list[Block], cols: list[int]) -> list[np.ndarray]:
        return [np.expm1(b.X[:, MAX_Z]) for b in blocks]

    def state(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "RobustZ":
        return cls()


MAX_Z = FEATURES.index("max_abs_z")
ESTIMATORS = {"gbm": GradientBoosting, "lstm": LSTM, "zmax": RobustZ}


def make_estimator(kind: str, random_state: int = 0):
    if kind not in ESTIMATORS:
        raise ValueError(f"unknown model {kind!r}; choose one of {', '.join(ESTIMATORS)}")
    if kind == "lstm" and not torch_available():
        raise ValueError("the lstm model needs PyTorch: pip install 'baynet[torch]'")
    return ESTIMATORS[kind](random_state=random_state)


# --- training ------------------------------------------------------------------------------------------

def _folds(blocks: list[Block], n: int) -> list[tuple[list[int], list[int]]]:
    groups = np.array([b.group for b in blocks])
    uniq = np.unique(groups)
    if len(uniq) >= 2:
        splitter = GroupKFold(n_splits=min(n, len(uniq)))
        return [(list(a), list(b)) for a, b in splitter.split(np.zeros(len(blocks)), groups=groups)]
    # one group: split its cases in two halves by order, never a random row split
    half = len(blocks) // 2
    return [(list(range(half)), list(range(half, len(blocks))))] if half else []


def _has_both(blocks: list[Block]) -> bool:
    y = np.concatenate([b.y for b in blocks]) if blocks else np.array([])
    return bool((y == 1).any() and (y == 0).any())


def choose_k(blocks: list[Block], order: list[int], ks: tuple[int, ...] = K_CHOICES, folds: int = 3,
             random_state: int = 0) -> tuple[int, dict[int, float]]:
    """K with the best mean average precision over grouped inner folds (ties: the smaller K)."""
    candidates = sorted({min(k, len(order)) for k in ks if k > 0})
    splits = [(a, b) for a, b in _folds(blocks, folds)
              if _has_both([blocks[i] for i in a]) and _has_both([blocks[i] for i in b])]
    if not splits or len(candidates) == 1:
        return candidates[-1], {}
    scores: dict[int, float] = {}
    for k in candidates:
        cols = order[:k]
        aps = []
        for train_idx, test_idx in splits:
            est = GradientBoosting(random_state, max_rows=PROBE_ROWS, max_iter=60).fit([blocks[i] for i in train_idx], cols)
            test = [blocks[i] for i in test_idx]
            p = np.concatenate(est.predict(test, cols))
            y = np.concatenate([b.y for b in test])
            keep = y >= 0
            aps.append(average_precision_score(y[keep], p[keep]))
        scores[k] = float(np.mean(aps))
    best = max(scores.values())
    return min(k for k, s in scores.items() if s >= best - 1e-9), scores


@dataclass
class DetectorModel:
    kind: str
    features: list[str]
    threshold: float
    table: list[dict[str, float]]
    k_scores: dict[int, float]
    relevance: dict[str, float]
    trained_on: dict[str, Any]
    estimator: Any = field(repr=False)
    version: str = ""
    created: float = 0.0

    @property
    def cols(self) -> list[int]:
        return [FEATURES.index(f) for f in self.features]

    def score(self, blocks: list[Block]) -> list[np.ndarray]:
        return self.estimator.predict(blocks, self.cols)

    def meta(self) -> dict[str, Any]:
        return {"version": self.version, "kind": self.kind, "features": self.features,
                "threshold": self.threshold, "threshold_table": self.table,
                "k_scores": {str(k): v for k, v in self.k_scores.items()}, "relevance": self.relevance,
                "trained_on": self.trained_on, "created": self.created, "seq_len": SEQ_LEN}

    def to_bytes(self) -> bytes:
        meta = self.meta()
        return pickle.dumps({"meta": meta, "state": self.estimator.state()})

    @classmethod
    def from_bytes(cls, data: bytes) -> "DetectorModel":
        obj = pickle.loads(data)  # noqa: S301 (our own artifact store, written by to_bytes)
        meta, state = obj["meta"], obj["state"]
        estimator = ESTIMATORS[meta["kind"]].from_state(state)
        return cls(kind=meta["kind"], features=meta["features"], threshold=meta["threshold"],
                   table=meta["threshold_table"], k_scores={int(k): v for k, v in meta["k_scores"].items()},
                   relevance=meta["relevance"], trained_on=meta["trained_on"], estimator=estimator,
                   version=meta["version"], created=meta["created"])


def family_dropout(blocks: list[Block], rate: float = FAMILY_DROPOUT, random_state: int = 0) -> list[Block]:
    """Copies of ``blocks`` in which each family a block has is dropped (its features zeroed, as for a mesh
    that does not publish it) with probability ``rate``; the features computed over all families
    (``max_abs_z``, ``n_out``, the per-load ratios) are recomputed without the dropped ones. The copies
    come in addition to the originals."""
    rng = np.random.default_rng(random_state)
    idx = {f: [FEATURES.index(f"{f}_{k}") for k in PER_FAMILY] for f in FAMILIES}
    z_cols = [FEATURES.index(f"{f}_z") for f in FAMILIES]
    out = []
    for b in blocks:
        present = [f for f in FAMILIES if np.any(b.X[:, idx[f][0]] != 0)]
        drop = [f for f in present if rng.random() < rate]
        if not drop or len(drop) == len(present):
            continue
        X = b.X.copy()
        for f in drop:
            X[:, idx[f]] = 0.0
        if "load" in drop or all(f in drop for f in ("lat_p50", "lat_p90", "lat_p99")):
            X[:, FEATURES.index("lat_per_load_z")] = 0.0
        if "load" in drop or "cpu" in drop:
            X[:, FEATURES.index("cpu_per_load_z")] = 0.0
        X[:, FEATURES.index("max_abs_z")], X[:, FEATURES.index("n_out")] = summaries(np.abs(X[:, z_cols]).T)
        out.append(Block(X, b.y, b.service, b.case + "~drop", b.group, b.t, b.step_s))
    return out


def thresholds_for(kind: str) -> tuple[float, ...]:
    """The thresholds a model's scores are judged at: probabilities, or robust z for ``zmax``."""
    return Z_THRESHOLDS if kind == "zmax" else THRESHOLDS


def critical_score(kind: str, threshold: float) -> float:
    """The score from which an event is critical: 0.9 for a probability, twice the threshold for ``zmax``."""
    return 2 * threshold if kind == "zmax" else 0.9


def meshes_of(blocks: list[Block], scores: list[np.ndarray]):
    """Scored blocks grouped by case, for judging firings as incidents."""
    from baynet.detector.incidents import by_case

    steps = {b.case: b.step_s or (float(np.median(np.diff(b.t))) if b.t is not None and len(b.t) > 1 else 1.0)
             for b in blocks}
    return by_case(blocks, scores, steps)


def train_detector(blocks: list[Block], kind: str = "gbm", *, ks: tuple[int, ...] = K_CHOICES,
                   inner_folds: int = 3, random_state: int = 0, progress=None,
                   false_budget: float | None = None, dropout: float = FAMILY_DROPOUT) -> DetectorModel:
    """mRMR order -> K by grouped CV -> threshold from out-of-fold scores (for ``false_budget`` false
    incidents per mesh-hour when given and the blocks carry times, else best F1) -> refit on everything
    (plus family-dropout copies)."""
    say = progress or (lambda _msg: None)
    if not _has_both(blocks):
        raise ValueError("training data needs both anomalous and normal windows")
    X, y = _rows(blocks, list(range(len(FEATURES))))
    keep = y >= 0
    grid = thresholds_for(kind)
    oof_y, oof_p, oof_blocks, oof_scores = [], [], [], []
    if kind == "zmax":  # nothing is fitted, so every training window is out of sample
        order, relevance, k_scores, cols = [MAX_Z], np.zeros(len(FEATURES)), {}, [MAX_Z]
        scores = make_estimator(kind).predict(blocks, cols)
        oof_p, oof_y, oof_blocks, oof_scores = [np.concatenate(scores)], [y], list(blocks), scores
    else:
        say(f"mRMR over {int(keep.sum())} labelled windows")
        order, relevance = mrmr_order(X[keep], y[keep], max(ks), random_state=random_state)
        if not order:
            raise ValueError("no feature varies in the training data")
        k, k_scores = choose_k(blocks, order, ks, inner_folds, random_state)
        cols = order[:k]
        say(f"K = {k} by cross-validation ({', '.join(f'{kk}: AP {v:.3f}' for kk, v in k_scores.items())})")
        for train_idx, test_idx in _folds(blocks, inner_folds):
            train = [blocks[i] for i in train_idx]
            if not _has_both(train):
                continue
            test = [blocks[i] for i in test_idx]
            est = make_estimator(kind, random_state).fit(train + family_dropout(train, dropout, random_state), cols)
            scores = est.predict(test, cols)
            oof_p.append(np.concatenate(scores))
            oof_y.append(np.concatenate([b.y for b in test]))
            oof_blocks += test
            oof_scores += scores
    incident_table: list[dict[str, Any]] = []
    by_budget = false_budget is not None and oof_blocks and all(b.t is not None for b in oof_blocks)
    if oof_y:
        table = threshold_table(np.concatenate(oof_y), np.concatenate(oof_p), grid)
        threshold = choose_threshold(table)
        if by_budget:
            from baynet.detector.incidents import budget_threshold

            threshold, incident_table = budget_threshold(meshes_of(oof_blocks, oof_scores), false_budget, grid)
    else:
        table, threshold = threshold_table(np.array([]), np.array([]), grid), grid[len(grid) // 2]
    how = f"for at most {false_budget:g} false incidents per mesh-hour" if by_budget else "for the best F1"
    if kind == "zmax":
        say(f"threshold {threshold:g} {how} from all {len(blocks)} training blocks (zmax fits nothing)")
        estimator = make_estimator(kind)
    else:
        say(f"threshold {threshold:.2f} {how} from {len(oof_y)} inner folds; refitting {kind} on all training "
            "windows")
        estimator = make_estimator(kind, random_state).fit(blocks + family_dropout(blocks, dropout, random_state),
                                                           cols)
    model = DetectorModel(kind=kind, features=[FEATURES[i] for i in cols], threshold=threshold,
                          table=table.to_dict("records"), k_scores=k_scores,
                          relevance={FEATURES[i]: float(relevance[i]) for i in order},
                          trained_on={"blocks": len(blocks), "groups": sorted({b.group for b in blocks}),
                                      "windows": int(keep.sum()), "positives": int((y == 1).sum()),
                                      "false_incident_budget": false_budget if by_budget else None,
                                      "incident_table": incident_table, "family_dropout": dropout},
                          estimator=estimator, created=time.time())
    model.version = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(model.created)) + "-" + hashlib.sha256(
        model.to_bytes()).hexdigest()[:10]
    return model


# --- the model store -------------------------------------------------------------------------------------

MODEL_PREFIX = "detector/models"


def save_model(store: Any, model: DetectorModel) -> str:
    """``detector/models/<version>/{model.pkl,meta.json,threshold_table.md}`` and the ``latest`` pointer."""
    base = f"{MODEL_PREFIX}/{model.version}"
    store.put(f"{base}/model.pkl", model.to_bytes())
    store.put_json(f"{base}/meta.json", model.meta())
    store.put(f"{base}/threshold_table.md", format_table(pd.DataFrame(model.table), model.threshold) + "\n")
    store.put_json(f"{MODEL_PREFIX}/latest.json", {"version": model.version, "kind": model.kind})
    return base


def load_model(store: Any, version: str = "latest") -> DetectorModel:
    if version == "latest":
        pointer = store.get_json(f"{MODEL_PREFIX}/latest.json")
        if not pointer:
            raise FileNotFoundError("no detector model in the artifact store: run 'baynet detect train' first")
        version = pointer["version"]
    data = store.get(f"{MODEL_PREFIX}/{version}/model.pkl")
    if data is None:
        raise FileNotFoundError(f"detector model version {version!r} is not in the artifact store")
    return DetectorModel.from_bytes(data)


def blocks_from_cases(cases: list[Any], group_prefix: str = "") -> list[Block]:
    """Feature blocks of every service of every case (labels as the dataset gives them). A
    ``group_prefix`` (another dataset's name) keeps its groups apart from the main dataset's in inner folds."""
    from baynet.detector.features import service_features

    blocks = []
    for case in cases:
        for s in case.services:
            X = service_features(s).to_numpy(float)
            y = s.labels if s.labels is not None else np.full(len(X), -1)
            blocks.append(Block(X, np.asarray(y, int), s.service, case.name, group_prefix + case.group,
                                s.observed.index.to_numpy(float), float(case.step_s)))
    return blocks
