"""The learning environments: gymnasium/SB3 conformance, the batched vector env, rewards, and that
training and evaluation compute observations and actions the same way."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import wsrl
from wsrl.eval.runner import evaluate_policy
from wsrl.inputs.ref import ScenarioInput, TraceInput
from wsrl.inputs.setup import input_setup_with_hosts
from wsrl.inputs.simulated import snapshot_from_simulator
from wsrl.pipeline.action import ACTION_DIM, action_to_target_bytes, cold_age_ms, headroom_frac
from wsrl.pipeline.observation import FEATURE_COUNT, FEATURE_NAMES, ObservationBuilder
from wsrl.pipeline.snapshot import HostSnapshot
from wsrl.policies.learned import LearnedPolicy
from wsrl.rl.batch import HostBatch
from wsrl.rl.reward import REWARD_TERMS, RewardWeights, reward_terms
from wsrl.rl.vec_env import GuestVecEnv
from wsrl.sim.simulator import Simulator
from wsrl.units import MIB

SAMPLE_TRACES = "envs/traces/bitbrains-sample"
SAMPLE = TraceInput(Path(SAMPLE_TRACES))
LAPTOP = ScenarioInput("laptop")


def linear_forward(seed: int = 0):
    """A fixed random linear map from features to actions (a stand-in network with real outputs)."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 0.3, (FEATURE_COUNT, ACTION_DIM)).astype(np.float32)

    def forward(obs: np.ndarray) -> np.ndarray:
        return np.tanh(obs @ weights)

    return forward


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("wsrl/Overcommit-v0", {"scenario": "laptop", "episode_steps": 12}),
        ("wsrl/TraceReplay-v0", {"traces": SAMPLE_TRACES, "episode_steps": 12}),
    ],
)
def test_envs_are_registered_and_pass_both_checkers(env_id: str, kwargs: dict) -> None:
    assert env_id in wsrl.ENV_IDS and env_id in gym.registry
    env = gym.make(env_id, **kwargs)
    gym_check_env(env.unwrapped)
    sb3_check_env(env.unwrapped, warn=False)
    obs, info = env.reset(seed=5)
    guests = int(obs["mask"].sum())
    assert obs["guests"].shape == (env.unwrapped.max_guests, FEATURE_COUNT) and guests >= 3
    truncated = False
    steps = 0
    while not truncated:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        steps += 1
        assert not terminated and np.isfinite(reward)
        assert set(info["reward_terms"]) == set(REWARD_TERMS)
        assert reward == pytest.approx(sum(info["reward_terms"].values()), rel=1e-6, abs=1e-9)
    assert steps == 12


def test_trace_replay_env_replays_chosen_guests() -> None:
    env = gym.make("wsrl/TraceReplay-v0", traces=SAMPLE_TRACES, guests=["vm1", "vm2"], episode_steps=3)
    obs, _ = env.reset(seed=0)
    assert env.unwrapped.guest_names == ["vm1", "vm2"]
    assert obs["mask"].tolist() == [1, 1]


def test_same_seed_same_episode() -> None:
    runs = []
    for _ in range(2):
        env = gym.make("wsrl/Overcommit-v0", scenario="laptop", episode_steps=6)
        obs, _ = env.reset(seed=11)
        env.action_space.seed(3)
        trajectory = [obs["guests"]]
        for _ in range(6):
            obs, reward, *_ = env.step(env.action_space.sample())
            trajectory.append(obs["guests"] * reward)
        runs.append(np.stack(trajectory))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_vec_env_auto_resets_with_terminal_observation_and_truncation() -> None:
    env = GuestVecEnv([LAPTOP, SAMPLE], episode_steps=4, seed=2)
    assert env.num_envs == 3 + 8
    obs = env.reset()
    assert obs.shape == (11, FEATURE_COUNT) and obs.dtype == np.float32
    actions = np.zeros((11, ACTION_DIM), dtype=np.float32)
    for step in range(1, 5):
        obs, rewards, dones, infos = env.step(actions)
        assert rewards.shape == (11,) and np.isfinite(rewards).all()
        assert all(set(info["reward_terms"]) == set(REWARD_TERMS) for info in infos)
        for reward, info in zip(rewards, infos, strict=True):
            assert reward == pytest.approx(sum(info["reward_terms"].values()), rel=1e-5, abs=1e-6)
        if step < 4:
            assert not dones.any()
    assert dones.all()
    for info in infos:
        assert info["TimeLimit.truncated"] is True
        assert info["terminal_observation"].shape == (FEATURE_COUNT,)
        assert info["episode"]["l"] == 4
    # The returned observation is the new episode's first: its rates read zero (nothing elapsed yet).
    refault_col = FEATURE_NAMES.index("refault_budget_log")
    assert (obs[:, refault_col] == 0).all()
    assert not np.array_equal(obs, np.stack([info["terminal_observation"] for info in infos]))


