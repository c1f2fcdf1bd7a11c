"""What the values of an ONNX graph compute: a small, bounded dataflow matcher that norm patterns are built from.

A decomposed norm is recognised by the meaning of its values, whatever ops spell them:

    mean(x, A)        ReduceMean(x, A) | ReduceSum(x, A) * (1/n) | ReduceSum(x, A) / n
    square(x)         Pow(x, 2) | Mul(x, x)
    centred(x, A)     x - mean(x, A) | x + Neg(mean(x, A))
    second moment     mean(square(centred(x))) (variance) | mean(x²) - mean(x)² (variance) |
                      mean(square(x)) (mean square, RMSNorm) | ReduceSumSquare(.) / n

and everything after ``v + eps`` (root, reciprocal root, power -1/2, scaling, shifting, in any order of
inputs) is evaluated as a small polynomial over four atoms: x, mean(x), u = (v + eps) and the graph's
constants (:class:`Sym`).  A value is a norm's output when its polynomial is ``w·(x - mean)·u^-1/2 + b``
(LayerNorm) or ``w·x·u^-1/2`` (RMSNorm), with ``w`` (or ``1 + w``) and ``b`` constants.  Cast / CastLike /
Identity are transparent everywhere; Reshape / Flatten / (Un)squeeze are transparent between the statistics
and the output.  Every walk is bounded (hostile graphs may loop or be huge).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from ...facts.onnx import LAYOUT_OPS
from .graph import MAX_HOPS, PASS_THROUGH, Const, OnnxGraph, attr

MAX_TERMS = 8  # terms of a polynomial worth tracking (a norm's output has at most 3)
MAX_EVAL = 400  # values one symbolic evaluation may visit
MAX_EVAL_DEPTH = 32  # producers followed back from one value
MAX_FORWARD = 64  # nodes visited after the eps Add looking for the norm's output
MAX_FORWARD_DEPTH = 16

ALGEBRA_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Neg", "Reciprocal", "Sqrt", "Pow"})
FORWARD_OPS = ALGEBRA_OPS | frozenset(PASS_THROUGH) | LAYOUT_OPS


# -- statistics ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mean:
    """``mean(x)`` over ``axes``: x is the value averaged (casts stripped)."""

    x: str
    axes: tuple[int, ...]
    nodes: tuple[Any, ...]
    squared: bool = False  # ReduceSumSquare: the mean of x²
    note: str = ""


@dataclass
class Moment:
    """A second moment of ``x`` over ``axes``: the variance (``centred``) or the mean square."""

    centred: bool
    x: str  # the value the statistics are taken of (casts stripped)
    raw: str  # the same value as the first statistics op reads it (activation capture)
    axes: tuple[int, ...]
    centre_nodes: list[Any]  # mean + centring (variance only)
    reduce_nodes: list[Any]  # the second-moment reduction
    notes: list[str] = field(default_factory=list)


class Flow:
    """Value-level questions about one graph ("is this value the mean of x over A?")."""

    def __init__(self, g: OnnxGraph) -> None:
        self.g = g

    def strip(self, v: str) -> str:
        """The value behind Identity / Cast / CastLike."""
        for _ in range(MAX_HOPS):
            node = self.g.producer.get(v)
            if node is None or node.op_type not in PASS_THROUGH or not node.input:
                return v
            v = node.input[0]
        return v

    def node(self, v: str) -> Any | None:
        return self.g.producer.get(self.strip(v))

    def same_axes(self, a: tuple[int, ...], b: tuple[int, ...], x: str) -> bool:
        if a == b:
            return True
        r = self.g.rank(x)
        return r is not None and r > 0 and {i % r for i in a} == {i % r for i in b}

    def _reduce_axes(self, node: Any) -> tuple[int, ...] | None:
        axes = self.g.axes_arg(node)
        if axes is None and attr(node, "noop_with_empty_axes", 0) == 0 and (len(node.input) < 2 or not node.input[1]):
            r = self.g.rank(node.input[0])  # no axes: every axis
            axes = tuple(range(r)) if r is not None else None
        return axes

    def _count(self, x: str, axes: tuple[int, ...]) -> int | None:
        """Elements one reduction over ``axes`` of ``x`` averages, when the shape is known."""
        dims = self.g.dims(x)
        if dims is None or not dims[1]:
            return None
        r = len(dims[0])
        try:
            sizes = [dims[0][a % r] for a in axes] if r else []
        except ZeroDivisionError:
            return None
        return int(np.prod(sizes)) if sizes and None not in sizes else None

    def _is_count(self, v: str, depth: int = 0) -> bool:
        """Whether ``v`` is computed only from shapes and constants (tf2onnx's element count for a mean:
        Cast(ReduceProd(Gather(Shape(x), axes))))."""
        node = self.node(v)
        if node is None or depth > 8:
            return False
        if node.op_type in ("Shape", "Size"):
            return True
        if node.op_type in ("Gather", "ReduceProd", "Mul", "Squeeze", "Unsqueeze", "Slice", "Concat"):
            ins = [i for i in node.input if i]
            return bool(ins) and self._is_count(ins[0], depth + 1) and all(
                self.g.const(i) is not None or self._is_count(i, depth + 1) for i in ins[1:])
        return False

    def mean(self, v: str) -> Mean | None:
        """``v`` as the mean of some value over some axes, or None."""
        node = self.node(v)
        if node is None or not node.input:
            return None
        if node.op_type == "ReduceMean":
            axes = self._reduce_axes(node)
            return Mean(self.strip(node.input[0]), axes, (node,)) if axes is not None else None
        if node.op_type not in ("Mul", "Div") or len(node.input) != 2:
            return None
        for i, j in ((0, 1), (1, 0)) if node.op_type == "Mul" else ((0, 1),):
            red = self.node(node.input[i])
            if red is None or red.op_type not in ("ReduceSum", "ReduceSumSquare") or not red.input:
                continue
            axes = self._reduce_axes(red)
            x = self.strip(red.input[0])
            if axes is None:
                return None
            squared = red.op_type == "ReduceSumSquare"
            s = self.g.scalar(node.input[j])
            n = self._count(x, axes)
            if s is None:
                if node.op_type == "Div" and self._is_count(node.input[j]):
                    return Mean(x, axes, (red, node), squared, "sum divided by the element count")
                return None
            factor = s[0] if node.op_type == "Mul" else (1.0 / s[0] if s[0] else 0.0)
            if n is not None:
                if not np.isclose(factor * n, 1.0, rtol=1e-5):
                    return None
                return Mean(x, axes, (red, node), squared)
            return Mean(x, axes, (red, node), squared,
                        f"{red.op_type} scaled by {factor:g} taken as the mean (the element count is not declared)")
        return None

    def square(self, v: str) -> tuple[str, str] | None:
        """``v`` as x² (Pow(x, 2) or Mul(x, x)): (x with casts stripped, x as the op reads it)."""
        node = self.node(v)
        if node is None or len(node.input) != 2:
            return None
        if node.op_type == "Pow":
            s = self.g.scalar(node.input[1])
            if s is not None and s[0] == 2.0:
                return self.strip(node.input[0]), node.input[0]
        if node.op_type == "Mul" and self.strip(node.input[0]) == self.strip(node.input[1]):
            return self.strip(node.input[0]), node.input[0]
        return None

    def centred(self, v: str) -> tuple[str, Mean, Any, str] | None:
        """``v`` as x - mean(x): (x, the mean, the centring node, x as the centring op reads it)."""
        node = self.node(v)
        if node is None or len(node.input) != 2:
            return None
        if node.op_type == "Sub":
            m = self.mean(node.input[1])
            if m is not None and not m.squared and self.strip(node.input[0]) == m.x:
                return m.x, m, node, node.input[0]
        if node.op_type == "Add":
            for i, j in ((0, 1), (1, 0)):
                neg = self.node(node.input[j])
                if neg is not None and neg.op_type == "Neg" and neg.input:
                    m = self.mean(neg.input[0])
                    if m is not None and not m.squared and self.strip(node.input[i]) == m.x:
                        return m.x, m, node, node.input[i]
        return None

    def moment(self, v: str) -> Moment | None:
        """``v`` as a second moment: the variance or the mean square of some value over some axes."""
        m = self.mean(v)
        if m is not None:
            if m.squared:
                base, raw = m.x, m.x
            else:
                sq = self.square(m.x)
                if sq is None:
                    return None
                base, raw = sq
            notes = [m.note] if m.note else []
            c = self.centred(base)
            if c is not None and self.same_axes(c[1].axes, m.axes, c[0]):
                if c[1].note:
                    notes.append(c[1].note)
                return Moment(True, c[0], c[3], m.axes, list(c[1].nodes) + [c[2]], list(m.nodes), notes)
            return Moment(False, base, raw, m.axes, [], list(m.nodes), notes)
        node = self.node(v)
        if node is not None and node.op_type == "Sub" and len(node.input) == 2:  # E[x²] - E[x]²
            ms = self.mean(node.input[0])
            sq_mean = self.square(node.input[1])
            if ms is None or sq_mean is None:
                return None
            mu = self.mean(sq_mean[0])
            x2 = (ms.x, ms.x) if ms.squared else self.square(ms.x)
            if mu is None or x2 is None or mu.squared or x2[0] != mu.x or not self.same_axes(mu.axes, ms.axes, mu.x):
                return None
            notes = [n for n in (ms.note, mu.note) if n] + ["variance as mean(x²) - mean(x)²"]
            return Moment(True, mu.x, x2[1], ms.axes, list(mu.nodes), list(ms.nodes) + [node], notes)
        return None

    def root(self, v: str) -> str | None:
        """``v`` as sqrt(w) (Sqrt, Pow(., 0.5)): w."""
        node = self.node(v)
        if node is None or not node.input:
            return None
        if node.op_type == "Sqrt":
            return node.input[0]
        if node.op_type == "Pow" and len(node.input) == 2:
            s = self.g.scalar(node.input[1])
            if s is not None and s[0] == 0.5:
                return node.input[0]
        return None


# -- polynomials over x, mean(x), u = v + eps and constants ---------------------------------------------------

Key = tuple[tuple[tuple[str, Fraction], ...], tuple[str, ...]]  # (atoms with exponents, constant names)
Poly = dict[Key, float]

X, M, U = "x", "m", "u"


def _mono_mul(a: Key, b: Key) -> Key:
    exps: dict[str, Fraction] = dict(a[0])
    for atom, e in b[0]:
        exps[atom] = exps.get(atom, Fraction(0)) + e
    return tuple(sorted((k, e) for k, e in exps.items() if e != 0)), tuple(sorted(a[1] + b[1]))


def _add(p: Poly, q: Poly, sign: float = 1.0) -> Poly | None:
    out = dict(p)
    for k, c in q.items():
        out[k] = out.get(k, 0.0) + sign * c
    out = {k: c for k, c in out.items() if abs(c) > 1e-12}
    return out if len(out) <= MAX_TERMS else None


def _mul(p: Poly, q: Poly) -> Poly | None:
    if len(p) * len(q) > MAX_TERMS * 4:
        return None
    out: Poly = {}
    for ka, ca in p.items():
        for kb, cb in q.items():
            k = _mono_mul(ka, kb)
            out[k] = out.get(k, 0.0) + ca * cb
    out = {k: c for k, c in out.items() if abs(c) > 1e-12}
    return out if len(out) <= MAX_TERMS else None


def _pow(p: Poly, e: Fraction) -> Poly | None:
    """A single term (no constant tensors) to a rational power; x² of a sum is expanded."""
    if len(p) != 1:
        return _mul(p, p) if e == 2 else None
    (key, c), = p.items()
    if key[1] and e != 1:
        return None
    if c <= 0 and e.denominator != 1:
        return None
    try:
        coef = float(c) ** float(e)
    except (OverflowError, ZeroDivisionError):
        return None
    return {(tuple((a, x * e) for a, x in key[0]), key[1]): coef}


def _fraction(value: float) -> Fraction | None:
    f = Fraction(value).limit_denominator(8)
    return f if abs(float(f) - value) < 1e-9 else None


class Sym:
    """Symbolic evaluation of values in terms of x (the normalized input), m = mean(x) over the norm's axes,
    u (the ``v + eps`` value) and constants.  Unknown values (activations, unsupported ops) are None."""

    def __init__(self, flow: Flow, x: str, axes: tuple[int, ...], u: str) -> None:
        self.flow, self.g = flow, flow.g
        self.x, self.axes, self.u = x, axes, u
        self.memo: dict[str, Poly | None] = {}
        self.consts: dict[str, Const] = {}
        self.budget = MAX_EVAL

    def __call__(self, v: str, depth: int = 0) -> Poly | None:
        s = self.flow.strip(v)
        if s in self.memo:
            return self.memo[s]
        self.memo[s] = None  # cycles
        self.budget -= 1
        result = self._eval(s, depth) if self.budget > 0 and depth < MAX_EVAL_DEPTH else None
        self.memo[s] = result
        return result

    def _eval(self, s: str, depth: int) -> Poly | None:
        one: Key = ((), ())
        if s == self.u:
            return {(((U, Fraction(1)),), ()): 1.0}
        if s == self.x:
            return {(((X, Fraction(1)),), ()): 1.0}
        c = self.g.const_through_layout(s)
        if c is not None:
            size = int(np.prod(c.shape or (1,)))
            if size == 1:
                value = self.g.scalar(s)
                v = value[0] if value is not None else float(c.load().reshape(-1)[0])
                return {one: v} if np.isfinite(v) else None
            self.consts[c.name] = c
            return {((), (c.name,)): 1.0}
        node = self.g.producer.get(s)
        if node is None or not node.input:
            return None
        op = node.op_type
        if op in ("ReduceMean", "ReduceSum", "Mul", "Div"):
            m = self.flow.mean(s)
            if m is not None:
                if m.x == self.x and not m.squared and self.flow.same_axes(m.axes, self.axes, self.x):
                    return {(((M, Fraction(1)),), ()): 1.0}
                return None
        if op in LAYOUT_OPS:
            return self(node.input[0], depth + 1)
        if op not in ALGEBRA_OPS:
            return None
        args = [self(i, depth + 1) for i in node.input[:2] if i]
        if any(a is None for a in args):
            return None
        if op == "Add" and len(args) == 2:
            return _add(args[0], args[1])  # type: ignore[arg-type]
        if op == "Sub" and len(args) == 2:
            return _add(args[0], args[1], -1.0)  # type: ignore[arg-type]
        if op == "Mul" and len(args) == 2:
            return _mul(args[0], args[1])  # type: ignore[arg-type]
        if op == "Div" and len(args) == 2:
            inv = _pow(args[1], Fraction(-1))  # type: ignore[arg-type]
            return _mul(args[0], inv) if inv is not None else None  # type: ignore[arg-type]
        if op == "Neg":
            return {k: -c for k, c in args[0].items()}  # type: ignore[union-attr]
        if op == "Reciprocal":
            return _pow(args[0], Fraction(-1))  # type: ignore[arg-type]
        if op == "Sqrt":
            return _pow(args[0], Fraction(1, 2))  # type: ignore[arg-type]
        if op == "Pow" and len(args) == 2:
            (k, e), = args[1].items() if len(args[1]) == 1 else ((None, None),)  # type: ignore[union-attr]
            if k != one or e is None:
                return None
            f = _fraction(e)
            return _pow(args[0], f) if f is not None else None  # type: ignore[arg-type]
        return None


@dataclass
class Affine:
    """The affine part of a norm's output polynomial."""

    weight: Const | None
    bias: Const | None
    one_plus: bool  # the weight enters as (1 + w)

    @property
    def score(self) -> int:
        return (self.weight is not None) + (self.bias is not None)


