"""Stage tests for pipeline.images: rejections with reasons, mode conversion, resizing, pass-through, determinism."""

from __future__ import annotations

import io
import json
import pickle
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFile, JpegImagePlugin

from pipeline import images, synth
from pipeline.images import (
    EMPTY_FILE,
    NOT_AN_IMAGE,
    TOO_LARGE,
    TRUNCATED_IMAGE,
    UNSUPPORTED_IMAGE,
    ImageConfig,
    ImageError,
    StoredImage,
    bare_decode_resize_encode,
    process_image,
    stored_size,
)

CFG = ImageConfig()


def natural(width: int, height: int, seed: int = 0) -> Image.Image:
    """A photo-like RGB picture: smooth gradients, flat shapes and mild noise (compresses like a real JPEG)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    planes = [
        128 + 90 * np.sin(x / width * np.pi * (1 + c) + rng.uniform(0, 6)) * np.cos(y / height * 3) for c in range(3)
    ]
    im = Image.fromarray(np.clip(np.stack(planes, -1), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(2, max(3, width // 3))), y0 + int(rng.integers(2, max(3, height // 3)))
        draw.ellipse([x0, y0, x1, y1], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    noisy = np.asarray(im).astype(np.float32) + rng.normal(0, 4, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def encode(im: Image.Image, fmt: str = "JPEG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        kwargs.setdefault("quality", 90)
    im.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def handmade_png(width: int, height: int, idat: bytes) -> bytes:
    """A grayscale 8-bit PNG whose header declares width x height, whatever the pixel data holds."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def reason_of(data: bytes, cfg: ImageConfig = CFG) -> str:
    with pytest.raises(ImageError) as info:
        process_image(data, cfg)
    return info.value.reason


# --- config and errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_short_side", 0),
        ("jpeg_quality", 0),
        ("jpeg_quality", 101),
        ("max_pixels", 0),
        ("max_bytes", 0),
        ("resample", "nearest"),
        ("pass_through_check", "none"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"ImageConfig.{field}"):
        ImageConfig(**{field: value})


def test_image_error_pickles_with_reason() -> None:
    err = pickle.loads(pickle.dumps(ImageError(TRUNCATED_IMAGE, "cut short")))
    assert (err.reason, err.message, str(err)) == (TRUNCATED_IMAGE, "cut short", "truncated_image: cut short")


def test_stored_size() -> None:
    assert stored_size(640, 480, 384) == (512, 384)
    assert stored_size(480, 640, 384) == (384, 512)
    assert stored_size(300, 200, 384) == (300, 200)  # never upscaled
    assert stored_size(5000, 385, 384) == (4987, 384)
    assert stored_size(100_000, 400, 384) == (96_000, 384)


# --- rejections ----------------------------------------------------------------------------------------------------


def test_rejections_carry_their_reason() -> None:
    jpeg = encode(natural(120, 90))
    assert reason_of(b"") == EMPTY_FILE
    assert reason_of(b"this is a text file, not a JPEG image\n") == NOT_AN_IMAGE
    assert reason_of(jpeg[: len(jpeg) // 2]) == TRUNCATED_IMAGE
    assert reason_of(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4) == NOT_AN_IMAGE  # signature, then garbage
    assert reason_of(handmade_png(64, 64, b"\x78\x9c garbage, not deflate")) == TRUNCATED_IMAGE  # header ok, data bad
    assert reason_of(jpeg, ImageConfig(max_bytes=len(jpeg) - 1)) == TOO_LARGE
    process_image(jpeg, ImageConfig(max_bytes=len(jpeg)))  # the limit itself is allowed


def test_pixel_limit_is_checked_on_the_header_without_decoding_or_warnings() -> None:
    tiny_data = zlib.compress(b"\x00" * 100)
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not escape
        assert reason_of(handmade_png(10_000, 10_000, tiny_data)) == TOO_LARGE  # our limit (Pillow only warns)
        assert reason_of(handmade_png(100_000, 100_000, tiny_data)) == TOO_LARGE  # Pillow's own error
        # A blank 1-bit image compresses about 1000:1; the limit rejects it before its pixels are decoded.
        bomb = encode(Image.new("1", (4000, 4000)), "PNG")
        assert len(bomb) < 10_000
        assert reason_of(bomb, ImageConfig(max_pixels=4000 * 4000 - 1)) == TOO_LARGE
    assert before == (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)  # globals untouched
    assert reason_of(encode(natural(20, 20), "PNG"), ImageConfig(max_pixels=399)) == TOO_LARGE


def test_refuses_to_run_when_truncated_loading_was_enabled_globally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        process_image(encode(natural(32, 32)), CFG)


def test_modes_without_a_known_range_are_unsupported() -> None:
    floats = Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32))
    assert reason_of(encode(floats, "TIFF")) == UNSUPPORTED_IMAGE
    wide = Image.fromarray(np.full((8, 8), 70_000, dtype=np.int32))  # mode I beyond 16 bits
    assert reason_of(encode(wide, "TIFF")) == UNSUPPORTED_IMAGE