def test_hosts_of_one_batch_step_together_but_independently() -> None:
    """Two hosts stepped in one numpy pass: what one host's guests are told never moves the other."""
    runs = []
    for other in (-1.0, 1.0):
        batch = HostBatch(input_setup_with_hosts(LAPTOP, hosts=2), episode_steps=5, random_start=False)
        batch.reset(7)
        rng = np.random.default_rng(0)
        trajectory = []
        for _ in range(5):
            action = np.empty((2, 3, ACTION_DIM))
            action[0] = rng.uniform(-1, 1, (3, ACTION_DIM))
            action[1] = other
            step = batch.step(action)
            trajectory.append((step.obs.copy(), step.reward.copy()))
        runs.append(trajectory)
    for (obs_a, rew_a), (obs_b, rew_b) in zip(*runs, strict=True):
        np.testing.assert_array_equal(obs_a[0], obs_b[0])
        np.testing.assert_array_equal(rew_a[0], rew_b[0])
        assert not np.array_equal(obs_a[1], obs_b[1])


def test_training_and_evaluation_see_and_do_the_same() -> None:
    """A network stepped through the env engine and the same network run by the evaluator as a
    LearnedPolicy produce identical observations, proposals and targets: one code path."""
    forward = linear_forward(1)
    batch = HostBatch(input_setup_with_hosts(LAPTOP), episode_steps=30, random_start=False)
    obs = batch.reset(3)
    env_targets = []
    for _ in range(30):
        rows = obs[batch.mask]
        action = np.zeros((*batch.mask.shape, ACTION_DIM))
        action[batch.mask] = forward(rows)
        result = batch.step(action)
        env_targets.append(result.decision.target_bytes.copy())
        obs = result.obs

    policy = LearnedPolicy(forward, name="linear")
    seen: list[np.ndarray] = []
    original = policy.decide

    def recording_decide(snapshot):
        proposal = original(snapshot)
        seen.append(np.asarray(proposal).copy())
        return proposal

    policy.decide = recording_decide  # type: ignore[method-assign]
    result = evaluate_policy(policy, LAPTOP, 3, 30 * 10)
    assert result.metrics["memory_saved_frac"] > 0
    assert len(seen) == 30
    batch2 = HostBatch(input_setup_with_hosts(LAPTOP), episode_steps=30, random_start=False)
    obs = batch2.reset(3)
    for index in range(30):
        action = np.zeros((*batch2.mask.shape, ACTION_DIM))
        action[batch2.mask] = forward(obs[batch2.mask])
        proposal = action_to_target_bytes(action, batch2.snapshot, batch2.builder.working_set_peak_bytes)
        np.testing.assert_allclose(proposal, seen[index], rtol=1e-9)
        step = batch2.step(action)
        np.testing.assert_allclose(step.decision.target_bytes, env_targets[index], rtol=1e-9)
        obs = step.obs


@pytest.mark.parametrize("scenario", ["laptop", "dense", "envs/training/pair.toml"])
def test_one_policy_runs_on_hosts_of_any_size(scenario: str) -> None:
    """The same per-guest network serves 2, 3 and 64 guests unchanged."""
    result = evaluate_policy(LearnedPolicy(linear_forward(2), name="linear"), ScenarioInput(scenario), 0, 600)
    assert all(np.isfinite(v) for v in result.metrics.values())
    assert len(result.per_guest) in (2, 3, 64)


def test_single_guest_host() -> None:
    setup = input_setup_with_hosts(SAMPLE)
    env = gym.make("wsrl/TraceReplay-v0", traces=SAMPLE_TRACES, guests=["vm1"], episode_steps=3)
    obs, _ = env.reset(seed=1)
    assert obs["guests"].shape == (1, FEATURE_COUNT) and setup.guests.mask.sum() == 8
    env.step(np.zeros((1, ACTION_DIM), dtype=np.float32))


