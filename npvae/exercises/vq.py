"""Tutorial 17: the VQ-VAE's quantizer and the masked layer of its MADE prior.

Three exercises:

- ``quantize``: the forward (each position's nearest code; on a tie the
  lowest index, as ``np.argmin`` and npvae take it) and the straight-through
  backward (what the quantizer hands back of the decoder's gradient);
- ``vq_losses``: the codebook and commitment losses of each example and the
  gradients of their batch mean with respect to z_e and to the codebook;
- ``masked_dense``: MADE's masked layer, x (W * M) + b, forward and backward.

The references are npvae's own: ``VectorQuantizer.forward`` and
``VectorQuantizer.backward`` (``npvae.vq``) and ``MaskedDense`` (``npvae.made``),
and central differences of what each gradient is the gradient of: the
straight-through surrogate z_e + sg[z_q - z_e] for the decoder's path, the
commitment loss in z_e and the codebook loss in the codebook, with the codes
held. Every usual wrong answer below is computed from those references.
"""

import numpy as np

from ..gradcheck import noise_floor
from ..made import MaskedDense, masks
from ..vq import VectorQuantizer, squared_distances
from .judging import WRONG, B, Exercise, _close, fd
from .layers import layer_exercise

F, H, W, N = 3, 2, 2, 5   # z_e (B, F, H, W): B H W = 16 rows of F = 3 dimensions, N = 5 codes
BETA = 0.3                # not the usual 0.25: 1/0.25 = 4 = B would make "beta missing" and
                          # "1/B missing" the same factor


def quantizer_case():
    """The exercise's float64 quantizer and its input: (q, z_e (B, F, H, W)).

    Every code is some row's nearest, several rows share a code (so that a
    gradient scattered without adding up repeated codes shows), and no two
    codes are equally near (ties have their own case, ``TIE_*``)."""
    rng = np.random.default_rng(17)
    q = VectorQuantizer(N, F, beta=BETA, rng=rng, dtype=np.float64)
    q.codebook[...] = rng.standard_normal((N, F))
    drawn = rng.permutation(np.arange(B * H * W) % N).reshape(B, H, W)
    z_e = q.lookup(drawn) + 0.2 * rng.standard_normal((B, F, H, W))
    return q, z_e


# Three rows each as near to two codes, in numbers exact in binary: rows (0, -0.5), (-0.5, 0.5),
# (0.5, 0.5) against codes (1, 0), (-1, 0), (0, 1) tie codes 0 and 1, 1 and 2, 0 and 2.
TIE_CODEBOOK = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
TIE_Z_E = np.array([[0.0, -0.5, 0.5], [-0.5, 0.5, 0.5]]).reshape(1, 2, 1, 3)


def _quantizer_with(codebook):
    q = VectorQuantizer(*codebook.shape, beta=BETA, rng=np.random.default_rng(0), dtype=np.float64)
    q.codebook[...] = codebook
    return q


def code_mistakes(q, z_e):
    """The usual wrong codes for ``z_e``: ``{message: codes}``."""
    rows = q.to_rows(z_e)
    d = squared_distances(rows, q.codebook)                          # (B H W, N)
    by_position = np.moveaxis(d.reshape(B, H, W, N), -1, 1)          # (B, N, H, W)
    axis = ("is the argmin over the wrong axis ({}): each position's code is the argmin over the N "
            "codes of its distances")
    return {
        "is the farthest code: argmax where argmin belongs": d.argmax(axis=1).reshape(B, H, W),
        axis.format("over the rows, for each code its nearest row"): d.argmin(axis=0),
        axis.format("over the batch"): by_position.argmin(axis=0),
        axis.format("over the grid's rows"): by_position.argmin(axis=2),
        axis.format("over the grid's columns"): by_position.argmin(axis=3),
        f"reads the rows as z_e.reshape(-1, F), which mixes positions into the F = {F} dimensions: "
        "z_e is (B, F, H, W), so move F last first (np.moveaxis(z_e, 1, -1).reshape(-1, F))":
            squared_distances(z_e.reshape(-1, F), q.codebook).argmin(axis=1).reshape(B, H, W),
    }


