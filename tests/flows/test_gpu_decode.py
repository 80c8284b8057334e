"""The device decode path, run on the CPU (torchvision decodes JPEGs there too): header
parsing, PIL-exact resize, and how the batch decoder survives bad images and low memory."""
import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from flows.gpu_decode import (JpegBatchDecoder, decode_jpeg_batch, is_jpeg, jpeg_info, resize_center_crop_batch,
                              resized_size)

# A frame header and an end marker, no scan: passes every header check, decodes nowhere.
NO_SCAN = (b"\xff\xd8\xff\xc0" + (17).to_bytes(2, "big") + bytes([8, 0, 16, 0, 16, 3, 1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0])
           + b"\xff\xd9")


def _photo(w, h, seed, mode="RGB"):
    """Smooth colours plus pixel noise: the noise makes any resize difference show."""
    rng = np.random.default_rng(seed)
    base = np.asarray(Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC))
    img = Image.fromarray(np.clip(base.astype(int) + rng.integers(-25, 25, (h, w, 3)), 0, 255).astype(np.uint8))
    return img.convert(mode)


def _jpeg(img, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def _t(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _pil_reference(img, size):
    """open_clip's eval resize + crop on a PIL image, in 0-1."""
    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size), T.ToTensor()])(img)


@pytest.mark.parametrize("w,h", [(500, 375), (375, 500), (640, 480), (120, 90), (1000, 300), (64, 64)])
def test_resize_center_crop_batch_matches_pil_transform_within_one_level(w, h):
    img = _photo(w, h, seed=w + h)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None]
    got = resize_center_crop_batch(x, 224)[0]
    want = _pil_reference(img, 224)
    diff = (got - want).abs() * 255
    assert got.shape == (3, 224, 224) and got.dtype == torch.float32
    # PIL rounds fixed-point weights between and after its two passes, and Pillow 13 picks
    # the pass order by shape: values near .5 round the other way. Measured: <= 2 levels,
    # mean <= 0.25. A bilinear kernel gives a mean of 1-2 levels, a crop one pixel off 7-13.
    assert diff.max() <= 2.0 + 1e-4
    assert diff.mean() <= 0.3


def test_resized_size_truncates_long_side_like_torchvision():
    assert resized_size(375, 500, 224) == (224, 298)  # 298.67 truncated, as T.Resize does
    assert resized_size(500, 375, 224) == (298, 224)
    assert resized_size(10, 10, 224) == (224, 224)


def test_jpeg_info_reads_size_of_baseline_progressive_and_grey_jpegs():
    assert jpeg_info(_jpeg(_photo(50, 30, 0))) == (30, 50, True)
    assert jpeg_info(_jpeg(_photo(50, 30, 0), progressive=True)) == (30, 50, False)  # not baseline
    assert jpeg_info(_jpeg(_photo(50, 30, 0, "L"))) == (30, 50, True)


def test_jpeg_info_refuses_what_the_device_should_not_decode():
    good = _jpeg(_photo(50, 30, 0))
    assert jpeg_info(good[:len(good) // 2]) is None  # truncated: PIL must judge it
    assert jpeg_info(good + b"trailing") is None
    assert jpeg_info(_jpeg(_photo(50, 30, 0, "CMYK"))) is None  # Adobe colour transform
    buf = io.BytesIO()
    _photo(50, 30, 0).save(buf, format="PNG")
    assert jpeg_info(buf.getvalue()) is None and jpeg_info(b"") is None and jpeg_info(b"\xff\xd8\xff\xd9") is None


def test_is_jpeg_reads_the_magic_bytes():
    data = _jpeg(_photo(16, 16, 0))
    assert is_jpeg(data) and is_jpeg(_t(data))
    assert not is_jpeg(b"\x89PNG\r\n")


def test_decoder_writes_normalised_rows_in_place_on_cpu():
    imgs = [_photo(80, 60, 1), _photo(60, 80, 2), _photo(80, 60, 3)]
    datas = [_jpeg(im) for im in imgs]
    out = torch.full((4, 3, 32, 32), 7.0)
    dec = JpegBatchDecoder(32, "cpu", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), dtype=torch.float32)
    failed = dec([_t(d) for d in datas], [jpeg_info(d) for d in datas], out, [3, 0, 1])
    assert failed == []
    assert torch.all(out[2] == 7.0)  # untouched row
    for row, d in zip([3, 0, 1], datas):
        want = (_pil_reference(Image.open(io.BytesIO(d)).convert("RGB"), 32) - 0.5) / 0.25
        assert (out[row] - want).abs().max() <= 1 / 255 / 0.25 + 1e-5


def test_decoder_hands_back_undecodable_images_and_decodes_the_rest():
    good = _jpeg(_photo(40, 30, 0))
    out = torch.zeros((3, 3, 16, 16))
    dec = JpegBatchDecoder(16, "cpu", dtype=torch.float32)
    failed = dec([_t(good), _t(NO_SCAN), _t(good)], [(30, 40), (16, 16), (30, 40)], out, [0, 1, 2])
    assert failed == [1]
    assert torch.equal(out[0], out[2]) and out[0].abs().sum() > 0 and out[1].abs().sum() == 0


def test_decoder_halves_what_it_decodes_at_once_when_out_of_memory(monkeypatch):
    datas = [_jpeg(_photo(40, 30, k)) for k in range(6)]
    dec = JpegBatchDecoder(16, "cpu", dtype=torch.float32)
    real = dec._decode
    sizes = []

    def small_memory(batch):
        sizes.append(len(batch))
        if len(batch) > 2:
            raise torch.OutOfMemoryError("simulated")
        return real(batch)

    monkeypatch.setattr(dec, "_decode", small_memory)
    out = torch.zeros((6, 3, 16, 16))
    assert dec([_t(d) for d in datas], [(30, 40)] * 6, out, list(range(6))) == []
    assert sizes[:3] == [6, 3, 1] and dec.halvings == 2 and max(sizes[3:]) == 1
    assert all(out[k].abs().sum() > 0 for k in range(6))


def test_decode_jpeg_batch_raises_naming_the_bad_image():
    with pytest.raises(ValueError, match=r"images \[1\]"):
        decode_jpeg_batch([_t(_jpeg(_photo(20, 20, 0))), _t(NO_SCAN)], 16, device="cpu", dtype=torch.float32)
