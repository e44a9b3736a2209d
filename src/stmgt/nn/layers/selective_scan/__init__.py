"""The selective scan of Mamba (Gu and Dao, arXiv:2312.00752), in several implementations that agree.

One module each: :mod:`.reference` (the loop), :mod:`.recurrence` (the chunk-1 recurrence with a
hand-written backward), :mod:`.chunked`, :mod:`.compiled` (the C++ kernel), :mod:`.external`
(``mambapy``, ``mamba-ssm``) and :mod:`.dispatch` (``scan="auto"`` and the choice by name). The
layer that uses them is :class:`~stmgt.nn.layers.mamba.Mamba`.

The selective scan, for every channel ``d`` and state ``n`` (``u`` input, ``delta > 0`` step size,
``A < 0``, input-dependent ``B_t``, ``C_t``)::

    h_t = exp(delta_t A) * h_{t-1} + delta_t B_t u_t,        y_t = C_t . h_t + D u_t

has five implementations that agree (tested in ``tests/nn/layers/test_selective_scan.py``):

* :func:`selective_scan_sequential`: the reference, one loop step per time step;
* :func:`selective_scan_chunked` (default where the compiled kernel is not built): closed form
  inside chunks of ``L`` steps from cumulative sums ``S`` of ``delta * A``, the state carried from
  chunk to chunk. Only pairs
  ``s < t`` are formed, so only ``S_t - S_s <= 0`` is exponentiated (no overflow at any ``L``);
  in float32 the difference of cumulative sums loses about ``eps * |S|``, so the error grows
  with ``L`` (measured 2.4e-6 relative at ``L = 16``, 2.2e-7 at ``L = 1``). Speed: the closed
  form does about ``(L + 1) / 2`` times the loop's ``exp`` work in ``T / L`` steps instead of
  ``T``; on CPU that never paid in measurements, so the automatic chunk there is 1, on CUDA it
  is chosen by :func:`auto_chunk`. With ``L = 1`` the scan is the recurrence itself, run by
  :class:`~.recurrence.SelectiveScanFn`, an autograd function with a hand-written backward: it keeps only
  the inputs and the state every :data:`~.recurrence.SCAN_SEGMENT` steps and recomputes a segment's states
  in the backward pass, so training memory is ``O(B' Di N (T / SCAN_SEGMENT + SCAN_SEGMENT))``
  instead of four states per step, and time is linear in ``T``;
* ``"compiled"``: :func:`selective_scan_compiled`, a C++ kernel (:mod:`stmgt.kernels`, built on
  first use) that runs the recurrence and its adjoint per sequence with the state in cache,
  7x faster than the chunk-1 scan on CPU; ``"auto"`` (the default) uses it for CPU tensors where
  it builds and the chunked scan otherwise;
* ``"mambapy"``: the parallel (Blelloch) scan of the ``mambapy`` package, if installed; it
  materialises every state, ``[B', T, Di, N]``;
* ``"cuda"``: ``selective_scan_fn`` of ``mamba-ssm`` (CUDA only), if installed.

The names below are imported on first use.
"""

from __future__ import annotations

from stmgt._lazy import lazy_exports

_EXPORTS = {
    "SCANS": "stmgt.nn.layers.selective_scan.dispatch",
    "get_scan": "stmgt.nn.layers.selective_scan.dispatch",
    "selective_scan_auto": "stmgt.nn.layers.selective_scan.dispatch",
    "selective_scan_sequential": "stmgt.nn.layers.selective_scan.reference",
    "selective_scan_chunked": "stmgt.nn.layers.selective_scan.chunked",
    "auto_chunk": "stmgt.nn.layers.selective_scan.chunked",
    "selective_scan_compiled": "stmgt.nn.layers.selective_scan.compiled",
    "compiled_scan_available": "stmgt.nn.layers.selective_scan.compiled",
    "selective_scan_mambapy": "stmgt.nn.layers.selective_scan.external",
    "selective_scan_cuda": "stmgt.nn.layers.selective_scan.external",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
