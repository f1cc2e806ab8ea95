"""The chapter map: each chapter's slug, folder, notebooks, source, modules and tests, in book order.

A chapter's slug is its notebooks' stem (`finetuning_strategies` for
book/03_finetuning_strategies/finetuning_strategies_torch.ipynb). It is meant to name the chapter's modules at
every level: helpers/<slug>.py (the framework-neutral part), helpers/torch/<slug>.py and helpers/keras/<slug>.py
(the wings), tests/test_<slug>.py (a second file: tests/test_<slug>_<aspect>.py). The base layers that every
chapter builds on keep their own names (`BASE_LAYERS`).

tests/test_chapters_map.py holds this table true to the files on disk, and lists the chapters whose modules do not
follow the slug yet. scripts/claims.py reads from it which wing modules each chapter's ledger entry depends on.
Standard library only; no notebook imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

LEVELS = ("neutral", "torch", "keras")
WINGS = ("torch", "keras")

# Modules every chapter builds on, by level (file stems; `__init__` is the package itself). They keep their names.
BASE_LAYERS = {
    # models: the settings both wings' models.py build networks from (the small CNN, EfficientNet-Lite0's names);
    # text: the text datasets and the tokenizer (chapters 9, 14, 20); tuning: the framework-neutral settings behind
    # both wings' training.py (losses, optimizers, schedules, the range test, block rates, precision rules);
    # stats: mean ± sd over seeds, one convention (chapters 11, 12 and 14)
    "neutral": (
        "__init__",
        "chapters",
        "checks",
        "claims",
        "config",
        "data",
        "metrics",
        "models",
        "plots",
        "registry",
        "stats",
        "text",
        "tuning",
    ),
    # core: tensors, input checks, precision, parameter groups (what training.py and the chapter modules share);
    # efficientnet / efficientnet_port: EfficientNet-Lite0 for models' backbone table (chapter 17 compares it);
    # convert: torchvision weights for the Keras port; mobilenet_port: the MobileNetV2 behind keras models;
    # internals: every use of Keras' and TensorFlow's private API
    "torch": ("__init__", "core", "models", "training", "efficientnet", "convert"),
    "keras": ("__init__", "core", "models", "training", "efficientnet_port", "mobilenet_port", "internals"),
}

# Base layers that are packages, not single files: every file under helpers/<stem>/ is part of the layer.
BASE_PACKAGES = ("registry",)  # the catalogue (one file per chapter's data), sources, checks, the cache, the CLI


@dataclass(frozen=True)
class Chapter:
    """One chapter: where its files are and which modules and tests are its own."""

    number: int
    slug: str
    folder: str  # book/<folder>/
    neutral: str | None = None  # helpers/<neutral>.py
    torch: str | None = None  # helpers/torch/<torch>.py
    keras: str | None = None  # helpers/keras/<keras>.py
    builds_on: tuple[str, ...] = ()  # base-layer wing modules the chapter teaches (its ledger entry depends on them)
    extras: tuple[str, ...] = ()  # other modules it owns (weight ports, data builders), paths under helpers/
    tests: tuple[str, ...] = ()  # its test files, under tests/

    @property
    def notebooks(self) -> tuple[str, str]:
        """The two generated notebooks, PyTorch first, relative to the repository root."""
        return tuple(f"book/{self.folder}/{self.slug}_{wing}.ipynb" for wing in WINGS)

    @property
    def source(self) -> str:
        """The one chapter source the notebooks are generated from."""
        return f"book/{self.folder}/{self.slug}.src.md"

    def module(self, level: str) -> str | None:
        """The chapter's own module at `level` ("neutral", "torch" or "keras"), or None."""
        return {"neutral": self.neutral, "torch": self.torch, "keras": self.keras}[level]

    def modules(self) -> list[str]:
        """Paths of the chapter's own modules and extras, relative to the repository root."""
        own = [module_path(level, self.module(level)) for level in LEVELS if self.module(level)]
        return own + [f"helpers/{extra}" for extra in self.extras]

    def wing_modules(self, wing: str) -> tuple[str, ...]:
        """The `wing` modules a claims entry depends on: the chapter's own, then the base layers it teaches."""
        own = self.module(wing)
        return ((own,) if own else ()) + self.builds_on


