"""Hyperparameter search over the fine-tuning recipe (chapter 13): the search space, the data split, the budget.

Framework-neutral: imports neither PyTorch nor TensorFlow (Optuna is imported inside the functions that use it).
Both frameworks search the one space defined here, `space(max_epochs)`, with the same samplers, pruners and
budget accounting, so that their searches compare. A trial is a call `run_trial(params, seed=..., report=...)`
of `helpers.torch.run_trial` or `helpers.keras.run_trial` (the data bound beforehand) that calls
`report(epoch, validation_accuracy)` after every epoch; `report` charges one epoch to the budget and raises
`optuna.TrialPruned` when the pruner or the exhausted budget stops the trial.

The space is conditional (define-by-run): `backbone_lr` is drawn only when `unfreeze > 0`. `epochs` is not searched:
every trial of every method runs the space's maximum, so that the epochs are the one resource the pruners cut.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable

import numpy as np

from helpers import checks, data, stats

MAX_UNFREEZE = 2  # the top blocks a trial may train above the cached features; 0 trains the head alone (a third
# block would double the cost of a deep trial on the CPU: its 3x3 feature maps have 960 expanded channels)
METHODS = ("grid", "random", "tpe", "halving", "hyperband")
REDUCTION_FACTOR = 3  # successive halving and Hyperband keep about a third of the trials at each rung
BUDGET_TRIALS = 20  # default budget: the epochs of this many full-length trials
TPE_STARTUP = 10  # TPE's random start (Optuna's default): for the same seed, these trials are random search's first
RESCORE_TOP = 3  # rescore: the best completed trials of a search that are trained again
RESCORE_EXTRA = 2  # rescore: the fresh training seeds each of them gets (three scores with the search's own)
RESCORE_SEED_STEP = 1000  # rescore's fresh seeds are seed + 1000, seed + 2000, ...: never a search's own seed


@dataclasses.dataclass(frozen=True)
class Param:
    """One hyperparameter: its range (log-uniform floats or integers), the default recipe's value, what it sets."""

    name: str
    low: float
    high: float
    default: float
    log: bool = False
    integer: bool = False
    doc: str = ""
    condition: str = ""  # drawn only when this (integer) parameter was drawn and is > 0; "" for always
    searched: bool = True  # False: never drawn, fixed at `high` in a search (the epochs)

    def contains(self, value) -> bool:
        """True when value is a number of the right kind inside [low, high]."""
        if isinstance(value, bool | np.bool_):
            return False
        if self.integer and not float(value).is_integer():
            return False
        return self.low <= float(value) <= self.high

    def levels(self, count: int) -> list:
        """`count` grid values spread over the range: centres of equal cells (geometric for log ranges); integers
        from low to high, ends included."""
        if self.integer:
            return sorted({int(round(v)) for v in np.linspace(self.low, self.high, count)})
        fractions = (np.arange(count) + 0.5) / count
        if self.log:
            values = np.exp(np.log(self.low) + fractions * (np.log(self.high) - np.log(self.low)))
        else:
            values = self.low + fractions * (self.high - self.low)
        return [float(f"{v:.3g}") for v in values]


def space(max_epochs: int) -> dict[str, Param]:
    """The search space of the fine-tuning recipe. `backbone_lr` is conditional on `unfreeze > 0`; epochs range
    from 1 to max_epochs (the profile's `epochs`) for a single trial, and a search fixes them at max_epochs."""
    max_epochs = checks.count("max_epochs", max_epochs)
    params = [
        Param("head_lr", 1e-4, 1e-1, 1e-3, log=True, doc="AdamW learning rate of the new head"),
        Param("unfreeze", 0, MAX_UNFREEZE, 0, integer=True, doc="top feature blocks trained (0: linear probe)"),
        Param(
            "backbone_lr",
            1e-6,
            1e-2,
            1e-4,
            log=True,
            doc="AdamW learning rate of the unfrozen blocks (drawn only if unfreeze > 0)",
            condition="unfreeze",
        ),
        Param("weight_decay", 1e-5, 1e-1, 1e-2, log=True, doc="decoupled weight decay of every trained weight"),
        Param(
            "epochs",
            1,
            max_epochs,
            max_epochs,
            integer=True,
            doc="passes over the training set (not searched: the resource pruning cuts)",
            searched=False,
        ),
    ]
    return {p.name: p for p in params}


def probe_space(max_epochs: int) -> dict[str, Param]:
    """The linear probe's part of the space (unfreeze = 0): head_lr, weight_decay and the fixed epochs."""
    full = space(max_epochs)
    return {name: full[name] for name in ("head_lr", "weight_decay", "epochs")}


