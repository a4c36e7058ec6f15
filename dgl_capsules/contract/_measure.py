"""What a contract check returns: a :class:`Deviation` or a list of problems, and how both are judged."""
from typing import NamedTuple

import torch

__all__ = ["Deviation", "ContractError", "deviation", "worst", "passed", "describe", "result_tensors", "on_edges",
           "unnamed_errors", "FIELDS"]

#: The tensor fields of a RoutingResult.
FIELDS = ("poses", "activations", "sigma2", "coupling")


class ContractError(AssertionError):
    """A contract is broken; the message names the check and where (``"routing contract: int32 graph ..."``)."""


class Deviation(NamedTuple):
    """How far some outputs were from what they should be.

    Attributes
    ----------
    largest : float
        The largest ``|got - want|`` over every element compared.
    in_tolerances : float
        The largest ``|got - want| / (atol + rtol |want|)``: how many
        tolerances the worst element is off. The check passes when it is at
        most 1 (the rule of :func:`torch.testing.assert_close`).
    where : str
        Which output of which case holds that element (``"graph 'conv': poses"``).
    """

    largest: float
    in_tolerances: float
    where: str


def deviation(got, want, where, rtol, atol):
    """The :class:`Deviation` of tensor ``got`` from ``want`` (shapes must agree, else it is infinite)."""
    if tuple(got.shape) != tuple(want.shape):
        return Deviation(float("inf"), float("inf"), f"{where}: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    if got.numel() == 0:
        return Deviation(0.0, 0.0, where)
    got, want = got.detach().double(), want.detach().double()
    diff = (got - want).abs()
    both_inf = torch.isinf(got) & torch.isinf(want) & (got == want)
    diff = torch.where(both_inf, torch.zeros_like(diff), diff).nan_to_num(float("inf"))
    ratio = diff / (atol + rtol * want.abs().nan_to_num(0.0, posinf=0.0, neginf=0.0))
    return Deviation(float(diff.max()), float(ratio.max()), where)


def worst(deviations):
    """The :class:`Deviation` with the most tolerances among ``deviations`` (zero if there are none)."""
    deviations = list(deviations)
    if not deviations:
        return Deviation(0.0, 0.0, "nothing to compare")
    return max(deviations, key=lambda d: d.in_tolerances)


def passed(measured):
    """Whether a check's measurement passes: a :class:`Deviation` within tolerance, or no problems."""
    if isinstance(measured, Deviation):
        return measured.in_tolerances <= 1.0
    return not measured


def describe(measured):
    """One line saying what a failed measurement found."""
    if isinstance(measured, Deviation):
        return (f"{measured.where}: off by {measured.largest:.3g} "
                f"({measured.in_tolerances:.3g} times the tolerance)")
    return "; ".join(measured)


def result_tensors(r):
    """The tensors of a RoutingResult as a dict (fields that are None left out), the trace as ``trace[t]``."""
    out = {k: getattr(r, k) for k in FIELDS if getattr(r, k) is not None}
    for t, c in enumerate(r.trace or []):
        out[f"trace[{t}]"] = c
    return out


def on_edges(key):
    """Whether output ``key`` of :func:`result_tensors` lives on the edges (couplings) rather than the parents."""
    return key == "coupling" or key.startswith("trace")


def unnamed_errors(call, cases, name):
    """The bad inputs that do not get their error: ``call(*args)`` must raise the given exception type with
    ``name`` in its message, for every ``(what, exception type, args)`` of ``cases``."""
    problems = []
    for what, exc, args in cases:
        try:
            call(*args)
        except exc as e:
            if name not in str(e):
                problems.append(f"{what} raised {exc.__name__} without naming {name}: {e}")
        except Exception as e:  # noqa: BLE001 - the wrong type of error is a finding here
            problems.append(f"{what} raised {type(e).__name__}, expected {exc.__name__} naming {name}: "
                            f"{str(e).splitlines()[0]}")
        else:
            problems.append(f"{what} raised nothing, expected {exc.__name__}")
    return problems
