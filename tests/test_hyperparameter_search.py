"""Chapter 13: the search space refuses unknown or out-of-range hyperparameters and draws `backbone_lr` only when
`unfreeze > 0`, the grid fits its budget, the budget counts every epoch (pruned ones too) with the epochs fixed at
the maximum, re-scoring the top recipes chooses by their mean over seeds and counts its epochs, cached features
equal the network's own forward pass, and a trial repeats exactly for a seed while leaving the pretrained backbone
untouched, in both frameworks."""

import numpy as np
import optuna
import pytest

from helpers import hyperparameter_search
from helpers import keras as hk  # conftest.py has imported torch first, as it must be
from helpers import torch as ht

FRAMEWORKS = {"torch": ht, "keras": hk}
SPACE = hyperparameter_search.space(4)
optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"lr": 1e-3}, "unknown name 'lr'"),
        ({"head_lr": 5.0}, "head_lr=5.0 outside its range"),
        ({"unfreeze": 1.5}, "unfreeze=1.5 outside its range"),
        ({"unfreeze": hyperparameter_search.MAX_UNFREEZE + 1}, "outside its range"),
        ({"epochs": 0}, "epochs=0 outside its range"),
        ({"weight_decay": "big"}, "weight_decay='big' outside its range"),
        ({"unfreeze": True}, "outside its range"),
    ],
)
def test_bad_hyperparameters_get_one_error_listing_the_known_ones(params, fragment):
    with pytest.raises(ValueError, match="Known parameters: head_lr in") as error:
        hyperparameter_search.check_params(params, SPACE)
    assert fragment in str(error.value)
    assert all(name in str(error.value) for name in SPACE)


def test_check_params_fills_in_the_defaults_and_converts_integers():
    full = hyperparameter_search.check_params({"unfreeze": np.int64(2), "head_lr": 1e-2}, SPACE)
    assert full == {**hyperparameter_search.defaults(SPACE), "unfreeze": 2, "head_lr": 1e-2}
    assert isinstance(full["unfreeze"], int) and full["epochs"] == 4
    assert all(p.contains(p.default) for p in SPACE.values())


@pytest.mark.parametrize("budget", [4, 8, 12, 16, 40, 100])
def test_the_grid_fits_the_budget_and_stays_in_the_space(budget):
    points = hyperparameter_search.grid(SPACE, budget)
    assert len(points) * 4 <= max(budget, 4)
    assert len({tuple(sorted(p.items())) for p in points}) == len(points)  # no point twice
    for point in points:
        assert hyperparameter_search.check_params(point, SPACE)["epochs"] == 4 and "epochs" not in point
        assert ("backbone_lr" in point) == (point["unfreeze"] > 0)  # conditional: no backbone rate for a probe
    if budget >= 8:
        assert len({p["head_lr"] for p in points}) >= 2  # the first parameter to get a second level


def test_the_probe_grid_spends_a_budget_of_twenty_trials_on_twenty_points():
    points = hyperparameter_search.grid(hyperparameter_search.probe_space(8), 160)
    assert len(points) == 20 and all(set(p) == {"head_lr", "weight_decay"} for p in points)


def _fake_trial(params, seed=0, report=None):
    """A recipe's 'accuracy' rises with the epochs and peaks at head_lr = 1e-2: no framework needed."""
    history = []
    for epoch in range(params["epochs"]):
        history.append(
            1 - abs(np.log10(params["head_lr"]) + 2) / 4 - 0.1 / (epoch + 1) + 0.01 * params.get("unfreeze", 0)
        )
        report(epoch, history[-1])
    return {"val_accuracy": history[-1], "history": history}


