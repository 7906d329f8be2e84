"""The benchmark's JSON as the markdown tables the docs show (``scripts/benchmark.py --report``)."""

from typing import Dict

from .benchmark import VARIANTS


def format_report(result: Dict) -> str:
    """The benchmark as a markdown table, each time also as a multiple of the floor measured beside it."""
    bf16 = {True: "yes", False: "no", None: "unknown"}[result["native_bf16"]]
    lines = [f"device {result['device']} ({result['cpu']}, {result['cpu_capability']} kernels, native bf16: "
             f"{bf16}), torch {result['torch']}, {result['threads']} threads"
             + (f", the compiled step's products through {result['step_products']}" if "step_products" in result
                else ""),
             ""]
    shapes = result["floor"]["per_shape"]
    libraries = list(next(iter(shapes.values())).get("libraries", {}))  # absent from older runs' JSON
    lines += ["| shape | best time | GFLOP/s |" + "".join(f" {library} |" for library in libraries),
              "|---|---|---|" + "---|" * len(libraries)]
    for name, row in shapes.items():
        lines.append(f"| {name} | {row['seconds'] * 1e6:.0f} us | {row['gflops']:.1f} |"
                     + "".join(f" {row['libraries'][library] * 1e6:.0f} us |" for library in libraries))
    fast = result["fast_epoch_seconds"]["median"]
    lines += ["", "| measurement | value | x floor |", "|---|---|---|",
              f"| matmul floor, one epoch (train + validation) | {result['floor']['epoch_seconds']:.3f} s | 1.00 |"]
    sequenced = result["sequenced_floor_seconds"]
    lines.append(f"| the same products in a step's order, a new batch each step | {sequenced:.3f} s | "
                 f"{sequenced / result['floor']['epoch_seconds']:.2f} |")

    def epoch_row(label: str, timing: Dict) -> None:
        lines.append(f"| {label}, seconds per epoch | {timing['median']:.3f} s | {timing['x_floor']:.2f} |")

    epoch_row(f"fast path (in-memory, {result['fast_epoch_seconds']['step']} step)", result["fast_epoch_seconds"])
    for name, timing in result.get("variants", {}).items():
        epoch_row(VARIANTS[name].label, timing)
    for key, label in (("dataloader_epoch_seconds", "DataLoader path"),
                       ("keras_epoch_seconds", "Keras 3 (torch backend)"),
                       ("keras_jax_epoch_seconds", "Keras 3 (JAX backend)"),
                       ("jax_epoch_seconds", "JAX + optax (jit, data resident)")):
        if key in result:
            epoch_row(label, result[key])
            lines.append(f"| fast path speed-up over {label} | "
                         f"{result[key]['median'] / fast:.1f}x | |")
    lines.append(f"| evaluation throughput | {result['eval_images_per_second']:,.0f} images/s | |")
    for runtime, speed in result.get("deployment", {}).items():
        lines.append(f"| deployed model, {runtime}: one image | {speed['latency_ms']:.3f} ms | |")
        lines.append(f"| deployed model, {runtime}: 10,000 images | {speed['images_per_second']:,.0f} images/s | |")
    lines.append(f"| peak resident memory (fast path only) | {result['peak_rss_mb_fast_path']:.0f} MB | |")
    lines.append(f"| peak resident memory (whole benchmark) | {result['peak_rss_mb']:.0f} MB | |")
    lines += _step_rows(result)
    return "\n".join(lines)


def _step_rows(result: Dict) -> list:
    """Where a step's time goes: an eager step phase by phase, the update alone, and the profile's top ops."""
    lines = []
    phases = result.get("step_phases_ms")
    if phases:
        per_shape = [row["seconds"] * 1000 for row in result["floor"]["per_shape"].values()]
        products = {"forward and loss": sum(per_shape[:2]), "backward": sum(per_shape[2:])}
        lines += ["", "One eager training step (--no-compile), phase by phase (a clock between phases, one epoch):",
                  "",
                  "| phase | ms/step | its products' floor |", "|---|---|---|"]
        for phase, ms in phases.items():
            floor = f"{products[phase]:.3f} ms" if phase in products else ""
            lines.append(f"| {phase} | {ms:.3f} | {floor} |")
        lines.append(f"| whole step | {sum(phases.values()):.3f} | {sum(per_shape):.3f} ms |")
    alone = result.get("update_alone_ms")
    if alone:
        lines += ["", f"The optimizer's update alone, gradients hot in the cache: {alone['compiled']:.3f} ms "
                      f"through torch.compile against {alone['foreach']:.3f} ms eagerly (foreach)."]
    lines += ["", "Profile of one fast-path training epoch (torch.profiler, self time):", "",
              "| op | calls/step | ms/step | share |", "|---|---|---|---|"]
    for row in result.get("profile", []):
        lines.append(f"| {row['op']} | {row['calls_per_step']:.0f} | {row['ms_per_step']:.3f} | "
                     f"{100 * row['share']:.1f}% |")
    return lines
