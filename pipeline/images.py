"""Per-image stage of the pack job: validate, decode, convert, resize and re-encode one image (DESIGN sections 4, 10).

`process_image(data, cfg)` turns the raw bytes of a source image into the `<key>.jpg` member of a sample, or raises
`ImageError` whose `.reason` goes into the manifest's `status` column (one of `REASONS`). The Ray adapter calls it per
row; nothing here imports Ray or touches Pillow's global settings.

Decisions, each measured or argued once here:

- **Stored image.** Always 8-bit RGB baseline JPEG, shorter side capped at `max_short_side` (aspect kept, never
  upscaled), so every trainer decodes the same way. Boxes are stored normalized to the image, and the stored image
  covers the whole source at the same aspect ratio, so normalized boxes need no change when we resize.
- **Pass-through.** A source that already is a valid baseline (SOF0) RGB JPEG, fits the cap, carries no EXIF/XMP
  orientation other than 1, ends at its EOI marker and is no bigger than its raw pixels, is stored byte for byte after
  a decode has validated it. That decode runs at 1/8 scale (`draft`): libjpeg reads and Huffman-decodes every
  entropy-coded byte, so it fails where a full decode fails (data cut short, broken tables), at about half the cost
  (0.77 against 1.37 ms for a 512x384 JPEG). Neither finds a file cut short and given back an EOI marker: libjpeg
  fills the rest with gray and only warns. Anything else is re-encoded: progressive or arithmetic JPEGs (not every
  decoder handles them well), grayscale JPEGs (we store RGB), MPO camera files and files padded with trailing data.
- **EXIF orientation.** COCO and Visual Genome boxes refer to the stored pixel grid and ignore EXIF orientation, so
  we do not rotate pixels. A JPEG whose orientation is not 1 is re-encoded instead of passed through; re-encoding
  drops EXIF, so every consumer (whether its decoder honours EXIF or not) sees the pixels the boxes refer to.
- **ICC profiles** are dropped on re-encode: converting colour spaces with ImageCms is out of scope, and the decoders
  our trainers use ignore ICC anyway, so the pixel values they see do not change. Passed-through files keep theirs.
- **Modes.** CMYK, YCbCr, 1-bit, L and palette images are converted to RGB; images with alpha (RGBA, LA, PA, palette
  with transparency) are composited over white, as a viewer shows them. 16-bit grayscale ("I;16*", and "I" when its
  values fit 16 bits, as some readers deliver 16-bit PNG/TIFF) is scaled by its full bit range (x * 255 / 65535,
  i.e. divide by 257) rather than stretched per image, so brightness means the same across images. Float, signed,
  LAB/HSV and other modes whose range we cannot know are rejected as `unsupported_image`.
- **Resampling.** Reduced-size JPEG decoding (`Image.draft`: libjpeg's DCT scaling by 1/2, 1/4 or 1/8, never below
  the target) does the bulk of large reductions, then an antialiased BILINEAR (tent) resize finishes. The box that
  `draft` returns is passed to `resize`, so geometry stays exact when the scaled size was rounded up. Draft only
  helps sources at least twice the target: COCO-sized images at a 384 cap (480 // 384 = 1) decode at full size,
  and stock Pillow's resize (plain C, no SIMD) is then the largest cost per image. Measured with `copa bench pack`
  on 640x480 JPEGs, bilinear packs 121 images/s per core against 93 with bicubic; at residual factors below 2 the
  two look alike (bicubic is a touch sharper and rings a little), so bilinear is the default and
  `ImageConfig.resample="bicubic"` is there for those who prefer it.
- **Re-encoding** is deterministic: fixed quality, 4:2:0 subsampling, no optimize/progressive, no metadata; the same
  bytes and Pillow build give the same output bytes.
- **Failures.** `empty_file`; `too_large` (more than `max_bytes`, more than `max_pixels` by the header, or too long
  for JPEG); `not_an_image` (no accepted format parses the header; formats outside `ACCEPTED_FORMATS` are not
  parsed at all, which keeps e.g. EPS/Ghostscript out of reach); `truncated_image` (the header parses but the pixel
  data does not decode completely: cut short or corrupt); `unsupported_image` (a mode we cannot convert).

`bare_decode_resize_encode` is the benchmark baseline (DESIGN section 11): decode, resize to the same target with
the same filter, encode with the same settings, nothing else. By default it decodes at full size, so the pack
benchmark's ratio shows what reduced-size decoding buys; `draft=True` gives the baseline the same lever.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
import PIL
from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError, features

EMPTY_FILE = "empty_file"
NOT_AN_IMAGE = "not_an_image"
TRUNCATED_IMAGE = "truncated_image"
TOO_LARGE = "too_large"
UNSUPPORTED_IMAGE = "unsupported_image"
REASONS = (EMPTY_FILE, NOT_AN_IMAGE, TRUNCATED_IMAGE, TOO_LARGE, UNSUPPORTED_IMAGE)

# Formats of real corpora (COCO/VG are JPEG; web crawls add PNG, WebP, GIF, BMP, TIFF). JPEG first: most files are.
# Camera MPO files open through the JPEG plugin (format "MPO"). A format this Pillow build lacks is left out, since
# Image.open fails on an unregistered name instead of skipping it.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
Image.init()
_OPEN_FORMATS = tuple(name for name in ACCEPTED_FORMATS if name in Image.OPEN)
# Filters offered for the final resize; bilinear is the default (see the module docstring: about half the resize
# time of bicubic, the largest cost of a COCO-sized image).
RESAMPLE_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
REDUCING_GAP = 3.0  # box-reduce first when shrinking > 6x (non-JPEG sources): visually identical, much cheaper
JPEG_SUBSAMPLING = "4:2:0"  # spelled out rather than left to the library default, which could change
MAX_JPEG_SIDE = 65_500  # JPEG stores sides in 16 bits; libjpeg refuses anything above 65500
_WHITE = (255, 255, 255)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # C4/C8/CC are DHT, JPG, DAC: not frames
_BASELINE_SOF = 0xC0
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})
_TO_RGB_MODES = frozenset({"L", "1", "CMYK", "YCbCr", "RGBX", "P"})  # P without transparency
_UINT16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


@dataclass
class ImageConfig:
    """How a source image becomes the stored `<key>.jpg`."""

    max_short_side: int = 384  # shorter side cap of the stored image, aspect kept, never upscaled
    jpeg_quality: int = 90  # quality of re-encoded images (pass-through files keep theirs)
    # Pillow's default MAX_IMAGE_PIXELS (1024**3 // 4 // 3: 256 MiB as 8-bit RGB, which a worker can afford to
    # decode). Checked on the header before any pixel is decoded; Pillow itself refuses twice this in any case.
    max_pixels: int = 89_478_485
    max_bytes: int = 64 * 1024 * 1024  # larger files are rejected unread: no real photo is this big
    resample: str = "bilinear"  # filter of the final resize: "bilinear" or "bicubic" (see RESAMPLE_FILTERS)

    def __post_init__(self) -> None:
        checks = {
            "max_short_side": 1 <= self.max_short_side <= MAX_JPEG_SIDE,
            "jpeg_quality": 1 <= self.jpeg_quality <= 100,
            "max_pixels": self.max_pixels >= 1,
            "max_bytes": self.max_bytes >= 1,
            "resample": self.resample in RESAMPLE_FILTERS,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"ImageConfig.{name} is out of range: {getattr(self, name)!r}")


class ImageError(Exception):
    """A per-image failure: `.reason` is the manifest status (one of REASONS), the message says what was found."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason, message)  # both in args, so the error pickles across Ray processes
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