@pytest.mark.parametrize("method", hyperparameter_search.METHODS)
def test_every_method_spends_the_budget_and_no_more(method):
    result = hyperparameter_search.run_search(_fake_trial, method, SPACE, budget=40, seed=1)
    assert result["spent"] == sum(t["epochs"] for t in result["trials"])
    if method == "grid":
        points = hyperparameter_search.grid(SPACE, 40)
        assert [t["params"] for t in result["trials"]] == points
        assert result["spent"] <= 40
    else:
        assert result["spent"] == 40
    done = [t for t in result["trials"] if t["state"] == "complete"]
    assert result["best"]["value"] == max(t["value"] for t in done) == result["winner"]["val_accuracy"]
    assert all(t["epochs"] == 4 and "epochs" not in t["params"] for t in done)  # epochs fixed at the maximum
    assert all(("backbone_lr" in t["params"]) == (t["params"]["unfreeze"] > 0) for t in result["trials"])
    curve = hyperparameter_search.best_so_far(result)
    filled = curve[~np.isnan(curve)]
    assert np.all(np.diff(filled) >= 0) and filled[-1] == result["best"]["value"]
    np.testing.assert_array_equal(hyperparameter_search.mean_curve([result, result]), curve)


def test_pruning_stops_trials_early_and_their_epochs_count():
    result = hyperparameter_search.run_search(
        _fake_trial, "hyperband", hyperparameter_search.space(9), budget=90, seed=0
    )
    pruned = [t for t in result["trials"] if t["state"] == "pruned"]
    assert pruned and all(t["epochs"] < 9 for t in pruned)
    assert hyperparameter_search.counts(result)["trials"] > 90 // 9  # more trials than full-length ones would fit


def test_successive_halving_prunes_at_the_rungs_after_one_three_and_nine_epochs():
    """The objective reports the epochs trained so far as the step, so Optuna's rungs (min_resource 3**k) fall
    after 1, 3 and 9 epochs, as chapter 13 says; a 0-based step would move each one epoch later."""
    result = hyperparameter_search.run_search(
        _fake_trial, "halving", hyperparameter_search.space(9), budget=200, seed=0
    )
    by_pruner = [t for t in result["trials"][:-1] if t["state"] == "pruned"]  # the last one may be cut by the budget
    assert by_pruner, "some trials were pruned"
    assert {t["epochs"] for t in by_pruner} <= {1, 3, 9}, sorted({t["epochs"] for t in by_pruner})
    assert 1 in {t["epochs"] for t in by_pruner}, "the first rung is after one epoch"


def test_tpe_starts_with_random_searchs_trials_and_hyperband_draws_random_searchs_stream():
    """Paired by design, for the same seed: TPE's first TPE_STARTUP trials are random search's, and Hyperband
    (random sampling plus pruning) proposes the same recipes as random search, in the same order."""
    runs = {
        m: hyperparameter_search.run_search(_fake_trial, m, hyperparameter_search.space(9), budget=180, seed=2)
        for m in ("random", "tpe", "hyperband")
    }
    params = {m: [t["params"] for t in r["trials"]] for m, r in runs.items()}
    startup = hyperparameter_search.TPE_STARTUP
    assert params["tpe"][:startup] == params["random"][:startup] and params["tpe"] != params["random"]
    assert len(params["hyperband"]) > len(params["random"])
    assert params["hyperband"][: len(params["random"])] == params["random"]


def test_reach_counts_the_epochs_and_seconds_until_a_score_is_first_matched():
    result = hyperparameter_search.run_search(_fake_trial, "random", SPACE, budget=40, seed=0)
    best = result["best"]
    epochs, seconds = hyperparameter_search.reach(result, best["value"])
    assert epochs == best["spent_before"] + 4 and seconds > 0
    assert epochs == np.argmax(hyperparameter_search.best_so_far(result) >= best["value"]) + 1
    assert np.isnan(hyperparameter_search.reach(result, best["value"] + 1)[0])


# rescore: a search's scores (trial number -> validation accuracy at the search's seed) and what the same recipes
# score when trained again with fresh seeds. Recipe 1 wins on its single score but is a lucky draw; recipe 2 has
# the best mean; recipe 4 was pruned with a high score, recipe 5 is fourth: neither may be trained again.
SEARCH_SCORES = {1: 0.90, 2: 0.85, 3: 0.80, 4: 0.95, 5: 0.70}
FRESH_SCORES = {1: {1007: 0.70, 2007: 0.72}, 2: {1007: 0.86, 2007: 0.84}, 3: {1007: 0.80, 2007: 0.80}}