def module_path(level: str, stem: str) -> str:
    """helpers/<stem>.py for the neutral level (helpers/<stem>/__init__.py for a package in `BASE_PACKAGES`),
    helpers/<level>/<stem>.py for a wing."""
    if level != "neutral":
        return f"helpers/{level}/{stem}.py"
    return f"helpers/{stem}/__init__.py" if stem in BASE_PACKAGES else f"helpers/{stem}.py"


def _both(number, slug, folder, neutral=None, wing=None, **rest) -> Chapter:
    """A chapter whose wing module has the same name in both frameworks."""
    return Chapter(number, slug, folder, neutral, wing, wing, **rest)


CHAPTERS: tuple[Chapter, ...] = (
    _both(1, "pretrained_models", "01_pretrained_models", builds_on=("models",)),
    _both(2, "feature_extraction", "02_feature_extraction", builds_on=("models", "core", "training")),
    _both(
        3,
        "finetuning_strategies",
        "03_finetuning_strategies",
        "finetuning_strategies",
        "finetuning_strategies",
        builds_on=("core",),  # fit's parameter groups for discriminative rates
        tests=("test_finetuning_strategies.py",),
    ),
    _both(
        4, "source_pretraining", "04_source_pretraining", builds_on=("models",), tests=("test_source_pretraining.py",)
    ),
    _both(
        5,
        "losses_optimizers",
        "05_losses_optimizers",
        builds_on=("core", "training"),
        tests=("test_losses_optimizers.py",),
    ),
    _both(6, "regularization", "06_regularization", builds_on=("core", "training"), tests=("test_regularization.py",)),
    _both(7, "evaluation", "07_evaluation", builds_on=("core", "training"), tests=("test_evaluation.py",)),
    _both(
        8, "interpretation", "08_interpretation", "interpretation", "interpretation", tests=("test_interpretation.py",)
    ),
    _both(
        9, "text_classification", "09_text_models", None, "text_classification", tests=("test_text_classification.py",)
    ),
    _both(10, "few_labels", "10_few_labels", "few_labels", "few_labels", tests=("test_few_labels.py",)),
    _both(11, "distillation", "11_distillation", "distillation", "distillation", tests=("test_distillation.py",)),
    _both(
        12,
        "domain_adaptation",
        "12_domain_adaptation",
        "domain_adaptation",
        "domain_adaptation",
        tests=("test_domain_adaptation.py", "test_domain_adaptation_domains.py"),
    ),
    _both(
        13,
        "hyperparameter_search",
        "13_hyperparameter_search",
        "hyperparameter_search",
        "hyperparameter_search",
        tests=("test_hyperparameter_search.py",),
    ),
    _both(14, "peft", "14_peft", "peft", "peft", tests=("test_peft.py",)),
    _both(15, "export", "15_export", "export", "export", tests=("test_export.py",)),
    _both(
        16,
        "fast_training",
        "16_fast_training",
        "fast_training",
        "fast_training",
        builds_on=("core",),  # fit's precision, memory-format and compile options
        extras=("torch/data_parallel_train.py", "keras/data_parallel_train.py"),  # run as scripts, never imported
        tests=("test_fast_training.py",),
    ),
    _both(
        17,
        "backbones",
        "17_backbones",
        "backbones",
        "backbones",
        tests=("test_backbones.py",),
    ),
    _both(
        18,
        "detection",
        "18_detection",
        "detection",
        "detection",
        extras=("detector_onnx.py",),
        tests=("test_detection.py",),
    ),
    _both(
        19,
        "audio",
        "19_audio",
        "audio",
        "audio",
        extras=("keras/speech_port.py", "speech_synthesis.py"),
        tests=("test_audio.py",),
    ),
    _both(20, "image_text", "20_image_text", "image_text", "image_text", tests=("test_image_text.py",)),
)

BY_SLUG = {chapter.slug: chapter for chapter in CHAPTERS}


def names_off_slug(chapter: Chapter) -> set[str]:
    """The chapter's module and test paths that its slug does not name (empty when the chapter follows the rule)."""
    off = {
        module_path(level, chapter.module(level))
        for level in LEVELS
        if chapter.module(level) and chapter.module(level) != chapter.slug
    }
    named = (f"test_{chapter.slug}.py", f"test_{chapter.slug}_")
    return off | {f"tests/{test}" for test in chapter.tests if not test.startswith(named)}