def z_q_mistakes(q, z_e, codes):
    """The usual wrong z_q: ``{message: z_q}``."""
    rows = q.codebook[codes.reshape(-1)]
    return {"is z_e itself: the decoder sees the codes' vectors E[c]": z_e,
            f"is the rows E[c] (B H W, F) = {rows.shape}: lay them out as z_e, (B, F, H, W)": rows,
            "puts the rows back with reshape(B, F, H, W), which scrambles them: reshape to (B, H, W, F), "
            "then move F to axis 1": rows.reshape(B, F, H, W)}


def _valid_codes(got, shape):
    """``got`` as integer codes of ``shape`` in [0, N), or None."""
    a = np.asarray(got) if isinstance(got, np.ndarray) else None
    if a is None or a.shape != shape or a.dtype.kind not in "iu" or (a.size and (a.min() < 0 or a.max() >= N)):
        return None
    return a


def check_quantize_forward(attempt):
    q, z_e = quantizer_case()
    z_q, codes, _ = q.forward(z_e)
    got = attempt.call("quantize", ["z_q", "codes"], z_e.copy(), q.codebook.copy())
    if not got:
        return
    codes_ok = attempt.check("codes", got[1], codes, integers=True, candidates=code_mistakes(q, z_e))
    attempt.check("z_q", got[0], z_q, candidates=z_q_mistakes(q, z_e, codes))
    theirs = _valid_codes(got[1], codes.shape)
    if not codes_ok and attempt.lines[-1].status == WRONG and theirs is not None \
            and isinstance(got[0], np.ndarray) and _close(np.asarray(got[0], dtype=np.float64), q.lookup(theirs)):
        attempt.lines[-1].detail = "is E[c] of the codes returned, which are wrong (above)"
    if codes_ok:
        tie = _quantizer_with(TIE_CODEBOOK)
        ref = tie.nearest(TIE_Z_E)
        d = squared_distances(tie.to_rows(TIE_Z_E), TIE_CODEBOOK)
        last = (len(TIE_CODEBOOK) - 1 - d[:, ::-1].argmin(axis=1)).reshape(ref.shape)
        got = attempt.call("quantize", ["z_q (a tie)", "codes (a tie)"], TIE_Z_E.copy(), TIE_CODEBOOK.copy())
        if got:
            attempt.check("codes (a tie)", got[1], ref, integers=True, candidates={
                              "takes the last of two equally near codes: np.argmin, and npvae, take "
                              "the first, the lowest index": last})


def check_quantize_backward(attempt):
    q, z_e = quantizer_case()
    z_q, codes, _ = q.forward(z_e)
    dz_q = np.random.default_rng(171).standard_normal(z_e.shape)
    ref_dz_e = q.backward(dz_q, 0.0)            # no loss term: the decoder's gradient alone
    ref_dcodebook = q.grads["codebook"].copy()
    offset = z_q - z_e                          # sg[z_q - z_e]: a constant

    (numeric,) = fd(lambda: float(np.sum(dz_q * (z_e + offset))), z_e)
    got = attempt.call("quantize_backward", ["dz_e", "dcodebook"], dz_q.copy(), codes.copy(),
                       q.codebook.copy())
    if not got:
        return
    attempt.check("dz_e", got[0], ref_dz_e, numeric=numeric, candidates={
        "is all zeros: that is the true derivative (the argmin is piecewise constant, so z_q does not "
        "move with z_e almost everywhere) and teaches the encoder nothing; the straight-through "
        "estimator hands dz_q to z_e unchanged": np.zeros_like(ref_dz_e)})
    attempt.check("dcodebook", got[1], ref_dcodebook, candidates={
        "sends the decoder's gradient to the codebook (the derivative of the lookup E[c]): the decoder "
        "sees z_e + sg[z_q - z_e], so its gradient goes straight through to z_e, and the codebook "
        "learns from the codebook loss alone": q.onehot(codes).T @ q.to_rows(dz_q)})


