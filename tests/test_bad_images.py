"""Odd and broken image files: every mode converts to RGB, every unreadable file is skipped.

Includes a mutation fuzz test (about 2,000 corrupted PNG/JPEG/GIF files): loading never
raises, every file is either loaded or listed in ``skipped``, and everything that loaded
decodes without a decode-time drop (the up-front check is complete).
"""

from __future__ import annotations

import io
import os
import resource
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from transferkit.data import load_dataset, load_image_uint8
from transferkit.data.images import (
    UnreadableImage,
    bomb_warnings_as_errors,
    check_image_bytes,
    decode_image_bytes,
)


def _png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _jpeg_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(w: int, h: int) -> bytes:
    """A valid-looking PNG whose header claims w x h RGB pixels, with a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def _load_one(tmp_path: Path, name: str | bytes, data: bytes, **kw):
    """Dataset with one good image and the file under test in class 'x'; returns (dataset, path)."""
    good = tmp_path / "good"
    good.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (1, 2, 3)).save(good / "ok.png")
    xdir = tmp_path / "x"
    xdir.mkdir(exist_ok=True)
    if isinstance(name, bytes):
        path = os.path.join(os.fsencode(xdir), name)
    else:
        path = str(xdir / name)
    with open(path, "wb") as fh:
        fh.write(data)
    ds = load_dataset(tmp_path, test_fraction=0.0, progress=False, **kw)
    return ds, os.fsdecode(path)


def _rgb_of(ds, path: str) -> np.ndarray:
    return np.asarray(ds.read_rgb(ds.sources.index(path)))


# ----------------------------------------------------------------------------- unreadable kinds
UNREADABLE = {
    "zero.jpg": b"",
    "text.jpg": b"this is not a jpeg, it is a note\n",
    "html.png": b"<html><body>404 Not Found</body></html>",
    "truncated.jpg": _jpeg_bytes(_noise(64, 64))[:700],
    "truncated.png": _png_bytes(_noise(64, 64))[:600],
    "bomb.png": bomb_png(100_000, 100_000),
    "gif_header_only.gif": b"GIF89a\x10\x00\x10\x00\x80\x00\x00",
}


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_unreadable_file_is_skipped_with_reason(tmp_path, name):
    ds, path = _load_one(tmp_path, name, UNREADABLE[name])
    assert ds.classes == ["good"]  # the class of only-broken files is not made a class
    assert [p for p, _ in ds.skipped] == [path]
    reason = ds.skipped[0][1]
    assert reason and len(reason) < 400
    if name == "bomb.png":
        assert "decompression bomb" in reason
    if name == "zero.jpg":
        assert "empty file" in reason


def test_all_unreadable_at_once_never_crashes(tmp_path):
    for name, data in UNREADABLE.items():
        (tmp_path / "x").mkdir(exist_ok=True)
        (tmp_path / "x" / name).write_bytes(data)
    Image.new("RGB", (3, 3)).save(tmp_path / "x" / "fine.png")
    ds = load_dataset(tmp_path, test_fraction=0.0, progress=False)
    assert len(ds) == 1 and len(ds.skipped) == len(UNREADABLE)
    assert not ImageFile.LOAD_TRUNCATED_IMAGES  # we never switch it on


def test_bomb_header_does_not_allocate(tmp_path):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(UnreadableImage, match="decompression bomb"):
        check_image_bytes(bomb_png(100_000, 100_000))
    # Below Pillow's own limit but above ours: refused from the header, before decoding.
    with pytest.raises(UnreadableImage, match="4,000,000 pixels, more than the limit of 1,000,000"):
        check_image_bytes(bomb_png(2000, 2000), max_pixels=1_000_000)
    # Between Pillow's warning and error thresholds: the warning is an error too.
    with bomb_warnings_as_errors(), pytest.raises(UnreadableImage, match="decompression bomb"):
        check_image_bytes(bomb_png(10_000, 10_000))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100
    ds, path = _load_one(tmp_path, "big.png", bomb_png(3000, 3000), max_pixels=1_000_000)
    assert ds.skipped[0][0] == path and "max_pixels" in ds.skipped[0][1]


def test_decompression_bomb_warning_is_an_error_in_load_image(tmp_path):
    p = tmp_path / "b.png"
    p.write_bytes(bomb_png(10_000, 10_000))  # 1e8 pixels: Pillow only warns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(Exception, match="decompression bomb"):
            load_image_uint8(p, 4)


# ----------------------------------------------------------------------------- modes -> RGB
def test_png_missing_only_iend_still_loads(tmp_path):
    # Every pixel is present; only the end marker is gone. Pillow decodes it fully, so it is kept.
    ds, p = _load_one(tmp_path, "no_end.png", _png_bytes(_noise(16, 16))[:-12])
    assert p in ds.sources and not ds.skipped


def test_one_by_one_image(tmp_path):
    ds, path = _load_one(tmp_path, "tiny.png", _png_bytes(Image.new("RGB", (1, 1), (9, 8, 7))))
    assert _rgb_of(ds, path).tolist() == [[[9, 8, 7]]]
    out = ds.decode((5, 3), progress=False)
    assert out.shape == (2, 3, 5, 3)


def test_grayscale_and_one_bit(tmp_path):
    ds, p = _load_one(tmp_path, "g.png", _png_bytes(Image.new("L", (2, 2), 77)))
    assert _rgb_of(ds, p)[0, 0].tolist() == [77, 77, 77]
    bw = Image.new("1", (4, 2), 0)
    bw.putpixel((3, 1), 1)
    ds, p = _load_one(tmp_path, "bw.png", _png_bytes(bw))
    rgb = _rgb_of(ds, p)
    assert rgb[1, 3].tolist() == [255, 255, 255] and rgb[0, 0].tolist() == [0, 0, 0]


def test_rgba_and_la_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (2, 1), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 0, 0, 0))  # fully transparent black -> white
    ds, p = _load_one(tmp_path, "a.png", _png_bytes(rgba))
    assert _rgb_of(ds, p)[0].tolist() == [[255, 0, 0], [255, 255, 255]]
    la = Image.new("LA", (1, 1), (0, 128))  # half-transparent black over white -> mid gray
    ds, p = _load_one(tmp_path, "la.png", _png_bytes(la))
    assert abs(int(_rgb_of(ds, p)[0, 0, 0]) - 127) <= 1


def test_palette_with_transparency(tmp_path):
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 255, 10, 20, 30] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    ds, p = _load_one(tmp_path, "p.png", _png_bytes(pal, transparency=1))
    assert _rgb_of(ds, p)[0].tolist() == [[0, 0, 255], [255, 255, 255]]
    ds, p = _load_one(tmp_path, "p_opaque.png", _png_bytes(pal))
    assert _rgb_of(ds, p)[0].tolist() == [[0, 0, 255], [10, 20, 30]]


def test_cmyk_jpeg(tmp_path):
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    ds, p = _load_one(tmp_path, "cmyk.jpg", _jpeg_bytes(cmyk, quality=95))
    r, g, b = _rgb_of(ds, p)[8, 8].tolist()
    assert r > 230 and g < 25 and b < 25


def test_16bit_scaled_not_clipped(tmp_path):
    vals = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    im16 = Image.fromarray(vals)
    assert im16.mode.startswith("I;16")
    ds, p = _load_one(tmp_path, "deep.png", _png_bytes(im16))
    assert _rgb_of(ds, p)[0, :, 0].tolist() == [0, 1, 128, 255]
    # 32-bit "I" holding 16-bit data (TIFF): same scaling
    im32 = Image.fromarray(vals.astype(np.int32), "I")
    buf = io.BytesIO()
    im32.save(buf, format="TIFF")
    ds, p = _load_one(tmp_path, "deep.tif", buf.getvalue())
    assert _rgb_of(ds, p)[0, :, 0].tolist() == [0, 1, 128, 255]


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    ds, p = _load_one(tmp_path, "anim.gif", buf.getvalue())
    assert _rgb_of(ds, p)[0, 0].tolist() == [255, 0, 0]
    x = ds.decode(2, "nearest", progress=False)[ds.sources.index(p)]
    assert x[:, 0, 0].tolist() == [255, 0, 0]


def test_exif_orientation_applied(tmp_path):
    # Stored 32 wide x 16 tall: left half red, right half blue. Orientation 6 means "rotate
    # 90 degrees clockwise to display": shown 16 wide x 32 tall, red on top, blue below.
    arr = np.zeros((16, 32, 3), np.uint8)
    arr[:, :16] = (255, 0, 0)
    arr[:, 16:] = (0, 0, 255)
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6
    ds, p = _load_one(tmp_path, "rotated.jpg", _jpeg_bytes(im, quality=95, exif=exif.tobytes()))
    rgb = _rgb_of(ds, p)
    assert rgb.shape == (32, 16, 3)
    assert rgb[4, 8, 0] > 200 and rgb[4, 8, 2] < 50  # top: red
    assert rgb[28, 8, 2] > 200 and rgb[28, 8, 0] < 50  # bottom: blue
    x = ds.decode((4, 2), "bilinear", progress=False)[ds.sources.index(p)]
    assert x[0, 0, 0] > 200 and x[2, 3, 0] > 200  # decode applies it too


def test_names_non_utf8_spaces_and_ignored_files(tmp_path):
    ok = _png_bytes(_noise(4, 4, seed=3))
    ds, p = _load_one(tmp_path, b"caf\xe9 \xff.png", ok)
    assert p in ds.sources and not ds.skipped
    assert ds.decode(2, progress=False).shape == (2, 3, 2, 2)
    assert load_image_uint8(p, 2).shape == (3, 2, 2)
    (tmp_path / "x" / "with space.png").write_bytes(_png_bytes(_noise(4, 4, seed=4)))
    (tmp_path / "x" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 100)
    (tmp_path / "x" / "._with space.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / "x" / "README.txt").write_text("notes")
    (tmp_path / "x" / "labels.json").write_text("{}")
    (tmp_path / ".hidden_class").mkdir()
    (tmp_path / ".hidden_class" / "a.png").write_bytes(ok)
    (tmp_path / "__MACOSX").mkdir()
    ds = load_dataset(tmp_path, test_fraction=0.0, progress=False)
    assert ds.classes == ["good", "x"] and len(ds) == 3
    assert ds.skipped == []  # hidden and non-image files are ignored, not "skipped"
    assert any("2 file(s) without an image extension" in n for n in ds.notes)


def test_symlink_loops_do_not_hang(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            (tmp_path / cls / f"{i}.png").write_bytes(_png_bytes(_noise(4, 4, seed=10 * ord(cls) + i)))
    os.symlink(".", tmp_path / "a" / "self")
    os.symlink("..", tmp_path / "a" / "parent")
    os.symlink("../b", tmp_path / "a" / "sibling")  # would relabel b's images as a
    (tmp_path / "a" / "deep").mkdir()
    os.symlink("../../a", tmp_path / "a" / "deep" / "up")
    os.symlink("nowhere.png", tmp_path / "a" / "broken.png")
    os.symlink("loop.png", tmp_path / "a" / "loop.png")
    ds = load_dataset(tmp_path, test_fraction=0.0, progress=False)
    assert ds.class_counts() == {"a": 2, "b": 2}
    assert sorted(os.path.basename(p) for p, _ in ds.skipped) == ["broken.png", "loop.png"]
    assert any("reached twice through symlinks" in n for n in ds.notes)


def test_symlinked_class_folder_is_followed(tmp_path):
    outside = tmp_path / "elsewhere" / "cats"
    outside.mkdir(parents=True)
    (outside / "1.png").write_bytes(_png_bytes(_noise(4, 4)))
    (tmp_path / "ds").mkdir()
    os.symlink(outside, tmp_path / "ds" / "cats")
    ds = load_dataset(tmp_path / "ds", test_fraction=0.0, progress=False)
    assert ds.classes == ["cats"] and len(ds) == 1


def test_placeholder_gif_skipped_by_name(tmp_path):
    gif = io.BytesIO()
    Image.new("P", (8, 8), 3).save(gif, format="GIF")
    ds, p = _load_one(tmp_path, "imageNotFound.gif", gif.getvalue())
    assert ds.skipped[0][0] == p and "placeholder" in ds.skipped[0][1]
    ds = load_dataset(tmp_path, test_fraction=0.0, progress=False, skip_placeholders=False)
    assert p in ds.sources


# ----------------------------------------------------------------------------- fuzz
def _seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    gif = io.BytesIO()
    frames = [rgb.convert("P"), Image.new("RGB", (10, 12), (0, 200, 0)).convert("P")]
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=40)
    return [
        _png_bytes(rgb),
        _png_bytes(pal, transparency=0),
        _png_bytes(Image.fromarray(rng.integers(0, 65536, (6, 7), dtype=np.uint16))),
        _png_bytes(rgb.convert("RGBA")),
        _jpeg_bytes(rgb, quality=90),
        _jpeg_bytes(rgb, quality=80, progressive=True),
        _jpeg_bytes(rgb.convert("CMYK")),
        gif.getvalue(),
    ]


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    if not b:
        return data
    op = int(rng.integers(0, 6))
    if op == 0:  # flip a few bytes
        for _ in range(int(rng.integers(1, 8))):
            b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
    elif op == 1:  # truncate
        b = b[: int(rng.integers(0, len(b)))]
    elif op == 2:  # insert random bytes
        at = int(rng.integers(0, len(b)))
        b[at:at] = rng.integers(0, 256, int(rng.integers(1, 32)), dtype=np.uint8).tobytes()
    elif op == 3:  # delete a span
        at = int(rng.integers(0, len(b)))
        del b[at : at + int(rng.integers(1, 64))]
    elif op == 4:  # corrupt the header area (sizes, types, markers)
        at = int(rng.integers(0, min(len(b), 40)))
        b[at] = int(rng.integers(0, 256))
    else:  # duplicate a span (repeated chunks / markers)
        at = int(rng.integers(0, len(b)))
        b[at:at] = b[at : at + int(rng.integers(1, 128))]
    return bytes(b)


N_FUZZ = 2000


def test_fuzz_mutated_images_never_crash(tmp_path):
    rng = np.random.default_rng(1234)
    seeds = _seeds()
    exts = [".png", ".png", ".png", ".png", ".jpg", ".jpg", ".jpg", ".gif"]
    for cls in ("c0", "c1"):
        (tmp_path / cls).mkdir()
    for k in range(N_FUZZ):
        s = int(rng.integers(0, len(seeds)))
        data = seeds[s]
        for _ in range(int(rng.integers(1, 4))):
            data = _mutate(data, rng)
        (tmp_path / f"c{k % 2}" / f"f{k:05d}{exts[s]}").write_bytes(data)
    ds = load_dataset(tmp_path, test_fraction=0.0, progress=False, max_pixels=2_000_000)
    loaded, skipped = len(ds), len(ds.skipped)
    print(f"fuzz: {N_FUZZ} mutated files, {loaded} loaded, {skipped} skipped")
    assert loaded + skipped == N_FUZZ
    assert loaded > 100 and skipped > 100  # the mutations exercise both outcomes
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a decode-time drop would warn
        out = ds.decode((8, 8), progress=False)
    assert out.shape == (loaded, 3, 8, 8) and len(ds) == loaded


def test_fuzz_check_implies_decode():
    """Direct form of the invariant on the byte level: check passes => full decode passes."""
    rng = np.random.default_rng(99)
    seeds = _seeds()
    ok = 0
    for _ in range(300):
        data = _mutate(seeds[int(rng.integers(0, len(seeds)))], rng)
        try:
            check_image_bytes(data, max_pixels=2_000_000)
        except UnreadableImage:
            continue
        ok += 1
        assert decode_image_bytes(data, max_pixels=2_000_000).mode == "RGB"
    assert ok > 20
