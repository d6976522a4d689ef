"""Claim 1: a network no wider than its input cannot enclose a bounded region; a residual one can.

Proposition (Lin & Jegelka 2018, after Hanin & Sellke): if every hidden layer of a fully connected
ReLU net f: R^d -> R has at most d units, the set {z : f(z) > 0} has Lebesgue measure 0 or infinity.
A residual net z_{k+1} = z_k + V_k relu(U_k z_k + b_k) with ONE hidden unit per block escapes this.

The task (2-D, as in the write-up): label +1 where ||z|| <= 1, -1 where 2 <= ||z|| <= 3, nothing in
between; logistic loss (1/n) sum log(1 + exp(-y f(z))). Compared, for depths 1..5:
- plain:    h_{k+1} = relu(W_k h_k + b_k), 2 units per hidden layer, f = a . h_K + c
- residual: z_{k+1} = z_k + V_k relu(U_k z_k + b_k), U_k 1x2, V_k 2x1, f = a . z_K + c

Accuracy can hide the claim (a plain net reaches ~98% by letting its positive region leak out through
a thin strip across the ring), so boundedness is tested directly: the share of positive predictions
on circles of radius 5, 10 and 100, sampled every ``arc_step`` along the arc.

Pure numpy (hand-written backward pass, checked against finite differences in the tests), no torch:
every net of one architecture and depth (seeds x restarts of them) trains at once as one batch of
independent parameter sets, full-batch Adam. :func:`run_narrow` takes a progress callback and returns
arrays plus figure builders, for the command line and for a GUI tab alike.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from ..errors import UserError
from .common import KINDS

# progress(done, total, message); return False to stop (run_narrow then raises NarrowCancelled)
Progress = Callable[[int, int, str], "bool | None"]


@dataclass
class NarrowConfig:
    depths: tuple[int, ...] = (1, 2, 3, 4, 5)  # hidden layers (plain) / residual blocks (residual)
    plain_width: int = 2  # units per hidden layer of the plain net; <= 2 (the input's dimension) is the claim
    residual_width: int = 1  # hidden units inside each residual block: U is (width, 2), V is (2, width)
    seed: int = 0  # first seed; repeats use seed, seed+1, ... (fresh data and weights each)
    seeds: int = 5  # independent repeats, for mean and spread
    restarts: int = 4  # inits per seed and net; the lowest final TRAINING loss is kept (same rule for both)
    n_train: int = 512  # training points, half in the disk (+1) and half in the ring (-1), uniform by area
    n_test: int = 2048  # test points from the same distribution
    steps: int = 4000  # full-batch Adam steps
    lr: float = 0.02  # Adam peak step size; cosine decay to lr/100 over the steps
    radii: tuple[float, ...] = (5.0, 10.0, 100.0)  # circles where boundedness is tested (data radius is 3)
    arc_step: float = 0.01  # spacing of test points along each circle: leaks wider than this are seen
    accurate: float = 0.99  # test accuracy that counts as "accurate"
    window: float = 6.0  # half-width of the boundary plots: twice the data's radius, to see leaks
    grid: int = 241  # boundary-plot grid points per side


class NarrowCancelled(Exception):
    """The progress callback returned False."""


# ---------------------------------------------------------------------------------------------------
# Data


def sample_points(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(z (n, 2), y (n,) in {+1, -1}): half uniform in the unit disk, half uniform in the ring 2..3."""
    n_pos = n // 2
    # uniform by area: radius = sqrt(uniform over [r_in^2, r_out^2])
    r_pos = np.sqrt(rng.uniform(0.0, 1.0, n_pos))
    r_neg = np.sqrt(rng.uniform(4.0, 9.0, n - n_pos))
    radius = np.concatenate([r_pos, r_neg])
    angle = rng.uniform(0.0, 2 * np.pi, n)
    z = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    y = np.concatenate([np.ones(n_pos), -np.ones(n - n_pos)])
    return z, y