def check_quantize(attempt):
    check_quantize_forward(attempt)
    check_quantize_backward(attempt)


def check_vq_losses(attempt):
    q, z_e = quantizer_case()
    z_q, codes, terms = q.forward(z_e)
    sums = np.sqrt(((z_e - z_q) ** 2).sum(axis=1)).reshape(B, -1).sum(axis=1)
    common = {f"averages over the {F * H * W} values of an example (F dimensions x H W positions) "
              "where npvae sums them: a loss in nats per example is a sum": terms.codebook / (F * H * W),
              "is the batch mean, one number: return one value per example, (B,)": terms.codebook.mean(),
              "sums the distances |z_e - z_q| where their squares belong": sums}
    got = attempt.call("vq_losses", ["codebook_loss", "commitment_loss"], z_e.copy(), z_q.copy(), BETA)
    if got:
        attempt.check("codebook_loss", got[0], terms.codebook, candidates={
            **common, "carries the weight beta, which belongs to the commitment loss": BETA * terms.codebook})
        attempt.check("commitment_loss", got[1], terms.commitment, candidates={
            **{m: BETA * v for m, v in common.items()},
            "lacks the weight beta: the commitment loss is beta |z_e - sg[E[c]]|^2": terms.codebook})
    check_vq_gradients(attempt)


def check_vq_gradients(attempt):
    q, z_e = quantizer_case()
    z_q, codes, terms = q.forward(z_e)
    ref_dz_e = q.backward(np.zeros_like(z_e), 1.0 / B)    # the two losses alone, batch mean
    ref_dcodebook = q.grads["codebook"].copy()
    floor = noise_floor(float(terms.codebook.mean() + terms.commitment.mean()))
    num_dz_e, = fd(lambda: float(q.forward(z_e, codes)[2].commitment.mean()), z_e)
    num_dcodebook, = fd(lambda: float(q.forward(z_e, codes)[2].codebook.mean()), q.params["codebook"])

    each_row = q.to_rows(2.0 / B * (z_q - z_e))           # each row's term of dE, before adding up
    one_row_each = np.zeros_like(ref_dcodebook)
    one_row_each[codes.reshape(-1)] += each_row           # the learner's buffered fancy index
    counts = np.bincount(codes.reshape(-1), minlength=N)[:, None]
    factor_2 = "lacks the 2 of d|a|^2 / da = 2 a"
    got = attempt.call("vq_losses_backward", ["dz_e", "dcodebook"], z_e.copy(), z_q.copy(), codes.copy(),
                       q.codebook.copy(), BETA)
    if not got:
        return
    attempt.check("dz_e", got[0], ref_dz_e, numeric=num_dz_e, floor=floor, candidates={
        "adds the codebook loss's gradient: in |sg[z_e] - E[c]|^2, z_e is under the stop-gradient, so only "
        "the commitment loss reaches z_e, 2 beta (z_e - z_q) / B": ref_dz_e * (1 + BETA) / BETA,
        "lacks beta: 2 (z_e - z_q) / B is the codebook loss's gradient (the stop-gradients swapped?); the "
        "commitment's is beta times it": ref_dz_e / BETA,
        factor_2: ref_dz_e / 2})
    attempt.check("dcodebook", got[1], ref_dcodebook, numeric=num_dcodebook, floor=floor, candidates={
        "adds the commitment loss's gradient: in beta |z_e - sg[E[c]]|^2 the codes are under the "
        "stop-gradient, so the commitment must not pull the codebook": ref_dcodebook * (1 + BETA),
        "is beta times the right answer, the commitment's weight on the codebook's gradient (the "
        "stop-gradients swapped?): the codebook loss has no beta": ref_dcodebook * BETA,
        factor_2: ref_dcodebook / 2,
        "keeps one row per code: dE[codes] += g does not add up repeated codes (numpy buffers a fancy "
        "index), so each code gets only its last row's term; np.add.at(dE, codes, g), or onehot^T g, "
        "adds them all": one_row_each,
        "is divided by each code's count n_v: the gradient sums its rows' terms, 2 (n_v E_v - m_v) / B, "
        "it does not average them": ref_dcodebook / counts})