def norm_form(sym: Sym, p: Poly, centred: bool, u_exp: Fraction) -> Affine | None:
    """``p`` as ``w·(x - m)·u^e + b`` (centred) or ``w·x·u^e`` (mean square); w, b constants (w may be 1 + w)."""
    xk = tuple(sorted(((U, u_exp), (X, Fraction(1)))))
    mk = tuple(sorted(((U, u_exp), (M, Fraction(1)))))
    x_terms: dict[tuple[str, ...], float] = {}
    m_terms: dict[tuple[str, ...], float] = {}
    b_terms: dict[tuple[str, ...], float] = {}
    for (atoms, consts), c in p.items():
        target = x_terms if atoms == xk else m_terms if atoms == mk else b_terms if atoms == () else None
        if target is None:
            return None
        target[consts] = c
    close = lambda a, b: bool(np.isclose(a, b, rtol=1e-6, atol=1e-9))  # noqa: E731
    if centred:
        if set(m_terms) != set(x_terms) or not all(close(-c, x_terms[k]) for k, c in m_terms.items()):
            return None
    elif m_terms:
        return None
    weight, one_plus = None, False
    if set(x_terms) == {()} and close(x_terms[()], 1.0):
        pass
    elif len(x_terms) == 1 and len(next(iter(x_terms))) == 1 and close(next(iter(x_terms.values())), 1.0):
        weight = sym.consts[next(iter(x_terms))[0]]
    elif len(x_terms) == 2 and () in x_terms and close(x_terms[()], 1.0):
        (k,) = [k for k in x_terms if k]
        if len(k) != 1 or not close(x_terms[k], 1.0):
            return None
        weight, one_plus = sym.consts[k[0]], True
    else:
        return None
    bias = None
    if b_terms:
        if not centred or len(b_terms) != 1:
            return None
        (k, c), = b_terms.items()
        if len(k) != 1 or not close(c, 1.0):
            return None
        bias = sym.consts[k[0]]
        if int(np.prod(bias.shape or (1,))) <= 1:
            return None
    return Affine(weight, bias, one_plus)


