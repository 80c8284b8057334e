"""ONNX encoders on tiny models built here with onnx.helper, checked against numpy."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper, save_model
from PIL import Image

from flows.encoders import build_encoder
from store.errors import ConfigError, MissingWeights

W = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)


def _save(graph, path):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save_model(model, path)
    return path


@pytest.fixture(scope="module")
def image_model(tmp_path_factory):
    """uint8 NHWC pixels → mean colour (n, 3) → linear map to 8 dims."""
    nodes = [
        helper.make_node("Cast", ["pixels"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["m"], axes=[1, 2], keepdims=0),
        helper.make_node("MatMul", ["m", "W"], ["emb"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny-image",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["n", 32, 32, 3])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["n", 8])],
        initializer=[numpy_helper.from_array(W, "W")])
    return _save(graph, tmp_path_factory.mktemp("onnx") / "image.onnx")


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    """token ids → embedding lookup (n, tokens, 6): the encoder mean-pools over the mask."""
    table = np.random.default_rng(1).normal(size=(30522, 6)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["E", "input_ids"], ["last_hidden_state"])], "tiny-text",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["n", "l"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["n", "l"])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["n", "l", 6])],
        initializer=[numpy_helper.from_array(table, "E")])
    return _save(graph, tmp_path_factory.mktemp("onnx") / "text.onnx"), table


def test_onnx_image_encoder_feeds_uint8_nhwc_and_matches_numpy(image_model):
    enc = build_encoder(f"onnx:{image_model}?modality=image&layout=nhwc&dtype=uint8&size=32&resize=squash&normalize=false")
    assert enc.modalities == ("image",) and enc.dim == 8
    img = Image.new("RGB", (50, 40), (200, 100, 50))
    x = enc.preprocess_image(img)
    assert x.shape == (32, 32, 3) and x.dtype == np.uint8
    out = enc.encode_images(np.stack([x, x]))
    np.testing.assert_allclose(out[0], np.array([200, 100, 50], np.float32) @ W, rtol=1e-4)
    assert out.shape == (2, 8) and out.dtype == np.float32


def test_onnx_image_preprocess_float32_nchw_center_crop_normalises():
    enc = build_encoder("onnx:/nowhere.onnx?modality=image&size=16&mean=0.5,0.5,0.5&std=0.5,0.5,0.5")
    x = enc.preprocess_image(Image.new("RGB", (40, 20), (255, 0, 255)))
    assert x.shape == (3, 16, 16) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 8, 8], [1.0, -1.0, 1.0], atol=1e-6)


def test_onnx_text_encoder_tokenizes_and_mean_pools_over_mask(text_model):
    from tokenizers import Tokenizer

    from flows.encoders.sentence_transformers import packaged_minilm

    path, table = text_model
    tok = packaged_minilm() / "tokenizer.json"
    enc = build_encoder(f"onnx:{path}?modality=text&tokenizer={tok}&normalize=false")
    out = enc.encode_text(["a cat", "a much longer sentence about dogs"])
    reference = Tokenizer.from_file(str(tok))
    reference.no_padding()
    ids = reference.encode("a cat").ids
    np.testing.assert_allclose(out[0], table[ids].mean(axis=0), rtol=1e-5)
    assert out.shape == (2, 6) and enc.dim == 6
    fp = enc.fingerprint()
    assert len(fp.weights_sha256) == 64 and fp.preprocess_sha256 != build_encoder(
        f"onnx:{path}?modality=text&tokenizer={tok}&max_length=16").fingerprint().preprocess_sha256


def test_onnx_spec_errors_name_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="modality") as info:
        build_encoder("onnx:/m.onnx")
    assert "?modality=image" in info.value.fix
    with pytest.raises(ConfigError, match="layout='hwc'"):
        build_encoder("onnx:/m.onnx?modality=image&layout=hwc")
    with pytest.raises(ConfigError, match="unknown options \\['colour'\\]"):
        build_encoder("onnx:/m.onnx?modality=image&colour=1")
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        build_encoder("onnx:/m.onnx?modality=text")
    with pytest.raises(MissingWeights, match="does not exist"):
        build_encoder(f"onnx:{tmp_path / 'none.onnx'}?modality=image").fingerprint()
