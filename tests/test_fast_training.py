"""Chapter 16: throughput arithmetic, fit's speed options (defaults keep behaviour, bfloat16 on a CPU, float16
refused there) and the data-parallel launchers (too many processes refused; two processes match one)."""

import json

import numpy as np
import pytest

from helpers import fast_training, tuning
from helpers import keras as hk  # noqa: I001
from helpers import torch as ht  # torch before TensorFlow in one process

BOOKS = {"torch": ht, "keras": hk}


# --- framework-neutral arithmetic -----------------------------------------------------------------------------


def test_images_per_second_and_ratios():
    assert fast_training.images_per_second(640, 2.0) == 320.0
    rates = {"plain": 100.0, "bf16": 50.0, "channels_last": 250.0}
    assert fast_training.ratios(rates, "plain") == {"plain": 1.0, "bf16": 0.5, "channels_last": 2.5}
    table = fast_training.speed_table(rates, "plain")
    assert list(table.index) == list(rates) and table["ratio to plain"].tolist() == [1.0, 0.5, 2.5]
    with pytest.raises(ValueError, match="baseline"):
        fast_training.ratios(rates, "fp32")
    with pytest.raises(ValueError, match="seconds > 0"):
        fast_training.images_per_second(10, 0.0)


def test_median_seconds_skips_the_warm_up_and_takes_the_median():
    calls = []

    def run():
        calls.append(1)

    seconds = fast_training.median_seconds(run, repeats=3, warmup=2)
    assert len(calls) == 5 and 0 <= seconds < 0.1
    assert fast_training.max_difference([1.0, 2.0, 3.0], [1.0, 2.5, 2.9]) == pytest.approx(0.5)


def test_precision_choice_per_device():
    assert tuning.choose_precision(None, "cpu", False) == "float32"
    assert tuning.choose_precision(None, "cuda", True) == "float32"  # one meaning on every device: opt in
    assert tuning.choose_precision("bfloat16", "cuda", True) == "bfloat16"
    assert tuning.choose_precision(None, "cuda", False) == "float32"
    assert tuning.choose_precision("bfloat16", "cpu", False) == "bfloat16"  # allowed on a CPU: it runs
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        tuning.choose_precision("float16", "cpu", False)
    with pytest.raises(ValueError, match="no bfloat16 support"):
        tuning.choose_precision("bfloat16", "cuda", False)
    with pytest.raises(ValueError, match="precision must be"):
        tuning.choose_precision("fp16", "cuda", True)


def test_check_processes():
    assert fast_training.check_processes(2, 2, "CPU cores") == 2
    with pytest.raises(ValueError, match="only 2 CPU cores"):
        fast_training.check_processes(3, 2, "CPU cores")
    with pytest.raises(ValueError, match="positive integer"):
        fast_training.check_processes(0, 2, "CPU cores")


# --- fit's speed options, both frameworks ------------------------------------------------------------------------


def _data(n=64):
    rng, y = np.random.default_rng(0), np.arange(n) % 10
    return (rng.normal(size=(n, 28, 28, 1)) + 0.3 * y[:, None, None, None]).astype(np.float32), y  # learnable


def _fit(book, **options):
    x, y = _data()
    book.seed(0)
    model = book.small_cnn(10)
    history = book.fit(model, (x, y), (x[:32], y[:32]), epochs=2, batch_size=32, verbose=False, **options)
    history.pop("epoch_seconds")
    return history, model


def _weights(model):
    if hasattr(model, "get_weights"):  # Keras
        return model.get_weights()
    return [p.detach().numpy().copy() for p in model.parameters()]


@pytest.mark.parametrize("framework", BOOKS)
def test_fit_defaults_are_the_plain_float32_loop_on_a_cpu(framework):
    book = BOOKS[framework]
    assert book.training_precision() == "float32"
    default, model_a = _fit(book)
    explicit, model_b = _fit(book, precision="float32", channels_last=False, compile=False)
    assert default == explicit  # same seed, same history, to the last bit
    assert all(np.array_equal(a, b) for a, b in zip(_weights(model_a), _weights(model_b)))


@pytest.mark.parametrize("framework", BOOKS)
def test_speed_options_default_to_off_on_every_device(framework, monkeypatch):
    """None resolves to the plain step whatever the device: chapter 2's written-out epoch equals `fit` on a GPU too."""
    core = BOOKS[framework].core
    monkeypatch.setattr(core, "device", lambda: "cuda")
    monkeypatch.setattr(core, "bfloat16_supported", lambda: True)
    precision, channels_last, compile = core.precision_options(None, None, None)
    assert precision == "float32" and compile is False
    assert channels_last is (framework == "keras")  # Keras images are NHWC already: nothing to change
    assert core.precision_options("bfloat16", True, True) == ("bfloat16", True, True)  # asked for: given


