"""Train a Keras Dense network on a CSV train/test pair; print one JSON line per seed.

Usage: keras_tabular.py DATA_DIR [--hidden 64] [--epochs 100] [--batch-size 128]
                        [--seeds 0,1,2,3] [--label-column label]

DATA_DIR holds train.csv and test.csv with a header row (e.g. from tabular_dataset.py). The
model is Keras's counterpart of `picodense train` on CSV data: features standardized with the
training rows' mean and population std (a zero std becomes 1), hidden Dense + ReLU layers of
the given widths (a comma list), a Dense softmax head with one unit per class, RMSprop at
learning rate 1e-3, sparse categorical cross-entropy, shuffled batches. Labels that are all
integers 0..255 are class numbers; otherwise the classes are the sorted names, as picodense's
CSV reader does. This is a reference to compare with, not part of picodense.
"""
import argparse
import csv
import json
import os
import time

import numpy as np


def read_csv(path, label_column):
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    header = [name.strip() for name in rows[0]]
    label = header.index(label_column)
    body = [row for row in rows[1:] if row]
    x = np.array([[float(c) for i, c in enumerate(r) if i != label] for r in body], np.float32)
    y = [r[label].strip() for r in body]
    return x, y


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--hidden", default="64")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--label-column", default="label")
    args = parser.parse_args()

    x, y = read_csv(os.path.join(args.data_dir, "train.csv"), args.label_column)
    xt, yt = read_csv(os.path.join(args.data_dir, "test.csv"), args.label_column)
    if all(s.isdigit() and int(s) < 256 for s in set(y)):
        y, yt = np.array([int(s) for s in y]), np.array([int(s) for s in yt])
        classes = int(max(y.max(), yt.max())) + 1
    else:
        names = sorted(set(y))
        index = {n: i for i, n in enumerate(names)}
        y, yt = np.array([index[s] for s in y]), np.array([index[s] for s in yt])
        classes = len(names)
    mean = x.astype(np.float64).mean(axis=0)
    std = x.astype(np.float64).std(axis=0)
    std[std == 0] = 1
    x = ((x - mean) / std).astype(np.float32)
    xt = ((xt - mean) / std).astype(np.float32)
    hidden = [int(h) for h in args.hidden.split(",")]

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    from keras import layers

    for seed in (int(s) for s in args.seeds.split(",")):
        keras.utils.set_random_seed(seed)
        model = keras.Sequential(
            [keras.Input((x.shape[1],))]
            + [layers.Dense(h, activation="relu") for h in hidden]
            + [layers.Dense(classes, activation="softmax")]
        )
        model.compile(
            optimizer=keras.optimizers.RMSprop(learning_rate=1e-3),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        start = time.perf_counter()
        history = model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, verbose=0)
        fit = time.perf_counter() - start
        loss, accuracy = model.evaluate(xt, yt, verbose=0)
        print(json.dumps({
            "keras": keras.__version__, "seed": seed, "hidden": hidden, "epochs": args.epochs,
            "batch_size": args.batch_size, "train_rows": len(y), "test_rows": len(yt),
            "features": x.shape[1], "classes": classes, "fit_seconds": round(fit, 2),
            "final_train_loss": history.history["loss"][-1], "test_loss": loss,
            "test_accuracy": accuracy,
        }), flush=True)


if __name__ == "__main__":
    main()