@dataclass(frozen=True)
class StoredImage:
    """The stored image and its sizes; normalized boxes of the source apply to it unchanged."""

    jpeg: bytes  # the `<key>.jpg` member
    orig_width: int
    orig_height: int
    width: int  # stored size
    height: int
    passed_through: bool  # True when `jpeg` is the source bytes, untouched


def stored_size(width: int, height: int, max_short_side: int) -> tuple[int, int]:
    """(width, height) of the stored image: shorter side = max_short_side when larger, aspect kept, never upscaled."""
    short = min(width, height)
    if short <= max_short_side:
        return width, height
    scale = max_short_side / short
    if width <= height:
        return max_short_side, max(1, round(height * scale))
    return max(1, round(width * scale)), max_short_side


def process_image(data: bytes, cfg: ImageConfig) -> StoredImage:
    """Validate and decode `data`, then pass it through or store it as a capped RGB JPEG; raise ImageError if bad."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # A global someone else set would make truncated files decode with gray bands: stop the job, not the row.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; truncated images would be stored silently")
    if not data:
        raise ImageError(EMPTY_FILE, "the file has 0 bytes")
    if len(data) > cfg.max_bytes:
        raise ImageError(TOO_LARGE, f"{len(data)} bytes > max_bytes {cfg.max_bytes}")
    im = _open_checked(data, cfg)
    with im:
        orig = im.size
        target = stored_size(*orig, cfg.max_short_side)
        if max(target) > MAX_JPEG_SIDE:
            raise ImageError(TOO_LARGE, f"stored size {target} exceeds the JPEG limit of {MAX_JPEG_SIDE}")
        if target == orig and _may_pass_through(im, data):
            # Validated at 1/8 scale: libjpeg still reads every entropy-coded byte (what finds truncated or broken
            # data) but skips most of the inverse DCT, about half the cost of a full decode at these sizes.
            im.draft("RGB", (-(-orig[0] // 8), -(-orig[1] // 8)))
            _decode(im)
            return StoredImage(data, *orig, *orig, passed_through=True)
        box = None
        if target != orig and im.format in ("JPEG", "MPO"):
            drafted = im.draft(None, target)  # DCT-domain downscale, never below target
            box = drafted[1] if drafted else None
        _decode(im)
        rgb = _to_rgb(im)
        if rgb.size != target:
            rgb = rgb.resize(target, RESAMPLE_FILTERS[cfg.resample], box=box, reducing_gap=REDUCING_GAP)
        return StoredImage(_encode(rgb, cfg), *orig, *target, passed_through=False)


def library_versions() -> dict[str, str]:
    """The versions of what decides a stored image's bytes: Pillow and its JPEG codec (libjpeg-turbo or libjpeg)."""
    codec = "libjpeg_turbo" if features.check_feature("libjpeg_turbo") else "jpg"
    return {"pillow": PIL.__version__, codec: features.version(codec) or "unknown"}


