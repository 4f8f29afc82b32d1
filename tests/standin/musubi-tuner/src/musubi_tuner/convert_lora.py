"""STAND-IN for musubi_tuner.convert_lora (runner's CI test double, no GPU, no model math).

Upstream's flags at 30c658c (--input, --output, --target other|default, --diffusers_prefix). `--target default`
renames diffusers/ComfyUI keys (`diffusion_model.` or `transformer.` prefix, `lora_A`/`lora_B`) to musubi's
(`lora_unet_<module with _>.lora_down/lora_up.weight`), skips other prefixes with a warning and adds
`<module>.alpha` = rank where none is given; the tensors' bytes are copied as they are. `--target other` is not
stood in (runner does not use it).
"""

from __future__ import annotations

import argparse
import os
import struct

from musubi_tuner._standin import banner, read_safetensors_header, write_safetensors


def convert_from_diffusers(prefix: str, tensors: dict) -> dict:
    out, dims = {}, {}
    for key, value in tensors.items():
        head, body = key.split(".", 1)
        if head not in ("diffusion_model", "transformer"):
            print(f"WARNING unexpected key: {key} in diffusers format")
            continue
        new = f"{prefix}{body}".replace(".", "_")
        new = new.replace("_lora_A_", ".lora_down.").replace("_lora_B_", ".lora_up.")
        new = new.replace("_lora_down_", ".lora_down.").replace("_lora_up_", ".lora_up.")
        if new.endswith("_alpha"):
            new = new.replace("_alpha", ".alpha")
        out[new] = value
        name = new.split(".")[0]
        if name not in dims and "lora_down" in new:
            dims[name] = value[1][0]
    for name, dim in dims.items():
        out.setdefault(f"{name}.alpha", ("I64", [], struct.pack("<q", dim)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description="Convert LoRA/LoHa/LoKr weights between default and other formats")
    p.add_argument("--input", type=str, required=True)
    p.add_argument("--output", type=str, required=True)
    p.add_argument("--target", type=str, required=True, choices=["other", "default"])
    p.add_argument("--diffusers_prefix", type=str, default=None)
    args = p.parse_args()
    banner("musubi-tuner convert_lora")
    if args.target != "default":
        raise SystemExit("STAND-IN: convert_lora.py --target other is not stood in")
    header, metadata = read_safetensors_header(args.input)
    with open(args.input, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        data = f.read()[n:]
    tensors = {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in header.items()}
    print(f"loading {args.input}\nconverting to default")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):  # safetensors' save_file makes no folder
        raise SystemExit(f"safetensors_rust.SafetensorError: Error while serializing: I/O error: No such file or directory (os error 2) at path {args.output!r}")
    write_safetensors(args.output, convert_from_diffusers("lora_unet_", tensors), metadata or None)
    print(f"saving to {args.output}\ndone")


if __name__ == "__main__":
    main()
