"""Write a real tabular dataset as train.csv and test.csv for picodense's CSV reader.

Usage: tabular_dataset.py OUT_DIR [--examples DIR] [--fetch]

The data is UCI's Image Segmentation set (Vision Group, University of Massachusetts, 1990):
3x3 pixel regions of 7 outdoor images, 19 numeric features each (colour means, edge and line
measures; one, region-pixel-count, is 9 on every row), and the class of the region's surface:
brickface, cement, foliage, grass, path, sky or window. Debian's `weka` package ships it in
/usr/share/doc/weka/examples/ as two ARFF files, and this script keeps that split as it is:
segment-challenge.arff (1500 rows) is train.csv and segment-test.arff (810 rows) is test.csv,
rows in file order and every value as the text the ARFF has, so the files are the same on
every machine without a random split. The last column, `label`, holds the class names.

--examples DIR reads the ARFF files from DIR (default: the weka package's folder). --fetch,
when they are not there, downloads the `weka` package with `apt-get download` (no install, so
no Java) into OUT_DIR/.weka and unpacks its files there with `dpkg-deb -x`; it needs the apt
lists (`apt-get update`).
"""
import argparse
import csv
import glob
import gzip
import os
import subprocess
import sys

WEKA_EXAMPLES = "/usr/share/doc/weka/examples"
FILES = {"train.csv": "segment-challenge.arff", "test.csv": "segment-test.arff"}


def find_arff(folder, name):
    for candidate in (name, name + ".gz"):
        path = os.path.join(folder, candidate)
        if os.path.exists(path):
            return path
    return None


def fetch(out_dir):
    """Unpacks the weka package (without installing it) and returns its examples folder."""
    cache = os.path.join(out_dir, ".weka")
    os.makedirs(cache, exist_ok=True)
    debs = glob.glob(os.path.join(cache, "weka_*.deb"))
    if not debs:
        subprocess.run(["apt-get", "download", "weka"], cwd=cache, check=True)
        debs = glob.glob(os.path.join(cache, "weka_*.deb"))
    if not debs:
        sys.exit("apt-get download weka left no weka_*.deb")
    root = os.path.join(cache, "root")
    subprocess.run(["dpkg-deb", "-x", sorted(debs)[-1], root], check=True)
    return os.path.join(root, WEKA_EXAMPLES.lstrip("/"))


def read_arff(path):
    """The attribute names and the data rows (lists of strings) of a dense ARFF file."""
    opener = gzip.open if path.endswith(".gz") else open
    names, rows, in_data = [], [], False
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("%"):
                continue
            if in_data:
                rows.append([cell.strip() for cell in line.split(",")])
            elif line.lower().startswith("@attribute"):
                names.append(line.split()[1])
            elif line.lower().startswith("@data"):
                in_data = True
    for row in rows:
        if len(row) != len(names):
            sys.exit(f"{path}: a row has {len(row)} fields, the header {len(names)}")
    return names, rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--examples", default=WEKA_EXAMPLES)
    parser.add_argument("--fetch", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)

    folder = args.examples
    if find_arff(folder, FILES["train.csv"]) is None and args.fetch:
        folder = fetch(args.out_dir)
    header = None
    for out_name, arff in FILES.items():
        path = find_arff(folder, arff)
        if path is None:
            sys.exit(
                f"{os.path.join(folder, arff)}: not found; install Debian's weka package, "
                "or pass --fetch to unpack it without installing"
            )
        names, rows = read_arff(path)
        if names[-1] != "class":
            sys.exit(f"{path}: the last attribute is {names[-1]!r}, expected 'class'")
        if header is not None and names != header:
            sys.exit(f"{path}: attributes differ from {FILES['train.csv']}")
        header = names
        out = os.path.join(args.out_dir, out_name)
        with open(out, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(names[:-1] + ["label"])
            writer.writerows(rows)
        classes = sorted({row[-1] for row in rows})
        print(f"{out}: {len(rows)} rows, {len(names) - 1} features, {len(classes)} classes "
              f"({', '.join(classes)}) from {path}")


if __name__ == "__main__":
    main()