def bare_decode_resize_encode(data: bytes, cfg: ImageConfig, draft: bool = False) -> bytes:
    """Benchmark baseline: decode, resize to `process_image`'s target with the same filter, encode; no checks.

    draft=False decodes at full size (the plain loop the pack benchmark compares with); draft=True lets libjpeg
    decode at reduced size, like the pipeline does, to separate the cost of our checks from the gain of the lever.
    """
    im = Image.open(io.BytesIO(data))
    target = stored_size(*im.size, cfg.max_short_side)
    box = None
    if draft and target != im.size and im.format in ("JPEG", "MPO"):
        drafted = im.draft(None, target)
        box = drafted[1] if drafted else None
    if im.size != target:
        im = im.resize(target, RESAMPLE_FILTERS[cfg.resample], box=box, reducing_gap=REDUCING_GAP)
    if im.mode != "RGB":
        im = im.convert("RGB")  # a no-op on COCO-like corpora; keeps the baseline runnable on any input
    return _encode(im, cfg)


def _open_checked(data: bytes, cfg: ImageConfig) -> Image.Image:
    """Parse the header only and enforce the size limits before any pixel is decoded."""
    try:
        # Our explicit limit below replaces Pillow's warning. The context restores the warning filters afterwards;
        # before Python 3.14 that is not thread-safe, which at worst loses a filter set meanwhile by another thread.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except Image.DecompressionBombError as err:
        raise ImageError(TOO_LARGE, str(err)) from err
    except UnidentifiedImageError as err:
        raise ImageError(NOT_AN_IMAGE, f"no format of {', '.join(_OPEN_FORMATS)} recognises it") from err
    except _DECODE_ERRORS as err:  # a plugin that recognised the signature but choked on the header
        raise ImageError(NOT_AN_IMAGE, f"unreadable header: {err}") from err
    width, height = im.size
    if width < 1 or height < 1:
        im.close()
        raise ImageError(NOT_AN_IMAGE, f"header declares an empty image {width}x{height}")
    if width * height > cfg.max_pixels:
        im.close()
        raise ImageError(TOO_LARGE, f"{width}x{height} = {width * height} pixels > max_pixels {cfg.max_pixels}")
    return im


