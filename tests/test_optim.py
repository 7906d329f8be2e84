import copy

import pytest
import torch

from torch_mnist import RMSprop, TrainConfig
from torch_mnist.model.optim import FLT_MIN


def _params():
    torch.manual_seed(1)
    return [torch.nn.Parameter(torch.randn(30, 20)), torch.nn.Parameter(torch.randn(20))]


def _run(optimizer, params, steps=5):
    torch.manual_seed(2)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = sum((p ** 2).sum() * torch.rand(()) for p in params)
        loss.backward()
        optimizer.step()


class TestRMSprop:
    def test_defaults_are_keras(self):
        group = RMSprop(_params()).param_groups[0]
        assert (group["lr"], group["rho"], group["eps"], group["eps_placement"]) == (1e-3, 0.9, 1e-7, "outside")

    def test_config_defaults_are_keras(self):
        config = TrainConfig()
        assert (config.lr, config.rho, config.eps, config.batch_size, config.epochs) == (1e-3, 0.9, 1e-7, 128, 20)

    def test_outside_equals_torch_rmsprop_with_keras_values(self):
        ours, theirs = _params(), _params()
        _run(RMSprop(ours, eps_placement="outside"), ours)
        _run(torch.optim.RMSprop(theirs, lr=1e-3, alpha=0.9, eps=1e-7), theirs)
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-7)

    def test_inside_follows_keras3_formula(self):
        params = _params()
        start = [p.detach().clone() for p in params]
        optimizer = RMSprop(params, lr=0.01, rho=0.8, eps=1e-3, eps_placement="inside")
        grads = [torch.randn_like(p) for p in params]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        optimizer.step()
        for p, p0, g in zip(params, start, grads):
            v = 0.2 * g * g
            torch.testing.assert_close(p.detach(), p0 - 0.01 * g / torch.sqrt(v + 1e-3))

    def test_placements_differ_for_small_gradients(self):
        a, b = [torch.nn.Parameter(torch.zeros(4))], [torch.nn.Parameter(torch.zeros(4))]
        for params, placement in ((a, "outside"), (b, "inside")):
            params[0].grad = torch.full((4,), 1e-4)
            RMSprop(params, eps_placement=placement).step()
        # outside: 1e-3 * 1e-4 / (sqrt(1e-9) + 1e-7) ~ 3.1e-3; inside: 1e-3 * 1e-4 / sqrt(1e-9 + 1e-7) ~ 3.2e-4
        assert abs(a[0][0].item()) > 9 * abs(b[0][0].item())

    def test_state_dict_round_trip_continues_identically(self):
        a, b = _params(), _params()
        opt_a = RMSprop(a)
        _run(opt_a, a, steps=3)
        with torch.no_grad():
            for pa, pb in zip(a, b):
                pb.copy_(pa)
        opt_b = RMSprop(b)
        opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # state_dict() shares tensors
        _run(opt_a, a, steps=2)
        _run(opt_b, b, steps=2)
        for pa, pb in zip(a, b):
            assert torch.equal(pa, pb)

    @pytest.mark.parametrize("placement", ["outside", "inside"])
    def test_raising_subnormal_averages_to_flt_min_changes_no_update(self, placement):
        # Squared-gradient averages of rarely inked pixels decay into (and below) float32's
        # subnormal range; the CPU path raises them to FLT_MIN. Compare with the plain formula.
        torch.set_flush_denormal(False)  # subnormals as the OpenMP workers see them
        generator = torch.Generator().manual_seed(0)
        magnitudes = torch.logspace(-25, -1, 400)  # g**2 from 1e-50 (below subnormals) to 1e-2
        params = [torch.nn.Parameter(torch.randn(400, generator=generator))]
        plain, square_avg = params[0].detach().clone(), torch.zeros(400)
        optimizer = RMSprop(params, eps_placement=placement)
        subnormal_seen = False
        for step in range(60):
            grad = magnitudes * torch.randn(400, generator=generator) * (step < 10)  # then silence: v decays
            params[0].grad = grad.clone()
            optimizer.step()
            square_avg.mul_(0.9).addcmul_(grad, grad, value=0.1)  # the formula, unclamped
            subnormal_seen |= bool(((square_avg > 0) & (square_avg < FLT_MIN)).any())
            if placement == "inside":
                denominator = (square_avg + 1e-7).sqrt()
            else:
                denominator = square_avg.sqrt().add(1e-7)
            plain.addcdiv_(grad, denominator, value=-1e-3)
            assert torch.equal(params[0].detach(), plain), f"step {step}"
        assert subnormal_seen  # the case the clamp exists for did occur

    def test_rejects_bad_hyperparameters(self):
        with pytest.raises(ValueError):
            RMSprop(_params(), eps_placement="sideways")
        with pytest.raises(ValueError):
            RMSprop(_params(), lr=0)