def circle_points(radius: float, arc_step: float) -> np.ndarray:
    """(P, 2) points on the circle of ``radius``, ``arc_step`` apart along the arc."""
    count = max(64, math.ceil(2 * math.pi * radius / arc_step))
    angle = np.linspace(0.0, 2 * np.pi, count, endpoint=False)
    return radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)


# ---------------------------------------------------------------------------------------------------
# M independent nets of one architecture, trained as one batch


class BatchedNets:
    """M nets of one kind and depth. All parameters are views into one flat vector (one Adam update).

    Shapes (M nets, n points): inputs (M, n, 2) or (n, 2); plain layer k: W (M, out, in), b (M, out);
    residual block k: U (M, h, 2), b (M, h), V (M, 2, h); head: a (M, last width), c (M,).
    """

    def __init__(self, kind: str, depth: int, width: int, count: int, rng: np.random.Generator) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind, self.depth, self.width, self.count = kind, depth, width, count
        shapes: list[tuple[str, tuple[int, ...], int]] = []  # (name, shape without M, fan_in for the init)
        fan = 2
        for k in range(depth):
            if kind == "plain":
                shapes += [(f"W{k}", (width, fan), fan), (f"b{k}", (width,), fan)]
                fan = width
            else:
                shapes += [(f"U{k}", (width, 2), 2), (f"b{k}", (width,), 2), (f"V{k}", (2, width), width)]
        shapes += [("a", (fan,), fan), ("c", (), fan)]
        sizes = [count * int(np.prod(shape)) for _, shape, _ in shapes]
        self.flat = np.empty(sum(sizes))
        self.params: dict[str, np.ndarray] = {}
        offset = 0
        for (name, shape, fan_in), size in zip(shapes, sizes):
            view = self.flat[offset : offset + size].reshape((count, *shape))
            # torch.nn.Linear's default: uniform(+-1/sqrt(fan_in)) for weights and biases
            view[...] = rng.uniform(-1.0, 1.0, view.shape) / math.sqrt(fan_in)
            self.params[name] = view
            offset += size
        self._slices = [(name, self.params[name].shape) for name, _, _ in shapes]

    def forward(self, z: np.ndarray) -> tuple[np.ndarray, list]:
        """f (M, n) and what backward needs."""
        p = self.params
        h = np.broadcast_to(z, (self.count, *z.shape[-2:])) if z.ndim == 2 else z  # (M, n, 2)
        cache = []
        for k in range(self.depth):
            if self.kind == "plain":
                pre = h @ p[f"W{k}"].swapaxes(1, 2) + p[f"b{k}"][:, None, :]  # (M, n, width)
                cache.append((h, pre))
                h = np.maximum(pre, 0.0)
            else:
                pre = h @ p[f"U{k}"].swapaxes(1, 2) + p[f"b{k}"][:, None, :]  # (M, n, h)
                s = np.maximum(pre, 0.0)
                cache.append((h, pre, s))
                h = h + s @ p[f"V{k}"].swapaxes(1, 2)  # (M, n, 2): the identity plus a rank-`width` step
        cache.append(h)
        f = (h @ p["a"][:, :, None])[..., 0] + p["c"][:, None]  # (M, n)
        return f, cache

    def backward(self, cache: list, grad_f: np.ndarray) -> np.ndarray:
        """d(loss)/d(parameters) as one flat vector (same layout as ``self.flat``), given dL/df (M, n)."""
        p = self.params
        grads: dict[str, np.ndarray] = {}
        h_last = cache[-1]
        grads["a"] = (grad_f[:, None, :] @ h_last)[:, 0, :]  # (M, 1, n) @ (M, n, w) -> (M, w)
        grads["c"] = grad_f.sum(1)
        grad_h = grad_f[:, :, None] * p["a"][:, None, :]  # (M, n, w)
        for k in reversed(range(self.depth)):
            if self.kind == "plain":
                h_in, pre = cache[k]
                grad_pre = grad_h * (pre > 0)
                grads[f"W{k}"] = grad_pre.swapaxes(1, 2) @ h_in  # (M, out, n) @ (M, n, in)
                grads[f"b{k}"] = grad_pre.sum(1)
                grad_h = grad_pre @ p[f"W{k}"]  # (M, n, in)
            else:
                z_in, pre, s = cache[k]
                grads[f"V{k}"] = grad_h.swapaxes(1, 2) @ s  # (M, 2, n) @ (M, n, h)
                grad_pre = (grad_h @ p[f"V{k}"]) * (pre > 0)  # (M, n, h)
                grads[f"U{k}"] = grad_pre.swapaxes(1, 2) @ z_in  # (M, h, n) @ (M, n, 2)
                grads[f"b{k}"] = grad_pre.sum(1)
                grad_h = grad_h + grad_pre @ p[f"U{k}"]  # the shortcut passes grad_h through unchanged
        return np.concatenate([grads[name].reshape(-1) for name, _ in self._slices])

    def select(self, index: np.ndarray) -> "BatchedNets":
        """A new BatchedNets holding copies of nets ``index`` (e.g. the best restart of each seed)."""
        picked = object.__new__(BatchedNets)
        picked.kind, picked.depth, picked.width, picked.count = self.kind, self.depth, self.width, len(index)
        arrays = [self.params[name][index] for name, _ in self._slices]
        picked.flat = np.concatenate([a.reshape(-1) for a in arrays])
        picked.params, offset = {}, 0
        for (name, _), array in zip(self._slices, arrays):
            picked.params[name] = picked.flat[offset : offset + array.size].reshape(array.shape)
            offset += array.size
        picked._slices = [(name, picked.params[name].shape) for name, _ in self._slices]
        return picked


