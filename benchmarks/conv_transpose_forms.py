"""A transposed convolution's forward in its two forms: col2im (scatter) and phases (gather).

For each of the conv preset's three transposed convolutions (batch 128,
float32; ``npvae.vae.build_stacks``), the forward as ``ConvTranspose2D``
computes it with col2im (``conv.col2im_batch_last``) and phase by phase
(``npvae.convphases``), with 1 and 2 of npvae's threads, the two forms
alternating within each thread count; medians of ``--repeats`` in ms. The
two forms' outputs are compared (largest difference relative to the
largest output). The rule ``convphases.gathers`` (phases when C_in < C_out)
is read off this table.

Usage: ``python benchmarks/conv_transpose_forms.py [--repeats 21] [--threads 1,2]``
"""

if __name__ == "__main__":
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import statistics

import numpy as np

from benchmarks import _common

LAYERS = [((32, 64, 3, 2, 1, 1), 7), ((64, 32, 3, 2, 1, 1), 14), ((32, 1, 3, 1, 1, 0), 28)]


def forms(conv, convphases, layer, x):
    """{form: function computing the layer's forward of x in that form}."""
    _, Ho, Wo = layer.output_shape(*x.shape[2:])
    W, b = layer.params["W"], layer.params["b"]

    def col2im():
        chosen = conv.gathers
        conv.gathers = lambda c_in, c_out: False
        try:
            return layer.forward(x)
        finally:
            conv.gathers = chosen

    def phases():
        return convphases.conv_transpose_phases(conv.batch_last(x), W, b, layer.stride,
                                                layer.padding, (Ho, Wo)).transpose(3, 0, 1, 2)
    return {"col2im": col2im, "phases": phases}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", default="1,2", help="npvae's thread counts, e.g. 1,2")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from npvae import conv, convphases, threads

    rng = np.random.default_rng(0)
    rows, results = [], []
    for (c_in, c_out, *rest), size in LAYERS:
        layer = conv.ConvTranspose2D(c_in, c_out, *rest, rng=rng)
        layer.params["b"][...] = rng.standard_normal(c_out)
        # batch-last memory, as a layer's output before it is
        x = rng.standard_normal((c_in, size, size, args.batch)).astype(np.float32)
        x = x.transpose(3, 0, 1, 2)
        functions = forms(conv, convphases, layer, x)
        a, b = functions["col2im"](), functions["phases"]()
        difference = float(np.abs(a - b).max() / np.abs(a).max())
        for n in (int(t) for t in args.threads.split(",")):
            threads.set_threads(n)
            times = _common.alternating_ms(functions, args.repeats, warmup=3)
            ms = {form: statistics.median(t) for form, t in times.items()}
            chosen = "phases" if convphases.gathers(c_in, c_out) else "col2im"
            rows.append([repr(layer), n, ms["col2im"], ms["phases"],
                         ms["phases"] / ms["col2im"], chosen])
            results.append({"layer": repr(layer), "input": [args.batch, c_in, size, size],
                            "threads": n, "median_ms": ms, "ms": times, "chosen": chosen,
                            "max_difference_relative": difference})
    _common.report("conv_transpose_forms", rows,
                   ["layer", "threads", "col2im ms", "phases ms", "phases/col2im", "chosen"],
                   f"forward, batch {args.batch}, float32, medians of {args.repeats}", args,
                   results=results)


if __name__ == "__main__":
    main()
