"""MesoNet: the authors' Keras weights give the Keras model's outputs, read as P(fake) = 1 - P(real)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_path
from deepshield import models
from deepshield.errors import ModelError

WEIGHTS = {
    "meso4": ("Meso4_DF.h5", "Meso4_F2F.h5"),
    "mesoinception4": ("MesoInception_DF.h5", "MesoInception_F2F.h5"),
}
CASES = [(name, f) for name, files in WEIGHTS.items() for f in files]


def weights(file: str) -> Path:
    return shared_path("data", "pretrained_mesonet", "weights", file)


def sample_crops() -> tuple[torch.Tensor, list[str]]:
    """The four sample crops as the authors read them: 256x256 (PIL nearest), /255 -> [4,3,256,256]."""
    root = shared_path("data", "pretrained_mesonet", "test_images")
    paths = sorted(root.glob("*/*.jpg"))
    assert len(paths) == 4
    arrays = [
        np.asarray(Image.open(p).convert("RGB").resize((256, 256), Image.NEAREST), np.float32)
        for p in paths
    ]
    x = torch.from_numpy(np.stack(arrays) / 255.0).permute(0, 3, 1, 2).contiguous()
    return x, [p.parent.name for p in paths]


def keras_mesonet(name: str):
    """The authors' Meso4 / MesoInception4 (classifiers.py) in Keras 3, its sigmoid split off.

    Layers are created in the authors' order and numbered per type as Keras 2 numbered them
    (conv2d_<k>, batch_normalization_<k>, dense_<k>), so the load order can be checked.
    Returns a model mapping NHWC [0,1] images to (logit z, sigmoid(z) = P(real)).
    """
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras", reason="keras 3 (test-only peer, `pip install keras`)")
    if keras.backend.backend() != "torch":
        pytest.skip(f"keras runs on {keras.backend.backend()}; set KERAS_BACKEND=torch")
    L = keras.layers
    counts: dict[str, int] = {}

    def named(kind: str) -> str:
        counts[kind] = counts.get(kind, 0) + 1
        return f"{kind}_{counts[kind]}"

    def conv(x, n, k, dilation=1):
        layer = L.Conv2D(
            n, k, padding="same", dilation_rate=dilation, activation="relu", name=named("conv2d")
        )
        return layer(x)

    def inception(x, a, b, c, d):
        x1 = conv(x, a, 1)
        x2 = conv(conv(x, b, 1), b, 3)
        x3 = conv(conv(x, c, 1), c, 3, 2)
        x4 = conv(conv(x, d, 1), d, 3, 3)
        return L.Concatenate(axis=-1)([x1, x2, x3, x4])

    x = inp = keras.Input((256, 256, 3))
    for i, pool in enumerate((2, 2, 2, 4)):
        if name == "mesoinception4" and i < 2:
            x = inception(x, *((1, 4, 4, 2), (2, 4, 4, 2))[i])
        else:
            x = conv(x, *((8, 3), (8, 5), (16, 5), (16, 5))[i])
        x = L.BatchNormalization(name=named("batch_normalization"))(x)
        x = L.MaxPooling2D(pool, padding="same")(x)
    y = L.Dense(16, name=named("dense"))(L.Dropout(0.5)(L.Flatten()(x)))
    y = L.Dropout(0.5)(L.LeakyReLU(negative_slope=0.1)(y))
    z = L.Dense(1, name=named("dense"))(y)
    return keras.Model(inp, [z, L.Activation("sigmoid")(z)])


def _signature(names: list[str]) -> list[tuple[str, int]]:
    """(layer type, creation rank within the type) of each name `<type>_<k>`."""
    split = [(n.rsplit("_", 1)[0], int(n.rsplit("_", 1)[1])) for n in names]
    return [(t, sorted(k2 for t2, k2 in split if t2 == t).index(k)) for t, k in split]


def deepshield_mesonet(name: str, file: str) -> torch.nn.Module:
    return models.load_weights(models.create(name), weights(file)).eval()


@pytest.mark.parametrize(("name", "file"), CASES)
def test_authors_weights_give_the_keras_outputs_as_p_fake(name, file):
    kmodel = keras_mesonet(name)
    kmodel.load_weights(str(weights(file)))  # Keras's own loader: by the file's layer order
    with h5py.File(weights(file), "r") as f:  # premise: Keras 3 loads in the order 2.1.5 saved
        saved = [
            n.decode() for n in f.attrs["layer_names"] if len(f[n.decode()].attrs["weight_names"])
        ]
    built = [layer.name for layer in kmodel.layers if layer.weights]
    assert _signature(saved) == _signature(built)

    crops, _ = sample_crops()
    x = torch.cat([crops, torch.rand(4, 3, 256, 256, generator=torch.Generator().manual_seed(0))])
    z_keras, p_real = (t.detach().cpu().double() for t in kmodel(x.permute(0, 2, 3, 1).numpy()))
    model = deepshield_mesonet(name, file)
    assert models.param_count(model) == sum(int(np.prod(w.shape)) for w in kmodel.trainable_weights)
    with torch.no_grad():
        logits = model(x).double()  # [8, 2]
    assert logits.shape == (8, 2) and torch.all(logits[:, 0] == 0)
    torch.testing.assert_close(-logits[:, 1:], z_keras, rtol=1e-5, atol=1e-4)
    p_fake = logits.softmax(1)[:, 1:]
    torch.testing.assert_close(p_fake, 1 - p_real, rtol=0, atol=1e-5)


def test_df_weights_rank_the_sample_fakes_above_the_sample_reals():
    """The authors' class order (df = 0, real = 1) read as P(fake): the DF models separate the crops."""
    x, labels = sample_crops()
    fake = torch.tensor([lab == "df" for lab in labels])
    for name, (df_file, _) in WEIGHTS.items():
        with torch.no_grad():
            p = deepshield_mesonet(name, df_file)(x).softmax(1)[:, 1]
        assert p[fake].min() > 0.5 > p[~fake].max(), (name, p)


