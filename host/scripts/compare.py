"""Train the Keras example (or a numpy version of it) on an IDX dataset; print one JSON line.

Usage: compare.py keras|keras-jax|numpy DATA_DIR EPOCHS BATCH_SIZE SEED [HIDDEN]
keras runs Keras 3 on TensorFlow, keras-jax on JAX (the same model code, another backend).
HIDDEN is the hidden layers' widths, comma-separated (default 512). The model, optimizer, loss,
batch size and data scaling are those of `picodense train`: inputs and classes come from the
files.
"""
import gzip
import json
import os
import resource
import sys
import time

import numpy as np


def read_idx(data_dir, stem):
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rb") as f:
                raw = f.read()
            dims = raw[3]
            shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
            return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)
    sys.exit(f"{data_dir}: no {stem}[.gz]")


def load(data_dir):
    x = read_idx(data_dir, "train-images-idx3-ubyte")
    x = x.reshape(len(x), -1)
    y = read_idx(data_dir, "train-labels-idx1-ubyte")
    xt = read_idx(data_dir, "t10k-images-idx3-ubyte")
    xt = xt.reshape(len(xt), -1)
    yt = read_idx(data_dir, "t10k-labels-idx1-ubyte")
    return x, y, xt, yt


def widths(x, y, yt, hidden):
    return [x.shape[1], *hidden, int(max(y.max(), yt.max())) + 1]


def run_keras(x, y, xt, yt, epochs, batch, seed, hidden):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    sizes = widths(x, y, yt, hidden)
    model = keras.Sequential(
        [keras.Input((sizes[0],))]
        + [layers.Dense(w, activation="relu") for w in sizes[1:-1]]
        + [layers.Dense(sizes[-1], activation="softmax")]
    )
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x = x.astype("float32") / 255
    xt = xt.astype("float32") / 255
    start = time.perf_counter()
    history = model.fit(x, y, epochs=epochs, batch_size=batch, verbose=0)
    fit = time.perf_counter() - start
    loss, accuracy = model.evaluate(xt, yt, verbose=0)
    return fit, loss, accuracy, history.history["loss"]


def run_numpy(x, y, xt, yt, epochs, batch, seed, hidden):
    rng = np.random.default_rng(seed)

    def glorot(fan_in, fan_out):
        limit = np.sqrt(6 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32)

    sizes = widths(x, y, yt, hidden)
    params = []
    for fan_in, fan_out in zip(sizes, sizes[1:]):
        params += [glorot(fan_in, fan_out), np.zeros(fan_out, np.float32)]
    velocity = [np.zeros_like(p) for p in params]
    lr, rho, eps = np.float32(1e-3), np.float32(0.9), np.float32(1e-7)
    layers = len(params) // 2

    def forward(xb):
        acts = [xb]
        for l in range(layers - 1):
            acts.append(np.maximum(acts[-1] @ params[2 * l] + params[2 * l + 1], 0))
        z = acts[-1] @ params[-2] + params[-1]
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        return acts, p

    losses = []
    start = time.perf_counter()
    for _ in range(epochs):
        order = rng.permutation(len(x))
        total = 0.0
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            xb = x[idx].astype(np.float32) / 255
            yb = y[idx]
            acts, p = forward(xb)
            rows = len(idx)
            total += -np.log(p[np.arange(rows), yb] + 1e-30).sum()
            g = p
            g[np.arange(rows), yb] -= 1
            g /= rows
            grads = [None] * len(params)
            for l in reversed(range(layers)):
                grads[2 * l] = acts[l].T @ g
                grads[2 * l + 1] = g.sum(axis=0)
                if l > 0:
                    g = g @ params[2 * l].T
                    g[acts[l] <= 0] = 0
            for param, grad, v in zip(params, grads, velocity):
                v *= rho
                v += (1 - rho) * grad * grad
                param -= lr * grad / np.sqrt(v + eps)
        losses.append(total / len(x))
    fit = time.perf_counter() - start
    _, p = forward(xt.astype(np.float32) / 255)
    loss = float(-np.log(p[np.arange(len(yt)), yt] + 1e-30).mean())
    accuracy = float((p.argmax(axis=1) == yt).mean())
    return fit, loss, accuracy, losses


def main():
    mode, data_dir, epochs, batch, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    hidden = [int(w) for w in (sys.argv[6] if len(sys.argv) > 6 else "512").split(",")]
    x, y, xt, yt = load(data_dir)
    if mode == "keras-jax":
        # Keras reads its backend once, at import.
        os.environ["KERAS_BACKEND"] = "jax"
    run = {"keras": run_keras, "keras-jax": run_keras, "numpy": run_numpy}[mode]
    fit, loss, accuracy, losses = run(x, y, xt, yt, epochs, batch, seed, hidden)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "fit_seconds": fit,
        "test_loss": float(loss),
        "test_accuracy": float(accuracy),
        "epoch_losses": [float(v) for v in losses],
        "peak_rss_mb": peak_mb,
    }))


if __name__ == "__main__":
    main()
