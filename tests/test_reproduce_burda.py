"""``benchmarks/reproduce_burda.py`` end to end on the tiny data set: one and two stochastic
layers trained, evaluated and paired by the one code path, and the JSON it writes."""

import json

import numpy as np
import pytest

from benchmarks import _common, reproduce_burda


@pytest.fixture()
def on_tiny_data(monkeypatch, tiny):
    """Every preset the script trains reads the tiny 4 x 4 data set instead of MNIST."""
    from npvae.config import TrainConfig

    from_preset = TrainConfig.from_preset.__func__
    monkeypatch.setattr(TrainConfig, "from_preset", classmethod(
        lambda cls, name, **overrides: from_preset(cls, name, data_dir=str(tiny), **overrides)))


def test_one_and_two_layers_are_trained_evaluated_and_paired(on_tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(_common, "RESULTS", tmp_path / "results")
    argv = ["--layers", "1,2", "--ks", "5", "--sampled-ks", "5", "--epochs", "1",
            "--eval-k", "3", "--runs", str(tmp_path / "runs")]
    reproduce_burda.main(argv)
    out = tmp_path / "results" / "reproduce_burda_two_layers.json"   # the two-layer default
    result = json.loads(out.read_text())
    rows = {(r["layers"], r["objective"]): r for r in result["rows"]}
    assert result["layers"] == [1, 2] and [r["preset"] for r in result["rows"]] == [
        "burda-vae", "burda-iwae", "burda-vae", "burda2-vae", "burda2-iwae"]
    assert sorted(rows) == [(1, "elbo"), (1, "elbo-sampled"), (1, "iwae"), (2, "elbo"), (2, "iwae")]
    assert [len(rows[n, "iwae"]["units_per_layer"]) for n in (1, 2)] == [1, 2]
    assert rows[2, "iwae"]["paper"] == 83.89 and rows[1, "iwae"]["paper"] == 85.54
    differences = {d.get("comparison") or (d.get("minuend"), d.get("subtrahend")): d
                   for d in result["differences"]}
    assert len(differences) == 6 and {"2 layers - 1 layer, IWAE", "2 layers - 1 layer, VAE",
                                      "IWAE - VAE, 2 layers", (None, None),
                                      ("elbo-sampled", "elbo"), ("iwae", "elbo-sampled")} == set(differences)
    # a paired mean is the difference of the two rows' means, minuend first
    for what, (a, b) in {"2 layers - 1 layer, VAE": ((2, "elbo"), (1, "elbo")),
                         "2 layers - 1 layer, IWAE": ((2, "iwae"), (1, "iwae")),
                         "IWAE - VAE, 2 layers": ((2, "iwae"), (2, "elbo"))}.items():
        assert np.isclose(differences[what]["difference"], rows[a]["nll"] - rows[b]["nll"])
        assert differences[what]["paired_standard_error"] > 0
    assert np.isclose(differences[None, None]["iwae_minus_vae"],
                      rows[1, "iwae"]["nll"] - rows[1, "elbo"]["nll"])
    # run again: the finished runs and their bounds are reused, not trained again
    reproduce_burda.main(argv + ["--out", str(tmp_path / "again.json")])
    again = json.loads((tmp_path / "again.json").read_text())
    assert all(r["train_seconds"] is None for r in again["rows"])
    assert [r["nll"] for r in again["rows"]] == [r["nll"] for r in result["rows"]]


def test_one_layer_stays_the_default_and_bad_layers_are_refused(on_tiny_data, tmp_path,
                                                                  monkeypatch, capsys):
    monkeypatch.setattr(_common, "RESULTS", tmp_path / "results")
    reproduce_burda.main(["--ks", "5", "--sampled-ks", "none", "--epochs", "1", "--eval-k", "3",
                          "--runs", str(tmp_path / "runs")])
    result = json.loads((tmp_path / "results" / "reproduce_burda.json").read_text())
    assert result["layers"] == [1] and [r["preset"] for r in result["rows"]] == ["burda-vae",
                                                                                 "burda-iwae"]
    assert [sorted(d) for d in result["differences"]] == [
        ["iwae_minus_vae", "k", "paired_standard_error", "seed"]]
    assert not (tmp_path / "results" / "reproduce_burda_two_layers.json").exists()
    with pytest.raises(SystemExit) as exit_info:
        reproduce_burda.main(["--layers", "1,3"])
    assert exit_info.value.code == 2
    assert "--layers must be 1, 2 or 1,2, got '1,3'" in capsys.readouterr().err
