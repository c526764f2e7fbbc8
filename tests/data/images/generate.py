#!/usr/bin/python3
"""Writes the test data of tests/image_test.cpp into this folder. Run it with Debian 12's python3-pil
(Pillow 9.4, linked to the system's libjpeg-turbo 2.1.5 and libwebp 1.2.4) and python3-numpy:

    /usr/bin/python3 tests/data/images/generate.py

decode/NAME.EXT + NAME.rgb   an image in one format and layout, and Pillow's Image.open(f).convert("RGB")
                             as raw bytes [height, width, 3]. Layouts Pillow cannot write (16-bit PNG,
                             interlaced PNG, 2-bit gray, RLE and 16-bit BMP, ...) are written by the small
                             writers below; Pillow only reads them.
resize/SRC_WxH_FILTER.rgb    Pillow's Image.resize((W, H), FILTER) of resize/SRC.{png,jpg}, decoded.
processor_*/                 a preprocessor config, its input image and pixel_values.f32: the processor's
                             output as transformers' Gemma3ImageProcessor computes it (PIL resize, then
                             numpy: float64 rescale cast to float32, float32 normalize), float32
                             [n, 3, H, W].
"""
import io
import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
RNG = np.random.default_rng(20250314)


def pattern(width, height):
    """Gradients, a ripple, noise and a hard-edged black/white block: smooth areas and edges that make
    the resampling filters overshoot and clip."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = x * 255 / max(width - 1, 1)
    g = y * 255 / max(height - 1, 1)
    b = 128 + 100 * np.sin(x / 3 + y / 5)
    img = np.stack([r, g, b], axis=-1) + RNG.integers(-30, 31, size=(height, width, 3))
    img[height // 3: height // 3 + 5, width // 4: width // 4 + 6] = 255
    img[height // 3 + 2: height // 3 + 4, width // 4 + 1: width // 4 + 3] = 0
    return np.clip(img, 0, 255).astype(np.uint8)


def expected_rgb(path):
    with Image.open(path) as im:
        return im.convert("RGB").tobytes()


# ---- PNG writer for what Pillow cannot write ----

def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_file(width, height, bit_depth, color_type, raw_rows, palette=None, interlaced=False):
    """raw_rows: the rows as bytes (filter type 0 is added), or with interlaced=True a list of the seven
    Adam7 passes, each a list of rows."""
    passes = raw_rows if interlaced else [raw_rows]
    data = b"".join(b"\x00" + row for rows in passes for row in rows)
    out = b"\x89PNG\r\n\x1a\n"
    out += png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, int(interlaced)))
    if palette is not None:
        out += png_chunk(b"PLTE", bytes(palette))
    out += png_chunk(b"IDAT", zlib.compress(data, 9))
    return out + png_chunk(b"IEND", b"")


def rows_of(array):
    return [array[y].tobytes() for y in range(array.shape[0])]


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def adam7_passes(array):
    passes = []
    for x0, y0, dx, dy in ADAM7:
        sub = array[y0::dy, x0::dx]
        passes.append(rows_of(sub) if sub.shape[0] and sub.shape[1] else [])
    return passes


def pack_bits(values, bits):
    """One row of sub-byte samples, first sample in the high bits."""
    per_byte = 8 // bits
    out = bytearray()
    for i in range(0, len(values), per_byte):
        byte = 0
        for j, v in enumerate(values[i:i + per_byte]):
            byte |= int(v) << (8 - bits * (j + 1))
        out.append(byte)
    return bytes(out)


# ---- BMP writer for what Pillow cannot write ----

def bmp_file(width, height, bits, pixel_data, palette=b"", compression=0, masks=None, header_size=40,
             top_down=False):
    if header_size == 12:
        info = struct.pack("<IHHHH", 12, width, height, 1, bits)
    else:
        info = struct.pack("<IiiHHIIiiII", header_size, width, -height if top_down else height, 1, bits,
                           compression, len(pixel_data), 2835, 2835, len(palette) // 4 if palette else 0, 0)
        extra = b""
        if masks is not None and header_size >= 56:
            extra = struct.pack("<4I", *masks)
        info += extra + b"\x00" * (header_size - len(info) - len(extra))
        if masks is not None and header_size == 40:
            info += struct.pack("<3I", *masks[:3])
    offset = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(pixel_data), 0, 0, offset) + info + palette + pixel_data


def bmp_rows(rows_bottom_up, row_bytes):
    stride = (row_bytes + 3) & ~3
    return b"".join(r + b"\x00" * (stride - len(r)) for r in rows_bottom_up)


def rle8(indices):
    """RLE8 of an index image (top row first), written bottom row first: runs of equal indices as encoded
    pairs, other stretches as absolute runs (3 or more, padded to a 16-bit boundary)."""
    out = bytearray()
    for row in indices[::-1]:
        x = 0
        while x < len(row):
            run = 1
            while x + run < len(row) and run < 255 and row[x + run] == row[x]:
                run += 1
            if run >= 2:
                out += bytes([run, row[x]])
                x += run
                continue
            lit = 1
            while x + lit < len(row) and lit < 255 and (x + lit + 1 >= len(row) or row[x + lit] != row[x + lit + 1]):
                lit += 1
            if lit < 3:
                out += bytes([1, row[x]])
                x += 1
                continue
            out += bytes([0, lit]) + bytes(row[x:x + lit]) + (b"\x00" if lit % 2 else b"")
            x += lit
        out += b"\x00\x00"
    return bytes(out + b"\x00\x01")


def rle4(indices):
    """RLE4: encoded pairs repeat two alternating nibbles; absolute runs hold packed nibbles."""
    out = bytearray()
    for row in indices[::-1]:
        x = 0
        while x < len(row):
            if x + 4 <= len(row) and len(set(row[x:x + 4])) > 2:  # a literal stretch of 4
                lit = list(row[x:x + 4])
                packed = bytes([(lit[0] << 4) | lit[1], (lit[2] << 4) | lit[3]])
                out += bytes([0, 4]) + packed
                x += 4
                continue
            n = min(2 if x + 2 <= len(row) else 1, len(row) - x)
            a = row[x]
            b = row[x + 1] if n == 2 else 0
            out += bytes([n, (a << 4) | b])
            x += n
        out += b"\x00\x00"
    return bytes(out + b"\x00\x01")


# ---- GIF placement: Pillow writes one frame at (0, 0) on a screen of its size; move it ----

def gif_move_frame(data, screen, origin):
    data = bytearray(data)
    struct.pack_into("<HH", data, 6, *screen)
    pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    while data[pos] == 0x21:  # extensions: label, then sub-blocks
        pos += 2
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
    assert data[pos] == 0x2C
    struct.pack_into("<HH", data, pos + 1, *origin)
    return bytes(data)


def write_decode_cases():
    out = HERE / "decode"
    out.mkdir(exist_ok=True)
    w, h = 37, 23
    rgb = pattern(w, h)
    alpha = ((np.arange(w)[None, :] * 7 + np.arange(h)[:, None] * 11) % 256).astype(np.uint8)
    alpha[0, :5] = 0  # transparent pixels keep their colour
    im_rgb = Image.fromarray(rgb, "RGB")
    im_rgba = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    im_l = im_rgb.convert("L")
    im_p = im_rgb.quantize(colors=60)
    files = {}

    def save(name, image, **kw):
        buf = io.BytesIO()
        image.save(buf, **kw)
        files[name] = buf.getvalue()

    save("png_rgb.png", im_rgb, format="PNG")
    save("png_rgba.png", im_rgba, format="PNG")
    save("png_palette.png", im_p, format="PNG", transparency=3)
    save("png_gray.png", im_l, format="PNG")
    save("png_1bit.png", im_l.convert("1"), format="PNG")
    save("png_la.png", Image.merge("LA", (im_l, Image.fromarray(alpha))), format="PNG")
    wide = rgb.astype(">u2") * 257 + RNG.integers(0, 257, size=rgb.shape).astype(">u2")
    files["png_rgb16.png"] = png_file(w, h, 16, 2, rows_of(wide))
    files["png_rgba16.png"] = png_file(w, h, 16, 6, rows_of(np.dstack([wide, wide[..., :1]])))
    gray16 = (np.arange(w * h).reshape(h, w) * 1.5).astype(">u2")  # 0..1275: Pillow clips above 255
    files["png_gray16.png"] = png_file(w, h, 16, 0, rows_of(gray16))
    files["png_la16.png"] = png_file(w, h, 16, 4, rows_of(np.dstack([wide[..., 0], wide[..., 1]])))
    files["png_interlaced.png"] = png_file(w, h, 8, 2, adam7_passes(rgb), interlaced=True)
    files["png_interlaced16.png"] = png_file(w, h, 16, 0, adam7_passes(gray16 // 5), interlaced=True)
    gray2 = (np.asarray(im_l) >> 6).astype(np.uint8)
    files["png_gray2.png"] = png_file(w, h, 2, 0, [pack_bits(r, 2) for r in gray2])
    # 3 palette entries, indices up to 3: Pillow shows index 3 as its gray-ramp fill (3, 3, 3).
    files["png_palette_short.png"] = png_file(w, h, 2, 3, [pack_bits(r, 2) for r in gray2],
                                              palette=[200, 10, 10, 10, 200, 10, 10, 10, 200])

    save("jpeg_baseline.jpg", im_rgb, format="JPEG", quality=85)
    save("jpeg_444.jpg", im_rgb, format="JPEG", quality=92, subsampling=0)
    save("jpeg_progressive.jpg", im_rgb, format="JPEG", quality=85, progressive=True)
    save("jpeg_gray.jpg", im_l, format="JPEG", quality=85)
    save("jpeg_cmyk.jpg", im_rgb.convert("CMYK"), format="JPEG", quality=90)  # K = 0 throughout
    cmyk = np.dstack([255 - rgb, np.asarray(im_l)[..., None] // 2])  # some black in every pixel
    save("jpeg_cmyk_k.jpg", Image.fromarray(cmyk, "CMYK"), format="JPEG", quality=90)

    save("webp_lossy.webp", im_rgb, format="WEBP", quality=80)
    save("webp_lossless.webp", im_rgb, format="WEBP", lossless=True)
    save("webp_alpha.webp", im_rgba, format="WEBP", quality=80)
    save("webp_animated.webp", im_rgb, format="WEBP", save_all=True, append_images=[im_rgb.rotate(180)],
         quality=80)

    save("gif.gif", im_p, format="GIF")  # interlaced: Pillow interlaces frames at least 16 pixels high
    save("gif_plain.gif", im_p, format="GIF", interlace=False)
    save("gif_animated.gif", im_p, format="GIF", save_all=True, append_images=[im_p.rotate(90)])
    small = Image.fromarray(rgb[:10, :20]).quantize(colors=20)
    save("gif_small.gif", small, format="GIF", transparency=5)
    files["gif_offset.gif"] = gif_move_frame(files.pop("gif_small.gif"), (w, h), (5, 7))
    save("gif_small.gif", small, format="GIF")
    files["gif_grown.gif"] = gif_move_frame(files.pop("gif_small.gif"), (10, 5), (6, 4))

    save("bmp_24.bmp", im_rgb, format="BMP")
    save("bmp_8.bmp", im_p, format="BMP")
    save("bmp_1.bmp", im_l.convert("1"), format="BMP")
    save("bmp_32.bmp", im_rgba, format="BMP")
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    v565 = ((r >> 3) << 11 | (g >> 2) << 5 | (b >> 3)).astype("<u2")
    v555 = ((r >> 3) << 10 | (g >> 3) << 5 | (b >> 3)).astype("<u2")
    files["bmp_565.bmp"] = bmp_file(w, h, 16, bmp_rows([x.tobytes() for x in v565[::-1]], 2 * w), compression=3,
                                    masks=(0xF800, 0x7E0, 0x1F, 0))
    files["bmp_555.bmp"] = bmp_file(w, h, 16, bmp_rows([x.tobytes() for x in v555[::-1]], 2 * w))
    bgr = rgb[..., ::-1]
    files["bmp_topdown.bmp"] = bmp_file(w, h, 24, bmp_rows([x.tobytes() for x in bgr], 3 * w), top_down=True)
    rgba_bytes = np.dstack([rgb, alpha])
    files["bmp_v4_rgba.bmp"] = bmp_file(w, h, 32, bmp_rows([x.tobytes() for x in rgba_bytes[::-1]], 4 * w),
                                        compression=3, masks=(0xFF, 0xFF00, 0xFF0000, 0xFF000000), header_size=108)
    pal = np.asarray(im_p.getpalette()[:60 * 3], dtype=np.uint8).reshape(-1, 3)
    idx = np.asarray(im_p)
    bgr0 = np.hstack([pal[:, ::-1], np.zeros((60, 1), np.uint8)]).tobytes()
    pal256 = np.vstack([pal, np.zeros((256 - 60, 3), np.uint8)])  # OS/2 files hold all 1 << bits entries
    files["bmp_os2.bmp"] = bmp_file(w, h, 8, bmp_rows([x.tobytes() for x in idx[::-1]], w),
                                    palette=pal256[:, ::-1].tobytes(), header_size=12)
    blocky = (np.asarray(im_l.resize((w // 4 + 1, h // 4 + 1), Image.Resampling.NEAREST)
                         .resize((w, h), Image.Resampling.NEAREST)) // 16).astype(np.uint8)
    blocky[5, 3:15] = np.arange(12) % 16  # a literal stretch
    pal16 = np.array([[i * 16, 255 - i * 16, (i * 77) % 256, 0] for i in range(16)], dtype=np.uint8)
    files["bmp_4.bmp"] = bmp_file(w, h, 4, bmp_rows([pack_bits(x, 4) for x in blocky[::-1]], (w + 1) // 2),
                                  palette=pal16.tobytes())
    files["bmp_rle8.bmp"] = bmp_file(w, h, 8, rle8(blocky.tolist()), palette=bgr0, compression=1)
    files["bmp_rle4.bmp"] = bmp_file(w, h, 4, rle4(blocky.tolist()), palette=pal16.tobytes(), compression=2)

    for name, data in files.items():
        (out / name).write_bytes(data)
        (out / (name.rsplit(".", 1)[0] + ".rgb")).write_bytes(expected_rgb(out / name))


FILTERS = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}


def write_resize_cases():
    out = HERE / "resize"
    out.mkdir(exist_ok=True)
    Image.fromarray(pattern(61, 47)).save(out / "src.png")
    Image.fromarray(pattern(47, 61)).save(out / "src.jpg", quality=90)
    cases = [("src.png", 29, 35), ("src.png", 75, 60), ("src.png", 7, 5), ("src.jpg", 64, 80), ("src.jpg", 9, 13)]
    cases += [("src.png", 40, 47), ("src.png", 61, 71)]  # one dimension only: the other pass is skipped
    for src, w, h in cases:
        for name, f in FILTERS.items():
            with Image.open(out / src) as im:
                data = im.convert("RGB").resize((w, h), f).tobytes()
            (out / f"{src.replace('.', '_')}_{w}x{h}_{name}.rgb").write_bytes(data)
    with Image.open(out / "src.jpg") as im:  # the real case: Gemma 3's 896 is too big to check in; 224
        (out / "src_jpg_224x224_bilinear.rgb").write_bytes(im.convert("RGB").resize((224, 224), 2).tobytes())


def transformers_pan_and_scan(image, min_crop, max_crops, min_ratio):
    """Gemma3ImageProcessor.pan_and_scan on an HWC array."""
    height, width = image.shape[:2]
    if width >= height:
        if width / height < min_ratio:
            return []
        n_w = int(math.floor(width / height + 0.5))
        n_w = min(int(math.floor(width / min_crop)), n_w)
        n_w = min(max_crops, max(2, n_w))
        n_h = 1
    else:
        if height / width < min_ratio:
            return []
        n_h = int(math.floor(height / width + 0.5))
        n_h = min(int(math.floor(height / min_crop)), n_h)
        n_h = min(max_crops, max(2, n_h))
        n_w = 1
    cw, ch = int(math.ceil(width / n_w)), int(math.ceil(height / n_h))
    if min(cw, ch) < min_crop:
        return []
    return [image[y:y + ch, x:x + cw] for y in [ch * i for i in range(n_h)] for x in [cw * i for i in range(n_w)]]


def transformers_pixel_values(image, c, pan_and_scan):
    images = [image]
    if pan_and_scan:
        images += transformers_pan_and_scan(image, c["pan_and_scan_min_crop_size"], c["pan_and_scan_max_num_crops"],
                                            c["pan_and_scan_min_ratio_to_activate"])
    out = []
    for im in images:
        im = np.array(Image.fromarray(im).resize((c["size"]["width"], c["size"]["height"]), resample=c["resample"]))
        im = (im.astype(np.float64) * c["rescale_factor"]).astype(np.float32)
        im = (im - np.array(c["image_mean"], dtype=im.dtype)) / np.array(c["image_std"], dtype=im.dtype)
        out.append(im.transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)


def write_processor_cases():
    # CLIP's mean and std, a non-square size and bicubic: every step of the formula shows.
    a = {"size": {"height": 24, "width": 32}, "resample": 3, "do_resize": True, "do_rescale": True,
         "do_normalize": True, "rescale_factor": 1 / 255, "image_mean": [0.48145466, 0.4578275, 0.40821073],
         "image_std": [0.26862954, 0.26130258, 0.27577711], "do_pan_and_scan": None}
    # Pan-and-scan on an 80x30 image: 3 crops 27, 27 and 26 wide. Part of the config comes from
    # processor_config.json's "image_processor", which overrides preprocessor_config.json.
    b_pre = {"size": {"height": 99, "width": 99}, "resample": 3, "rescale_factor": 1 / 255,
             "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_pan_and_scan": False,
             "pan_and_scan_min_crop_size": None, "pan_and_scan_max_num_crops": None,
             "pan_and_scan_min_ratio_to_activate": None}
    b_proc = {"image_seq_length": 16, "image_processor": {
        "size": {"height": 20, "width": 20}, "resample": 2, "do_pan_and_scan": True,
        "pan_and_scan_min_crop_size": 16, "pan_and_scan_max_num_crops": 3, "pan_and_scan_min_ratio_to_activate": 1.2}}
    b = {**b_pre, **b_proc["image_processor"]}
    for name, pre, proc, full, image in [("processor_a", a, None, a, pattern(45, 33)),
                                         ("processor_b", b_pre, b_proc, b, pattern(80, 30))]:
        d = HERE / name
        d.mkdir(exist_ok=True)
        (d / "preprocessor_config.json").write_text(json.dumps(pre, indent=2) + "\n")
        if proc:
            (d / "processor_config.json").write_text(json.dumps(proc, indent=2) + "\n")
        Image.fromarray(image).save(d / "image.png")
        pv = transformers_pixel_values(image, full, bool(full["do_pan_and_scan"]))
        (d / "pixel_values.f32").write_bytes(pv.tobytes())
        print(name, pv.shape)


if __name__ == "__main__":
    write_decode_cases()
    write_resize_cases()
    write_processor_cases()