# --- conversions ---------------------------------------------------------------------------------------------------


def stored_pixels(data: bytes) -> np.ndarray:
    out = process_image(data, CFG)
    im = decode(out.jpeg)
    assert im.mode == "RGB" and im.format == "JPEG" and out.passed_through is False
    return np.asarray(im).astype(int)


def test_cmyk_jpeg_keeps_its_colours() -> None:
    red = Image.new("CMYK", (48, 32), (0, 255, 255, 0))
    assert np.abs(stored_pixels(encode(red)) - [255, 0, 0]).max() <= 8


def test_palette_with_transparency_and_alpha_are_composited_over_white() -> None:
    palette = Image.new("P", (40, 20), 1)
    palette.putpalette([0, 0, 255, 0, 200, 0])
    ImageDraw.Draw(palette).rectangle([0, 0, 19, 19], fill=0)  # left half index 0: transparent
    pixels = stored_pixels(encode(palette, "PNG", transparency=0))
    assert np.abs(pixels[4:16, 2:14] - 255).max() <= 4
    assert np.abs(pixels[4:16, 26:38] - [0, 200, 0]).max() <= 6

    half_black = Image.new("RGBA", (32, 32), (0, 0, 0, 128))
    assert np.abs(stored_pixels(encode(half_black, "PNG")) - 127).max() <= 3
    gray_alpha = Image.new("LA", (32, 32), (0, 0))  # fully transparent black: white
    assert stored_pixels(encode(gray_alpha, "PNG")).min() >= 250


def test_16bit_grayscale_is_scaled_by_its_bit_range() -> None:
    values = np.array([[0, 32768, 65535]], dtype=np.uint16).repeat(16, 0).repeat(16, 1)
    source = Image.fromarray(values)
    assert source.mode.startswith("I;16")
    data = encode(source, "PNG")
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode.startswith("I")
    pixels = stored_pixels(data)
    for column, expected in ((8, 0), (24, 128), (40, 255)):
        assert np.abs(pixels[4:12, column] - expected).max() <= 2
    assert images._uint16_to_uint8(np.array([0, 257, 32768, 65535]), "I;16").tolist() == [0, 1, 128, 255]
    as_int32 = Image.fromarray(values.astype(np.int32))  # mode "I", as some readers deliver 16-bit files
    assert np.abs(stored_pixels(encode(as_int32, "TIFF"))[4:12, 40] - 255).max() <= 2


def test_one_bit_and_grayscale_become_rgb() -> None:
    bits = Image.new("1", (32, 16), 0)
    ImageDraw.Draw(bits).rectangle([16, 0, 31, 15], fill=1)
    pixels = stored_pixels(encode(bits, "PNG"))
    assert pixels[4:12, 2:10].max() <= 6 and pixels[4:12, 22:30].min() >= 249
    gray = Image.new("L", (32, 16), 77)
    assert np.abs(stored_pixels(encode(gray, "PNG")) - 77).max() <= 2


# --- resizing ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1000, 600), (500, 1500), (385, 900), (384, 384), (200, 100)])
def test_shorter_side_capped_aspect_kept_never_upscaled(size: tuple[int, int]) -> None:
    width, height = size
    out = process_image(encode(natural(width, height), "PNG"), CFG)
    assert (out.orig_width, out.orig_height) == size
    assert decode(out.jpeg).size == (out.width, out.height)
    assert min(out.width, out.height) == min(min(size), CFG.max_short_side)
    assert abs(out.width * height / width - out.height) <= 1


