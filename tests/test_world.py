"""workers.simulated.world: the true law's frontier, and noise with the statistics the benchmark specifies (docs/benchmarks.md)."""

import math

import numpy as np
import pytest

from typing import get_args

from dataclasses import replace

from orchestrator.errors import UserError
from orchestrator.planning.trials import TrialFactory, content_id
from orchestrator.spec import parse_spec
from workers.config import HparamLandscape, LawConfig, NoiseConfig, WorldConfig, identity
from workers.simulated.expr import ExpressionError
from workers.run import run_trial
from workers.store import TrialStatus
from bench.worlds import VISIBLE_LAWS, hparams_spec, law_spec
from workers.simulated.world import SEED_NOISE_TIERS, World, observation_key

T0 = VISIBLE_LAWS["T0"]
T0_TEXT = "1.8172 + 482.01/N**0.3478 + 2085.43/D**0.3658"
QUIET = NoiseConfig(tier="none", residual_amplitude=0.0, outlier_prob=0.0)


def closed_form_optimum(law, compute):
    """Chinchilla's closed form (Hoffmann et al. 2022, eq. 4): N_opt = G (C/6)^(beta/(alpha+beta))."""
    e, a, b, alpha, beta = law
    g = (alpha * a / (beta * b)) ** (1.0 / (alpha + beta))
    n = g * (compute / 6.0) ** (beta / (alpha + beta))
    d = compute / (6.0 * n)
    return n, d, e + a / n**alpha + b / d**beta


def test_t0_exponent_and_frontier_match_the_closed_form():
    world = World(WorldConfig.chinchilla(T0))
    assert world.exponent_a(1e20, 1e21) == pytest.approx(0.5126, abs=1e-4)
    assert world.exponent_a(1e15, 1e19) == pytest.approx(0.3658 / (0.3478 + 0.3658), abs=1e-6)
    for compute in (1e15, 1e19, 1e20, 1e21):
        n, d, loss = closed_form_optimum(T0, compute)
        opt = world.compute_optimal(compute)
        assert opt["n_opt"] == pytest.approx(n, rel=1e-6)
        assert opt["d_opt"] == pytest.approx(d, rel=1e-6)
        assert opt["loss"] == pytest.approx(loss, rel=1e-12)
        assert 6 * opt["n_opt"] * opt["d_opt"] == pytest.approx(compute, rel=1e-12)


@pytest.mark.parametrize("name, a", [("T1", 0.4565), ("T2", 0.5)])
def test_visible_worlds_exponents(name, a):
    assert World(WorldConfig.chinchilla(VISIBLE_LAWS[name])).exponent_a(1e20, 1e21) == pytest.approx(a, abs=1e-4)


def test_noise_free_world_returns_exactly_the_law():
    world = World(WorldConfig.chinchilla(T0, noise=QUIET))
    for key, (n, d) in enumerate([(1e6, 1e8), (3e7, 6e8), (2e9, 4e10)]):
        assert world.observe(n, d, key) == float(world.true_loss(n, d))
    assert world.true_loss(1e8, 1e10) == pytest.approx(T0[0] + T0[1] / 1e8 ** T0[3] + T0[2] / 1e10 ** T0[4])
    assert np.all(world.residual(np.geomspace(1e6, 1e9, 5), 1e10) == 0.0)
    assert np.all(world.seed_sigma(np.array([2.0, 5.0, 9.0])) == 0.0)


def test_observe_is_deterministic_per_key_and_varies_across_keys_and_seeds():
    config = WorldConfig.chinchilla(T0, seed=3)
    a, b = World(config), World(WorldConfig.chinchilla(T0, seed=3))
    assert a.observe(1e8, 2e9, 17) == a.observe(1e8, 2e9, 17) == b.observe(1e8, 2e9, 17)
    values = {a.observe(1e8, 2e9, k) for k in range(50)}
    assert len(values) == 50
    assert World(WorldConfig.chinchilla(T0, seed=4)).observe(1e8, 2e9, 17) != a.observe(1e8, 2e9, 17)
    with pytest.raises(ValueError, match="key"):
        a.observe(1e8, 2e9, -1)


