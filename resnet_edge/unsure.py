"""A "not sure" score: how far a frame lies from what the model was trained on (no torch).

Every candidate is computed from what one session run gives, the logits and the pooled penultimate
features (the input of the final Gemm, renamed and exposed as the extra graph output ``features``); higher = less sure:

    msp           -max softmax(logits)                                   (Hendrycks & Gimpel 2017, the baseline)
    energy        -logsumexp(logits)                                      (Liu et al. 2020)
    mahalanobis   min over classes c of (f - mu_c)^T P (f - mu_c),        (Lee et al. 2018)
                  mu_c the class means, P the inverse of the shared covariance
    knn           -(cosine similarity of f to its k-th nearest training feature)   (Sun et al. 2022)
    mahalanobis+energy   the sum of the two, each standardised (mean 0, std 1) on the fitting images

The score chosen for a model is built INTO its graph (a few MatMul/Reduce nodes on ``features``, with the
statistics as initializers named ``unsure.*``) and read from the extra output ``unsure_score``, so one run
gives logits and score, and a bare ONNX Runtime script gets the score too. The metadata key ``unsure``
says what it is:

    {"score": "mahalanobis", "output": "unsure_score", "features": "features", "threshold": 117.6,
     "keep": 0.9, "fitted_on": {...}, "threshold_on": {...}}

A frame is "not sure" when its score is above ``threshold``, chosen on held-out in-distribution images so that
a share ``keep`` of the model's correct answers stays below it. Which score ships, and why: docs/unsure.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .errors import UserError

SCORES = ("msp", "energy", "mahalanobis", "knn", "mahalanobis+energy")
METADATA_KEY = "unsure"
FEATURES_OUTPUT = "features"
SCORE_OUTPUT = "unsure_score"
PREFIX = "unsure."  # initializer and node names of the score subgraph
KNN_K = 10  # neighbours for the knn score (Sun et al. use k=50 on 50,000 CIFAR images; the bank here is smaller)
RIDGE = 1e-3  # added to the covariance's diagonal (scaled by its mean variance) so it always inverts


@dataclass
class UnsureSpec:
    """The ``unsure`` metadata of a model: which score its graph computes and the threshold on it."""

    score: str  # one of SCORES
    threshold: float  # score above it: "not sure"
    keep: float  # share of correct held-out answers the threshold keeps
    output: str = SCORE_OUTPUT  # graph output holding the score, (N,)
    features: str = FEATURES_OUTPUT  # graph output holding the pooled penultimate features, (N, D)
    extra: dict[str, Any] = field(default_factory=dict)  # fitted_on, threshold_on, ...

    def to_json(self) -> dict[str, Any]:
        return {"score": self.score, "output": self.output, "features": self.features,
                "threshold": float(self.threshold), "keep": float(self.keep), **self.extra}

    @classmethod
    def from_metadata(cls, extra: Mapping[str, Any], outputs: set[str], source: str = "model") -> "UnsureSpec | None":
        """The spec from a contract's extra keys; None when the model carries none (or its outputs are gone)."""
        value = extra.get(METADATA_KEY)
        if value is None:
            return None
        try:
            spec = cls(score=str(value["score"]), threshold=float(value["threshold"]), keep=float(value["keep"]),
                       output=str(value.get("output", SCORE_OUTPUT)), features=str(value.get("features", FEATURES_OUTPUT)),
                       extra={k: v for k, v in value.items()
                              if k not in ("score", "threshold", "keep", "output", "features")})
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{source}: metadata '{METADATA_KEY}' must hold score, threshold and keep") from None
        if not np.isfinite(spec.threshold) or spec.output not in outputs:
            return None  # e.g. the graph was rebuilt without our outputs: the model still classifies
        return spec


# --- the scores in numpy: the reference, and what calibration and the benchmarks measure ------------------


def fit_statistics(features: np.ndarray, labels: np.ndarray, num_classes: int, bank_size: int = 2000,
                   seed: int = 0) -> dict[str, np.ndarray]:
    """Class means and shared precision (Mahalanobis), and a bank of normalised features (knn)."""
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    missing = [c for c in range(num_classes) if not np.any(labels == c)]
    if missing:
        raise UserError(f"no fitting images of class index {missing[0]}: every class needs some")
    means = np.stack([features[labels == c].mean(0) for c in range(num_classes)])
    centred = features - means[labels]
    covariance = centred.T @ centred / max(len(features) - 1, 1)
    covariance += np.eye(len(covariance)) * RIDGE * max(float(np.trace(covariance)) / len(covariance), 1e-12)
    precision = np.linalg.inv(covariance)
    precision = (precision + precision.T) / 2
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(features), size=min(bank_size, len(features)), replace=False)
    bank = normalise(features[np.sort(chosen)])
    return {"means": means.astype(np.float32), "precision": precision.astype(np.float32),
            "bank": bank.astype(np.float32)}


