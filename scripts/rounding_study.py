#!/usr/bin/env python3
"""How the rounding of parameter updates affects training in Q8.8: the digits network
trained on the device (reference backend, bit-exact with the gateware) with updates rounded
to nearest and stochastically, next to float64 SGD from the same initialisation.

    python scripts/rounding_study.py --epochs 10 30
"""

import argparse
import platform
import time

import numpy as np

from tinytpu_hdl import Accelerator, TPUConfig
from tinytpu_hdl.demos.digits import digits_model, load_digits_split, train_float


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--n", type=int, default=8)
    args = parser.parse_args()
    x, y, xt, yt = load_digits_split()
    onehot = np.eye(10)[y]
    cfg = TPUConfig(n=args.n, ub_depth=65536, acc_depth=256, imem_depth=1024)
    print(f"# digits 64-32-10, MSE, SGD lr {args.lr}, batch {args.batch}, N={args.n}; "
          f"{platform.machine()}, {time.strftime('%Y-%m-%d')}")
    print("| epochs | updates | final train loss | test accuracy |")
    print("| --- | --- | --- | --- |")
    for epochs in args.epochs:
        for rounding in ("nearest", "stochastic"):
            model = digits_model()
            acc = Accelerator(cfg)
            losses = acc.train(model, x, onehot, lr=args.lr, epochs=epochs,
                               batch_size=args.batch, rounding=rounding)
            accuracy = np.mean(np.argmax(acc.forward(model, xt), axis=1) == yt)
            print(f"| {epochs} | device, {rounding} | {losses[-1]:.4f} | {100 * accuracy:.1f}% |")
        model = digits_model()
        losses = train_float(model, x, onehot, lr=args.lr, epochs=epochs, batch_size=args.batch)
        accuracy = np.mean(np.argmax(model.forward_float(xt), axis=1) == yt)
        print(f"| {epochs} | float64 | {losses[-1]:.4f} | {100 * accuracy:.1f}% |")


if __name__ == "__main__":
    main()