def defaults(space_: dict[str, Param]) -> dict:
    """The default recipe: the chapter 02 linear probe (Adam-like rate 1e-3, AdamW's decay), all epochs."""
    return {name: (int(p.default) if p.integer else p.default) for name, p in space_.items()}


def check_params(params: dict, space_: dict[str, Param]) -> dict:
    """Complete `params` with the defaults after checking every name and value against the space; one ValueError
    lists the known parameters and their ranges when a name is unknown or a value lies outside its range."""
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict of hyperparameters, got {type(params).__name__}")
    unknown = [k for k in params if k not in space_]
    outside = [k for k in params if k in space_ and not (_number(params[k]) and space_[k].contains(params[k]))]
    if unknown or outside:
        known = "; ".join(
            f"{p.name} in [{p.low:g}, {p.high:g}]{' (integer)' if p.integer else ''}" for p in space_.values()
        )
        problems = [f"unknown name {k!r}" for k in unknown] + [f"{k}={params[k]!r} outside its range" for k in outside]
        raise ValueError(f"bad hyperparameters: {', '.join(problems)}. Known parameters: {known}.")
    full = defaults(space_)
    full.update({k: (int(v) if space_[k].integer else float(v)) for k, v in params.items()})
    return full


def _number(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def suggest(trial, space_: dict[str, Param]) -> dict:
    """One set of hyperparameters drawn by an Optuna trial from the space, define-by-run: a parameter with a
    condition is asked for only when its condition was drawn and is > 0; unsearched ones (epochs) are not drawn."""
    found = {}
    for p in space_.values():
        if not p.searched or (p.condition and not found.get(p.condition)):
            continue
        if p.integer:
            found[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high))
        else:
            found[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
    return found


def budget_epochs(max_epochs: int, trials: int = BUDGET_TRIALS) -> int:
    """A compute budget in epochs: what `trials` full-length trials cost."""
    return checks.count("max_epochs", max_epochs) * checks.count("trials", trials)


def grid(
    space_: dict[str, Param], budget: int, order=("head_lr", "unfreeze", "backbone_lr", "weight_decay")
) -> list[dict]:
    """The points of a grid that fits the budget, every point trained for all epochs: one level per parameter at
    first (its default), then one more level for the parameters in `order`, in turn, while the grid gains points
    and (points x epochs) stays within the budget. A conditional parameter appears only in the points where its
    condition is > 0 (no `backbone_lr` for a linear probe). Returns a list of {name: value}."""
    budget = checks.count("budget", budget)
    epochs = int(space_["epochs"].high)
    counts = {name: 1 for name in order if name in space_ and space_[name].searched}
    grown = True
    while grown:
        grown = False
        for name in counts:
            bigger = {**counts, name: counts[name] + 1}
            size = len(_points(space_, bigger))
            if size > len(_points(space_, counts)) and size * epochs <= budget:
                counts, grown = bigger, True
    return _points(space_, counts)


def _points(space_: dict[str, Param], counts: dict[str, int]) -> list[dict]:
    levels = {name: _grid_values(space_[name], count) for name, count in counts.items()}
    points = []
    for values in itertools.product(*levels.values()):
        point = dict(zip(levels, values))
        point = {n: v for n, v in point.items() if not space_[n].condition or point.get(space_[n].condition)}
        if point not in points:
            points.append(point)
    return points


def _grid_values(p: Param, count: int) -> list:
    if count == 1:
        return [int(p.default) if p.integer else p.default]
    return p.levels(count)


def sampler(method: str, seed: int = 0):
    """The Optuna sampler of a search method: TPE with TPE_STARTUP random trials for 'tpe'; random sampling for
    'random', 'halving' and 'hyperband' (as in Li et al.'s Hyperband) and for 'grid' (whose points are enqueued, so
    the sampler never draws)."""
    import optuna

    if check_method(method) == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP)
    return optuna.samplers.RandomSampler(seed=seed)


def pruner(method: str, max_epochs: int):
    """The Optuna pruner of a method: successive halving, Hyperband, or none (a pruner that never stops a trial)."""
    import optuna

    method = check_method(method)
    if method == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=REDUCTION_FACTOR)
    if method == "hyperband":
        return optuna.pruners.HyperbandPruner(1, max_epochs, reduction_factor=REDUCTION_FACTOR)
    return optuna.pruners.NopPruner()


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"Unknown search method {method!r}; known methods: {', '.join(METHODS)}")
    return method


