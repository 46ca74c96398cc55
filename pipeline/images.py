"""Per-image stage of the pack job: validate, decode, convert, resize and re-encode one image (DESIGN sections 4, 10).

`process_image(data, cfg)` turns the raw bytes of a source image into the `<key>.jpg` member of a sample, or raises
`ImageError` whose `.reason` goes into the manifest's `status` column (one of `REASONS`). The Ray adapter calls it per
row; nothing here imports Ray or touches Pillow's global settings.

Decisions, each measured or argued once here:

- **Stored image.** Always 8-bit RGB baseline JPEG, shorter side capped at `max_short_side` (aspect kept, never
  upscaled), so every trainer decodes the same way. Boxes are stored normalized to the image, and the stored image
  covers the whole source at the same aspect ratio, so normalized boxes need no change when we resize.
- **Pass-through.** A source that already is a valid baseline (SOF0) RGB JPEG, fits the cap, carries no EXIF/XMP
  orientation other than 1, ends at its EOI marker and is no bigger than its raw pixels, is stored byte for byte once
  validated. Anything else is re-encoded: progressive or arithmetic JPEGs (not every decoder handles them well),
  grayscale JPEGs (we store RGB), MPO camera files and files padded with trailing data.
- **Validating a pass-through JPEG.** By default (`pass_through_check="structure"`) its markers are walked
  (`jpeg_structure_error`: segment lengths, scan data free of stray markers, restart markers in sequence, EOI last),
  about 20 us for 40 KB. `"decode"` decodes it at 1/8 scale (`draft`: libjpeg still Huffman-decodes every
  entropy-coded byte but skips most of the inverse DCT), 0.7 ms for 512x384, half a full decode. Measured on 60
  512x384 JPEGs with one fault each, structure / 1/8 decode / full decode reject: cut short 60/60/60; cut short
  with an EOI marker put back 0/0/0, 100 bytes lost or 16 bytes zeroed or one byte changed in the scan data
  0/0/0 each (libjpeg only warns on corrupt entropy-coded data and fills in gray), one header byte changed
  1/13/13 (the decode also checks the Huffman and quantization tables). So decoding buys only the table checks, and
  a file with broken tables still fails to decode in the trainer, which counts and skips it.
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
  the target) does the bulk of large reductions, so what is left to resize shrinks by less than 2. Draft only helps
  sources at least twice the target: COCO-sized images at a 384 cap (480 // 384 = 1) decode at full size, and the
  resize is then the largest cost per image after the decode. With the default `resample="bilinear"`, a residual
  factor of at most `FAST_RESIZE_MAX_FACTOR` (1.5) is done by OpenCV's `INTER_LINEAR_EXACT` (SIMD, and bit-exact
  across CPUs by its contract): 0.66 ms against 1.68 ms for Pillow's antialiased bilinear (stock Pillow's resize is
  plain C) from 640x480 to 512x384 on the dev VM. Against a float Lanczos reference it loses nothing at 1.25x (PSNR
  37.95 against Pillow's 37.94 dB, photo-like images and matplotlib's sample photo) and 1.1 dB at 1.5x; beyond that
  a filter without antialiasing aliases (33.3 dB at 1.95x), so larger factors, a `draft` box that is not the whole
  image (its scaled size was rounded up: Pillow then takes the exact box, keeping geometry exact) and
  `resample="bicubic"` (sharper, for those who prefer it) go through Pillow's antialiased resize.
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
import re
import struct
import warnings
from dataclasses import dataclass

import cv2
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
PASS_THROUGH_CHECKS = ("structure", "decode")  # see ImageConfig.pass_through_check
FAST_RESIZE_MAX_FACTOR = 1.5  # largest shrink factor done by OpenCV's INTER_LINEAR_EXACT (see the module docstring)
REDUCING_GAP = 3.0  # box-reduce first when shrinking > 6x (non-JPEG sources): visually identical, much cheaper
JPEG_SUBSAMPLING = "4:2:0"  # spelled out rather than left to the library default, which could change
MAX_JPEG_SIDE = 65_500  # JPEG stores sides in 16 bits; libjpeg refuses anything above 65500
_WHITE = (255, 255, 255)
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)
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
    # How a pass-through candidate is validated: "structure" walks its markers (jpeg_structure_error), "decode" also
    # decodes it at 1/8 scale, which adds libjpeg's checks of the tables (see the module docstring).
    pass_through_check: str = "structure"

    def __post_init__(self) -> None:
        checks = {
            "max_short_side": 1 <= self.max_short_side <= MAX_JPEG_SIDE,
            "jpeg_quality": 1 <= self.jpeg_quality <= 100,
            "max_pixels": self.max_pixels >= 1,
            "max_bytes": self.max_bytes >= 1,
            "resample": self.resample in RESAMPLE_FILTERS,
            "pass_through_check": self.pass_through_check in PASS_THROUGH_CHECKS,
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
            if cfg.pass_through_check == "decode":  # at 1/8 scale: libjpeg still reads every entropy-coded byte
                im.draft("RGB", (-(-orig[0] // 8), -(-orig[1] // 8)))
                _decode(im)
            elif problem := jpeg_structure_error(data):
                raise ImageError(TRUNCATED_IMAGE, f"JPEG structure: {problem}")
            return StoredImage(data, *orig, *orig, passed_through=True)
        box = None
        if target != orig and im.format in ("JPEG", "MPO"):
            drafted = im.draft(None, target)  # DCT-domain downscale, never below target
            box = drafted[1] if drafted else None
        _decode(im)
        rgb = _to_rgb(im)
        if rgb.size != target:
            rgb = _resize(rgb, target, box, cfg.resample)
        return StoredImage(_encode(rgb, cfg), *orig, *target, passed_through=False)


def _resize(im: Image.Image, target: tuple[int, int], box: tuple | None, resample: str) -> Image.Image:
    """Shrink the decoded RGB image to ``target`` (see "Resampling" in the module docstring for the choice)."""
    whole = box is None or tuple(box) == (0, 0, *im.size)
    if resample == "bilinear" and whole and im.width <= FAST_RESIZE_MAX_FACTOR * target[0]:
        pixels = cv2.resize(np.asarray(im), target, interpolation=cv2.INTER_LINEAR_EXACT)
        return Image.frombuffer("RGB", target, pixels, "raw", "RGB", 0, 1)
    return im.resize(target, RESAMPLE_FILTERS[resample], box=box, reducing_gap=REDUCING_GAP)


def library_versions() -> dict[str, str]:
    """The versions of what decides a stored image's bytes: Pillow and its JPEG codec (libjpeg-turbo or libjpeg),
    and OpenCV, which does the bilinear resizes."""
    codec = "libjpeg_turbo" if features.check_feature("libjpeg_turbo") else "jpg"
    return {"pillow": PIL.__version__, codec: features.version(codec) or "unknown", "opencv": cv2.__version__}


def bare_decode_resize_encode(data: bytes, cfg: ImageConfig, draft: bool = False) -> bytes:
    """Benchmark baseline: decode, resize to `process_image`'s target the same way, encode; no checks.

    draft=False decodes at full size (the plain loop the pack benchmark compares with); draft=True lets libjpeg
    decode at reduced size, like the pipeline does, to separate the cost of our checks from the gain of the lever.
    """
    im = Image.open(io.BytesIO(data))
    target = stored_size(*im.size, cfg.max_short_side)
    box = None
    if draft and target != im.size and im.format in ("JPEG", "MPO"):
        drafted = im.draft(None, target)
        box = drafted[1] if drafted else None
    if im.mode != "RGB":
        im = im.convert("RGB")  # a no-op on COCO-like corpora; keeps the baseline runnable on any input
    if im.size != target:
        im = _resize(im, target, box, cfg.resample)
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
    except DECODE_ERRORS as err:  # a plugin that recognised the signature but choked on the header
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
    except DECODE_ERRORS as err:
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


_ENTROPY_END = re.compile(
    rb"\xff[^\x00\xd0-\xd7\xff]"
)  # in scan data: the first marker that is not RSTn or a stuffed 0
_RESTART = re.compile(rb"\xff[\xd0-\xd7]")


def jpeg_structure_error(data: bytes) -> str | None:
    """What is wrong with the marker structure of a JPEG stream, or None when it is whole: SOI, marker segments
    whose lengths fit, scans whose entropy-coded data holds only stuffed bytes and restart markers in sequence,
    and EOI as the last two bytes. Reads the headers and searches the scan data in C (no Huffman decoding)."""
    n = len(data)
    if not data.startswith(b"\xff\xd8"):
        return "no SOI marker"
    i = 2
    while i + 2 <= n:
        if data[i] != 0xFF:
            return f"byte {i}: expected a marker, found 0x{data[i]:02x}"
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xD9:
            return None if i + 2 == n else f"{n - i - 2} bytes after the EOI marker"
        if i + 4 > n:
            break
        end = i + 2 + int.from_bytes(data[i + 2 : i + 4], "big")
        if end > n:
            return f"byte {i}: marker 0x{marker:02x} segment runs past the end of the file"
        i = end
        if marker == 0xDA:  # entropy-coded data follows the scan header, up to the next marker
            found = _ENTROPY_END.search(data, i)
            if found is None:
                return "the entropy-coded data is cut short: no marker ends it"
            for k, restart in enumerate(_RESTART.finditer(data, i, found.start())):
                if data[restart.start() + 1] != 0xD0 + k % 8:
                    return f"byte {restart.start()}: restart marker out of sequence"
            i = found.start()
    return "the file ends before its EOI marker"


def _orientation(im: Image.Image) -> int:
    """EXIF orientation (Pillow also reads XMP's tiff:Orientation); 0 when the metadata cannot be read."""
    if not any(k in im.info for k in ("exif", "xmp", "XML:com.adobe.xmp")):
        return 1
    try:
        return int(im.getexif().get(ExifTags.Base.Orientation, 1))
    except (*DECODE_ERRORS, TypeError, KeyError):
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
