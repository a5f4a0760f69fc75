"""llama-cpp-python's OpenAI-compatible server, loaded the way every llama.cpp in this project is (llamacpp_lib):
the CPU variant this CPU can run, and no AMX weight layouts unless asked.

    python -m xinstruct.models.llama_server [--cpu_repack auto|true|false] <llama_cpp.server arguments>

The managed llama.cpp server (`generator.managed.kind: llamacpp`) and the tests' loopback servers start it this
way; `managed.args: ["--cpu_repack", "true"]` opts in to the extra layouts, as `cpu_repack: true` does in-process.
"""

from __future__ import annotations

import os
import sys

from xinstruct.models import llamacpp_lib


def split_cpu_repack(argv: list[str]) -> tuple[bool | None, list[str]]:
    """(--cpu_repack's value, the other arguments): auto -> None, true/false -> bool."""
    rest, value = [], None
    it = iter(argv)
    for arg in it:
        if arg.startswith("--cpu_repack"):
            raw = arg.split("=", 1)[1] if "=" in arg else next(it, "auto")
            value = {"auto": None, "true": True, "false": False}[raw.lower()]
        else:
            rest.append(arg)
    return value, rest


def main(argv: list[str] | None = None) -> None:
    cpu_repack, rest = split_cpu_repack(sys.argv[1:] if argv is None else argv)
    L = llamacpp_lib.load()
    import llama_cpp.llama_cpp as low

    stderr = os.fdopen(os.dup(2), "w")  # llama_cpp silences fd 2 while it loads a model, unless verbose

    def load_from_file(path, params):  # what llama_cpp.Llama calls (through its _internals) to load the weights
        model, buffers = llamacpp_lib.load_model(L, path, cpu_repack, params)
        print(f"xinstruct: llama.cpp CPU variant {llamacpp_lib.loaded_variant() or 'built in'}, "
              f"weights in {', '.join(buffers) or '?'}", file=stderr, flush=True)
        return model

    low.llama_model_load_from_file = load_from_file
    from llama_cpp.server.__main__ import main as serve

    sys.argv = [sys.argv[0], *rest]
    serve()


if __name__ == "__main__":
    main()