@pytest.mark.parametrize("framework", BOOKS)
def test_gpu_math_sets_and_prints_each_setting(framework, capsys, monkeypatch):
    """Runs on a CPU: the flags are set and read back there too (they change nothing without a GPU)."""
    book = BOOKS[framework]
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    monkeypatch.setenv("TF_CUDNN_USE_AUTOTUNE", "1")  # restored after the test
    try:
        fast = book.gpu_math(tf32=True, deterministic=False, benchmark=True)
        assert fast == {"tf32": True, "deterministic": False, "benchmark": True}
        assert "GPU math: tf32=on, deterministic=off, benchmark=on" in capsys.readouterr().out
        strict = book.gpu_math(tf32=False, deterministic=True, benchmark=False)
        assert strict == {"tf32": False, "deterministic": True, "benchmark": False}
        assert "GPU math: tf32=off, deterministic=on, benchmark=off" in capsys.readouterr().out
        if framework == "torch":
            import torch

            assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
            assert not torch.backends.cuda.matmul.allow_tf32 and torch.are_deterministic_algorithms_enabled()
        else:
            import keras

            model = book.small_cnn(10)
            with pytest.warns(UserWarning, match="jit_compile"):
                model.compile(optimizer="adam", loss="mse", jit_compile=True)
            assert model.jit_compile is False  # Keras turns XLA off under op determinism, even when asked
            del keras
        with pytest.raises(ValueError, match="deterministic=True needs benchmark=False"):
            book.gpu_math(deterministic=True, benchmark=True, verbose=False)
    finally:
        book.gpu_math(tf32=False, deterministic=False, benchmark=False, verbose=False)  # the CPU's state


@pytest.mark.parametrize("framework", BOOKS)
def test_bfloat16_on_a_cpu_runs_with_float32_weights_and_close_losses(framework):
    book = BOOKS[framework]
    plain, _ = _fit(book)
    half, model = _fit(book, precision="bfloat16")
    assert np.allclose(half["loss"], plain["loss"], atol=0.05), (half["loss"], plain["loss"])
    assert half["loss"] != plain["loss"]  # it really computed in bfloat16
    assert all(w.dtype == np.float32 for w in _weights(model))
    assert book.predict(model, _data()[0][:4]).dtype == np.float32  # float32 again after fit
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        book.fit(model, _data(), precision="float16", verbose=False)
    with pytest.raises(ValueError, match="channels_last must be"):
        book.fit(model, _data(), channels_last="yes", verbose=False)


@pytest.mark.parametrize("framework", BOOKS)
def test_step_rate_restores_the_weights(framework):
    book = BOOKS[framework]
    book.seed(0)
    model = book.small_cnn(10)
    before = _weights(model)
    rate = book.step_rate(model, _data(), batch_size=16, steps=2, repeats=1)
    assert rate > 0
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(model)))


# --- data parallelism ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("framework", BOOKS)
def test_launcher_refuses_more_processes_than_devices(framework, tmp_path):
    too_many = fast_training.available_cpus() + 1
    with pytest.raises(ValueError, match=f"{too_many} data-parallel processes"):
        BOOKS[framework].launch_data_parallel(tmp_path / "never_written.py", processes=too_many)


STEPS, BATCH, LR = 6, 32, 0.05


def _reference_torch(script, x, y):
    """One process, no DDP, the whole global batch each step: what the two processes must reproduce."""
    import torch

    namespace = {}
    exec(script, namespace)  # defines small_cnn without running main()
    torch.manual_seed(0)
    model = namespace["small_cnn"](x.shape[-1], 10)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    order = np.random.default_rng(0).permutation(np.resize(np.arange(len(y)), STEPS * BATCH))
    xt, yt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y).long()
    losses = []
    for step in range(STEPS):
        batch = torch.from_numpy(order[step * BATCH : (step + 1) * BATCH])
        loss = torch.nn.functional.cross_entropy(model(xt[batch]), yt[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _reference_keras(script, x, y):
    import keras
    import tensorflow as tf

    namespace = {}
    exec(script, namespace)
    keras.utils.set_random_seed(0)
    model = namespace["small_cnn"](x.shape[1:], 10)
    opt = keras.optimizers.SGD(LR, momentum=0.9)
    order = np.random.default_rng(0).permutation(np.resize(np.arange(len(y)), STEPS * BATCH))
    losses = []
    for step in range(STEPS):
        batch = order[step * BATCH : (step + 1) * BATCH]
        with tf.GradientTape() as tape:
            logits = model(x[batch], training=True)
            loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y[batch], logits, from_logits=True))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        losses.append(float(loss))
    return losses


@pytest.mark.skipif(fast_training.available_cpus() < 2, reason="two data-parallel processes need two cores")
@pytest.mark.parametrize("framework", BOOKS)
def test_two_data_parallel_processes_match_one(framework, tmp_path):
    book = BOOKS[framework]
    x, y = _data(96)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    script = book.data_parallel_script()
    (tmp_path / "train.py").write_text(script)
    args = [tmp_path / "data.npz", tmp_path / "out.json", "--steps", STEPS, "--batch-size", BATCH, "--lr", LR]
    book.launch_data_parallel(tmp_path / "train.py", processes=2, args=args, timeout=240)
    result = json.loads((tmp_path / "out.json").read_text())
    reference = (_reference_torch if framework == "torch" else _reference_keras)(script, x, y)
    assert result["processes"] == 2 and len(result["losses"]) == STEPS
    assert fast_training.max_difference(result["losses"], reference) < 1e-4, (result["losses"], reference)
    assert reference[-1] < reference[0]  # it trained
    if framework == "keras":  # the script's second route: compile and fit inside strategy.scope()
        assert fast_training.max_difference(result["fit_losses"], reference) < 1e-4, (result["fit_losses"], reference)
