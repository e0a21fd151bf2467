"""``ragloom serve`` and ``ragloom models``: the runtime's commands.

Imports nothing heavy at module level; the model, FastAPI and uvicorn load inside the commands.
"""

from __future__ import annotations

import typer

__all__ = ["app"]

app = typer.Typer(help="Serve and list models.")


@app.command()
def serve(
    model: str = typer.Option("qwen2.5-coder-0.5b-instruct", help="Model name, alias or .gguf."),
    backend: str = typer.Option("auto", help="auto, torch, llamacpp, openai or vllm."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="TCP port."),
    quantization: str | None = typer.Option(
        None,
        help="torch backend: auto (exact GGUF weights), gguf-q8 (int8 activations, faster), "
        "none, gguf, int8 or int8-dynamic.",
    ),
) -> None:
    """Serve MODEL behind an OpenAI-compatible API (/v1/chat/completions, streaming)."""
    import uvicorn

    from ragloom.errors import ConfigError, RagloomError
    from ragloom.runtime.factory import load_llm, pick_backend
    from ragloom.runtime.server import create_app

    try:
        options = {}
        if quantization is not None:
            if pick_backend(backend) != "torch":  # type: ignore[arg-type]  # checked there
                raise ConfigError("--quantization applies to the torch backend (--backend torch)")
            options["quantization"] = quantization
        llm = load_llm(model, backend, **options)  # type: ignore[arg-type]  # checked above
    except RagloomError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"serving {llm.model_name} ({type(llm).__name__}) on http://{host}:{port}/v1")
    uvicorn.run(create_app(llm), host=host, port=port, log_level="warning")


@app.command()
def models() -> None:
    """List the packaged models, whether they are installed, and their licences."""
    from ragloom.runtime.model_files import list_models

    for info in list_models():
        state = "installed" if info.is_installed() else f"missing: {info.pip}"
        typer.echo(f"{info.name} ({', '.join(info.aliases)}) [{info.license}] {state}")
        typer.echo(f"    {info.upstream}")