def _search_result(scores=SEARCH_SCORES, pruned=(4,), seed=7, epochs=4):
    trials = [
        {"number": n, "params": {"head_lr": n * 1e-3}, "state": "pruned" if n in pruned else "complete"} for n in scores
    ]
    for t in trials:
        t["epochs"], t["value"] = (1, None) if t["state"] == "pruned" else (epochs, scores[t["number"]])
    done = [t for t in trials if t["state"] == "complete"]
    best = max(done, key=lambda t: t["value"]) if done else None
    return {"method": "random", "seed": seed, "trials": trials, "best": best}


def _fresh_trial(calls, fresh=FRESH_SCORES):
    """A fake run_trial: the 'accuracy' of a recipe (known by its head_lr) at a seed, reported after each epoch."""

    def run_trial(params, seed=0, report=None):
        calls.append((params, seed))
        accuracy = fresh[round(params["head_lr"] * 1e3)][seed]
        for epoch in range(params["epochs"]):
            report(epoch, accuracy)
        return {"val_accuracy": accuracy, "test": 1.0 - accuracy}

    return run_trial


def test_rescore_chooses_the_best_mean_over_seeds_not_the_best_single_score():
    calls = []
    found = hyperparameter_search.rescore(_fresh_trial(calls), _search_result(), score=lambda o: o["test"])
    assert found["single"]["number"] == 1 and found["chosen"]["number"] == 2 and found["changed"]
    assert [c["number"] for c in found["candidates"]] == [1, 2, 3]  # the top three completed, by search score
    assert found["chosen"]["val"] == [0.85, 0.86, 0.84] and found["chosen"]["mean"] == pytest.approx(0.85)
    assert found["candidates"][0]["mean"] == pytest.approx((0.90 + 0.70 + 0.72) / 3)
    assert found["seeds"] == [7, 1007, 2007]
    assert {seed for _, seed in calls} == {1007, 2007} and all(p["epochs"] == 4 for p, _ in calls)
    assert found["epochs"] == 3 * 2 * 4 == sum(p["epochs"] for p, _ in calls)  # every retrained epoch counted
    assert found["candidates"][0]["scores"] == pytest.approx([0.30, 0.28])  # recorded ...
    assert found["chosen"]["scores"] == pytest.approx([0.14, 0.16])  # ... but the better test score did not choose


def test_rescore_keeps_the_single_winner_when_its_mean_is_best_and_breaks_ties_by_the_search_score():
    fresh = {**FRESH_SCORES, 1: {1007: 0.85, 2007: 0.80}}  # recipe 1's mean, 0.85, ties recipe 2's
    found = hyperparameter_search.rescore(_fresh_trial([], fresh), _search_result())
    assert found["chosen"]["number"] == 1 and not found["changed"] and found["chosen"]["scores"] is None


def test_rescore_trains_fewer_recipes_when_fewer_completed_and_k_and_extra_are_checked():
    calls = []
    result = _search_result(pruned=(2, 3, 4, 5))
    found = hyperparameter_search.rescore(_fresh_trial(calls), result, k=5, extra=1)
    assert [c["number"] for c in found["candidates"]] == [1] and found["epochs"] == 4 and len(calls) == 1
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        hyperparameter_search.rescore(_fresh_trial([]), result, k=0)
    with pytest.raises(ValueError, match="completed no trial"):
        hyperparameter_search.rescore(_fresh_trial([]), _search_result(pruned=tuple(SEARCH_SCORES)))