def _decode(im: Image.Image) -> None:
    """Decode every pixel: the only way to know the data is complete (LOAD_TRUNCATED_IMAGES is False)."""
    try:
        im.load()
    except _DECODE_ERRORS as err:
        raise ImageError(TRUNCATED_IMAGE, f"{im.format} pixel data does not decode: {err}") from err


def _may_pass_through(im: Image.Image, data: bytes) -> bool:
    """Header-level test for storing the source bytes untouched (the caller still decodes them fully)."""
    return (
        im.format == "JPEG"
        and im.mode == "RGB"
        and data.endswith(b"\xff\xd9")  # no trailing payload after the EOI marker
        and len(data) <= 3 * im.width * im.height  # more bytes than raw pixels means bulky metadata: re-encode
        and _jpeg_frame_marker(data) == _BASELINE_SOF
        and _orientation(im) == 1
    )


def _jpeg_frame_marker(data: bytes) -> int | None:
    """The SOFn marker of a JPEG stream (0xC0 baseline, 0xC2 progressive, ...), or None if none precedes a scan."""
    i, n = 2, len(data)  # after SOI
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length field
            i += 2
        elif marker == 0xDA:  # start of scan before any frame header: malformed
            return None
        elif marker in _SOF_MARKERS:
            return marker
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _orientation(im: Image.Image) -> int:
    """EXIF orientation (Pillow also reads XMP's tiff:Orientation); 0 when the metadata cannot be read."""
    if not any(k in im.info for k in ("exif", "xmp", "XML:com.adobe.xmp")):
        return 1
    try:
        return int(im.getexif().get(ExifTags.Base.Orientation, 1))
    except (*_DECODE_ERRORS, TypeError, KeyError):
        return 0  # unreadable metadata: re-encoding drops it, which is the safe side


def _to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB pixels of a decoded image (see the module docstring for each mode's rule)."""
    mode = im.mode
    try:
        if mode == "RGB":
            return im
        if mode in _ALPHA_MODES or (mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            out = Image.new("RGB", rgba.size, _WHITE)
            out.paste(rgba, mask=rgba.getchannel("A"))
            return out
        if mode in _TO_RGB_MODES:
            return im.convert("RGB")
        if mode in _UINT16_MODES or mode == "I":
            return Image.fromarray(_uint16_to_uint8(np.asarray(im), mode)).convert("RGB")
    except ValueError as err:  # Pillow has no conversion for this image's mode or palette
        raise ImageError(UNSUPPORTED_IMAGE, f"cannot convert mode {mode} to RGB: {err}") from err
    raise ImageError(UNSUPPORTED_IMAGE, f"mode {mode} has no known value range")


def _uint16_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale 16-bit samples to 8 bits with exact rounding (65535 -> 255, 32768 -> 128)."""
    wide = values.astype(np.int64)
    if wide.size and (wide.min() < 0 or wide.max() > 0xFFFF):
        raise ImageError(UNSUPPORTED_IMAGE, f"mode {mode} values exceed 16 bits")
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _encode(im: Image.Image, cfg: ImageConfig) -> bytes:
    buffer = io.BytesIO()
    # Only what is passed here is written: Pillow takes EXIF, ICC and DPI from these arguments alone, but would copy
    # the source's comment (a JPEG COM or GIF comment in im.info) unless told otherwise.
    im.save(
        buffer,
        format="JPEG",
        quality=cfg.jpeg_quality,
        optimize=False,
        progressive=False,
        subsampling=JPEG_SUBSAMPLING,
        comment=b"",
    )
    return buffer.getvalue()
