"""Float32 matrix products through oneDNN on AMD CPUs with AVX-512: the compiled step's, and evaluation's.

torch's CPU matrix products go to Intel's MKL, which on AMD processors runs
its AVX2 kernels even where the CPU has AVX-512: on a Zen 5 core the step's
two large products (128x784 @ 784x512 and its weight gradient) took 490 us
each, against 230 us through oneDNN, the other CPU library torch ships (and
uses already for bf16). Inductor keeps matrix products as calls into a
library, so a pass over the compiled step's graph (after the backward is
derived) sends each large float32 product on the CPU to oneDNN instead, and
:func:`linear_layers_through_onednn` does the same for eager forward passes
without autograd (evaluation). The same pass writes the small products with a
side of a few elements (those of the 10 classes) as multiplies and a sum,
which Inductor fuses into the loops around them: no library call at all
(an epoch 6% quicker on that Zen 5 than with MKL's calls).

The choice is made from what the CPU is (an AMD x86 CPU with AVX-512), never
by timing, so that one machine always runs the same kernels and a resumed run
stays bit for bit. Elsewhere MKL is left as it is: on Intel CPUs it is
Intel's own, and on AMD CPUs without AVX-512 its AVX2 kernels are the widest
there are (on a first-generation Zen they run at the core's peak). Both
libraries compute in float32 and differ only in the order of the sums.
"""

import contextlib
import functools
import platform
import warnings
from pathlib import Path
from typing import Dict, Iterator, Optional

import torch
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from ..errors import Note

# Two private torch APIs carry this route: Inductor's custom-pass hook and oneDNN's linear op. A torch
# release that renames either costs the route (the products stay with MKL, with one note), never a run.
try:
    from torch._inductor.custom_graph_pass import CustomGraphPass
except ImportError:  # pragma: no cover - a torch without the hook
    CustomGraphPass = None

aten = torch.ops.aten
# A call into oneDNN costs ~10 us whatever its size (MKL's small-matrix path ~3 us): a product with fewer
# multiply-adds than this (the step's 128x512 @ 512x10 ones, ~0.7 million) does not go to oneDNN.
MIN_MULTIPLY_ADDS = 1 << 22
# ... and one of those with a side this short is a few dot products per output row or column, as cheap as
# the element-wise loops Inductor writes: it becomes one of them (others stay with MKL).
MAX_FUSED_SIDE = 16