def logistic_loss(f: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-net mean log(1 + exp(-y f)) (M,) and its gradient dL/df (M, n); stable for any f."""
    margin = y * f
    loss = np.logaddexp(0.0, -margin).mean(axis=-1)
    sigmoid_neg = 0.5 * (1.0 - np.tanh(0.5 * margin))  # sigmoid(-margin) without overflow
    return loss, -y * sigmoid_neg / f.shape[-1]


def train_nets(nets: BatchedNets, z: np.ndarray, y: np.ndarray, config: NarrowConfig,
               on_step: Callable[[int], None] | None = None) -> np.ndarray:
    """Full-batch Adam on the sum of the nets' losses (each net sees only its own gradient).
    ``z`` (M, n, 2), ``y`` (M, n). Returns the final per-net training loss (M,)."""
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    m = np.zeros_like(nets.flat)
    v = np.zeros_like(nets.flat)
    for step in range(1, config.steps + 1):
        f, cache = nets.forward(z)
        _, grad_f = logistic_loss(f, y)
        grad = nets.backward(cache, grad_f)
        lr = config.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (step - 1) / config.steps)))
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad * grad
        m_hat = m / (1 - beta1**step)
        v_hat = v / (1 - beta2**step)
        nets.flat -= lr * m_hat / (np.sqrt(v_hat) + eps)  # in place: the parameter views follow
        if on_step is not None:
            on_step(step)
    loss, _ = logistic_loss(nets.forward(z)[0], y)
    return loss


# ---------------------------------------------------------------------------------------------------
# The experiment


@dataclass
class NetResult:
    kind: str  # "plain" or "residual"
    depth: int  # hidden layers / residual blocks
    seed: int  # data and init seed
    restart: int  # which of the restarts had the lowest training loss (the one kept)
    train_loss: float  # final logistic loss on the training points
    train_acc: float  # share of training points on the right side of f = 0
    test_acc: float  # same on fresh test points
    positive_share: dict[float, float]  # circle radius -> share of its points with f > 0
    bounded: bool  # no positive prediction on any test circle
    empty: bool  # no positive prediction on any test point either (the "measure 0" case)
    success: bool  # bounded, not empty, and test accuracy >= config.accurate


@dataclass
class NarrowResult:
    config: NarrowConfig
    nets: list[NetResult]  # one per (kind, depth, seed)
    grid: np.ndarray  # (G,) coordinates of the boundary-plot grid, both axes
    fields: dict[tuple[str, int], np.ndarray]  # (kind, depth) -> f on the grid (G, G), rows = y, first seed
    train_z: np.ndarray  # (n, 2) the first seed's training points
    train_y: np.ndarray  # (n,) their labels (+1 / -1)
    seconds: float  # wall time of the run

    def of(self, kind: str, depth: int) -> list[NetResult]:
        return [net for net in self.nets if net.kind == kind and net.depth == depth]

    def summary(self) -> list[dict]:
        """Per (kind, depth): test accuracy mean/std/min over seeds, boundedness counts, circle shares."""
        rows = []
        for kind in KINDS:
            for depth in self.config.depths:
                nets = self.of(kind, depth)
                acc = np.array([n.test_acc for n in nets])
                row = {"net": kind, "depth": depth, "seeds": len(nets),
                       "test_acc_mean": float(acc.mean()), "test_acc_std": float(acc.std()),
                       "test_acc_min": float(acc.min()), "train_acc_mean": float(np.mean([n.train_acc for n in nets])),
                       "bounded": sum(n.bounded and not n.empty for n in nets), "empty": sum(n.empty for n in nets),
                       "success": sum(n.success for n in nets)}
                for radius in self.config.radii:
                    row[f"positive_share_r{radius:g}"] = float(np.mean([n.positive_share[radius] for n in nets]))
                rows.append(row)
        return rows

    def verdict(self) -> dict:
        """Holds when no plain net encloses a bounded non-empty region and, at every residual depth >= 2,
        most seeds give a bounded region with test accuracy >= ``accurate``."""
        plain = [n for n in self.nets if n.kind == "plain"]
        plain_bounded = sum(n.bounded and not n.empty for n in plain)
        deep = [d for d in self.config.depths if d >= 2]
        residual_ok = {d: sum(n.success for n in self.of("residual", d)) for d in deep}
        seeds = self.config.seeds
        holds = plain_bounded == 0 and bool(deep) and all(count > seeds / 2 for count in residual_ok.values())
        leak = [n.test_acc for n in plain if not n.bounded]
        text = (f"plain nets ({self.config.plain_width} units/layer): {plain_bounded}/{len(plain)} enclose a bounded "
                f"non-empty region, {sum(n.empty for n in plain)} predict nothing positive"
                + (f", the leaking ones still score {100 * min(leak):.1f}-{100 * max(leak):.1f}% test accuracy" if leak else "")
                + f"; residual nets ({self.config.residual_width} unit/block), bounded and >= "
                f"{100 * self.config.accurate:g}% accurate: "
                + ", ".join(f"depth {d} {c}/{seeds}" for d, c in residual_ok.items()))
        return {"claim": "a net no wider than its input (plain, 2 units on 2-D) cannot enclose a bounded region; "
                         "a residual net with 1 unit per block can",
                "holds": holds, "measured": text}

    def to_json(self) -> dict:
        return {"config": asdict(self.config), "seconds": self.seconds, "summary": self.summary(),
                "verdict": self.verdict(),
                "nets": [asdict(n) for n in self.nets]}

    # --- figures (matplotlib Figure objects, no pyplot: embeddable in Qt via FigureCanvasQTAgg) ---

    def boundary_figure(self):
        """Grid like the write-up's: top row plain, bottom row residual, depth 1..N left to right; the
        first column holds the true boundary (top) and a key (bottom). Window wider than the data."""
        from matplotlib.colors import ListedColormap
        from matplotlib.figure import Figure

        depths = self.config.depths
        cols = len(depths) + 1
        fig = Figure(figsize=(2.6 * cols, 5.9), layout="constrained")
        axes = fig.subplots(2, cols, squeeze=False)
        w = self.config.window
        extent = (-w, w, -w, w)
        cmap = ListedColormap(["#d6e4f0", "#f6c89f"])  # negative blue-grey, positive orange
        theta = np.linspace(0, 2 * np.pi, 200)

        def rings(ax) -> None:
            for r in (1, 2, 3):
                ax.plot(r * np.cos(theta), r * np.sin(theta), color="0.35", lw=0.7, ls="--")
            ax.set_xlim(-w, w)
            ax.set_ylim(-w, w)
            ax.set_aspect("equal")
            ax.set_xticks([-w, 0, w])
            ax.set_yticks([-w, 0, w])
            ax.tick_params(labelsize=7)

        truth = (np.hypot(*np.meshgrid(self.grid, self.grid)) <= 1.5).astype(float)  # any boundary in the gap
        ax = axes[0, 0]
        ax.imshow(truth, origin="lower", extent=extent, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        pos = self.train_y > 0
        ax.scatter(*self.train_z[pos].T, s=2, color="#c0392b", lw=0)
        ax.scatter(*self.train_z[~pos].T, s=2, color="#2c5f8a", lw=0)
        rings(ax)
        ax.set_title("true boundary + training data", fontsize=8)
        key = axes[1, 0]
        key.axis("off")
        radii = ", ".join(f"{r:g}" for r in self.config.radii)
        key.text(0.0, 0.5, "orange: f(z) > 0 (predicted +1)\nblack line: f(z) = 0\ndashed: ||z|| = 1, 2, 3\n"
                           f"window +-{w:g} (data within 3)\n\n'bounded': no f > 0 on\ncircles r = {radii}\n"
                           f"'leaks': share of circle\nr = {max(self.config.radii):g} with f > 0\n\n"
                           f"seed {self.config.seed} shown", fontsize=7.5, va="center", transform=key.transAxes)
        for row, kind in enumerate(KINDS):
            width = self.config.plain_width if kind == "plain" else self.config.residual_width
            for col, depth in enumerate(depths, start=1):
                ax = axes[row, col]
                values = self.fields[(kind, depth)]
                ax.imshow((values > 0).astype(float), origin="lower", extent=extent, cmap=cmap, vmin=0, vmax=1,
                          interpolation="nearest")
                if values.min() < 0 < values.max():
                    ax.contour(self.grid, self.grid, values, levels=[0.0], colors="k", linewidths=1.0)
                rings(ax)
                net = next(n for n in self.of(kind, depth) if n.seed == self.config.seed)
                r_max = max(self.config.radii)
                state = ("empty" if net.empty else "bounded" if net.bounded
                         else f"leaks {100 * net.positive_share[r_max]:.2g}%")
                ax.set_title(f"{kind} depth {depth} ({width}/layer)\ntest {100 * net.test_acc:.1f}%, {state}",
                             fontsize=8, color="k" if net.success else "#a33")
        fig.suptitle("Decision regions of narrow nets (top: plain, 2 units per layer; bottom: residual, 1 unit per block)",
                     fontsize=10)
        return fig

    def summary_figure(self):
        """Test accuracy, leak size (positive share on the largest circle) and success rate against depth,
        every seed as a dot, mean as a line."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(12, 3.6), layout="constrained")
        ax_acc, ax_leak, ax_ok = fig.subplots(1, 3)
        depths = np.array(self.config.depths)
        r_max = max(self.config.radii)
        colors = {"plain": "#c0392b", "residual": "#2c5f8a"}
        for offset, kind in zip((-0.08, 0.08), KINDS):
            label = f"{kind} ({self.config.plain_width if kind == 'plain' else self.config.residual_width}/layer)"
            acc = np.array([[n.test_acc for n in self.of(kind, d)] for d in depths])  # (depths, seeds)
            leak = np.array([[n.positive_share[r_max] for n in self.of(kind, d)] for d in depths])
            ok = np.array([np.mean([n.success for n in self.of(kind, d)]) for d in depths])
            for ax, values in ((ax_acc, 100 * acc), (ax_leak, 100 * leak)):
                ax.plot(depths + offset, values.mean(1), color=colors[kind], marker="o", label=label)
                ax.scatter(np.repeat(depths + offset, values.shape[1]), values.reshape(-1), s=9, color=colors[kind],
                           alpha=0.45, lw=0)
            ax_ok.plot(depths + offset, 100 * ok, color=colors[kind], marker="o", label=label)
        ax_acc.set(xlabel="depth", ylabel="test accuracy (%)", title="Accuracy (dots: seeds)")
        ax_leak.set(xlabel="depth", ylabel=f"share of circle r={r_max:g} with f>0 (%)",
                    title="Leak: positive region reaching far out")
        ax_leak.set_yscale("symlog", linthresh=0.1)
        ax_ok.set(xlabel="depth", ylabel="seeds (%)", ylim=(-5, 105),
                  title=f"Bounded and >= {100 * self.config.accurate:g}% accurate")
        for ax in (ax_acc, ax_leak, ax_ok):
            ax.set_xticks(depths)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        return fig


def _evaluate(nets: BatchedNets, z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-net accuracy (M,) with f > 0 read as +1; ``z`` (M, n, 2) or (n, 2)."""
    f, _ = nets.forward(z)
    return ((f > 0) == (y > 0)).mean(axis=-1)


def run_narrow(config: NarrowConfig | None = None, progress: Progress | None = None) -> NarrowResult:
    """Train plain and residual narrow nets at every depth over ``config.seeds`` seeds; measure accuracy
    and boundedness; keep the first seed's decision fields for the plots. Deterministic per config."""
    config = config or NarrowConfig()
    if not config.depths or min(config.depths) < 1:
        raise UserError("--depths must be at least 1")
    if min(config.seeds, config.restarts, config.steps, config.plain_width, config.residual_width) < 1 \
            or config.n_train < 4 or config.n_test < 2:
        raise UserError("--seeds, --restarts, --steps and the widths must be at least 1, --n-train at least 4")
    started = time.perf_counter()
    seeds = [config.seed + i for i in range(config.seeds)]
    data = [sample_points(config.n_train, np.random.default_rng([s, 0])) for s in seeds]
    tests = [sample_points(config.n_test, np.random.default_rng([s, 1])) for s in seeds]
    # net j = seed (j // restarts), restart (j % restarts): data repeated for each restart
    z_train = np.repeat(np.stack([z for z, _ in data]), config.restarts, axis=0)  # (M, n, 2)
    y_train = np.repeat(np.stack([y for _, y in data]), config.restarts, axis=0)  # (M, n)
    z_test = np.stack([z for z, _ in tests])  # (S, n_test, 2)
    y_test = np.stack([y for _, y in tests])
    circles = {r: circle_points(r, config.arc_step) for r in config.radii}
    grid = np.linspace(-config.window, config.window, config.grid)
    gx, gy = np.meshgrid(grid, grid)  # rows follow y: imshow(origin="lower") puts y up
    grid_points = np.stack([gx.ravel(), gy.ravel()], axis=1)

    total = len(KINDS) * len(config.depths) * config.steps
    done = 0
    nets_out: list[NetResult] = []
    fields: dict[tuple[str, int], np.ndarray] = {}
    for kind in KINDS:
        width = config.plain_width if kind == "plain" else config.residual_width
        for depth in config.depths:
            message = f"{kind} depth {depth}"

            def on_step(step: int, _base: int = done, _message: str = message) -> None:
                if progress is not None and (step % 100 == 0 or step == config.steps):
                    if progress(_base + step, total, _message) is False:
                        raise NarrowCancelled(_message)

            rng = np.random.default_rng([config.seed, depth, KINDS.index(kind), 7])
            nets = BatchedNets(kind, depth, width, len(seeds) * config.restarts, rng)
            loss = train_nets(nets, z_train, y_train, config, on_step)
            done += config.steps
            # the best restart per seed, by training loss only
            best = loss.reshape(len(seeds), config.restarts).argmin(1)
            picked = nets.select(np.arange(len(seeds)) * config.restarts + best)
            train_acc = _evaluate(picked, z_train[:: config.restarts], y_train[:: config.restarts])
            test_acc = _evaluate(picked, z_test, y_test)
            test_positive = (picked.forward(z_test)[0] > 0).any(axis=1)  # (S,)
            shares = {r: (picked.forward(points)[0] > 0).mean(axis=1) for r, points in circles.items()}  # r -> (S,)
            fields[(kind, depth)] = picked.select(np.array([0])).forward(grid_points)[0][0].reshape(gx.shape)
            for i, seed in enumerate(seeds):
                share = {r: float(shares[r][i]) for r in config.radii}
                bounded = all(v == 0 for v in share.values())
                nets_out.append(NetResult(
                    kind=kind, depth=depth, seed=seed, restart=int(best[i]),
                    train_loss=float(loss.reshape(len(seeds), -1)[i, best[i]]), train_acc=float(train_acc[i]),
                    test_acc=float(test_acc[i]), positive_share=share, bounded=bounded,
                    empty=not bool(test_positive[i]),
                    success=bounded and bool(test_positive[i]) and test_acc[i] >= config.accurate))
    return NarrowResult(config=config, nets=nets_out, grid=grid, fields=fields, train_z=data[0][0],
                        train_y=data[0][1], seconds=time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------------
# Command line: files and a table


def format_summary(result: NarrowResult) -> str:
    from .common import format_table

    header = ["net", "depth", "test acc mean", "+- std", "min", *(f"f>0 @r={r:g}" for r in result.config.radii),
              "bounded", "bounded+acc"]
    rows = []
    for row in result.summary():
        rows.append([row["net"], row["depth"], f"{100 * row['test_acc_mean']:.2f}%", f"{100 * row['test_acc_std']:.2f}",
                     f"{100 * row['test_acc_min']:.2f}%",
                     *(f"{100 * row[f'positive_share_r{r:g}']:.3g}%" for r in result.config.radii),
                     f"{row['bounded']}/{row['seeds']}", f"{row['success']}/{row['seeds']}"])
    return format_table(header, rows)


def write_narrow(result: NarrowResult, out, force: bool = True) -> dict[str, str]:
    """results.json, nets.csv (one row per net), boundaries.png, summary.png in ``out`` (the figures only where
    matplotlib is installed)."""
    from pathlib import Path

    from .common import have_matplotlib, save_figure, write_csv, write_json

    out = Path(out)
    csv_rows = []
    for n in result.nets:
        row = {"net": n.kind, "depth": n.depth, "seed": n.seed, "restart": n.restart, "train_loss": n.train_loss,
               "train_acc": n.train_acc, "test_acc": n.test_acc}
        row |= {f"positive_share_r{r:g}": n.positive_share[r] for r in result.config.radii}
        row |= {"bounded": n.bounded, "empty": n.empty, "success": n.success}
        csv_rows.append(row)
    paths = {"results": out / "results.json", "nets": out / "nets.csv"}
    if have_matplotlib():
        paths |= {"boundaries": out / "boundaries.png", "summary": out / "summary.png"}
        save_figure(result.boundary_figure(), paths["boundaries"], force)
        save_figure(result.summary_figure(), paths["summary"], force)
    write_csv(paths["nets"], csv_rows, force)
    write_json(paths["results"], {"experiment": "narrow", **result.to_json(),
                                  "files": {k: str(v) for k, v in paths.items()}}, force)
    return {k: str(v) for k, v in paths.items()}