def _masked_dense(rng):
    """MADE's output layer for 3 positions of 2 codes from 5 hidden units, mask [d'_o > d_j].

    The masked weights are moved off 0 (npvae starts them at 0, where a forgotten
    mask in the forward or in dx would change nothing): the mask must do its work."""
    layer = MaskedDense(5, 6, masks(3, 2, (5,))[1], rng=rng, init="pytorch", dtype=np.float64)
    layer.params["W"] += rng.normal(0.0, 0.5, layer.params["W"].shape) * (1 - layer.mask)
    return layer


def _masked_candidates(x, given, dout):
    W, M, b = given["W"], given["mask"], given["b"]
    return {"out": {"lacks the mask: the layer computes x (W * M) + b, and W's masked weights must not "
                    "count": x @ W + b},
            "dx": {"lacks the mask: dx = dout (W * M)^T, the weights the forward used": dout @ W.T},
            "dW": {"lacks the mask on dW: the masked weights took no part in the forward, so their "
                   "gradient is 0, dW = (x^T dout) * M (else the optimizer moves them and position t "
                   "starts to see its own code)": x.T @ dout},
            "db": {"is summed over axis 1 (the outputs) instead of axis 0 (the batch)": dout.sum(axis=1)}}


QUANTIZE = """
    F = codebook.shape[1]
    rows = np.moveaxis(z_e, 1, -1).reshape(-1, F)                    # (B H W, F), one row a position
    d = ((rows[:, None, :] - codebook[None, :, :]) ** 2).sum(axis=2)  # (B H W, N) squared distances
    codes = d.argmin(axis=1)                                         # the first of equally near codes
    z_q = np.moveaxis(codebook[codes].reshape(*z_e.shape[:1], *z_e.shape[2:], F), -1, 1)
    return z_q, codes.reshape(z_e.shape[:1] + z_e.shape[2:])"""

QUANTIZE_BACKWARD = """
    return dz_q.copy(), np.zeros_like(codebook)     # straight through; the codebook gets none of it"""

VQ_LOSSES = """
    sq = ((z_e - z_q) ** 2).reshape(len(z_e), -1).sum(axis=1)        # summed over F and the positions
    return sq, beta * sq"""

VQ_LOSSES_BACKWARD = """
    B, F = z_e.shape[0], z_e.shape[1]
    diff = z_e - z_q
    dz_e = 2 * beta * diff / B                                       # the commitment alone reaches z_e
    rows = np.moveaxis(-2 * diff / B, 1, -1).reshape(-1, F)          # d codebook loss / d E[c], per row
    dcodebook = np.zeros_like(codebook)
    np.add.at(dcodebook, codes.reshape(-1), rows)                    # adds up the rows sharing a code
    return dz_e, dcodebook"""

EXERCISES = [
    Exercise("quantize", "17_quantize.py", ("quantize", "quantize_backward"), "vector-quantization",
             check_quantize, {"quantize": QUANTIZE, "quantize_backward": QUANTIZE_BACKWARD},
             "vector quantization: each position's nearest code, and the straight-through backward"),
    Exercise("vq_losses", "17_vq_losses.py", ("vq_losses", "vq_losses_backward"), "vector-quantization",
             check_vq_losses, {"vq_losses": VQ_LOSSES, "vq_losses_backward": VQ_LOSSES_BACKWARD},
             "the codebook and commitment losses and their gradients, with the two stop-gradients"),
    layer_exercise("masked_dense", "17_masked_dense.py", _masked_dense, (B, 5), "masked-autoregressive-prior",
                   "MADE's masked layer x (W * M) + b: forward and backward",
                   {"masked_dense_forward": "return x @ (W * mask) + b",
                    "masked_dense_backward": "return dout @ (W * mask).T, (x.T @ dout) * mask, dout.sum(axis=0)"},
                   _masked_candidates, given=("mask",)),
]
