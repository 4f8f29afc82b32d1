"""runner's captioner, run inside the caption image: one caption per picture or video with Qwen2.5-VL through transformers.

    python /opt/captioner/caption_media.py /job/work.json

work.json (written by runner, runner/caption/work.py): the model folder, its quantisation, the prompt, the frame rate
videos are sampled at, and the items, each a media file (read-only mount) and the file its caption goes to (runner's
own folder). Videos go to the model as videos (frames sampled at `fps`, at most `max_frames`), not as pictures.

Each caption is written to `<out>.tmp` and renamed, so a killed container leaves no half-written caption; an item
whose caption is already there (an earlier run of the same work) is skipped. After each item a line
`RUNNER-CAPTION {json}` tells runner which one is done, so it can place the caption next to the media at once.
"""

from __future__ import annotations

import json
import os
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image
from transformers import AutoProcessor, BitsAndBytesConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLForConditionalGeneration

PROGRESS = "RUNNER-CAPTION "
PATCH = 28  # Qwen2.5-VL's vision patch (14) times its spatial merge (2): frame sides are multiples of it


def load(model_dir: str, quant: str | None):
    """The model and its processor; bfloat16 on a GPU (float32 on the CPU, which lacks fast bf16 kernels)."""
    cuda = torch.cuda.is_available()
    kwargs: dict = {"dtype": torch.bfloat16 if cuda else torch.float32, "attn_implementation": "sdpa"}
    if quant == "8bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    elif quant == "4bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    if cuda:
        kwargs["device_map"] = "cuda:0"
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, **kwargs).eval()
    return model, AutoProcessor.from_pretrained(model_dir)


def fit(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The frame size the model sees: at most max_pixels, sides multiples of 28 (Qwen's smart_resize keeps it)."""
    scale = min(1.0, (max_pixels / (width * height)) ** 0.5)
    return max(PATCH, round(width * scale / PATCH) * PATCH), max(PATCH, round(height * scale / PATCH) * PATCH)


def read_video(path: str, fps: float, max_frames: int, max_pixels: int) -> tuple[np.ndarray, float]:
    """Frames sampled at `fps` (every frame when the video has fewer per second), at most max_frames, an even count
    (the vision encoder takes frames in pairs); returns them (T, H, W, 3) and the rate they were sampled at."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or Fraction(fps))
        step = max(1.0, rate / fps)
        frames, next_at = [], 0.0
        for i, frame in enumerate(container.decode(stream)):
            if i + 1e-6 < next_at:
                continue
            next_at += step
            w, h = fit(frame.width, frame.height, max_pixels)
            frames.append(frame.to_ndarray(format="rgb24", width=w, height=h))
            if len(frames) == max_frames:
                break
    if not frames:
        raise ValueError("has no frame that decodes")
    if len(frames) % 2:
        frames.append(frames[-1])
    return np.stack(frames), rate / step


def read_image(path: str, max_pixels: int) -> Image.Image:
    with Image.open(path) as img:
        img = img.convert("RGB")
    return img.resize(fit(img.width, img.height, max_pixels))


@torch.inference_mode()
def caption(model, processor, path: str, kind: str, work: dict) -> tuple[str, int]:
    """(the model's caption of one file, the frames it saw)."""
    messages = [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": work["prompt"]}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if kind == "video":
        frames, rate = read_video(path, work["fps"], work["max_frames"], work["max_pixels"])
        inputs = processor(text=[text], videos=[frames], fps=[rate], return_tensors="pt")
        seen = len(frames)
    else:
        inputs = processor(text=[text], images=[read_image(path, work["max_pixels"])], return_tensors="pt")
        seen = 1
    inputs = inputs.to(model.device)
    out = model.generate(**inputs, max_new_tokens=work["max_new_tokens"], min_new_tokens=work.get("min_new_tokens", 0), do_sample=False)
    new = out[:, inputs["input_ids"].shape[1]:]
    return processor.batch_decode(new, skip_special_tokens=True)[0].strip(), seen


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def run(work: dict, model=None, processor=None) -> int:
    todo = [item for item in work["items"] if not Path(item["out"]).exists()]
    print(f"captioner: {len(todo)} of {len(work['items'])} file(s) to caption with {work['model']} "
          f"({work.get('quant') or 'full precision'}, {'GPU' if torch.cuda.is_available() else 'CPU'})", flush=True)
    if model is None:
        model, processor = load(work["model"], work.get("quant"))
    failed = 0
    for item in todo:
        start = time.monotonic()
        try:
            text, frames = caption(model, processor, item["src"], item["kind"], work)
        except Exception as e:  # a file that does not decode: say which, go on with the others
            failed += 1
            print(f"captioner: {item['name']}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            continue
        write_atomically(Path(item["out"]), text)
        done = {"name": item["name"], "seconds": round(time.monotonic() - start, 3), "frames": frames}
        if torch.cuda.is_available():
            done["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        print(PROGRESS + json.dumps(done), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run(json.loads(Path(sys.argv[1]).read_text())))
