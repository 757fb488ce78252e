"""The TensorFlow V2 checkpoint reader (docs/metric.md §7) on the official checkpoints."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from jndqa.metric.checkpoint import CheckpointError, TFCheckpoint, _crc32c_python, crc32c, masked_crc32c
from jndqa.metric.release import MODELS


def test_crc32c_check_value():
    # The CRC-32C check value of "123456789" (RFC 3720 / the Castagnoli catalogue).
    assert crc32c(b"123456789") == 0xE3069283
    assert _crc32c_python(b"123456789") == 0xE3069283
    data = bytes(range(256)) * 3
    assert _crc32c_python(data) == crc32c(data)


def test_masked_crc_is_leveldb_mask():
    crc = crc32c(b"abc")
    assert masked_crc32c(b"abc") == ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# Tensor counts per checkpoint: docs/metric.md §6 (scratch: 174); the others counted with this reader
# and consistent with §6 (linear_layer lacks Adam slots of the frozen conv layers; pretrained has
# the extra Adam_2/3 slots and DCASE heads).
@pytest.mark.parametrize(
    ("model", "count"), [("scratch", 174), ("finetune", 174), ("linear_layer", 118), ("pretrained", 184)]
)
def test_every_tensor_crc_verifies(release, model, count):
    ckpt = TFCheckpoint(release / MODELS[model])
    assert ckpt.verify() == count
    assert ckpt.num_shards == 1 and ckpt.little_endian


def test_known_entry_and_shapes(release):
    ckpt = TFCheckpoint(release / MODELS["scratch"])
    e = ckpt.entry("loss_conv_0/weights")
    # docs/metric.md §7 example: float32, [1, 3, 1, 32], offset 2424, size 384, masked crc 0x65f5ede0.
    assert (e.dtype, e.shape, e.offset, e.size, e.crc32c) == (1, (1, 3, 1, 32), 2424, 384, 0x65F5EDE0)
    assert ckpt["loss_conv_13/weights"].shape == (1, 3, 128, 128)
    assert ckpt["weights_13"].shape == (128,)
    assert ckpt["dense/kernel"].shape == (1, 16)
    # §4: the moving statistics were never updated: exactly 0 and 1.
    assert not ckpt["loss_conv_5/BatchNorm/moving_mean"].any()
    assert (ckpt["loss_conv_5/BatchNorm/moving_variance"] == 1).all()
    # §6: the 42 tensors the distance needs hold 239,712 + 992 + 992 values.
    n_k = sum(ckpt[f"loss_conv_{i}/weights"].size for i in range(14))
    n_b = sum(ckpt[f"loss_conv_{i}/BatchNorm/beta"].size for i in range(14))
    n_w = sum(ckpt[f"weights_{i}"].size for i in range(14))
    assert (n_k, n_b, n_w) == (239_712, 992, 992)
    assert "loss_conv_0/BatchNorm/gamma" not in ckpt


def test_linear_layer_conv_is_pretrained_conv(release):
    # §6: the linear_layer conv and BN tensors are bit-identical to pretrained's (frozen).
    lin = TFCheckpoint(release / MODELS["linear_layer"])
    pre = TFCheckpoint(release / MODELS["pretrained"])
    for i in (0, 7, 13):
        assert np.array_equal(lin[f"loss_conv_{i}/weights"], pre[f"loss_conv_{i}/weights"])


@pytest.fixture
def ckpt_copy(release, tmp_path):
    src = release / MODELS["scratch"]
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(f"{src}{suffix}", tmp_path / f"model{suffix}")
    return tmp_path / "model"


def test_corrupted_data_byte_is_detected(ckpt_copy):
    entry = TFCheckpoint(ckpt_copy).entry("loss_conv_3/weights")
    data = ckpt_copy.parent / "model.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[entry.offset + 17] ^= 0x01
    data.write_bytes(bytes(raw))
    ckpt = TFCheckpoint(ckpt_copy)
    ckpt["loss_conv_2/weights"]  # an untouched tensor still reads
    expected = r"model\.data-00000-of-00001: CRC32C mismatch for tensor 'loss_conv_3/weights'"
    with pytest.raises(CheckpointError, match=expected):
        ckpt["loss_conv_3/weights"]
    with pytest.raises(CheckpointError):
        ckpt.verify()


def test_corrupted_index_byte_is_detected(ckpt_copy):
    index = ckpt_copy.parent / "model.index"
    raw = bytearray(index.read_bytes())
    raw[100] ^= 0x40  # inside the data block
    index.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"model\.index.*CRC32C mismatch"):
        TFCheckpoint(ckpt_copy)


def test_truncated_index(ckpt_copy):
    index = ckpt_copy.parent / "model.index"
    index.write_bytes(index.read_bytes()[:-60])
    with pytest.raises(CheckpointError, match=r"model\.index"):
        TFCheckpoint(ckpt_copy)


def test_truncated_data_shard(ckpt_copy):
    data = ckpt_copy.parent / "model.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])
    ckpt = TFCheckpoint(ckpt_copy)
    with pytest.raises(CheckpointError, match=r"truncated"):
        ckpt.verify()


def test_missing_data_shard(ckpt_copy):
    (ckpt_copy.parent / "model.data-00000-of-00001").unlink()
    with pytest.raises(CheckpointError, match=r"data shard missing"):
        TFCheckpoint(ckpt_copy)["weights_0"]


def test_foreign_file(release, tmp_path):
    shutil.copy(release / "sample_audio" / "ref.wav", tmp_path / "x.index")
    with pytest.raises(CheckpointError, match=r"x\.index: not a TensorFlow V2 checkpoint index"):
        TFCheckpoint(tmp_path / "x")
    (tmp_path / "tiny.index").write_bytes(b"abc")
    with pytest.raises(CheckpointError, match="too short"):
        TFCheckpoint(tmp_path / "tiny")


def test_missing_index_names_the_fix(tmp_path):
    with pytest.raises(CheckpointError, match=r"nothing\.index: checkpoint index not found; pass the .*prefix"):
        TFCheckpoint(tmp_path / "nothing")
