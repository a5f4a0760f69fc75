"""Every llama.cpp process the project starts runs on this CPU the same safe way: no AMX weight layouts unless the
config asks (in-process backend, the managed server, the tests' servers), the CPU variant it can run, one line when
the build does not fit the CPU. The AMX crash cannot be reproduced on a CPU without AMX, so these tests pretend the
CPU has AMX and read, from llama.cpp's own load log, where the weights went."""

import subprocess
import sys

import pytest

from xinstruct.config import model_config
from xinstruct.core.machine import cpu_flags
from xinstruct.io.files import read_jsonl
from xinstruct.models import llamacpp_lib
from xinstruct.models.llama_server import split_cpu_repack
from xinstruct.prompts import generation_prompt
from xinstruct.seed import bundled_path

EXTRA = {"CPU_REPACK", "AMX"}


def test_extra_layouts_are_off_on_amx_cpus_unless_the_config_asks(monkeypatch):
    monkeypatch.setattr(llamacpp_lib, "cpu_has_amx", lambda: True)
    assert llamacpp_lib.use_extra_buffers(None) is False
    assert llamacpp_lib.use_extra_buffers(True) is True
    monkeypatch.setattr(llamacpp_lib, "cpu_has_amx", lambda: False)
    assert llamacpp_lib.use_extra_buffers(None) is True
    assert llamacpp_lib.use_extra_buffers(False) is False
    assert split_cpu_repack(["--model", "m", "--cpu_repack", "true", "--port", "1"]) == (True, ["--model", "m",
                                                                                               "--port", "1"])
    assert split_cpu_repack(["--cpu_repack=auto"]) == (None, [])


def test_a_build_for_another_cpu_is_named_not_run():
    assert llamacpp_lib.missing_features(["SSE3", "AVX2", "AVX512", "LLAMAFILE"], "flags : pni avx2") == ["AVX512"]
    assert llamacpp_lib.missing_features(["AVX2", "AMX_INT8"], "flags : avx2 amx_int8 amx_tile") == []


def test_in_process_backend_puts_no_weights_in_extra_layouts_on_an_amx_cpu(monkeypatch):
    from xinstruct.models.llamacpp import LlamaCppBackend

    monkeypatch.setattr(llamacpp_lib, "cpu_has_amx", lambda: True)
    with LlamaCppBackend(model_config(n_ctx=512)) as llama:
        assert llama.weight_buffers and not EXTRA & set(llama.weight_buffers), llama.weight_buffers
    if " avx2" in cpu_flags():  # the same reading sees llama.cpp's repacked Q4_K layout when it is allowed
        with LlamaCppBackend(model_config(n_ctx=512, cpu_repack=True)) as llama:
            assert "CPU_REPACK" in llama.weight_buffers


def test_llama_server_puts_no_weights_in_extra_layouts_on_an_amx_cpu():
    """The server the managed backend and the tests start, in a process of its own that believes its CPU has AMX."""
    pytest.importorskip("llama_cpp.server")
    from xinstruct.models.bundled import bundled_gguf

    code = ("import sys, xinstruct.models.llamacpp_lib as lib; lib.cpu_has_amx = lambda: True; "
            "from xinstruct.models.llama_server import main; main()")
    proc = subprocess.Popen([sys.executable, "-c", code, "--model", str(bundled_gguf()), "--n_ctx", "256",
                             "--port", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = next((ln for ln in proc.stderr if ln.startswith("xinstruct: llama.cpp")), "")
    finally:
        proc.kill()
        proc.wait()
    assert "weights in CPU_Mapped" in line and not any(e in line for e in EXTRA), line


def test_generator_adapter_decodes_through_the_server_and_in_process(llama):
    """The bundled generator's GGUF LoRA decodes through the in-process backend and through the project's llama.cpp
    server, and changes what the model writes on both (so it is loaded and applied). Texts, not scores: the server
    computes echoed logprobs in Python over Gemma's 262k-token vocabulary, minutes for a generation prompt."""
    from conftest import llama_cpp_server

    from xinstruct.models.base import SamplingParams
    from xinstruct.models.bundled import bundled_generator
    from xinstruct.models.llamacpp import LlamaCppBackend
    from xinstruct.models.openai import OpenAIBackend

    gguf, _ = bundled_generator()
    seed = next(iter(read_jsonl(bundled_path("demo/sw/seed.jsonl"))))
    prompt = [generation_prompt(seed["output"])]
    greedy = SamplingParams(temperature=0.0, max_tokens=24, stop=("\n",))

    def text(backend) -> str:
        return backend.generate(prompt, greedy)[0].completions[0].text.strip()

    with LlamaCppBackend(model_config(lora=str(gguf), n_ctx=2048)) as local:
        tuned_here, bare_here = text(local), text(llama)
    assert tuned_here and tuned_here != bare_here
    served = {}
    for name, extra in (("bare", ()), ("tuned", ("--lora_path", str(gguf)))):
        with (llama_cpp_server("--n_ctx", "2048", "--interrupt_requests", "False", *extra) as url,
              OpenAIBackend(model_config(backend="openai", base_url=url)) as backend):
            served[name] = text(backend)
    assert served["tuned"] and served["tuned"] != served["bare"], served
