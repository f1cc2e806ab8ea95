"""Chapter 13: the search space refuses unknown or out-of-range hyperparameters, the grid fits its budget, the budget
counts every epoch (pruned ones too), cached features equal the network's own forward pass, and a trial repeats
exactly for a seed while leaving the pretrained backbone untouched, in both frameworks."""

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
    values = hyperparameter_search.grid(SPACE, budget)
    assert hyperparameter_search.grid_size(values) * 4 <= max(budget, 4)
    assert values["epochs"] == [4]
    for name, levels in values.items():
        assert levels == sorted(levels) and all(SPACE[name].contains(v) for v in levels), name
    if budget >= 8:
        assert len(values["head_lr"]) >= 2  # the first parameter to get a second level


def _fake_trial(params, seed=0, report=None):
    """A recipe's 'accuracy' rises with the epochs and peaks at head_lr = 1e-2: no framework needed."""
    history = []
    for epoch in range(params["epochs"]):
        history.append(1 - abs(np.log10(params["head_lr"]) + 2) / 4 - 0.1 / (epoch + 1) + 0.01 * params["unfreeze"])
        report(epoch, history[-1])
    return {"val_accuracy": history[-1], "history": history}


@pytest.mark.parametrize("method", hyperparameter_search.METHODS)
def test_every_method_spends_the_budget_and_no_more(method):
    result = hyperparameter_search.run_search(_fake_trial, method, SPACE, budget=40, seed=1)
    assert result["spent"] == sum(t["epochs"] for t in result["trials"])
    if method == "grid":
        assert len(result["trials"]) == hyperparameter_search.grid_size(hyperparameter_search.grid(SPACE, 40))
        assert result["spent"] <= 40
    else:
        assert result["spent"] == 40
    done = [t for t in result["trials"] if t["state"] == "complete"]
    assert result["best"]["value"] == max(t["value"] for t in done) == result["winner"]["val_accuracy"]
    assert all(t["epochs"] == t["params"]["epochs"] for t in done)
    curve = hyperparameter_search.best_so_far(result)
    filled = curve[~np.isnan(curve)]
    assert np.all(np.diff(filled) >= 0) and filled[-1] == result["best"]["value"]
    np.testing.assert_array_equal(hyperparameter_search.mean_curve([result, result]), curve)


def test_pruning_stops_trials_early_and_their_epochs_count():
    result = hyperparameter_search.run_search(
        _fake_trial, "hyperband", hyperparameter_search.space(9), budget=90, seed=0
    )
    pruned = [t for t in result["trials"] if t["state"] == "pruned"]
    assert pruned and all(t["epochs"] < t["params"]["epochs"] for t in pruned)
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