def _damaged(tmp_path: Path, edit) -> Path:
    path = tmp_path / "damaged.h5"
    shutil.copy(weights("Meso4_DF.h5"), path)
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def test_a_kernel_of_the_wrong_shape_is_named_in_one_line(tmp_path):
    def widen(f):
        del f["conv2d_6/conv2d_6/kernel:0"]
        f["conv2d_6/conv2d_6"].create_dataset("kernel:0", data=np.zeros((5, 5, 8, 9), np.float32))

    with pytest.raises(ModelError) as e:
        models.load_weights(models.create("meso4"), _damaged(tmp_path, widen))
    msg = str(e.value)
    assert "\n" not in msg and "damaged.h5" in msg
    assert "conv2d_6 -> conv2.weight: file (9, 8, 5, 5) vs model (8, 8, 5, 5)" in msg
    assert "conv2d_6 -> conv2.bias" not in msg  # only what does not fit is listed


def test_a_missing_layer_and_the_other_architecture_list_every_mismatch(tmp_path):
    def drop(f):
        names = [n for n in f.attrs["layer_names"] if n != b"dense_4"]
        f.attrs["layer_names"] = np.array(names)

    with pytest.raises(ModelError, match="file has 9 weighted layers, model 10"):
        models.load_weights(models.create("meso4"), _damaged(tmp_path, drop))
    with pytest.raises(ModelError) as e:
        models.load_weights(models.create("mesoinception4"), weights("Meso4_DF.h5"))
    msg = str(e.value)
    assert "file has 10 weighted layers, model 22" in msg
    assert "batch_normalization_5 -> conv1.b3a: Conv2d cannot take Keras weights" in msg


def test_a_file_that_is_not_hdf5_is_a_model_error(tmp_path):
    bad = tmp_path / "Meso4_DF.h5"
    bad.write_bytes(weights("Meso4_DF.h5").read_bytes()[:5000])  # truncated download
    with pytest.raises(ModelError, match=r"cannot read Keras HDF5 weights .*unchanged"):
        models.load_weights(models.create("meso4"), bad)
    with h5py.File(tmp_path / "plain.h5", "w") as f:  # HDF5, but not Keras 2 weights
        f["conv/kernel"] = np.zeros((3, 3, 3, 8), np.float32)
    with pytest.raises(ModelError, match=r"plain\.h5: HDF5 file without Keras `layer_names`"):
        models.load_weights(models.create("meso4"), tmp_path / "plain.h5")


def test_weights_round_trip_through_safetensors_unchanged(tmp_path):
    model = deepshield_mesonet("mesoinception4", "MesoInception_DF.h5")
    models.save_weights(model, tmp_path / "m.safetensors")
    again = models.load_weights(models.create("mesoinception4"), tmp_path / "m.safetensors")
    x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), model(x), rtol=0, atol=0)