class Ledger:
    """The budget: epochs charged so far, and one record per trial (params, epochs, validation accuracies)."""

    def __init__(self, budget: int):
        self.budget, self.spent, self.trials = checks.count("budget", budget), 0, []
        self.winner = None  # run_trial's output for the best completed trial

    @property
    def exhausted(self) -> bool:
        return self.spent >= self.budget

    def start(self, number: int, params: dict) -> dict:
        record = {"number": number, "params": params, "epochs": 0, "curve": [], "state": "running", "value": None}
        record["spent_before"], record["start"] = self.spent, time.perf_counter()
        self.trials.append(record)
        return record

    def charge(self, record: dict, accuracy: float) -> None:
        self.spent += 1
        record["epochs"] += 1
        record["curve"].append(float(accuracy))

    def finish(self, record: dict, state: str) -> None:
        record["state"], record["seconds"] = state, time.perf_counter() - record.pop("start")
        if state == "complete":
            record["value"] = record["curve"][-1]


def run_search(
    run_trial: Callable, method: str, space_: dict[str, Param], budget: int, seed: int = 0, max_trials: int = 200
) -> dict:
    """Search the space with one method until `budget` epochs are spent (every epoch counts, pruned ones too).

    run_trial(params, seed=seed, report=report) trains one recipe, calls report(epoch, validation_accuracy) after
    each epoch and returns a dict with 'val_accuracy'. A trial cut by the budget counts as pruned. Returns
    {'method', 'budget', 'spent', 'trials' (records: params, state, epochs, curve, value, seconds), 'best' (the
    completed trial with the highest validation accuracy), 'winner' (run_trial's output for it, model included),
    'seconds', 'study' (the Optuna study)}.
    """
    import optuna

    ledger, method, epochs = Ledger(budget), check_method(method), int(space_["epochs"].high)
    study = optuna.create_study(
        direction="maximize",
        study_name=f"{method}-seed-{seed}",  # Hyperband assigns trials to brackets by a hash of this name
        sampler=sampler(method, seed),
        pruner=pruner(method, epochs),
    )
    points = grid(space_, budget) if method == "grid" else []
    for point in points:
        study.enqueue_trial(point)  # the grid's trials take these values instead of drawing

    def objective(trial):
        record = ledger.start(trial.number, suggest(trial, space_))

        def report(epoch: int, accuracy: float) -> None:
            ledger.charge(record, accuracy)
            trial.report(accuracy, epoch + 1)  # the step is the epochs trained: the rungs fall after 1, 3, 9
            if epoch + 1 < epochs and (ledger.exhausted or trial.should_prune()):
                raise optuna.TrialPruned()

        try:
            output = run_trial({**record["params"], "epochs": epochs}, seed=seed, report=report)
        except optuna.TrialPruned:
            ledger.finish(record, "pruned")
            raise
        ledger.finish(record, "complete")
        if ledger.winner is None or output["val_accuracy"] > ledger.winner["val_accuracy"]:
            ledger.winner = output  # the trained winner is kept: no second run to score it on test data
        return output["val_accuracy"]

    start = time.perf_counter()
    while not ledger.exhausted and len(ledger.trials) < max_trials:
        study.optimize(objective, n_trials=1)
        if method == "grid" and len(ledger.trials) >= len(points):
            break
    found = summary(method, ledger, time.perf_counter() - start)
    return {**found, "seed": seed, "winner": ledger.winner, "study": study}


def summary(method: str, ledger: Ledger, seconds: float) -> dict:
    """The search's result: trials, budget spent, and the best completed trial (None if none completed)."""
    done = [t for t in ledger.trials if t["state"] == "complete"]
    best = max(done, key=lambda t: t["value"]) if done else None
    return {
        "method": method,
        "budget": ledger.budget,
        "spent": ledger.spent,
        "trials": ledger.trials,
        "best": best,
        "seconds": seconds,
    }


def rescore(
    run_trial: Callable,
    result: dict,
    k: int = RESCORE_TOP,
    extra: int = RESCORE_EXTRA,
    score: Callable | None = None,
) -> dict:
    """Choose a search's winner by its mean over seeds, not by one validation score.

    The k completed trials of `result` (from run_search) with the highest validation accuracy are trained again at
    full length, each with the same `extra` fresh seeds (result['seed'] + RESCORE_SEED_STEP * i, i = 1..extra), by
    run_trial(params, seed=..., report=...) as in run_search; every epoch they train is counted. The chosen recipe
    has the best mean over its scores (the search's own first, then the fresh seeds'); ties go to the higher
    search score. score(output), if given, is a second number for each fresh run (a test accuracy, say) that is
    recorded and plays no part in the choice. Returns {'single' (result['best']), 'chosen' (a candidate),
    'changed' (whether they differ), 'candidates' (per trial: number, params, val (one score per seed), mean,
    scores), 'seeds', 'epochs' (trained here), 'seconds'}.
    """
    k, extra = checks.count("k", k), checks.count("extra", extra)
    done = sorted((t for t in result["trials"] if t["state"] == "complete"), key=lambda t: -t["value"])
    if not done:
        raise ValueError(f"the {result['method']} search completed no trial: nothing to rescore")
    epochs, seeds = done[0]["epochs"], [result["seed"] + RESCORE_SEED_STEP * (i + 1) for i in range(extra)]
    spent, start, candidates = [0], time.perf_counter(), []

    def count(epoch: int, accuracy: float) -> None:
        spent[0] += 1

    for trial in done[:k]:
        outputs = [run_trial({**trial["params"], "epochs": epochs}, seed=s, report=count) for s in seeds]
        val = [trial["value"]] + [float(o["val_accuracy"]) for o in outputs]
        candidates.append(
            {
                "number": trial["number"],
                "params": trial["params"],
                "val": val,
                "mean": float(np.mean(val)),
                "scores": [float(score(o)) for o in outputs] if score is not None else None,
            }
        )
    chosen = max(candidates, key=lambda c: c["mean"])  # the first of equal means: the higher search score
    return {
        "single": result["best"],
        "chosen": chosen,
        "changed": chosen["number"] != result["best"]["number"],
        "candidates": candidates,
        "seeds": [result["seed"], *seeds],
        "epochs": spent[0],
        "seconds": time.perf_counter() - start,
    }