@torch.library.custom_op("torch_mnist::linear", mutates_args=())
def linear(inputs: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``inputs @ weight.T + bias`` by oneDNN (any strides: a transposed operand is read in place)."""
    return onednn_linear_op()(inputs, weight, bias, "none", [], "")


def onednn_linear_op():
    """oneDNN's linear op, a private one of torch's (None where this torch has none by that name)."""
    return getattr(torch.ops.mkldnn, "_linear_pointwise", None)


@linear.register_fake
def _(inputs, weight, bias):
    return inputs.new_empty((inputs.shape[0], weight.shape[0]))


def _is_cpu_float32(node: torch.fx.Node) -> bool:
    value = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return isinstance(value, torch.Tensor) and value.dtype == torch.float32 and value.device.type == "cpu"


def _large(m: int, k: int, n: int) -> bool:
    return m * k * n >= MIN_MULTIPLY_ADDS


class StepProducts(CustomGraphPass or object):
    """Rewrites ``mm(a, b)`` and ``addmm(bias, a, b)`` (a 1-D bias, no scaling) on float32 CPU tensors:
    with at least :data:`MIN_MULTIPLY_ADDS` multiply-adds, as :func:`linear`; with fewer and a side of at
    most :data:`MAX_FUSED_SIDE`, as ``(a[:, :, None] * b[None]).sum(1) (+ bias)``, which Inductor fuses
    into the loops around it. Every other node is left alone."""

    def __call__(self, graph: torch.fx.Graph) -> None:
        for node in list(graph.nodes):
            if node.op != "call_function" or node.kwargs:
                continue
            if node.target is aten.mm.default:
                bias, a, b = (None, *node.args)
            elif node.target is aten.addmm.default and len(node.args) == 3:
                bias, a, b = node.args
                if not _is_cpu_float32(bias) or bias.meta["val"].shape != node.meta["val"].shape[-1:]:
                    continue
            else:
                continue
            if not (_is_cpu_float32(node) and _is_cpu_float32(a) and _is_cpu_float32(b)):
                continue
            (m, k), n = a.meta["val"].shape, b.meta["val"].shape[1]
            if _large(m, k, n):
                weight = _call(graph, node, aten.permute.default, b, [1, 0])  # a view: no copy
                product = _call(graph, node, linear._opoverload, a, weight, bias)
            elif min(m, k, n) <= MAX_FUSED_SIDE:
                terms = _call(graph, node, aten.mul.Tensor, _call(graph, node, aten.unsqueeze.default, a, 2),
                              _call(graph, node, aten.unsqueeze.default, b, 0))
                product = _call(graph, node, aten.sum.dim_IntList, terms, [1])
                if bias is not None:
                    product = _call(graph, node, aten.add.Tensor, product, bias)
            else:
                continue
            node.replace_all_uses_with(product)
            graph.erase_node(node)

    def uuid(self) -> str:  # Inductor's on-disk cache keys a graph on this: a new version for every change
        return "torch_mnist.onednn.StepProducts/3"


def _call(graph: torch.fx.Graph, before: torch.fx.Node, target, *args) -> torch.fx.Node:
    """A new node ``target(*args)`` before ``before``, with the fake value Inductor reads (computed from its
    inputs' fake values)."""
    with graph.inserting_before(before):
        node = graph.call_function(target, args)
    values = [a.meta["val"] if isinstance(a, torch.fx.Node) else a for a in args]
    node.meta["val"] = target(*values)
    return node


def cpu_field(name: str, cpuinfo: Optional[str] = None) -> Optional[str]:
    """The first CPU's ``name`` field (``"vendor_id"``: ``"AuthenticAMD"``, ``"GenuineIntel"``; ``"flags"``)
    in Linux's /proc/cpuinfo, or None (another system, or no such field)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


@functools.lru_cache(maxsize=None)
def _amd_cpu_with_avx512() -> bool:
    return (platform.machine().lower() in ("x86_64", "amd64") and cpu_field("vendor_id") == "AuthenticAMD"
            and "avx512f" in (cpu_field("flags") or "").split())


def products_through_onednn() -> bool:
    """Whether the large float32 products go to oneDNN here: an x86 AMD CPU with AVX-512, a torch built with
    oneDNN that has not been told to leave it (``torch.backends.mkldnn.enabled = False``), and the private
    APIs the route needs (:func:`missing_private_api`; where one is gone, a note says so once)."""
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled and _amd_cpu_with_avx512()):
        return False
    missing = missing_private_api()
    if missing and missing not in _NOTED:
        _NOTED.add(missing)
        warnings.warn(f"this torch has no {missing}: the step's matrix products stay with MKL (slower on this "
                      "AMD CPU, the same arithmetic)", Note, stacklevel=2)
    return not missing


_NOTED: set = set()


def missing_private_api() -> str:
    """The private torch API this route needs and this torch lacks ("" when both are there)."""
    if CustomGraphPass is None:
        return "torch._inductor.custom_graph_pass.CustomGraphPass"
    if onednn_linear_op() is None:
        return "torch.ops.mkldnn._linear_pointwise"
    return ""


def compile_options() -> Dict[str, object]:
    """Inductor options for the compiled step on this machine (empty where MKL stays)."""
    return {"post_grad_custom_post_pass": StepProducts()} if products_through_onednn() else {}


class _LinearLayersThroughOneDNN(TorchFunctionMode):
    """``F.linear`` (``nn.Linear``'s forward) on large 2-D float32 CPU tensors, without autograd, by
    :func:`linear`; every other call as it was."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and not torch.is_grad_enabled():
            inputs, weight = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            tensors = [t for t in (inputs, weight, bias) if t is not None]
            if (inputs.dim() == 2 and weight.dim() == 2 and (bias is None or bias.dim() == 1)
                    and all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors)
                    and _large(inputs.shape[0], inputs.shape[1], weight.shape[0])):
                return linear(inputs, weight, bias)
        return func(*args, **kwargs)


@contextlib.contextmanager
def linear_layers_through_onednn() -> Iterator[None]:
    """Within it, eager linear layers without autograd use oneDNN where the compiled step does
    (:func:`products_through_onednn`); elsewhere it changes nothing."""
    if not products_through_onednn():
        yield
        return
    with _LinearLayersThroughOneDNN():
        yield
