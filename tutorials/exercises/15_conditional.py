"""Tutorial 15 exercise: the conditional VAE's labels, one-hot, as inputs of a network.

Derivation: tutorials/derivations.md#conditional-vae. A conditional VAE feeds
each network [x | onehot(y)]: the input and, as the last C columns, the
label. Write the bodies, then

    npvae exercises check conditional

compares the one-hot labels and the first layer's output with npvae's, and
each gradient with central differences, and names the usual mistakes (the
label columns kept in dx, the wrong columns dropped, the labels in the wrong
order). Stuck: `--show-solution` prints a solution.
"""

import numpy as np


def onehot(y, n_classes):
    """The one-hot rows of integer labels: onehot[b, c] = 1 if y[b] == c, else 0 (floats).

    Shapes: y (B,) integers in [0, n_classes) -> (B, C), C = n_classes.
    Derivation: derivations.md#conditional-vae.

    Hint: a batch need not hold every class; the width is n_classes.
    """
    raise NotImplementedError("onehot: write it here")


def labelled_forward(x, onehot, W, b):
    """The first dense layer of a conditional network: out = [x | onehot] W + b.

    Shapes: x (R, n), onehot (B, C), W (n + C, H), b (H,) -> out (R, H).
    R is a multiple of B: k samples of the B examples, sample-major (row
    i B + b is sample i of example b, as the k-sample objectives lay them
    out), so each example's label row comes back every B rows.
    Derivation: derivations.md#conditional-vae.
    """
    raise NotImplementedError("labelled_forward: write it here")


def labelled_backward(dout, x, onehot, W):
    """The gradients of L = sum(dout * out) for out = labelled_forward(x, onehot, W, b): (dx, dW, db).

    Shapes: dout (R, H), x (R, n), onehot (B, C), W (n + C, H)
        -> dx (R, n), dW (n + C, H), db (H,).
    Derivation: derivations.md#conditional-vae.

    Hints: it is the dense layer's backward with u = [x | onehot] as input.
    The labels are data: dx is the gradient of x alone, the first n columns
    of du. Their rows of W are weights like any other: dW = u^T dout, whose
    label rows sum dout over each class's rows.
    """
    raise NotImplementedError("labelled_backward: write it here")
