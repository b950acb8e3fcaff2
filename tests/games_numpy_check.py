#!/usr/bin/python3
# games_numpy_check.py: the `game` kind's update spectral radii on a bilinear game against
# matrices built independently in numpy (I - lr J, I - lr J + lr^2 J^2, I - lr (J + gamma J^T J),
# I - lr (J + lambda A^T J), I - lr J^T J, the optimistic 2d x 2d matrix and the alternating
# block matrix), and the observed late rate of each run. Not part of `make test` (needs numpy).
# Usage: /usr/bin/python3 tests/games_numpy_check.py [build/tdlab]
# Measured (A = [[1, 2], [0.5, -1]], lr 0.05, 3000 steps): predicted equals numpy to 12 digits
# for all seven rules; the late observed rate agrees to 1e-6 (alternating: 0.99999 vs 1).
import json, subprocess, sys
import numpy as np
TDLAB = sys.argv[1] if len(sys.argv) > 1 else 'build/tdlab'
A = np.array([[1.0, 2.0], [0.5, -1.0]]); nx, ny = A.shape; d = nx + ny
J = np.block([[np.zeros((nx, nx)), A], [-A.T, np.zeros((ny, ny))]])
lr, gam, lam = 0.05, 0.7, 0.4
I = np.eye(d)
Asym = (J - J.T) / 2
Ms = {
 'simultaneous': I - lr * J,
 'extragradient': I - lr * J + lr**2 * J @ J,
 'consensus': I - lr * (J + gam * J.T @ J),
 'sga': I - lr * (J + lam * Asym.T @ J),
 'hamiltonian': I - lr * J.T @ J,
 'optimistic': np.block([[I - 2 * lr * J, lr * J], [I, np.zeros((d, d))]]),
}
Jxx, Jxy, Jyx, Jyy = J[:nx, :nx], J[:nx, nx:], J[nx:, :nx], J[nx:, nx:]
Ms['alternating'] = np.block([[np.eye(nx) - lr * Jxx, -lr * Jxy], [-lr * Jyx @ (np.eye(nx) - lr * Jxx), np.eye(ny) - lr * Jyy + lr**2 * Jyx @ Jxy]])
for alg, M in Ms.items():
    spec = {"kind": "game", "params": {"game": {"A": A.tolist()}, "algorithm": alg, "lr": lr, "gamma": gam, "lambda": lam, "steps": 3000, "analyze_every": 3000, "log_every": 100}}
    open('/tmp/games_numpy_check.json', 'w').write(json.dumps(spec))
    out = subprocess.run([TDLAB, 'run', '/tmp/games_numpy_check.json'], capture_output=True, text=True).stdout.splitlines()
    s = json.loads(out[-1])['summary']
    rho = max(abs(np.linalg.eigvals(M)))
    print(f"{alg:14s} numpy {rho:.12f} tdlab {s['predicted_rate']:.12f} late-observed {s['observed_rate_late']:.6f}")