def best_so_far(result: dict) -> np.ndarray:
    """Best completed validation accuracy after each epoch of the budget (NaN until a trial completes)."""
    curve = np.full(result["budget"], np.nan)
    best = -np.inf
    for t in result["trials"]:
        if t["state"] == "complete":
            best = max(best, t["value"])
            curve[t["spent_before"] + t["epochs"] - 1 :] = best
    return curve


def reach(result: dict, target: float) -> tuple[float, float]:
    """(epochs, seconds) a search had spent when a completed trial first scored at least `target` on validation;
    (nan, nan) if none did. Seconds add up the trials' training times."""
    seconds = 0.0
    for t in result["trials"]:
        seconds += t["seconds"]
        if t["state"] == "complete" and t["value"] >= target:
            return float(t["spent_before"] + t["epochs"]), seconds
    return math.nan, math.nan


def mean_curve(results: list[dict]) -> np.ndarray:
    """best_so_far averaged over repeated searches, at each epoch where every search has completed a trial."""
    curves = np.stack([best_so_far(r) for r in results])
    found = np.full(curves.shape[1], np.nan)
    ready = ~np.isnan(curves).any(axis=0)
    found[ready] = curves[:, ready].mean(axis=0)
    return found


def counts(result: dict) -> dict[str, int]:
    """Trials run, completed and pruned, and epochs spent, of one search."""
    states = [t["state"] for t in result["trials"]]
    return {
        "trials": len(states),
        "completed": states.count("complete"),
        "pruned": states.count("pruned"),
        "epochs": result["spent"],
    }


def search_task(profile, seed: int = 0) -> dict[str, np.ndarray]:
    """Fashion-MNIST for the search: `train_per_class` training and `test_per_class` validation images per class
    from the training split (disjoint), `test_per_class` test images per class from the test split."""
    train_x, train_y, test_x, test_y = data.dataset_splits("fashion", seed)
    pool_x, pool_y = data.balanced_subset(train_x, train_y, profile.train_per_class + profile.test_per_class, seed=seed)
    order = np.argsort(pool_y, kind="stable")
    pool_x, pool_y = pool_x[order], pool_y[order]
    first = np.concatenate([np.arange(profile.train_per_class) + c * len(pool_y) // 10 for c in range(10)])
    is_train = np.zeros(len(pool_y), dtype=bool)
    is_train[first] = True
    test_x, test_y = data.balanced_subset(test_x, test_y, profile.test_per_class, seed=seed + 1)
    return {
        "train_x": pool_x[is_train],
        "train_y": pool_y[is_train],
        "val_x": pool_x[~is_train],
        "val_y": pool_y[~is_train],
        "test_x": test_x,
        "test_y": test_y,
    }


def table(results: dict[str, list[dict]], tests: dict[str, list[float]]) -> list[dict]:
    """One row per method: mean trials, completed, pruned, epochs, best validation and the winners' test accuracy
    (mean and sample standard deviation over the repeated searches; NaN for one search)."""
    rows = []
    for method, runs in results.items():
        c = [counts(r) for r in runs]
        vals = [r["best"]["value"] if r["best"] else np.nan for r in runs]
        rows.append(
            {
                "method": method,
                "trials": float(np.mean([x["trials"] for x in c])),
                "pruned": float(np.mean([x["pruned"] for x in c])),
                "epochs": float(np.mean([x["epochs"] for x in c])),
                "seconds": float(np.mean([r["seconds"] for r in runs])),
                "best val": float(np.nanmean(vals)),
                "test mean": float(np.mean(tests[method])),
                "test std": stats.sample_sd(tests[method]),
            }
        )
    return rows