def test_action_mapping_ranges_and_extremes() -> None:
    assert cold_age_ms(np.array([-1.0]))[0] == pytest.approx(10_000)
    assert cold_age_ms(np.array([1.0]))[0] == pytest.approx(7_200_000)
    assert headroom_frac(np.array([-1.0]))[0] == 0.0
    assert headroom_frac(np.array([1.0]))[0] == pytest.approx(0.5)
    sim = Simulator(input_setup_with_hosts(ScenarioInput("datacenter")))
    sim.reset(0)
    for _ in range(60):
        sim.step()
    snapshot = snapshot_from_simulator(sim)
    shape = (*snapshot.shape, ACTION_DIM)
    keep_all = action_to_target_bytes(np.tile([1.0, -1.0, -1.0], (*snapshot.shape, 1)), snapshot)
    # Past the last finite edge nothing is cold: the proposal is what the guest uses now.
    np.testing.assert_allclose(keep_all[snapshot.mask], snapshot.usage_bytes[snapshot.mask], rtol=1e-9)
    tightest = action_to_target_bytes(np.tile([-1.0, -1.0, -1.0], (*snapshot.shape, 1)), snapshot)
    assert (tightest[snapshot.mask] < keep_all[snapshot.mask]).all()
    # The peak floor: a guest that was bigger recently is held at a share of that peak.
    peak = snapshot.usage_bytes * 1.5
    held = action_to_target_bytes(np.tile([-1.0, -1.0, 1.0], (*snapshot.shape, 1)), snapshot, peak)
    expected = np.minimum(1.25 * peak, snapshot.provisioned_bytes)
    np.testing.assert_allclose(held[snapshot.mask], expected[snapshot.mask], rtol=1e-9)
    off = action_to_target_bytes(np.tile([-1.0, -1.0, -1.0], (*snapshot.shape, 1)), snapshot, peak)
    np.testing.assert_allclose(off, tightest)
    # Garbage actions read as the middle of the range, never NaN targets.
    garbage = action_to_target_bytes(np.full(shape, np.nan), snapshot)
    middle = action_to_target_bytes(np.zeros(shape), snapshot)
    np.testing.assert_allclose(garbage, middle)
    with pytest.raises(ValueError, match="action shape"):
        action_to_target_bytes(np.zeros((1, 2)), snapshot)


def test_cold_age_action_reclaiming_inverts_the_cold_reading() -> None:
    """The action a teacher hands a student to take a given amount of cold memory takes at least
    that much, and a step less aggressive takes less (on exact ages and on a source's horizon)."""
    import dataclasses

    from wsrl.pipeline.action import cold_age_action_reclaiming

    sim = Simulator(input_setup_with_hosts(ScenarioInput("datacenter")))
    sim.reset(0)
    for _ in range(60):
        sim.step()
    exact = snapshot_from_simulator(sim)
    horizon = np.where(exact.mask, 120_000.0, np.inf)
    for snapshot in (exact, dataclasses.replace(exact, hist_horizon_ms=horizon)):
        mask = snapshot.mask
        usage = snapshot.usage_bytes
        wanted = 0.4 * exact.cold_bytes(300_000)

        def proposal(cold_age: np.ndarray, snapshot: HostSnapshot = snapshot) -> np.ndarray:
            actions = np.stack([cold_age, -np.ones_like(cold_age), -np.ones_like(cold_age)], axis=-1)
            return action_to_target_bytes(actions, snapshot)

        action = cold_age_action_reclaiming(snapshot, wanted)
        assert ((action >= -1) & (action <= 1)).all()
        taken = usage - proposal(action)
        some = mask & (wanted > 64 * MIB)
        assert some.any()
        assert (taken[some] >= wanted[some] - 1024).all()
        less = usage - proposal(np.minimum(action + 0.02, 1.0))
        assert (less[some & (action < 0.98)] < wanted[some & (action < 0.98)]).all()
        nothing = cold_age_action_reclaiming(snapshot, np.zeros(snapshot.shape))
        assert (nothing == 1.0).all()  # nothing to take: keep everything


def test_observation_rows_are_bounded_and_padding_is_zero() -> None:
    sim = Simulator(input_setup_with_hosts(SAMPLE))
    sim.reset(0)
    builder = ObservationBuilder()
    obs = builder.reset(snapshot_from_simulator(sim))
    for _ in range(20):
        sim.step(np.where(sim.mask, sim.setup.guests.provisioned_bytes * 0.3, 0.0))
        obs = builder.build(snapshot_from_simulator(sim))
    assert obs.shape == (*sim.mask.shape, FEATURE_COUNT) and np.isfinite(obs).all()
    assert (np.abs(obs) <= 10).all()
    assert (obs[~sim.mask] == 0).all()
    # Squeezed to 30 % the guests refault: the refault feature is positive for some.
    assert (obs[sim.mask][:, FEATURE_NAMES.index("refault_budget_log")] > 0).any()