def normalise(features: np.ndarray) -> np.ndarray:
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def score_numpy(score: str, logits: np.ndarray, features: np.ndarray | None,
                stats: Mapping[str, np.ndarray] | None) -> np.ndarray:
    """The score of each row in float64: the reference the graph's ``unsure_score`` is tested against."""
    logits = np.asarray(logits, dtype=np.float64)
    if score == "msp":
        shifted = logits - logits.max(1, keepdims=True)
        probs = np.exp(shifted) / np.exp(shifted).sum(1, keepdims=True)
        return -probs.max(1)
    if score == "energy":
        top = logits.max(1)
        return -(top + np.log(np.exp(logits - top[:, None]).sum(1)))
    assert features is not None and stats is not None
    f = np.asarray(features, dtype=np.float64)
    if score == "mahalanobis+energy":
        distance = score_numpy("mahalanobis", logits, features, stats)
        energy = score_numpy("energy", logits, None, None)
        if "z_scale" in stats:  # as stored in a file: d * z_scale + lse * lse_scale + z_bias, lse = -energy
            return distance * float(stats["z_scale"]) - energy * float(stats["lse_scale"]) + float(stats["z_bias"])
        mean, std = stats["z_mean"].astype(np.float64), stats["z_std"].astype(np.float64)
        return (distance - mean[0]) / std[0] + (energy - mean[1]) / std[1]
    if score == "mahalanobis":
        means, precision = stats["means"].astype(np.float64), stats["precision"].astype(np.float64)
        diff = f[:, None, :] - means[None, :, :]  # (N, C, D)
        return np.einsum("ncd,de,nce->nc", diff, precision, diff).min(1)
    if score == "knn":
        similarity = normalise(f) @ stats["bank"].astype(np.float64).T  # (N, M)
        k = min(KNN_K, similarity.shape[1])
        return -np.sort(similarity, axis=1)[:, -k]
    raise UserError(f"unknown score {score!r}; choose one of {', '.join(SCORES)}")


def threshold_for(correct_scores: np.ndarray, keep: float) -> float:
    """The score that keeps ``keep`` of the correct answers at or below it."""
    if not 0 < keep <= 1:
        raise UserError(f"--keep must be in (0, 1], got {keep}")
    if len(correct_scores) == 0:
        raise UserError("no correct answers on the held-out images: cannot choose a threshold")
    return float(np.quantile(np.asarray(correct_scores, dtype=np.float64), keep, method="higher"))


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """Probability that an outside image scores higher than an inside one (ties count half)."""
    inside, outside = np.sort(np.asarray(inside, np.float64)), np.asarray(outside, np.float64)
    below = np.searchsorted(inside, outside, side="left")  # inside scores strictly below each outside one
    ties = np.searchsorted(inside, outside, side="right") - below
    return float((below + ties / 2).sum() / max(len(inside) * len(outside), 1))


# --- the graph: expose the features, build the score, store the statistics (needs the onnx package) -------


def _onnx():
    try:
        import onnx
    except ImportError as error:
        raise UserError(f"editing the model graph needs the onnx package ({error}); install it with: pip install onnx") from None
    return onnx


def _producer(graph, name: str):
    for node in graph.node:
        if name in node.output:
            return node
    return None


def feature_tensor(model, logits_name: str) -> str:
    """The float tensor the final Gemm/MatMul reads: walk back from the logits through Q/DQ and Add (bias)
    nodes to the classifier, then from its input back through a DequantizeLinear/QuantizeLinear pair."""
    graph = model.graph
    node = _producer(graph, logits_name)
    while node is not None and node.op_type in ("DequantizeLinear", "QuantizeLinear", "Add", "Identity"):
        if node.op_type == "Add":  # MatMul + Add bias: the MatMul is whichever input another node makes
            makers = [_producer(graph, name) for name in node.input]
            node = next((m for m in makers if m is not None and m.op_type in ("MatMul", "Gemm")), None)
        else:
            node = _producer(graph, node.input[0])
    if node is None or node.op_type not in ("Gemm", "MatMul"):
        raise UserError("the model's logits do not come from a final Gemm/MatMul: no pooled features to score")
    name = node.input[0]
    dq = _producer(graph, name)
    if dq is not None and dq.op_type == "DequantizeLinear":  # int8 QDQ: the float tensor before its Q
        q = _producer(graph, dq.input[0])
        if q is not None and q.op_type == "QuantizeLinear":
            name = q.input[0]
    return name


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)


