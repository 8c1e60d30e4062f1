"""Method registry and the plain-autoencoder baseline (`-m ae`): no mask, no skip connections, one pass."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from itermask_auto.methods.registry import METHODS, get_method
from itermask_auto.training import api
from itermask_auto.training.checkpoint import load_checkpoint, load_trained_model
from itermask_auto.training.network import PlainConvAutoencoder, build_network, count_parameters
from trainer_fixtures import make_plans, make_preprocessed_phantom_dataset


def test_registry_lists_the_three_methods():
    assert {"itermask3d", "oneshot", "ae"} <= set(METHODS)
    ae = get_method("ae")
    assert (ae.training_mask, ae.inference, ae.network) == ("none", "plain", "autoencoder")
    for name in ("itermask3d", "oneshot"):
        assert get_method(name).network == "unet"
    with pytest.raises(KeyError, match="unknown method"):
        get_method("vae")


def test_autoencoder_has_no_skip_path_and_matches_capacity():
    config = make_plans(patch=(32, 32, 32), features=(8, 16, 32, 64)).configuration("3d")
    unet, ae = build_network(config).eval(), build_network(config, "autoencoder").eval()
    assert isinstance(ae, PlainConvAutoencoder)
    # same stages and features: the encoders are identical, the AE decoder only lacks the concatenated inputs
    assert [type(m) for m in ae.encoder.modules()] == [type(m) for m in unet.encoder.modules()]
    assert sum(p.numel() for p in ae.encoder.parameters()) == sum(p.numel() for p in unet.encoder.parameters())
    assert 0.7 < count_parameters(ae) / count_parameters(unet) < 1.0
    assert not any("skip" in n or n.startswith("decoder.") for n, _ in ae.named_parameters())
    with torch.no_grad():
        assert ae(torch.zeros(2, 2, 32, 32, 32)).shape == (2, 1, 32, 32, 32)
    # the AE's output is a function of the 4x4x4 bottleneck alone: decode(encode(x)) reproduces it exactly
    x = torch.randn(1, 2, 32, 32, 32)
    with torch.no_grad():
        z = ae.encoder(x)
        assert torch.is_tensor(z) and z.shape == (1, 64, 4, 4, 4)
        y = z
        for up, stage in zip(ae.transpconvs, ae.stages):
            y = stage(up(y))
        torch.testing.assert_close(ae.output(y), ae(x), rtol=0, atol=0)
        # ... while the U-Net's decoder receives every encoder stage (the skips that let it copy its input)
        skips = unet.encoder(x)
        assert isinstance(skips, list) and [s.shape[-1] for s in skips] == [32, 16, 8, 4]
    with pytest.raises(ValueError, match="unknown network architecture"):
        build_network(config, "vit")


def test_autoencoder_2d_builds():
    config = make_plans(patch=(32, 32), features=(8, 16, 32)).configuration("2d")
    ae = build_network(config, "autoencoder")
    assert isinstance(ae.encoder.conv_op(1, 1, 1), torch.nn.Conv2d)
    with torch.no_grad():
        assert ae(torch.zeros(1, 2, 32, 32)).shape == (1, 1, 32, 32)


@pytest.fixture
def ae_roots(tmp_path, monkeypatch):
    name, plans = make_preprocessed_phantom_dataset(tmp_path, n_cases=4, patch=(32, 32, 32), features=(8, 16, 32))
    for var, sub in (("raw", "raw"), ("preprocessed", "preprocessed"), ("results", "results")):
        monkeypatch.setenv(f"ITERMASK_{var}", str(tmp_path / sub))
    return tmp_path, name


def test_ae_trains_calibrates_and_predicts_in_one_pass(ae_roots):
    from itermask_auto.inference.predictor import Predictor
    from itermask_auto.preprocessing.storage import load_case
    root, name = ae_roots
    fold_dir = api.run_training(990, "3d", 0, method="ae", epochs=2, iterations=3, num_threads=1)
    assert fold_dir.parent.name == "ae__itermaskPlans__3d"
    ckpt = load_checkpoint(fold_dir / "checkpoint_final.pth")
    assert ckpt["meta"]["method"] == "ae" and len(ckpt["history"]["train_loss"]) == 2
    assert not any(k.startswith("decoder.") for k in ckpt["network"])   # the trained weights are the AE's
    net, _, _, method = load_trained_model(fold_dir)
    assert method == "ae" and isinstance(net, PlainConvAutoencoder)
    assert (fold_dir / "calibration.json").is_file()

    p = Predictor.from_model_folder(fold_dir)
    data_dir = root / "preprocessed" / name / "itermask_3d"
    case = sorted(data_dir.glob("*.npz"))[0].stem
    data, hf, brain, _ = load_case(data_dir, case)
    result, stats = p.infer(data, hf, brain)
    assert result.procedure == "plain" and result.passes == 1 and stats["network_passes"] == 1
    assert result.anomaly_map.shape == brain.shape and np.isfinite(result.anomaly_map).all()
    assert (result.anomaly_map[~brain.astype(bool)] == 0).all() and result.anomaly_map[brain.astype(bool)].max() > 0