def test_draft_decoding_matches_a_full_decode() -> None:
    data = encode(natural(1600, 1200, seed=3))
    out = process_image(data, CFG)
    assert (out.width, out.height) == (512, 384)
    reference = np.asarray(decode(data).resize((512, 384), Image.Resampling.BICUBIC)).astype(int)
    assert np.abs(np.asarray(decode(out.jpeg)).astype(int) - reference).mean() < 3
    # The pipeline's encode is exactly the drafted baseline's; the full-size baseline differs.
    assert out.jpeg == bare_decode_resize_encode(data, CFG, draft=True)
    assert out.jpeg != bare_decode_resize_encode(data, CFG, draft=False)


def test_small_bilinear_shrinks_are_opencv_larger_ones_pillow_antialiased() -> None:
    def stored(pixels: np.ndarray) -> bytes:
        return encode(Image.fromarray(pixels), quality=CFG.jpeg_quality, subsampling="4:2:0")

    coco = encode(natural(640, 480, seed=4))  # 1.25x: OpenCV's bit-exact bilinear, then Pillow's encoder
    exact = cv2.resize(np.asarray(decode(coco)), (512, 384), interpolation=cv2.INTER_LINEAR_EXACT)
    assert process_image(coco, CFG).jpeg == stored(exact)
    # ... which is what Pillow's antialiased bilinear gives, up to rounding, at that factor
    pillow = np.asarray(decode(coco).resize((512, 384), Image.Resampling.BILINEAR))
    assert np.abs(exact.astype(int) - pillow).mean() < 1.0
    wide = encode(natural(760, 570, seed=4))  # 1.48x: still OpenCV
    assert process_image(wide, CFG).jpeg == stored(
        cv2.resize(np.asarray(decode(wide)), (512, 384), interpolation=cv2.INTER_LINEAR_EXACT)
    )
    big = encode(natural(800, 600, seed=4))  # 1.56x: an unfiltered bilinear would alias, so Pillow's antialiased one
    assert process_image(big, CFG).jpeg == stored(np.asarray(decode(big).resize((512, 384), Image.Resampling.BILINEAR)))
    bicubic = ImageConfig(resample="bicubic")  # asked for: Pillow's bicubic at any factor
    assert process_image(coco, bicubic).jpeg == stored(
        np.asarray(decode(coco).resize((512, 384), Image.Resampling.BICUBIC))
    )


def test_baseline_resizes_to_the_same_target() -> None:
    data = encode(natural(640, 480))
    for draft in (False, True):
        assert decode(bare_decode_resize_encode(data, CFG, draft=draft)).size == (512, 384)
    assert decode(bare_decode_resize_encode(data, ImageConfig(resample="bilinear"))).size == (512, 384)


# --- pass-through --------------------------------------------------------------------------------------------------


def test_small_baseline_rgb_jpeg_passes_through_byte_for_byte() -> None:
    data = encode(natural(256, 192))
    out = process_image(data, CFG)
    assert out == StoredImage(data, 256, 192, 256, 192, passed_through=True)
    exif = Image.Exif()
    exif[0x0112] = 1  # EXIF present but upright
    upright = encode(natural(256, 192), exif=exif)
    assert process_image(upright, CFG).jpeg == upright