def _reduce(helper, nodes: list, op: str, x: str, out: str, opset: int, keepdims: int) -> None:
    """Reduce over axis 1; axes became an input in opset 18 (ReduceSum in 13)."""
    axes_as_input = opset >= (13 if op == "ReduceSum" else 18)
    name = out if out.startswith(PREFIX) else PREFIX + out  # every node we add is named unsure.*: removable
    if axes_as_input:
        nodes.append(helper.make_node(op, [x, PREFIX + "axis1"], [out], keepdims=keepdims, name=name))
    else:
        nodes.append(helper.make_node(op, [x], [out], axes=[1], keepdims=keepdims, name=name))


def add_score_graph(model, score: str, stats: Mapping[str, np.ndarray] | None, logits_name: str) -> None:
    """Add ``features`` and ``unsure_score`` outputs to ``model`` (in place), with the statistics as initializers.
    A model that already has them has them replaced."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    remove_score_graph(model)
    graph, opset = model.graph, _opset(model)
    source = feature_tensor(model, logits_name)
    if source != FEATURES_OUTPUT:  # the tensor itself is renamed: an output without an extra node (each costs time)
        _rename_tensor(graph, source, FEATURES_OUTPUT)
    nodes: list = []
    inits = {"axis1": np.array([1], dtype=np.int64)}
    f = FEATURES_OUTPUT
    if score == "msp":
        nodes.append(helper.make_node("Softmax", [logits_name], [PREFIX + "probs"], axis=1, name=PREFIX + "softmax"))
        _reduce(helper, nodes, "ReduceMax", PREFIX + "probs", PREFIX + "top", opset, 0)
        nodes.append(helper.make_node("Neg", [PREFIX + "top"], [SCORE_OUTPUT], name=PREFIX + "neg"))
    elif score == "energy":
        _reduce(helper, nodes, "ReduceLogSumExp", logits_name, PREFIX + "lse", opset, 0)
        nodes.append(helper.make_node("Neg", [PREFIX + "lse"], [SCORE_OUTPUT], name=PREFIX + "neg"))
    elif score in ("mahalanobis", "mahalanobis+energy"):
        # (f - mu_c)^T P (f - mu_c) = |L^T f|^2 - 2 (L^T f).(L^T mu_c) + |L^T mu_c|^2 with P = L L^T: two MatMuls
        means = stats["means"].astype(np.float64)
        precision = stats["precision"].astype(np.float64)
        chol = np.linalg.cholesky(precision)  # (D, D), lower
        projected_means = means @ chol  # (C, D): rows L^T mu_c
        inits["chol"] = chol.astype(np.float32)
        inits["cross"] = (-2.0 * projected_means.T).astype(np.float32)  # (D, C)
        inits["offset"] = (projected_means ** 2).sum(1).astype(np.float32)  # (C,)
        # means and precision are not stored twice: stored_statistics() gives them back from these three
        # min_c (|h|^2 + h.cross_c + offset_c) = |h|^2 + min_c (h.cross_c + offset_c): five nodes in all
        nodes.append(helper.make_node("MatMul", [f, PREFIX + "chol"], [PREFIX + "h"], name=PREFIX + "project"))
        _reduce(helper, nodes, "ReduceSumSquare", PREFIX + "h", PREFIX + "norm", opset, 0)
        nodes.append(helper.make_node("Gemm", [PREFIX + "h", PREFIX + "cross", PREFIX + "offset"], [PREFIX + "distances"],
                                      name=PREFIX + "distances"))
        _reduce(helper, nodes, "ReduceMin", PREFIX + "distances", PREFIX + "nearest", opset, 0)
        combined = score == "mahalanobis+energy"
        distance = PREFIX + "mahalanobis" if combined else SCORE_OUTPUT
        nodes.append(helper.make_node("Add", [PREFIX + "nearest", PREFIX + "norm"], [distance], name=PREFIX + "add"))
        if combined:  # d / s1 - lse / s2 - (m1 / s1 + m2 / s2), with energy = -lse
            mean, std = stats["z_mean"].astype(np.float64), stats["z_std"].astype(np.float64)
            inits["z_scale"] = np.array(1 / std[0], np.float32)
            inits["lse_scale"] = np.array(-1 / std[1], np.float32)
            inits["z_bias"] = np.array(-(mean[0] / std[0] + mean[1] / std[1]), np.float32)
            _reduce(helper, nodes, "ReduceLogSumExp", logits_name, PREFIX + "lse", opset, 0)
            nodes += [helper.make_node("Mul", [distance, PREFIX + "z_scale"], [PREFIX + "z_d"], name=PREFIX + "z_d"),
                      helper.make_node("Mul", [PREFIX + "lse", PREFIX + "lse_scale"], [PREFIX + "z_e"], name=PREFIX + "z_e"),
                      helper.make_node("Add", [PREFIX + "z_d", PREFIX + "z_e"], [PREFIX + "z_sum"], name=PREFIX + "z_sum"),
                      helper.make_node("Add", [PREFIX + "z_sum", PREFIX + "z_bias"], [SCORE_OUTPUT], name=PREFIX + "z_out")]
    elif score == "knn":
        k = min(KNN_K, len(stats["bank"]))
        inits["bank_t"] = stats["bank"].astype(np.float32).T.copy()  # (D, M), rows normalised
        inits["k"] = np.array([k], dtype=np.int64)
        nodes += [helper.make_node("LpNormalization", [f], [PREFIX + "z"], axis=1, p=2, name=PREFIX + "normalise"),
                  helper.make_node("MatMul", [PREFIX + "z", PREFIX + "bank_t"], [PREFIX + "sim"], name=PREFIX + "similarity"),
                  helper.make_node("TopK", [PREFIX + "sim", PREFIX + "k"], [PREFIX + "topk", PREFIX + "topk_index"],
                                   axis=1, largest=1, sorted=1, name=PREFIX + "topk")]
        _reduce(helper, nodes, "ReduceMin", PREFIX + "topk", PREFIX + "kth", opset, 0)
        nodes.append(helper.make_node("Neg", [PREFIX + "kth"], [SCORE_OUTPUT], name=PREFIX + "neg"))
    else:
        raise UserError(f"unknown score {score!r}; choose one of {', '.join(SCORES)}")
    graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    graph.initializer.extend(numpy_helper.from_array(v, PREFIX + k) for k, v in inits.items() if PREFIX + k in used)
    graph.output.extend([helper.make_tensor_value_info(FEATURES_OUTPUT, TensorProto.FLOAT, ["batch", "features"]),
                         helper.make_tensor_value_info(SCORE_OUTPUT, TensorProto.FLOAT, ["batch"])])
    onnx.checker.check_model(model)


def _rename_tensor(graph, old: str, new: str) -> None:
    for node in graph.node:
        for names in (node.input, node.output):
            for i, name in enumerate(names):
                if name == old:
                    names[i] = new
    for info in list(graph.value_info) + list(graph.output):
        if info.name == old:
            info.name = new


def remove_score_graph(model) -> None:
    """Drop what add_score_graph added (nodes, initializers, outputs)."""
    graph = model.graph
    keep_nodes = [n for n in graph.node if not n.name.startswith(PREFIX)]
    keep_inits = [i for i in graph.initializer if not i.name.startswith(PREFIX)]
    keep_outputs = [o for o in graph.output if o.name not in (FEATURES_OUTPUT, SCORE_OUTPUT)]
    for container, kept in ((graph.node, keep_nodes), (graph.initializer, keep_inits), (graph.output, keep_outputs)):
        kept = [type(x).FromString(x.SerializeToString()) for x in kept]
        del container[:]
        container.extend(kept)


def stored_statistics(model) -> dict[str, np.ndarray]:
    """The ``unsure.*`` initializers of a model, by short name (chol, cross, offset, bank_t, ...); for the
    Mahalanobis score also the class means and the precision they encode (P = L L^T, mu_c = -cross_c L^-1 / 2)."""
    from onnx import numpy_helper

    stats = {i.name[len(PREFIX):]: numpy_helper.to_array(i) for i in model.graph.initializer if i.name.startswith(PREFIX)}
    if "chol" in stats and "cross" in stats:
        chol = stats["chol"].astype(np.float64)
        stats["precision"] = chol @ chol.T
        stats["means"] = np.linalg.solve(chol.T, -stats["cross"].astype(np.float64) / 2).T  # rows mu_c
    return stats


def set_metadata(model, spec: UnsureSpec) -> None:
    import json

    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            prop.value = json.dumps(spec.to_json())
            return
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(spec.to_json())