@dataclass
class Output:
    value: str  # the norm's output
    affine: Affine
    nodes: list[Any]  # nodes from the eps Add to the output (exclusive of the Add), graph order


def find_output(flow: Flow, sym: Sym, start: str, centred: bool, u_exp: Fraction, restores: Any,
                reshaped: bool) -> Output | None:
    """Walk forward from ``start`` (the ``v + eps`` value) to the value that is the whole norm.

    ``restores(node)`` says whether a layout op puts the original input's shape back; when the statistics were
    taken on a reshaped input (``reshaped``) the output must be in the original layout again."""
    g = flow.g
    forward: dict[str, Any] = {}
    in_layout: dict[str, bool] = {start: not reshaped}
    best: tuple[tuple[int, int], int, str, Affine] | None = None
    queue = deque([(start, 0)])
    seen: set[int] = set()
    visited = 0
    while queue and visited < MAX_FORWARD:
        v, depth = queue.popleft()
        for node in g.consumers.get(v, []):
            if id(node) in seen or node.op_type not in FORWARD_OPS or not node.output:
                continue
            seen.add(id(node))
            visited += 1
            out = node.output[0]
            p = sym(out)
            if p is None or not any(a == U for key in p for a, _ in key[0]):
                continue
            forward[out] = node
            if node.op_type in LAYOUT_OPS:
                in_layout[out] = restores(node) or (in_layout.get(node.input[0], False) and not reshaped)
            else:
                in_layout[out] = all(in_layout.get(i, True) for i in node.input if i in in_layout)
            form = norm_form(sym, p, centred, u_exp)
            if form is not None and in_layout[out]:
                score = (form.score, 1 if reshaped and node.op_type in LAYOUT_OPS else 0)
                if best is None or score > best[0]:
                    best = (score, visited, out, form)
            if depth + 1 < MAX_FORWARD_DEPTH:
                queue.append((out, depth + 1))
    if best is None:
        return None
    out = best[2]
    path: dict[int, Any] = {}
    stack = [out]
    while stack:  # the forward nodes the output depends on
        v = stack.pop()
        node = forward.get(v)
        if node is None or id(node) in path:
            continue
        path[id(node)] = node
        stack.extend(i for i in node.input if i in forward)
    return Output(out, best[3], sorted(path.values(), key=lambda n: g.order.get(id(n), 0)))
