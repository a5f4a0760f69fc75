"""Export a PEFT LoRA adapter as a llama.cpp GGUF LoRA adapter, so the fast CPU backend serves the tuned model.

Written by hand because llama.cpp's convert_lora_to_gguf.py is not packaged on PyPI; the `gguf` package
writes the file. The base model stays the quantized GGUF; the adapter is applied at load time
(`ModelConfig.lora`, or `--lora` for llama-server, or `ADAPTER` in an Ollama Modelfile).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

# HF module → GGUF tensor, for architectures whose conversion does not permute q/k (llama's does).
MODULE_TO_GGUF = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
SUPPORTED_ARCHS = {"gemma", "gemma2", "gemma3", "gemma3_text", "qwen2", "qwen3"}
_KEY = re.compile(r"layers\.(\d+)\.(.+)\.lora_([AB])\.weight$")


def gguf_tensor_name(peft_key: str) -> tuple[str, str] | None:
    """'...layers.3.self_attn.q_proj.lora_A.weight' → ('blk.3.attn_q.weight', 'a')."""
    m = _KEY.search(peft_key)
    if not m or m.group(2) not in MODULE_TO_GGUF:
        return None
    return f"blk.{m.group(1)}.{MODULE_TO_GGUF[m.group(2)]}.weight", m.group(3).lower()


def check_gguf_arch(arch: str) -> None:
    """The GGUF adapter export maps tensors for these architectures only (llama and mistral permute q/k in their
    GGUF conversion, phi fuses projections: not written here)."""
    if arch not in SUPPORTED_ARCHS:
        raise ValueError(f"the GGUF LoRA export (for llama.cpp) supports {', '.join(sorted(SUPPORTED_ARCHS))}, not "
                         f"{arch!r}: set train.export_gguf: false for a PEFT adapter only (transformers, vLLM and "
                         "SGLang load it), or use a base of a supported architecture")


def export_lora_gguf(adapter_dir: str | Path, out_path: str | Path, arch: str = "gemma3") -> Path:
    import gguf
    from safetensors.numpy import load_file

    adapter_dir, out_path = Path(adapter_dir), Path(out_path)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    check_gguf_arch(arch)
    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    writer = gguf.GGUFWriter(str(out_path), arch="gemma3" if arch == "gemma3_text" else arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config["lora_alpha"]))
    written = 0
    for key in sorted(tensors):
        name = gguf_tensor_name(key)
        if name is None:
            raise ValueError(f"cannot map adapter tensor {key} to GGUF (supported modules: "
                             f"{sorted(MODULE_TO_GGUF)})")
        base, ab = name
        writer.add_tensor(f"{base}.lora_{ab}", np.ascontiguousarray(tensors[key].astype(np.float32)))
        written += 1
    if written == 0:
        raise ValueError(f"{adapter_dir} holds no LoRA tensors")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_path
