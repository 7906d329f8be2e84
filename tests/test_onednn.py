import numpy as np
import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from torch_mnist import TrainConfig
from torch_mnist.recipe import build
from torch_mnist.training import onednn

from test_compiled import assert_one_compiled_step_is_the_eager_step_within_rounding

needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")
aten = torch.ops.aten


def _close_to_float64(result: torch.Tensor, a: torch.Tensor, b: torch.Tensor, bias=None) -> None:
    """Within float32 rounding of the exact product: each entry's error bounded by a few units of
    float32 epsilon times the sum of its terms' sizes (any summation order meets it)."""
    exact = a.double() @ b.double() + (0 if bias is None else bias.double())
    scale = a.double().abs() @ b.double().abs() + (0 if bias is None else bias.double().abs())
    assert ((result.double() - exact).abs() <= 4 * torch.finfo(torch.float32).eps * scale + 1e-30).all()


@needs_onednn
@pytest.mark.parametrize("seed", range(6))
def test_linear_is_the_float32_product_whatever_the_operands_strides(seed):
    rng = np.random.default_rng(seed)
    m, k, n = (int(v) for v in rng.integers(1, 300, 3))
    a = torch.from_numpy(rng.normal(0, 10, (m, k)).astype(np.float32))
    b = torch.from_numpy(rng.normal(0, 10, (k, n)).astype(np.float32))
    bias = torch.from_numpy(rng.normal(0, 10, n).astype(np.float32))
    # Each operand as it is, or the transpose of a contiguous tensor (how the backward reads them).
    a = a if rng.random() < 0.5 else a.t().contiguous().t()
    b = b if rng.random() < 0.5 else b.t().contiguous().t()
    _close_to_float64(onednn.linear(a, b.t(), None), a, b)
    _close_to_float64(onednn.linear(a, b.t(), bias), a, b, bias)


def _graph_of(fn, *args):
    return make_fx(fn, tracing_mode="fake")(*args)


@needs_onednn
def test_the_pass_sends_large_products_to_onednn_fuses_narrow_ones_and_leaves_the_rest():
    x, w, bias = torch.rand(256, 128), torch.rand(128, 128), torch.rand(128)  # 4.2 million multiply-adds

    def products(x, w, bias):
        return (torch.addmm(bias, x, w.t()), x @ w.t(),  # large: oneDNN
                x @ w[:10].t(), torch.addmm(bias[:10], x, w[:10].t()),  # 10 wide: fused
                torch.addmm(bias, x, w.t(), beta=0.5), x.bfloat16() @ w.t().bfloat16(),  # scaled, bfloat16: left
                x[:, :127] @ w[:, :127].t())  # just under the bound and no short side: left to MKL

    graph_module = _graph_of(products, x, w, bias)
    onednn.StepProducts()(graph_module.graph)
    graph_module.recompile()
    targets = [node.target for node in graph_module.graph.nodes if node.op == "call_function"]
    assert targets.count(onednn.linear._opoverload) == 2
    assert targets.count(aten.sum.dim_IntList) == 2 and targets.count(aten.add.Tensor) == 1
    assert targets.count(aten.addmm.default) == 1 and targets.count(aten.mm.default) == 2
    for ours, expected in zip(graph_module(x, w, bias), products(x, w, bias)):
        assert ours.shape == expected.shape and ours.dtype == expected.dtype
        assert torch.allclose(ours.float(), expected.float(), rtol=1e-5, atol=1e-5)


@needs_onednn
@pytest.mark.parametrize("seed", range(4))
def test_a_fused_narrow_product_is_the_float32_product(seed):
    rng = np.random.default_rng(seed)
    m, k, n = (int(v) for v in rng.integers(1, 300, 3))
    narrow = int(rng.integers(0, 3))
    m, k, n = [int(rng.integers(1, onednn.MAX_FUSED_SIDE + 1)) if i == narrow else v for i, v in enumerate((m, k, n))]
    a = torch.from_numpy(rng.normal(0, 10, (m, k)).astype(np.float32))
    b = torch.from_numpy(rng.normal(0, 10, (k, n)).astype(np.float32))
    graph_module = _graph_of(lambda a, b: a @ b, a, b)
    onednn.StepProducts()(graph_module.graph)
    graph_module.recompile()
    assert aten.mm.default not in [node.target for node in graph_module.graph.nodes]
    _close_to_float64(graph_module(a, b), a, b)


ZEN5 = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nflags\t\t: fpu avx2 avx512f avx512bw\n"
ZEN1 = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 23\nflags\t\t: fpu avx2 fma\n"
XEON = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel Xeon\nflags\t\t: fpu avx2 avx512f amx_bf16\n"
ARM = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\n"


@pytest.mark.parametrize("cpuinfo, vendor", [(ZEN5, "AuthenticAMD"), (XEON, "GenuineIntel"), (ARM, None), ("", None)],
                         ids=["zen5", "xeon", "arm", "no-cpuinfo"])
def test_the_cpu_vendor_is_read_from_cpuinfo(cpuinfo, vendor):
    assert onednn.cpu_field("vendor_id", cpuinfo) == vendor


@pytest.mark.parametrize("cpuinfo, expected", [(ZEN5, True), (ZEN1, False), (XEON, False), (ARM, False), ("", False)],
                         ids=["zen5", "zen1", "xeon", "arm", "no-cpuinfo"])