def test_observation_key_is_stable_and_distinct():
    assert observation_key("trial-abc") == observation_key("trial-abc")
    assert observation_key("trial-abc") != observation_key("trial-abd")
    assert 0 <= observation_key("x") < 2**64


def test_seed_sigma_follows_the_tiers():
    default = World(WorldConfig.chinchilla(T0))
    hard = World(WorldConfig.chinchilla(T0, noise=NoiseConfig(tier="hard")))
    np.testing.assert_allclose(default.seed_sigma([1.5, 2.0, 3.0, 7.0, 10.0]), [0.002, 0.002, 0.002, 0.05, 0.05])
    np.testing.assert_allclose(hard.seed_sigma([2.0, 8.0]), [0.01, 0.10])
    # log-linear in log L between L = 3 and 7: the geometric mean of the ends at L = sqrt(21)
    assert default.seed_sigma(math.sqrt(21.0)) == pytest.approx(math.sqrt(0.002 * 0.05))
    losses = np.linspace(3.0, 7.0, 41)
    assert np.all(np.diff(default.seed_sigma(losses)) > 0)


def test_empirical_seed_noise_at_low_loss():
    world = World(WorldConfig.chinchilla(T0, noise=NoiseConfig(residual_amplitude=0.0, outlier_prob=0.0)))
    n, d = 1e9, 1e11
    true = float(world.true_loss(n, d))
    assert 2.0 < true < 3.0
    y = np.array([world.observe(n, d, k) for k in range(4000)])
    assert y.std(ddof=1) == pytest.approx(0.002, rel=0.1)
    assert abs(y.mean() - true) < 4 * 0.002 / math.sqrt(len(y))


def test_residual_field_has_the_configured_sd_and_is_smooth():
    grid = np.linspace(0.0, 20.0, 100)  # 0.2-decade steps, well under the 0.7 length scale
    x, y = np.meshgrid(grid, grid)
    rng = np.random.default_rng(0)
    for seed in (0, 1, 2):
        world = World(WorldConfig.chinchilla(T0, seed=seed, noise=NoiseConfig(residual_amplitude=0.02)))
        field = world.residual(10**x, 10**y)
        assert field.std() == pytest.approx(0.02, rel=0.3)
        np.testing.assert_array_equal(field[:5], World(world.config).residual(10 ** x[:5], 10 ** y[:5]))  # fixed
        # smooth: points 0.01 decades apart differ far less than points 3 decades apart
        p = rng.uniform(5.0, 12.0, size=(500, 2))
        near = p + 0.01 / math.sqrt(2)
        far = p + 3.0
        r = world.residual(10 ** p[:, 0], 10 ** p[:, 1])
        d_near = np.abs(r - world.residual(10 ** near[:, 0], 10 ** near[:, 1])).mean()
        d_far = np.abs(r - world.residual(10 ** far[:, 0], 10 ** far[:, 1])).mean()
        assert d_near < 0.05 * d_far
    other = World(WorldConfig.chinchilla(T0, seed=9, noise=NoiseConfig(residual_amplitude=0.02)))
    assert not np.allclose(other.residual(10 ** x[:5], 10 ** y[:5]), field[:5])


def test_outlier_rate_and_size():
    noise = NoiseConfig(tier="none", residual_amplitude=0.0)
    world = World(WorldConfig.chinchilla(T0, noise=noise))
    n, d = 3e8, 6e9
    jumps = np.array([world.observe(n, d, k) for k in range(5000)]) - float(world.true_loss(n, d))
    hit = jumps > 1e-9
    assert 0.014 < hit.mean() < 0.026
    assert np.all((jumps[hit] >= 0.05) & (jumps[hit] <= 0.3))
    assert np.all(np.abs(jumps[~hit]) < 1e-12)


def test_expression_world_equals_the_law_world():
    config = dict(seed=5, noise=NoiseConfig(residual_amplitude=0.02))
    law, expr = World(WorldConfig.chinchilla(T0, **config)), World(WorldConfig(expression=T0_TEXT, **config))
    n, d = np.meshgrid(np.geomspace(1e6, 3e9, 9), np.geomspace(1e7, 3e12, 9))
    np.testing.assert_allclose(expr.true_loss(n, d), law.true_loss(n, d), rtol=1e-13)
    for compute in (1e18, 1e21):
        opt_law, opt_expr = law.compute_optimal(compute), expr.compute_optimal(compute)
        for k in opt_law:
            assert opt_expr[k] == pytest.approx(opt_law[k], rel=1e-6)
    assert expr.exponent_a(1e20, 1e21) == pytest.approx(0.5126, abs=1e-4)
    for key in range(20):
        assert expr.observe(1e8, 2e9, key) == pytest.approx(law.observe(1e8, 2e9, key), rel=1e-13)


