"""scikit-learn reference for the Random Forest baseline.

Reads the feature rows tools/benchref/forest.go exported (the Go model's own
encoding: port PCA components, protocol bits, direction, frame length,
interval), fits RandomForestClassifier with the seed's 100 trees on both
cores and scores the held-out rows. Prints one line:
    fit_s <seconds> cpu_s <seconds, all threads> accuracy <share> rows <n>
"""
import sys
import time

import numpy as np
from sklearn.ensemble import RandomForestClassifier


def load(prefix, cols):
    x = np.fromfile(prefix + ".x.f32", dtype="<f4").reshape(-1, cols)
    y = np.fromfile(prefix + ".y.i32", dtype="<i4")
    if len(x) != len(y):
        sys.exit(f"{prefix}: {len(x)} rows but {len(y)} labels")
    return x, y


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: forest_ref.py DIR COLS JOBS")
    folder, cols, jobs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    xtr, ytr = load(folder + "/train", cols)
    xte, yte = load(folder + "/test", cols)
    clf = RandomForestClassifier(n_estimators=100, n_jobs=jobs, random_state=1)
    start, cpu = time.perf_counter(), time.process_time()
    clf.fit(xtr, ytr)
    took, cpu = time.perf_counter() - start, time.process_time() - cpu
    acc = float(np.mean(clf.predict(xte) == yte))
    print(f"fit_s {took:.3f} cpu_s {cpu:.3f} accuracy {acc:.4f} rows {len(ytr)}")


if __name__ == "__main__":
    main()