def test_working_set_peaks_do_not_remember_a_provisional_histogram() -> None:
    """The runner's first cycle on the ``referenced`` source reads every guest's whole usage as its
    working set; the peaks (and the learned policy's ``peak_keep`` floor on them) start afresh at
    the first settled histogram instead of remembering that usage for hours."""
    import dataclasses

    sim = Simulator(input_setup_with_hosts(SAMPLE))
    sim.reset(0)
    settled = snapshot_from_simulator(sim)
    mask = settled.mask
    young = np.zeros_like(settled.hist_bytes)
    young[..., 0, 0] = settled.hist_bytes.sum(axis=(2, 3))  # every resident byte counted young
    first_cycle = dataclasses.replace(settled, hist_bytes=young, hist_provisional=mask.copy())
    builder = ObservationBuilder()
    builder.reset(first_cycle)
    usage_like = first_cycle.working_set_bytes()[mask]  # the whole usage
    np.testing.assert_allclose(builder.working_set_peak_bytes[mask], usage_like, rtol=1e-9)
    builder.build(dataclasses.replace(first_cycle, time_ms=first_cycle.time_ms + 10_000))
    after = dataclasses.replace(settled, time_ms=first_cycle.time_ms + 20_000)
    builder.build(after)
    working_set = after.working_set_bytes()[mask]
    np.testing.assert_allclose(builder.working_set_peak_bytes[mask], working_set, rtol=1e-9)
    assert (working_set < usage_like).any()  # the sample has idle memory
    # The same young histogram, settled (a burst that really touched everything): remembered.
    burst = ObservationBuilder()
    burst.reset(dataclasses.replace(first_cycle, hist_provisional=None))
    burst.build(after)
    assert (burst.working_set_peak_bytes[mask] > working_set).any()


def test_reward_terms_punish_ooms_far_above_everything() -> None:
    sim = Simulator(input_setup_with_hosts(ScenarioInput("dense")))  # memcg limits: they act at once
    sim.reset(0)
    before = snapshot_from_simulator(sim)
    sim.step(np.where(sim.mask, 4 * 2**20, 0.0))  # far below what any guest needs: OOM kills
    after = snapshot_from_simulator(sim)
    weights = RewardWeights()
    terms = reward_terms(before, after, weights)
    assert set(terms) == set(REWARD_TERMS)
    ooms = after.oom_kills_total - before.oom_kills_total
    assert (ooms[sim.mask] > 0).all()
    assert (terms["oom"][sim.mask] == -weights.oom * ooms[sim.mask]).all()
    total = sum(terms.values())
    assert (total[sim.mask] < -10).all()
    # Holding the provisioned size saves nothing and costs nothing.
    sim.reset(0)
    before = snapshot_from_simulator(sim)
    sim.step(np.where(sim.mask, sim.setup.guests.provisioned_bytes, 0.0))
    terms = reward_terms(before, snapshot_from_simulator(sim), weights)
    assert np.abs(terms["saved"][sim.mask]).max() < 1e-9 and (terms["oom"] == 0).all()


def test_a_breaker_trip_costs_the_guest_that_tripped_in_training() -> None:
    """Squeezed hard under the production rails, guests trip their breakers: the env's reward says so."""
    batch = HostBatch(input_setup_with_hosts(ScenarioInput("dense")), episode_steps=30, random_start=False)
    batch.reset(0)
    squeeze = np.full((*batch.mask.shape, ACTION_DIM), -1.0)
    tripped_any = False
    for _ in range(30):
        step = batch.step(squeeze)
        tripped = step.decision.breaker.tripped & batch.mask
        expected = np.where(tripped, -batch.reward_weights.breaker, 0.0)
        np.testing.assert_array_equal(np.where(batch.mask, step.terms["breaker"], 0.0), expected)
        tripped_any |= bool(tripped.any())
    assert tripped_any
    # Recorded traces carry no trips: the term is 0.
    snapshot = batch.snapshot
    assert snapshot is not None
    assert not reward_terms(snapshot, snapshot, RewardWeights())["breaker"].any()


@pytest.mark.parametrize("team", [0.0, 0.4, 1.0])
def test_team_term_mixes_each_guest_reward_with_its_host_mean(team: float) -> None:
    """reward = (1 - team) * own + team * host mean of own; padding stays 0; hosts stay apart."""
    sim = Simulator(input_setup_with_hosts(ScenarioInput("envs/training/pair.toml"), hosts=2))
    sim.reset(3)
    before = snapshot_from_simulator(sim)
    provisioned = sim.setup.guests.provisioned_bytes
    target = np.where(sim.mask, provisioned, 0.0)
    target[0, 0] *= 0.3  # squeeze one guest of the first host only
    sim.step(target)
    after = snapshot_from_simulator(sim)
    terms = reward_terms(before, after, RewardWeights(team=team))
    own = sum(value for name, value in terms.items() if name != "team")
    total = sum(terms.values())
    for host in range(2):
        real = sim.mask[host]
        mean = own[host, real].mean()
        np.testing.assert_allclose(total[host, real], (1 - team) * own[host, real] + team * mean, atol=1e-12)
    assert (terms["team"][~sim.mask] == 0).all()
    if team == 1.0:
        assert np.ptp(total[0, sim.mask[0]]) < 1e-12
    assert np.ptp(own[0, sim.mask[0]]) > 0  # the squeeze gave the first host's guests different outcomes