def test_expression_world_of_another_form_has_an_interior_optimum():
    # a systematic small-D penalty (untuned warmup) on top of T2
    world = World(WorldConfig(expression="1.69 + 400/N**0.31 + 400/D**0.31 + 0.05*exp(-D/(20*N))"))
    opt = world.compute_optimal(1e20)
    for factor in (0.9, 1.1):
        n = opt["n_opt"] * factor
        assert float(world.true_loss(n, 1e20 / (6 * n))) > opt["loss"]


def test_config_validation_and_hashing():
    a = WorldConfig.chinchilla([1.8172, 482.01, 2085.43, 0.3478, 0.3658])
    assert a.law == LawConfig.of(T0) and a.law.params == T0
    assert a == WorldConfig.chinchilla(T0) and hash(a) == hash(WorldConfig.chinchilla(T0))
    assert hash(WorldConfig(expression=T0_TEXT, seed=2)) != hash(a)
    with pytest.raises(ValueError, match="exactly one"):
        WorldConfig()
    with pytest.raises(ValueError, match="exactly one"):
        WorldConfig(law=LawConfig.of(T0), expression=T0_TEXT)
    with pytest.raises(ValueError, match="five"):
        WorldConfig.chinchilla((1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="alpha"):
        WorldConfig.chinchilla((1.8, 482.0, 2085.0, -0.3, 0.36))
    with pytest.raises(ValueError, match="expression"):
        WorldConfig(expression="__import__('os')")
    with pytest.raises(ValueError, match="seed"):
        WorldConfig.chinchilla(T0, seed=-1)
    with pytest.raises(ValueError, match="tier"):
        NoiseConfig(tier="loud")
    with pytest.raises(ValueError, match="outlier_prob"):
        NoiseConfig(outlier_prob=1.5)
    with pytest.raises(ValueError, match="outlier_low"):
        NoiseConfig(outlier_low=0.4, outlier_high=0.3)


def test_every_tier_the_config_allows_has_a_noise_level():
    assert set(get_args(NoiseConfig.model_fields["tier"].annotation)) == set(SEED_NOISE_TIERS)


def test_expression_world_must_be_a_positive_loss_where_it_is_used():
    with pytest.raises(ExpressionError, match="not finite and positive"):
        World(WorldConfig(expression="3 - N/1e8"))
    no_d = World(WorldConfig(expression="1.7 + 400/N**0.3"))
    with pytest.raises(ValueError, match="no interior minimum"):
        no_d.compute_optimal(1e20)


# --- the learning-rate / batch-size landscape (docs/benchmarks.md, "Hyperparameter landscape") ---

STEP = HparamLandscape.model_validate(hparams_spec())


def landscape_world(noise=QUIET, **settings) -> World:
    return World(WorldConfig.chinchilla(T0, noise=noise, hparams=STEP, **settings))


def test_a_world_without_a_landscape_keeps_its_identity():
    # The fingerprint every simulated trial id of this world hashes (orchestrator.planning.trials);
    # tests/test_plan.py pins whole trial ids of such worlds.
    plain = WorldConfig.chinchilla(T0)
    assert "hparams" not in identity(plain)
    assert content_id({"world": identity(plain)}) == content_id({"world": identity(WorldConfig.chinchilla(T0))})
    assert content_id({"world": identity(plain)}) == "5c34bd6360b5185b"
    with_landscape = WorldConfig.chinchilla(T0, hparams=STEP)
    assert identity(with_landscape) == identity(plain) | {"hparams": STEP.model_dump(mode="json")}
    steeper = WorldConfig.chinchilla(T0, hparams=STEP.model_copy(update={"k_lr": 0.01}))
    assert len({content_id(identity(w)) for w in (plain, with_landscape, steeper)}) == 3


def test_the_landscape_at_its_optimum_is_the_law():
    world = landscape_world()
    for key, (n, d) in enumerate([(1e6, 1e8), (3e7, 6e8), (2e9, 4e10)]):
        lr, batch = world.optimal_hparams(n, d)
        assert lr == pytest.approx(1.79 * n**-0.713 * d**0.307) and batch == pytest.approx(0.58 * d**0.571)
        assert world.observe(n, d, key, lr=lr, batch=batch) == pytest.approx(float(world.true_loss(n, d)), rel=1e-14)
    lrs, batches = world.optimal_hparams(np.array([1e7, 1e8]), np.array([2e8, 2e9]))  # vectorised
    assert lrs.shape == batches.shape == (2,) and lrs[1] < lrs[0] and batches[1] > batches[0]
    # the minimum over (lr, B) is L(N, D): the law's frontier stays the truth
    u, v = np.meshgrid(np.linspace(-2, 2, 41), np.linspace(-2, 2, 41))
    lr, batch = world.optimal_hparams(1e8, 2e9)
    assert world.hparam_factor(1e8, 2e9, lr * np.exp(u), batch * np.exp(v)).min() == 1.0
    assert world.compute_optimal(1e20) == World(WorldConfig.chinchilla(T0)).compute_optimal(1e20)


def test_a_2x_miss_costs_about_0_28_percent_and_5x_about_1_5():
    world = landscape_world()
    n, d = 1e9, 1e11
    lr, batch = world.optimal_hparams(n, d)
    law = float(world.true_loss(n, d))
    for miss in ({"lr": 2 * lr, "batch": batch}, {"lr": lr / 2, "batch": batch}, {"lr": lr, "batch": 2 * batch}):
        assert world.observe(n, d, 0, **miss) / law - 1 == pytest.approx(0.0028, abs=0.0001)
    assert world.observe(n, d, 0, lr=3 * lr, batch=batch) > world.observe(n, d, 0, lr=2 * lr, batch=batch)
    assert world.observe(n, d, 0, lr=lr / 5, batch=batch) / law - 1 == pytest.approx(0.015, abs=0.001)


def test_a_larger_batch_wants_a_larger_learning_rate():
    world = landscape_world()
    n, d = 3e8, 6e9
    lr, batch = world.optimal_hparams(n, d)
    grid = lr * np.exp(np.linspace(-1.0, 1.0, 2001))
    best = {b: grid[np.argmin(world.hparam_factor(n, d, grid, b * batch))] for b in (0.5, 1.0, 2.0)}
    assert best[1.0] == pytest.approx(lr, rel=1e-3)
    # d/du (k_lr u^2 + k_x u v) = 0 at u = -k_x v / (2 k_lr): about x1.43 at 2x B*
    assert math.log(best[2.0] / lr) == pytest.approx(0.0060 * math.log(2) / (2 * 0.0058), abs=1e-3)
    assert best[0.5] < lr < best[2.0]


def test_divergence_band():
    world = landscape_world(noise=NoiseConfig())
    n, d = 1e8, 2e9
    lr, batch = world.optimal_hparams(n, d)
    keys = range(2000)

    def diverged(factor):
        return np.array([math.isnan(world.observe(n, d, k, lr=factor * lr, batch=batch)) for k in keys])

    assert not diverged(3.99).any() and not diverged(4.0).any()
    assert diverged(8.0).all() and diverged(20.0).all()
    half = diverged(math.sqrt(32))  # halfway between 4x and 8x in log lr
    assert 0.45 < half.mean() < 0.55
    again = World(world.config)  # deterministic per key, in any world built from the same config
    np.testing.assert_array_equal(
        half, [math.isnan(again.observe(n, d, k, lr=math.sqrt(32) * lr, batch=batch)) for k in keys])
    np.testing.assert_allclose(world.divergence_probability(n, d, lr * np.array([1, 4, math.sqrt(32), 8, 16])),
                               [0, 0, 0.5, 1, 1], atol=1e-12)
    # small batches do not diverge by themselves: only the learning rate is bounded
    assert not any(math.isnan(world.observe(n, d, k, lr=lr, batch=batch / 100)) for k in range(200))


def test_the_landscape_leaves_the_noise_draws_alone():
    noise = NoiseConfig(residual_amplitude=0.02)
    plain, tuned = World(WorldConfig.chinchilla(T0, seed=4, noise=noise)), landscape_world(noise=noise, seed=4)
    n, d = 1e8, 2e9
    lr, batch = tuned.optimal_hparams(n, d)
    for key in range(200):
        assert tuned.observe(n, d, key, lr=lr, batch=batch) == pytest.approx(plain.observe(n, d, key), rel=1e-14)
        # and a world without a landscape ignores lr and batch
        assert plain.observe(n, d, key, lr=1.0, batch=7) == plain.observe(n, d, key)


def test_landscape_validation_is_one_readable_line(tmp_path):
    def error(hparams, trainer="simulated") -> str:
        spec = {"name": "sim", "trainer": trainer, "results": str(tmp_path), "train": {"lr": 1e-3, "batch_tokens": 512},
                "world": {"law": law_spec(T0), "hparams": hparams},
                "sweep": {"kind": "isoflop", "budgets": [1e16], "model_sizes": [1e7]}, "fit": {"target_compute": 1e20}}
        with pytest.raises(UserError) as info:
            parse_spec(spec)
        message = str(info.value)
        assert "\n" not in message and "world.hparams" in message, message
        return message

    good = hparams_spec()
    assert parse_spec({"name": "sim", "trainer": "simulated", "results": str(tmp_path), "world": {"law": law_spec(T0),
                       "hparams": good}, "sweep": {"kind": "isoflop", "budgets": [1e16], "model_sizes": [1e7]},
                       "fit": {"target_compute": 1e20}}).world.hparams == STEP
    assert "4 * k_lr * k_b > k_x^2" in error(good | {"k_x": -0.02})
    assert "k_lr" in error(good | {"k_lr": -0.001})
    assert "diverge_from" in error(good | {"diverge_from": 8.0, "diverge_all": 4.0})
    assert "diverge_from" in error(good | {"diverge_from": 1.0})
    assert "required" in error({k: v for k, v in good.items() if k != "batch"})
    assert "valid keys" in error(good | {"k_y": 0.0})
    assert "n: total" in error(good | {"lr": {"coef": 1.79, "n_exp": -0.713, "d_exp": 0.307}})
    with pytest.raises(ValueError, match="needs lr and batch"):
        landscape_world().observe(1e8, 2e9, 0, lr=1e-3)
    with pytest.raises(ValueError, match="lr"):
        landscape_world().observe(1e8, 2e9, 0, lr=-1e-3, batch=512)
    with pytest.raises(ValueError, match="no hyperparameter landscape"):
        World(WorldConfig.chinchilla(T0)).optimal_hparams(1e8, 2e9)


def test_the_simulated_trainer_records_lr_and_batch_and_a_diverged_row(tmp_path):
    world = WorldConfig.chinchilla(T0, noise=QUIET, hparams=STEP)
    spec = parse_spec({"name": "sim", "trainer": "simulated", "results": str(tmp_path), "world": world.model_dump(),
                       "sweep": {"kind": "isoflop", "budgets": [1e16], "model_sizes": [1e7]},
                       "fit": {"target_compute": 1e20}})
    cfg = TrialFactory(spec).make(1e7, 2e8, 0.0, 0, "test")
    lr, batch = World(world).optimal_hparams(cfg.n_params, cfg.tokens)

    def run(lr, batch):
        r = run_trial(replace(cfg, train=cfg.train.model_copy(update={"lr": lr, "batch_tokens": batch})))
        row = r.row
        assert (row["lr"], row["batch_tokens"]) == (lr, batch)
        return row

    law = float(World(world).true_loss(cfg.n_params, cfg.tokens))
    best, missed = run(lr, round(batch)), run(2 * lr, round(batch))
    assert best["status"] == missed["status"] == TrialStatus.COMPLETED.value
    assert best["eval_loss"] == pytest.approx(law, rel=1e-5) and missed["eval_loss"] > best["eval_loss"]
    gone = run(10 * lr, round(batch))
    assert gone["status"] == TrialStatus.DIVERGED.value and math.isnan(gone["eval_loss"])