def test_products_go_to_onednn_only_on_amd_cpus_with_avx512(monkeypatch, cpuinfo, expected):
    real = onednn.cpu_field
    monkeypatch.setattr(onednn, "cpu_field", lambda name: real(name, cpuinfo))
    onednn._amd_cpu_with_avx512.cache_clear()
    try:
        on = onednn.products_through_onednn()
        assert on == (expected and torch.backends.mkldnn.is_available()
                      and onednn.platform.machine().lower() in ("x86_64", "amd64"))
        assert bool(onednn.compile_options()) == on
        monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)  # a user who turned oneDNN off
        assert not onednn.products_through_onednn() and onednn.compile_options() == {}
    finally:
        onednn._amd_cpu_with_avx512.cache_clear()


@needs_onednn
@pytest.mark.compile
def test_a_compiled_step_through_onednn_is_the_eager_step_within_rounding(monkeypatch):
    # Held on every CPU: on an Intel one, or an AMD one without AVX-512, the products would stay with MKL.
    monkeypatch.setattr(onednn, "products_through_onednn", lambda: True)
    assert_one_compiled_step_is_the_eager_step_within_rounding()


@needs_onednn
def test_eager_linear_layers_without_autograd_go_to_onednn_where_the_step_does(monkeypatch):
    calls = []
    real = onednn.linear
    monkeypatch.setattr(onednn, "linear", lambda *args: calls.append(args[0].shape) or real(*args))
    monkeypatch.setattr(onednn, "products_through_onednn", lambda: True)
    layer, small = torch.nn.Linear(784, 512), torch.nn.Linear(512, 10)
    x = torch.rand(128, 784)
    with torch.no_grad():
        expected = layer(x)
        with onednn.linear_layers_through_onednn():
            routed, tiny = layer(x), small(torch.rand(128, 512))
            half = torch.nn.Linear(784, 512).bfloat16()(x.bfloat16())
    assert calls == [(128, 784)]  # the large float32 product; not the small one, nor bfloat16
    _close_to_float64(routed, x, layer.weight.t(), layer.bias)
    assert torch.allclose(routed, expected, rtol=1e-5, atol=1e-5)
    assert tiny.shape == (128, 10) and half.dtype == torch.bfloat16
    with onednn.linear_layers_through_onednn():
        layer(x).sum().backward()  # autograd on: left to torch, which derives the backward
    assert len(calls) == 1 and layer.weight.grad is not None


def test_without_onednn_here_linear_layers_are_left_alone(monkeypatch):
    monkeypatch.setattr(onednn, "products_through_onednn", lambda: False)
    monkeypatch.setattr(onednn, "linear", lambda *args: pytest.fail("routed to oneDNN"))
    with torch.no_grad(), onednn.linear_layers_through_onednn():
        assert torch.nn.Linear(784, 512)(torch.rand(128, 784)).shape == (128, 512)


@needs_onednn
def test_evaluation_through_onednn_gives_the_figures_of_mkl_within_rounding(monkeypatch):
    from torch_mnist.training.epoch import evaluate

    model = build(TrainConfig(), torch.device("cpu")).model
    generator = torch.Generator().manual_seed(3)
    batches = [(torch.randn(128, 784, generator=generator), torch.randint(0, 10, (128,), generator=generator))
               for _ in range(4)]
    figures = {}
    for routed in (False, True):
        monkeypatch.setattr(onednn, "products_through_onednn", lambda routed=routed: routed)
        figures[routed] = evaluate(model, batches, torch.device("cpu"))
    assert figures[True]["loss"] == pytest.approx(figures[False]["loss"], rel=1e-5)
    assert abs(figures[True]["accuracy"] - figures[False]["accuracy"]) <= 1 / 512  # a tie's argmax at most


class TestWithoutThePrivateApis:
    """A torch release that renames oneDNN's linear op or Inductor's pass hook costs the route, not a run."""

    @pytest.fixture
    def amd_avx512_without_the_op(self, monkeypatch):
        monkeypatch.setattr(onednn, "_amd_cpu_with_avx512", lambda: True)  # the route would be taken here
        monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
        monkeypatch.setattr(onednn, "onednn_linear_op", lambda: None)  # ... but the op is gone
        monkeypatch.setattr(onednn, "_NOTED", set())

    def test_the_route_is_off_with_one_note(self, amd_avx512_without_the_op):
        from torch_mnist.errors import Note
        with pytest.warns(Note, match="no torch.ops.mkldnn._linear_pointwise: the step's matrix products stay"):
            assert onednn.products_through_onednn() is False
        assert onednn.compile_options() == {}  # said once, not at every call
        with onednn.linear_layers_through_onednn():
            model = build(TrainConfig(hidden=(2048,)), torch.device("cpu")).model.eval()
            with torch.no_grad():
                assert model(torch.rand(256, 784)).shape == (256, 10)

    def test_a_missing_pass_hook_is_named(self, monkeypatch):
        monkeypatch.setattr(onednn, "CustomGraphPass", None)
        assert onednn.missing_private_api() == "torch._inductor.custom_graph_pass.CustomGraphPass"

    @pytest.mark.compile
    def test_a_compiled_run_trains_without_them(self, amd_avx512_without_the_op, synthetic_root, tmp_path):
        import warnings
        from torch_mnist import run_training
        from torch_mnist.errors import Note
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Note)
            result = run_training(TrainConfig(epochs=1), synthetic_root, torch.device("cpu"), tmp_path / "c.pt")
        assert len(result.history["loss"]) == 1
        notes = [str(w.message) for w in caught if issubclass(w.category, Note)]
        assert any("stay with MKL" in note for note in notes) and not any("eagerly" in note for note in notes)
