#!/usr/bin/env python3
"""Runs a picodense .tflite export in TensorFlow Lite Micro and LiteRT on every image and
compares their int8 outputs with picodense's.

usage: tflite_check.py MODEL.tflite IMAGES.u8 LABELS.u8 DOUBLE.i8 SINGLE.i8

IMAGES.u8 holds N images of the model's input width (u8 pixels), LABELS.u8 N labels, DOUBLE.i8
and SINGLE.i8 the N x classes int8 logits of picodense's int8 inference with TFLite Micro's
rounding (two roundings) and with LiteRT's (one rounding: its wheels are built with
TFLITE_SINGLE_ROUNDING). Prints one JSON object: per interpreter, the images whose outputs
equal picodense's (all classes, bit for bit), the first differing image, and the accuracy;
picodense's accuracies beside them. Needs the PyPI packages tflite-micro, ai-edge-litert and
numpy.
"""

import json
import sys

import numpy as np


def run_all(name, make, images):
    """Outputs of the interpreter `make()` returns, one row per image."""
    set_input, invoke, get_output = make()
    rows = []
    for image in images:
        set_input(image)
        invoke()
        rows.append(np.array(get_output()).reshape(-1))
    return np.stack(rows)


def tflm(path):
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_file(path)
    return (
        lambda x: interpreter.set_input(x, 0),
        interpreter.invoke,
        lambda: interpreter.get_output(0),
    )


def litert(path, resolver):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_path=path, experimental_op_resolver_type=getattr(OpResolverType, resolver)
    )
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]
    return (
        lambda x: interpreter.set_tensor(inp, x),
        interpreter.invoke,
        lambda: interpreter.get_tensor(out),
    )


def main():
    model, images_path, labels_path, double_path, single_path = sys.argv[1:6]
    labels = np.fromfile(labels_path, dtype=np.uint8)
    n = len(labels)
    pixels = np.fromfile(images_path, dtype=np.uint8).reshape(n, -1)
    double = np.fromfile(double_path, dtype=np.int8).reshape(n, -1)
    single = np.fromfile(single_path, dtype=np.int8).reshape(n, -1)
    # The model's input is int8 with zero point -128: the pixel minus 128.
    images = (pixels.astype(np.int16) - 128).astype(np.int8).reshape(n, 1, -1)
    report = {
        "images": n,
        "picodense_double_accuracy": float(np.mean(np.argmax(double, axis=1) == labels)),
        "picodense_single_accuracy": float(np.mean(np.argmax(single, axis=1) == labels)),
    }
    runs = {
        "tflm": (lambda: tflm(model), double),
        # LiteRT's default: its builtin kernels plus the XNNPACK delegate.
        "litert": (lambda: litert(model, "AUTO"), single),
        # LiteRT's reference kernels.
        "litert_reference": (lambda: litert(model, "BUILTIN_REF"), single),
    }
    for name, (make, expected) in runs.items():
        out = run_all(name, make, images).astype(np.int64)
        same = np.all(out == expected, axis=1)
        differing = np.flatnonzero(~same)
        report[name] = {
            "equal": int(same.sum()),
            "first_difference": None
            if len(differing) == 0
            else {
                "image": int(differing[0]),
                "interpreter": out[differing[0]].tolist(),
                "picodense": expected[differing[0]].tolist(),
            },
            "accuracy": float(np.mean(np.argmax(out, axis=1) == labels)),
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