def test_pass_through_is_validated_by_its_structure_without_decoding(monkeypatch) -> None:
    data = encode(natural(256, 192))
    loads = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: loads.append(im.size))
    assert process_image(data, CFG).passed_through
    assert loads == []  # no pixel decoded
    scan = data.index(b"\xff\xda")
    stuffed = data.index(b"\xff\x00", scan)
    stray = data[: stuffed + 1] + b"\xc4" + data[stuffed + 2 :]  # a marker where the scan data should go on
    comment = data[:-2] + b"\xff\xfe\x10\x00" + b"after the scan" + b"\xff\xd9"  # a length past the end
    for bad, problem in ((stray, "byte "), (comment, "0xfe segment runs past the end of the file")):
        assert images._may_pass_through(Image.open(io.BytesIO(bad)), bad)  # candidates by their header
        assert problem in images.jpeg_structure_error(bad)
        assert reason_of(bad) == TRUNCATED_IMAGE
    # What no check can see: data cut short with the EOI marker put back (libjpeg fills gray and only warns)
    assert images.jpeg_structure_error(data[: (scan + len(data)) // 2] + b"\xff\xd9") is None


def test_structure_walk_follows_restart_markers_and_fill_bytes() -> None:
    data = encode(natural(64, 48), restart_marker_blocks=4)
    restarts = [i for i in range(len(data) - 1) if data[i] == 0xFF and 0xD0 <= data[i + 1] <= 0xD7]
    assert len(restarts) >= 2 and images.jpeg_structure_error(data) is None
    first, second = restarts[:2]
    swapped = bytearray(data)
    swapped[first + 1], swapped[second + 1] = data[second + 1], data[first + 1]
    assert "restart marker out of sequence" in images.jpeg_structure_error(bytes(swapped))
    assert images.jpeg_structure_error(data[:-2] + b"\xff\xff\xff\xd9") is None  # fill bytes before EOI
    assert images.jpeg_structure_error(data + b"\x00") == "1 bytes after the EOI marker"
    assert images.jpeg_structure_error(data[:-2]) == "the entropy-coded data is cut short: no marker ends it"
    assert images.jpeg_structure_error(b"GIF89a") == "no SOI marker"


def test_decode_check_adds_libjpegs_table_checks(monkeypatch) -> None:
    data = encode(natural(256, 192))
    dht = data.index(b"\xff\xc4")  # a Huffman table garbled: the structure is whole, the table is not
    broken = data[: dht + 5] + b"\xff" * 20 + data[dht + 25 :]
    assert images.jpeg_structure_error(broken) is None and process_image(broken, CFG).passed_through
    decoding = ImageConfig(pass_through_check="decode")
    assert reason_of(broken, decoding) == TRUNCATED_IMAGE
    drafts, draft = [], JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", lambda im, *a: (draft(im, *a), drafts.append(im.size)))
    assert process_image(data, decoding).passed_through
    assert drafts == [(32, 24)]  # validated at 1/8 scale


def test_jpegs_that_need_work_are_re_encoded() -> None:
    picture = natural(256, 192)
    rotated_exif = Image.Exif()
    rotated_exif[0x0112] = 6
    cases = {
        "progressive": encode(picture, progressive=True),
        "exif_rotated": encode(picture, exif=rotated_exif),
        "grayscale": encode(picture.convert("L")),
        "too_large": encode(natural(500, 400)),
        "trailing_data": encode(picture) + b"\x00" * 64,
        "icc_and_comment": encode(picture, progressive=True, icc_profile=b"not really a profile", comment=b"hello"),
    }
    for name, data in cases.items():
        out = process_image(data, CFG)
        assert not out.passed_through, name
        stored = decode(out.jpeg)
        assert stored.mode == "RGB" and not stored.info.get("progressive"), name
        assert not {"exif", "icc_profile", "comment"} & set(stored.info), name
    # Orientation 6 is not applied: the stored grid is the raw one, as COCO/VG boxes expect.
    assert process_image(cases["exif_rotated"], CFG).width == 256
    assert images._jpeg_frame_marker(cases["progressive"]) == 0xC2
    assert images._jpeg_frame_marker(encode(picture)) == 0xC0


def test_same_input_gives_same_bytes() -> None:
    for data in (encode(natural(900, 700, seed=5)), encode(natural(300, 500, seed=6), "PNG")):
        assert process_image(data, CFG).jpeg == process_image(data, CFG).jpeg


# --- the synthetic corpus's faults ---------------------------------------------------------------------------------


def test_synth_fault_images_get_their_expected_outcome(tmp_path: Path) -> None:
    corpus = tmp_path / "c"
    synth.generate(synth.SynthConfig(out=corpus, num_images=20, faults=True))
    faults = json.loads((corpus / "faults.json").read_text())
    expected_reasons = {"truncated_jpeg": TRUNCATED_IMAGE, "zero_byte_file": EMPTY_FILE, "not_an_image": NOT_AN_IMAGE}
    seen = set()
    for fault in faults:
        kind = fault["kind"]
        if kind in expected_reasons:
            assert reason_of((corpus / fault["where"]["image"]).read_bytes()) == expected_reasons[kind], kind
        elif kind in ("cmyk_jpeg", "gray16_png"):
            out = process_image((corpus / fault["where"]["image"]).read_bytes(), CFG)
            assert decode(out.jpeg).mode == "RGB" and not out.passed_through, kind
        else:
            continue
        seen.add(kind)
    assert seen == {*expected_reasons, "cmyk_jpeg", "gray16_png"}
    fault_files = {corpus / f["where"]["image"] for f in faults if f["where"].get("image")}
    clean = [p for p in corpus.rglob("*.jpg") if p not in fault_files]
    assert clean and all(process_image(p.read_bytes(), CFG).passed_through for p in clean)