def test_rescore_retrains_the_top_of_a_real_search_with_the_search_s_recipes():
    result = hyperparameter_search.run_search(_fake_trial, "random", SPACE, budget=40, seed=3)
    calls = []

    def run_trial(params, seed=0, report=None):
        calls.append(seed)
        return _fake_trial(params, seed=seed, report=report)

    found = hyperparameter_search.rescore(run_trial, result)
    top = sorted((t for t in result["trials"] if t["state"] == "complete"), key=lambda t: -t["value"])[:3]
    assert [c["params"] for c in found["candidates"]] == [t["params"] for t in top]
    assert found["epochs"] == 3 * 2 * 4 and calls == [1003, 2003] * 3
    assert all(c["val"] == [c["val"][0]] * 3 for c in found["candidates"])  # the fake trial ignores its seed
    assert not found["changed"]


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="known methods: grid, random, tpe, halving, hyperband"):
        hyperparameter_search.run_search(_fake_trial, "bayes", SPACE, budget=8)


@pytest.fixture(scope="module")
def backbones():
    return {name: fw.pretrained_backbone() for name, fw in FRAMEWORKS.items()}


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(12, 64, 64, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def features(backbones, images):
    return {name: fw.trial_features(backbones[name], images) for name, fw in FRAMEWORKS.items()}


def test_cached_features_agree_across_frameworks_and_with_the_whole_network(backbones, images, features):
    for k in range(hyperparameter_search.MAX_UNFREEZE + 1):
        np.testing.assert_allclose(features["torch"][k], features["keras"][k], atol=2e-4)
    for name, fw in FRAMEWORKS.items():
        assert features[name][0].shape == (12, 1280)
        np.testing.assert_allclose(features[name][0], fw.predict(backbones[name], images), atol=1e-4)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_trial_repeats_for_a_seed_and_leaves_the_backbone_alone(framework, backbones, features):
    fw, backbone = FRAMEWORKS[framework], backbones[framework]
    labels = np.arange(12) % 3
    data = (features[framework], labels)
    before = [np.array(w) for w in _weights(framework, fw.blocks(backbone)[-2:])]
    params = {"unfreeze": 2, "head_lr": 1e-2, "backbone_lr": 1e-2, "epochs": 3}
    seen = []
    first = fw.run_trial(params, backbone, data, data, seed=3, report=lambda e, a: seen.append((e, a)), max_epochs=3)
    again = fw.run_trial(params, backbone, data, data, seed=3, max_epochs=3)
    assert [e for e, _ in seen] == [0, 1, 2] and [a for _, a in seen] == first["history"]
    assert first["history"] == again["history"]
    assert fw.trial_accuracy(first["model"], data) == first["val_accuracy"]
    after = [np.array(w) for w in _weights(framework, fw.blocks(backbone)[-2:])]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))  # the trial trained copies
    top = first["model"].blocks if framework == "torch" else first["model"].get_layer("blocks").layers
    moved = [np.array(w) for w in _weights(framework, top)]
    assert any(not np.allclose(a, b) for a, b in zip(before, moved))  # ... and the copies did train


def _weights(framework, blocks):
    if framework == "torch":
        return [p.detach().numpy() for block in blocks for p in block.parameters()]
    return [w.numpy() for block in blocks for w in block.trainable_weights]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_report_that_raises_stops_the_trial(framework, backbones, features):
    fw, calls = FRAMEWORKS[framework], []

    def report(epoch, accuracy):
        calls.append(epoch)
        raise optuna.TrialPruned()

    with pytest.raises(optuna.TrialPruned):
        fw.run_trial(
            {"epochs": 3},
            backbones[framework],
            (features[framework], np.arange(12) % 3),
            (features[framework], np.arange(12) % 3),
            report=report,
            max_epochs=3,
        )
    assert calls == [0]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_run_trial_refuses_unknown_parameters(framework, backbones, features):
    data = (features[framework], np.arange(12) % 3)
    with pytest.raises(ValueError, match="unknown name 'dropout'.*Known parameters"):
        FRAMEWORKS[framework].run_trial({"dropout": 0.1}, backbones[framework], data, data, max_epochs=2)
